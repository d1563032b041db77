//! [`InMemoryStore`]: an exact vector store in one contiguous `f32` block.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use catena_core::{
    async_trait, Document, EmbeddedDocument, Embedder, Error, Filter, Result, ScoredDocument, SearchRequest,
    VectorStore,
};

use crate::kernel::{Kernel, Op};
use crate::persist;
use crate::Metric;

/// An exact in-memory vector store.
///
/// - **Storage**: every vector sits in one `Vec<f32>` of `len * dim` values, row `i` belonging to document `i`;
///   an id → row map makes upserts idempotent, and deletes move the last row into the hole (swap-remove), so
///   row order is not insertion order. On Linux a large block asks for transparent huge pages, which makes the
///   scan markedly faster (fewer TLB misses).
/// - **Search**: exact top-k. Without a filter the scan scores blocks of rows with a SIMD kernel (AVX2+FMA when
///   the CPU has it, detected at run time; a portable vectorisable loop otherwise) and keeps the best `k` in a
///   bounded heap; with a filter, [`Filter::matches`] runs on each document's metadata first and only matching
///   rows are scored. Only the `k` winners' documents are cloned. Equal scores rank the lower row first.
/// - **Scores**: see [`Metric`]: cosine similarity, dot product, or the negated Euclidean distance for
///   [`Metric::L2`]. `min_score` applies to that reported score.
/// - **Sharing**: cloning is cheap (an `Arc`) and every clone sees the same data. Reads run in parallel behind an
///   `RwLock`; a search holds the read lock for the whole scan (milliseconds for 100k × 384). The async
///   [`VectorStore::search`] moves scans of large stores to tokio's blocking pool ([`BLOCKING_SCAN_FLOATS`]).
/// - **Persistence**: [`save`](InMemoryStore::save) / [`load`](InMemoryStore::load); see [`FORMAT_VERSION`]
///   for the file layout.
///
/// Vectors must have the store's dimension and finite components; with [`Metric::Cosine`] they must also be
/// non-zero. Violations are [`Error::InvalidInput`] and leave the store unchanged.
///
/// ```
/// use catena_core::{Document, EmbeddedDocument, Filter, Metadata, SearchRequest, VectorStore};
/// use catena_vectorstores::{InMemoryStore, Metric};
/// use serde_json::json;
///
/// # fn main() -> catena_core::Result<()> {
/// # futures::executor::block_on(async {
/// let store = InMemoryStore::new(2, Metric::L2)?;
/// let doc = |id: &str, lang: &str, v: Vec<f32>| EmbeddedDocument {
///     document: Document::with_id(id, format!("text {id}"), json!({"lang": lang}).as_object().unwrap().clone()),
///     vector: v,
/// };
/// store.upsert(vec![doc("a", "en", vec![0.0, 0.0]), doc("b", "de", vec![3.0, 4.0]), doc("c", "en", vec![6.0, 8.0])]).await?;
///
/// // L2 scores are negated distances: the nearest document scores closest to zero.
/// let hits = store.search(SearchRequest::new(vec![3.0, 4.0], 2)).await?;
/// assert_eq!((hits[0].document.id.as_str(), hits[0].score), ("b", 0.0));
/// assert_eq!((hits[1].document.id.as_str(), hits[1].score), ("a", -5.0));
///
/// // Filters run before scoring.
/// let en = store.search(SearchRequest::new(vec![3.0, 4.0], 5).with_filter(Filter::eq("lang", "en"))).await?;
/// assert_eq!(en.len(), 2);
/// assert_eq!(store.to_string(), "InMemoryStore(3 documents, 2 dimensions, l2)");
/// # Ok(())
/// # })
/// # }
/// ```
///
/// [`FORMAT_VERSION`]: crate::FORMAT_VERSION
#[derive(Clone)]
pub struct InMemoryStore {
    shared: Arc<Shared>,
}

