//! Shared by the chain and layer benches: a counting global allocator and the recording `tracing` layer (what
//! an exporter does with every span: copy its fields into owned records and batch them). Each bench uses part of
//! the counters, hence `dead_code` is allowed here.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Counts this thread's heap allocations (the bench is single-threaded).
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_allocation() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

pub fn allocations() -> u64 {
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

/// A span's (or event's) name and fields, as recorded.
struct SpanRecord {
    name: &'static str,
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
pub struct Totals {
    pub spans: u64,
    pub events: u64,
    pub fields: u64,
    pub gen_ai_spans: u64,
    pub gen_ai_fields: u64,
    pub latency_fields: u64,
    pub string_bytes: u64,
    /// Folds every recorded value, so that exporting reads them all.
    pub checksum: u64,
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
        for record in &self.spans {
            if record.name == "gen_ai" {
                t.gen_ai_spans += 1;
                t.gen_ai_fields += record.fields.len() as u64;
            }
        }
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
pub struct Recorder {
    on: Arc<AtomicBool>,
    batch: Arc<Mutex<Batch>>,
}

impl Recorder {
    pub fn set_on(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }
    pub fn totals(&self) -> Totals {
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
        let mut record = SpanRecord { name: attrs.metadata().name(), fields: Vec::with_capacity(attrs.fields().len()) };
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
        let mut record = SpanRecord { name: event.metadata().name(), fields: Vec::new() };
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
