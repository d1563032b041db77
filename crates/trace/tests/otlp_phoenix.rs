//! OTLP export against a real backend: Arize Phoenix (`phoenix serve`, installed by `.ci/setup-phoenix.sh`)
//! receives a RAG run and an agent run that catena made against llm-katan (a real OpenAI-format server with an
//! echo backend, `.ci/setup-katan.sh`), and the test reads them back through Phoenix's REST API: the span tree,
//! the GenAI attributes (and the span kinds Phoenix derives from them), token counts as integers equal to what
//! the model reported, no content by default (even though the `TelemetryLayer` records it), and the content in
//! the opt-in event when capture is on.
//!
//! One test, in steps, with one global subscriber for the binary: its OTLP layer is swapped per step (a
//! `reload` layer), each step exporting to a Phoenix project of its own.

#![cfg(feature = "otlp")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use catena_agent::{Agent, Limits, ToolBox};
use catena_core::layer::{LayerExt, TelemetryLayer};
use catena_core::{tool_fn, Chain, ChatRequest, Document, Llm, Metadata, RagChain, Retriever};
use catena_test_support::katan::Katan;
use catena_test_support::phoenix::Phoenix;
use catena_trace::otlp::{OtlpConfig, OtlpExport, OtlpLayer, CONTENT_EVENT};
use catena_vectorstores::Bm25Index;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{reload, Registry};

type Switch = reload::Handle<Option<OtlpLayer<Registry>>, Registry>;

const QUESTION: &str = "What does the borrow checker enforce?";
const WAIT: Duration = Duration::from_secs(20);

/// The global subscriber, whose OTLP layer each step replaces; spans and events of level INFO and above (catena's
/// and ours, not the HTTP client's debug events).
fn install() -> Switch {
    let (layer, switch) = reload::Layer::new(None);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer).with(LevelFilter::INFO))
        .expect("no other global subscriber in this test binary");
    switch
}

fn export_to(phoenix: &Phoenix, project: &str, capture: bool, switch: &Switch) -> OtlpExport {
    let export = OtlpConfig::new()
        .endpoint(phoenix.base_url())
        .header("x-project-name", project)
        .service_name("catena-otlp-test")
        .capture_content(capture)
        .build()
        .expect("the export starts");
    switch.reload(Some(export.tracing_layer())).expect("the layer is swapped");
    export
}

fn llm(katan: &Katan, telemetry: TelemetryLayer) -> Arc<dyn Llm> {
    Arc::new(katan.openai_client().layer(telemetry))
}

fn corpus() -> Bm25Index {
    let doc = |id: &str, text: &str| Document::with_id(id, text, Metadata::new());
    Bm25Index::new([
        doc("borrow", "The borrow checker enforces that references never outlive the data they point to."),
        doc("own", "Each value in Rust has a single owner; the value is dropped when its owner goes out of scope."),
        doc("traits", "Traits define shared behaviour that types can implement."),
    ])
}

/// A RAG run inside a root span of ours: retrieval and the model call, both through the `TelemetryLayer` (which
/// records content). Returns the answer's usage and how many sources it had.
async fn rag_run(katan: &Katan) -> (catena_core::Usage, usize) {
    let telemetry = TelemetryLayer::new().record_content(true);
    let retriever: Arc<dyn Retriever> = Arc::new(corpus().retriever(2).layer(telemetry));
    let rag = RagChain::new(retriever, llm(katan, telemetry))
        .expect("a chain")
        .with_request(ChatRequest::default().with_max_tokens(64));
    let answer = rag
        .invoke(QUESTION.to_string())
        .instrument(tracing::info_span!("rag question", catena.tags = "otlp-it"))
        .await
        .expect("the RAG chain answers");
    assert!(answer.text.contains(QUESTION), "llm-katan echoes the prompt: {}", answer.text);
    assert_eq!(answer.sources[0].id, "borrow");
    (answer.usage.expect("llm-katan reports usage"), answer.sources.len())
}

fn by_name<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn one<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let found = by_name(spans, name);
    assert_eq!(found.len(), 1, "one `{name}` span expected in {spans:#?}");
    found[0]
}

fn span_id(span: &Value) -> &Value {
    &span["context"]["span_id"]
}

/// Waits until every name in `names` has arrived (Phoenix stores spans in the background).
fn wait_for(phoenix: &Phoenix, project: &str, names: &[&str]) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let spans = phoenix.wait_for_spans(project, names.len(), WAIT);
        if names.iter().all(|n| spans.iter().any(|s| s["name"] == *n)) {
            return spans;
        }
        assert!(started.elapsed() < WAIT, "{project}: expected spans {names:?}, got {spans:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_integer(span: &Value, key: &str, expected: u64) {
    let value = &span["attributes"][key];
    assert!(value.is_u64(), "{key} is {value} on {}, not an integer", span["name"]);
    assert_eq!(value.as_u64(), Some(expected), "{key} on {}", span["name"]);
}

