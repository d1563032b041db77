//! The embedded SQLite trace store: one file holding every run, queried by the studio and by you.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use catena_core::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};

use crate::price::Cost;
use crate::recorder::RunSink;
use crate::run::{unix_ns, Run, RunId, TraceId};

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    parent_id TEXT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    duration_ns INTEGER NOT NULL,
    error INTEGER NOT NULL,
    provider TEXT,
    model TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cost_usd REAL,
    tags TEXT NOT NULL,
    run TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_trace ON runs (trace_id);
CREATE INDEX IF NOT EXISTS roots_by_start ON runs (start_ns) WHERE parent_id IS NULL;
";

/// Runs in one SQLite file (bundled SQLite: nothing to install). Write-ahead logging lets the studio read while
/// an application writes.
///
/// Every run is stored whole (as JSON) beside the columns that queries filter and sum on.
///
/// ```
/// # fn main() -> catena_core::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let store = catena_trace::TraceStore::open(dir.path().join("traces.db"))?;
/// assert!(store.traces(&catena_trace::TraceQuery::default())?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TraceStore {
    pub(crate) connection: Connection,
    path: PathBuf,
}

/// Which traces to list: every filter is optional, and they combine.
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    /// Root runs whose name contains this text (case-insensitive).
    pub name: Option<String>,
    /// Traces with a run of this model.
    pub model: Option<String>,
    /// `Some(true)`: traces with a failed run; `Some(false)`: traces without one.
    pub failed: Option<bool>,
    /// Traces that started at or after this time.
    pub since: Option<SystemTime>,
    /// Traces that started before this time.
    pub until: Option<SystemTime>,
    /// Traces whose root run has this tag.
    pub tag: Option<String>,
    /// At most this many (newest first); `None` for all.
    pub limit: Option<usize>,
}

/// One trace in a listing: its root run and totals over the whole tree.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSummary {
    /// The root run.
    pub root: Run,
    /// How many runs the trace holds.
    pub runs: u64,
    /// Prompt tokens of its model calls.
    pub input_tokens: u64,
    /// Generated tokens of its model calls.
    pub output_tokens: u64,
    /// What its model calls cost in US dollars, over the calls that have a price.
    pub cost_usd: f64,
    /// Model calls with usage but no price ([`Cost::Unpriced`]): when non-zero, `cost_usd` is a lower bound.
    pub unpriced_calls: u64,
    /// Whether any run in it failed.
    pub failed: bool,
    /// The models its runs used.
    pub models: Vec<String>,
}

/// Totals over the traces a [`TraceQuery`] selects.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Traces.
    pub traces: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Cost in US dollars of the priced calls.
    pub cost_usd: f64,
    /// Calls with usage but no price.
    pub unpriced_calls: u64,
}

fn store_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Store { store: format!("trace store {}", path.display()), message: e.to_string() }
}

fn ns(t: SystemTime) -> i64 {
    i64::try_from(unix_ns(t)).unwrap_or(i64::MAX)
}

