//! The providers the playground and evaluations can call, configured from each one's usual environment variables
//! (the same ones catena's examples read).

use std::sync::Arc;
use std::time::Duration;

use catena_core::{Error, Llm, Result};

/// How long one playground or evaluation call may take in total.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// A model API the studio can call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI or any OpenAI-compatible server (llama.cpp, vLLM, LiteLLM...): OPENAI_BASE_URL, OPENAI_API_KEY.
    Openai,
    /// Anthropic's Messages API: ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL.
    Anthropic,
    /// Google's Gemini API: GEMINI_API_KEY, GEMINI_BASE_URL.
    Gemini,
    /// Ollama's own API: OLLAMA_HOST.
    Ollama,
    /// Azure OpenAI: AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY.
    Azure,
    /// Mistral: MISTRAL_API_KEY.
    Mistral,
}

impl Provider {
    /// Every provider, in the order the pages list them.
    pub const ALL: [Provider; 6] =
        [Provider::Openai, Provider::Anthropic, Provider::Gemini, Provider::Ollama, Provider::Azure, Provider::Mistral];

    /// The name in forms and URLs.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::Ollama => "ollama",
            Provider::Azure => "azure",
            Provider::Mistral => "mistral",
        }
    }

    /// The provider named `name`.
    pub fn parse(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The variables that configure it; it is offered when one of them is set.
    fn variables(self) -> &'static [&'static str] {
        match self {
            Provider::Openai => &["OPENAI_BASE_URL", "OPENAI_API_KEY"],
            Provider::Anthropic => &["ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"],
            Provider::Gemini => &["GEMINI_API_KEY", "GEMINI_BASE_URL"],
            Provider::Ollama => &["OLLAMA_HOST"],
            Provider::Azure => &["AZURE_OPENAI_ENDPOINT"],
            Provider::Mistral => &["MISTRAL_API_KEY"],
        }
    }

    /// Whether its environment is set.
    pub fn configured(self) -> bool {
        self.variables().iter().any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
    }

    /// What to set to use it.
    pub fn setup_hint(self) -> String {
        format!("set {} before starting the studio", self.variables().join(" or "))
    }

    /// The provider that recorded `gen_ai.provider.name` most likely came through.
    pub fn for_recorded(provider: Option<&str>) -> Provider {
        match provider.unwrap_or_default() {
            "anthropic" => Provider::Anthropic,
            p if p.starts_with("gemini") || p.starts_with("vertex") => Provider::Gemini,
            "ollama" => Provider::Ollama,
            "az.ai.openai" => Provider::Azure,
            "mistral_ai" => Provider::Mistral,
            _ => Provider::Openai,
        }
    }

    /// A client for `model` (or the provider's configured default model).
    ///
    /// # Errors
    /// [`Error::Config`] when the provider is not configured here, or this build lacks its feature.
    pub fn client(self, model: Option<&str>) -> Result<Arc<dyn Llm>> {
        if !self.configured() {
            return Err(Error::config(self.name(), "is not configured for the studio", self.setup_hint()));
        }
        let model = model.map(str::trim).filter(|m| !m.is_empty());
        match self {
            Provider::Openai | Provider::Azure | Provider::Mistral => {
                use catena_providers::openai::OpenAiBuilder;
                let mut builder = match self {
                    Provider::Azure => OpenAiBuilder::azure_from_env()?,
                    Provider::Mistral => OpenAiBuilder::mistral()?,
                    _ => OpenAiBuilder::from_env()?,
                };
                if let Some(m) = model {
                    builder = builder.model(m);
                }
                Ok(Arc::new(builder.timeout(CALL_TIMEOUT).build()?))
            }
            Provider::Anthropic => anthropic(model),
            Provider::Gemini => gemini(model),
            Provider::Ollama => ollama(model),
        }
    }
}

#[cfg(not(all(feature = "anthropic", feature = "gemini", feature = "ollama")))]
fn missing(feature: &str) -> Error {
    Error::config(feature, "is not in this build of catena-studio", format!("rebuild with --features {feature}"))
}

#[cfg(feature = "anthropic")]
fn anthropic(model: Option<&str>) -> Result<Arc<dyn Llm>> {
    let mut b = catena_providers::anthropic::AnthropicBuilder::from_env()?;
    if let Some(m) = model {
        b = b.model(m);
    }
    Ok(Arc::new(b.timeout(CALL_TIMEOUT).build()?))
}

#[cfg(not(feature = "anthropic"))]
fn anthropic(_model: Option<&str>) -> Result<Arc<dyn Llm>> {
    Err(missing("anthropic"))
}

#[cfg(feature = "gemini")]
fn gemini(model: Option<&str>) -> Result<Arc<dyn Llm>> {
    let mut b = catena_providers::gemini::GeminiBuilder::from_env()?;
    if let Some(m) = model {
        b = b.model(m);
    }
    Ok(Arc::new(b.timeout(CALL_TIMEOUT).build()?))
}

#[cfg(not(feature = "gemini"))]
fn gemini(_model: Option<&str>) -> Result<Arc<dyn Llm>> {
    Err(missing("gemini"))
}

#[cfg(feature = "ollama")]
fn ollama(model: Option<&str>) -> Result<Arc<dyn Llm>> {
    let mut b = catena_providers::ollama::OllamaBuilder::from_env()?;
    if let Some(m) = model {
        b = b.model(m);
    }
    Ok(Arc::new(b.timeout(CALL_TIMEOUT).build()?))
}

#[cfg(not(feature = "ollama"))]
fn ollama(_model: Option<&str>) -> Result<Arc<dyn Llm>> {
    Err(missing("ollama"))
}
