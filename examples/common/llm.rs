//! Shared by the `rag`, `rag_experiment`, `structured`, `guidance` and `agent` examples: the model to run against, chosen with
//! `--model` (a local GGUF file) or `--provider` (a server, configured from its usual environment variables),
//! with `--timeout` and `--attempts` for every call to a server.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use catena::layer::{LayerExt, RetryLayer, RetryPolicy};
use catena::providers::env::Api;
use catena::Llm;

/// How the examples reach a model server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The model server's API, configured from its usual environment variables: openai (OPENAI_BASE_URL,
    /// OPENAI_API_KEY; any OpenAI-compatible server), anthropic (ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY), gemini
    /// (GEMINI_BASE_URL, GEMINI_API_KEY), ollama (OLLAMA_HOST), azure (AZURE_OPENAI_ENDPOINT,
    /// AZURE_OPENAI_API_KEY or AZURE_OPENAI_AD_TOKEN, AZURE_OPENAI_API_VERSION) or mistral (MISTRAL_API_KEY); the
    /// model (Azure: the deployment) in CATENA_MODEL. Default: openai when OPENAI_BASE_URL or OPENAI_API_KEY is set
    /// (and not empty).
    #[arg(long, value_name = "API", value_parser = api_parser(), ignore_case = true)]
    pub provider: Option<Api>,
    /// The longest one attempt at a call to the model server may take, in seconds (connecting, waiting and
    /// streaming included); with --attempts above 1, a failed attempt is followed by another, each with this
    /// deadline.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Attempts per call to the model server: failures before any output (429, 5xx, resets, deadlines) are retried
    /// with jittered backoff, honouring Retry-After up to 30 s.
    #[arg(long, default_value_t = 3)]
    pub attempts: u32,
}

/// `--provider`'s values: every `Api` by name (listed in `--help`, with a suggestion for a misspelt one).
fn api_parser() -> impl clap::builder::TypedValueParser<Value = Api> {
    use clap::builder::TypedValueParser;
    let names: Vec<&'static str> = Api::ALL.iter().map(|a| a.name()).collect();
    clap::builder::PossibleValuesParser::new(names).try_map(|name: String| name.parse::<Api>())
}

impl ServerArgs {
    /// The provider to use: `--provider`, else openai when OPENAI_BASE_URL or OPENAI_API_KEY is set (and not
    /// empty).
    pub fn chosen(&self) -> Option<Api> {
        self.provider.or_else(|| Api::Openai.configured().then_some(Api::Openai))
    }

    /// The chosen provider's client (`model` overrides CATENA_MODEL), with the `--timeout` deadline and
    /// `--attempts` retries; `None` when no provider is chosen.
    pub fn llm(&self, model: Option<&str>) -> Result<Option<Arc<dyn Llm>>> {
        let Some(api) = self.chosen() else { return Ok(None) };
        if self.timeout == 0 || self.attempts == 0 {
            bail!("--timeout and --attempts must be at least 1");
        }
        if !api.available() {
            bail!(
                "--provider {api} needs the `{}` feature: rebuild with --features {0}",
                api.feature().unwrap_or_default()
            );
        }
        let client = api.client(model, Duration::from_secs(self.timeout))?;
        if client.default_model().is_none() {
            bail!("{api} is configured but no model: set CATENA_MODEL=<model>");
        }
        let retry = RetryLayer::new(RetryPolicy::new(self.attempts)?.with_max_retry_after(Duration::from_secs(30)));
        Ok(Some(Arc::new(client.layer(retry))))
    }
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
