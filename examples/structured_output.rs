//! Structured output: ask for a Rust type, or for one of a few strings.
//!
//! ```text
//! cargo run --example structured_output --features llama-cpp,constrain
//! ```
//!
//! `LlmStructuredExt::generate::<T>` derives `T`'s JSON Schema (`schemars`), has the backend enforce it and
//! returns the parsed value with the strategy used: `grammar` on a local model with feature `constrain` (every
//! token is sampled under the schema), `native` on servers that enforce schemas, `validate_and_repair`
//! elsewhere. `constrained` does the same for any `Constraint` (here a choice). The model is `CATENA_LLM_MODEL`,
//! else the offline default SmolLM2-135M-Instruct (`scripts/setup.sh`).

#[path = "common/trace.rs"]
mod traces;

use anyhow::Result;
use catena::providers::llama::LocalLlm;
use catena::structured::{LlmStructuredExt, RepairPolicy};
use catena::{ChatRequest, Constraint, Message};
use serde::Deserialize;

/// A city, as the model describes it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct City {
    #[schemars(length(max = 30))]
    name: String,
    #[schemars(length(max = 30))]
    country: String,
    /// Inhabitants, roughly.
    #[schemars(range(max = 100_000_000))]
    population: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let tracing = traces::init()?; // the log, and run recording when CATENA_TRACE_DB is set
    let llm = tokio::task::spawn_blocking(LocalLlm::from_env).await??;
    let llm = tracing.llm(std::sync::Arc::new(llm));

    let request = ChatRequest::new(vec![
        Message::system("Answer with JSON."),
        Message::user("Describe the capital of Japan: name, country and population."),
    ])
    .with_max_tokens(64)
    .with_temperature(0.0);
    let city = llm.generate::<City>(request).await?;
    let City { name, country, population } = &city.value;
    println!("typed: {name}, {country}, population {population}");
    println!("  strategy {}, {} attempt(s), {} output tokens", city.strategy, city.attempts, city.usage.output_tokens);

    // Exactly one of these strings; `Forbid` refuses the validate-and-repair fallback.
    let choice = Constraint::choice(["yes", "no"]);
    let answer =
        llm.constrained("Is Rust a programming language? Answer yes or no.", choice, RepairPolicy::Forbid).await?;
    println!("choice: {} (strategy {})", answer.text, answer.strategy);
    Ok(())
}
