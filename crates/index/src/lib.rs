//! Incremental indexing: a folder of documents kept in step with any [`VectorStore`].
//!
//! An [`Indexer`] loads a folder ([`DirectoryLoader`]), splits the documents ([`TextSplitter`]), embeds the chunks
//! in batches ([`Embedder`], retried under a [`RetryPolicy`] when one is given) and writes them to a
//! [`VectorStore`]. It keeps an [`IndexRecord`] beside the store, a JSON file saying what was indexed from where:
//! per file (keyed by its canonical path, so `docs` and `/home/me/docs` are the same folder) the content hash and
//! the ids of its chunks, and for the whole index the splitter's [`settings`](TextSplitter::settings) and the
//! embedder's model and dimensions. A run then does exactly what changed:
//!
//! - a new or changed file is split and embedded, and a changed file's old chunks are deleted;
//! - a file gone from the folder has its chunks deleted;
//! - an unchanged file is left alone;
//! - a file that fails to load keeps its old chunks and is reported in [`IndexReport::failed`];
//! - different splitter or embedder settings re-index everything;
//! - a folder that does not exist is an error, and so is a record location that cannot be written, before any
//!   embedding work.
//!
//! The store is [flushed](VectorStore::flush) before the record is written (atomically), so a run killed at any
//! point leaves a record that never claims chunks the store lacks; the next run repairs the rest. Progress is a
//! [`tokio::sync::watch`] value ([`Indexer::progress`]), not a callback.
//!
//! ```no_run
//! # async fn run(embedder: std::sync::Arc<dyn catena_core::Embedder>, store: std::sync::Arc<dyn catena_core::VectorStore>) -> catena_core::Result<()> {
//! use catena_text::RecursiveCharacterTextSplitter;
//! use catena_index::Indexer;
//!
//! let splitter = RecursiveCharacterTextSplitter::new(1000, 200)?;
//! let indexer = Indexer::new("docs", splitter, embedder, store, "target/docs.record.json")?.with_include("**/*.md")?;
//! let report = indexer.run().await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use catena_core::layer::{LayerExt, RetryLayer, RetryPolicy};
use catena_core::{Document, EmbeddedDocument, Embedder, Error, Result, VectorStore};
use catena_text::{DirectoryLoader, Loader, TextSplitter, CONTENT_HASH_KEY};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The version of the [`IndexRecord`] file format.
pub const RECORD_VERSION: u32 = 1;

/// What an index was built from: written by [`Indexer::run`] as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The settings the chunks were made with.
    pub settings: IndexSettings,
    /// Per indexed file, by canonical path.
    pub sources: BTreeMap<String, SourceRecord>,
}

/// The settings that decide an index's chunks and vectors; when any differs, everything is re-indexed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSettings {
    /// [`TextSplitter::settings`].
    pub splitter: String,
    /// [`Embedder::model_name`].
    pub embedder_model: String,
    /// [`Embedder::dimensions`].
    pub dimensions: usize,
}

/// What was indexed from one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The content hash of the file when it was indexed (the loader's [`CONTENT_HASH_KEY`]).
    pub content_hash: String,
    /// The ids of its chunks in the store.
    pub chunk_ids: Vec<String>,
}

impl IndexRecord {
    fn empty(settings: IndexSettings) -> Self {
        IndexRecord { version: RECORD_VERSION, settings, sources: BTreeMap::new() }
    }

    /// Reads a record file; `Ok(None)` when there is none.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read; [`Error::Format`] when it is not a record of this version.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let record: IndexRecord = serde_json::from_slice(&bytes).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            message: format!("not an index record ({e}); delete it to re-index from scratch"),
        })?;
        if record.version != RECORD_VERSION {
            return Err(Error::Format {
                path: path.to_path_buf(),
                message: format!(
                    "index record version {} (this catena writes {RECORD_VERSION}); delete it to re-index",
                    record.version
                ),
            });
        }
        Ok(Some(record))
    }

    /// Writes the record atomically: to a temporary file beside `path` (always the same name, so an interrupted
    /// write leaves no litter behind), then renamed into place.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file that could not be written.
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = temp_path(path);
        let bytes = serde_json::to_vec_pretty(self)?;
        std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Checks, before any work, that `path`'s directory exists (creating it) and that a file can be written there.
