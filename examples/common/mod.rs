//! Shared by the `rag` and `rag_eval` examples: choosing the embedder, and building or incrementally updating an
//! index of a folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use catena::index::{IndexPhase, IndexReport, Indexer};
use catena::text::RecursiveCharacterTextSplitter;
use catena::vectorstores::{Bm25Index, InMemoryStore, Metric, SqliteStore};
#[cfg(feature = "chroma")]
use catena::vectorstores::{ChromaConfig, ChromaStore};
#[cfg(feature = "qdrant")]
use catena::vectorstores::{QdrantConfig, QdrantStore};
use catena::{Document, Embedder, EnsembleRetriever, Filter, Retriever, VectorStore};
use indicatif::{ProgressBar, ProgressStyle};

/// Default chunking, tuned on the rust-book evaluation set (see BENCHMARKS.md).
pub const DEFAULT_CHUNK_SIZE: usize = 1000;
/// Default overlap between chunks.
pub const DEFAULT_CHUNK_OVERLAP: usize = 200;

/// How the example picks its embedder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbedderKind {
    /// In-process all-MiniLM-L6-v2 (or the model in `--embed-model` / CATENA_EMBED_MODEL).
    Local,
    /// An OpenAI-compatible `/embeddings` endpoint (OPENAI_BASE_URL, OPENAI_API_KEY, CATENA_EMBEDDING_MODEL).
    Openai,
}

/// Where the index lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// One SQLite file at `--index` (crash-safe, written as it goes; BM25 keyword search built in).
    Sqlite,
    /// An in-memory store, saved to the `--index` file after indexing.
    Memory,
    /// A collection on a Chroma server (`--store-url`, default http://127.0.0.1:8000; feature `chroma`).
    Chroma,
    /// A collection on a Qdrant server (`--store-url`, its gRPC port, default http://127.0.0.1:6334; feature
    /// `qdrant`).
    Qdrant,
}

/// The default URL of a server store.
pub fn default_store_url(kind: StoreKind) -> Option<&'static str> {
    match kind {
        StoreKind::Chroma => Some("http://127.0.0.1:8000"),
        StoreKind::Qdrant => Some("http://127.0.0.1:6334"),
        StoreKind::Sqlite | StoreKind::Memory => None,
    }
}

/// The store an index lives in.
#[derive(Debug, Clone)]
pub enum IndexStore {
    /// In memory (saved to `--index` when one is given).
    Memory(InMemoryStore),
    /// A SQLite file.
    Sqlite(SqliteStore),
    /// A Chroma collection.
    #[cfg(feature = "chroma")]
    Chroma(ChromaStore),
    /// A Qdrant collection.
    #[cfg(feature = "qdrant")]
    Qdrant(QdrantStore),
}

impl IndexStore {
    /// The store as a shared trait object, for retrievers and the indexer.
    pub fn shared(&self) -> Arc<dyn VectorStore> {
        match self {
            IndexStore::Memory(s) => Arc::new(s.clone()),
            IndexStore::Sqlite(s) => Arc::new(s.clone()),
            #[cfg(feature = "chroma")]
            IndexStore::Chroma(s) => Arc::new(s.clone()),
            #[cfg(feature = "qdrant")]
            IndexStore::Qdrant(s) => Arc::new(s.clone()),
        }
    }

    /// Every indexed chunk.
    pub async fn documents(&self) -> Result<Vec<Document>> {
        Ok(match self {
            IndexStore::Memory(s) => s.documents(),
            IndexStore::Sqlite(s) => s.documents_where(&Filter::And(vec![])).await?,
            #[cfg(feature = "chroma")]
            IndexStore::Chroma(s) => s.documents_where(&Filter::And(vec![])).await?,
            #[cfg(feature = "qdrant")]
            IndexStore::Qdrant(s) => s.documents_where(&Filter::And(vec![])).await?,
        })
    }

    /// BM25 keyword search returning `k` documents: the SQLite file's own FTS5 index, Qdrant's sparse BM25 vector,
    /// or for the other stores a `Bm25Index` built in memory from every indexed chunk.
    pub async fn keyword_retriever(&self, k: usize) -> Result<Arc<dyn Retriever>> {
        Ok(match self {
            IndexStore::Sqlite(s) => Arc::new(s.keyword_retriever(k)),
            #[cfg(feature = "qdrant")]
            IndexStore::Qdrant(s) => Arc::new(s.keyword_retriever(k)),
            other => Arc::new(Bm25Index::new(other.documents().await?).retriever(k)),
        })
    }

