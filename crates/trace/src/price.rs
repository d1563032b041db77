//! What tokens cost: a [`PriceTable`] of models (common ones built in, yours added) and the [`Cost`] of a run.

use serde::{Deserialize, Serialize};

use crate::run::TokenUsage;

/// A model's list price, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Per million prompt tokens.
    pub input_per_million: f64,
    /// Per million prompt tokens read from the provider's prompt cache; `None` bills them as other prompt tokens.
    pub cached_input_per_million: Option<f64>,
    /// Per million generated tokens.
    pub output_per_million: f64,
}

impl Price {
    /// A price per million input and output tokens, cached input billed as input.
    pub const fn per_million(input: f64, output: f64) -> Self {
        Price { input_per_million: input, cached_input_per_million: None, output_per_million: output }
    }
    /// The same price with a cheaper rate for cached prompt tokens.
    pub const fn cached(mut self, cached_input: f64) -> Self {
        self.cached_input_per_million = Some(cached_input);
        self
    }
    /// What `usage` costs at this price, in US dollars.
    pub fn of(&self, usage: &TokenUsage) -> f64 {
        let cached = usage.cached_input.unwrap_or(0).min(usage.input);
        let cached_rate = self.cached_input_per_million.unwrap_or(self.input_per_million);
        ((usage.input - cached) as f64 * self.input_per_million
            + cached as f64 * cached_rate
            + usage.output as f64 * self.output_per_million)
            / 1e6
    }
}

/// What a run cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cost", content = "usd", rename_all = "snake_case")]
pub enum Cost {
    /// Priced from the table, in US dollars.
    Usd(f64),
    /// The provider runs on this machine (llama.cpp, Ollama, catena's local models): nothing to pay per token.
    Free,
    /// Tokens were used but the model is not in the price table: add it with [`PriceTable::with_model`].
    Unpriced,
    /// No token usage was recorded (not a model call, or the provider reported none).
    NoUsage,
}

impl Cost {
    /// The amount in US dollars: `Some(0.0)` when free, `None` when unknown.
    pub fn usd(&self) -> Option<f64> {
        match self {
            Cost::Usd(x) => Some(*x),
            Cost::Free => Some(0.0),
            Cost::Unpriced | Cost::NoUsage => None,
        }
    }
}

/// The date of the built-in prices: vendors' list prices as published then. Check your vendor's page (and add
/// your negotiated prices with [`PriceTable::with_model`]) before you bill anyone with them.
pub const BUILTIN_PRICES_AS_OF: &str = "2025-11";

/// Built-in list prices: (model name prefix, price).
const BUILTIN: &[(&str, Price)] = &[
    // OpenAI
    ("gpt-5", Price::per_million(1.25, 10.0).cached(0.125)),
    ("gpt-5-mini", Price::per_million(0.25, 2.0).cached(0.025)),
    ("gpt-5-nano", Price::per_million(0.05, 0.40).cached(0.005)),
    ("gpt-4.1", Price::per_million(2.0, 8.0).cached(0.50)),
    ("gpt-4.1-mini", Price::per_million(0.40, 1.60).cached(0.10)),
    ("gpt-4.1-nano", Price::per_million(0.10, 0.40).cached(0.025)),
    ("gpt-4o", Price::per_million(2.50, 10.0).cached(1.25)),
    ("gpt-4o-mini", Price::per_million(0.15, 0.60).cached(0.075)),
    ("o3", Price::per_million(2.0, 8.0).cached(0.50)),
    ("o3-mini", Price::per_million(1.10, 4.40).cached(0.55)),
    ("o4-mini", Price::per_million(1.10, 4.40).cached(0.275)),
    ("text-embedding-3-small", Price::per_million(0.02, 0.0)),
    ("text-embedding-3-large", Price::per_million(0.13, 0.0)),
    // Anthropic (cache reads at a tenth of the input price)
    ("claude-opus-4", Price::per_million(15.0, 75.0).cached(1.50)),
    ("claude-opus-4-5", Price::per_million(5.0, 25.0).cached(0.50)),
    ("claude-sonnet-4", Price::per_million(3.0, 15.0).cached(0.30)),
    ("claude-3-7-sonnet", Price::per_million(3.0, 15.0).cached(0.30)),
    ("claude-3-5-sonnet", Price::per_million(3.0, 15.0).cached(0.30)),
    ("claude-haiku-4-5", Price::per_million(1.0, 5.0).cached(0.10)),
    ("claude-3-5-haiku", Price::per_million(0.80, 4.0).cached(0.08)),
    ("claude-3-haiku", Price::per_million(0.25, 1.25).cached(0.03)),
    // Google (prompts up to 200k tokens)
    ("gemini-2.5-pro", Price::per_million(1.25, 10.0).cached(0.31)),
    ("gemini-2.5-flash", Price::per_million(0.30, 2.50).cached(0.075)),
    ("gemini-2.5-flash-lite", Price::per_million(0.10, 0.40).cached(0.025)),
    ("gemini-2.0-flash", Price::per_million(0.10, 0.40).cached(0.025)),
    ("gemini-2.0-flash-lite", Price::per_million(0.075, 0.30)),
    // Open-weight embedding models people run themselves (catena's LocalEmbedder, sentence-transformers):
    // nothing to pay per token.
    ("all-MiniLM", Price::per_million(0.0, 0.0)),
    ("all-mpnet", Price::per_million(0.0, 0.0)),
    ("bge", Price::per_million(0.0, 0.0)),
    ("e5", Price::per_million(0.0, 0.0)),
    ("multilingual-e5", Price::per_million(0.0, 0.0)),
    // Mistral
    ("mistral-large", Price::per_million(2.0, 6.0)),
    ("mistral-medium", Price::per_million(0.40, 2.0)),
    ("mistral-small", Price::per_million(0.10, 0.30)),
    ("codestral", Price::per_million(0.30, 0.90)),
];

