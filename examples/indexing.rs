//! Incremental indexing: keep a folder embedded in a vector store, re-embedding only what changed.
//!
//! ```text
//! cargo run --example indexing --features local-embed -- ../shared/corpora/rust-book
//! ```
//!
//! Three chapters of the Rust book (from the folder given, default `../shared/corpora/rust-book`) are copied to
//! a temporary folder and indexed with the in-process all-MiniLM-L6-v2 embedder (`CATENA_EMBED_MODEL`, else the
//! copy `scripts/setup.sh` installs) into an `InMemoryStore`. The `Indexer` records each file's hash, so the second
//! run embeds nothing and the third, after one file changed, only that file. Then a `VectorRetriever` query.
//! `CATENA_TRACE_DB=<file>` records the embedding calls and the retrieval for the studio.

#[path = "common/trace.rs"]
mod traces;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use catena::index::Indexer;
use catena::providers::local_embed::LocalEmbedder;
use catena::text::RecursiveCharacterTextSplitter;
use catena::vectorstores::{InMemoryStore, Metric};
use catena::{Embedder, Retriever, VectorRetriever};

const CHAPTERS: [&str; 3] =
    ["ch03-01-variables-and-mutability.md", "ch08-03-hash-maps.md", "ch12-02-reading-a-file.md"];

#[tokio::main]
async fn main() -> Result<()> {
    let tracing = traces::init()?; // the log, and run recording when CATENA_TRACE_DB is set
    let book = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "../shared/corpora/rust-book".into()));
    let docs = tempfile::tempdir()?;
    for chapter in CHAPTERS {
        let from = book.join(chapter);
        std::fs::copy(&from, docs.path().join(chapter)).with_context(|| format!("copying {}", from.display()))?;
    }

    let embedder: Arc<dyn Embedder> = Arc::new(tokio::task::spawn_blocking(LocalEmbedder::from_env).await??);
    let embedder = tracing.embedder(embedder);
    let store = Arc::new(InMemoryStore::for_embedder(embedder.as_ref(), Metric::Cosine)?);
    let splitter = RecursiveCharacterTextSplitter::new(1000, 200)?;
    let record = docs.path().join("index.record.json"); // what was indexed from where; not itself indexed
    let indexer =
        Indexer::new(docs.path(), splitter, embedder.clone(), store.clone(), record)?.with_include("**/*.md")?;

    println!("first run:  {}", indexer.run().await?);
    let second = indexer.run().await?;
    println!("second run: {second}");
    println!("second run re-embedded {} chunks", second.embedded_chunks);

    let changed = docs.path().join(CHAPTERS[2]);
    let text = std::fs::read_to_string(&changed)?;
    std::fs::write(&changed, text + "\nReading a whole file into a `String` is one call: `fs::read_to_string`.\n")?;
    println!("third run:  {}", indexer.run().await?);

    let retriever = tracing.retriever(Arc::new(VectorRetriever::new(embedder, store).with_k(3)));
    for hit in retriever.retrieve("How do I read a file into a string?").await? {
        let source = hit.document.source().unwrap_or("?").rsplit('/').next().unwrap_or("?");
        println!("{:.3} {source}: {}", hit.score, hit.document.content.lines().next().unwrap_or(""));
    }
    Ok(())
}
