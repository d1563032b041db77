//! Datasets and experiments, LangSmith-style, in the same SQLite file as the runs.
//!
//! A [`Dataset`] is a named list of [`Example`]s: an input (any JSON: a prompt, a list of chat messages, a
//! chain's input) and, optionally, the reference output it should produce. Examples are written by hand
//! ([`TraceStore::add_example`]) or saved from a recorded run ([`TraceStore::add_run_as_example`]: the run's
//! input, with its output as the reference).
//!
//! An [`Experiment`] is one pass of a target (a model such as `openai/gpt-4o`, or a chain) over a dataset: one
//! [`ExperimentResult`] per example, holding the output or the error, the latency, the tokens, and the
//! [`Score`]s that evaluators gave it. [`TraceStore::compare`] lines two experiments up example by example.
//! Running a target and scoring it is `catena-eval`'s job; this module only stores and reads.
//!
//! The tables (`datasets`, `examples`, `experiments`, `experiment_results`) are created next to the runs when a
//! store is opened; older files gain them on first open. Every method takes `&self`, so that a store opened per
//! request (as the studio does) can write too.
//!
//! ```
//! use catena_trace::TraceStore;
//! use serde_json::json;
//!
//! # fn main() -> catena_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = TraceStore::open(dir.path().join("traces.db"))?;
//! store.create_dataset("capitals", "Capital cities")?;
//! let id = store.add_example("capitals", json!("Capital of France?"), Some(json!("Paris")), None)?;
//! let experiment = store.start_experiment("capitals", "baseline", "openai/gpt-4o-mini")?;
//! store.record_result(&catena_trace::ExperimentResult {
//!     experiment,
//!     example: id,
//!     output: Some(json!("Paris")),
//!     error: None,
//!     latency: std::time::Duration::from_millis(420),
//!     usage: None,
//!     scores: vec![catena_trace::Score::new("exact_match", 1.0, true, None)],
//! })?;
//! store.finish_experiment(experiment)?;
//! let listed = store.experiments("capitals")?;
//! assert_eq!(listed[0].summary.scores[0].mean, Some(1.0));
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use catena_core::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::run::{unix_ns, Run, RunId, TokenUsage};
use crate::store::TraceStore;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS datasets (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,
    input TEXT NOT NULL,
    reference TEXT,
    source_run TEXT,
    created_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS examples_by_dataset ON examples (dataset, id);
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,
    name TEXT NOT NULL,
    target TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    finished_ns INTEGER
);
CREATE INDEX IF NOT EXISTS experiments_by_dataset ON experiments (dataset, id);
CREATE TABLE IF NOT EXISTS experiment_results (
    experiment INTEGER NOT NULL,
    example INTEGER NOT NULL,
    output TEXT,
    error TEXT,
    latency_ns INTEGER NOT NULL,
    usage TEXT,
    scores TEXT NOT NULL,
    PRIMARY KEY (experiment, example)
);
";

/// Creates the dataset and experiment tables when missing (called by [`TraceStore::open`]).
pub(crate) fn create_schema(connection: &Connection) -> rusqlite::Result<()> {
    connection.execute_batch(SCHEMA)
}

/// An example's id (SQLite's row id: increasing, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExampleId(pub i64);

/// An experiment's id (SQLite's row id: increasing, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExperimentId(pub i64);

impl fmt::Display for ExampleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ExperimentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A named list of examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Its name (unique in a store).
    pub name: String,
    /// What it holds, for people.
    pub description: String,
    /// When it was created.
    #[serde(with = "crate::run::system_time_ns")]
    pub created: SystemTime,
    /// How many examples it holds.
    pub examples: u64,
}

/// One input of a dataset, with the output expected for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Its id.
    pub id: ExampleId,
    /// The dataset it belongs to.
    pub dataset: String,
    /// What the target is given: a prompt, chat messages (as a run records them), a chain's input.
    pub input: Value,
    /// The expected output, when there is one.
    pub reference: Option<Value>,
    /// The recorded run it was saved from.
    pub source_run: Option<RunId>,
    /// When it was added.
    #[serde(with = "crate::run::system_time_ns")]
    pub created: SystemTime,
}

