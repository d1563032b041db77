//! What recording costs: nanoseconds per span and per model call with the run recorder on versus off, the SQLite
//! trace store's write throughput, and the Python OpenTelemetry SDK's per-span cost measured in the same run.
//!
//! Run: `cargo bench -p catena-trace --bench recorder` (the peer needs `$CATENA_CACHE_DIR/phoenix-venv`, which
//! `.ci/setup-phoenix.sh` builds; it holds opentelemetry-sdk).
//!
//! The span is the one `TelemetryLayer` opens for a chat call (16 fields, 8 of them recorded after creation), so
//! "per span" is what one traced model call costs the caller in `tracing`. The model of the per-call figure is
//! an in-process `Llm` answering a fixed response at once: a mock on purpose, since a real model's milliseconds
//! would bury the microseconds measured here (the recorder against real servers is tested in tests/record.rs).
//! Figures are the best of 5 rounds; the recorder's writer runs on its own thread, so on a 2-core machine a
//! busy neighbour inflates them.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use catena_core::layer::{LayerExt, TelemetryLayer};
use catena_core::{Capabilities, ChatRequest, ChatResponse, ChatStream, Llm, Message, Usage};
use catena_trace::{Cost, RecorderConfig, Run, RunId, RunKind, RunRecorder, RunSink, RunStatus, TraceId, TraceStore};
use tracing::field::Empty;
use tracing_subscriber::layer::SubscriberExt;

const SPANS: usize = 20_000;
const ROUNDS: usize = 5;

/// One chat span as `TelemetryLayer` makes it.
#[inline(never)]
fn chat_span(i: u64) {
    let span = tracing::info_span!(
        "gen_ai",
        otel.name = "chat gpt-4o-mini",
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = "openai",
        gen_ai.request.model = "gpt-4o-mini",
        gen_ai.request.temperature = 0.2,
        gen_ai.request.max_tokens = 256u64,
        gen_ai.response.model = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        catena.time_to_first_chunk_ms = Empty,
        catena.latency_ms = Empty,
        catena.stream.outcome = Empty,
        error.type = Empty,
        catena.tags = "bench",
    );
    if !span.is_disabled() {
        span.record("gen_ai.response.model", "gpt-4o-mini-2024-07-18");
        span.record("gen_ai.response.finish_reasons", "stop");
        span.record("gen_ai.usage.input_tokens", 1200 + i % 7);
        span.record("gen_ai.usage.output_tokens", 80u64);
        span.record("catena.time_to_first_chunk_ms", 120.5);
        span.record("catena.latency_ms", 850.25);
        span.record("catena.stream.outcome", "completed");
    }
}

/// Nanoseconds per span, best of the rounds.
fn per_span() -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for i in 0..SPANS {
                chat_span(i as u64);
            }
            t.elapsed().as_nanos() as f64 / SPANS as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// A sink that counts and drops: the layer's and queue's cost without SQLite's.
struct Discard(Arc<AtomicU64>);