fn content_events(span: &Value) -> Vec<&Value> {
    span["events"].as_array().map(|e| e.iter().filter(|e| e["name"] == CONTENT_EVENT).collect()).unwrap_or_default()
}

/// The RAG run's tree and attributes, without content.
fn check_rag_without_content(spans: &[Value], usage: &catena_core::Usage, sources: usize) {
    let root = one(spans, "rag question");
    assert!(root["parent_id"].is_null(), "{root:#}");
    let chain = one(spans, "chain");
    assert_eq!(&chain["parent_id"], span_id(root));
    let retrieval = one(spans, "retrieval");
    let chat = one(spans, "chat echo");
    for child in [retrieval, chat] {
        assert_eq!(&child["parent_id"], span_id(chain), "{} is a child of the chain", child["name"]);
        assert_eq!(child["context"]["trace_id"], root["context"]["trace_id"]);
    }

    assert_eq!(chat["span_kind"], "LLM", "Phoenix derives the kind from gen_ai.operation.name");
    let attrs = &chat["attributes"];
    assert_eq!(attrs["gen_ai.operation.name"], "chat");
    assert_eq!(attrs["gen_ai.provider.name"], "openai");
    assert_eq!(attrs["gen_ai.request.model"], "echo");
    assert_eq!(attrs["gen_ai.response.model"], "echo");
    assert_eq!(attrs["gen_ai.response.finish_reasons"], json!(["stop"]));
    assert_eq!(attrs["llm.model_name"], "echo");
    assert_integer(chat, "gen_ai.request.max_tokens", 64);
    assert_integer(chat, "gen_ai.usage.input_tokens", usage.input_tokens);
    assert_integer(chat, "gen_ai.usage.output_tokens", usage.output_tokens);
    assert_integer(chat, "llm.token_count.prompt", usage.input_tokens);
    assert_integer(chat, "llm.token_count.completion", usage.output_tokens);
    assert_integer(chat, "llm.token_count.total", usage.input_tokens + usage.output_tokens);

    assert_eq!(retrieval["span_kind"], "RETRIEVER");
    assert_eq!(retrieval["attributes"]["gen_ai.operation.name"], "retrieval");
    assert_integer(retrieval, "catena.retrieval.documents", sources as u64);

    // No content anywhere: not as attributes, not in events, not derived by Phoenix.
    let all = serde_json::to_string(spans).unwrap();
    assert!(!all.contains(QUESTION), "the question was exported: {all}");
    assert!(!all.contains("borrow checker enforces"), "a document was exported: {all}");
    for span in spans {
        let attrs = span["attributes"].as_object().unwrap();
        assert!(
            !attrs.keys().any(|k| k.starts_with("gen_ai.input")
                || k.starts_with("gen_ai.output")
                || k.starts_with("llm.input_messages")
                || k.starts_with("llm.output_messages")
                || k == "catena.retrieval.query"),
            "content attributes on {}: {attrs:#?}",
            span["name"]
        );
        assert!(content_events(span).is_empty(), "a content event on {}", span["name"]);
        assert!(span["events"].as_array().unwrap().is_empty(), "events below INFO on {}: {span:#}", span["name"]);
    }
}

/// With capture on: the content in the opt-in event, in the conventions' message shape, still not in attributes.
fn check_rag_with_content(spans: &[Value]) {
    let chat = one(spans, "chat echo");
    assert!(chat["attributes"].get("gen_ai.input.messages").is_none(), "{chat:#}");
    let events = content_events(chat);
    assert_eq!(events.len(), 1, "{chat:#}");
    let attrs = &events[0]["attributes"];
    let input: Value = serde_json::from_str(attrs["gen_ai.input.messages"].as_str().expect("input messages")).unwrap();
    assert_eq!(input[0]["role"], "system");
    assert_eq!(input[1]["role"], "user");
    let user_text = input[1]["parts"][0]["content"].as_str().unwrap();
    assert_eq!(input[1]["parts"][0]["type"], "text");
    assert!(user_text.contains(QUESTION) && user_text.contains("borrow checker enforces"), "{user_text}");
    let output: Value = serde_json::from_str(attrs["gen_ai.output.messages"].as_str().expect("output")).unwrap();
    assert_eq!(output[0]["role"], "assistant");
    assert_eq!(output[0]["finish_reason"], "stop");
    assert!(output[0]["parts"][0]["content"].as_str().unwrap().contains(QUESTION), "{output}");

    let retrieval = one(spans, "retrieval");
    let events = content_events(retrieval);
    assert_eq!(events.len(), 1, "{retrieval:#}");
    assert_eq!(events[0]["attributes"]["gen_ai.retrieval.query.text"], QUESTION);
    assert!(retrieval["attributes"].get("catena.retrieval.query").is_none());
}