fn check_writable(path: &Path) -> Result<()> {
    if path.file_name().is_none() {
        return Err(Error::InvalidInput(format!("the index record path {} names no file", path.display())));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let probe = temp_path(path);
    std::fs::write(&probe, b"").map_err(|e| Error::io(&probe, e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IndexPhase {
    /// Not started.
    #[default]
    Idle,
    /// Reading the folder.
    Loading,
    /// Embedding chunks and writing them to the store.
    Embedding,
    /// Flushing the store and writing the record.
    Saving,
    /// Finished (successfully or not).
    Done,
}

/// The progress of a run, published on [`Indexer::progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexProgress {
    /// The current phase.
    pub phase: IndexPhase,
    /// Files found (known once loading is done).
    pub files: usize,
    /// Chunks to embed in this run.
    pub chunks_total: usize,
    /// Chunks embedded and stored so far.
    pub chunks_done: usize,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexReport {
    /// Files loaded.
    pub files: usize,
    /// Files indexed for the first time (canonical paths).
    pub added: Vec<String>,
    /// Files whose content changed.
    pub changed: Vec<String>,
    /// Files gone from the folder, whose chunks were deleted.
    pub removed: Vec<String>,
    /// Files left as they were.
    pub unchanged: usize,
    /// Files that could not be loaded, with why; their earlier chunks (if any) are kept.
    pub failed: Vec<(PathBuf, String)>,
    /// Whether the splitter or embedder settings changed, which re-indexes everything.
    pub settings_changed: bool,
    /// Chunks embedded in this run.
    pub embedded_chunks: usize,
    /// Chunks deleted in this run.
    pub deleted_chunks: usize,
    /// Chunks the index holds after the run.
    pub total_chunks: usize,
}

impl fmt::Display for IndexReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} files ({} added, {} changed, {} removed, {} unchanged, {} failed){}; embedded {} chunks, deleted {}; \
             index holds {}",
            self.files,
            self.added.len(),
            self.changed.len(),
            self.removed.len(),
            self.unchanged,
            self.failed.len(),
            if self.settings_changed { "; settings changed, everything re-indexed" } else { "" },
            self.embedded_chunks,
            self.deleted_chunks,
            self.total_chunks
        )
    }
}

/// Keeps a folder indexed in a [`VectorStore`]; see the [crate docs](crate).
pub struct Indexer {
    root: PathBuf,
    loader: DirectoryLoader,
    splitter: Arc<dyn TextSplitter>,
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn VectorStore>,
    record_path: PathBuf,
    batch_size: NonZeroUsize,
    progress: watch::Sender<IndexProgress>,
}

impl fmt::Debug for Indexer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Indexer")
            .field("root", &self.root)
            .field("splitter", &self.splitter.settings())
            .field("embedder", &self.embedder.model_name())
            .field("record", &self.record_path)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

/// Chunks embedded per call when [`Indexer::with_batch_size`] is not used.
pub const DEFAULT_BATCH_SIZE: usize = 64;

