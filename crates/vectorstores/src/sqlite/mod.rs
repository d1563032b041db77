//! [`SqliteStore`]: a persistent vector store in one SQLite file, with metadata filters in SQL and BM25
//! keyword search through FTS5.

mod filter;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, PoisonError, RwLock, Weak};

use catena_core::{async_trait, Document, EmbeddedDocument, Embedder, Error, Filter, Metadata, Result, ScoredDocument};
use catena_core::{Retriever, SearchRequest, VectorStore};
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension};

use crate::kernel::{self, Kernel};
use crate::memory::prepare_vector;
use crate::quant::{self, I8Kernel, Int8Rows};
use crate::topk::TopK;
use crate::Metric;

/// The schema this version writes; a file with another is refused with a message instead of misread.
pub const SQLITE_SCHEMA_VERSION: u32 = 1;

/// What a committed write survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A write acknowledged by `upsert`/`delete` survives the process being killed at any point (`kill -9`, a
    /// panic, an OOM kill): SQLite's write-ahead log with `synchronous=NORMAL`. A power cut or kernel crash may
    /// lose the writes since the last [`VectorStore::flush`] (a WAL checkpoint), never corrupt the file.
    ProcessCrash,
    /// Every acknowledged write also survives a power cut (`synchronous=FULL`: an fsync per commit, slower).
    PowerLoss,
}

/// How [`SqliteStore`] holds the vectors it scans in RAM. The file always keeps the exact `f32` vectors, so the
/// same file can be opened with either precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanPrecision {
    /// Four bytes per dimension: every score is exact, and a search reads `4 · dim` bytes per document (1.5 GB
    /// for a million 384-dimensional vectors).
    F32,
    /// One byte per dimension plus a scale per vector (int8 scalar quantisation): RAM and memory traffic are a
    /// quarter of [`ScanPrecision::F32`]'s. The scan ranks by approximate scores, keeps the best
    /// `k · oversample` candidates, and rescores those from the exact vectors in the file, so reported scores
    /// and their order are exact; a true top-`k` document is only missed when quantisation pushes it out of the
    /// candidates. On a million random 384-dimensional vectors, `oversample: 10` measured recall@10 of 1.0
    /// against the exact scan (see `BENCHMARKS.md`). Vectors wider than 133,000 dimensions are refused.
    Int8 {
        /// Candidates kept per requested result for exact rescoring (at least 1).
        oversample: usize,
    },
}

/// Settings of [`SqliteStore::open_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// What a committed write survives.
    pub durability: Durability,
    /// The embedding model the vectors come from. Recorded in a new file; opening a file recorded with another
    /// model fails (its vectors would be meaningless to the new model's queries). `None` neither records nor checks.
    pub embedder_model: Option<String>,
    /// How the vectors are held in RAM for search.
    pub precision: ScanPrecision,
    /// How many threads one search may use (scans under a few megabytes always use one).
    pub search_threads: NonZeroUsize,
}

impl SqliteOptions {
    /// `durability`, no embedder model recorded, [`ScanPrecision::F32`] (exact), and as many search threads as
    /// the machine has ([`std::thread::available_parallelism`]).
    pub fn new(durability: Durability) -> Self {
        SqliteOptions {
            durability,
            embedder_model: None,
            precision: ScanPrecision::F32,
            search_threads: crate::scan::available_threads(),
        }
    }

    /// Records (and, on reopen, checks) the embedding model.
    pub fn with_embedder_model(mut self, model: impl Into<String>) -> Self {
        self.embedder_model = Some(model.into());
        self
    }

    /// Holds the vectors in RAM at `precision`.
    pub fn with_precision(mut self, precision: ScanPrecision) -> Self {
        self.precision = precision;
        self
    }

    /// Lets one search use up to `threads` threads (at least 1).
    pub fn with_search_threads(mut self, threads: usize) -> Self {
        self.search_threads = NonZeroUsize::new(threads).unwrap_or(NonZeroUsize::MIN);
        self
    }
}

