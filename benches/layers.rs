//! Per-layer cost: nanoseconds per `Llm::chat` call through each middleware layer of `catena::layer` alone, and
//! through all of them stacked in the documented order (ARCHITECTURE.md, "Layer order"), versus the bare model.
//!
//! Run: `cargo bench --bench layers`
//!
//! The inner model is [`FixedLlm`], an in-process `Llm` that returns a fixed `ChatResponse` (or streams it as three
//! chunks) immediately. That is a mock, and deliberately so: the bench measures the layers' own cost, which a
//! real model's milliseconds would bury; the layers against real servers are tested in
//! crates/providers/tests/layers.rs. Every call hands the model a clone of the same request (so the clone is in
//! the bare figure too), and every answer is checked: once in full against the fixed response (a replayed or
//! folded answer included), then by a checksum in the timed loop; the model's call counter proves that a cache hit
//! skipped it, a miss and every other layer called it once per call, and a fallback never ran.
//!
//! Everything is measured twice in one process: first with no `tracing` subscriber, then with a recording one
//! installed as the global default: `tracing_subscriber::registry()` with [`Recorder`], which copies every span's
//! fields (given at creation and `record`ed later; strings and `Debug`/`Display` values as owned `String`s) into a
//! `Vec<(field name, value)>` in the span's registry extensions and, when the span closes, moves it into a batch
//! that is "exported" every 512 spans (tallied and freed), as an exporter's batch processor would; events are
//! recorded the same way. The run asserts that each `TelemetryLayer` call produced one `gen_ai` span with all its
//! fields. A counting allocator gives heap allocations per call. Figures are the best of 5 rounds (the
//! machine's other load only ever adds time).
//!
//! Layers measured (each alone around the model): `TelemetryLayer`, `CacheLayer` over a `MemoryCache` (hit: the
//! same request every call; miss: a new seed every call, so a new key, in an LRU of 1024), `RetryLayer` (3
//! attempts, no failures), `TimeoutLayer` (30 s total), `ConcurrencyLimitLayer` (8), `RateLimitLayer` (u32::MAX
//! requests and tokens per minute: never waits), `FallbackLayer` (primary succeeds); the full stack, and
//! `chat_stream` drained through `TelemetryLayer` and `TimeoutLayer` (first chunk, idle and total deadlines).

mod support;

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{allocations, Recorder, Totals};

use catena::layer::{
    CacheLayer, ConcurrencyLimitLayer, FallbackLayer, FallbackOn, LayerExt, MemoryCache, RateLimitLayer, RetryLayer,
    RetryPolicy, TelemetryLayer, TimeoutLayer, Timeouts, TokenEstimate,
};
use catena::{
    async_trait, collect_stream, Capabilities, ChatChunk, ChatRequest, ChatResponse, ChatStream, FinishReason, Llm,
    Message, Usage,
};
use futures::StreamExt;
use tracing_subscriber::layer::SubscriberExt;

const ROUNDS: u64 = 5;
const CALLS: u64 = 200_000;
const WARMUP: u64 = 5_000;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("tokio runtime");
    let recorder = Recorder::default();
    let mut results: Vec<(String, [Option<Measured>; 2])> = Vec::new();
    for (column, subscriber) in ["none", "recording"].into_iter().enumerate() {
        if subscriber == "recording" {
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder.clone()))
                .expect("no other global subscriber");
            recorder.set_on(true);
        }
        for case in cases() {
            let before = recorder.totals();
            let measured = rt.block_on(case.measure());
            let after = recorder.totals();
            if subscriber == "recording" {
                case.check_spans(before, after);
            }
            match results.iter_mut().find(|(name, _)| *name == case.name) {
                Some((_, row)) => row[column] = Some(measured),
                None => {
                    let mut row = [None, None];
                    row[column] = Some(measured);
                    results.push((case.name.clone(), row));
                }
            }
        }
    }

    let bare = [0, 1].map(|c| results[0].1[c].expect("bare measured").ns);
    println!();
    println!("ns per call through each layer (best of {ROUNDS} rounds of {} calls)", CALLS / ROUNDS);
    println!(
        "| {:<58} | {:>9} | {:>8} | {:>7} | {:>9} | {:>8} | {:>7} |",
        "", "no sub.", "+ layer", "allocs", "recording", "+ layer", "allocs"
    );
    println!("|{:-<60}|{:->11}|{:->10}|{:->9}|{:->11}|{:->10}|{:->9}|", "", "", "", "", "", "", "");
    for (name, row) in &results {
        let cells: Vec<String> = (0..2)
            .map(|c| match row[c] {
                Some(m) => format!(
                    "{:>9.0} | {:>8} | {:>7.1}",
                    m.ns,
                    if name.contains("bare") {
                        "-".to_string()
                    } else {
                        format!("{:+.0}", m.ns - baseline(name, &results, c, bare[c]))
                    },
                    m.allocs
                ),
                None => format!("{:>9} | {:>8} | {:>7}", "n/a", "", ""),
            })
            .collect();
        println!("| {name:<58} | {} | {} |", cells[0], cells[1]);
    }
    println!();
    println!(
        "'+ layer' is the cost over the bare model (streams: over the bare stream); 'recording' = registry + \
         recording layer. Recorded: {} spans, {} events, {} fields.",
        recorder.totals().spans,
        recorder.totals().events,
        recorder.totals().fields
    );
}

