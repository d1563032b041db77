//! Answer quality of the RAG example on the Rust book: for each question of a set, does the answer end on its
//! own before the token limit, is it free of degenerate repetition, and does it cite a source it was given?
//!
//! ```text
//! bash .ci/fetch-minilm.sh && bash .ci/fetch-smollm2.sh
//! cargo run --release --example rag_answers --features local -- --docs ../shared/corpora/rust-book \
//!     --index target/rust-book.idx
//! ```
//!
//! The model is the RAG example's: `--model` / CATENA_LLM_MODEL, else the offline default SmolLM2-135M-Instruct,
//! with the model's own sampling settings and the default `RagChain` prompt; question `i` uses seed
//! `--seed + i`, so a run is reproducible on one machine. The questions (`examples/data/rust_book_answers.jsonl`)
//! were written for this check and are not used to tune anything.
//!
//! An answer is **degenerate** when one sentence (or line) of at least 8 characters occurs 3 or more times;
//! it **ends on its own** when the model stopped before `--max-tokens`; it **cites** when it contains `[n]`
//! (or `[n, m]`) with `n` among the numbers of the sources it was given. The last line is
//! `rag_answers: questions=N non_degenerate=F ended=F cited=F all=F answer_tokens_per_wall_s=T` (answer tokens over
//! the wall time of whole questions: retrieval and prompt included); with `--min-all F` the run
//! fails when the fraction of answers passing all three checks is below `F`. `CATENA_TRACE_DB=<file>` records every
//! question's run (chain, retrieval, model call) for the studio.

mod common;
#[path = "common/trace.rs"]
mod traces;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use catena::{Chain, ChatRequest, FinishReason, Llm, RagChain, VectorRetriever};
use clap::Parser;
use serde::Deserialize;

use common::{EmbedderKind, DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE};

/// Measure RAG answer quality on a question set.
#[derive(Debug, Parser)]
struct Args {
    /// The folder of documents.
    #[arg(long)]
    docs: PathBuf,
    /// The questions (JSON lines: {"question"}).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/rust_book_answers.jsonl"))]
    questions: PathBuf,
    /// Cache the index here (re-used on the next run).
    #[arg(long)]
    index: Option<PathBuf>,
    /// A local GGUF model (default: CATENA_LLM_MODEL, else the offline default model).
    #[arg(long, env = "CATENA_LLM_MODEL")]
    model: Option<PathBuf>,
    /// Sources per question.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Token limit per answer.
    #[arg(long, default_value_t = 512)]
    max_tokens: u32,
    /// Seed of the first question (question i uses seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Only the first N questions.
    #[arg(long)]
    limit: Option<usize>,
    /// Fail when the fraction of answers passing all checks is below this.
    #[arg(long)]
    min_all: Option<f64>,
    /// Print every answer.
    #[arg(long)]
    verbose: bool,
    /// llama.cpp threads (default: LocalLlmOptions' default, all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Add the DRY repetition penalty (DryParams::recommended) to the model's sampling settings.
    #[arg(long)]
    dry: bool,
}

#[derive(Debug, Deserialize)]
struct Case {
    question: String,
}

/// The checks of one answer.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    non_degenerate: bool,
    ended: bool,
    cited: bool,
}

impl Verdict {
    fn all(&self) -> bool {
        self.non_degenerate && self.ended && self.cited
    }
}

/// True when some sentence or line of at least 8 characters occurs 3 or more times.
fn degenerate(text: &str) -> bool {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for piece in text.split(['.', '!', '?', '\n']) {
        let normalized = piece.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        if normalized.chars().count() < 8 {
            continue;
        }
        let n = counts.entry(normalized).or_insert(0);
        *n += 1;
        if *n >= 3 {
            return true;
        }
    }
    false
}