/// A persistent vector store in one SQLite file (bundled SQLite; nothing to install).
///
/// Documents, metadata and vectors live in one table of a WAL-mode database: every `upsert`, `delete` and
/// `delete_where` is one transaction, durable when it returns (see [`Durability`]). Vector search scans a copy of
/// the vectors held in RAM, split across [`SqliteOptions::search_threads`] threads for large collections: exact
/// with [`ScanPrecision::F32`] (4 bytes per dimension per document, the same SIMD kernel as
/// [`crate::InMemoryStore`]), or with [`ScanPrecision::Int8`] a quarter of the memory and traffic, its best
/// candidates rescored exactly from the file (a million 384-dimensional vectors: about 400 MB of RAM and 10 ms a
/// query on two cores; see `BENCHMARKS.md`). Metadata filters are translated to SQL over the JSON metadata (see
/// [`Filter`]) and select the rows to score. [`SqliteStore::keyword_search`] ranks documents by BM25 with SQLite's
/// FTS5 index, kept in the same file and the same transactions.
///
/// All SQLite work runs on the store's own thread (one per opened store, which owns the connection), never on an
/// async worker thread; calls from any executor, or from several notebook cells, queue there. The handle is cheap to clone
/// and every clone shares the one connection.
///
/// ```
/// use catena_core::{Document, EmbeddedDocument, Filter, Metadata, SearchRequest, VectorStore};
/// use catena_vectorstores::{Metric, SqliteStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let store = SqliteStore::open(dir.path().join("index.sqlite"), 2, Metric::Cosine).await?;
/// let lang = |l: &str| serde_json::json!({ "lang": l }).as_object().cloned().unwrap_or_default();
/// store
///     .upsert(vec![
///         EmbeddedDocument { document: Document::with_id("a", "the borrow checker", lang("en")), vector: vec![1.0, 0.0] },
///         EmbeddedDocument { document: Document::with_id("b", "le vérificateur d'emprunts", lang("fr")), vector: vec![0.9, 0.1] },
///     ])
///     .await?;
/// let hits = store.search(SearchRequest::new(vec![1.0, 0.0], 5).with_filter(Filter::eq("lang", "fr"))).await?;
/// assert_eq!(hits[0].document.id, "b");
/// let keyword = store.keyword_search("borrow", 5, None).await?;
/// assert_eq!(keyword[0].document.id, "a");
///
/// // Reopening finds everything; the dimension and metric come from the file.
/// drop(store);
/// let store = SqliteStore::open(dir.path().join("index.sqlite"), 2, Metric::Cosine).await?;
/// assert_eq!(store.len().await?, 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    dim: usize,
    metric: Metric,
    embedder_model: Option<String>,
    kernel: Kernel,
    i8_kernel: I8Kernel,
    precision: ScanPrecision,
    search_threads: NonZeroUsize,
    index: RwLock<VectorIndex>,
    /// The store's own thread, which owns the connection and does all SQLite work (see [`worker`]).
    jobs: mpsc::Sender<Job>,
}

/// One call for the store's thread.
enum Op {
    Upsert(Vec<EmbeddedDocument>),
    Delete(Vec<String>),
    DeleteWhere(Filter),
    Get(Vec<String>),
    Search(SearchRequest),
    Keyword { fts_query: String, k: usize, filter: Option<Filter> },
    DocumentsWhere(Filter),
    Checkpoint,
}

/// The answer to an [`Op`].
enum Reply {
    Unit(Result<()>),
    Count(Result<usize>),
    Documents(Result<Vec<Document>>),
    Scored(Result<Vec<ScoredDocument>>),
}

struct Job {
    op: Op,
    reply: tokio::sync::oneshot::Sender<Reply>,
}

/// The store's thread: owns the connection and runs every SQLite call, so SQLite is only ever entered from the
/// code that opened it. That matters where one process holds several copies of this crate: evcxr (the Jupyter
/// Rust kernel) links each notebook cell against its own copy, and a connection opened by one copy of the bundled
/// SQLite crashes when another copy uses it; messages between the copies are plain data. The thread ends, closing
/// the connection, when the last handle to the store is dropped.
fn worker(mut conn: Connection, shared: Weak<Shared>, jobs: mpsc::Receiver<Job>) {
    while let Ok(Job { op, reply }) = jobs.recv() {
        let Some(shared) = shared.upgrade() else { break };
        let store = SqliteStore { shared };
        let answer = match op {
            Op::Upsert(documents) => Reply::Unit(store.upsert_now(&mut conn, documents)),
            Op::Delete(ids) => Reply::Count(store.delete_now(&mut conn, &ids)),
            Op::DeleteWhere(filter) => Reply::Count(store.delete_where_now(&mut conn, &filter)),
            Op::Get(ids) => Reply::Documents(store.get_now(&conn, &ids)),
            Op::Search(request) => Reply::Scored(store.search_now(&conn, request)),
            Op::Keyword { fts_query, k, filter } => {
                Reply::Scored(store.keyword_search_now(&conn, &fts_query, k, filter.as_ref()))
            }
            Op::DocumentsWhere(filter) => Reply::Documents(store.documents_where_now(&conn, &filter)),
            Op::Checkpoint => Reply::Unit(
                conn.query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(()))
                    .map_err(|e| store_err(&store.shared.path, "checkpoint failed", e)),
            ),
        };
        // The caller may have stopped waiting (its future dropped): nothing to do then.
        let _ = reply.send(answer);
    }
}

/// The vectors in RAM, at the store's [`ScanPrecision`].
enum Rows {
    F32(Vec<f32>),
    Int8(Int8Rows),
}

/// The vectors in RAM. Invariants: `rows` holds `rowids.len()` rows; `slot_of[rowids[i]] == i`.
struct VectorIndex {
    rows: Rows,
    rowids: Vec<i64>,
    slot_of: HashMap<i64, usize>,
}

impl VectorIndex {
    fn new(precision: ScanPrecision) -> Self {
        let rows = match precision {
            ScanPrecision::F32 => Rows::F32(Vec::new()),
            ScanPrecision::Int8 { .. } => Rows::Int8(Int8Rows::default()),
        };
        VectorIndex { rows, rowids: Vec::new(), slot_of: HashMap::new() }
    }

