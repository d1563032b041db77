//! Captures span and event fields. One global subscriber is installed before any test makes a call (installing
//! per-test thread-local subscribers races with `tracing`'s callsite-interest cache when tests run in parallel);
//! it forwards fields to the sink of the test thread that recorded them, if that test asked for one.
//!
//! Use [`start`] at the top of a test: it returns what the test's thread records until the guard drops.
use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Mutex, Once};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

thread_local! {
    static SINK: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

/// `(span or event name, field, value)` triples.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<(String, String, String)>>>);

/// Installs the global subscriber (once per test binary).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Forward))
            .expect("no other global subscriber in this test binary")
    });
}

/// Captures what this thread records until the guard is dropped.
pub fn start() -> (Captured, Guard) {
    install();
    let captured = Captured::default();
    SINK.with(|s| *s.borrow_mut() = Some(captured.clone()));
    (captured, Guard)
}

/// Stops capturing for this thread when dropped.
pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        SINK.with(|s| *s.borrow_mut() = None);
    }
}

struct Visitor<'a> {
    name: &'a str,
    out: &'a Captured,
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.out.0.lock().unwrap().push((self.name.to_string(), field.name().to_string(), value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.out.0.lock().unwrap().push((self.name.to_string(), field.name().to_string(), format!("{value:?}")));
    }
}

fn with_sink(f: impl FnOnce(&Captured)) {
    SINK.with(|s| {
        if let Some(c) = &*s.borrow() {
            f(c)
        }
    })
}

struct Forward;

/// A span created while a test captured remembers that test's sink, so values recorded on it later from another
/// thread (a blocking pool, a model's worker thread) reach the same test.
impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Forward {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        with_sink(|out| {
            attrs.record(&mut Visitor { name: attrs.metadata().name(), out });
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(out.clone());
            }
        });
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let name = span.name();
        let owner = span.extensions().get::<Captured>().cloned();
        match owner {
            Some(out) => values.record(&mut Visitor { name, out: &out }),
            None => with_sink(|out| values.record(&mut Visitor { name, out })),
        }
    }
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        with_sink(|out| event.record(&mut Visitor { name: event.metadata().name(), out }));
    }
}

impl Captured {
    /// Every value recorded for `field` on spans or events named `span`, in order.
    pub fn value(&self, span: &str, field: &str) -> Vec<String> {
        let all = self.0.lock().unwrap();
        all.iter().filter(|(s, f, _)| s == span && f == field).map(|(_, _, v)| v.clone()).collect()
    }
    /// All captured triples, for failure messages.
    pub fn everything(&self) -> String {
        format!("{:?}", self.0.lock().unwrap())
    }
}