/// The bare figure a row is compared with: the bare stream for stream rows, else the bare `chat`.
fn baseline(name: &str, results: &[(String, [Option<Measured>; 2])], column: usize, bare_chat: f64) -> f64 {
    if name.starts_with("chat_stream") {
        results
            .iter()
            .find(|(n, _)| n.starts_with("chat_stream") && n.contains("bare"))
            .and_then(|(_, row)| row[column])
            .map_or(bare_chat, |m| m.ns)
    } else {
        bare_chat
    }
}

#[derive(Debug, Clone, Copy)]
struct Measured {
    ns: f64,
    allocs: f64,
}

/// What a case's model calls should have been, per call.
#[derive(Clone, Copy, PartialEq)]
enum InnerCalls {
    /// One model call per call.
    Each,
    /// Only the first call reaches the model (cache hits after it).
    Once,
}

struct Case {
    name: String,
    llm: Box<dyn Llm>,
    /// The primary model's call counter.
    calls: Arc<AtomicU64>,
    /// The fallback model's call counter, if there is one: it must stay at zero.
    fallback_calls: Option<Arc<AtomicU64>>,
    inner: InnerCalls,
    /// A new seed per call (a cache miss each time).
    vary: bool,
    stream: bool,
    /// `gen_ai` spans expected per call under the recording subscriber, and fields per span.
    spans: Option<(u64, u64)>,
}

static SEED: AtomicU64 = AtomicU64::new(0);

fn request() -> ChatRequest {
    ChatRequest::new(vec![Message::system("You are terse."), Message::user("Say hello.")]).with_max_tokens(16)
}

impl Case {
    fn new(name: &str, build: impl FnOnce(FixedLlm) -> Box<dyn Llm>) -> Case {
        let model = FixedLlm::new();
        let calls = model.calls.clone();
        Case {
            name: name.to_string(),
            llm: build(model),
            calls,
            fallback_calls: None,
            inner: InnerCalls::Each,
            vary: false,
            stream: false,
            spans: None,
        }
    }
    fn vary(mut self) -> Self {
        self.vary = true;
        self
    }
    fn cached(mut self) -> Self {
        self.inner = InnerCalls::Once;
        self
    }
    fn stream(mut self) -> Self {
        self.stream = true;
        self
    }
    /// One `gen_ai` span per call with `fields` fields.
    fn traced(mut self, fields: u64) -> Self {
        self.spans = Some((1, fields));
        self
    }

    fn next_request(&self, base: &ChatRequest) -> ChatRequest {
        let mut r = base.clone();
        if self.vary {
            r.seed = Some(SEED.fetch_add(1, Ordering::Relaxed));
        }
        r
    }

    async fn call(&self, request: ChatRequest) -> ChatResponse {
        let llm: &dyn Llm = self.llm.as_ref();
        if self.stream {
            let stream = llm.chat_stream(request).await.expect("chat_stream");
            collect_stream(stream).await.expect("drain")
        } else {
            llm.chat(request).await.expect("chat")
        }
    }

    async fn run(&self, base: &ChatRequest, n: u64) -> u64 {
        let mut checksum = 0u64;
        for _ in 0..n {
            let response = self.call(self.next_request(base)).await;
            checksum += response.usage.map_or(0, |u| u.output_tokens) + response.model.len() as u64;
        }
        checksum
    }

