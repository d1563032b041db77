//! Model providers for catena.
//!
//! - [`openai`]: OpenAI and every OpenAI-compatible server (vLLM, llama.cpp, Ollama `/v1`, Mistral, ...).
//! - `anthropic` (feature `anthropic`): Anthropic's Messages API, natively (and servers that speak it).
//! - `gemini` (feature `gemini`): Google's Gemini API and Vertex AI, natively (chat and embeddings).
//! - `ollama` (feature `ollama`): Ollama's native API (`/api/chat`, `/api/embed`).
//! - `local_embed` (feature `local-embed`): in-process sentence embeddings on candle.
//! - `llama` (feature `llama-cpp`): in-process GGUF generation through llama.cpp.
//! - [`env`]: pick one of the HTTP APIs by name, configured from its usual environment variables.

#![warn(missing_docs)]

pub mod env;
pub mod openai;
pub mod transport;

#[cfg(all(any(test, feature = "fuzzing"), feature = "anthropic", feature = "gemini", feature = "ollama"))]
#[doc(hidden)]
pub mod fuzzing;

pub use transport::{Answer, Deadlines, DEFAULT_DEADLINES};

#[cfg(feature = "anthropic")]
pub mod anthropic;

#[cfg(feature = "gemini")]
pub mod gemini;
#[cfg(feature = "ollama")]
pub mod ollama;

#[cfg(feature = "local-embed")]
pub mod local_embed;

#[cfg(feature = "llama-cpp")]
pub mod llama;

/// The directory where catena's default local models live: `$CATENA_CACHE_DIR`, else `$HOME/.cache/catena`.
/// `None` when neither variable is set. The repository's `.ci/fetch-minilm.sh` and `.ci/fetch-smollm2.sh` install
/// the default embedding and answer models there.
pub fn cache_dir() -> Option<std::path::PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    var("CATENA_CACHE_DIR").or_else(|| var("HOME").map(|home| home.join(".cache").join("catena")))
}
