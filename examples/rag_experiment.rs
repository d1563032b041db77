//! An experiment, LangSmith-style: run the RAG chain over a dataset of the trace store, score every answer with
//! evaluators, and record the results beside the runs, where the studio shows them and compares experiments.
//!
//! ```text
//! bash .ci/fetch-minilm.sh && bash .ci/fetch-smollm2.sh
//! cargo run --release --example rag_experiment --features local -- --docs ../shared/corpora/rust-book \
//!     --index target/rust-book.idx --db target/traces.db --name "k=5"
//! cargo run --release -p catena-studio -- --db target/traces.db      # Datasets > rust-book: the experiment
//! ```
//!
//! The dataset (`--dataset`, default `rust-book`) lives in the trace store `--db` (default `CATENA_TRACE_DB`).
//! When it does not exist yet it is created from `--questions` (default `examples/data/rust_book_reference.jsonl`:
//! questions written for this, each with a short reference answer and the chapters that hold it). A dataset made
//! in the studio from recorded runs of the `rag` example works as well: there an example's input is the question
//! and its reference the recorded answer.
//!
//! Every answer is scored by:
//! - `right_chapter` (this example's own [`Evaluator`]): the reciprocal rank of the first source that comes from
//!   a chapter the reference names (its `chapters`; for a recorded answer, the chapters of the sources it cites,
//!   else of its first source); passes when there is one;
//! - `cites_a_source`: the answer cites a source as `[n]` (a [`RegexMatch`]);
//! - `similar_to_reference`: the cosine similarity of the answer and the reference answer under the retrieval
//!   embedder (all-MiniLM-L6-v2 by default), passing at `--similarity-threshold`;
//! - with `--judge`, `llm_judge`: the answering model grades the answer against the reference ([`LlmJudge`]).
//!
//! Each answer is also recorded as a trace in the same file (the chain with its question and answer, the
//! retrieval, the model call), listed on the studio's Runs page beside the experiment. The model is chosen as in the `rag` example:
//! `--model` / `CATENA_LLM_MODEL`, `--provider` with its environment, or the offline default SmolLM2-135M-Instruct.
//! The last line is `rag_experiment: experiment=ID dataset=NAME examples=N failed=F` followed by each evaluator's
//! mean score.

mod common;
#[path = "common/llm.rs"]
mod llm;
#[path = "common/trace.rs"]
mod traces;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use catena::eval::{
    chain_task_with_usage, run_experiment, EmbeddingSimilarity, Evaluator, LlmJudge, RegexMatch, Score,
};
use catena::rag::Answer;
use catena::trace::TraceStore;
use catena::{ChatRequest, Llm, RagChain, VectorRetriever};
use clap::Parser;
use serde::Deserialize;
use serde_json::{json, Value};

use common::{EmbedderKind, DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE};

/// Run the RAG chain over a dataset and score the answers.
#[derive(Debug, Parser)]
#[command(name = "rag_experiment")]
struct Args {
    /// The folder of documents.
    #[arg(long)]
    docs: PathBuf,
    /// Cache the index here (re-used on the next run).
    #[arg(long)]
    index: Option<PathBuf>,
    /// The trace store: the dataset is read from it, and the experiment and every run are written to it.
    #[arg(long, env = "CATENA_TRACE_DB")]
    db: PathBuf,
    /// The dataset to run over.
    #[arg(long, default_value = "rust-book")]
    dataset: String,
    /// Questions to create the dataset from when it does not exist (JSON lines: {"question", "answer",
    /// "chapters"}).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/rust_book_reference.jsonl"))]
    questions: PathBuf,
    /// The experiment's name, shown in the studio (default: the settings, such as `k=5 max_tokens=256`).
    #[arg(long)]
    name: Option<String>,
    /// Sources per question.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Token limit per answer.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Sampling temperature (default: the model's own setting).
    #[arg(long)]
    temperature: Option<f32>,
    /// Seed of every answer, for a reproducible run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How many examples run at once (a local model answers one at a time anyway).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// The similarity to the reference answer at or above which `similar_to_reference` passes.
    #[arg(long, default_value_t = 0.6)]
    similarity_threshold: f64,
    /// Also grade each answer with the answering model as a judge (`llm_judge`).
    #[arg(long)]
    judge: bool,
    /// Which embedder to use (for retrieval and for `similar_to_reference`).
    #[arg(long, value_enum, default_value_t = EmbedderKind::Local)]
    embedder: EmbedderKind,
    /// Directory of a local sentence-embedding model (default: CATENA_EMBED_MODEL).
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// A local GGUF model to answer with (default: CATENA_LLM_MODEL, else the offline default model).
    #[arg(long, env = "CATENA_LLM_MODEL")]
    model: Option<PathBuf>,
    /// The model server, when no --model is given.
    #[command(flatten)]
    server: llm::ServerArgs,
}

