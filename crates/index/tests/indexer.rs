//! The indexer on real parts: files on disk, the real all-MiniLM-L6-v2 embedder (its files from
//! `.ci/fetch-minilm.sh`), the real `InMemoryStore` with a backing file. A thin wrapper counts the texts that reach
//! the embedder, so each test can say exactly what was (re-)embedded.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use catena_core::{async_trait, Embedder, Result, VectorStore};
use catena_index::{IndexPhase, IndexRecord, Indexer};
use catena_providers::local_embed::LocalEmbedder;
use catena_text::RecursiveCharacterTextSplitter;
use catena_vectorstores::{InMemoryStore, Metric};

fn minilm() -> LocalEmbedder {
    static MODEL: OnceLock<LocalEmbedder> = OnceLock::new();
    MODEL
        .get_or_init(|| LocalEmbedder::from_env().unwrap_or_else(|e| panic!("{e}; run `bash .ci/fetch-minilm.sh`")))
        .clone()
}

/// The real embedder, with a log of every text it was asked to embed.
#[derive(Clone)]
struct Counting {
    inner: LocalEmbedder,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Counting {
    fn new() -> Self {
        Counting { inner: minilm(), seen: Arc::default() }
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

#[async_trait]
impl Embedder for Counting {
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.seen.lock().unwrap().extend(texts.iter().cloned());
        self.inner.embed_documents(texts).await
    }
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        self.inner.embed_query(text).await
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn model_name(&self) -> String {
        self.inner.model_name()
    }
}

struct Setup {
    dir: tempfile::TempDir,
    embedder: Counting,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        Setup { dir, embedder: Counting::new() }
    }
    fn docs(&self) -> PathBuf {
        self.dir.path().join("docs")
    }
    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.docs().join(name), text).unwrap();
    }
    fn store_path(&self) -> PathBuf {
        self.dir.path().join("index.catena")
    }
    fn record_path(&self) -> PathBuf {
        self.dir.path().join("index.record.json")
    }
    /// A store opened from its file, as a new process would.
    fn store(&self) -> InMemoryStore {
        InMemoryStore::open_for_embedder(self.store_path(), &self.embedder, Metric::Cosine).unwrap()
    }
    fn indexer(&self, root: &Path, chunk_size: usize) -> (Indexer, InMemoryStore) {
        let store = self.store();
        let splitter = RecursiveCharacterTextSplitter::new(chunk_size, 0).unwrap();
        let indexer =
            Indexer::new(root, splitter, Arc::new(self.embedder.clone()), Arc::new(store.clone()), self.record_path())
                .unwrap()
                .with_include("**/*.md")
                .unwrap();
        (indexer, store)
    }
}

const CRAB: &str = "# Ferris\n\nFerris is the unofficial mascot of Rust. It is a crab.";
const BORROW: &str = "# Borrowing\n\nA reference borrows a value without taking ownership of it.";
const MATCH: &str = "# Match\n\nA match expression compares a value against patterns and runs the first that fits.";

#[tokio::test]
async fn reruns_embed_exactly_what_changed() {
    let s = Setup::new();
    s.write("crab.md", CRAB);
    s.write("borrow.md", BORROW);
    let (indexer, store) = s.indexer(&s.docs(), 1000);
    let first = indexer.run().await.unwrap();
    assert_eq!((first.added.len(), first.embedded_chunks, first.total_chunks), (2, 2, 2), "{first}");
    assert_eq!(s.embedder.take().len(), 2);
    assert_eq!(store.count(), 2);

    // Nothing changed: nothing embedded, in a new "process" (store and indexer reopened from disk).
    let (indexer, store) = s.indexer(&s.docs(), 1000);
    let again = indexer.run().await.unwrap();
    assert_eq!((again.unchanged, again.embedded_chunks), (2, 0), "{again}");
    assert!(s.embedder.take().is_empty());
    assert_eq!(store.count(), 2);

    // One file changed, one added, one removed.
    s.write("crab.md", &format!("{CRAB} Crabs walk sideways."));
    s.write("match.md", MATCH);
    std::fs::remove_file(s.docs().join("borrow.md")).unwrap();
    let (indexer, store) = s.indexer(&s.docs(), 1000);
    let third = indexer.run().await.unwrap();
    assert_eq!((third.changed.len(), third.added.len(), third.removed.len(), third.unchanged), (1, 1, 1, 0));
    let embedded = s.embedder.take();
    assert_eq!(embedded.len(), 2, "{embedded:?}");
    assert!(embedded.iter().any(|t| t.contains("sideways")) && embedded.iter().any(|t| t.contains("match")));
    assert_eq!(store.count(), 2, "the removed file's chunk and the changed file's old chunk are gone");
    assert!(store.documents().iter().all(|d| !d.content.contains("borrows")));
}

