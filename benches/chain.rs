//! Chain overhead, bare and with telemetry recorded: a 3-step chain of trivial async closures (`x + 1`, `* 2`,
//! `- 3`), `invoke`d and awaited on a current-thread tokio runtime, versus LangChain LCEL
//! (`RunnableLambda | RunnableLambda | RunnableLambda`, benches/lcel_peer.py) and a LangGraph 3-node
//! `StateGraph` (benches/langgraph_peer.py), all measured in the same run.
//!
//! Run: `cargo bench --bench chain` (needs `pip install langchain-core langgraph`).
//!
//! catena is measured three ways, in this order, in one process:
//! - **bare**: no `tracing` subscriber (the `chain` spans every step opens are disabled callsites);
//! - **registry**: `tracing_subscriber::registry()` installed as the global default with the recording layer
//!   switched off: the cost of span bookkeeping alone (slab slot, enter/exit stack, close);
//! - **recording**: the same registry with [`Recorder`] on. For every span it copies all fields (given at creation
//!   and `record`ed later; strings and `Debug`/`Display` values are copied into owned `String`s) into a
//!   `Vec<(field name, value)>` kept in the span's registry extensions; when the span closes, the record moves
//!   into a shared batch (`Mutex<Vec<_>>`), which is "exported" every 512 spans by tallying spans, fields and
//!   string bytes and freeing the records, as an exporter's batch processor would. Events are recorded the same
//!   way. The run asserts that every step's span arrived with its three fields.
//!
//! The peers run without callbacks, then with a callback handler that records every run's start (name, inputs)
//! and end (outputs) into a list (`--record`), LangChain's counterpart of the recording subscriber. Each figure is
//! the median (and best) of 5 rounds; a counting allocator gives heap allocations per invoke; ratios are peer
//! time over catena's median in this run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt;
use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use catena::{chain_fn, Chain};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const ROUNDS: usize = 5;

/// One catena measurement: the median and the best of the rounds, and heap allocations per invoke.
#[derive(Debug, Clone, Copy)]
struct Measured {
    median: f64,
    best: f64,
    allocs: f64,
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime");
    let chain = chain_fn(|x: i64| async move { Ok(x + 1) })
        .then(chain_fn(|x: i64| async move { Ok(x * 2) }))
        .then(chain_fn(|x: i64| async move { Ok(x - 3) }));
    let iterations: i64 = 2_000_000;
    let invoke_chain = |n: i64| {
        rt.block_on(async {
            let allocs = allocations();
            let start = Instant::now();
            let mut total = 0i64;
            for i in 0..n {
                total = total.wrapping_add(chain.invoke(black_box(i)).await.expect("invoke"));
            }
            let ns = start.elapsed().as_nanos() as f64 / n as f64;
            (ns, (allocations() - allocs) as f64 / n as f64, total)
        })
    };
    let measure = |what: &str| {
        invoke_chain(10_000);
        let per_round = iterations / ROUNDS as i64;
        let expected: i64 = (0..per_round).map(|i| (i + 1) * 2 - 3).sum();
        let mut rounds: Vec<(f64, f64)> = (0..ROUNDS)
            .map(|_| {
                let (ns, allocs, total) = invoke_chain(per_round);
                assert_eq!(total, expected, "{what}: the chain computed a wrong result");
                (ns, allocs)
            })
            .collect();
        rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (median, allocs) = rounds[ROUNDS / 2];
        Measured { median, best: rounds[0].0, allocs }
    };

    let bare = measure("bare");

