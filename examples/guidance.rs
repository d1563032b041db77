//! A Guidance-style template: handlebars with generation slots (`gen`, `select`, `json`), run against a model.
//!
//! ```text
//! # a local GGUF model: the template runs as one grammar pass where it can
//! cargo run --release --example guidance --features local,constrain -- --model model.gguf
//! # any OpenAI-compatible server: one request per slot, each slot's constraint mapped to the server's feature
//! OPENAI_BASE_URL=http://127.0.0.1:8080/v1 CATENA_MODEL=my-model \
//!     cargo run --release --example guidance --features constrain -- "The hinge broke after two days."
//! ```
//!
//! It prints the filled-in assistant turn, the captures as a typed struct, and how the template ran (one pass
//! or slot by slot, strategy and attempts per slot, tokens).

#[path = "common/llm.rs"]
mod llm;
#[path = "common/trace.rs"]
mod traces;

use anyhow::Result;
use catena::guidance::{Program, RunOptions};
use clap::Parser;
use serde::Deserialize;
use std::path::PathBuf;

/// The template: the review is a variable; `sentiment`, `score`, `reason` and `tags` are generated. The line
/// after the score depends on the sentiment the model picked.
const TEMPLATE: &str = r#"{{#system}}You triage product reviews.{{/system}}
{{#user}}Review: {{review}}{{/user}}
{{#assistant}}Sentiment: {{select "sentiment" options=(list "positive" "neutral" "negative")}}
Score (1-5): {{gen "score" regex="[1-5]"}}
{{#if (eq sentiment "negative")}}Main complaint{{else}}Best point{{/if}}: {{gen "reason" stop="\n" max_tokens=30}}
Tags: {{json "tags" schema=tag_schema}}{{/assistant}}"#;

/// The captures, typed.
#[derive(Debug, Deserialize)]
struct Triage {
    sentiment: String,
    score: String,
    reason: String,
    tags: Vec<String>,
}

#[derive(Parser, Debug)]
#[command(about = "Run a Guidance-style template with catena")]
struct Args {
    /// The review to triage.
    #[arg(default_value = "Sturdy and quiet, but the battery died within a week.")]
    review: String,
    /// A local GGUF model (default: CATENA_LLM_MODEL); otherwise OPENAI_BASE_URL / OPENAI_API_KEY are used.
    #[arg(long, env = "CATENA_LLM_MODEL")]
    model: Option<PathBuf>,
    /// The model server, when no --model is given.
    #[command(flatten)]
    server: llm::ServerArgs,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
}

#[tokio::main]
async fn main() -> Result<()> {
    let tracing = traces::init()?;
    let args = Args::parse();
    let llm = llm::choose_llm(args.model.as_deref(), &args.server)?;
    let llm = tracing.llm(llm);
    let program = Program::new(TEMPLATE)?;
    let tag_schema = serde_json::json!({
        "type": "array",
        "items": {"type": "string", "maxLength": 20},
        "minItems": 1,
        "maxItems": 3
    });
    let vars = serde_json::json!({"review": args.review, "tag_schema": tag_schema});
    let options = RunOptions { seed: Some(args.seed), temperature: Some(args.temperature), ..RunOptions::default() };
    let run = program.run_with(llm.as_ref(), &vars, &options).await?;

    if let Some(answer) = run.messages.last() {
        println!("{}\n", answer.text());
    }
    let triage: Triage = run.deserialize()?;
    println!(
        "sentiment: {}\nscore: {}\nreason: {}\ntags: {}",
        triage.sentiment,
        triage.score,
        triage.reason,
        triage.tags.join(", ")
    );
    eprintln!(
        "single_pass={} input_tokens={} output_tokens={}",
        run.single_pass, run.usage.input_tokens, run.usage.output_tokens
    );
    for slot in &run.slots {
        let strategy = slot.strategy.map_or_else(|| "plain".to_string(), |s| s.to_string());
        eprintln!("  slot {} ({}): strategy={strategy} attempts={}", slot.name, slot.kind, slot.attempts);
    }
    Ok(())
}