/// A line of `--questions`.
#[derive(Debug, Deserialize)]
struct Question {
    question: String,
    answer: String,
    chapters: Vec<String>,
}

/// The file name of a source path (`src/ch04-03-slices.md` -> `ch04-03-slices.md`).
fn file_name(source: &str) -> &str {
    Path::new(source).file_name().and_then(|f| f.to_str()).unwrap_or(source)
}

/// Did retrieval find the right chapter? An evaluator of this example's own: any type implementing
/// [`Evaluator`] can score an experiment.
struct RightChapter;

impl RightChapter {
    /// The chapters the reference names: its `chapters` (this example's datasets); else, for an answer recorded
    /// by the `rag` example and saved as an example in the studio, the files of the sources that answer cites
    /// (`[n]`), or of its first source when it cites none.
    fn expected(reference: &Value) -> Vec<String> {
        let chapters: Vec<String> = reference["chapters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|s| file_name(s).to_string())
            .collect();
        if !chapters.is_empty() {
            return chapters;
        }
        let Ok(answer) = serde_json::from_value::<Answer>(reference.clone()) else { return Vec::new() };
        let cited = common::citations(&answer.text);
        let mut files: Vec<String> = answer
            .sources
            .iter()
            .filter(|s| if cited.is_empty() { s.rank == 1 } else { cited.contains(&s.rank) })
            .map(|s| file_name(&s.source).to_string())
            .collect();
        files.sort();
        files.dedup();
        files
    }
}

#[catena::async_trait]
impl Evaluator for RightChapter {
    fn name(&self) -> String {
        "right_chapter".into()
    }