#[derive(Deserialize, JsonSchema)]
struct NoArgs {}

/// An agent run: llm-katan answers the first call (tools offered) with a call of the only tool, and the last
/// call (made without tools) with text.
async fn agent_run(katan: &Katan) -> catena_agent::AgentAnswer {
    let tools = ToolBox::new()
        .with(tool_fn("clock", "Tells the time.", |_: NoArgs| async { Ok::<_, String>("12:00") }))
        .expect("a tool box");
    let agent = Agent::new(llm(katan, TelemetryLayer::new()), tools, Limits::new(2, 1, 1))
        .expect("an agent")
        .with_name("timekeeper")
        .with_system("Use the clock.");
    agent.ask("What time is it?").await.expect("the agent answers")
}

fn check_agent(spans: &[Value], answer: &catena_agent::AgentAnswer) {
    let root = one(spans, "invoke_agent timekeeper");
    assert!(root["parent_id"].is_null(), "{root:#}");
    assert_eq!(root["span_kind"], "AGENT");
    assert_eq!(root["attributes"]["gen_ai.operation.name"], "invoke_agent");
    assert_eq!(root["attributes"]["gen_ai.agent.name"], "timekeeper");

    let tool = one(spans, "execute_tool clock");
    assert_eq!(&tool["parent_id"], span_id(root));
    assert_eq!(tool["span_kind"], "TOOL");
    assert_eq!(tool["attributes"]["gen_ai.tool.name"], "clock");
    let call_id = answer.messages.iter().flat_map(|m| &m.tool_calls).next().expect("a tool call").id.clone();
    assert_eq!(tool["attributes"]["gen_ai.tool.call.id"], call_id.as_str());

    let chats = by_name(spans, "chat echo");
    assert_eq!(chats.len(), answer.model_calls, "{spans:#?}");
    for chat in &chats {
        assert_eq!(&chat["parent_id"], span_id(root));
        assert_eq!(chat["span_kind"], "LLM");
    }
    assert_eq!(chats[0]["attributes"]["gen_ai.response.finish_reasons"], json!(["tool_calls"]));
    let sum = |key: &str| chats.iter().map(|c| c["attributes"][key].as_u64().expect("an integer")).sum::<u64>();
    assert_eq!(sum("gen_ai.usage.input_tokens"), answer.usage.input_tokens);
    assert_eq!(sum("gen_ai.usage.output_tokens"), answer.usage.output_tokens);
}

#[test]
fn phoenix_reads_back_rag_and_agent_runs() {
    let started = Instant::now();
    let switch = install();
    let phoenix = Phoenix::start();
    let katan = Katan::start("openai", &[]);
    eprintln!("phoenix up in {:?}", phoenix.startup_time());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // 1. RAG, content not captured (the default), although the TelemetryLayer records it.
    let export = export_to(&phoenix, "rag", false, &switch);
    let (usage, sources) = runtime.block_on(rag_run(&katan));
    export.flush().expect("Phoenix takes the spans");
    let spans = wait_for(&phoenix, "rag", &["rag question", "chain", "retrieval", "chat echo"]);
    check_rag_without_content(&spans, &usage, sources);

    // 2. The same run with content capture on.
    let export = export_to(&phoenix, "rag-content", true, &switch);
    runtime.block_on(rag_run(&katan));
    export.flush().expect("Phoenix takes the spans");
    let spans = wait_for(&phoenix, "rag-content", &["rag question", "chain", "retrieval", "chat echo"]);
    check_rag_with_content(&spans);

    // 3. An agent run with a tool call.
    let export = export_to(&phoenix, "agent", false, &switch);
    let answer = runtime.block_on(agent_run(&katan));
    assert_eq!((answer.model_calls, answer.tool_calls), (2, 1), "{answer:?}");
    export.shutdown().expect("Phoenix takes the spans");
    let spans = wait_for(&phoenix, "agent", &["invoke_agent timekeeper", "execute_tool clock", "chat echo"]);
    check_agent(&spans, &answer);
    switch.reload(None).unwrap();
    eprintln!("test took {:?}", started.elapsed());
}