/// Providers that run on this machine (their `gen_ai.provider.name`): their tokens cost nothing.
const BUILTIN_FREE: &[&str] = &["llama.cpp", "ollama", "vllm"];

/// Model prices by name prefix, and the providers whose tokens are free.
///
/// A model matches the longest prefix that ends where its name does or at a `-`, `@`, `:` or `.` (so
/// `gpt-4o-2024-08-06` is `gpt-4o`, `gpt-4o-mini` is `gpt-4o-mini`, and `claude-sonnet-4-20250514` is
/// `claude-sonnet-4`); a provider path before the last `/` (`models/`, `openai/`) is ignored.
///
/// ```
/// use catena_trace::{Cost, Price, PriceTable, TokenUsage};
/// let prices = PriceTable::builtin().with_model("my-finetune", Price::per_million(1.0, 2.0));
/// let usage = TokenUsage { input: 1_000_000, output: 500_000, cached_input: None };
/// assert_eq!(prices.cost(Some("openai"), Some("my-finetune-v3"), Some(&usage)), Cost::Usd(2.0));
/// assert_eq!(prices.cost(Some("openai"), Some("unheard-of"), Some(&usage)), Cost::Unpriced);
/// assert_eq!(prices.cost(Some("llama.cpp"), Some("smollm2"), Some(&usage)), Cost::Free);
/// ```
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    models: Vec<(String, Price)>,
    free_providers: Vec<String>,
}

impl PriceTable {
    /// No prices at all: every model with usage is [`Cost::Unpriced`].
    pub fn empty() -> Self {
        PriceTable::default()
    }

    /// The built-in list prices (as of [`BUILTIN_PRICES_AS_OF`]) of common OpenAI, Anthropic, Google and Mistral
    /// models, and the self-hosted providers (`llama.cpp`, which includes catena's local GGUF models, `ollama`,
    /// `vllm`) as free.
    pub fn builtin() -> Self {
        PriceTable {
            models: BUILTIN.iter().map(|(m, p)| (m.to_ascii_lowercase(), *p)).collect(),
            free_providers: BUILTIN_FREE.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Adds (or replaces) the price of the models named `prefix` or `prefix-...` (case-insensitive).
    pub fn with_model(mut self, prefix: impl Into<String>, price: Price) -> Self {
        let prefix = prefix.into().to_ascii_lowercase();
        self.models.retain(|(m, _)| *m != prefix);
        self.models.push((prefix, price));
        self
    }

    /// Marks a provider's tokens as free (a server you run yourself).
    pub fn with_free_provider(mut self, provider: impl Into<String>) -> Self {
        self.free_providers.push(provider.into());
        self
    }

    /// The price of `model`, by its longest matching prefix.
    pub fn price(&self, model: &str) -> Option<&Price> {
        let name = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
        self.models
            .iter()
            .filter(|(prefix, _)| {
                name.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '@', ':', '.']))
            })
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, p)| p)
    }

    /// What a call cost: [`Cost::NoUsage`] without usage, [`Cost::Free`] for a local provider, the table's
    /// price, or [`Cost::Unpriced`].
    pub fn cost(&self, provider: Option<&str>, model: Option<&str>, usage: Option<&TokenUsage>) -> Cost {
        let Some(usage) = usage else { return Cost::NoUsage };
        if provider.is_some_and(|p| self.free_providers.iter().any(|f| f == p)) {
            return Cost::Free;
        }
        match model.and_then(|m| self.price(m)) {
            Some(price) => Cost::Usd(price.of(usage)),
            None => Cost::Unpriced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_at_a_boundary() {
        let t = PriceTable::builtin();
        assert_eq!(t.price("gpt-4o-2024-08-06").unwrap().input_per_million, 2.50);
        assert_eq!(t.price("gpt-4o-mini").unwrap().input_per_million, 0.15);
        assert_eq!(t.price("openai/gpt-4o-mini-2024-07-18").unwrap().input_per_million, 0.15);
        assert_eq!(t.price("claude-sonnet-4-20250514").unwrap().output_per_million, 15.0);
        assert_eq!(t.price("claude-opus-4-5-20251101").unwrap().input_per_million, 5.0);
        assert_eq!(t.price("models/gemini-2.5-flash").unwrap().output_per_million, 2.50);
        assert_eq!(t.price("gemini-2.5-flash-lite").unwrap().output_per_million, 0.40);
        assert!(t.price("gpt-4oo").is_none(), "a prefix must end at a boundary");
        assert!(t.price("o3x").is_none());
        assert_eq!(t.price("all-MiniLM-L6-v2").unwrap().input_per_million, 0.0);
        assert_eq!(t.price("bge-small-en-v1.5").unwrap().input_per_million, 0.0);
    }

    #[test]
    fn cached_tokens_are_billed_at_their_rate() {
        let price = Price::per_million(2.0, 10.0).cached(0.5);
        let usage = TokenUsage { input: 1_000_000, output: 100_000, cached_input: Some(400_000) };
        assert!((price.of(&usage) - (0.6 * 2.0 + 0.4 * 0.5 + 0.1 * 10.0)).abs() < 1e-12);
        // More cached than input (a confused server) never bills negative tokens.
        let odd = TokenUsage { input: 10, output: 0, cached_input: Some(50) };
        assert!(price.of(&odd) >= 0.0);
    }
}
