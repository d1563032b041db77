//! Retrieval quality on the Rust book: for each question of an evaluation set, is the chapter that answers it
//! among the top-k retrieved chunks (recall@k), and how high (MRR@10)?
//!
//! ```text
//! cargo run --release --example rag_eval --features local-embed -- --docs ../shared/corpora/rust-book
//! ```
//!
//! The evaluation set (`examples/data/rust_book_eval.jsonl`) holds questions written for this purpose, each with
//! the chapter file(s) that answer it. Use `--chunk-size`, `--chunk-overlap`, `--mmr-lambda` and `--hybrid` (BM25
//! and dense search fused by reciprocal rank fusion; needs `--index`, a SQLite file) to compare settings; the
//! last line is `rag_eval: questions=N recall@K=R mrr@10=M`. `CATENA_TRACE_DB=<file>` records every retrieval (the
//! ranked ids, scores and sources) for the studio.

mod common;
#[path = "common/trace.rs"]
mod traces;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use catena::providers::local_embed::CrossEncoder;
use catena::{EnsembleRetriever, MmrRetriever, RerankingRetriever, Retriever, VectorRetriever};
use clap::Parser;
use serde::Deserialize;

use common::{EmbedderKind, DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE};

/// Measure retrieval quality on an evaluation set.
#[derive(Debug, Parser)]
struct Args {
    /// The folder of documents.
    #[arg(long)]
    docs: PathBuf,
    /// The evaluation set (JSON lines: {"question", "expected": [file names]}).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/rust_book_eval.jsonl"))]
    eval: PathBuf,
    /// Cache the index here (re-used when settings match; delete it after changing chunking).
    #[arg(long)]
    index: Option<PathBuf>,
    /// Cut-off for recall.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Chunk size in characters.
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
    chunk_size: usize,
    /// Chunk overlap in characters.
    #[arg(long, default_value_t = DEFAULT_CHUNK_OVERLAP)]
    chunk_overlap: usize,
    /// Use MMR with this lambda instead of plain similarity.
    #[arg(long)]
    mmr_lambda: Option<f32>,
    /// Fuse BM25 keyword search with the dense (or MMR) results (the SQLite index's FTS5 table with --index, else
    /// a BM25 index in memory).
    #[arg(long)]
    hybrid: bool,
    /// Rerank the top candidates with the cross-encoder in this directory (config.json, tokenizer.json,
    /// model.safetensors; for example cross-encoder/ms-marco-MiniLM-L-6-v2).
    #[arg(long)]
    rerank: Option<PathBuf>,
    /// How many candidates the reranker sees.
    #[arg(long, default_value_t = 20)]
    rerank_candidates: usize,
    /// Which embedder to use.
    #[arg(long, value_enum, default_value_t = EmbedderKind::Local)]
    embedder: EmbedderKind,
    /// Directory of a local sentence-embedding model (default: CATENA_EMBED_MODEL).
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// Print every question's result.
    #[arg(long)]
    verbose: bool,
}

#[derive(Debug, Deserialize)]
struct Case {
    question: String,
    expected: Vec<String>,
}

fn file_name(source: &str) -> &str {
    Path::new(source).file_name().and_then(|f| f.to_str()).unwrap_or(source)
}

#[tokio::main]
async fn main() -> Result<()> {
    let tracing = traces::init()?; // the log, and run recording when CATENA_TRACE_DB is set
    let args = Args::parse();
    let cases: Vec<Case> = common::read_jsonl(&args.eval)?;

    let embedder = common::embedder(args.embedder, args.embed_model.as_deref()).await?;
    let index =
        common::index_markdown(&embedder, &args.docs, args.index.as_ref(), args.chunk_size, args.chunk_overlap).await?;
    let store = index.shared();
    let depth = args.k.max(10);
    // With a reranker, the first stage fetches more candidates and the reranker keeps `depth`.
    let fetch = if args.rerank.is_some() { args.rerank_candidates.max(depth) } else { depth };
    let dense: Arc<dyn Retriever> = match args.mmr_lambda {
        Some(lambda) => Arc::new(
            MmrRetriever::new(embedder.clone(), store).with_k(fetch).with_fetch_k(fetch * 4).with_lambda(lambda)?,
        ),
        None => Arc::new(VectorRetriever::new(embedder.clone(), store).with_k(fetch)),
    };
    let retriever: Arc<dyn Retriever> = match (&index, args.hybrid) {
        (_, false) => dense,
        (index, true) => {
            Arc::new(EnsembleRetriever::new(fetch).with(index.keyword_retriever(fetch).await?, 1.0)?.with(dense, 1.0)?)
        }
    };

    let retriever: Arc<dyn Retriever> = match &args.rerank {
        None => retriever,
        Some(dir) => {
            let dir = dir.clone();
            let encoder = tokio::task::spawn_blocking(move || CrossEncoder::from_dir(dir)).await??;
            Arc::new(RerankingRetriever::new(retriever, Arc::new(encoder), depth))
        }
    };
    let retriever = tracing.retriever(retriever);

    let (mut hits, mut rr_sum) = (0usize, 0.0f64);
    for case in &cases {
        let results = retriever.retrieve(&case.question).await?;
        let rank = results
            .iter()
            .position(|r| r.document.source().is_some_and(|s| case.expected.iter().any(|e| e == file_name(s))))
            .map(|p| p + 1);
        if rank.is_some_and(|r| r <= args.k) {
            hits += 1;
        }
        if let Some(r) = rank {
            rr_sum += 1.0 / r as f64;
        }
        if args.verbose || rank.is_none_or(|r| r > args.k) {
            let top: Vec<&str> = results.iter().take(3).filter_map(|r| r.document.source()).map(file_name).collect();
            eprintln!(
                "{:>4} {:<70} top: {}",
                rank.map_or("-".to_string(), |r| r.to_string()),
                case.question,
                top.join(", ")
            );
        }
    }
    let n = cases.len().max(1) as f64;
    println!(
        "rag_eval: questions={} recall@{}={:.3} mrr@10={:.3} (chunk_size={} overlap={} mmr={:?} hybrid={} rerank={})",
        cases.len(),
        args.k,
        hits as f64 / n,
        rr_sum / n,
        args.chunk_size,
        args.chunk_overlap,
        args.mmr_lambda,
        args.hybrid,
        args.rerank.as_ref().map_or("none".to_string(), |d| d.display().to_string())
    );
    Ok(())
}