    /// Hybrid retrieval of `k` documents: on Qdrant one server call fusing its BM25 and dense searches; on the
    /// other stores the keyword retriever and `dense` fused here, both by reciprocal rank fusion.
    pub async fn hybrid_retriever(
        &self,
        embedder: &Arc<dyn Embedder>,
        dense: Arc<dyn Retriever>,
        k: usize,
    ) -> Result<Arc<dyn Retriever>> {
        #[cfg(feature = "qdrant")]
        if let IndexStore::Qdrant(s) = self {
            return Ok(Arc::new(s.hybrid_retriever(embedder.clone(), k)));
        }
        let _ = embedder;
        Ok(Arc::new(EnsembleRetriever::new(k).with(self.keyword_retriever(k).await?, 1.0)?.with(dense, 1.0)?))
    }
}

/// Builds the embedder.
pub async fn embedder(kind: EmbedderKind, model_dir: Option<&Path>) -> Result<Arc<dyn Embedder>> {
    match kind {
        EmbedderKind::Local => local_embedder(model_dir),
        EmbedderKind::Openai => {
            let client = catena::providers::openai::OpenAiClient::from_env()?;
            Ok(Arc::new(client.default_embedder()?))
        }
    }
}

#[cfg(feature = "local-embed")]
fn local_embedder(model_dir: Option<&Path>) -> Result<Arc<dyn Embedder>> {
    use catena::providers::local_embed::LocalEmbedder;
    let e = match model_dir {
        Some(dir) => LocalEmbedder::from_dir(dir)?,
        None => LocalEmbedder::from_env()?,
    };
    Ok(Arc::new(e))
}

#[cfg(not(feature = "local-embed"))]
fn local_embedder(_model_dir: Option<&Path>) -> Result<Arc<dyn Embedder>> {
    bail!(
        "the local embedder needs the `local-embed` feature: cargo run --release --example rag --features local-embed"
    )
}

/// Reads a JSON-lines file: one value per non-blank line; errors name the file and the line.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), i + 1)))
        .collect()
}

/// Indexes the Markdown files of `docs` (what the evaluation examples use), with a progress bar, and reports
/// the indexing pass on stderr.
pub async fn index_markdown(
    embedder: &Arc<dyn Embedder>,
    docs: &Path,
    index: Option<&PathBuf>,
    chunk_size: usize,
    chunk_overlap: usize,
) -> Result<IndexStore> {
    let include = vec!["**/*.md".to_string()];
    let options = IndexOptions {
        docs,
        include: &include,
        index,
        store: StoreKind::Sqlite,
        store_url: None,
        collection: "catena-rag",
        chunk_size,
        chunk_overlap,
        progress: true,
    };
    let (store, stats) = index_folder(embedder, options).await?;
    eprintln!("index: {stats}");
    Ok(store)
}

/// Options of [`index_folder`].
pub struct IndexOptions<'a> {
    /// The folder to index.
    pub docs: &'a Path,
    /// Include globs (relative to the folder).
    pub include: &'a [String],
    /// Where to save the index (and load the previous one from); its record goes beside it
    /// (`<index>.record.json`). Without one, the index lives in memory for this run only.
    pub index: Option<&'a PathBuf>,
    /// What `index` is: a SQLite file or an in-memory store's file (without `index`, memory); or a server store,
    /// where `index` only names the record of indexed files.
    pub store: StoreKind,
    /// The server of a Chroma or Qdrant store (default: [`default_store_url`]).
    pub store_url: Option<&'a str>,
    /// The collection of a Chroma or Qdrant store.
    pub collection: &'a str,
    /// Chunk size in characters.
    pub chunk_size: usize,
    /// Chunk overlap in characters.
    pub chunk_overlap: usize,
    /// Show a progress bar.
    pub progress: bool,
}

