//! Model APIs configured from their usual environment variables, for programs that let their user pick one by
//! name (catena's examples take `--provider <name>`; the studio's playground offers every configured one).
//!
//! ```no_run
//! use std::time::Duration;
//! use catena_providers::env::Api;
//!
//! # fn main() -> catena_core::Result<()> {
//! let api: Api = "anthropic".parse()?;
//! if api.configured() {
//!     let llm = api.client(Some("claude-sonnet-4-5"), Duration::from_secs(120))?;
//! }
//! let offered: Vec<Api> = Api::ALL.into_iter().filter(|a| a.configured()).collect();
//! # Ok(()) }
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use catena_core::{Error, Llm, Result};

/// A model API reached over HTTP, configured from its usual environment variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI or any OpenAI-compatible server (vLLM, llama.cpp, LiteLLM, ...): `OPENAI_BASE_URL`,
    /// `OPENAI_API_KEY`, `CATENA_MODEL` (`CATENA_COMPAT` names the server family).
    Openai,
    /// Anthropic's Messages API: `ANTHROPIC_BASE_URL`, `ANTHROPIC_API_KEY`, `CATENA_MODEL`.
    Anthropic,
    /// Google's Gemini API: `GEMINI_BASE_URL`, `GEMINI_API_KEY`, `CATENA_MODEL`.
    Gemini,
    /// Ollama's own API: `OLLAMA_HOST`, `CATENA_MODEL`.
    Ollama,
    /// Azure OpenAI: `AZURE_OPENAI_ENDPOINT`, `AZURE_OPENAI_API_KEY` (or `AZURE_OPENAI_AD_TOKEN`),
    /// `AZURE_OPENAI_API_VERSION`, the deployment in `CATENA_MODEL`.
    Azure,
    /// Mistral's API: `MISTRAL_API_KEY` (`MISTRAL_BASE_URL` for another server), `CATENA_MODEL`.
    Mistral,
}

impl Api {
    /// Every API, in the order menus list them.
    pub const ALL: [Api; 6] = [Api::Openai, Api::Anthropic, Api::Gemini, Api::Ollama, Api::Azure, Api::Mistral];

