//! Evaluations for catena, LangSmith-style and local: score outputs with [`Evaluator`]s and run experiments
//! over the datasets of the trace store.
//!
//! - Datasets and experiments are stored by `catena-trace`, in the same SQLite file as the recorded runs
//!   ([`TraceStore::create_dataset`](catena_trace::TraceStore::create_dataset),
//!   [`add_run_as_example`](catena_trace::TraceStore::add_run_as_example),
//!   [`compare`](catena_trace::TraceStore::compare), ...): the studio shows them.
//! - [`Evaluator`]s grade one output against the example's input and reference: [`ExactMatch`],
//!   [`JsonSchemaValid`], [`RegexMatch`], [`EmbeddingSimilarity`] (any embedder, such as the local MiniLM) and
//!   [`LlmJudge`] (any model, local or remote). Each gives a [`Score`] from 0 to 1, a pass/fail verdict and a
//!   comment.
//! - [`run_experiment`] runs a task over a dataset with bounded concurrency, scores every output and records
//!   every result, failures included; [`llm_task`] (a model) and [`chain_task`] (any chain;
//!   [`chain_task_with_usage`] when its output carries its tokens) are the ready-made tasks.
//! - Outputs are compared by their text ([`output_text`]): a recorded model answer (a list of catena
//!   messages), a string, or any JSON.
//!
//! # Example
//!
//! ```
//! use catena_eval::{output_text, run_experiment, Evaluator, ExactMatch, RegexMatch};
//! use catena_trace::TraceStore;
//! use serde_json::{json, Value};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> catena_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let db = dir.path().join("traces.db");
//! let store = TraceStore::open(&db)?;
//! store.create_dataset("shout", "upper-casing words")?;
//! for word in ["hi", "ok", "go"] {
//!     store.add_example("shout", json!(word), Some(json!(word.to_uppercase())), None)?;
//! }
//!
//! // The target: here a plain function; `llm_task` and `chain_task` wrap a model or a chain.
//! let task = |input: Value| async move { Ok((json!(output_text(&input).to_uppercase()), None)) };
//! let evaluators: Vec<Box<dyn Evaluator>> =
//!     vec![Box::new(ExactMatch::new()), Box::new(RegexMatch::new("^[A-Z]+$")?)];
//! let experiment = run_experiment(&db, "shout", "baseline", "fn:to_uppercase", task, &evaluators, 2).await?;
//!
//! assert_eq!((experiment.summary.results, experiment.summary.errors), (3, 0));
//! assert!(experiment.summary.scores.iter().all(|s| s.mean == Some(1.0)));
//! let detail = store.experiment(experiment.id)?.unwrap();
//! assert_eq!(detail.results[0].output, Some(json!("HI")));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod evaluators;
mod experiment;
mod judge;
mod text;

pub use catena_trace::{
    ComparedExample, Comparison, Dataset, EvaluatorSummary, Example, ExampleId, Experiment, ExperimentDetail,
    ExperimentId, ExperimentResult, ExperimentSummary, Score,
};
pub use evaluators::{cosine_similarity, EmbeddingSimilarity, Evaluator, ExactMatch, JsonSchemaValid, RegexMatch};
pub use experiment::{chain_task, chain_task_with_usage, llm_task, run_experiment, TaskFuture, TaskOutput};
pub use judge::{parse_verdict, verdict_schema, LlmJudge, Verdict, DEFAULT_CRITERIA};
pub use text::{input_messages, output_text};