/// Connects to the Chroma or Qdrant collection of `opts` (creating it when missing).
async fn server_store(embedder: &Arc<dyn Embedder>, opts: &IndexOptions<'_>) -> Result<IndexStore> {
    let url = opts.store_url.or(default_store_url(opts.store)).unwrap_or_default().to_string();
    let dim = embedder.dimensions();
    match opts.store {
        #[cfg(feature = "chroma")]
        StoreKind::Chroma => {
            let config = ChromaConfig::new(url, opts.collection);
            Ok(IndexStore::Chroma(ChromaStore::connect(config, dim, Metric::Cosine).await?))
        }
        #[cfg(feature = "qdrant")]
        StoreKind::Qdrant => {
            // Server-side BM25 for --retrieval hybrid; 1,000-character chunks hold about 100 words after stop words.
            let config = QdrantConfig::new(url, opts.collection).with_bm25(100.0);
            Ok(IndexStore::Qdrant(QdrantStore::connect(config, dim, Metric::Cosine).await?))
        }
        other => {
            let _ = (url, dim);
            let name = format!("{other:?}").to_lowercase();
            bail!(
                "--store {name} needs the `{name}` feature: add it to --features (for example --features local,{name})"
            )
        }
    }
}

/// Brings the index of the folder up to date with the library's `Indexer` (re-embeds only what changed), with a
/// progress bar; failed files are warned about, an empty folder is an error.
pub async fn index_folder(embedder: &Arc<dyn Embedder>, opts: IndexOptions<'_>) -> Result<(IndexStore, IndexReport)> {
    let scratch;
    let (store, record) = match (opts.store, opts.index) {
        (StoreKind::Chroma | StoreKind::Qdrant, index) => {
            let record = match index {
                Some(path) => {
                    let mut record = path.as_os_str().to_owned();
                    record.push(".record.json");
                    PathBuf::from(record)
                }
                None => {
                    scratch = tempfile::tempdir()?;
                    scratch.path().join("record.json")
                }
            };
            (server_store(embedder, &opts).await?, record)
        }
        (_, index) => match index {
            Some(path) => {
                let mut record = path.as_os_str().to_owned();
                record.push(".record.json");
                let store = match opts.store {
                    StoreKind::Sqlite => IndexStore::Sqlite(
                        SqliteStore::open_for_embedder(path, embedder.as_ref(), Metric::Cosine).await.with_context(
                            || {
                                format!(
                                    "cannot open the index {} (an index written with --store memory?)",
                                    path.display()
                                )
                            },
                        )?,
                    ),
                    _ => IndexStore::Memory(InMemoryStore::open_for_embedder(path, embedder.as_ref(), Metric::Cosine)?),
                };
                (store, PathBuf::from(record))
            }
            None => {
                scratch = tempfile::tempdir()?;
                let store = IndexStore::Memory(InMemoryStore::for_embedder(embedder.as_ref(), Metric::Cosine)?);
                (store, scratch.path().join("record.json"))
            }
        },
    };
    let splitter = RecursiveCharacterTextSplitter::new(opts.chunk_size, opts.chunk_overlap)?;
    let mut indexer = Indexer::new(opts.docs, splitter, embedder.clone(), store.shared(), record)
        .with_context(|| format!("cannot index {}", opts.docs.display()))?;
    for glob in opts.include {
        indexer = indexer.with_include(glob)?;
    }
    let mut progress = indexer.progress();
    let show = opts.progress;
    let bar_task = tokio::spawn(async move {
        let bar = ProgressBar::hidden();
        while progress.changed().await.is_ok() {
            let p = *progress.borrow_and_update();
            if show && p.phase == IndexPhase::Embedding && p.chunks_total > 0 && bar.is_hidden() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_length(p.chunks_total as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "embedding {bar:40} {pos}/{len} chunks [{elapsed_precise}, eta {eta}]",
                    )
                    .expect("valid progress template"),
                );
            }
            bar.set_position(p.chunks_done as u64);
            if p.phase == IndexPhase::Done {
                break;
            }
        }
        bar.finish_and_clear();
    });
    let report = indexer.run().await;
    let _ = bar_task.await;
    let report = report?;
    for (path, error) in &report.failed {
        eprintln!("warning: could not load {}: {error}", path.display());
    }
    if report.files == 0 && report.failed.is_empty() {
        bail!("no documents matched {:?} in {}", opts.include, opts.docs.display());
    }
    Ok((store, report))
}

/// The source numbers cited as `[n]` or `[n, m, ...]`.
pub fn citations(text: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inside = &rest[..close];
        let numbers: Option<Vec<usize>> = inside.split(',').map(|n| n.trim().parse().ok()).collect();
        if let Some(numbers) = numbers {
            found.extend(numbers);
        }
    }
    found
}
