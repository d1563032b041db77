//! Model providers for catena.
//!
//! - [`openai`]: OpenAI and every OpenAI-compatible server (vLLM, llama.cpp, Ollama `/v1`, Mistral, ...).
//! - `local_embed` (feature `local-embed`): in-process sentence embeddings on candle.
//! - `llama` (feature `llama-cpp`): in-process GGUF generation through llama.cpp.

#![warn(missing_docs)]

pub mod openai;

#[cfg(feature = "local-embed")]
pub mod local_embed;

#[cfg(feature = "llama-cpp")]
pub mod llama;