impl Indexer {
    /// An indexer of the folder `root` (every file; narrow it with [`Indexer::with_include`]) into `store`,
    /// recording what it did at `record`. Embeds [`DEFAULT_BATCH_SIZE`] chunks per call, without retries.
    ///
    /// # Errors
    /// [`Error::Io`] when `root` does not exist or is not a folder, or when `record` cannot be written.
    pub fn new(
        root: impl AsRef<Path>,
        splitter: impl TextSplitter + 'static,
        embedder: Arc<dyn Embedder>,
        store: Arc<dyn VectorStore>,
        record: impl Into<PathBuf>,
    ) -> Result<Self> {
        let given = root.as_ref();
        let root = std::fs::canonicalize(given).map_err(|e| Error::io(given, e))?;
        if !root.is_dir() {
            return Err(Error::io(
                given,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a folder: give the folder to index"),
            ));
        }
        let record_path = record.into();
        check_writable(&record_path)?;
        Ok(Indexer {
            loader: DirectoryLoader::new(&root),
            root,
            splitter: Arc::new(splitter),
            embedder,
            store,
            record_path,
            batch_size: NonZeroUsize::new(DEFAULT_BATCH_SIZE).expect("non-zero"),
            progress: watch::Sender::new(IndexProgress::default()),
        })
    }

    /// Only files matching `glob` (relative to the folder, for example `**/*.md`); may be given several times.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid glob.
    pub fn with_include(mut self, glob: &str) -> Result<Self> {
        self.loader = self.loader.with_include(glob)?;
        Ok(self)
    }

    /// Chunks embedded per call.
    pub fn with_batch_size(mut self, n: NonZeroUsize) -> Self {
        self.batch_size = n;
        self
    }