impl TraceStore {
    /// Opens (creating when missing) the store in `path`.
    ///
    /// # Errors
    /// [`Error::Store`] when the file cannot be opened or holds a newer schema than this build knows.
    pub fn open(path: impl AsRef<Path>) -> Result<TraceStore> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let connection = Connection::open(&path).map_err(|e| store_error(&path, e))?;
        let err = |e: rusqlite::Error| store_error(&path, e);
        connection.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        connection.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        connection.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        let version: i64 = connection.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(store_error(
                &path,
                format!(
                    "the file has trace schema {version}, newer than this catena-trace ({SCHEMA_VERSION}): \
                     upgrade catena, or record into another file"
                ),
            ));
        }
        connection.execute_batch(SCHEMA).map_err(err)?;
        crate::datasets::create_schema(&connection).map_err(err)?;
        // A write: only when the file is new (every studio request opens the store, beside a writing recorder).
        if version != SCHEMA_VERSION {
            connection.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(err)?;
        }
        Ok(TraceStore { connection, path })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        store_error(&self.path, e)
    }

    /// Stores runs (replacing any with the same id), in one transaction.
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails.
    pub fn insert(&mut self, runs: &[Run]) -> Result<()> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| store_error(&path, e);
        let tx = self.connection.transaction().map_err(err)?;
        {
            let mut statement = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO runs (id, trace_id, parent_id, name, kind, start_ns, duration_ns, error,
                     provider, model, input_tokens, output_tokens, cost_usd, tags, run)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .map_err(err)?;
            for run in runs {
                let whole = serde_json::to_string(run).map_err(|e| store_error(&path, e))?;
                let tags = serde_json::to_string(&run.tags).map_err(|e| store_error(&path, e))?;
                let cost = match run.cost {
                    Cost::Usd(x) => Some(x),
                    Cost::Free => Some(0.0),
                    Cost::Unpriced | Cost::NoUsage => None,
                };
                statement
                    .execute(params![
                        run.id.to_string(),
                        run.trace_id.to_string(),
                        run.parent_id.map(|p| p.to_string()),
                        run.name,
                        run.kind.as_str(),
                        ns(run.start),
                        i64::try_from(run.duration.as_nanos()).unwrap_or(i64::MAX),
                        run.status.is_error(),
                        run.provider,
                        run.model,
                        run.usage.map(|u| i64::try_from(u.input).unwrap_or(i64::MAX)),
                        run.usage.map(|u| i64::try_from(u.output).unwrap_or(i64::MAX)),
                        cost,
                        tags,
                        whole,
                    ])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn decode(&self, json: &str) -> Result<Run> {
        serde_json::from_str(json).map_err(|e| self.err(format!("a stored run does not decode: {e}")))
    }

    /// Every run of a trace, in start order (a parent before its children).
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails or a row does not decode.
    pub fn trace(&self, trace: TraceId) -> Result<Vec<Run>> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT run FROM runs WHERE trace_id = ?1 ORDER BY start_ns, parent_id IS NOT NULL")
            .map_err(|e| self.err(e))?;
        let rows = statement
            .query_map([trace.to_string()], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        rows.iter().map(|json| self.decode(json)).collect()
    }

    /// One run.
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails or the row does not decode.
    pub fn run(&self, id: RunId) -> Result<Option<Run>> {
        let json: Option<String> = self
            .connection
            .query_row("SELECT run FROM runs WHERE id = ?1", [id.to_string()], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        json.map(|j| self.decode(&j)).transpose()
    }

    /// The `WHERE` clause over root runs `r` for a query, and its parameters.
    fn filter(query: &TraceQuery) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut clauses = vec!["r.parent_id IS NULL".to_string()];
        let mut values: Vec<Value> = Vec::new();
        if let Some(name) = &query.name {
            values.push(Value::Text(format!("%{}%", name.to_lowercase())));
            clauses.push(format!("lower(r.name) LIKE ?{}", values.len()));
        }
        if let Some(model) = &query.model {
            values.push(Value::Text(model.clone()));
            clauses.push(format!(
                "EXISTS (SELECT 1 FROM runs m WHERE m.trace_id = r.trace_id AND m.model = ?{})",
                values.len()
            ));
        }
        if let Some(failed) = query.failed {
            let exists = "EXISTS (SELECT 1 FROM runs e WHERE e.trace_id = r.trace_id AND e.error)";
            clauses.push(if failed { exists.to_string() } else { format!("NOT {exists}") });
        }
        if let Some(since) = query.since {
            values.push(Value::Integer(ns(since)));
            clauses.push(format!("r.start_ns >= ?{}", values.len()));
        }
        if let Some(until) = query.until {
            values.push(Value::Integer(ns(until)));
            clauses.push(format!("r.start_ns < ?{}", values.len()));
        }
        if let Some(tag) = &query.tag {
            values.push(Value::Text(tag.clone()));
            clauses.push(format!("EXISTS (SELECT 1 FROM json_each(r.tags) t WHERE t.value = ?{})", values.len()));
        }
        (clauses.join(" AND "), values)
    }

    /// The traces a query selects, newest first, with their totals.
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails or a row does not decode.
    pub fn traces(&self, query: &TraceQuery) -> Result<Vec<TraceSummary>> {
        let (filter, mut values) = Self::filter(query);
        let limit = match query.limit {
            Some(n) => {
                values.push(rusqlite::types::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)));
                format!("LIMIT ?{}", values.len())
            }
            None => String::new(),
        };
        let sql = format!(
            "SELECT r.run,
                (SELECT count(*) FROM runs a WHERE a.trace_id = r.trace_id),
                (SELECT coalesce(sum(a.input_tokens), 0) FROM runs a WHERE a.trace_id = r.trace_id AND a.kind = 'llm'),
                (SELECT coalesce(sum(a.output_tokens), 0) FROM runs a WHERE a.trace_id = r.trace_id AND a.kind = 'llm'),
                (SELECT coalesce(sum(a.cost_usd), 0.0) FROM runs a WHERE a.trace_id = r.trace_id AND a.kind IN ('llm', 'embedding')),
                (SELECT count(*) FROM runs a WHERE a.trace_id = r.trace_id AND a.input_tokens IS NOT NULL
                    AND a.cost_usd IS NULL AND a.kind IN ('llm', 'embedding')),
                EXISTS (SELECT 1 FROM runs a WHERE a.trace_id = r.trace_id AND a.error),
                (SELECT group_concat(model, char(31)) FROM (SELECT DISTINCT a.model FROM runs a
                    WHERE a.trace_id = r.trace_id AND a.model IS NOT NULL ORDER BY a.model))
             FROM runs r WHERE {filter} ORDER BY r.start_ns DESC {limit}"
        );
        let mut statement = self.connection.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(values), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, f64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, bool>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(json, runs, input, output, cost, unpriced, failed, models)| {
                Ok(TraceSummary {
                    root: self.decode(&json)?,
                    runs: runs.max(0) as u64,
                    input_tokens: input.max(0) as u64,
                    output_tokens: output.max(0) as u64,
                    cost_usd: cost,
                    unpriced_calls: unpriced.max(0) as u64,
                    failed,
                    models: models.map(|m| m.split('\u{1f}').map(String::from).collect()).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Totals over the traces a query selects (its `limit` ignored).
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails.
    pub fn totals(&self, query: &TraceQuery) -> Result<Totals> {
        let (filter, values) = Self::filter(query);
        let sql = format!(
            "WITH chosen AS (SELECT r.trace_id FROM runs r WHERE {filter})
             SELECT (SELECT count(*) FROM chosen),
                coalesce(sum(CASE WHEN a.kind = 'llm' THEN a.input_tokens END), 0),
                coalesce(sum(CASE WHEN a.kind = 'llm' THEN a.output_tokens END), 0),
                coalesce(sum(CASE WHEN a.kind IN ('llm', 'embedding') THEN a.cost_usd END), 0.0),
                count(CASE WHEN a.kind IN ('llm', 'embedding') AND a.input_tokens IS NOT NULL
                    AND a.cost_usd IS NULL THEN 1 END)
             FROM runs a WHERE a.trace_id IN (SELECT trace_id FROM chosen)"
        );
        self.connection
            .query_row(&sql, rusqlite::params_from_iter(values), |r| {
                Ok(Totals {
                    traces: r.get::<_, i64>(0)?.max(0) as u64,
                    input_tokens: r.get::<_, i64>(1)?.max(0) as u64,
                    output_tokens: r.get::<_, i64>(2)?.max(0) as u64,
                    cost_usd: r.get(3)?,
                    unpriced_calls: r.get::<_, i64>(4)?.max(0) as u64,
                })
            })
            .map_err(|e| self.err(e))
    }

    /// Deletes traces whose root started before `before`; returns how many runs went.
    ///
    /// # Errors
    /// [`Error::Store`] when SQLite fails.
    pub fn delete_before(&mut self, before: SystemTime) -> Result<u64> {
        let n = self
            .connection
            .execute(
                "DELETE FROM runs WHERE trace_id IN (SELECT trace_id FROM runs WHERE parent_id IS NULL AND start_ns < ?1)",
                [ns(before)],
            )
            .map_err(|e| self.err(e))?;
        Ok(n as u64)
    }
}

impl RunSink for TraceStore {
    fn write(&mut self, runs: &[Run]) -> Result<()> {
        self.insert(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{RunKind, RunStatus, TokenUsage};
    use std::time::UNIX_EPOCH;

    fn run(trace: u128, id: u64, parent: Option<u64>, name: &str, at_s: u64) -> Run {
        Run::new(
            TraceId(trace),
            RunId(id),
            parent.map(RunId),
            name,
            RunKind::Span,
            UNIX_EPOCH + Duration::from_secs(at_s),
            Duration::from_millis(5),
        )
    }

    fn call(trace: u128, id: u64, parent: u64, model: &str, cost: Cost, at_s: u64) -> Run {
        Run {
            kind: RunKind::Llm,
            model: Some(model.into()),
            usage: Some(TokenUsage { input: 100, output: 10, cached_input: None }),
            cost,
            ..run(trace, id, Some(parent), "chat", at_s)
        }
    }

    #[test]
    fn filters_and_totals() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TraceStore::open(dir.path().join("t.db")).unwrap();
        let mut a = run(1, 1, None, "Answer question", 100);
        a.tags = vec!["prod".into()];
        let mut failed = call(2, 21, 20, "claude-sonnet-4", Cost::Unpriced, 201);
        failed.status = RunStatus::Error { kind: Some("429".into()), message: Some("rate limited".into()) };
        store
            .insert(&[
                call(1, 11, 1, "gpt-4o", Cost::Usd(0.5), 101),
                call(1, 12, 1, "gpt-4o-mini", Cost::Usd(0.25), 102),
                a,
                failed,
                run(2, 20, None, "summarise", 200),
            ])
            .unwrap();
        let all = store.traces(&TraceQuery::default()).unwrap();
        assert_eq!(all.iter().map(|t| t.root.name.as_str()).collect::<Vec<_>>(), ["summarise", "Answer question"]);
        let first = &all[1];
        assert_eq!((first.runs, first.input_tokens, first.output_tokens), (3, 200, 20));
        assert!((first.cost_usd - 0.75).abs() < 1e-9 && first.unpriced_calls == 0 && !first.failed);
        assert_eq!(first.models, ["gpt-4o", "gpt-4o-mini"]);
        assert!(all[0].failed && all[0].unpriced_calls == 1);

        let q = |f: fn(&mut TraceQuery)| {
            let mut query = TraceQuery::default();
            f(&mut query);
            store.traces(&query).unwrap().into_iter().map(|t| t.root.name).collect::<Vec<_>>()
        };
        assert_eq!(q(|q| q.name = Some("ANSWER".into())), ["Answer question"]);
        assert_eq!(q(|q| q.model = Some("claude-sonnet-4".into())), ["summarise"]);
        assert_eq!(q(|q| q.failed = Some(false)), ["Answer question"]);
        assert_eq!(q(|q| q.tag = Some("prod".into())), ["Answer question"]);
        assert_eq!(q(|q| q.since = Some(UNIX_EPOCH + Duration::from_secs(150))), ["summarise"]);
        assert_eq!(q(|q| q.until = Some(UNIX_EPOCH + Duration::from_secs(150))), ["Answer question"]);
        assert_eq!(q(|q| q.limit = Some(1)), ["summarise"]);

        let totals = store.totals(&TraceQuery::default()).unwrap();
        assert_eq!((totals.traces, totals.input_tokens, totals.output_tokens, totals.unpriced_calls), (2, 300, 30, 1));
        assert!((totals.cost_usd - 0.75).abs() < 1e-9);

        // Runs come back whole, parents first.
        let tree = store.trace(TraceId(1)).unwrap();
        assert_eq!(tree.iter().map(|r| r.id.0).collect::<Vec<_>>(), [1, 11, 12]);
        assert_eq!(
            store.run(RunId(21)).unwrap().unwrap().status,
            RunStatus::Error { kind: Some("429".into()), message: Some("rate limited".into()) }
        );
        assert_eq!(store.delete_before(UNIX_EPOCH + Duration::from_secs(150)).unwrap(), 3);
        assert_eq!(store.traces(&TraceQuery::default()).unwrap().len(), 1);
    }

    #[test]
    fn a_newer_schema_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        Connection::open(&file).unwrap().pragma_update(None, "user_version", 99).unwrap();
        let err = TraceStore::open(&file).unwrap_err().to_string();
        assert!(err.contains("schema 99") && err.contains("upgrade catena"), "{err}");
    }
}
