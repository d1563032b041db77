//! Records what catena does as runs, LangSmith-style, on your machine: a `tracing` layer ([`RunRecorder`]) turns
//! catena's spans (chain steps, model calls, retrievals, tool executions, agent runs, and your own spans) into a
//! tree of [`Run`]s with tokens, [`Cost`], latency and time to first chunk, and a background thread writes them to
//! an embedded SQLite [`TraceStore`] (one file) that the studio and your code query.
//!
//! There are no callbacks: catena's components emit `tracing` spans in the OpenTelemetry GenAI schema (the
//! `TelemetryLayer` in `catena-core` owns it), and this crate is one more subscriber layer.
//!
//! Recording never blocks the caller: finished runs go through a bounded queue (full: the run is dropped and
//! counted in [`RecorderStats::dropped`]), and the writer batches them into SQLite transactions. The
//! [`RecorderHandle`] flushes on [`flush`](RecorderHandle::flush), [`shutdown`](RecorderHandle::shutdown) and drop.
//!
//! # From the environment
//!
//! | variable | effect |
//! |---|---|
//! | `CATENA_TRACE_DB=<file>` | record every run into that SQLite file ([`from_env`]); unset: nothing is recorded |
//! | `CATENA_TRACE_CONTENT=true\|false` | whether model calls' messages and retrieval queries are recorded; default `true` when `CATENA_TRACE_DB` is set (the file is yours, on your machine, and the studio's playground needs the messages) |
//!
//! # Example
//!
//! ```
//! use catena_trace::{RecorderConfig, RunRecorder, TraceQuery, TraceStore};
//! use std::time::Duration;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! # fn main() -> catena_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let file = dir.path().join("traces.db");
//! let (recorder, handle) = RunRecorder::new(TraceStore::open(&file)?, RecorderConfig::default())?;
//! let subscriber = tracing_subscriber::registry().with(recorder);
//! tracing::subscriber::with_default(subscriber, || {
//!     let _answer = tracing::info_span!("my pipeline", catena.tags = "demo").entered();
//!     let _step = tracing::info_span!("chain", gen_ai.operation.name = "chain", catena.chain.step = "prompt").entered();
//! });
//! handle.flush(Duration::from_secs(5));
//! let store = TraceStore::open(&file)?;
//! let traces = store.traces(&TraceQuery { tag: Some("demo".into()), ..TraceQuery::default() })?;
//! assert_eq!(traces[0].root.name, "my pipeline");
//! assert_eq!(traces[0].runs, 2);
//! # Ok(()) }
//! ```

mod datasets;
#[cfg(feature = "otlp")]
pub mod otlp;
mod price;
mod recorder;
mod run;
mod store;

pub use datasets::{
    ComparedExample, Comparison, Dataset, EvaluatorSummary, Example, ExampleId, Experiment, ExperimentDetail,
    ExperimentId, ExperimentResult, ExperimentSummary, Score,
};
pub use price::{Cost, Price, PriceTable, BUILTIN_PRICES_AS_OF};
pub use recorder::{RecorderConfig, RecorderHandle, RecorderStats, RunRecorder, RunSink};
pub use run::{FieldValue, ParseIdError, Run, RunEvent, RunId, RunKind, RunStatus, TokenUsage, TraceId};
pub use store::{Totals, TraceQuery, TraceStore, TraceSummary};

use std::path::PathBuf;

/// The variable naming the trace store file: `CATENA_TRACE_DB`.
pub const TRACE_DB_ENV: &str = "CATENA_TRACE_DB";
/// The variable saying whether content is recorded: `CATENA_TRACE_CONTENT`.
pub const TRACE_CONTENT_ENV: &str = "CATENA_TRACE_CONTENT";

/// What [`from_env`] set up.
#[derive(Debug)]
pub struct EnvTracing {
    /// The layer to add to your subscriber; `None` when `CATENA_TRACE_DB` is unset (an `Option` of a layer is a
    /// layer, so it can be added either way).
    pub recorder: Option<RunRecorder>,
    /// Flushes the writer; keep it alive until the program ends (dropping it flushes).
    pub handle: Option<RecorderHandle>,
    /// Whether to record content: pass it to `TelemetryLayer::record_content`.
    pub record_content: bool,
    /// The store's file, when recording.
    pub db: Option<PathBuf>,
}

/// Reads `CATENA_TRACE_DB` and `CATENA_TRACE_CONTENT` and, when the first is set, opens that store and starts a
/// recorder with [`RecorderConfig::default`].
///
/// # Errors
/// [`catena_core::Error::Config`] for a `CATENA_TRACE_CONTENT` that is not `true`/`false`/`1`/`0`/`on`/`off`;
/// [`catena_core::Error::Store`] when the file cannot be opened.
pub fn from_env() -> catena_core::Result<EnvTracing> {
    let db = std::env::var_os(TRACE_DB_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    let content = record_content_from_env(db.is_some())?;
    match db {
        None => Ok(EnvTracing { recorder: None, handle: None, record_content: content, db: None }),
        Some(path) => EnvTracing::open(path, content),
    }
}

/// Reads `CATENA_TRACE_CONTENT` (`true`/`false`/`1`/`0`/`on`/`off`/`yes`/`no`); `default` when it is unset.
///
/// # Errors
/// [`catena_core::Error::Config`] for any other value.
pub fn record_content_from_env(default: bool) -> catena_core::Result<bool> {
    match std::env::var(TRACE_CONTENT_ENV) {
        Err(_) => Ok(default),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "on" | "yes" => Ok(true),
            "0" | "false" | "off" | "no" | "" => Ok(false),
            other => {
                Err(catena_core::Error::config(TRACE_CONTENT_ENV, format!("is `{other}`"), "set it to true or false"))
            }
        },
    }
}

impl EnvTracing {
    /// Records into the store file `path` (created when missing) with [`RecorderConfig::default`], as
    /// [`from_env`] does for `CATENA_TRACE_DB`: for a program that takes the file as an argument.
    ///
    /// # Errors
    /// [`catena_core::Error::Store`] when the file cannot be opened.
    pub fn open(path: impl Into<PathBuf>, record_content: bool) -> catena_core::Result<EnvTracing> {
        let path = path.into();
        let store = TraceStore::open(&path)?;
        let (recorder, handle) = RunRecorder::new(store, RecorderConfig::default())?;
        Ok(EnvTracing { recorder: Some(recorder), handle: Some(handle), record_content, db: Some(path) })
    }
}
