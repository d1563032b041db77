//! Logging and run recording for the examples: `RUST_LOG` (default `warn`) for the log on stderr, and
//! `CATENA_TRACE_DB=<file>` to record every run (chain steps, model calls, retrievals, tools) into that SQLite
//! trace store, where `catena-studio --db <file>` shows them (`CATENA_TRACE_CONTENT=false` leaves the messages out).

#![allow(dead_code)]

use std::sync::Arc;

use anyhow::{Context, Result};
use catena::layer::{LayerExt, TelemetryLayer};
use catena::trace::RecorderHandle;
use catena::{Embedder, Llm, Retriever};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What [`init`] set up. Keep it until the end of `main`: dropping it writes the last runs.
pub struct Tracing {
    handle: Option<RecorderHandle>,
    record_content: bool,
}

/// Installs the log (stderr, `RUST_LOG`, default `warn`) and, when `CATENA_TRACE_DB` is set, the run recorder.
pub fn init() -> Result<Tracing> {
    install(catena::trace::from_env().context("CATENA_TRACE_DB / CATENA_TRACE_CONTENT")?)
}

/// Installs the log as [`init`] does and records every run into the trace store `db` (content too, unless
/// `CATENA_TRACE_CONTENT=false`).
pub fn init_at(db: &std::path::Path) -> Result<Tracing> {
    let content = catena::trace::record_content_from_env(true).context("CATENA_TRACE_CONTENT")?;
    let env = catena::trace::EnvTracing::open(db, content)
        .with_context(|| format!("opening the trace store {}", db.display()))?;
    install(env)
}

fn install(env: catena::trace::EnvTracing) -> Result<Tracing> {
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()));
    tracing_subscriber::registry().with(log).with(env.recorder).try_init().context("installing the log")?;
    Ok(Tracing { handle: env.handle, record_content: env.record_content })
}

impl Tracing {
    /// Whether content (messages, queries, tool arguments and results) is recorded.
    pub fn record_content(&self) -> bool {
        self.record_content
    }

    /// Whether runs are being recorded.
    pub fn recording(&self) -> bool {
        self.handle.is_some()
    }

    /// The model, traced (one span per call in the OpenTelemetry GenAI schema, with the messages when content
    /// is recorded).
    pub fn llm(&self, llm: Arc<dyn Llm>) -> Arc<dyn Llm> {
        Arc::new(llm.layer(TelemetryLayer::new().record_content(self.record_content)))
    }

    /// The embedder, traced (one span per embedding call: the model, how many texts, the tokens when known).
    pub fn embedder(&self, embedder: Arc<dyn Embedder>) -> Arc<dyn Embedder> {
        Arc::new(embedder.layer(TelemetryLayer::new().record_content(self.record_content)))
    }

    /// The retriever, traced (the query when content is recorded, the documents' count and top score).
    pub fn retriever(&self, retriever: Arc<dyn Retriever>) -> Arc<dyn Retriever> {
        Arc::new(retriever.layer(TelemetryLayer::new().record_content(self.record_content)))
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let stats = handle.shutdown(std::time::Duration::from_secs(10));
            if stats.dropped + stats.write_failures > 0 {
                eprintln!(
                    "catena-trace: {} runs were not recorded ({} dropped, {} failed to write)",
                    stats.dropped + stats.write_failures,
                    stats.dropped,
                    stats.write_failures
                );
            }
        }
    }
}
