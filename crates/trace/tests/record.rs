//! The recorder against the real llama.cpp server (llama-cpp-python on 127.0.0.1 with the tiny random GGUF): model
//! calls, streams drained and dropped, failures and application spans become runs in a real SQLite file, with
//! their tree, tokens, cost and timings.
//!
//! One global subscriber per test binary (thread-local subscribers race with `tracing`'s callsite cache when tests
//! run in parallel): every test records into the same store and finds its own trace by its root span's name.

use std::sync::OnceLock;
use std::time::Duration;

use catena_core::layer::{LayerExt, TelemetryLayer};
use std::sync::Arc;

use catena_core::{Chain, ChatRequest, Document, Llm, Message, RagChain, RagEvent, Retriever};
use catena_test_support::llama as support;
use catena_trace::{
    Cost, RecorderConfig, RecorderHandle, Run, RunKind, RunRecorder, RunStatus, TraceQuery, TraceStore, TraceSummary,
};
use catena_vectorstores::Bm25Index;
use futures::StreamExt;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

struct Recording {
    handle: RecorderHandle,
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn recording() -> &'static Recording {
    static R: OnceLock<Recording> = OnceLock::new();
    R.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("traces.db");
        let (recorder, handle) = RunRecorder::new(TraceStore::open(&file).unwrap(), RecorderConfig::default()).unwrap();
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder)).unwrap();
        Recording { handle, file, _dir: dir }
    })
}

/// The trace whose root is named `root`, and its runs (flushed first).
fn trace_named(root: &str) -> (TraceSummary, Vec<Run>) {
    let r = recording();
    assert!(r.handle.flush(Duration::from_secs(10)), "the writer flushes");
    let store = TraceStore::open(&r.file).unwrap();
    let mut found = store.traces(&TraceQuery { name: Some(root.into()), ..TraceQuery::default() }).unwrap();
    assert_eq!(found.len(), 1, "one trace named {root}: {found:?}");
    let summary = found.remove(0);
    let runs = store.trace(summary.root.trace_id).unwrap();
    (summary, runs)
}

fn llm() -> impl Llm {
    support::shared_server().client().layer(TelemetryLayer::new().record_content(true))
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest::new(vec![Message::system("Be brief."), Message::user(text)])
        .with_max_tokens(8)
        .with_temperature(0.0)
        .with_seed(1)
}

#[tokio::test]
async fn a_model_call_inside_an_application_span_is_a_tree_with_tokens_and_content() {
    recording();
    let llm = llm();
    let answer = async { llm.chat(ask("Name a colour.")).await.unwrap() }
        .instrument(tracing::info_span!("colour question", catena.tags = "test,colour"))
        .await;
    let (summary, runs) = trace_named("colour question");
    assert_eq!(runs.len(), 2, "{runs:#?}");
    let (root, call) = (&runs[0], &runs[1]);
    assert_eq!((root.kind, root.parent_id), (RunKind::Span, None));
    assert_eq!(root.tags, ["test", "colour"]);
    assert_eq!(call.kind, RunKind::Llm);
    assert_eq!(call.parent_id, Some(root.id));
    assert_eq!(call.trace_id, root.trace_id);
    assert_eq!(call.provider.as_deref(), Some("llama.cpp"));
    assert!(call.name.starts_with("chat "), "{}", call.name);
    let usage = answer.usage.expect("llama.cpp reports usage");
    let recorded = call.usage.expect("usage recorded");
    assert_eq!((recorded.input, recorded.output), (usage.input_tokens, usage.output_tokens));
    assert_eq!(call.cost, Cost::Free, "a local server's tokens are free");
    assert_eq!(call.status, RunStatus::Ok);
    assert!(call.finish_reason.is_some());
    // Content: the messages in, the answer out.
    let input = call.input.as_ref().expect("messages recorded").to_string();
    assert!(input.contains("Name a colour.") && input.contains("Be brief."), "{input}");
    assert!(call.output.as_ref().unwrap().to_string().contains(&serde_json::to_string(&answer.text()).unwrap()[1..]));
    assert!(call.attribute("gen_ai.request.max_tokens").and_then(|v| v.as_u64()) == Some(8));
    // Timings nest: the call inside its parent.
    assert!(call.start >= root.start && call.duration <= root.duration);
    assert_eq!(
        (summary.runs, summary.input_tokens, summary.output_tokens),
        (2, usage.input_tokens, usage.output_tokens)
    );
    assert!(!summary.failed);
    assert_eq!(summary.models, [call.model.clone().unwrap()]);
}

#[tokio::test]
async fn a_stream_is_one_run_until_drained_or_dropped() {
    recording();
    let llm = llm();
    async {
        let mut stream = llm.chat_stream(ask("Count.").with_max_tokens(12)).await.unwrap();
        while let Some(chunk) = stream.next().await {
            chunk.unwrap();
        }
    }
    .instrument(tracing::info_span!("drained stream"))
    .await;
    let (_, runs) = trace_named("drained stream");
    let call = &runs[1];
    assert_eq!(call.attribute("catena.stream.outcome").map(ToString::to_string).as_deref(), Some("completed"));
    let ttfc = call.time_to_first_chunk.expect("time to first chunk");
    assert!(ttfc <= call.duration);
    // The folded answer is the run's output (llama-cpp-python sends no usage in streams).
    assert!(call.output.as_ref().is_some_and(|o| o.to_string().contains("assistant")), "{:?}", call.output);

    async {
        let mut stream = llm.chat_stream(ask("Count.").with_max_tokens(64)).await.unwrap();
        stream.next().await.unwrap().unwrap();
        drop(stream);
    }
    .instrument(tracing::info_span!("dropped stream"))
    .await;
    let (_, runs) = trace_named("dropped stream");
    assert_eq!(runs[1].attribute("catena.stream.outcome").map(ToString::to_string).as_deref(), Some("dropped"));
}

