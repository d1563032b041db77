//! Shared by the `rag`, `structured`, `guidance` and `agent` examples: the model to run against, chosen with
//! `--model` (a local GGUF file) or `--provider` (a server, configured from its usual environment variables),
//! with `--timeout` and `--attempts` for every call to a server.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use catena::layer::{LayerExt, RetryLayer, RetryPolicy};
use catena::Llm;

/// The API a model server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    /// OpenAI or any OpenAI-compatible server (vLLM, llama.cpp, LiteLLM, ...): OPENAI_BASE_URL, OPENAI_API_KEY,
    /// CATENA_MODEL (CATENA_COMPAT names the server family).
    Openai,
    /// Anthropic's Messages API: ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY, CATENA_MODEL.
    Anthropic,
    /// Google's Gemini API: GEMINI_BASE_URL, GEMINI_API_KEY, CATENA_MODEL.
    Gemini,
    /// Ollama's own API: OLLAMA_HOST, CATENA_MODEL.
    Ollama,
    /// Azure OpenAI: AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY (or AZURE_OPENAI_AD_TOKEN), AZURE_OPENAI_API_VERSION,
    /// the deployment in CATENA_MODEL.
    Azure,
    /// Mistral's API: MISTRAL_API_KEY (MISTRAL_BASE_URL for another server), CATENA_MODEL.
    Mistral,
}

/// How the examples reach a model server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The model server's API (configured from its usual environment variables; see the example's --help).
    /// Default: openai when OPENAI_BASE_URL or OPENAI_API_KEY is set.
    #[arg(long, value_enum)]
    pub provider: Option<Provider>,
    /// The longest one call to the model server may take, in seconds (connecting, waiting and streaming included).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Attempts per call to the model server: failures before any output (429, 5xx, resets, deadlines) are retried
    /// with jittered backoff, honouring Retry-After up to 30 s.
    #[arg(long, default_value_t = 3)]
    pub attempts: u32,
}

impl ServerArgs {
    /// The provider to use: `--provider`, else openai when OPENAI_BASE_URL or OPENAI_API_KEY is set.
    pub fn chosen(&self) -> Option<Provider> {
        self.provider.or_else(|| {
            (std::env::var_os("OPENAI_BASE_URL").is_some() || std::env::var_os("OPENAI_API_KEY").is_some())
                .then_some(Provider::Openai)
        })
    }

    /// The chosen provider's client (`model` overrides CATENA_MODEL), with the `--timeout` deadline and
    /// `--attempts` retries; `None` when no provider is chosen.
    pub fn llm(&self, model: Option<&str>) -> Result<Option<Arc<dyn Llm>>> {
        let Some(provider) = self.chosen() else { return Ok(None) };
        if self.timeout == 0 || self.attempts == 0 {
            bail!("--timeout and --attempts must be at least 1");
        }
        let timeout = Duration::from_secs(self.timeout);
        let retry = RetryLayer::new(RetryPolicy::new(self.attempts)?.with_max_retry_after(Duration::from_secs(30)));
        let llm: Arc<dyn Llm> = match provider {
            Provider::Openai | Provider::Azure | Provider::Mistral => {
                use catena::providers::openai::OpenAiBuilder;
                let mut builder = match provider {
                    Provider::Azure => OpenAiBuilder::azure_from_env()?,
                    Provider::Mistral => OpenAiBuilder::mistral()?,
                    _ => OpenAiBuilder::from_env()?,
                };
                if let Some(m) = model {
                    builder = builder.model(m);
                }
                let client = builder.timeout(timeout).build()?;
                if client.default_model().is_none() {
                    bail!("{provider:?} is configured but no model: set CATENA_MODEL=<model>");
                }
                Arc::new(client.layer(retry))
            }
            Provider::Anthropic => anthropic(model, timeout, retry)?,
            Provider::Gemini => gemini(model, timeout, retry)?,
            Provider::Ollama => ollama(model, timeout, retry)?,
        };
        Ok(Some(llm))
    }
}

