//! The `tracing` layer that turns spans into [`Run`]s and hands them to a background writer.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::price::PriceTable;
use crate::run::{FieldValue, Run, RunEvent, RunId, RunKind, RunStatus, TokenUsage, TraceId};

/// Where the background writer puts finished runs: the [`TraceStore`](crate::TraceStore), or your own.
///
/// `write` runs on the writer's thread, never on the caller's; a failed write is counted in
/// [`RecorderStats::write_failures`] and its runs are dropped (the queue stays bounded).
pub trait RunSink: Send + 'static {
    /// Stores a batch of runs (children before their parents: a span closes after the spans inside it).
    ///
    /// # Errors
    /// Whatever keeps the sink from storing them; the batch is then counted as dropped.
    fn write(&mut self, runs: &[Run]) -> catena_core::Result<()>;
}

/// How the recorder behaves. Every setting is explicit; [`RecorderConfig::default`] lists the defaults.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// The most verbose span level recorded. Default [`Level::INFO`]: catena's chains, model calls, retrievals,
    /// tools and agents, and your own `info_span!`s.
    pub max_level: Level,
    /// How many finished runs may wait for the writer. When it is full, new runs are dropped and counted
    /// ([`RecorderStats::dropped`]): the caller never waits. Default 16,384.
    pub queue_capacity: usize,
    /// How many runs the writer stores per write. Default 512.
    pub batch_size: usize,
    /// The most events (warnings, errors) kept per run. Default 32.
    pub max_events_per_run: usize,
    /// What tokens cost. Default [`PriceTable::builtin`].
    pub prices: PriceTable,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            max_level: Level::INFO,
            queue_capacity: 16_384,
            batch_size: 512,
            max_events_per_run: 32,
            prices: PriceTable::builtin(),
        }
    }
}

/// What the recorder has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Runs finished and queued for the writer.
    pub recorded: u64,
    /// Runs the sink stored.
    pub written: u64,
    /// Runs dropped because the queue was full (the writer could not keep up, or the sink was stuck).
    pub dropped: u64,
    /// Runs dropped because the sink failed to store them.
    pub write_failures: u64,
}

#[derive(Default)]
struct Counters {
    /// Set by [`RecorderHandle::shutdown`]: later runs are dropped.
    closed: std::sync::atomic::AtomicBool,
    recorded: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    write_failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

enum Message {
    Run(Box<Run>),
    Flush(mpsc::Sender<()>),
}

/// The `tracing` layer: add it to a subscriber (`tracing_subscriber::registry().with(recorder)`), and every span
/// at or above [`RecorderConfig::max_level`] becomes a [`Run`] when it closes. Runs go through a bounded queue
/// to a background thread that writes them to the sink; recording never blocks the caller.
///
/// A span's parent run is its nearest recorded ancestor, and a root span starts a new trace. Streams traced by
/// catena's `TelemetryLayer` keep their span open until the stream is drained or dropped, so their run covers
/// the whole stream.
///
/// Build it with [`RunRecorder::new`], which also returns the [`RecorderHandle`] that flushes and stops the
/// writer (dropping the handle flushes too).
pub struct RunRecorder {
    queue: SyncSender<Message>,
    counters: Arc<Counters>,
    config: Arc<RecorderConfig>,
}

impl fmt::Debug for RunRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunRecorder").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Flushes and stops the recorder's writer; dropping it flushes and waits for the writer (at most 10 s).
pub struct RecorderHandle {
    queue: Option<SyncSender<Message>>,
    counters: Arc<Counters>,
    writer: Option<JoinHandle<()>>,
}

impl fmt::Debug for RecorderHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecorderHandle").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl RunRecorder {
    /// A recorder writing to `sink` on a new background thread (named `catena-trace-writer`).
    ///
    /// # Errors
    /// [`catena_core::Error::Config`] for a zero queue capacity or batch size; [`catena_core::Error::Io`] when
    /// the thread cannot be started.
    pub fn new(sink: impl RunSink, config: RecorderConfig) -> catena_core::Result<(RunRecorder, RecorderHandle)> {
        if config.queue_capacity == 0 || config.batch_size == 0 {
            return Err(catena_core::Error::config(
                "RecorderConfig",
                "queue_capacity and batch_size must be at least 1",
                "use RecorderConfig::default() and change what you need",
            ));
        }
        let (queue, received) = mpsc::sync_channel(config.queue_capacity);
        let counters = Arc::new(Counters::default());
        let writer_counters = counters.clone();
        let batch = config.batch_size;
        let writer = std::thread::Builder::new()
            .name("catena-trace-writer".into())
            .spawn(move || write_loop(sink, received, writer_counters, batch))
            .map_err(|e| catena_core::Error::io("catena-trace-writer thread", e))?;
        let recorder = RunRecorder { queue: queue.clone(), counters: counters.clone(), config: Arc::new(config) };
        Ok((recorder, RecorderHandle { queue: Some(queue), counters, writer: Some(writer) }))
    }