#[tokio::test]
async fn a_failed_call_is_an_error_run_with_its_message() {
    recording();
    // A port nothing listens on: a transport error, typed.
    let closed = catena_providers::openai::OpenAiClient::builder()
        .base_url(format!("http://127.0.0.1:{}/v1", support::free_port()))
        .model("nothing")
        .build()
        .unwrap()
        .layer(TelemetryLayer::new());
    let err =
        async { closed.chat(ask("hello")).await.unwrap_err() }.instrument(tracing::info_span!("failing call")).await;
    let (summary, runs) = trace_named("failing call");
    assert!(summary.failed);
    let RunStatus::Error { kind, message } = &runs[1].status else { panic!("an error run: {:?}", runs[1]) };
    assert_eq!(kind.as_deref(), Some("transport"));
    assert_eq!(message.as_deref(), Some(err.with_causes().as_str()), "the error with its causes");
    assert_eq!(runs[1].cost, Cost::NoUsage);
    assert!(runs[1].input.is_none(), "content is off on this client");
    // Listing by status.
    let store = TraceStore::open(&recording().file).unwrap();
    let failed = store.traces(&TraceQuery { failed: Some(true), ..TraceQuery::default() }).unwrap();
    assert!(failed.iter().any(|t| t.root.name == "failing call"));
    assert!(failed.iter().all(|t| t.failed));
}

fn rag(record_content: bool) -> RagChain {
    let corpus = Bm25Index::new([
        Document::with_id(
            "own",
            "Each value in Rust has an owner; when the owner goes out of scope, the value is dropped.",
            Default::default(),
        ),
        Document::with_id(
            "vec",
            "A vector stores values of one type next to each other in memory.",
            Default::default(),
        ),
    ]);
    let retriever: Arc<dyn Retriever> = Arc::new(corpus.retriever(1));
    let llm: Arc<dyn Llm> = Arc::new(llm());
    RagChain::new(retriever, llm)
        .unwrap()
        .with_request(ChatRequest::default().with_max_tokens(8).with_temperature(0.0).with_seed(1))
        .with_recorded_content(record_content)
}

/// The chain's run holds the question and the whole answer when content is recorded (invoked or streamed), so it
/// can be saved as a dataset example; without content it holds neither.
#[tokio::test]
async fn a_rag_chain_records_its_question_and_answer_when_asked() {
    recording();
    let question = "When is a value dropped?".to_string();
    let answer = async { rag(true).invoke(question.clone()).await.unwrap() }
        .instrument(tracing::info_span!("rag invoked"))
        .await;
    let (_, runs) = trace_named("rag invoked");
    let chain = runs.iter().find(|r| r.name == "rag").expect("the chain's run");
    assert_eq!(chain.kind, RunKind::Chain);
    assert_eq!(chain.input, Some(serde_json::json!(question)));
    let output: catena_core::rag::Answer = serde_json::from_value(chain.output.clone().expect("the answer")).unwrap();
    assert_eq!(output, answer);
    assert_eq!(output.sources[0].id, "own");
    assert!(chain.attribute("catena.chain.input").is_none(), "content is the run's input, not an attribute");
    let store = TraceStore::open(&recording().file).unwrap();
    store.create_dataset("from rag runs", "").unwrap();
    let example = store.add_run_as_example("from rag runs", chain).unwrap();
    let saved = store.example(example).unwrap().unwrap();
    assert_eq!((saved.input, saved.reference), (serde_json::json!(question), chain.output.clone()));

    let streamed = async {
        let mut events = rag(true).stream(question.clone());
        let mut done = None;
        while let Some(event) = events.next().await {
            if let RagEvent::Done(answer) = event.unwrap() {
                done = Some(answer);
            }
        }
        done.expect("a Done event")
    }
    .instrument(tracing::info_span!("rag streamed"))
    .await;
    let (_, runs) = trace_named("rag streamed");
    let chain = runs.iter().find(|r| r.name == "rag").expect("the chain's run");
    assert_eq!(chain.input, Some(serde_json::json!(question)));
    // Compared as answers: a score written as an f32 reads back as a longer f64 in JSON.
    let output: catena_core::rag::Answer = serde_json::from_value(chain.output.clone().expect("the answer")).unwrap();
    assert_eq!(output, streamed);

    async { rag(false).invoke(question.clone()).await.unwrap() }.instrument(tracing::info_span!("rag quiet")).await;
    let (_, runs) = trace_named("rag quiet");
    let chain = runs.iter().find(|r| r.name == "rag").expect("the chain's run");
    assert_eq!((&chain.input, &chain.output), (&None, &None));
}