/// One evaluator's verdict on one output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// The evaluator's name (`exact_match`, `llm_judge`, ...).
    pub evaluator: String,
    /// The score, from 0 (worst) to 1 (best).
    pub value: f64,
    /// Whether the output passes the evaluator's threshold.
    pub passed: bool,
    /// Why: the judge's reasoning, the schema errors, the similarity.
    pub comment: Option<String>,
    /// Set when the evaluator itself failed (a judge model that did not answer, say): then `value` is 0 and
    /// `passed` false, and summaries count the score as an error rather than in the mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Score {
    /// A verdict; `value` is clamped to 0..=1 (NaN becomes 0).
    pub fn new(evaluator: impl Into<String>, value: f64, passed: bool, comment: Option<String>) -> Self {
        let value = if value.is_nan() { 0.0 } else { value.clamp(0.0, 1.0) };
        Score { evaluator: evaluator.into(), value, passed, comment, error: None }
    }

    /// The record of an evaluator that failed with `error`.
    pub fn failed(evaluator: impl Into<String>, error: impl Into<String>) -> Self {
        Score { evaluator: evaluator.into(), value: 0.0, passed: false, comment: None, error: Some(error.into()) }
    }
}

/// The outcome of running the target on one example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentResult {
    /// The experiment.
    pub experiment: ExperimentId,
    /// The example.
    pub example: ExampleId,
    /// What the target returned; `None` when it failed.
    pub output: Option<Value>,
    /// Why the target failed.
    pub error: Option<String>,
    /// How long the target took.
    #[serde(with = "crate::run::duration_ns")]
    pub latency: Duration,
    /// Tokens the target used, when it reported them.
    pub usage: Option<TokenUsage>,
    /// The evaluators' verdicts.
    pub scores: Vec<Score>,
}

/// One evaluator's scores over an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluatorSummary {
    /// The evaluator.
    pub evaluator: String,
    /// The mean score over the scores that are not errors; `None` when there are none.
    pub mean: Option<f64>,
    /// The share of those scores that passed; `None` when there are none.
    pub pass_rate: Option<f64>,
    /// How many scores it gave (errors included).
    pub count: u64,
    /// How many times it failed ([`Score::error`]).
    pub errors: u64,
}

/// Totals over an experiment's results.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExperimentSummary {
    /// Results recorded.
    pub results: u64,
    /// Results whose target failed.
    pub errors: u64,
    /// Mean latency of the target.
    #[serde(with = "crate::run::opt_duration_ns")]
    pub mean_latency: Option<Duration>,
    /// Prompt tokens over every result.
    pub input_tokens: u64,
    /// Generated tokens over every result.
    pub output_tokens: u64,
    /// Per evaluator, by name.
    pub scores: Vec<EvaluatorSummary>,
}

/// One pass of a target over a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Its id.
    pub id: ExperimentId,
    /// The dataset it ran over.
    pub dataset: String,
    /// Its name (`baseline`, `prompt v2`, ...).
    pub name: String,
    /// What ran: a model (`openai/gpt-4o`) or a chain's label.
    pub target: String,
    /// When it started.
    #[serde(with = "crate::run::system_time_ns")]
    pub created: SystemTime,
    /// When it finished; `None` while it runs (or when it was interrupted).
    #[serde(with = "opt_system_time_ns")]
    pub finished: Option<SystemTime>,
    /// Totals over its results so far.
    pub summary: ExperimentSummary,
}

/// An experiment with every result, in example order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentDetail {
    /// The experiment.
    pub experiment: Experiment,
    /// Its results.
    pub results: Vec<ExperimentResult>,
}

/// One example in a comparison of two experiments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparedExample {
    /// The example.
    pub example: ExampleId,
    /// Its input; `None` when the example was deleted since.
    pub input: Option<Value>,
    /// Its reference output.
    pub reference: Option<Value>,
    /// The first experiment's result, when it has one for this example.
    pub a: Option<ExperimentResult>,
    /// The second experiment's result.
    pub b: Option<ExperimentResult>,
}

