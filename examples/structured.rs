//! Typed extraction: turn free text into a Rust struct, on any backend.
//!
//! ```text
//! # a local GGUF model (exact: decoded under the struct's JSON Schema)
//! cargo run --release --example structured --features local,constrain -- --model model.gguf
//! # any OpenAI-compatible server (its native structured output, or validate-and-repair)
//! OPENAI_BASE_URL=http://127.0.0.1:8080/v1 CATENA_MODEL=my-model \
//!     cargo run --release --example structured --features constrain -- "Ada Lovelace, born 1815 in London"
//! ```
//!
//! It prints the extracted value as JSON, then how it was obtained: the strategy (`grammar` on a local model,
//! `native` where the server enforces JSON Schemas, `validate_and_repair` elsewhere), the number of attempts
//! and the tokens used. `--no-fallback` forbids validate-and-repair.

#[path = "common/llm.rs"]
mod llm;
#[path = "common/trace.rs"]
mod traces;

use anyhow::Result;
use catena::structured::{LlmStructuredExt, RepairPolicy};
use catena::{ChatRequest, Message};
use clap::Parser;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A person mentioned in the text.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Person {
    /// Full name, as written.
    #[schemars(length(max = 60))]
    name: String,
    /// Year of birth, if the text gives it.
    #[schemars(range(min = 0, max = 2100))]
    born: Option<u16>,
    /// Where they were born, if the text says.
    #[schemars(length(max = 60))]
    birthplace: Option<String>,
    /// What they are known for, in at most a few words.
    #[schemars(length(max = 80))]
    known_for: Option<String>,
}

#[derive(Parser, Debug)]
#[command(about = "Extract a typed Person from text with any catena backend")]
struct Args {
    /// The text to extract from.
    #[arg(default_value = "Ada Lovelace (born 1815 in London) wrote the first published computer program.")]
    text: String,
    /// A local GGUF model (default: CATENA_LLM_MODEL); otherwise OPENAI_BASE_URL / OPENAI_API_KEY are used.
    #[arg(long, env = "CATENA_LLM_MODEL")]
    model: Option<PathBuf>,
    /// The model server, when no --model is given.
    #[command(flatten)]
    server: llm::ServerArgs,
    /// Forbid the validate-and-repair fallback: fail when the backend cannot enforce the schema itself.
    #[arg(long)]
    no_fallback: bool,
    /// Most tokens per attempt.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let tracing = traces::init()?;
    let args = Args::parse();
    let llm = llm::choose_llm(args.model.as_deref(), &args.server)?;
    let llm = tracing.llm(llm);
    let request = ChatRequest::new(vec![
        Message::system("Extract the person the user's text is about. Use null for what the text does not say."),
        Message::user(args.text.clone()),
    ])
    .with_max_tokens(args.max_tokens)
    .with_seed(args.seed)
    .with_temperature(0.0);
    let fallback = if args.no_fallback { RepairPolicy::Forbid } else { RepairPolicy::default() };
    let person = llm.generate_with::<Person>(request, fallback).await?;
    println!("{}", serde_json::to_string_pretty(&person.value)?);
    eprintln!(
        "strategy={} attempts={} input_tokens={} output_tokens={}",
        person.strategy, person.attempts, person.usage.input_tokens, person.usage.output_tokens
    );
    Ok(())
}