impl RunSink for Discard {
    fn write(&mut self, runs: &[Run]) -> catena_core::Result<()> {
        self.0.fetch_add(runs.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// An in-process model: a fixed answer at once (see the module docs).
struct FixedLlm;

#[async_trait]
impl Llm for FixedLlm {
    fn capabilities(&self) -> Capabilities {
        Capabilities { provider: "openai".into(), streaming: true, ..Capabilities::minimal("fixed") }
    }
    fn default_model(&self) -> Option<String> {
        Some("gpt-4o-mini".into())
    }
    async fn chat(&self, _request: ChatRequest) -> catena_core::Result<ChatResponse> {
        Ok(ChatResponse {
            message: Message::assistant("A Box is a pointer to a value on the heap."),
            model: "gpt-4o-mini".into(),
            usage: Some(Usage { input_tokens: 1200, output_tokens: 80, total_tokens: 1280, cached_input_tokens: None }),
            finish_reason: Some(catena_core::FinishReason::Stop),
            raw: serde_json::Value::Null,
        })
    }
    async fn chat_stream(&self, request: ChatRequest) -> catena_core::Result<ChatStream> {
        let response = self.chat(request).await?;
        Ok(Box::pin(futures::stream::iter([Ok(catena_core::ChatChunk::from(response))])))
    }
}

/// Nanoseconds per traced model call, best of the rounds.
fn per_call(runtime: &tokio::runtime::Runtime, calls: usize) -> f64 {
    let llm = FixedLlm.layer(TelemetryLayer::new());
    let request = ChatRequest::new(vec![Message::user("What is a Box?")]).with_max_tokens(256);
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            runtime.block_on(async {
                for _ in 0..calls {
                    let answer = llm.chat(request.clone()).await.expect("the fixed answer");
                    assert_eq!(answer.usage.map(|u| u.output_tokens), Some(80));
                }
            });
            t.elapsed().as_nanos() as f64 / calls as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn run(i: u64) -> Run {
    Run {
        trace_id: TraceId(u128::from(i / 4 + 1)),
        id: RunId(i + 1),
        parent_id: (!i.is_multiple_of(4)).then(|| RunId(i - i % 4 + 1)),
        name: "chat gpt-4o-mini".into(),
        kind: RunKind::Llm,
        start: SystemTime::now(),
        duration: Duration::from_millis(850),
        status: RunStatus::Ok,
        provider: Some("openai".into()),
        model: Some("gpt-4o-mini".into()),
        usage: Some(catena_trace::TokenUsage { input: 1200, output: 80, cached_input: None }),
        cost: Cost::Usd(0.000228),
        time_to_first_chunk: Some(Duration::from_millis(120)),
        finish_reason: Some("stop".into()),
        input: Some(serde_json::json!([{"role": "user", "content": [{"type": "text", "text": "What is a Box?"}]}])),
        output: None,
        tags: vec!["bench".into()],
        attributes: vec![("gen_ai.operation.name".into(), catena_trace::FieldValue::Str("chat".into()))],
        events: Vec::new(),
    }
}

/// Runs per second the SQLite store writes in batches of 512.
fn store_throughput(dir: &Path) -> f64 {
    let mut store = TraceStore::open(dir.join("throughput.db")).expect("a store");
    let runs: Vec<Run> = (0..100_000).map(run).collect();
    let t = Instant::now();
    for batch in runs.chunks(512) {
        store.insert(batch).expect("written");
    }
    runs.len() as f64 / t.elapsed().as_secs_f64()
}

/// The Python OpenTelemetry SDK's nanoseconds per span (the same fields, a batch processor, an exporter that
/// drops), or why it could not be measured.
fn python_peer() -> Result<f64, String> {
    let cache = std::env::var_os("CATENA_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/catena")))
        .ok_or("no CATENA_CACHE_DIR or HOME")?;
    let python = cache.join("phoenix-venv/bin/python");
    if !python.is_file() {
        return Err(format!("{} is missing: run .ci/setup-phoenix.sh", python.display()));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/recorder_peer.py");
    let out = std::process::Command::new(python).arg(script).arg(SPANS.to_string()).arg(ROUNDS.to_string()).output();
    let out = out.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| format!("{e}"))
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    let calls = 20_000;

    let off_span = per_span();
    let off_call = per_call(&runtime, calls);

    let registry_span = tracing::subscriber::with_default(tracing_subscriber::registry(), per_span);

    let counted = Arc::new(AtomicU64::new(0));
    let big = RecorderConfig { queue_capacity: 1 << 20, ..RecorderConfig::default() };
    let (recorder, handle) = RunRecorder::new(Discard(counted.clone()), big.clone()).expect("a recorder");
    let discard_span = tracing::subscriber::with_default(tracing_subscriber::registry().with(recorder), per_span);
    handle.flush(Duration::from_secs(60));
    let discard_stats = handle.shutdown(Duration::from_secs(60));

    let (recorder, handle) =
        RunRecorder::new(TraceStore::open(dir.path().join("bench.db")).expect("a store"), big).expect("a recorder");
    let subscriber = tracing_subscriber::registry().with(recorder);
    let (sqlite_span, sqlite_call) =
        tracing::subscriber::with_default(subscriber, || (per_span(), per_call(&runtime, calls)));
    let drain = Instant::now();
    handle.flush(Duration::from_secs(300));
    let drained = drain.elapsed();
    let stats = handle.shutdown(Duration::from_secs(60));
    let store = TraceStore::open(dir.path().join("bench.db")).expect("the store");
    let stored = store.totals(&catena_trace::TraceQuery::default()).expect("totals").traces;

    let throughput = store_throughput(dir.path());
    let peer = python_peer();

    println!("catena-trace recorder bench ({SPANS} spans x {ROUNDS} rounds, best round)");
    println!("| case | ns per span | ns per traced model call |");
    println!("|---|---:|---:|");
    println!("| no subscriber | {off_span:.0} | {off_call:.0} |");
    println!("| registry only (no recording layer) | {registry_span:.0} | |");
    println!("| RunRecorder, discarding sink | {discard_span:.0} | |");
    println!("| RunRecorder, SQLite trace store | {sqlite_span:.0} | {sqlite_call:.0} |");
    match &peer {
        Ok(ns) => println!(
            "| Python opentelemetry-sdk, batch processor, dropping exporter (peer) | {ns:.0} | |\n\ncatena records a span {:.1}x faster than the Python OpenTelemetry SDK creates and batches one.",
            ns / sqlite_span
        ),
        Err(e) => println!("| Python peer | not measured: {e} | |"),
    }
    println!(
        "\nrecorded {} spans into SQLite ({} dropped while the writer caught up, {} write failures; {} traces stored); \
         the writer drained the backlog in {:.2} s after the last span",
        stats.recorded, stats.dropped, stats.write_failures, stored, drained.as_secs_f64()
    );
    println!(
        "discarding sink: {} recorded, {} dropped, {} counted by the sink",
        discard_stats.recorded,
        discard_stats.dropped,
        counted.load(Ordering::Relaxed)
    );
    println!("SQLite trace store writes: {throughput:.0} runs/s (batches of 512, WAL, synchronous=NORMAL)");
}