/// Above this many stored numbers (documents times dimensions, about 0.1 ms of scanning), [`VectorStore::search`]
/// scans on tokio's blocking pool instead of the calling task's thread.
pub const BLOCKING_SCAN_FLOATS: usize = 1 << 18;

struct Shared {
    dim: usize,
    metric: Metric,
    kernel: Kernel,
    /// How many threads one large search may use (see [`InMemoryStore::with_search_threads`]).
    search_threads: AtomicUsize,
    state: RwLock<State>,
    /// The file [`VectorStore::flush`] saves to, if any.
    backing: Mutex<Option<PathBuf>>,
}

/// The mutable part of the store. Invariants: `vectors.len() == docs.len() * dim`, and `slot_of[docs[i].id] == i`
/// for every row `i`, with no other keys.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) embedder_model: Option<String>,
    pub(crate) vectors: Vec<f32>,
    pub(crate) docs: Vec<Document>,
    pub(crate) slot_of: HashMap<String, usize>,
}

impl InMemoryStore {
    /// An empty store for `dim`-dimensional vectors compared with `metric`.
    ///
    /// Fails with [`Error::InvalidInput`] when `dim` is 0 or does not fit in 32 bits.
    pub fn new(dim: usize, metric: Metric) -> Result<Self> {
        if dim == 0 || u32::try_from(dim).is_err() {
            return Err(Error::InvalidInput(format!(
                "vector dimension must be between 1 and {}, got {dim}; pass the embedder's dimensions()",
                u32::MAX
            )));
        }
        Ok(Self::from_state(dim, metric, State::default()))
    }

    /// An empty store sized for `embedder` (its [`dimensions`](Embedder::dimensions)), recording its
    /// [`model_name`](Embedder::model_name) so that [`load_for_embedder`](Self::load_for_embedder) can later
    /// refuse an index built with another model.
    pub fn for_embedder<E: Embedder + ?Sized>(embedder: &E, metric: Metric) -> Result<Self> {
        let store = Self::new(embedder.dimensions(), metric)?;
        store.write().embedder_model = Some(embedder.model_name());
        Ok(store)
    }

    /// Records the name of the embedding model whose vectors this store holds; it is saved with the store.
    /// Every clone of the store sees the new name.
    pub fn with_embedder_model(self, model: impl Into<String>) -> Self {
        self.write().embedder_model = Some(model.into());
        self
    }

    pub(crate) fn from_state(dim: usize, metric: Metric, state: State) -> Self {
        InMemoryStore {
            shared: Arc::new(Shared {
                dim,
                metric,
                kernel: Kernel::detect(),
                search_threads: AtomicUsize::new(crate::scan::available_threads().get()),
                state: RwLock::new(state),
                backing: Mutex::new(None),
            }),
        }
    }

    /// Lets one search use up to `threads` threads (at least 1). A new store uses the machine's parallelism
    /// ([`std::thread::available_parallelism`]); scans under a few megabytes always run on one thread. Every clone
    /// of the store sees the new setting.
    pub fn with_search_threads(self, threads: usize) -> Self {
        self.shared.search_threads.store(threads.max(1), Ordering::Relaxed);
        self
    }

    /// How many threads one search may use.
    pub fn search_threads(&self) -> usize {
        self.shared.search_threads.load(Ordering::Relaxed)
    }

    /// Makes `path` the store's backing file: [`VectorStore::flush`] saves there (atomically, as
    /// [`save`](Self::save)). [`open_for_embedder`](Self::open_for_embedder) sets it to the file it opened.
    pub fn with_backing_file(self, path: impl Into<PathBuf>) -> Self {
        *self.shared.backing.lock().unwrap_or_else(PoisonError::into_inner) = Some(path.into());
        self
    }