/// Two experiments side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The first experiment.
    pub a: Experiment,
    /// The second experiment.
    pub b: Experiment,
    /// Every example either has a result for, in example order.
    pub examples: Vec<ComparedExample>,
}

mod opt_system_time_ns {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&crate::run::unix_ns(*t)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(|n| UNIX_EPOCH + Duration::from_nanos(n)))
    }
}

fn to_ns(t: SystemTime) -> i64 {
    i64::try_from(unix_ns(t)).unwrap_or(i64::MAX)
}

fn from_ns(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

fn json_text<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    Ok(serde_json::to_string(value)?)
}

/// A row of `experiment_results` before decoding.
type ResultRow = (i64, i64, Option<String>, Option<String>, i64, Option<String>, String);

const RESULT_COLUMNS: &str = "experiment, example, output, error, latency_ns, usage, scores";

fn result_row(r: &Row<'_>) -> rusqlite::Result<ResultRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

const EXPERIMENT_COLUMNS: &str = "id, dataset, name, target, created_ns, finished_ns";

type ExperimentRow = (i64, String, String, String, i64, Option<i64>);

fn experiment_row(r: &Row<'_>) -> rusqlite::Result<ExperimentRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

impl TraceStore {
    fn dataset_error(&self, e: impl fmt::Display) -> Error {
        Error::Store { store: format!("trace store {}", self.path().display()), message: e.to_string() }
    }

    fn collect<T, F>(&self, rows: rusqlite::Result<rusqlite::MappedRows<'_, F>>) -> Result<Vec<T>>
    where
        F: FnMut(&Row<'_>) -> rusqlite::Result<T>,
    {
        rows.and_then(|rows| rows.collect::<rusqlite::Result<Vec<T>>>()).map_err(|e| self.dataset_error(e))
    }

    fn decode_json(&self, what: &str, text: &str) -> Result<Value> {
        serde_json::from_str(text).map_err(|e| self.dataset_error(format!("a stored {what} does not decode: {e}")))
    }

    fn require_dataset(&self, name: &str) -> Result<()> {
        let found: Option<i64> = self
            .connection
            .query_row("SELECT 1 FROM datasets WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .map_err(|e| self.dataset_error(e))?;
        match found {
            Some(_) => Ok(()),
            None => Err(Error::InvalidInput(format!(
                "there is no dataset named `{name}` in {}; create it with create_dataset",
                self.path().display()
            ))),
        }
    }

    /// Creates the dataset `name` unless it exists (then its description is left as it is); returns it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty name; [`Error::Store`] when SQLite fails.
    pub fn create_dataset(&self, name: &str, description: &str) -> Result<Dataset> {
        if name.trim().is_empty() {
            return Err(Error::InvalidInput("a dataset needs a non-empty name".into()));
        }
        self.connection
            .execute(
                "INSERT OR IGNORE INTO datasets (name, description, created_ns) VALUES (?1, ?2, ?3)",
                params![name, description, to_ns(SystemTime::now())],
            )
            .map_err(|e| self.dataset_error(e))?;
        self.dataset(name)?.ok_or_else(|| self.dataset_error(format!("dataset `{name}` vanished after creation")))
    }

    /// The dataset `name`, with its example count.
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails.
    pub fn dataset(&self, name: &str) -> Result<Option<Dataset>> {
        Ok(self.query_datasets(Some(name))?.into_iter().next())
    }

    /// Every dataset, by name.
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails.
    pub fn datasets(&self) -> Result<Vec<Dataset>> {
        self.query_datasets(None)
    }

    fn query_datasets(&self, name: Option<&str>) -> Result<Vec<Dataset>> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT d.name, d.description, d.created_ns,
                    (SELECT count(*) FROM examples e WHERE e.dataset = d.name)
                 FROM datasets d WHERE ?1 IS NULL OR d.name = ?1 ORDER BY d.name",
            )
            .map_err(|e| self.dataset_error(e))?;
        let rows = statement.query_map([name], |r| {
            Ok(Dataset {
                name: r.get(0)?,
                description: r.get(1)?,
                created: from_ns(r.get(2)?),
                examples: r.get::<_, i64>(3)?.max(0) as u64,
            })
        });
        self.collect(rows)
    }

    /// Deletes a dataset with its examples, experiments and their results; returns whether it existed.
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails.
    pub fn delete_dataset(&self, name: &str) -> Result<bool> {
        let err = |e: rusqlite::Error| self.dataset_error(e);
        let tx = self.connection.unchecked_transaction().map_err(err)?;
        tx.execute(
            "DELETE FROM experiment_results WHERE experiment IN (SELECT id FROM experiments WHERE dataset = ?1)",
            [name],
        )
        .map_err(err)?;
        tx.execute("DELETE FROM experiments WHERE dataset = ?1", [name]).map_err(err)?;
        tx.execute("DELETE FROM examples WHERE dataset = ?1", [name]).map_err(err)?;
        let n = tx.execute("DELETE FROM datasets WHERE name = ?1", [name]).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(n > 0)
    }

    /// Adds an example to the dataset `dataset` (which must exist); returns its id.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when there is no such dataset; [`Error::Store`] when SQLite fails.
    pub fn add_example(
        &self,
        dataset: &str,
        input: Value,
        reference: Option<Value>,
        source_run: Option<RunId>,
    ) -> Result<ExampleId> {
        self.require_dataset(dataset)?;
        let reference = reference.map(|r| json_text(&r)).transpose()?;
        self.connection
            .execute(
                "INSERT INTO examples (dataset, input, reference, source_run, created_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    dataset,
                    json_text(&input)?,
                    reference,
                    source_run.map(|r| r.to_string()),
                    to_ns(SystemTime::now())
                ],
            )
            .map_err(|e| self.dataset_error(e))?;
        Ok(ExampleId(self.connection.last_insert_rowid()))
    }

    /// Saves a recorded run as an example of `dataset`: its input as the input, its output as the reference.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the run has no recorded input (content recording was off, or it is a span
    /// without content) or there is no such dataset; [`Error::Store`] when SQLite fails.
    pub fn add_run_as_example(&self, dataset: &str, run: &Run) -> Result<ExampleId> {
        let Some(input) = run.input.clone() else {
            return Err(Error::InvalidInput(format!(
                "run {} (`{}`) has no recorded input: record content (CATENA_TRACE_CONTENT=true) to save runs as \
                 examples",
                run.id, run.name
            )));
        };
        self.add_example(dataset, input, run.output.clone(), Some(run.id))
    }

    /// The examples of `dataset`, oldest first.
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails or a row does not decode.
    pub fn examples(&self, dataset: &str) -> Result<Vec<Example>> {
        self.query_examples("WHERE dataset = ?1 ORDER BY id", [dataset])
    }

    /// One example.
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails or the row does not decode.
    pub fn example(&self, id: ExampleId) -> Result<Option<Example>> {
        Ok(self.query_examples("WHERE id = ?1", [id.0])?.into_iter().next())
    }

    fn query_examples(&self, filter: &str, values: impl rusqlite::Params) -> Result<Vec<Example>> {
        let sql = format!("SELECT id, dataset, input, reference, source_run, created_ns FROM examples {filter}");
        let mut statement = self.connection.prepare_cached(&sql).map_err(|e| self.dataset_error(e))?;
        let rows = statement.query_map(values, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
            ))
        });
        self.collect(rows)?
            .into_iter()
            .map(|(id, dataset, input, reference, source_run, created)| {
                Ok(Example {
                    id: ExampleId(id),
                    dataset,
                    input: self.decode_json("example input", &input)?,
                    reference: reference.map(|r| self.decode_json("example reference", &r)).transpose()?,
                    source_run: source_run.and_then(|r| r.parse().ok()),
                    created: from_ns(created),
                })
            })
            .collect()
    }

    /// Deletes an example (results already recorded for it stay with their experiments); returns whether it
    /// existed.
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails.
    pub fn delete_example(&self, id: ExampleId) -> Result<bool> {
        let n =
            self.connection.execute("DELETE FROM examples WHERE id = ?1", [id.0]).map_err(|e| self.dataset_error(e))?;
        Ok(n > 0)
    }

    /// Starts an experiment named `name` of `target` over `dataset` (which must exist); returns its id.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when there is no such dataset; [`Error::Store`] when SQLite fails.
    pub fn start_experiment(&self, dataset: &str, name: &str, target: &str) -> Result<ExperimentId> {
        self.require_dataset(dataset)?;
        self.connection
            .execute(
                "INSERT INTO experiments (dataset, name, target, created_ns) VALUES (?1, ?2, ?3, ?4)",
                params![dataset, name, target, to_ns(SystemTime::now())],
            )
            .map_err(|e| self.dataset_error(e))?;
        Ok(ExperimentId(self.connection.last_insert_rowid()))
    }

    /// Records (or replaces) the result of `result.experiment` on `result.example`.
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails.
    pub fn record_result(&self, result: &ExperimentResult) -> Result<()> {
        let output = result.output.as_ref().map(json_text).transpose()?;
        let usage = result.usage.as_ref().map(json_text).transpose()?;
        self.connection
            .execute(
                "INSERT OR REPLACE INTO experiment_results (experiment, example, output, error, latency_ns, usage, scores)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    result.experiment.0,
                    result.example.0,
                    output,
                    result.error,
                    i64::try_from(result.latency.as_nanos()).unwrap_or(i64::MAX),
                    usage,
                    json_text(&result.scores)?,
                ],
            )
            .map_err(|e| self.dataset_error(e))?;
        Ok(())
    }

    /// Marks an experiment finished (now).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when there is no such experiment; [`Error::Store`] when SQLite fails.
    pub fn finish_experiment(&self, id: ExperimentId) -> Result<()> {
        let n = self
            .connection
            .execute("UPDATE experiments SET finished_ns = ?2 WHERE id = ?1", params![id.0, to_ns(SystemTime::now())])
            .map_err(|e| self.dataset_error(e))?;
        if n == 0 {
            return Err(Error::InvalidInput(format!("there is no experiment {id}")));
        }
        Ok(())
    }

    /// The experiments over `dataset`, newest first, with their summaries.
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails.
    pub fn experiments(&self, dataset: &str) -> Result<Vec<Experiment>> {
        let sql = format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE dataset = ?1 ORDER BY id DESC");
        let mut statement = self.connection.prepare_cached(&sql).map_err(|e| self.dataset_error(e))?;
        let rows = self.collect(statement.query_map([dataset], experiment_row))?;
        rows.into_iter().map(|row| self.experiment_from(row)).collect()
    }

    /// One experiment with every result, in example order.
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails or a row does not decode.
    pub fn experiment(&self, id: ExperimentId) -> Result<Option<ExperimentDetail>> {
        let sql = format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE id = ?1");
        let row =
            self.connection.query_row(&sql, [id.0], experiment_row).optional().map_err(|e| self.dataset_error(e))?;
        let Some(row) = row else { return Ok(None) };
        let experiment = self.experiment_from(row)?;
        let results = self.results(id)?;
        Ok(Some(ExperimentDetail { experiment, results }))
    }

    /// Deletes an experiment and its results; returns whether it existed.
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails.
    pub fn delete_experiment(&self, id: ExperimentId) -> Result<bool> {
        let err = |e: rusqlite::Error| self.dataset_error(e);
        let tx = self.connection.unchecked_transaction().map_err(err)?;
        tx.execute("DELETE FROM experiment_results WHERE experiment = ?1", [id.0]).map_err(err)?;
        let n = tx.execute("DELETE FROM experiments WHERE id = ?1", [id.0]).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(n > 0)
    }

    /// Two experiments side by side, one entry per example that either has a result for, in example order
    /// (normally two experiments over the same dataset; any two can be compared).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when either experiment does not exist; [`Error::Store`] when SQLite fails.
    pub fn compare(&self, a: ExperimentId, b: ExperimentId) -> Result<Comparison> {
        let missing = |id: ExperimentId| Error::InvalidInput(format!("there is no experiment {id}"));
        let a = self.experiment(a)?.ok_or_else(|| missing(a))?;
        let b = self.experiment(b)?.ok_or_else(|| missing(b))?;
        let mut ids: Vec<ExampleId> = a.results.iter().chain(&b.results).map(|r| r.example).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut known: std::collections::HashMap<ExampleId, Example> =
            self.examples(&a.experiment.dataset)?.into_iter().map(|e| (e.id, e)).collect();
        if b.experiment.dataset != a.experiment.dataset {
            known.extend(self.examples(&b.experiment.dataset)?.into_iter().map(|e| (e.id, e)));
        }
        let find = |results: &[ExperimentResult], id: ExampleId| results.iter().find(|r| r.example == id).cloned();
        let examples = ids
            .into_iter()
            .map(|id| {
                let example = known.remove(&id);
                ComparedExample {
                    example: id,
                    input: example.as_ref().map(|e| e.input.clone()),
                    reference: example.and_then(|e| e.reference),
                    a: find(&a.results, id),
                    b: find(&b.results, id),
                }
            })
            .collect();
        Ok(Comparison { a: a.experiment, b: b.experiment, examples })
    }

    fn results(&self, id: ExperimentId) -> Result<Vec<ExperimentResult>> {
        let sql = format!("SELECT {RESULT_COLUMNS} FROM experiment_results WHERE experiment = ?1 ORDER BY example");
        let mut statement = self.connection.prepare_cached(&sql).map_err(|e| self.dataset_error(e))?;
        let rows = self.collect(statement.query_map([id.0], result_row))?;
        rows.into_iter()
            .map(|(experiment, example, output, error, latency, usage, scores)| {
                let decode = |what: &str, text: &str| -> Result<Value> { self.decode_json(what, text) };
                Ok(ExperimentResult {
                    experiment: ExperimentId(experiment),
                    example: ExampleId(example),
                    output: output.map(|o| decode("result output", &o)).transpose()?,
                    error,
                    latency: Duration::from_nanos(u64::try_from(latency).unwrap_or(0)),
                    usage: usage
                        .map(|u| serde_json::from_value(decode("result usage", &u)?).map_err(|e| self.dataset_error(e)))
                        .transpose()?,
                    scores: serde_json::from_value(decode("result scores", &scores)?)
                        .map_err(|e| self.dataset_error(e))?,
                })
            })
            .collect()
    }

    fn experiment_from(&self, row: ExperimentRow) -> Result<Experiment> {
        let (id, dataset, name, target, created, finished) = row;
        Ok(Experiment {
            id: ExperimentId(id),
            dataset,
            name,
            target,
            created: from_ns(created),
            finished: finished.map(from_ns),
            summary: self.summary(ExperimentId(id))?,
        })
    }

    fn summary(&self, id: ExperimentId) -> Result<ExperimentSummary> {
        let err = |e: rusqlite::Error| self.dataset_error(e);
        let (results, errors, mean_latency, input_tokens, output_tokens) = self
            .connection
            .query_row(
                "SELECT count(*), count(error), avg(latency_ns),
                    coalesce(sum(json_extract(usage, '$.input')), 0), coalesce(sum(json_extract(usage, '$.output')), 0)
                 FROM experiment_results WHERE experiment = ?1",
                [id.0],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<f64>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .map_err(err)?;
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT json_extract(s.value, '$.evaluator') AS evaluator,
                    avg(CASE WHEN json_extract(s.value, '$.error') IS NULL THEN json_extract(s.value, '$.value') END),
                    avg(CASE WHEN json_extract(s.value, '$.error') IS NULL THEN json_extract(s.value, '$.passed') END),
                    count(*),
                    count(json_extract(s.value, '$.error'))
                 FROM experiment_results r, json_each(r.scores) s
                 WHERE r.experiment = ?1 GROUP BY evaluator ORDER BY evaluator",
            )
            .map_err(err)?;
        let scores = self.collect(statement.query_map([id.0], |r| {
            Ok(EvaluatorSummary {
                evaluator: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                mean: r.get(1)?,
                pass_rate: r.get(2)?,
                count: r.get::<_, i64>(3)?.max(0) as u64,
                errors: r.get::<_, i64>(4)?.max(0) as u64,
            })
        }))?;
        Ok(ExperimentSummary {
            results: results.max(0) as u64,
            errors: errors.max(0) as u64,
            mean_latency: mean_latency
                .filter(|ns| ns.is_finite() && *ns >= 0.0)
                .map(|ns| Duration::from_nanos(ns as u64)),
            input_tokens: input_tokens.max(0) as u64,
            output_tokens: output_tokens.max(0) as u64,
            scores,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{RunKind, TraceId};
    use serde_json::json;

    fn store() -> (tempfile::TempDir, TraceStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = TraceStore::open(dir.path().join("t.db")).unwrap();
        (dir, store)
    }

    fn result(experiment: ExperimentId, example: ExampleId, output: &str, score: f64) -> ExperimentResult {
        ExperimentResult {
            experiment,
            example,
            output: Some(json!(output)),
            error: None,
            latency: Duration::from_millis(100),
            usage: Some(TokenUsage { input: 10, output: 2, cached_input: None }),
            scores: vec![Score::new("exact_match", score, score >= 1.0, None)],
        }
    }

    #[test]
    fn datasets_and_examples_round_trip() {
        let (dir, store) = store();
        let created = store.create_dataset("qa", "questions").unwrap();
        assert_eq!((created.name.as_str(), created.description.as_str(), created.examples), ("qa", "questions", 0));
        // Idempotent by name: the description stays.
        assert_eq!(store.create_dataset("qa", "other").unwrap().description, "questions");
        store.create_dataset("another", "").unwrap();
        assert!(store.create_dataset("  ", "").is_err());

        let a = store.add_example("qa", json!({"question": "2+2?"}), Some(json!("4")), None).unwrap();
        let b = store.add_example("qa", json!("no reference"), None, Some(RunId(0xabc))).unwrap();
        assert!(a < b);
        let err = store.add_example("missing", json!(1), None, None).unwrap_err().to_string();
        assert!(err.contains("no dataset named `missing`"), "{err}");

        let examples = store.examples("qa").unwrap();
        assert_eq!(examples.len(), 2);
        assert_eq!(examples[0].input, json!({"question": "2+2?"}));
        assert_eq!(examples[0].reference, Some(json!("4")));
        assert_eq!((examples[1].reference.as_ref(), examples[1].source_run), (None, Some(RunId(0xabc))));
        let names: Vec<_> = store.datasets().unwrap().into_iter().map(|d| (d.name, d.examples)).collect();
        assert_eq!(names, [("another".to_string(), 0), ("qa".to_string(), 2)]);

        assert!(store.delete_example(a).unwrap());
        assert!(!store.delete_example(a).unwrap());
        assert_eq!(store.examples("qa").unwrap().len(), 1);

        // Everything survives reopening, next to the runs.
        drop(store);
        let store = TraceStore::open(dir.path().join("t.db")).unwrap();
        assert_eq!(store.example(b).unwrap().unwrap().input, json!("no reference"));
        assert!(store.delete_dataset("qa").unwrap());
        assert!(store.dataset("qa").unwrap().is_none() && store.example(b).unwrap().is_none());
    }

    #[test]
    fn a_recorded_run_becomes_an_example() {
        let (_dir, mut store) = store();
        let messages = json!([{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}]);
        let answer = json!([{"role": "assistant", "content": [{"type": "text", "text": "Paris"}]}]);
        let run = Run {
            input: Some(messages.clone()),
            output: Some(answer.clone()),
            ..Run::new(
                TraceId(1),
                RunId(7),
                None,
                "chat tiny",
                RunKind::Llm,
                SystemTime::now(),
                Duration::from_millis(3),
            )
        };
        store.insert(std::slice::from_ref(&run)).unwrap();
        store.create_dataset("saved", "").unwrap();
        let stored = store.run(RunId(7)).unwrap().unwrap();
        let id = store.add_run_as_example("saved", &stored).unwrap();
        let example = store.example(id).unwrap().unwrap();
        assert_eq!((example.input, example.reference, example.source_run), (messages, Some(answer), Some(RunId(7))));

        let without = Run { input: None, ..run };
        let err = store.add_run_as_example("saved", &without).unwrap_err().to_string();
        assert!(err.contains("CATENA_TRACE_CONTENT"), "{err}");
    }

    #[test]
    fn experiments_summaries_and_comparison() {
        let (_dir, store) = store();
        store.create_dataset("qa", "").unwrap();
        let e1 = store.add_example("qa", json!("one"), Some(json!("1")), None).unwrap();
        let e2 = store.add_example("qa", json!("two"), Some(json!("2")), None).unwrap();
        let e3 = store.add_example("qa", json!("three"), Some(json!("3")), None).unwrap();

        let x = store.start_experiment("qa", "baseline", "openai/gpt-4o-mini").unwrap();
        store.record_result(&result(x, e1, "1", 1.0)).unwrap();
        store.record_result(&result(x, e2, "two", 0.0)).unwrap();
        let mut failed = result(x, e3, "", 0.0);
        failed.output = None;
        failed.error = Some("HTTP 500".into());
        failed.usage = None;
        failed.scores = vec![Score::failed("exact_match", "no output")];
        store.record_result(&failed).unwrap();
        store.finish_experiment(x).unwrap();

        let y = store.start_experiment("qa", "v2", "chain:rag").unwrap();
        store.record_result(&result(y, e2, "2", 1.0)).unwrap();
        // Replacing a result keeps one per example.
        store.record_result(&result(y, e2, "2", 1.0)).unwrap();
        assert!(store.start_experiment("nope", "x", "y").is_err());
        assert!(store.finish_experiment(ExperimentId(999)).is_err());

        let listed = store.experiments("qa").unwrap();
        assert_eq!(listed.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["v2", "baseline"]);
        let baseline = &listed[1];
        assert!(baseline.finished.is_some() && listed[0].finished.is_none());
        let s = &baseline.summary;
        assert_eq!((s.results, s.errors, s.input_tokens, s.output_tokens), (3, 1, 20, 4));
        assert_eq!(s.mean_latency, Some(Duration::from_millis(100)));
        assert_eq!(
            s.scores,
            [EvaluatorSummary {
                evaluator: "exact_match".into(),
                mean: Some(0.5),
                pass_rate: Some(0.5),
                count: 3,
                errors: 1
            }]
        );

        let detail = store.experiment(x).unwrap().unwrap();
        assert_eq!(detail.results.len(), 3);
        assert_eq!(detail.results[2], failed);
        assert_eq!(detail.results[0], result(x, e1, "1", 1.0));
        assert!(store.experiment(ExperimentId(999)).unwrap().is_none());

        store.delete_example(e3).unwrap();
        let cmp = store.compare(x, y).unwrap();
        assert_eq!((cmp.a.id, cmp.b.id), (x, y));
        assert_eq!(cmp.examples.iter().map(|c| c.example).collect::<Vec<_>>(), [e1, e2, e3]);
        assert!(cmp.examples[0].b.is_none() && cmp.examples[0].a.is_some());
        assert_eq!(cmp.examples[1].b.as_ref().unwrap().output, Some(json!("2")));
        assert_eq!(
            (cmp.examples[1].input.clone(), cmp.examples[1].reference.clone()),
            (Some(json!("two")), Some(json!("2")))
        );
        assert!(cmp.examples[2].input.is_none(), "a deleted example keeps its results");
        assert!(store.compare(x, ExperimentId(999)).is_err());

        // The JSON the studio serves round-trips.
        let text = serde_json::to_string(&cmp).unwrap();
        assert_eq!(serde_json::from_str::<Comparison>(&text).unwrap(), cmp);

        assert!(store.delete_experiment(y).unwrap());
        assert_eq!(store.experiments("qa").unwrap().len(), 1);
    }
}