    /// Its name on command lines and in forms: `openai`, `anthropic`, `gemini`, `ollama`, `azure`, `mistral`.
    pub fn name(self) -> &'static str {
        match self {
            Api::Openai => "openai",
            Api::Anthropic => "anthropic",
            Api::Gemini => "gemini",
            Api::Ollama => "ollama",
            Api::Azure => "azure",
            Api::Mistral => "mistral",
        }
    }

    /// The variables that say it is configured: it is when one of them is set and not empty.
    pub fn variables(self) -> &'static [&'static str] {
        match self {
            Api::Openai => &["OPENAI_BASE_URL", "OPENAI_API_KEY"],
            Api::Anthropic => &["ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"],
            Api::Gemini => &["GEMINI_API_KEY", "GEMINI_BASE_URL"],
            Api::Ollama => &["OLLAMA_HOST"],
            Api::Azure => &["AZURE_OPENAI_ENDPOINT"],
            Api::Mistral => &["MISTRAL_API_KEY"],
        }
    }

    /// Whether its environment is set (see [`Api::variables`]).
    pub fn configured(self) -> bool {
        self.variables().iter().any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
    }

    /// The cargo feature of `catena-providers` (and of `catena`) that its client needs, if any.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Api::Anthropic => Some("anthropic"),
            Api::Gemini => Some("gemini"),
            Api::Ollama => Some("ollama"),
            Api::Openai | Api::Azure | Api::Mistral => None,
        }
    }

    /// Whether this build has its client.
    pub fn available(self) -> bool {
        match self {
            Api::Anthropic => cfg!(feature = "anthropic"),
            Api::Gemini => cfg!(feature = "gemini"),
            Api::Ollama => cfg!(feature = "ollama"),
            Api::Openai | Api::Azure | Api::Mistral => true,
        }
    }

    /// Its client, built from the environment, for `model` (else the environment's `CATENA_MODEL`, which may be
    /// unset: check [`Llm::default_model`] when calls must name a model), with `timeout` as the deadline of each
    /// whole call.
    ///
    /// # Errors
    /// [`Error::Config`] when this build lacks the API's feature, or when its variables are invalid (a malformed
    /// URL, say).
    pub fn client(self, model: Option<&str>, timeout: Duration) -> Result<Arc<dyn Llm>> {
        let model = model.map(str::trim).filter(|m| !m.is_empty());
        match self {
            Api::Openai | Api::Azure | Api::Mistral => {
                use crate::openai::OpenAiBuilder;
                let mut builder = match self {
                    Api::Azure => OpenAiBuilder::azure_from_env()?,
                    Api::Mistral => OpenAiBuilder::mistral()?,
                    _ => OpenAiBuilder::from_env()?,
                };
                if let Some(m) = model {
                    builder = builder.model(m);
                }
                Ok(Arc::new(builder.timeout(timeout).build()?))
            }
            Api::Anthropic => anthropic(model, timeout),
            Api::Gemini => gemini(model, timeout),
            Api::Ollama => ollama(model, timeout),
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Api {
    type Err = Error;

    /// The API named `name` (as [`Api::name`] spells it, any case).
    fn from_str(name: &str) -> Result<Api> {
        let wanted = name.trim().to_ascii_lowercase();
        Api::ALL.into_iter().find(|a| a.name() == wanted).ok_or_else(|| {
            let names: Vec<&str> = Api::ALL.iter().map(|a| a.name()).collect();
            Error::InvalidInput(format!("no model API named `{name}`: choose one of {}", names.join(", ")))
        })
    }
}

#[cfg(not(all(feature = "anthropic", feature = "gemini", feature = "ollama")))]
fn missing(api: Api) -> Error {
    let feature = api.feature().unwrap_or_default();
    Error::config(feature, "is not in this build", format!("rebuild with --features {feature}"))
}

#[cfg(feature = "anthropic")]
fn anthropic(model: Option<&str>, timeout: Duration) -> Result<Arc<dyn Llm>> {
    let mut builder = crate::anthropic::AnthropicBuilder::from_env()?;
    if let Some(m) = model {
        builder = builder.model(m);
    }
    Ok(Arc::new(builder.timeout(timeout).build()?))
}

#[cfg(not(feature = "anthropic"))]
fn anthropic(_model: Option<&str>, _timeout: Duration) -> Result<Arc<dyn Llm>> {
    Err(missing(Api::Anthropic))
}

#[cfg(feature = "gemini")]
fn gemini(model: Option<&str>, timeout: Duration) -> Result<Arc<dyn Llm>> {
    let mut builder = crate::gemini::GeminiBuilder::from_env()?;
    if let Some(m) = model {
        builder = builder.model(m);
    }
    Ok(Arc::new(builder.timeout(timeout).build()?))
}

#[cfg(not(feature = "gemini"))]
fn gemini(_model: Option<&str>, _timeout: Duration) -> Result<Arc<dyn Llm>> {
    Err(missing(Api::Gemini))
}

#[cfg(feature = "ollama")]
fn ollama(model: Option<&str>, timeout: Duration) -> Result<Arc<dyn Llm>> {
    let mut builder = crate::ollama::OllamaBuilder::from_env()?;
    if let Some(m) = model {
        builder = builder.model(m);
    }
    Ok(Arc::new(builder.timeout(timeout).build()?))
}

#[cfg(not(feature = "ollama"))]
fn ollama(_model: Option<&str>, _timeout: Duration) -> Result<Arc<dyn Llm>> {
    Err(missing(Api::Ollama))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_say_what_exists() {
        for api in Api::ALL {
            assert_eq!(api.name().parse::<Api>().unwrap(), api);
            assert_eq!(api.to_string().to_uppercase().parse::<Api>().unwrap(), api);
        }
        let err = "bedrock".parse::<Api>().unwrap_err().to_string();
        assert!(err.contains("bedrock") && err.contains("openai, anthropic, gemini, ollama, azure, mistral"), "{err}");
    }

    #[test]
    fn an_explicit_model_is_the_clients_default() {
        // Mistral needs no variable to build (its base URL has a default); the key is only needed to call.
        let llm = Api::Mistral.client(Some(" mistral-small-latest "), Duration::from_secs(5)).unwrap();
        assert_eq!(llm.default_model().as_deref(), Some("mistral-small-latest"));
    }
}