    fn put(&mut self, dim: usize, rowid: i64, vector: &[f32]) {
        match (self.slot_of.get(&rowid), &mut self.rows) {
            (Some(&slot), Rows::F32(v)) => v[slot * dim..(slot + 1) * dim].copy_from_slice(vector),
            (Some(&slot), Rows::Int8(r)) => r.set(dim, slot, vector),
            (None, rows) => {
                self.slot_of.insert(rowid, self.rowids.len());
                self.rowids.push(rowid);
                match rows {
                    Rows::F32(v) => v.extend_from_slice(vector),
                    Rows::Int8(r) => r.push(vector),
                }
            }
        }
    }

    fn remove(&mut self, dim: usize, rowid: i64) {
        let Some(slot) = self.slot_of.remove(&rowid) else { return };
        let last = self.rowids.len() - 1;
        match &mut self.rows {
            Rows::F32(v) => {
                v.copy_within(last * dim..(last + 1) * dim, slot * dim);
                v.truncate(last * dim);
            }
            Rows::Int8(r) => r.swap_remove(dim, slot),
        }
        self.rowids.swap_remove(slot);
        if slot != last {
            self.slot_of.insert(self.rowids[slot], slot);
        }
    }
}

fn store_err(path: &Path, what: &str, e: impl fmt::Display) -> Error {
    Error::Store { store: format!("sqlite {}", path.display()), message: format!("{what}: {e}") }
}

fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file (and its parent folders) if needed, for `dim`-dimensional
    /// vectors compared with `metric`, with [`Durability::ProcessCrash`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `dim` is 0, or when the file holds a store of another dimension, metric or
    /// schema version; [`Error::Store`] when the file cannot be created or is not a catena SQLite store.
    pub async fn open(path: impl Into<PathBuf>, dim: usize, metric: Metric) -> Result<Self> {
        Self::open_with(path, dim, metric, SqliteOptions::new(Durability::ProcessCrash)).await
    }

    /// Opens the store at `path` sized for `embedder`, recording its model name (a file built with another model
    /// is refused).
    pub async fn open_for_embedder<E: Embedder + ?Sized>(
        path: impl Into<PathBuf>,
        embedder: &E,
        metric: Metric,
    ) -> Result<Self> {
        let options = SqliteOptions::new(Durability::ProcessCrash).with_embedder_model(embedder.model_name());
        Self::open_with(path, embedder.dimensions(), metric, options).await
    }

    /// Opens the store at `path` with explicit [`SqliteOptions`].
    pub async fn open_with(
        path: impl Into<PathBuf>,
        dim: usize,
        metric: Metric,
        options: SqliteOptions,
    ) -> Result<Self> {
        let path = path.into();
        if dim == 0 || u32::try_from(dim).is_err() {
            return Err(Error::InvalidInput(format!(
                "vector dimension must be between 1 and {}, got {dim}; pass the embedder's dimensions()",
                u32::MAX
            )));
        }
        if let ScanPrecision::Int8 { oversample } = options.precision {
            if oversample == 0 {
                return Err(Error::InvalidInput(
                    "ScanPrecision::Int8 needs an oversample of at least 1 (10 is a good start)".into(),
                ));
            }
            if dim > quant::MAX_INT8_DIM {
                return Err(Error::InvalidInput(format!(
                    "ScanPrecision::Int8 supports up to {} dimensions, got {dim}; use ScanPrecision::F32",
                    quant::MAX_INT8_DIM
                )));
            }
        }
        crate::blocking::off_runtime("sqlite", move || Self::open_now(path, dim, metric, options)).await
    }

    fn open_now(path: PathBuf, dim: usize, metric: Metric, options: SqliteOptions) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let err = |what: &str| {
            let path = path.clone();
            let what = what.to_string();
            move |e: rusqlite::Error| store_err(&path, &what, e)
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(err("cannot open the database"))?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(err("cannot set the busy timeout"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err("cannot switch to write-ahead logging (is it a SQLite database?)"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(store_err(&path, "cannot switch to write-ahead logging", format!("journal mode is {mode}")));
        }
        let synchronous = match options.durability {
            Durability::ProcessCrash => "NORMAL",
            Durability::PowerLoss => "FULL",
        };
        conn.execute_batch(&format!("PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"))
            .map_err(err("cannot set the durability"))?;
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS catena_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS documents (
                 rowid INTEGER PRIMARY KEY,
                 id TEXT NOT NULL UNIQUE,
                 content TEXT NOT NULL,
                 metadata TEXT NOT NULL,
                 vector BLOB NOT NULL
             );
             CREATE VIRTUAL TABLE IF NOT EXISTS documents_fts USING fts5(
                 content, content = 'documents', content_rowid = 'rowid',
                 tokenize = 'unicode61 remove_diacritics 2 tokenchars ''_'''
             );
             CREATE TRIGGER IF NOT EXISTS documents_ai AFTER INSERT ON documents BEGIN
                 INSERT INTO documents_fts (rowid, content) VALUES (new.rowid, new.content);
             END;
             CREATE TRIGGER IF NOT EXISTS documents_ad AFTER DELETE ON documents BEGIN
                 INSERT INTO documents_fts (documents_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
             END;
             CREATE TRIGGER IF NOT EXISTS documents_au AFTER UPDATE ON documents BEGIN
                 INSERT INTO documents_fts (documents_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
                 INSERT INTO documents_fts (rowid, content) VALUES (new.rowid, new.content);
             END;",
        )
        .map_err(err("cannot create the schema (is it a catena SQLite store?)"))?;
        let settings = Self::check_settings(&conn, &path, dim, metric, options.embedder_model.as_deref());
        let settings = match settings {
            Ok(model) => conn.execute_batch("COMMIT").map(|()| model).map_err(err("cannot commit the schema")),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        };
        let embedder_model = settings?;

        let mut index = VectorIndex::new(options.precision);
        {
            let mut rows = conn.prepare("SELECT rowid, id, vector FROM documents").map_err(err("cannot read"))?;
            let mut rows = rows.query([]).map_err(err("cannot read the vectors"))?;
            while let Some(row) = rows.next().map_err(err("cannot read the vectors"))? {
                let rowid: i64 = row.get(0).map_err(err("cannot read a row id"))?;
                let bytes = row
                    .get_ref(2)
                    .map_err(err("cannot read a vector"))?
                    .as_blob()
                    .map_err(|e| store_err(&path, "a vector is not a blob", e))?;
                if bytes.len() != dim * 4 {
                    let id: String = row.get(1).unwrap_or_default();
                    return Err(store_err(
                        &path,
                        "corrupt vector",
                        format!("document {id:?} has {} bytes, expected {} ({dim} dimensions)", bytes.len(), dim * 4),
                    ));
                }
                let vector: Vec<f32> =
                    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                index.put(dim, rowid, &vector);
            }
        }
        tracing::debug!(path = %path.display(), documents = index.rowids.len(), dim, %metric, "opened SQLite store");
        let (jobs, queue) = mpsc::channel();
        let shared = Arc::new(Shared {
            path,
            dim,
            metric,
            embedder_model,
            kernel: Kernel::detect(),
            i8_kernel: I8Kernel::detect(),
            precision: options.precision,
            search_threads: options.search_threads,
            index: RwLock::new(index),
            jobs,
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("catena-sqlite".into())
            .spawn(move || worker(conn, weak, queue))
            .map_err(|e| store_err(&shared.path, "cannot start the store's thread", e))?;
        Ok(SqliteStore { shared })
    }

    /// Records the settings in a new file, or checks them against an existing one. Returns the embedder model.
    fn check_settings(
        conn: &Connection,
        path: &Path,
        dim: usize,
        metric: Metric,
        model: Option<&str>,
    ) -> Result<Option<String>> {
        let err = |e: rusqlite::Error| store_err(path, "cannot read the store's settings", e);
        let get = |key: &str| -> Result<Option<String>> {
            conn.query_row("SELECT value FROM catena_meta WHERE key = ?", [key], |r| r.get(0)).optional().map_err(err)
        };
        let put = |key: &str, value: &str| -> Result<()> {
            conn.execute("INSERT INTO catena_meta (key, value) VALUES (?, ?)", [key, value]).map(|_| ()).map_err(err)
        };
        let Some(version) = get("schema_version")? else {
            put("schema_version", &SQLITE_SCHEMA_VERSION.to_string())?;
            put("dimensions", &dim.to_string())?;
            put("metric", metric.as_str())?;
            if let Some(model) = model {
                put("embedder_model", model)?;
            }
            return Ok(model.map(str::to_string));
        };
        if version != SQLITE_SCHEMA_VERSION.to_string() {
            return Err(Error::InvalidInput(format!(
                "{} is a catena SQLite store of schema version {version}; this catena reads version \
                 {SQLITE_SCHEMA_VERSION}. Rebuild the index (delete the file and index again).",
                path.display()
            )));
        }
        let stored_dim = get("dimensions")?.unwrap_or_default();
        let stored_metric = get("metric")?.unwrap_or_default();
        if stored_dim != dim.to_string() || stored_metric != metric.as_str() {
            return Err(Error::InvalidInput(format!(
                "{} holds {stored_dim}-dimensional vectors compared with {stored_metric}, not {dim}-dimensional \
                 with {metric}; open it with those settings, or index into a new file",
                path.display()
            )));
        }
        let stored_model = get("embedder_model")?;
        match (model, stored_model.as_deref()) {
            (Some(wanted), Some(stored)) if wanted != stored => Err(Error::InvalidInput(format!(
                "{} was built with the embedding model {stored:?}, not {wanted:?}; its vectors do not match this \
                 model's queries. Index into a new file, or use {stored:?}.",
                path.display()
            ))),
            (Some(wanted), None) if !get_has_documents(conn).map_err(err)? => {
                put("embedder_model", wanted)?;
                Ok(Some(wanted.to_string()))
            }
            (_, stored) => Ok(stored.map(str::to_string)),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
    /// The vector dimension.
    pub fn dim(&self) -> usize {
        self.shared.dim
    }
    /// The similarity metric.
    pub fn metric(&self) -> Metric {
        self.shared.metric
    }
    /// The embedding model recorded in the file, if any.
    pub fn embedder_model(&self) -> Option<&str> {
        self.shared.embedder_model.as_deref()
    }

    /// Ranks documents by BM25 over their text (SQLite FTS5, `unicode61` tokenizer, case and diacritics folded,
    /// `_` kept inside words so that identifiers such as `or_insert` stay one word), best first; the score is the negated FTS5 `bm25()` value, so higher is better like every other score. The query
    /// is plain text: its words are matched with OR, and FTS5 operators in it are treated as words. An empty
    /// query (no words) returns nothing.
    pub async fn keyword_search(&self, query: &str, k: usize, filter: Option<&Filter>) -> Result<Vec<ScoredDocument>> {
        let words: Vec<String> = query
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(|w| format!("\"{w}\""))
            .collect();
        if words.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let fts_query = words.join(" OR ");
        match self.call(Op::Keyword { fts_query, k, filter: filter.cloned() }).await? {
            Reply::Scored(r) => r,
            _ => Err(self.mismatch()),
        }
    }

    fn keyword_search_now(
        &self,
        conn: &Connection,
        fts_query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<ScoredDocument>> {
        let path = &self.shared.path;
        let err = |e: rusqlite::Error| store_err(path, "keyword search failed", e);
        let mut sql = String::from(
            "SELECT d.id, d.content, d.metadata, bm25(documents_fts) AS rank FROM documents_fts \
             JOIN documents d ON d.rowid = documents_fts.rowid WHERE documents_fts MATCH ?",
        );
        let mut params: Vec<rusqlite::types::Value> = vec![fts_query.to_string().into()];
        let exact = match filter {
            None => true,
            Some(f) => match filter::to_sql(f, "d.metadata") {
                Some(cond) => {
                    sql.push_str(" AND ");
                    sql.push_str(&cond.sql);
                    params.extend(cond.params);
                    true
                }
                None => false,
            },
        };
        sql.push_str(" ORDER BY rank");
        if exact {
            sql.push_str(&format!(" LIMIT {}", i64::try_from(k).unwrap_or(i64::MAX)));
        }
        let mut stmt = conn.prepare(&sql).map_err(err)?;
        let mut rows = stmt.query(params_from_iter(params)).map_err(err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            let document =
                self.document_from(row.get(0).map_err(err)?, row.get(1).map_err(err)?, row.get(2).map_err(err)?)?;
            if !exact && !filter.is_some_and(|f| f.matches(&document.metadata)) {
                continue;
            }
            let rank: f64 = row.get(3).map_err(err)?;
            out.push(ScoredDocument { document, score: -rank as f32, vector: None });
            if out.len() == k {
                break;
            }
        }
        Ok(out)
    }

    /// A [`Retriever`] ranking by BM25 ([`SqliteStore::keyword_search`]) with `k` results: the keyword half of
    /// hybrid retrieval (fuse it with a `VectorRetriever` in a `catena_core::EnsembleRetriever`).
    pub fn keyword_retriever(&self, k: usize) -> SqliteKeywordRetriever {
        SqliteKeywordRetriever { store: self.clone(), k, filter: None }
    }

    /// Every document matching `filter`, in insertion order (`Filter::And(vec![])` matches all). Reads the
    /// whole result into memory.
    pub async fn documents_where(&self, filter: &Filter) -> Result<Vec<Document>> {
        match self.call(Op::DocumentsWhere(filter.clone())).await? {
            Reply::Documents(r) => r,
            _ => Err(self.mismatch()),
        }
    }

    fn documents_where_now(&self, conn: &Connection, filter: &Filter) -> Result<Vec<Document>> {
        {
            let this = self;
            let path = &this.shared.path;
            let err = |e: rusqlite::Error| store_err(path, "listing documents failed", e);
            let (sql, params, exact) = match filter::to_sql(filter, "metadata") {
                Some(cond) => (
                    format!("SELECT id, content, metadata FROM documents WHERE {} ORDER BY rowid", cond.sql),
                    cond.params,
                    true,
                ),
                None => ("SELECT id, content, metadata FROM documents ORDER BY rowid".to_string(), Vec::new(), false),
            };
            let mut stmt = conn.prepare(&sql).map_err(err)?;
            let mut rows = stmt.query(params_from_iter(params)).map_err(err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(err)? {
                let doc =
                    this.document_from(row.get(0).map_err(err)?, row.get(1).map_err(err)?, row.get(2).map_err(err)?)?;
                if exact || filter.matches(&doc.metadata) {
                    out.push(doc);
                }
            }
            Ok(out)
        }
    }

    /// Sends `op` to the store's thread and waits for its answer.
    async fn call(&self, op: Op) -> Result<Reply> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.shared
            .jobs
            .send(Job { op, reply })
            .map_err(|_| store_err(&self.shared.path, "the store's thread", "stopped"))?;
        answer.await.map_err(|_| store_err(&self.shared.path, "the store's thread", "stopped without answering"))
    }

    fn mismatch(&self) -> Error {
        store_err(&self.shared.path, "internal error", "the store's thread answered another call")
    }

    fn document_from(&self, id: String, content: String, metadata: String) -> Result<Document> {
        let metadata: Metadata = serde_json::from_str(&metadata)
            .map_err(|e| store_err(&self.shared.path, &format!("corrupt metadata of document {id:?}"), e))?;
        Ok(Document { id, content, metadata })
    }

    /// The row ids of the documents matching `filter`.
    fn matching_rowids(&self, conn: &Connection, filter: &Filter) -> Result<HashSet<i64>> {
        let path = &self.shared.path;
        let err = |e: rusqlite::Error| store_err(path, "filtering failed", e);
        let mut out = HashSet::new();
        match filter::to_sql(filter, "metadata") {
            Some(cond) => {
                let mut stmt = conn.prepare(&format!("SELECT rowid FROM documents WHERE {}", cond.sql)).map_err(err)?;
                let mut rows = stmt.query(params_from_iter(cond.params)).map_err(err)?;
                while let Some(row) = rows.next().map_err(err)? {
                    out.insert(row.get(0).map_err(err)?);
                }
            }
            None => {
                let mut stmt = conn.prepare("SELECT rowid, id, metadata FROM documents").map_err(err)?;
                let mut rows = stmt.query([]).map_err(err)?;
                while let Some(row) = rows.next().map_err(err)? {
                    let id: String = row.get(1).map_err(err)?;
                    let doc = self.document_from(id, String::new(), row.get(2).map_err(err)?)?;
                    if filter.matches(&doc.metadata) {
                        out.insert(row.get(0).map_err(err)?);
                    }
                }
            }
        }
        Ok(out)
    }

    fn upsert_now(&self, conn: &mut Connection, mut documents: Vec<EmbeddedDocument>) -> Result<()> {
        let (dim, metric) = (self.shared.dim, self.shared.metric);
        for d in &mut documents {
            let id = &d.document.id;
            prepare_vector(
                dim,
                metric,
                self.embedder_model(),
                &|| format!("the vector of document {id:?}"),
                &mut d.vector,
            )?;
        }
        let path = &self.shared.path;
        let err = |e: rusqlite::Error| store_err(path, "upsert failed", e);
        let tx = conn.transaction().map_err(err)?;
        let mut written = Vec::with_capacity(documents.len());
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO documents (id, content, metadata, vector) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (id) DO UPDATE SET content = excluded.content, metadata = excluded.metadata, \
                     vector = excluded.vector RETURNING rowid",
                )
                .map_err(err)?;
            for d in &documents {
                let metadata = serde_json::to_string(&d.document.metadata)?;
                let rowid: i64 = stmt
                    .query_row(params![d.document.id, d.document.content, metadata, vector_bytes(&d.vector)], |r| {
                        r.get(0)
                    })
                    .map_err(err)?;
                written.push(rowid);
            }
        }
        tx.commit().map_err(err)?;
        // On the store's one thread, so the RAM index changes in commit order.
        let mut index = self.shared.index.write().unwrap_or_else(PoisonError::into_inner);
        for (rowid, d) in written.into_iter().zip(&documents) {
            index.put(dim, rowid, &d.vector);
        }
        Ok(())
    }

    /// Deletes the rows `rowids` (already selected inside `tx`), in the database and then in RAM.
    fn delete_rowids(
        &self,
        conn: &mut Connection,
        select: impl FnOnce(&Connection) -> Result<Vec<i64>>,
    ) -> Result<usize> {
        let path = &self.shared.path;
        let err = |e: rusqlite::Error| store_err(path, "delete failed", e);
        let tx = conn.transaction().map_err(err)?;
        let rowids = select(&tx)?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM documents WHERE rowid = ?").map_err(err)?;
            for rowid in &rowids {
                stmt.execute([rowid]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        let mut index = self.shared.index.write().unwrap_or_else(PoisonError::into_inner);
        for rowid in &rowids {
            index.remove(self.shared.dim, *rowid);
        }
        Ok(rowids.len())
    }

    fn delete_now(&self, conn: &mut Connection, ids: &[String]) -> Result<usize> {
        let path = &self.shared.path;
        let err = |e: rusqlite::Error| store_err(path, "delete failed", e);
        self.delete_rowids(conn, |tx| {
            let mut stmt = tx.prepare_cached("SELECT rowid FROM documents WHERE id = ?").map_err(err)?;
            let mut rowids = Vec::new();
            let unique: HashSet<&String> = ids.iter().collect();
            for id in unique {
                if let Some(rowid) = stmt.query_row([id], |r| r.get(0)).optional().map_err(err)? {
                    rowids.push(rowid);
                }
            }
            Ok(rowids)
        })
    }

    fn delete_where_now(&self, conn: &mut Connection, filter: &Filter) -> Result<usize> {
        self.delete_rowids(conn, |tx| Ok(self.matching_rowids(tx, filter)?.into_iter().collect()))
    }

    fn get_now(&self, conn: &Connection, ids: &[String]) -> Result<Vec<Document>> {
        let path = &self.shared.path;
        let err = |e: rusqlite::Error| store_err(path, "get failed", e);
        let mut stmt = conn.prepare_cached("SELECT content, metadata FROM documents WHERE id = ?").map_err(err)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let row: Option<(String, String)> =
                stmt.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional().map_err(err)?;
            if let Some((content, metadata)) = row {
                out.push(self.document_from(id.clone(), content, metadata)?);
            }
        }
        Ok(out)
    }

    fn search_now(&self, conn: &Connection, request: SearchRequest) -> Result<Vec<ScoredDocument>> {
        let SearchRequest { mut vector, k, filter, min_score, include_vectors } = request;
        let (dim, metric, kernel) = (self.shared.dim, self.shared.metric, self.shared.kernel);
        prepare_vector(dim, metric, self.embedder_model(), &|| "the query vector".to_string(), &mut vector)?;
        let op = if metric == Metric::L2 { kernel::Op::NegSquaredL2 } else { kernel::Op::Dot };
        let path = &self.shared.path;
        let err = |e: rusqlite::Error| store_err(path, "search failed", e);
        let allowed = match &filter {
            Some(f) => Some(self.matching_rowids(conn, f)?),
            None => None,
        };
        // Score under the index's read lock (writes happen on this thread, so the rows cannot change before the
        // documents are read below); keep (score, rowid, vector?) of the best k.
        let best: Vec<(f32, i64, Option<Vec<f32>>)> = {
            let index = self.shared.index.read().unwrap_or_else(PoisonError::into_inner);
            // The slots to score, in increasing order (so ties go to the lower slot); `None` is every slot.
            let slots: Option<Vec<usize>> = allowed.map(|allowed| {
                let mut slots: Vec<usize> = allowed.iter().filter_map(|r| index.slot_of.get(r).copied()).collect();
                slots.sort_unstable();
                slots
            });
            let len = slots.as_ref().map_or(index.rowids.len(), Vec::len);
            let k = k.min(len);
            if k == 0 {
                return Ok(Vec::new());
            }
            let threads = self.shared.search_threads;
            let slot_at = |i: usize| slots.as_ref().map_or(i, |s| s[i]);
            let exact: Vec<(f32, usize, Option<Vec<f32>>)> = match (&index.rows, self.shared.precision) {
                (Rows::F32(v), _) => {
                    let row = |slot: usize| &v[slot * dim..(slot + 1) * dim];
                    let best = crate::scan::best_k(k, len, len * dim * 4, threads, |range, top| match &slots {
                        None => crate::topk::scan_rows(
                            top,
                            kernel,
                            op,
                            &vector,
                            &v[range.start * dim..range.end * dim],
                            dim,
                            range.start,
                        ),
                        Some(slots) => {
                            for &slot in &slots[range] {
                                top.offer(kernel.score_one(op, &vector, row(slot)), slot);
                            }
                        }
                    });
                    best.into_iter().map(|c| (c.score, c.slot, include_vectors.then(|| row(c.slot).to_vec()))).collect()
                }
                (Rows::Int8(rows), precision) => {
                    let oversample = match precision {
                        ScanPrecision::Int8 { oversample } => oversample,
                        ScanPrecision::F32 => 1,
                    };
                    let kept = k.saturating_mul(oversample).min(len);
                    let candidates = self.int8_candidates(rows, &vector, kept, len, &slot_at);
                    // Rescore from the exact vectors in the file, offering in slot order for stable ties.
                    let mut slots_in_order: Vec<usize> = candidates.into_iter().map(|c| c.slot).collect();
                    slots_in_order.sort_unstable();
                    let mut stmt = conn.prepare_cached("SELECT vector FROM documents WHERE rowid = ?").map_err(err)?;
                    let mut top = TopK::new(k);
                    let mut exact_rows: HashMap<usize, Vec<f32>> = HashMap::with_capacity(slots_in_order.len());
                    for slot in slots_in_order {
                        let bytes: Vec<u8> = stmt.query_row([index.rowids[slot]], |r| r.get(0)).map_err(err)?;
                        let row = vector_from_bytes(path, &bytes, dim)?;
                        top.offer(kernel.score_one(op, &vector, &row), slot);
                        exact_rows.insert(slot, row);
                    }
                    top.into_sorted()
                        .into_iter()
                        .map(|c| (c.score, c.slot, if include_vectors { exact_rows.remove(&c.slot) } else { None }))
                        .collect()
                }
            };
            exact
                .into_iter()
                .map(|(score, slot, v)| (crate::topk::reported_score(metric, score), index.rowids[slot], v))
                .filter(|(score, _, _)| min_score.is_none_or(|m| *score >= m))
                .collect()
        };
        let mut stmt =
            conn.prepare_cached("SELECT id, content, metadata FROM documents WHERE rowid = ?").map_err(err)?;
        let mut out = Vec::with_capacity(best.len());
        for (score, rowid, vector) in best {
            let row: Option<(String, String, String)> =
                stmt.query_row([rowid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional().map_err(err)?;
            if let Some((id, content, metadata)) = row {
                out.push(ScoredDocument { document: self.document_from(id, content, metadata)?, score, vector });
            }
        }
        Ok(out)
    }

    /// The best `kept` of `len` slots (`slot_at(i)` is the `i`th) by approximate int8 scores, which rank like the
    /// exact scan's scores: dot products for dot and cosine, negated squared distances for L2.
    fn int8_candidates(
        &self,
        rows: &Int8Rows,
        query: &[f32],
        kept: usize,
        len: usize,
        slot_at: &(dyn Fn(usize) -> usize + Sync),
    ) -> Vec<crate::topk::Candidate> {
        let dim = self.shared.dim;
        let i8_kernel = self.shared.i8_kernel;
        let mut query_codes = vec![0i8; dim];
        let query_scale = quant::quantize(query, &mut query_codes);
        let query_sq: f32 = query.iter().map(|x| x * x).sum();
        let l2 = self.shared.metric == Metric::L2;
        let approx = |slot: usize, dot: i32| {
            let dot = query_scale * rows.scales[slot] * dot as f32;
            if l2 {
                -(query_sq + rows.sq_norms[slot] - 2.0 * dot)
            } else {
                dot
            }
        };
        let contiguous = len == rows.scales.len() && (len == 0 || slot_at(len - 1) == len - 1);
        crate::scan::best_k(kept, len, len * dim, self.shared.search_threads, |range, top| {
            let mut dots = [0i32; crate::topk::BLOCK_ROWS];
            if contiguous {
                let mut start = range.start;
                while start < range.end {
                    let end = (start + crate::topk::BLOCK_ROWS).min(range.end);
                    let out = &mut dots[..end - start];
                    i8_kernel.dots(&query_codes, &rows.codes[start * dim..end * dim], out);
                    for (j, &d) in out.iter().enumerate() {
                        top.offer(approx(start + j, d), start + j);
                    }
                    start = end;
                }
            } else {
                for i in range {
                    let slot = slot_at(i);
                    i8_kernel.dots(&query_codes, &rows.codes[slot * dim..(slot + 1) * dim], &mut dots[..1]);
                    top.offer(approx(slot, dots[0]), slot);
                }
            }
        })
    }
}

/// Decodes a stored vector, checking its length.
fn vector_from_bytes(path: &Path, bytes: &[u8], dim: usize) -> Result<Vec<f32>> {
    if bytes.len() != dim * 4 {
        return Err(store_err(
            path,
            "corrupt vector",
            format!("a stored vector has {} bytes, expected {} ({dim} dimensions)", bytes.len(), dim * 4),
        ));
    }
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn get_has_documents(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM documents)", [], |r| r.get(0))
}

#[async_trait]
impl VectorStore for SqliteStore {
    async fn upsert(&self, documents: Vec<EmbeddedDocument>) -> Result<()> {
        match self.call(Op::Upsert(documents)).await? {
            Reply::Unit(r) => r,
            _ => Err(self.mismatch()),
        }
    }
    async fn delete(&self, ids: &[String]) -> Result<usize> {
        match self.call(Op::Delete(ids.to_vec())).await? {
            Reply::Count(r) => r,
            _ => Err(self.mismatch()),
        }
    }
    async fn delete_where(&self, filter: &Filter) -> Result<usize> {
        match self.call(Op::DeleteWhere(filter.clone())).await? {
            Reply::Count(r) => r,
            _ => Err(self.mismatch()),
        }
    }
    async fn get(&self, ids: &[String]) -> Result<Vec<Document>> {
        match self.call(Op::Get(ids.to_vec())).await? {
            Reply::Documents(r) => r,
            _ => Err(self.mismatch()),
        }
    }
    async fn search(&self, request: SearchRequest) -> Result<Vec<ScoredDocument>> {
        match self.call(Op::Search(request)).await? {
            Reply::Scored(r) => r,
            _ => Err(self.mismatch()),
        }
    }
    async fn len(&self) -> Result<usize> {
        Ok(self.shared.index.read().unwrap_or_else(PoisonError::into_inner).rowids.len())
    }
    /// Checkpoints the write-ahead log into the database file (with an fsync), so every write so far also
    /// survives a power cut.
    async fn flush(&self) -> Result<()> {
        match self.call(Op::Checkpoint).await? {
            Reply::Unit(r) => r,
            _ => Err(self.mismatch()),
        }
    }
}

/// BM25 keyword retrieval over a [`SqliteStore`]; made by [`SqliteStore::keyword_retriever`].
#[derive(Debug, Clone)]
pub struct SqliteKeywordRetriever {
    store: SqliteStore,
    k: usize,
    filter: Option<Filter>,
}

impl SqliteKeywordRetriever {
    /// Only documents matching `filter`.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }
}

#[async_trait]
impl Retriever for SqliteKeywordRetriever {
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>> {
        self.store.keyword_search(query, self.k, self.filter.as_ref()).await
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.shared.path)
            .field("dim", &self.shared.dim)
            .field("metric", &self.shared.metric)
            .field("embedder_model", &self.shared.embedder_model)
            .field("precision", &self.shared.precision)
            .field("search_threads", &self.shared.search_threads)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.shared.index.read().unwrap_or_else(PoisonError::into_inner).rowids.len();
        write!(
            f,
            "SqliteStore({}, {n} documents, {} dimensions, {})",
            self.shared.path.display(),
            self.shared.dim,
            self.shared.metric
        )
    }
}

#[cfg(test)]
mod tests;