    let recorder = Recorder::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder.clone()))
        .expect("no other global subscriber");
    let registry = measure("registry");
    assert_eq!(recorder.totals().spans, 0, "the recording layer was off");

    recorder.set_on(true);
    let recording = measure("recording");
    recorder.set_on(false);
    let totals = recorder.totals();
    let invokes = (10_000 + iterations / ROUNDS as i64 * ROUNDS as i64) as u64;
    // Three `chain` spans per invoke; each has `gen_ai.operation.name` and `catena.chain.step` from creation and
    // `catena.latency_ms` recorded when the step finished.
    assert_eq!(totals.spans, 3 * invokes, "one recorded span per chain step");
    assert_eq!(totals.latency_fields, totals.spans, "every span's latency was recorded");
    assert_eq!(totals.fields, 3 * totals.spans, "every span's three fields were recorded");
    assert_eq!(totals.events, 0, "no step failed");

    let peers = [
        ("lcel_peer.py", &[][..], "LangChain LCEL, 3 RunnableLambda", 3000),
        ("lcel_peer.py", &["--record"][..], "LangChain LCEL + recording callback", 3000),
        ("langgraph_peer.py", &[][..], "LangGraph 3-node StateGraph", 1500),
        ("langgraph_peer.py", &["--record"][..], "LangGraph + recording callback", 1500),
    ];
    let peers: Vec<(&str, Option<f64>)> =
        peers.iter().map(|(script, flags, what, n)| (*what, run_peer(script, flags, *n))).collect();

    println!();
    println!(
        "3-step chain invoke: catena median and best of {ROUNDS} rounds of {} invokes",
        iterations / ROUNDS as i64
    );
    println!(
        "| {:<44} | {:>10} | {:>10} | {:>6} | {:>13} | {:>13} |",
        "", "median", "best", "allocs", "/ catena bare", "/ catena rec."
    );
    println!("|{:-<46}|{:->12}|{:->12}|{:->8}|{:->15}|{:->15}|", "", "", "", "", "", "");
    let ratio = |r: f64| if r < 100.0 { format!("{r:.1}x") } else { format!("{r:.0}x") };
    let row = |what: &str, ns: f64, best: Option<f64>, allocs: Option<f64>| {
        println!(
            "| {what:<44} | {:>10} | {:>10} | {:>6} | {:>13} | {:>13} |",
            fmt_ns(ns),
            best.map_or(String::new(), fmt_ns),
            allocs.map_or(String::new(), |a| format!("{a:.1}")),
            ratio(ns / bare.median),
            ratio(ns / recording.median)
        );
    };
    for (what, m) in [
        ("catena, no subscriber (bare)", bare),
        ("catena, registry only (recording layer off)", registry),
        ("catena, registry + recording layer", recording),
    ] {
        row(what, m.median, Some(m.best), Some(m.allocs));
    }
    for (what, ns) in &peers {
        match ns {
            Some(ns) => row(what, *ns, None, None),
            None => println!("| {what:<44} | {:>10} | {:>10} | {:>6} | {:>13} | {:>13} |", "n/a", "", "", "", ""),
        }
    }
    println!();
    println!(
        "recorded: {} spans, {} fields, {} string bytes; telemetry costs {} per invoke ({} per step): \
         registry {}, recording layer {}",
        totals.spans,
        totals.fields,
        totals.string_bytes,
        fmt_ns(recording.median - bare.median),
        fmt_ns((recording.median - bare.median) / 3.0),
        fmt_ns(registry.median - bare.median),
        fmt_ns(recording.median - registry.median),
    );
    let verdict = if recording.median <= 2_000.0 { "met" } else { "MISSED" };
    println!("target: <= 2 us per 3-step invoke with recording on: {verdict} ({})", fmt_ns(recording.median));
    if let Some(lcel) = peers[0].1 {
        println!("ratio: catena (bare) is {:.0}x less overhead than LCEL (target >= 1000x)", lcel / bare.median);
    }
}