#[tokio::test]
async fn the_same_folder_spelled_differently_is_the_same_index() {
    let s = Setup::new();
    s.write("crab.md", CRAB);
    let (indexer, _) = s.indexer(&s.docs(), 1000);
    indexer.run().await.unwrap();
    s.embedder.take();
    let dotted = s.docs().join("..").join("docs").join(".");
    let (indexer, _) = s.indexer(&dotted, 1000);
    let report = indexer.run().await.unwrap();
    assert_eq!((report.unchanged, report.embedded_chunks), (1, 0), "{report}");
    assert!(s.embedder.take().is_empty());
}

#[tokio::test]
async fn changed_chunk_settings_reindex_everything() {
    let s = Setup::new();
    s.write("crab.md", CRAB);
    s.write("match.md", MATCH);
    let (indexer, _) = s.indexer(&s.docs(), 1000);
    indexer.run().await.unwrap();
    s.embedder.take();
    let (indexer, store) = s.indexer(&s.docs(), 40);
    let report = indexer.run().await.unwrap();
    assert!(report.settings_changed, "{report}");
    assert_eq!(report.deleted_chunks, 2);
    assert!(report.embedded_chunks > 2, "smaller chunks: more of them ({report})");
    assert_eq!(s.embedder.take().len(), report.embedded_chunks);
    assert_eq!(store.count(), report.total_chunks);
    assert!(store.documents().iter().all(|d| d.content.len() <= 40));
}

#[tokio::test]
async fn a_file_that_fails_to_load_keeps_its_chunks() {
    let s = Setup::new();
    s.write("crab.md", CRAB);
    s.write("match.md", MATCH);
    let (indexer, _) = s.indexer(&s.docs(), 1000);
    indexer.run().await.unwrap();
    s.embedder.take();
    std::fs::write(s.docs().join("crab.md"), [0xff, 0xfe, 0x00, 0xc3]).unwrap(); // not UTF-8
    let (indexer, store) = s.indexer(&s.docs(), 1000);
    let report = indexer.run().await.unwrap();
    assert_eq!(report.failed.len(), 1, "{report}");
    assert!(report.failed[0].0.ends_with("crab.md"));
    assert!(report.removed.is_empty(), "a failed load is not a removal: {report}");
    assert_eq!(store.count(), 2);
    assert!(store.documents().iter().any(|d| d.content.contains("Ferris")));
    let record = IndexRecord::read(&s.record_path()).unwrap().unwrap();
    assert_eq!(record.sources.len(), 2);
}

#[tokio::test]
async fn a_missing_folder_or_an_unwritable_record_fail_before_any_work() {
    let s = Setup::new();
    let store: Arc<dyn VectorStore> = Arc::new(s.store());
    let splitter = || RecursiveCharacterTextSplitter::new(100, 0).unwrap();
    let embedder: Arc<dyn Embedder> = Arc::new(s.embedder.clone());
    let missing = Indexer::new(s.dir.path().join("nope"), splitter(), embedder.clone(), store.clone(), s.record_path());
    let err = missing.unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
    std::fs::write(s.dir.path().join("a-file"), b"x").unwrap();
    let unwritable = Indexer::new(s.docs(), splitter(), embedder, store, s.dir.path().join("a-file/record.json"));
    let err = unwritable.unwrap_err().to_string();
    assert!(err.contains("a-file"), "{err}");
    assert!(s.embedder.take().is_empty());
}

#[tokio::test]
async fn progress_is_published_and_the_record_is_written_atomically() {
    let s = Setup::new();
    for i in 0..5 {
        s.write(&format!("f{i}.md"), &format!("{MATCH} Variant {i}."));
    }
    let (indexer, _) = s.indexer(&s.docs(), 1000);
    let progress = indexer.progress();
    let report = indexer.run().await.unwrap();
    let last = *progress.borrow();
    assert_eq!(last.phase, IndexPhase::Done);
    assert_eq!((last.files, last.chunks_total, last.chunks_done), (5, 5, 5));
    assert_eq!(report.total_chunks, 5);
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
