//! Test fixtures shared by the catena workspace's tests, benches and examples (not published).
//!
//! - [`wire`]: a real axum server speaking the OpenAI wire format, scriptable per request.
//! - [`anthropic_wire`]: a real axum server answering Anthropic's Messages API with exact fixture bytes.
//! - [`gemini_wire`]: a real axum server answering the Gemini API with exact fixture bytes.
//! - [`ollama_wire`]: a real axum server answering Ollama's native API (`/api/chat`, `/api/embed`) with exact
//!   fixture bytes.
//! - [`ollama_proxy`]: ollama-proxy-plus, a real server of Ollama's native API, in front of llm-katan.
//! - [`katan`]: llm-katan, a real server of the OpenAI, Anthropic, Gemini and Azure APIs (echo backend).
//! - [`litellm`]: LiteLLM's proxy (Anthropic-format `/v1/messages`) in front of a real llama.cpp server on SmolLM2.
//! - [`llama`]: the real llama.cpp server (llama-cpp-python) on the tiny random GGUF, and the tiny GGUF itself.
//! - [`chroma`]: a real Chroma server (`chroma run`) for the Chroma store's tests.
//! - [`spans`]: captures the `tracing` fields a test's thread records.
//! - [`vectorstore`]: the conformance suite every `VectorStore` runs.
//! - [`shared_dir`], [`smollm2_path`]: the shared data directory and the offline default answer model.

#![warn(missing_docs)]

pub mod anthropic_wire;
pub mod chroma;
pub mod faults;
pub mod gemini_wire;
pub mod katan;
pub mod litellm;
pub mod llama;
pub mod mcp;
pub mod ollama_proxy;
pub mod ollama_wire;
pub mod phoenix;
pub mod qdrant;
pub mod spans;
pub mod vectorstore;
pub mod wire;

use std::path::PathBuf;

/// The shared data directory (`corpora/rust-book`, `maskbench`, `fixtures/`): `$CATENA_SHARED_DIR`, else
/// `../shared` beside the repository.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("CATENA_SHARED_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => llama::repo_root().join("../shared"),
    }
}

/// The rust-book corpus in the shared directory; panics naming the directory when it is missing.
pub fn rust_book() -> PathBuf {
    let dir = shared_dir().join("corpora/rust-book");
    assert!(dir.is_dir(), "the rust-book corpus is not at {} (set CATENA_SHARED_DIR)", dir.display());
    dir
}

/// SmolLM2-135M-Instruct, the offline default answer model, in the cache directory; panics with the command
/// that fetches it when it is missing.
pub fn smollm2_path() -> PathBuf {
    catena_providers::cache_dir()
        .map(|d| d.join("SmolLM2-135M-Instruct.Q4_1.gguf"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| panic!("SmolLM2 is not in the cache directory; run `bash .ci/fetch-smollm2.sh`"))
}
