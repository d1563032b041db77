//! Composing chains: prompt template -> model -> output parser, then the same chain on a batch and as a stream.
//!
//! ```text
//! cargo run --example composition --features llama-cpp,constrain
//! ```
//!
//! A `ChatPromptTemplate` (JSON variables in, messages out), a model (`Arc<dyn Llm>` as it is, or `LlmChain` to
//! set the request: max tokens, temperature, a constraint) and a parser (`TextOutput`, `TypedOutput<T>`) are
//! chain steps joined with `.then`. `.batch` runs many inputs with bounded concurrency; `.stream` streams through
//! the last step and is `'static`, so it can move into `tokio::spawn`. The model is `CATENA_LLM_MODEL`, else the
//! offline default SmolLM2-135M-Instruct (`scripts/setup.sh`); feature `constrain` enforces the JSON Schema.

#[path = "common/trace.rs"]
mod traces;

use std::io::Write;
use std::sync::Arc;

use anyhow::Result;
use catena::providers::llama::LocalLlm;
use catena::{Chain, ChatPromptTemplate, ChatRequest, Constraint, Llm, LlmChain, TextOutput, TypedOutput};
use futures::StreamExt;
use serde_json::json;

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct Animal {
    #[schemars(length(max = 20))]
    name: String,
    #[schemars(range(max = 100))]
    legs: u8,
}

#[tokio::main]
async fn main() -> Result<()> {
    let tracing = traces::init()?; // the log, and run recording when CATENA_TRACE_DB is set
    let llm: Arc<dyn Llm> = Arc::new(tokio::task::spawn_blocking(LocalLlm::from_env).await??);
    let llm = tracing.llm(llm);
    let settings = ChatRequest::default().with_max_tokens(32).with_temperature(0.0);

    // prompt -> model (with request settings) -> text
    let prompt =
        ChatPromptTemplate::builder().system("Answer in one short sentence.").user("What is {{thing}}?").build()?;
    let explain = prompt.clone().then(LlmChain::new(llm.clone()).with_request(settings.clone())).then(TextOutput);
    println!("invoke: {}", explain.invoke(json!({"thing": "a crab"})).await?.trim());

    // The same chain over several inputs, at most 2 at a time; one result per input, in order.
    let inputs = vec![json!({"thing": "a spider"}), json!({"thing": "a snake"})];
    for answer in explain.batch(inputs, 2).await {
        println!("batch: {}", answer?.trim());
    }

    // A typed answer: the request carries the type's JSON Schema, `TypedOutput` parses the JSON into `Animal`.
    let typed_settings = settings.clone().with_max_tokens(48).with_constraint(Constraint::json_schema_for::<Animal>());
    let describe = ChatPromptTemplate::builder().user("Describe {{animal}} as JSON with its name and legs.").build()?;
    let describe =
        describe.then(LlmChain::new(llm.clone()).with_request(typed_settings)).then(TypedOutput::<Animal>::new());
    let animal = describe.invoke(json!({"animal": "a dog"})).await?;
    println!("typed: {} has {} legs", animal.name, animal.legs);

    // Streaming: a chain ending in a model step streams its chunks; the stream owns what it needs.
    let stream = prompt.then(LlmChain::new(llm).with_request(settings)).stream(json!({"thing": "a whale"}));
    print!("stream: ");
    let printer = tokio::spawn(async move {
        let mut stream = stream;
        let mut chunks = 0;
        while let Some(chunk) = stream.next().await {
            if let Some(text) = chunk?.text {
                print!("{text}");
                std::io::stdout().flush()?;
                chunks += 1;
            }
        }
        println!();
        anyhow::Ok(chunks)
    });
    println!("  ({} text chunks, printed by a spawned task)", printer.await??);
    Ok(())
}
