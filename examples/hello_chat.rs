//! One chat call to a local model: the hello world of catena.
//!
//! ```text
//! cargo run --example hello_chat --features llama-cpp
//! ```
//!
//! The model is the GGUF file in `CATENA_LLM_MODEL` or, when that is unset, the offline default
//! SmolLM2-135M-Instruct at `catena::providers::llama::default_model_path()` (`scripts/setup.sh` installs it).
//! It prints the answer, then the tokens it used and why it stopped.

#[path = "common/trace.rs"]
mod traces;

use anyhow::Result;
use catena::providers::llama::LocalLlm;
use catena::{ChatRequest, Llm, Message};

#[tokio::main]
async fn main() -> Result<()> {
    let tracing = traces::init()?; // the log, and run recording when CATENA_TRACE_DB is set
                                   // Loading reads the model file and starts llama.cpp's worker thread: blocking work, done off the runtime.
    let llm = tokio::task::spawn_blocking(LocalLlm::from_env).await??;
    println!("model: {}", llm.path().display());
    let llm = tracing.llm(std::sync::Arc::new(llm));

    let request = ChatRequest::new(vec![
        Message::system("You are a helpful assistant. Answer in one sentence."),
        Message::user("What is the capital of France?"),
    ])
    .with_max_tokens(48)
    .with_temperature(0.0);

    let response = llm.chat(request).await?;
    println!("answer: {}", response.text().trim());
    if let Some(usage) = response.usage {
        println!("usage: {} input tokens, {} output tokens", usage.input_tokens, usage.output_tokens);
    }
    println!("finish reason: {:?}", response.finish_reason);
    Ok(())
}