    async fn evaluate(&self, _input: &Value, output: &Value, reference: Option<&Value>) -> catena::Result<Score> {
        let expected = reference.map(Self::expected).unwrap_or_default();
        if expected.is_empty() {
            return Err(catena::Error::InvalidInput(
                "right_chapter needs a reference naming its `chapters` (or a recorded answer with sources)".into(),
            ));
        }
        let answer: Answer = serde_json::from_value(output.clone())?;
        let found = answer.sources.iter().find(|s| expected.iter().any(|e| e == file_name(&s.source)));
        Ok(match found {
            Some(source) => Score::new(
                self.name(),
                1.0 / source.rank as f64,
                true,
                Some(format!("{} at rank {}", file_name(&source.source), source.rank)),
            ),
            None => {
                let got: Vec<&str> = answer.sources.iter().map(|s| file_name(&s.source)).collect();
                Score::new(
                    self.name(),
                    0.0,
                    false,
                    Some(format!("expected {}; retrieved {}", expected.join(", "), got.join(", "))),
                )
            }
        })
    }
}

/// Creates `dataset` from the questions file when the store has no dataset of that name; returns its size.
fn ensure_dataset(store: &TraceStore, dataset: &str, questions: &Path) -> Result<usize> {
    if store.dataset(dataset)?.is_some() {
        return Ok(store.examples(dataset)?.len());
    }
    let path = questions;
    let questions: Vec<Question> = common::read_jsonl(path)?;
    if questions.is_empty() {
        bail!("{} holds no questions", path.display());
    }
    store.create_dataset(dataset, "Questions on the Rust book with reference answers and chapters")?;
    for q in &questions {
        store.add_example(dataset, json!(q.question), Some(json!({"text": q.answer, "chapters": q.chapters})), None)?;
    }
    eprintln!("dataset {dataset}: created with {} examples", questions.len());
    Ok(questions.len())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tracing = traces::init_at(&args.db)?;
    if args.k == 0 || args.concurrency == 0 {
        bail!("--k and --concurrency must be at least 1");
    }
    let store = TraceStore::open(&args.db).with_context(|| format!("opening {}", args.db.display()))?;
    let examples = ensure_dataset(&store, &args.dataset, &args.questions)?;
    if examples == 0 {
        bail!("dataset {} has no examples: add some in the studio, or pick another --dataset", args.dataset);
    }

    let embedder = common::embedder(args.embedder, args.embed_model.as_deref()).await?;
    let index =
        common::index_markdown(&embedder, &args.docs, args.index.as_ref(), DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_OVERLAP)
            .await?;
    let retriever = tracing.retriever(Arc::new(VectorRetriever::new(embedder.clone(), index.shared()).with_k(args.k)));
    let llm = tracing.llm(choose_llm(&args)?);
    let model = llm.default_model().unwrap_or_else(|| llm.capabilities().backend.to_string());

    let mut request = ChatRequest::default().with_max_tokens(args.max_tokens).with_seed(args.seed);
    request.temperature = args.temperature;
    let rag =
        RagChain::new(retriever, llm.clone())?.with_request(request).with_recorded_content(tracing.record_content());
    let task = chain_task_with_usage(rag, |answer: &Answer| answer.usage);

    let mut evaluators: Vec<Box<dyn Evaluator>> = vec![
        Box::new(RightChapter),
        Box::new(RegexMatch::new(r"\[\d+(,\s*\d+)*\]")?.with_name("cites_a_source")),
        Box::new(
            EmbeddingSimilarity::new(embedder)
                .with_threshold(args.similarity_threshold)
                .with_name("similar_to_reference"),
        ),
    ];
    if args.judge {
        evaluators.push(Box::new(LlmJudge::new(llm)));
    }

    let name = args.name.clone().unwrap_or_else(|| format!("k={} max_tokens={}", args.k, args.max_tokens));
    let target = format!("rag chain, {model}");
    eprintln!("experiment {name:?}: {target} over {examples} examples of {}", args.dataset);
    let experiment =
        run_experiment(&args.db, &args.dataset, &name, &target, task, &evaluators, args.concurrency).await?;

    let detail = store.experiment(experiment.id)?.context("the experiment just recorded")?;
    let inputs: Vec<_> = store.examples(&args.dataset)?;
    for result in &detail.results {
        let question = inputs.iter().find(|e| e.id == result.example).map(|e| catena::eval::output_text(&e.input));
        let verdicts: Vec<String> = result
            .scores
            .iter()
            .map(|s| match &s.error {
                Some(_) => format!("{}=error", s.evaluator),
                None => format!("{}={:.2}{}", s.evaluator, s.value, if s.passed { "" } else { "(fail)" }),
            })
            .collect();
        match &result.error {
            Some(e) => eprintln!("  {:<60} FAILED: {e}", question.unwrap_or_default()),
            None => eprintln!("  {:<60} {}", question.unwrap_or_default(), verdicts.join(" ")),
        }
    }
    let summary = &experiment.summary;
    let means: Vec<String> = summary
        .scores
        .iter()
        .map(|s| format!("{}={}", s.evaluator, s.mean.map_or("none".to_string(), |m| format!("{m:.3}"))))
        .collect();
    println!(
        "rag_experiment: experiment={} dataset={} examples={} failed={} {}",
        experiment.id,
        args.dataset,
        summary.results,
        summary.errors,
        means.join(" ")
    );
    eprintln!("see it: cargo run --release -p catena-studio -- --db {}", args.db.display());
    Ok(())
}

/// `--provider` when given, else `--model` / CATENA_LLM_MODEL, else an OpenAI-compatible server from the
/// environment, else the offline default model when installed.
fn choose_llm(args: &Args) -> Result<Arc<dyn Llm>> {
    let model = args.model.clone().or_else(|| args.server.chosen().is_none().then(default_model).flatten());
    llm::choose_llm(model.as_deref(), &args.server)
}

/// SmolLM2-135M-Instruct, when `.ci/fetch-smollm2.sh` installed it.
#[cfg(feature = "llama-cpp")]
fn default_model() -> Option<PathBuf> {
    catena::providers::llama::default_model_path().filter(|p| p.is_file())
}

#[cfg(not(feature = "llama-cpp"))]
fn default_model() -> Option<PathBuf> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_chapters_come_from_the_reference() {
        let written = json!({"text": "...", "chapters": ["ch04-03-slices.md"]});
        assert_eq!(RightChapter::expected(&written), ["ch04-03-slices.md"]);
        let source = |rank: usize, file: &str| json!({"rank": rank, "id": format!("c{rank}"), "source": format!("book/{file}"), "score": 0.5, "content": ""});
        let sources = [source(1, "ch16-01-threads.md"), source(2, "ch16-02-message-passing.md"), source(3, "ch01.md")];
        let cites_two = json!({"text": "Use spawn [2], then join [2, 3].", "sources": sources});
        assert_eq!(RightChapter::expected(&cites_two), ["ch01.md", "ch16-02-message-passing.md"]);
        let cites_none = json!({"text": "Use spawn.", "sources": sources});
        assert_eq!(RightChapter::expected(&cites_none), ["ch16-01-threads.md"]);
        assert!(RightChapter::expected(&json!("Paris")).is_empty());
    }
}