    async fn measure(&self) -> Measured {
        let base = request();
        let calls_before = self.calls.load(Ordering::Relaxed);
        let first = self.call(self.next_request(&base)).await;
        assert_eq!(first, FixedLlm::response(), "{}: wrong answer", self.name);
        let again = self.call(self.next_request(&base)).await;
        assert_eq!(again, FixedLlm::response(), "{}: wrong answer on the second call", self.name);
        let per_call = FixedLlm::response().usage.map_or(0, |u| u.output_tokens) + FixedLlm::MODEL.len() as u64;
        assert_eq!(self.run(&base, WARMUP).await, per_call * WARMUP, "{}: wrong answers", self.name);
        let per_round = CALLS / ROUNDS;
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            let allocs = allocations();
            let start = Instant::now();
            let checksum = self.run(&base, per_round).await;
            let ns = start.elapsed().as_nanos() as f64 / per_round as f64;
            let allocs = (allocations() - allocs) as f64 / per_round as f64;
            assert_eq!(checksum, per_call * per_round, "{}: wrong answers", self.name);
            rounds.push(Measured { ns, allocs });
        }
        let expected = match self.inner {
            InnerCalls::Each => Case::total_calls(),
            InnerCalls::Once => 1,
        };
        assert_eq!(self.calls.load(Ordering::Relaxed) - calls_before, expected, "{}: model calls", self.name);
        if let Some(f) = &self.fallback_calls {
            assert_eq!(f.load(Ordering::Relaxed), 0, "{}: the fallback ran", self.name);
        }
        rounds.sort_by(|a, b| a.ns.total_cmp(&b.ns));
        rounds[0]
    }

    fn total_calls() -> u64 {
        2 + WARMUP + CALLS / ROUNDS * ROUNDS
    }

    /// Under the recording subscriber: the `gen_ai` spans and their fields that this case's calls produced.
    fn check_spans(&self, before: Totals, after: Totals) {
        let calls = Case::total_calls();
        match self.spans {
            Some((per_call, fields)) => {
                assert_eq!(after.gen_ai_spans - before.gen_ai_spans, per_call * calls, "{}: gen_ai spans", self.name);
                assert_eq!(
                    after.gen_ai_fields - before.gen_ai_fields,
                    fields * per_call * calls,
                    "{}: gen_ai span fields",
                    self.name
                );
            }
            None => assert_eq!(after.gen_ai_spans, before.gen_ai_spans, "{}: no gen_ai spans", self.name),
        }
    }
}

/// `gen_ai` span fields of one `TelemetryLayer` chat call on [`request`] answered by [`FixedLlm`]: five given at
/// creation (`otel.name`, `otel.kind`, `gen_ai.operation.name`, `.provider.name`, `.request.model`) and
/// `gen_ai.request.max_tokens`, `.response.model`, `.response.finish_reasons`, `.usage.input_tokens`,
/// `.usage.output_tokens`, `catena.latency_ms` recorded.
const CHAT_FIELDS: u64 = 11;

fn cache() -> CacheLayer {
    CacheLayer::new(MemoryCache::new(NonZeroUsize::new(1024).expect("non-zero")))
}

fn retry() -> RetryLayer {
    RetryLayer::new(RetryPolicy::new(3).expect("valid policy"))
}

fn chat_timeout() -> TimeoutLayer {
    TimeoutLayer::new(Timeouts::none().with_total(Duration::from_secs(30)))
}

fn stream_timeout() -> TimeoutLayer {
    TimeoutLayer::new(
        Timeouts::none()
            .with_first_chunk(Duration::from_secs(20))
            .with_idle(Duration::from_secs(10))
            .with_total(Duration::from_secs(60)),
    )
}

fn concurrency() -> ConcurrencyLimitLayer {
    ConcurrencyLimitLayer::new(NonZeroU32::new(8).expect("non-zero"))
}

fn rate_limit() -> RateLimitLayer {
    RateLimitLayer::new()
        .requests_per_minute(NonZeroU32::MAX)
        .tokens_per_minute(NonZeroU32::MAX, TokenEstimate::BytesPerToken(NonZeroU32::new(4).expect("non-zero")))
}

/// The documented order, outermost first: telemetry, cache, fallback, retry, rate limit, concurrency, timeout.
fn full_stack(model: FixedLlm, fallback: FixedLlm, timeout: TimeoutLayer) -> Box<dyn Llm> {
    Box::new(
        model
            .layer(timeout)
            .layer(concurrency())
            .layer(rate_limit())
            .layer(retry())
            .layer(FallbackLayer::new(fallback, FallbackOn::Retryable))
            .layer(cache())
            .layer(TelemetryLayer::new()),
    )
}

fn with_fallback(mut case: Case, fallback: &FixedLlm) -> Case {
    case.fallback_calls = Some(fallback.calls.clone());
    case
}

