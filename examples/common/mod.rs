//! Shared by the `rag` and `rag_eval` examples: choosing the embedder, and building or incrementally updating an
//! index of a folder.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use catena::vectorstores::{InMemoryStore, Metric};
use catena::{
    DirectoryLoader, Document, EmbeddedDocument, Embedder, Filter, Loader, RecursiveCharacterTextSplitter,
    TextSplitter, VectorStore, CONTENT_HASH_KEY, SOURCE_KEY,
};
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
) -> Result<InMemoryStore> {
    let include = vec!["**/*.md".to_string()];
    let options = IndexOptions { docs, include: &include, index, chunk_size, chunk_overlap, progress: true };
    let (store, stats) = index_folder(embedder, options).await?;
    eprintln!("index: {stats}");
    Ok(store)
}

/// What an indexing pass did.
#[derive(Debug, Default)]
pub struct IndexStats {
    /// Files seen in the folder.
    pub files: usize,
    /// Files new since the last run.
    pub added: usize,
    /// Files whose content changed.
    pub changed: usize,
    /// Files gone from the folder.
    pub removed: usize,
    /// Chunks embedded in this run.
    pub embedded_chunks: usize,
    /// Chunks in the index after the run.
    pub total_chunks: usize,
    /// Files that could not be loaded.
    pub failures: usize,
}

impl std::fmt::Display for IndexStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files ({} added, {} changed, {} removed, {} unchanged, {} failed); embedded {} chunks; index holds {}",
            self.files,
            self.added,
            self.changed,
            self.removed,
            self.files - self.added - self.changed,
            self.failures,
            self.embedded_chunks,
            self.total_chunks
        )
    }
}

/// Options of [`index_folder`].
pub struct IndexOptions<'a> {
    /// The folder to index.
    pub docs: &'a Path,
    /// Include globs (relative to the folder).
    pub include: &'a [String],
    /// Where to save the index (and load the previous one from).
    pub index: Option<&'a PathBuf>,
    /// Chunk size in characters.
    pub chunk_size: usize,
    /// Chunk overlap in characters.
    pub chunk_overlap: usize,
    /// Show a progress bar.
    pub progress: bool,
}

/// Loads the folder, and (re-)embeds only files that are new or changed since the saved index; drops files that
/// are gone. Saves the index when a path is given.
pub async fn index_folder(embedder: &Arc<dyn Embedder>, opts: IndexOptions<'_>) -> Result<(InMemoryStore, IndexStats)> {
    let store = match opts.index {
        Some(path) => InMemoryStore::open_for_embedder(path, embedder.as_ref(), Metric::Cosine)?,
        None => InMemoryStore::for_embedder(embedder.as_ref(), Metric::Cosine)?,
    };
    let mut loader = DirectoryLoader::new(opts.docs);
    for glob in opts.include {
        loader = loader.with_include(glob)?;
    }
    let report = loader.load().await;
    let mut stats = IndexStats { failures: report.failures.len(), ..Default::default() };
    for failure in &report.failures {
        eprintln!("warning: could not load {}: {}", failure.path.display(), failure.error);
    }
    if report.documents.is_empty() && report.failures.is_empty() {
        bail!("no documents matched {:?} in {}", opts.include, opts.docs.display());
    }

    // What the index holds: source -> content hash of the file it was built from.
    let mut indexed: BTreeMap<String, String> = BTreeMap::new();
    for doc in store.documents() {
        if let (Some(src), Some(hash)) = (doc.source(), doc.metadata.get(CONTENT_HASH_KEY).and_then(|v| v.as_str())) {
            indexed.insert(src.to_string(), hash.to_string());
        }
    }
    let splitter = RecursiveCharacterTextSplitter::new(opts.chunk_size, opts.chunk_overlap)?;
    let mut to_embed: Vec<Document> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    stats.files = report.documents.len();
    for doc in &report.documents {
        let source = doc.source().context("loader produced a document without a source")?.to_string();
        let hash = doc.metadata.get(CONTENT_HASH_KEY).and_then(|v| v.as_str()).unwrap_or_default();
        seen.insert(source.clone());
        match indexed.get(&source) {
            Some(h) if h == hash => continue,
            Some(_) => {
                stats.changed += 1;
                store.delete_where(&Filter::eq(SOURCE_KEY, source.as_str())).await?;
            }
            None => stats.added += 1,
        }
        to_embed.extend(splitter.split_documents(std::slice::from_ref(doc)));
    }
    for source in indexed.keys().filter(|s| !seen.contains(*s)) {
        stats.removed += 1;
        store.delete_where(&Filter::eq(SOURCE_KEY, source.as_str())).await?;
    }

    let bar = if opts.progress && !to_embed.is_empty() {
        let bar = ProgressBar::new(to_embed.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("embedding {bar:40} {pos}/{len} chunks [{elapsed_precise}, eta {eta}]")
                .expect("valid progress template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    for batch in to_embed.chunks(64) {
        let texts: Vec<String> = batch.iter().map(|d| d.content.clone()).collect();
        let vectors = embedder.embed_documents(&texts).await?;
        let docs = batch.iter().cloned().zip(vectors).map(|(document, vector)| EmbeddedDocument { document, vector });
        store.upsert(docs.collect()).await?;
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    stats.embedded_chunks = to_embed.len();
    stats.total_chunks = store.count();
    if let Some(path) = opts.index {
        if stats.embedded_chunks > 0 || stats.removed > 0 || !path.exists() {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            store.save(path)?;
        }
    }
    Ok((store, stats))
}
