//! A Guidance-style template: handlebars with generation slots, run once and then as a chain step.
//!
//! ```text
//! cargo run --example guidance_template --features llama-cpp,constrain
//! ```
//!
//! `{{select}}` picks one of the options, `{{gen}}` writes text (under a `regex`, up to a `stop`, within
//! `max_tokens`); each capture is returned by name. On a local model with feature `constrain` a template whose
//! text does not depend on its captures runs as one grammar-constrained pass. `program.bind(llm)` makes the
//! program a chain step from its variables to the `Run`. The model is `CATENA_LLM_MODEL`, else the offline
//! default SmolLM2-135M-Instruct (`scripts/setup.sh`).

#[path = "common/trace.rs"]
mod traces;

use std::sync::Arc;

use anyhow::Result;
use catena::guidance::{Program, RunOptions};
use catena::providers::llama::LocalLlm;
use catena::{Chain, Llm};
use serde::Deserialize;
use serde_json::json;

const TEMPLATE: &str = r#"{{#system}}You answer quiz questions about programming.{{/system}}
{{#user}}{{question}}{{/user}}
{{#assistant}}Answer: {{select "answer" options=(list "yes" "no")}}
Confidence (1-5): {{gen "confidence" regex="[1-5]"}}
Reason: {{gen "reason" stop="\n" max_tokens=24}}{{/assistant}}"#;

/// The captures, typed: one field per slot.
#[derive(Debug, Deserialize)]
struct Quiz {
    answer: String,
    confidence: String,
    reason: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let tracing = traces::init()?; // the log, and run recording when CATENA_TRACE_DB is set
    let llm: Arc<dyn Llm> = Arc::new(tokio::task::spawn_blocking(LocalLlm::from_env).await??);
    let llm = tracing.llm(llm);
    let program = Program::new(TEMPLATE)?; // syntax and slot arguments are checked here, before any model call
    let options = RunOptions { temperature: Some(0.0), ..RunOptions::default() };

    let run =
        program.run_with(llm.as_ref(), &json!({"question": "Does Rust have a garbage collector?"}), &options).await?;
    let quiz: Quiz = run.deserialize()?;
    println!("run: answer {:?}, confidence {:?}, reason {:?}", quiz.answer, quiz.confidence, quiz.reason.trim());
    println!("  single pass: {}, {} output tokens", run.single_pass, run.usage.output_tokens);

    // As a chain step: variables in, the `Run` out; `.map` keeps the one capture we want.
    let ask = program.bind(llm).with_options(options).map(|run| run.captures.text("answer").unwrap_or("?").to_string());
    let questions = ["Is Rust memory-safe without a garbage collector?", "Is Cargo Rust's package manager?"];
    let answers = ask.batch(questions.iter().map(|q| json!({"question": q})).collect(), 1).await;
    for (question, answer) in questions.iter().zip(answers) {
        println!("chain: {question} -> {}", answer?);
    }
    Ok(())
}