fn cases() -> Vec<Case> {
    let fallback = FixedLlm::new();
    let stack_fallback = FixedLlm::new();
    let stack_hit_fallback = FixedLlm::new();
    let stream_fallback = FixedLlm::new();
    vec![
        Case::new("bare model (FixedLlm)", |m| Box::new(m)),
        Case::new("TelemetryLayer", |m| Box::new(m.layer(TelemetryLayer::new()))).traced(CHAT_FIELDS),
        // A hit also records `catena.cache.hit` on the current span (none here) and emits a debug event.
        Case::new("CacheLayer(MemoryCache), hit", |m| Box::new(m.layer(cache()))).cached(),
        Case::new("CacheLayer(MemoryCache), miss (new seed each call)", |m| Box::new(m.layer(cache()))).vary(),
        Case::new("RetryLayer (3 attempts, no failure)", |m| Box::new(m.layer(retry()))),
        Case::new("TimeoutLayer (total 30 s)", |m| Box::new(m.layer(chat_timeout()))),
        Case::new("ConcurrencyLimitLayer (8)", |m| Box::new(m.layer(concurrency()))),
        Case::new("RateLimitLayer (requests + tokens, never waits)", |m| Box::new(m.layer(rate_limit()))),
        with_fallback(
            Case::new("FallbackLayer (primary succeeds)", |m| {
                Box::new(m.layer(FallbackLayer::new(fallback.clone(), FallbackOn::Retryable)))
            }),
            &fallback,
        ),
        // Seed and cache.hit are recorded on the telemetry span too: two more fields.
        with_fallback(
            Case::new("all 7 stacked, cache miss (every layer runs)", |m| {
                full_stack(m, stack_fallback.clone(), chat_timeout())
            }),
            &stack_fallback,
        )
        .vary()
        .traced(CHAT_FIELDS + 2),
        with_fallback(
            Case::new("all 7 stacked, cache hit", |m| full_stack(m, stack_hit_fallback.clone(), chat_timeout())),
            &stack_hit_fallback,
        )
        .cached()
        .traced(CHAT_FIELDS + 1),
        Case::new("chat_stream + drain: bare model (3 chunks)", |m| Box::new(m)).stream(),
        Case::new("chat_stream + drain: TelemetryLayer", |m| Box::new(m.layer(TelemetryLayer::new())))
            .stream()
            .traced(CHAT_FIELDS + 2),
        Case::new("chat_stream + drain: TimeoutLayer (first/idle/total)", |m| Box::new(m.layer(stream_timeout())))
            .stream(),
        Case::new("chat_stream + drain: Telemetry + Timeout", |m| {
            Box::new(m.layer(stream_timeout()).layer(TelemetryLayer::new()))
        })
        .stream()
        .traced(CHAT_FIELDS + 2),
        with_fallback(
            Case::new("chat_stream + drain: all 7 stacked, cache miss", |m| {
                full_stack(m, stream_fallback.clone(), stream_timeout())
            }),
            &stream_fallback,
        )
        .stream()
        .vary()
        .traced(CHAT_FIELDS + 4),
    ]
}

/// An in-process model answering every request with the same [`ChatResponse`] at once (streamed: three chunks
/// that fold into it). A mock on purpose: see the module docs.
#[derive(Clone)]
struct FixedLlm {
    calls: Arc<AtomicU64>,
    capabilities: Capabilities,
    response: ChatResponse,
    chunks: Vec<ChatChunk>,
}

impl FixedLlm {
    const MODEL: &'static str = "fixed-model";

    fn new() -> Self {
        let usage = FixedLlm::response().usage;
        FixedLlm {
            calls: Arc::default(),
            capabilities: Capabilities { streaming: true, streaming_usage: true, ..Capabilities::minimal("fixed") },
            response: FixedLlm::response(),
            chunks: vec![
                ChatChunk { text: Some("Hello from ".into()), ..Default::default() },
                ChatChunk { text: Some("a fixed model.".into()), ..Default::default() },
                ChatChunk {
                    usage,
                    finish_reason: Some(FinishReason::Stop),
                    model: Some(FixedLlm::MODEL.into()),
                    ..Default::default()
                },
            ],
        }
    }

    /// The answer; `raw` is an empty array, which is what folding chunks without raw payloads gives.
    fn response() -> ChatResponse {
        ChatResponse {
            message: Message::assistant("Hello from a fixed model."),
            finish_reason: Some(FinishReason::Stop),
            usage: Some(Usage { input_tokens: 9, output_tokens: 6, total_tokens: 15, cached_input_tokens: None }),
            model: FixedLlm::MODEL.into(),
            raw: serde_json::Value::Array(Vec::new()),
        }
    }
}

#[async_trait]
impl Llm for FixedLlm {
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }
    fn default_model(&self) -> Option<String> {
        Some(FixedLlm::MODEL.into())
    }
    async fn chat(&self, _request: ChatRequest) -> catena::Result<ChatResponse> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(self.response.clone())
    }
    async fn chat_stream(&self, _request: ChatRequest) -> catena::Result<ChatStream> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(futures::stream::iter(self.chunks.clone().into_iter().map(Ok)).boxed())
    }
}