fn judge(text: &str, finish_reason: Option<&FinishReason>, sources: usize) -> Verdict {
    Verdict {
        non_degenerate: !degenerate(text),
        ended: finish_reason == Some(&FinishReason::Stop),
        cited: common::citations(text).iter().any(|&n| (1..=sources).contains(&n)),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let tracing = traces::init()?; // the log, and run recording when CATENA_TRACE_DB is set
    let args = Args::parse();
    let mut cases: Vec<Case> = common::read_jsonl(&args.questions)?;
    if let Some(limit) = args.limit {
        cases.truncate(limit);
    }
    if cases.is_empty() {
        bail!("no questions in {}", args.questions.display());
    }

    let embedder = common::embedder(EmbedderKind::Local, None).await?;
    let store =
        common::index_markdown(&embedder, &args.docs, args.index.as_ref(), DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_OVERLAP)
            .await?;
    let retriever = tracing.retriever(Arc::new(VectorRetriever::new(embedder, store.shared()).with_k(args.k)));
    let llm = tracing.llm(load_llm(args.model.as_deref(), args.threads, args.dry)?);
    eprintln!("model: {}", llm.default_model().unwrap_or_default());

    let (mut non_degenerate, mut ended, mut cited, mut all) = (0usize, 0usize, 0usize, 0usize);
    let (mut tokens, mut seconds) = (0u64, 0f64);
    for (i, case) in cases.iter().enumerate() {
        let request =
            ChatRequest::default().with_max_tokens(args.max_tokens).with_seed(args.seed.wrapping_add(i as u64));
        let rag = RagChain::new(retriever.clone(), llm.clone())?
            .with_request(request)
            .with_recorded_content(tracing.record_content());
        let start = Instant::now();
        let answer = rag.invoke(case.question.clone()).await?;
        seconds += start.elapsed().as_secs_f64();
        let out = answer.usage.map_or(0, |u| u.output_tokens);
        tokens += out;
        let verdict = judge(&answer.text, answer.finish_reason.as_ref(), answer.sources.len());
        non_degenerate += usize::from(verdict.non_degenerate);
        ended += usize::from(verdict.ended);
        cited += usize::from(verdict.cited);
        all += usize::from(verdict.all());
        let flag = |ok: bool, name: &'static str| if ok { "" } else { name };
        eprintln!(
            "{:>3} {:<60} {:>4} tokens {}{}{}",
            i + 1,
            case.question,
            out,
            flag(verdict.non_degenerate, " DEGENERATE"),
            flag(verdict.ended, " CUT"),
            flag(verdict.cited, " NO-CITATION"),
        );
        if args.verbose || !verdict.all() {
            eprintln!("    {}", answer.text.trim().replace('\n', "\n    "));
        }
    }
    let n = cases.len() as f64;
    let fraction = |k: usize| k as f64 / n;
    println!(
        "rag_answers: questions={} non_degenerate={:.3} ended={:.3} cited={:.3} all={:.3} answer_tokens_per_wall_s={:.1}",
        cases.len(),
        fraction(non_degenerate),
        fraction(ended),
        fraction(cited),
        fraction(all),
        tokens as f64 / seconds.max(1e-9)
    );
    if let Some(min) = args.min_all {
        if fraction(all) < min {
            bail!("only {all} of {} answers passed all checks (below --min-all {min})", cases.len());
        }
    }
    Ok(())
}

#[cfg(feature = "llama-cpp")]
fn load_llm(model: Option<&std::path::Path>, threads: Option<usize>, dry: bool) -> Result<Arc<dyn Llm>> {
    use catena::providers::llama::{model_path_from_env, DryParams, LocalLlm, LocalLlmOptions, SamplingDefaults};
    let path = match model {
        Some(path) => path.to_path_buf(),
        None => model_path_from_env()?,
    };
    let mut options = LocalLlmOptions::default();
    if let Some(threads) = threads {
        options.threads = threads;
    }
    let llm = LocalLlm::from_gguf(&path, options.clone())?;
    if !dry {
        return Ok(Arc::new(llm));
    }
    let sampling = catena::providers::llama::SamplingParams { dry: Some(DryParams::recommended()), ..llm.sampling() };
    drop(llm);
    options.sampling = SamplingDefaults::Fixed(sampling);
    Ok(Arc::new(LocalLlm::from_gguf(path, options)?))
}

#[cfg(not(feature = "llama-cpp"))]
fn load_llm(_model: Option<&std::path::Path>, _threads: Option<usize>, _dry: bool) -> Result<Arc<dyn Llm>> {
    bail!("answers need a local model: build with --features local")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_is_degenerate() {
        assert!(degenerate("#[unlikely(1)]\n#[unlikely(1)]\n#[unlikely(1)]\n"));
        assert!(!degenerate("Use a loop. Use a loop. Then stop."));
        assert!(!degenerate("Short. Short. Short. Short."));
    }

    #[test]
    fn citations_are_read() {
        assert_eq!(common::citations("As [1] and [2, 3] say; not [x] or [ ]."), vec![1, 2, 3]);
        let v = judge("It is in [6].", Some(&FinishReason::Stop), 5);
        assert!(!v.cited && v.ended && v.non_degenerate);
    }
}