    /// The backing file, if one is set.
    pub fn backing_file(&self) -> Option<PathBuf> {
        self.shared.backing.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The vector dimension.
    pub fn dim(&self) -> usize {
        self.shared.dim
    }

    /// The similarity metric.
    pub fn metric(&self) -> Metric {
        self.shared.metric
    }

    /// The embedding model name recorded with the store, if any.
    pub fn embedder_model(&self) -> Option<String> {
        self.read().embedder_model.clone()
    }

    /// How many documents the store holds (the synchronous twin of [`VectorStore::len`]).
    pub fn count(&self) -> usize {
        self.read().docs.len()
    }

    /// Whether a document with this id is stored.
    pub fn contains(&self, id: &str) -> bool {
        self.read().slot_of.contains_key(id)
    }

    /// The ids of all stored documents, in row order (not insertion order: deletes move rows).
    pub fn ids(&self) -> Vec<String> {
        self.read().docs.iter().map(|d| d.id.clone()).collect()
    }

    /// A snapshot of all stored documents with their metadata, in row order.
    ///
    /// Incremental indexing uses it: keep a content hash in each chunk's metadata, compare it with the files on
    /// disk, and re-embed only the sources whose hash changed.
    ///
    /// ```
    /// # use catena_core::{Document, EmbeddedDocument, Metadata, VectorStore};
    /// # use catena_vectorstores::{InMemoryStore, Metric};
    /// # use serde_json::json;
    /// # fn main() -> catena_core::Result<()> {
    /// # futures::executor::block_on(async {
    /// let store = InMemoryStore::new(2, Metric::Dot)?;
    /// let meta = json!({"source": "a.md", "content_hash": "1f2e"}).as_object().unwrap().clone();
    /// store.upsert(vec![EmbeddedDocument { document: Document::new("hello", meta), vector: vec![1.0, 0.0] }]).await?;
    /// let hashes: Vec<(String, String)> = store
    ///     .documents()
    ///     .into_iter()
    ///     .filter_map(|d| Some((d.source()?.to_string(), d.metadata.get("content_hash")?.as_str()?.to_string())))
    ///     .collect();
    /// assert_eq!(hashes, vec![("a.md".to_string(), "1f2e".to_string())]);
    /// # Ok(())
    /// # })
    /// # }
    /// ```
    pub fn documents(&self) -> Vec<Document> {
        self.read().docs.clone()
    }

    /// A snapshot of the stored documents matching `filter`, in row order.
    pub fn documents_where(&self, filter: &Filter) -> Vec<Document> {
        self.read().docs.iter().filter(|d| filter.matches(&d.metadata)).cloned().collect()
    }

    /// Fetches documents with their stored vectors, in the order given; unknown ids are skipped. With
    /// [`Metric::Cosine`] the vectors are the unit-normalised copies the store keeps.
    pub fn get_embedded(&self, ids: &[String]) -> Vec<EmbeddedDocument> {
        let state = self.read();
        let dim = self.shared.dim;
        ids.iter()
            .filter_map(|id| state.slot_of.get(id))
            .map(|&slot| EmbeddedDocument {
                document: state.docs[slot].clone(),
                vector: state.vectors[slot * dim..(slot + 1) * dim].to_vec(),
            })
            .collect()
    }

    /// Removes every document.
    pub fn clear(&self) {
        let mut state = self.write();
        state.vectors = Vec::new();
        state.docs = Vec::new();
        state.slot_of = HashMap::new();
    }

    /// Writes the store to `path` atomically: into a temporary file in the same directory, flushed to disk, then
    /// renamed over `path`, so a crash leaves either the old file or the new one, never a torn one. Holds the
    /// read lock while writing (searches continue, writers wait). Blocking I/O: from async code, call it inside
    /// `spawn_blocking`.
    ///
    /// ```
    /// # use catena_vectorstores::{InMemoryStore, Metric};
    /// # fn main() -> catena_core::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("index.catena");
    /// let store = InMemoryStore::new(384, Metric::Cosine)?.with_embedder_model("all-MiniLM-L6-v2");
    /// store.save(&path)?;
    /// let back = InMemoryStore::load_expecting(&path, 384, Metric::Cosine)?;
    /// assert_eq!(back.embedder_model().as_deref(), Some("all-MiniLM-L6-v2"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let state = self.read();
        let _span = tracing::debug_span!(
            "catena.vectorstore.save",
            path = %path.display(),
            documents = state.docs.len(),
            dim = self.shared.dim
        )
        .entered();
        persist::save(path, self.shared.dim, self.shared.metric, &state)
    }

