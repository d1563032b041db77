//! Middleware layers: timeout, retry and fallback around a model, with a tracing span over the whole call.
//!
//! ```text
//! cargo run --example layers --features llama-cpp
//! ```
//!
//! The primary model is an OpenAI-compatible client pointed at a port where nothing listens, so every attempt
//! fails: the retry layer tries it three times (the warnings show each retry), then the fallback layer sends the
//! request to the local model (`CATENA_LLM_MODEL`, else the offline default SmolLM2-135M-Instruct from
//! `scripts/setup.sh`). Layers are applied inside out (`catena::layer` documents the recommended order); the
//! layered model is still an `Llm`. Set `RUST_LOG` to see more (`RUST_LOG=debug`); `CATENA_TRACE_DB=<file>`
//! records the call, its failed attempts and the fallback's answer, for the studio.

use std::time::Duration;

use anyhow::Result;
use catena::layer::{
    FallbackLayer, FallbackOn, LayerExt, RetryLayer, RetryPolicy, TelemetryLayer, TimeoutLayer, Timeouts,
};
use catena::providers::llama::LocalLlm;
use catena::providers::openai::{Compat, OpenAiClient};
use catena::{ChatRequest, Llm, Message};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const PRIMARY_URL: &str = "http://127.0.0.1:9/v1";
const PRIMARY_MODEL: &str = "remote-model";

#[tokio::main]
async fn main() -> Result<()> {
    // Warnings (retries, the fallback) and, when the call ends, the GenAI span with its fields, on stderr.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,catena_core=info"));
    let log = tracing_subscriber::fmt::layer().with_span_events(FmtSpan::CLOSE).with_writer(std::io::stderr);
    // With CATENA_TRACE_DB=<file>, every run is also recorded there; dropping `_recording` writes the last ones.
    let recording = catena::trace::from_env()?;
    tracing_subscriber::registry().with(log.with_filter(filter)).with(recording.recorder).init();
    let _recording = recording.handle;

    let local = tokio::task::spawn_blocking(LocalLlm::from_env).await??;
    let primary =
        OpenAiClient::builder().base_url(PRIMARY_URL).model(PRIMARY_MODEL).compat(Compat::LlamaCpp).build()?;
    let retry = RetryPolicy::new(3)?.with_backoff(Duration::from_millis(100), Duration::from_secs(1), 2.0)?;
    let timeouts = Timeouts::none().with_first_chunk(Duration::from_secs(10)).with_total(Duration::from_secs(60));

    // Innermost first: timeout per attempt, retries of the primary, then the fallback, then one span over it all.
    let llm = primary
        .layer(TimeoutLayer::new(timeouts))
        .layer(RetryLayer::new(retry))
        .layer(FallbackLayer::new(local, FallbackOn::Retryable))
        .layer(TelemetryLayer::new().record_content(recording.record_content));
    println!("backend: {}", llm.capabilities().backend);

    let request = ChatRequest::new(vec![Message::user("Name one primary colour.")]).with_max_tokens(24);
    let response = llm.chat(request).await?;
    println!("answered by: {}", response.model);
    println!("answer: {}", response.text().trim());
    println!("fell back to the local model: {}", response.model != PRIMARY_MODEL);
    Ok(())
}