    /// Installs this recorder as the process's global `tracing` subscriber (a registry with only this layer), for
    /// programs and notebooks that have no subscriber of their own. With a log or an exporter too, build the
    /// subscriber yourself: `tracing_subscriber::registry().with(recorder).with(...)`.
    ///
    /// # Errors
    /// [`catena_core::Error::Config`] when a global subscriber is already installed.
    pub fn install_global(self) -> catena_core::Result<()> {
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(self)).map_err(|e| {
            catena_core::Error::config(
                "the global tracing subscriber",
                format!("is already set ({e})"),
                "add the RunRecorder as a layer of the subscriber you install instead",
            )
        })
    }

    fn send(&self, run: Run) {
        if self.counters.closed.load(Ordering::Relaxed) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.queue.try_send(Message::Run(Box::new(run))) {
            Ok(()) => {
                self.counters.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl RecorderHandle {
    /// What the recorder has done so far.
    pub fn stats(&self) -> RecorderStats {
        let c = &self.counters;
        RecorderStats {
            recorded: c.recorded.load(Ordering::Relaxed),
            written: c.written.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            write_failures: c.write_failures.load(Ordering::Relaxed),
        }
    }

    /// The last error the sink returned, if any.
    pub fn last_error(&self) -> Option<String> {
        self.counters.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Waits until every run queued before this call is written (or dropped by a failing sink), at most
    /// `timeout`. Returns whether it finished in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(queue) = &self.queue else { return true };
        let (done, wait) = mpsc::channel();
        let deadline = Instant::now() + timeout;
        let mut message = Message::Flush(done);
        // The flush marker waits for room in the queue, but never past the deadline.
        loop {
            match queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    message = m;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        wait.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }

    /// Flushes (at most `timeout`) and stops the writer. Runs recorded afterwards are counted as dropped.
    pub fn shutdown(mut self, timeout: Duration) -> RecorderStats {
        self.stop(timeout);
        self.stats()
    }

    fn stop(&mut self, timeout: Duration) {
        self.flush(timeout);
        self.counters.closed.store(true, Ordering::Relaxed);
        self.queue = None;
        // The layer keeps a sender as long as the subscriber lives, so the writer thread is left idle (detached)
        // rather than joined.
        self.writer.take();
    }
}

impl Drop for RecorderHandle {
    fn drop(&mut self) {
        if self.queue.is_some() {
            self.stop(Duration::from_secs(10));
        }
    }
}

fn write_loop(mut sink: impl RunSink, received: Receiver<Message>, counters: Arc<Counters>, batch: usize) {
    let mut runs: Vec<Run> = Vec::with_capacity(batch);
    let mut flushes: Vec<mpsc::Sender<()>> = Vec::new();
    while let Ok(first) = received.recv() {
        let mut next = Some(first);
        // Take what is waiting, up to a batch, then write it in one go.
        while let Some(message) = next.take() {
            match message {
                Message::Run(run) => runs.push(*run),
                Message::Flush(done) => flushes.push(done),
            }
            if runs.len() < batch {
                next = received.try_recv().ok();
            }
        }
        if !runs.is_empty() {
            match sink.write(&runs) {
                Ok(()) => {
                    counters.written.fetch_add(runs.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.write_failures.fetch_add(runs.len() as u64, Ordering::Relaxed);
                    if let Ok(mut last) = counters.last_error.lock() {
                        *last = Some(e.to_string());
                    }
                }
            }
            runs.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// What the layer keeps in a span's extensions while it is open.
struct OpenRun {
    trace_id: TraceId,
    id: RunId,
    parent_id: Option<RunId>,
    span_name: &'static str,
    start: SystemTime,
    clock: Instant,
    fields: Vec<(&'static str, FieldValue)>,
    events: Vec<RunEvent>,
    dropped_events: u32,
}

struct FieldVisitor<'a>(&'a mut Vec<(&'static str, FieldValue)>);

impl FieldVisitor<'_> {
    fn put(&mut self, field: &Field, value: FieldValue) {
        let name = field.name();
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name, value)),
        }
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, FieldValue::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, FieldValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, i64::try_from(value).map_or(FieldValue::U64(value), FieldValue::I64));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, FieldValue::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, FieldValue::Str(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, FieldValue::Str(format!("{value:?}")));
    }
}

/// The run a span records into: the span itself, or its nearest recorded ancestor.
fn recorded_ancestor<S>(ctx: &Context<'_, S>, id: &Id) -> Option<(TraceId, RunId)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let span = ctx.span(id)?;
    for s in span.scope() {
        if let Some(open) = s.extensions().get::<OpenRun>() {
            return Some((open.trace_id, open.id));
        }
    }
    None
}

impl<S> Layer<S> for RunRecorder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if *meta.level() > self.config.max_level {
            return;
        }
        let parent = if attrs.is_root() {
            None
        } else if let Some(parent) = attrs.parent() {
            recorded_ancestor(&ctx, parent)
        } else {
            ctx.lookup_current().and_then(|current| recorded_ancestor(&ctx, &current.id()))
        };
        let mut fields = Vec::with_capacity(meta.fields().len());
        attrs.record(&mut FieldVisitor(&mut fields));
        let open = OpenRun {
            trace_id: parent.map_or_else(TraceId::random, |(t, _)| t),
            id: RunId::random(),
            parent_id: parent.map(|(_, r)| r),
            span_name: meta.name(),
            start: SystemTime::now(),
            clock: Instant::now(),
            fields,
            events: Vec::new(),
            dropped_events: 0,
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(open);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(open) = span.extensions_mut().get_mut::<OpenRun>() {
                values.record(&mut FieldVisitor(&mut open.fields));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::WARN {
            return;
        }
        let Some(span) = ctx.event_span(event) else { return };
        for s in span.scope() {
            let mut extensions = s.extensions_mut();
            let Some(open) = extensions.get_mut::<OpenRun>() else { continue };
            if open.events.len() >= self.config.max_events_per_run {
                open.dropped_events += 1;
                return;
            }
            let mut fields = Vec::new();
            event.record(&mut FieldVisitor(&mut fields));
            let message = match fields.iter().position(|(k, _)| *k == "message") {
                Some(i) => fields.remove(i).1.to_string(),
                None => String::new(),
            };
            open.events.push(RunEvent {
                at: open.clock.elapsed(),
                level: meta.level().to_string(),
                message,
                fields: fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            });
            return;
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<OpenRun>() else { return };
        self.send(finish(open, &self.config.prices));
    }
}

fn text(fields: &[(&'static str, FieldValue)], name: &str) -> Option<String> {
    fields.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()).filter(|s| !s.is_empty())
}

fn number(fields: &[(&'static str, FieldValue)], name: &str) -> Option<u64> {
    fields.iter().find(|(k, _)| *k == name).and_then(|(_, v)| v.as_u64())
}

/// Fields that become [`Run::input`] / [`Run::output`] instead of attributes.
const CONTENT_FIELDS: [&str; 8] = [
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "catena.retrieval.query",
    "catena.retrieval.results",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "catena.chain.input",
    "catena.chain.output",
];

fn finish(open: OpenRun, prices: &PriceTable) -> Run {
    let OpenRun { trace_id, id, parent_id, span_name, start, clock, fields, mut events, dropped_events } = open;
    let duration = clock.elapsed();
    let operation = text(&fields, "gen_ai.operation.name");
    let kind = RunKind::from_operation(operation.as_deref());
    let name = text(&fields, "otel.name")
        .or_else(|| text(&fields, "catena.chain.step"))
        .or_else(|| text(&fields, "gen_ai.tool.name"))
        .or_else(|| text(&fields, "gen_ai.agent.name").map(|a| format!("invoke_agent {a}")))
        .unwrap_or_else(|| span_name.to_string());
    let provider = text(&fields, "gen_ai.provider.name");
    let model = text(&fields, "gen_ai.response.model").or_else(|| text(&fields, "gen_ai.request.model"));
    let input_tokens = number(&fields, "gen_ai.usage.input_tokens");
    let output_tokens = number(&fields, "gen_ai.usage.output_tokens");
    let usage = (input_tokens.is_some() || output_tokens.is_some()).then(|| TokenUsage {
        input: input_tokens.unwrap_or(0),
        output: output_tokens.unwrap_or(0),
        cached_input: number(&fields, "gen_ai.usage.cache_read.input_tokens"),
    });
    let cost = prices.cost(provider.as_deref(), model.as_deref(), usage.as_ref());
    let ttfc = fields
        .iter()
        .find(|(k, _)| *k == "catena.time_to_first_chunk_ms")
        .and_then(|(_, v)| v.as_f64())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1e3));
    let error_kind = text(&fields, "error.type");
    let failed_event = events.iter().find(|e| e.level == "ERROR" || e.message == "call failed");
    let status = if error_kind.is_some() || events.iter().any(|e| e.level == "ERROR") {
        let message = failed_event.and_then(|e| {
            e.fields.iter().find(|(k, _)| k == "error").map(|(_, v)| v.to_string()).or(Some(e.message.clone()))
        });
        RunStatus::Error { kind: error_kind, message }
    } else {
        RunStatus::Ok
    };
    let json =
        |name: &str| text(&fields, name).map(|s| serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s)));
    let input = json("gen_ai.input.messages")
        .or_else(|| text(&fields, "catena.retrieval.query").map(Into::into))
        .or_else(|| json("gen_ai.tool.call.arguments"))
        .or_else(|| json("catena.chain.input"));
    let output = json("gen_ai.output.messages")
        .or_else(|| json("catena.retrieval.results"))
        .or_else(|| json("gen_ai.tool.call.result"))
        .or_else(|| json("catena.chain.output"));
    let tags = text(&fields, "catena.tags")
        .map(|t| t.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    if dropped_events > 0 {
        events.push(RunEvent {
            at: duration,
            level: "WARN".into(),
            message: format!("{dropped_events} more events were not kept"),
            fields: Vec::new(),
        });
    }
    Run {
        trace_id,
        id,
        parent_id,
        name,
        kind,
        start,
        duration,
        status,
        provider,
        model,
        usage,
        cost,
        time_to_first_chunk: ttfc,
        finish_reason: text(&fields, "gen_ai.response.finish_reasons"),
        input,
        output,
        tags,
        attributes: fields
            .into_iter()
            .filter(|(k, _)| !CONTENT_FIELDS.contains(k))
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        events,
    }
}