#[cfg(feature = "anthropic")]
fn anthropic(model: Option<&str>, timeout: Duration, retry: RetryLayer) -> Result<Arc<dyn Llm>> {
    use catena::providers::anthropic::AnthropicBuilder;
    let mut builder = AnthropicBuilder::from_env()?;
    if let Some(m) = model {
        builder = builder.model(m);
    }
    let client = builder.timeout(timeout).build()?;
    if client.default_model().is_none() {
        bail!("Anthropic is configured but no model: set CATENA_MODEL=<model>");
    }
    Ok(Arc::new(client.layer(retry)))
}

#[cfg(not(feature = "anthropic"))]
fn anthropic(_model: Option<&str>, _timeout: Duration, _retry: RetryLayer) -> Result<Arc<dyn Llm>> {
    bail!("--provider anthropic needs the `anthropic` feature: rebuild with --features anthropic")
}

#[cfg(feature = "gemini")]
fn gemini(model: Option<&str>, timeout: Duration, retry: RetryLayer) -> Result<Arc<dyn Llm>> {
    use catena::providers::gemini::GeminiBuilder;
    let mut builder = GeminiBuilder::from_env()?;
    if let Some(m) = model {
        builder = builder.model(m);
    }
    let client = builder.timeout(timeout).build()?;
    if client.default_model().is_none() {
        bail!("Gemini is configured but no model: set CATENA_MODEL=<model>");
    }
    Ok(Arc::new(client.layer(retry)))
}

#[cfg(not(feature = "gemini"))]
fn gemini(_model: Option<&str>, _timeout: Duration, _retry: RetryLayer) -> Result<Arc<dyn Llm>> {
    bail!("--provider gemini needs the `gemini` feature: rebuild with --features gemini")
}

#[cfg(feature = "ollama")]
fn ollama(model: Option<&str>, timeout: Duration, retry: RetryLayer) -> Result<Arc<dyn Llm>> {
    use catena::providers::ollama::OllamaBuilder;
    let mut builder = OllamaBuilder::from_env()?;
    if let Some(m) = model {
        builder = builder.model(m);
    }
    let client = builder.timeout(timeout).build()?;
    if client.default_model().is_none() {
        bail!("Ollama is configured but no model: set CATENA_MODEL=<model>");
    }
    Ok(Arc::new(client.layer(retry)))
}

#[cfg(not(feature = "ollama"))]
fn ollama(_model: Option<&str>, _timeout: Duration, _retry: RetryLayer) -> Result<Arc<dyn Llm>> {
    bail!("--provider ollama needs the `ollama` feature: rebuild with --features ollama")
}

/// The server named by `--provider` when there is one, else a local GGUF model when `model` is given (`--model`
/// or CATENA_LLM_MODEL), else an OpenAI-compatible server from the environment.
pub fn choose_llm(model: Option<&Path>, server: &ServerArgs) -> Result<Arc<dyn Llm>> {
    if let (None, Some(path)) = (server.provider, model) {
        return local_llm(path);
    }
    match server.llm(None)? {
        Some(llm) => Ok(llm),
        None => bail!(
            "no model: pass --model <file.gguf> (feature llama-cpp), or --provider <api> with its environment \
             (OPENAI_BASE_URL and CATENA_MODEL for an OpenAI-compatible server)"
        ),
    }
}

/// A local GGUF model.
#[cfg(feature = "llama-cpp")]
pub fn local_llm(path: &Path) -> Result<Arc<dyn Llm>> {
    use catena::providers::llama::{LocalLlm, LocalLlmOptions};
    Ok(Arc::new(LocalLlm::from_gguf(path, LocalLlmOptions::default())?))
}

/// A local GGUF model (not in this build).
#[cfg(not(feature = "llama-cpp"))]
pub fn local_llm(path: &Path) -> Result<Arc<dyn Llm>> {
    bail!("{} is a local model, but this example was built without the `llama-cpp` feature", path.display())
}
