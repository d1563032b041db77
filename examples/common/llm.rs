//! Shared by the `structured` and `guidance` examples: the model to run against.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use catena::Llm;

/// A local GGUF model when `model` is given, otherwise the OpenAI-compatible endpoint configured in the
/// environment (`OPENAI_BASE_URL` / `OPENAI_API_KEY`, `CATENA_MODEL`).
pub fn choose_llm(model: Option<&Path>) -> Result<Arc<dyn Llm>> {
    if let Some(path) = model {
        return local_llm(path);
    }
    if std::env::var_os("OPENAI_BASE_URL").is_some() || std::env::var_os("OPENAI_API_KEY").is_some() {
        let client = catena::providers::openai::OpenAiBuilder::from_env()?.build()?;
        if client.default_model().is_none() {
            bail!("an OpenAI-compatible endpoint is configured but no model: set CATENA_MODEL=<model>");
        }
        return Ok(Arc::new(client));
    }
    bail!("no model: pass --model <file.gguf> (feature llama-cpp) or set OPENAI_BASE_URL and CATENA_MODEL")
}

#[cfg(feature = "llama-cpp")]
fn local_llm(path: &Path) -> Result<Arc<dyn Llm>> {
    use catena::providers::llama::{LocalLlm, LocalLlmOptions};
    Ok(Arc::new(LocalLlm::from_gguf(path, LocalLlmOptions::default())?))
}

#[cfg(not(feature = "llama-cpp"))]
fn local_llm(path: &Path) -> Result<Arc<dyn Llm>> {
    bail!("{} is a local model, but this example was built without the `llama-cpp` feature", path.display())
}