    /// Retries failed embedding calls under `policy` (wraps the embedder in a [`RetryLayer`]).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.embedder = Arc::new(self.embedder.clone().layer(RetryLayer::new(policy)));
        self
    }

    /// The canonical folder being indexed.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A receiver of the run's progress (new receivers see the latest value).
    pub fn progress(&self) -> watch::Receiver<IndexProgress> {
        self.progress.subscribe()
    }

    fn settings(&self) -> IndexSettings {
        IndexSettings {
            splitter: self.splitter.settings(),
            embedder_model: self.embedder.model_name(),
            dimensions: self.embedder.dimensions(),
        }
    }

    fn publish(&self, f: impl FnOnce(&mut IndexProgress)) {
        self.progress.send_modify(f);
    }

    /// Brings the store in step with the folder; see the [crate docs](crate) for what it does.
    ///
    /// # Errors
    /// The first embedding or store error (the record is then left as it was, so the next run redoes the work);
    /// [`Error::Io`] / [`Error::Format`] for an unreadable record. Files that fail to load are not errors: they
    /// are in [`IndexReport::failed`].
    pub async fn run(&self) -> Result<IndexReport> {
        let result = self.run_inner().await;
        self.publish(|p| p.phase = IndexPhase::Done);
        result
    }

    async fn run_inner(&self) -> Result<IndexReport> {
        self.publish(|p| *p = IndexProgress { phase: IndexPhase::Loading, ..IndexProgress::default() });
        let settings = self.settings();
        let previous = IndexRecord::read(&self.record_path)?;
        let mut report = IndexReport::default();
        let mut record = match previous {
            Some(r) if r.settings == settings => r,
            Some(old) => {
                report.settings_changed = true;
                tracing::info!(old = ?old.settings, new = ?settings, "index settings changed: re-indexing everything");
                let ids: Vec<String> = old.sources.values().flat_map(|s| s.chunk_ids.iter().cloned()).collect();
                report.deleted_chunks += self.store.delete(&ids).await?;
                IndexRecord::empty(settings)
            }
            None => IndexRecord::empty(settings),
        };

        let loaded = self.loader.load().await;
        let failed_paths: BTreeSet<String> = loaded.failures.iter().map(|f| canonical(&f.path)).collect();
        report.failed = loaded.failures.iter().map(|f| (f.path.clone(), f.error.to_string())).collect();
        report.files = loaded.documents.len();
        self.publish(|p| p.files = loaded.documents.len());

        // Group documents by file (a JSON Lines file gives several documents).
        let mut by_source: BTreeMap<String, Vec<Document>> = BTreeMap::new();
        for doc in loaded.documents {
            let source = doc
                .source()
                .map(|s| canonical(Path::new(s)))
                .ok_or_else(|| Error::InvalidInput("the loader produced a document without a source".into()))?;
            by_source.entry(source).or_default().push(doc);
        }

        let mut to_embed: Vec<(String, String, Vec<Document>)> = Vec::new();
        for (source, docs) in &by_source {
            let hash = content_hash(docs);
            match record.sources.get(source) {
                Some(old) if old.content_hash == hash => report.unchanged += 1,
                Some(_) => report.changed.push(source.clone()),
                None => report.added.push(source.clone()),
            }
            if record.sources.get(source).is_none_or(|old| old.content_hash != hash) {
                to_embed.push((source.clone(), hash, self.splitter.split_documents(docs)));
            }
        }
        let gone: Vec<String> = record
            .sources
            .keys()
            .filter(|s| !by_source.contains_key(*s) && !failed_paths.contains(*s))
            .cloned()
            .collect();

        let total: usize = to_embed.iter().map(|(_, _, chunks)| chunks.len()).sum();
        self.publish(|p| {
            p.phase = IndexPhase::Embedding;
            p.chunks_total = total;
        });
        for source in &gone {
            if let Some(old) = record.sources.remove(source) {
                report.deleted_chunks += self.store.delete(&old.chunk_ids).await?;
            }
            report.removed.push(source.clone());
        }
        for (source, hash, chunks) in to_embed {
            if let Some(old) = record.sources.get(&source) {
                let keep: BTreeSet<&String> = chunks.iter().map(|c| &c.id).collect();
                let stale: Vec<String> = old.chunk_ids.iter().filter(|id| !keep.contains(id)).cloned().collect();
                report.deleted_chunks += self.store.delete(&stale).await?;
            }
            let mut ids = Vec::with_capacity(chunks.len());
            for batch in chunks.chunks(self.batch_size.get()) {
                let texts: Vec<String> = batch.iter().map(|d| d.content.clone()).collect();
                let vectors = self.embedder.embed_documents(&texts).await?;
                if vectors.len() != batch.len() {
                    return Err(Error::InvalidInput(format!(
                        "embedder {} returned {} vectors for {} chunks",
                        self.embedder.model_name(),
                        vectors.len(),
                        batch.len()
                    )));
                }
                let docs: Vec<EmbeddedDocument> = batch
                    .iter()
                    .cloned()
                    .zip(vectors)
                    .map(|(document, vector)| EmbeddedDocument { document, vector })
                    .collect();
                ids.extend(batch.iter().map(|d| d.id.clone()));
                self.store.upsert(docs).await?;
                report.embedded_chunks += batch.len();
                self.publish(|p| p.chunks_done += batch.len());
            }
            record.sources.insert(source, SourceRecord { content_hash: hash, chunk_ids: ids });
        }

        self.publish(|p| p.phase = IndexPhase::Saving);
        self.store.flush().await?;
        let path = self.record_path.clone();
        let written = record.clone();
        tokio::task::spawn_blocking(move || written.write(&path))
            .await
            .map_err(|e| Error::InvalidInput(format!("writing the index record failed: {e}")))??;
        report.total_chunks = record.sources.values().map(|s| s.chunk_ids.len()).sum();
        Ok(report)
    }
}

/// A path's canonical form, or the path as given when it no longer exists.
fn canonical(path: &Path) -> String {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).to_string_lossy().into_owned()
}

/// The content hash of a file's documents (one document: its loader hash; several: a hash of theirs).
fn content_hash(docs: &[Document]) -> String {
    let hashes: Vec<String> = docs
        .iter()
        .map(|d| {
            d.metadata
                .get(CONTENT_HASH_KEY)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| catena_core::stable_id(&[&d.content]))
        })
        .collect();
    match hashes.as_slice() {
        [one] => one.clone(),
        many => catena_core::stable_id(&many.iter().map(String::as_str).collect::<Vec<_>>()),
    }
}
