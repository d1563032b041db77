//! The agent on real models: SmolLM2-135M-Instruct in process (`LocalLlm`, tool calls through its grammar) and
//! behind llama-cpp-python's OpenAI-compatible server (tool calls through the server's schema grammar for a
//! named tool choice). A 135M model's choices cannot be scripted, so these tests check what must hold whatever it
//! says: the first call (forced to a tool) produces a call whose arguments fit the schema and run, the result
//! goes back, and the run ends with an answer within its budget. The scripted loop tests are in
//! `crates/agent/tests/agent.rs`.
#![cfg(all(feature = "agent", feature = "llama-cpp"))]

use std::sync::Arc;

use catena::agent::{Agent, AgentEvent, AgentOutcome, Limits, ToolBox};
use catena::{tool_fn, Chain, ChatRequest, Llm, ToolChoice};
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
struct Add {
    /// The first number.
    a: i64,
    /// The second number.
    b: i64,
}

fn tools() -> ToolBox {
    ToolBox::new()
        .with(tool_fn(
            "add",
            "Adds two integers and returns their sum.",
            |x: Add| async move { Ok::<_, String>(x.a + x.b) },
        ))
        .unwrap()
}

async fn run_once(llm: Arc<dyn Llm>, first_choice: ToolChoice) {
    let request = ChatRequest::default().with_temperature(0.0).with_max_tokens(96).with_tool_choice(first_choice);
    let agent = Agent::new(llm, tools(), Limits::new(3, 3, 1))
        .unwrap()
        .with_system("You are a helpful assistant. Use the add tool for arithmetic.")
        .with_request(request);
    let events: Vec<AgentEvent> = agent.stream("What is 17 + 25?".into()).map(|e| e.unwrap()).collect().await;
    let results: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolResult { call, result, .. } => Some((call.clone(), result.clone())),
            _ => None,
        })
        .collect();
    assert!(!results.is_empty(), "the forced first call made no tool call: {events:?}");
    let (call, result) = &results[0];
    assert_eq!(call.name, "add");
    // Whatever numbers the model chose, they fit the schema (the grammar guarantees it) and the tool ran on them.
    let args: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
    let want = args["a"].as_i64().unwrap() + args["b"].as_i64().unwrap();
    assert_eq!(result, &Ok(serde_json::json!(want)), "{call:?}");
    let Some(AgentEvent::Done { outcome: AgentOutcome::Finished(answer) }) = events.last() else {
        panic!("the run did not end with an answer: {:?}", events.last())
    };
    assert!(answer.model_calls <= 3 && answer.tool_calls <= 3);
    assert_eq!(answer.messages.last().map(|m| m.role), Some(catena::Role::Assistant));
    println!("answer after {} model calls: {:?}", answer.model_calls, answer.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_in_process_runs_the_loop_through_its_grammar() {
    let path = catena::providers::llama::model_path_from_env()
        .unwrap_or_else(|e| panic!("{e}; run `bash .ci/fetch-smollm2.sh`"));
    let options = catena::providers::llama::LocalLlmOptions { context_length: 4096, ..Default::default() };
    let llm = catena::providers::llama::LocalLlm::from_gguf(&path, options).expect("SmolLM2 loads");
    run_once(Arc::new(llm), ToolChoice::Required).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_behind_llama_cpp_python_runs_the_loop_through_the_openai_client() {
    use catena_test_support::llama::{LlamaServer, ServerOptions};
    let model = catena::providers::llama::model_path_from_env()
        .unwrap_or_else(|e| panic!("{e}; run `bash .ci/fetch-smollm2.sh`"));
    let server = LlamaServer::start(ServerOptions {
        model,
        alias: "smollm2".into(),
        chat_format: None,
        embedding: false,
        interrupt_requests: false,
        n_ctx: 4096,
    });
    // llama-cpp-python calls tools only for a named tool choice (see crates/providers/tests/llama_server.rs).
    run_once(Arc::new(server.client()), ToolChoice::Tool("add".into())).await;
}