    /// Reads a store written by [`save`](Self::save). Bad magic bytes, an unsupported format version, a truncated
    /// or corrupt file (checksum mismatch) are [`Error::Format`] naming the file; a missing file is
    /// [`Error::Io`]. Blocking I/O, like `save`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let _span = tracing::debug_span!("catena.vectorstore.load", path = %path.display()).entered();
        let loaded = persist::load(path)?;
        Ok(Self::from_state(loaded.dim, loaded.metric, loaded.state))
    }

    /// Like [`load`](Self::load), and fails with [`Error::Format`] when the file holds vectors of another
    /// dimension or another metric than expected.
    pub fn load_expecting(path: impl AsRef<Path>, dim: usize, metric: Metric) -> Result<Self> {
        let path = path.as_ref();
        let store = Self::load(path)?;
        if store.dim() != dim {
            return Err(Error::Format {
                path: path.to_path_buf(),
                message: format!(
                    "holds {}-dimensional vectors but {dim} were expected{}; re-index with the current embedder \
                     or load with the embedder the index was built with",
                    store.dim(),
                    store.embedder_model().map(|m| format!(" (it was built with {m})")).unwrap_or_default()
                ),
            });
        }
        if store.metric() != metric {
            return Err(Error::Format {
                path: path.to_path_buf(),
                message: format!(
                    "was built for the {} metric but {metric} was expected; re-index, or load it with \
                     Metric::{:?}",
                    store.metric(),
                    store.metric()
                ),
            });
        }
        Ok(store)
    }

    /// Like [`load_expecting`](Self::load_expecting) with the embedder's dimensions, and also fails with
    /// [`Error::Format`] when the file records a different embedding model name than `embedder.model_name()`
    /// (a file without a recorded name is accepted).
    pub fn load_for_embedder<E: Embedder + ?Sized>(
        path: impl AsRef<Path>,
        embedder: &E,
        metric: Metric,
    ) -> Result<Self> {
        let path = path.as_ref();
        let store = Self::load_expecting(path, embedder.dimensions(), metric)?;
        let want = embedder.model_name();
        if let Some(have) = store.embedder_model() {
            if have != want {
                return Err(Error::Format {
                    path: path.to_path_buf(),
                    message: format!(
                        "was built with embedding model {have:?} but the embedder is {want:?}; vectors from \
                         different models are not comparable: re-index with {want:?} or use {have:?}"
                    ),
                });
            }
        }
        Ok(store)
    }

    /// Loads the index at `path` with [`load_for_embedder`](Self::load_for_embedder) when the file exists, or
    /// returns an empty store [`for_embedder`](Self::for_embedder) when it does not: the starting point of
    /// incremental indexing (load, re-embed what changed, [`VectorStore::flush`]). `path` becomes the store's
    /// [backing file](Self::with_backing_file).
    ///
    /// A file that exists but cannot be read, is damaged or was built for another embedder is an error, never
    /// silently replaced.
    pub fn open_for_embedder<E: Embedder + ?Sized>(
        path: impl AsRef<Path>,
        embedder: &E,
        metric: Metric,
    ) -> Result<Self> {
        let path = path.as_ref();
        let store = match std::fs::metadata(path) {
            Ok(_) => Self::load_for_embedder(path, embedder, metric)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::for_embedder(embedder, metric)?,
            Err(e) => return Err(Error::io(path, e)),
        };
        Ok(store.with_backing_file(path))
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated: every mutation validates first.
        self.shared.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.shared.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks a vector's shape and values and, for cosine, normalises it in place.
    fn prepare(&self, what: &dyn Fn() -> String, vector: &mut [f32]) -> Result<()> {
        prepare_vector(self.shared.dim, self.shared.metric, self.embedder_model().as_deref(), what, vector)
    }

    fn upsert_now(&self, mut documents: Vec<EmbeddedDocument>) -> Result<()> {
        for d in &mut documents {
            let id = &d.document.id;
            self.prepare(&|| format!("the vector of document {id:?}"), &mut d.vector)?;
        }
        let dim = self.shared.dim;
        let mut state = self.write();
        let new_rows = documents.len();
        crate::block::reserve(&mut state.vectors, new_rows * dim);
        state.docs.reserve(new_rows);
        for EmbeddedDocument { document, vector } in documents {
            match state.slot_of.get(&document.id) {
                Some(&slot) => {
                    state.vectors[slot * dim..(slot + 1) * dim].copy_from_slice(&vector);
                    state.docs[slot] = document;
                }
                None => {
                    let slot = state.docs.len();
                    state.slot_of.insert(document.id.clone(), slot);
                    state.vectors.extend_from_slice(&vector);
                    state.docs.push(document);
                }
            }
        }
        Ok(())
    }

    fn delete_now(&self, ids: &[String]) -> usize {
        let mut state = self.write();
        let mut removed = 0;
        for id in ids {
            if let Some(slot) = state.slot_of.get(id).copied() {
                remove_row(&mut state, self.shared.dim, slot);
                removed += 1;
            }
        }
        removed
    }

    fn delete_where_now(&self, filter: &Filter) -> usize {
        let mut state = self.write();
        let doomed: Vec<usize> =
            state.docs.iter().enumerate().filter(|(_, d)| filter.matches(&d.metadata)).map(|(i, _)| i).collect();
        // Highest row first: swap-remove then only ever moves a surviving row into the hole.
        for &slot in doomed.iter().rev() {
            remove_row(&mut state, self.shared.dim, slot);
        }
        doomed.len()
    }

    fn search_now(&self, request: SearchRequest) -> Result<Vec<ScoredDocument>> {
        let SearchRequest { mut vector, k, filter, min_score, include_vectors } = request;
        self.prepare(&|| "the query vector".to_string(), &mut vector)?;
        let dim = self.shared.dim;
        let metric = self.shared.metric;
        let kernel = self.shared.kernel;
        let op = if metric == Metric::L2 { Op::NegSquaredL2 } else { Op::Dot };
        let state = self.read();
        let n = state.docs.len();
        let _span =
            tracing::trace_span!("catena.vectorstore.search", k, documents = n, filtered = filter.is_some()).entered();
        let k = k.min(n);
        if k == 0 {
            return Ok(Vec::new());
        }
        let threads = NonZeroUsize::new(self.search_threads()).unwrap_or(NonZeroUsize::MIN);
        let best = crate::scan::best_k(k, n, n * dim * 4, threads, |range, top| match &filter {
            None => {
                let rows = &state.vectors[range.start * dim..range.end * dim];
                crate::topk::scan_rows(top, kernel, op, &vector, rows, dim, range.start);
            }
            Some(filter) => {
                for slot in range {
                    if filter.matches(&state.docs[slot].metadata) {
                        top.offer(kernel.score_one(op, &vector, &state.vectors[slot * dim..(slot + 1) * dim]), slot);
                    }
                }
            }
        });
        let results = best
            .into_iter()
            .map(|c| (crate::topk::reported_score(metric, c.score), c.slot))
            .filter(|(score, _)| min_score.is_none_or(|m| *score >= m))
            .map(|(score, slot)| ScoredDocument {
                document: state.docs[slot].clone(),
                score,
                vector: include_vectors.then(|| state.vectors[slot * dim..(slot + 1) * dim].to_vec()),
            })
            .collect();
        Ok(results)
    }
}

