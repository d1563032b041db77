//! Streaming a chat answer: print the text as the model writes it.
//!
//! ```text
//! cargo run --example streaming --features llama-cpp
//! ```
//!
//! `Llm::chat_stream` returns a `'static` stream of `ChatChunk`s: text deltas, then a last chunk with the finish
//! reason and the usage. Folding the chunks with `ChatResponseBuilder` gives the response `chat` would return.
//! The model is `CATENA_LLM_MODEL`, else the offline default SmolLM2-135M-Instruct (`scripts/setup.sh`).

#[path = "common/trace.rs"]
mod traces;

use std::io::Write;

use anyhow::Result;
use catena::providers::llama::LocalLlm;
use catena::{ChatRequest, ChatResponseBuilder, Llm, Message};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<()> {
    let tracing = traces::init()?; // the log, and run recording when CATENA_TRACE_DB is set
    let llm = tokio::task::spawn_blocking(LocalLlm::from_env).await??;
    let llm = tracing.llm(std::sync::Arc::new(llm));
    let request =
        ChatRequest::new(vec![Message::user("Write a haiku about the Rust borrow checker.")]).with_max_tokens(48);

    let mut stream = llm.chat_stream(request).await?;
    let mut answer = ChatResponseBuilder::default();
    let mut deltas = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if let Some(text) = &chunk.text {
            print!("{text}");
            std::io::stdout().flush()?; // show each delta now, not at the end of the line
            deltas += 1;
        }
        answer.push(&chunk);
    }
    let response = answer.finish();
    println!();
    println!("text deltas: {deltas}");
    println!("finish reason: {:?}", response.finish_reason);
    if let Some(usage) = response.usage {
        println!("usage: {} input tokens, {} output tokens", usage.input_tokens, usage.output_tokens);
    }
    Ok(())
}