/// Runs a Python peer; `None` (after saying why) when it cannot run.
fn run_peer(script: &str, flags: &[&str], iterations: u32) -> Option<f64> {
    let path = format!("{}/benches/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = match Command::new("python3").arg(&path).arg(iterations.to_string()).args(flags).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("{script}: cannot run python3: {e}");
            return None;
        }
    };
    if !out.status.success() {
        eprintln!(
            "{script} {flags:?} failed (pip install langchain-core langgraph): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("peer JSON");
    let n = i64::from(iterations);
    let expected: i64 = (0..n).map(|i| (i + 1) * 2 - 3).sum();
    assert_eq!(v["result"].as_i64(), Some(expected), "{script} computed a wrong result");
    Some(v["per_invoke_ns"].as_f64().expect("per_invoke_ns"))
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Counts this thread's heap allocations (the bench is single-threaded).
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_allocation() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting touches no allocator state.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// A recorded field value, owned (strings are copied, as an exporter must before the span's data goes away).
enum FieldValue {
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Str(String),
}

/// A span's (or event's) fields, as recorded.
struct SpanRecord {
    fields: Vec<(&'static str, FieldValue)>,
}

impl Visit for SpanRecord {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), FieldValue::I64(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), FieldValue::U64(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), FieldValue::F64(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), FieldValue::Bool(value)));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields.push((field.name(), FieldValue::Str(value.to_owned())));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.fields.push((field.name(), FieldValue::Str(format!("{value:?}"))));
    }
}

/// What the recorder has exported.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    spans: u64,
    events: u64,
    fields: u64,
    latency_fields: u64,
    string_bytes: u64,
    /// Folds every recorded value, so that exporting reads them all.
    checksum: u64,
}

#[derive(Default)]
struct Batch {
    spans: Vec<SpanRecord>,
    events: Vec<SpanRecord>,
    totals: Totals,
}

impl Batch {
    const SIZE: usize = 512;

    /// "Exports" the batch: tallies what it holds and frees it.
    fn flush(&mut self) {
        let t = &mut self.totals;
        t.spans += self.spans.len() as u64;
        t.events += self.events.len() as u64;
        for record in self.spans.drain(..).chain(self.events.drain(..)) {
            t.fields += record.fields.len() as u64;
            for (name, value) in &record.fields {
                if *name == "catena.latency_ms" {
                    t.latency_fields += 1;
                }
                let bits = match value {
                    FieldValue::Str(s) => {
                        t.string_bytes += s.len() as u64;
                        s.len() as u64
                    }
                    FieldValue::I64(v) => *v as u64,
                    FieldValue::U64(v) => *v,
                    FieldValue::F64(v) => v.to_bits(),
                    FieldValue::Bool(v) => u64::from(*v),
                };
                t.checksum = t.checksum.rotate_left(5) ^ bits;
            }
        }
    }
}

/// A `tracing` layer that records every span's and event's fields (see the module docs). Off until
/// [`Recorder::set_on`].
#[derive(Clone, Default)]
struct Recorder {
    on: Arc<AtomicBool>,
    batch: Arc<Mutex<Batch>>,
}

impl Recorder {
    fn set_on(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }
    fn totals(&self) -> Totals {
        let mut batch = self.batch.lock().unwrap();
        batch.flush();
        batch.totals
    }
    fn push(&self, record: SpanRecord, event: bool) {
        let mut batch = self.batch.lock().unwrap();
        if event {
            batch.events.push(record);
        } else {
            batch.spans.push(record);
        }
        if batch.spans.len() + batch.events.len() >= Batch::SIZE {
            batch.flush();
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let mut record = SpanRecord { fields: Vec::with_capacity(attrs.fields().len()) };
        attrs.record(&mut record);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(record);
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        if let Some(span) = ctx.span(id) {
            if let Some(record) = span.extensions_mut().get_mut::<SpanRecord>() {
                values.record(record);
            }
        }
    }
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let mut record = SpanRecord { fields: Vec::new() };
        event.record(&mut record);
        self.push(record, true);
    }
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        if let Some(span) = ctx.span(&id) {
            if let Some(record) = span.extensions_mut().remove::<SpanRecord>() {
                self.push(record, false);
            }
        }
    }
}