/// Checks a vector's shape (`dim`) and values and, for cosine, normalises it in place. `model` names the
/// embedder the store was built with, for the error message.
pub(crate) fn prepare_vector(
    dim: usize,
    metric: Metric,
    model: Option<&str>,
    what: &dyn Fn() -> String,
    vector: &mut [f32],
) -> Result<()> {
    if vector.len() != dim {
        let model = model.map(|m| format!(" from {m}")).unwrap_or_default();
        return Err(Error::InvalidInput(format!(
            "{} has {} dimensions but this store holds {dim}-dimensional vectors{model}; embed with the same \
             model as the store, or create a store with dimension {}",
            what(),
            vector.len(),
            vector.len()
        )));
    }
    let norm2: f32 = vector.iter().map(|x| x * x).sum();
    if !norm2.is_finite() {
        return Err(Error::InvalidInput(format!(
            "{} has a NaN, infinite or overflowing component; check the embedder's output",
            what()
        )));
    }
    if metric == Metric::Cosine {
        if norm2 == 0.0 {
            return Err(Error::InvalidInput(format!(
                "{} is the zero vector, which has no direction for cosine similarity; drop it or use \
                 Metric::Dot",
                what()
            )));
        }
        let inv = 1.0 / norm2.sqrt();
        vector.iter_mut().for_each(|x| *x *= inv);
    }
    Ok(())
}

/// Removes row `slot` by moving the last row into it.
fn remove_row(state: &mut State, dim: usize, slot: usize) {
    let last = state.docs.len() - 1;
    if slot != last {
        state.vectors.copy_within(last * dim..(last + 1) * dim, slot * dim);
        state.docs.swap(slot, last);
        let moved = state.docs[slot].id.clone();
        state.slot_of.insert(moved, slot);
    }
    state.vectors.truncate(last * dim);
    if let Some(gone) = state.docs.pop() {
        state.slot_of.remove(&gone.id);
    }
}

#[async_trait]
impl VectorStore for InMemoryStore {
    async fn upsert(&self, documents: Vec<EmbeddedDocument>) -> Result<()> {
        self.upsert_now(documents)
    }

    async fn delete(&self, ids: &[String]) -> Result<usize> {
        Ok(self.delete_now(ids))
    }

    async fn delete_where(&self, filter: &Filter) -> Result<usize> {
        Ok(self.delete_where_now(filter))
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<Document>> {
        let state = self.read();
        Ok(ids.iter().filter_map(|id| state.slot_of.get(id)).map(|&slot| state.docs[slot].clone()).collect())
    }

    /// Small stores are scanned in place; a scan of more than [`BLOCKING_SCAN_FLOATS`] numbers runs on tokio's
    /// blocking pool, so a large exact search never stalls the async runtime's worker thread.
    async fn search(&self, request: SearchRequest) -> Result<Vec<ScoredDocument>> {
        if self.read().docs.len() * self.shared.dim <= BLOCKING_SCAN_FLOATS {
            return self.search_now(request);
        }
        let this = self.clone();
        crate::blocking::off_runtime("in-memory", move || this.search_now(request)).await
    }

    /// Saves to the [backing file](Self::with_backing_file) on tokio's blocking pool; without one there is
    /// nothing to persist and it returns at once.
    async fn flush(&self) -> Result<()> {
        let Some(path) = self.backing_file() else { return Ok(()) };
        let this = self.clone();
        crate::blocking::off_runtime("in-memory", move || this.save(&path)).await
    }

    async fn len(&self) -> Result<usize> {
        Ok(self.count())
    }
}

impl fmt::Display for InMemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InMemoryStore({} documents, {} dimensions, {})", self.count(), self.dim(), self.metric())
    }
}

impl fmt::Debug for InMemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryStore")
            .field("documents", &self.count())
            .field("dim", &self.dim())
            .field("metric", &self.metric())
            .field("embedder_model", &self.embedder_model())
            .field("kernel", &self.shared.kernel)
            .finish()
    }
}
