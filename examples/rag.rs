//! The main job: index a folder of documents and answer a question about it, with numbered sources.
//!
//! ```text
//! cargo run --release --example rag --features local -- --docs ../shared/corpora/rust-book \
//!     --index target/rust-book.idx "How do I read a file into a string?"
//! ```
//!
//! Embeddings: in-process all-MiniLM-L6-v2 by default (CATENA_EMBED_MODEL or `--embed-model` names its
//! directory; `bash .ci/fetch-minilm.sh` installs it), or `--embedder openai`.
//! Answers, in order of preference: `--model` / CATENA_LLM_MODEL (a local GGUF file), a model server chosen with
//! `--provider openai|anthropic|gemini|ollama|azure|mistral` (configured from that provider's usual environment
//! variables; `openai` is chosen by itself when OPENAI_BASE_URL or OPENAI_API_KEY is set; model from
//! `--openai-model` / CATENA_MODEL; `--timeout` bounds each call, `--attempts` retries failures before output), the
//! offline default model SmolLM2-135M-Instruct when it is installed (`bash .ci/fetch-smollm2.sh` puts it in
//! `${CATENA_CACHE_DIR:-$HOME/.cache/catena}`), and with the `llama-hf-hub` feature a small instruct model
//! downloaded from the Hugging Face hub; with none of these, the sources are printed with instructions to
//! enable answers. The model's own sampling settings are used (see `LocalLlmOptions::sampling`); `--temperature`
//! and `--seed` override them.
//!
//! `CATENA_TRACE_DB=<file>` records the run (the chain, the retrieval, the model call with its messages, tokens and
//! timings) into that SQLite trace store; `cargo run -p catena-studio -- --db <file>` shows it.
//!
//! `--retrieval hybrid` fuses BM25 keyword search with the dense search by reciprocal rank fusion: the SQLite
//! index's own FTS5 table; on Qdrant its sparse BM25 vector, fused by the server in one call; for the in-memory
//! store and Chroma a BM25 index built in memory from the indexed chunks.
//!
//! Stores (`--store`): `sqlite` (the default; one file at `--index`, written as indexing goes), `memory` (saved
//! to the `--index` file at the end; in memory only without `--index`), `chroma` and `qdrant` (a collection,
//! `--collection`, on the server at `--store-url`; build with `--features local,chroma` or `local,qdrant`; there
//! `--index` only names where the record of indexed files goes). With a record, the next run re-embeds only
//! added or changed files and drops removed ones.

mod common;
#[path = "common/llm.rs"]
mod llm;
#[path = "common/trace.rs"]
mod traces;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use catena::providers::local_embed::CrossEncoder;
use catena::rag::Source;
use catena::{Chain, ChatRequest, Llm, RagChain, RagEvent, RerankingRetriever, Retriever, VectorRetriever};
use clap::Parser;
use futures::StreamExt;

use common::{EmbedderKind, IndexOptions, StoreKind, DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE};

/// How the example retrieves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Retrieval {
    /// Embedding similarity only.
    Dense,
    /// BM25 and embedding similarity, fused.
    Hybrid,
}

/// Index a folder and answer a question with numbered sources.
#[derive(Debug, Parser)]
#[command(name = "rag")]
struct Args {
    /// The folder of documents to index.
    #[arg(long)]
    docs: PathBuf,
    /// Save the index here and reuse it on the next run (only changed files are re-embedded).
    #[arg(long)]
    index: Option<PathBuf>,
    /// Where the index lives: one SQLite file at --index, an in-memory store (saved to --index), or a collection
    /// on a Chroma or Qdrant server (--store-url, --collection).
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// The server of --store chroma (default http://127.0.0.1:8000) or qdrant (its gRPC port, default
    /// http://127.0.0.1:6334).
    #[arg(long)]
    store_url: Option<String>,
    /// The collection of --store chroma or qdrant (created when missing).
    #[arg(long, default_value = "catena-rag")]
    collection: String,
    /// How sources are found: dense (embedding similarity) or hybrid (BM25 keywords + dense, fused with
    /// reciprocal rank fusion).
    #[arg(long, value_enum, default_value_t = Retrieval::Dense)]
    retrieval: Retrieval,
    /// How many sources to retrieve.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Rerank with the cross-encoder in this directory (config.json, tokenizer.json, model.safetensors; for
    /// example cross-encoder/ms-marco-MiniLM-L-6-v2): the first stage fetches --rerank-candidates and the
    /// cross-encoder keeps the best --k.
    #[arg(long, env = "CATENA_RERANK_MODEL")]
    rerank: Option<PathBuf>,
    /// How many candidates the reranker sees.
    #[arg(long, default_value_t = 20)]
    rerank_candidates: usize,
    /// Print the retrieved sources without calling a model.
    #[arg(long)]
    retrieve_only: bool,
    /// Print one JSON object per source: {"rank", "id", "source", "score"}.
    #[arg(long)]
    json: bool,
    /// Which files to index (globs relative to --docs; repeatable).
    #[arg(long = "include", default_values_t = ["**/*.md".to_string(), "**/*.txt".to_string()])]
    include: Vec<String>,
    /// Chunk size in characters.
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
    chunk_size: usize,
    /// Overlap between consecutive chunks in characters.
    #[arg(long, default_value_t = DEFAULT_CHUNK_OVERLAP)]
    chunk_overlap: usize,
    /// Which embedder to use.
    #[arg(long, value_enum, default_value_t = EmbedderKind::Local)]
    embedder: EmbedderKind,
    /// Directory of a local sentence-embedding model (default: CATENA_EMBED_MODEL).
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// A local GGUF model to answer with (default: CATENA_LLM_MODEL).
    #[arg(long, env = "CATENA_LLM_MODEL")]
    model: Option<PathBuf>,
    /// The model name on the model server (default: CATENA_MODEL).
    #[arg(long)]
    openai_model: Option<String>,
    /// The model server, when no --model is given.
    #[command(flatten)]
    server: llm::ServerArgs,
    /// Maximum answer length in tokens.
    #[arg(long, default_value_t = 512)]
    max_tokens: u32,
    /// Sampling temperature (default: the model's own setting).
    #[arg(long)]
    temperature: Option<f32>,
    /// Seed for a reproducible answer.
    #[arg(long)]
    seed: Option<u64>,
    /// The question.
    question: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let tracing = traces::init()?;
    let args = Args::parse();
    if args.k == 0 {
        bail!("--k must be at least 1");
    }
    if args.question.trim().is_empty() {
        bail!("the question is empty: ask something, for example \"How do I read a file into a string?\"");
    }

    let embedder = common::embedder(args.embedder, args.embed_model.as_deref()).await?;
    // Loaded before indexing, so a wrong directory fails at once.
    let reranker = match args.rerank.clone() {
        None => None,
        Some(dir) => Some(tokio::task::spawn_blocking(move || CrossEncoder::from_dir(dir)).await??),
    };
    let (store, stats) = common::index_folder(
        &embedder,
        IndexOptions {
            docs: &args.docs,
            include: &args.include,
            index: args.index.as_ref(),
            store: args.store,
            store_url: args.store_url.as_deref(),
            collection: &args.collection,
            chunk_size: args.chunk_size,
            chunk_overlap: args.chunk_overlap,
            progress: !args.json,
        },
    )
    .await?;
    eprintln!("index: {stats}");

    // With a reranker, the first stage fetches more candidates and the reranker keeps --k.
    let fetch = if args.rerank.is_some() { args.rerank_candidates.max(args.k) } else { args.k };
    let dense: Arc<dyn Retriever> = Arc::new(VectorRetriever::new(embedder.clone(), store.shared()).with_k(fetch));
    let retriever: Arc<dyn Retriever> = match args.retrieval {
        Retrieval::Dense => dense,
        Retrieval::Hybrid => store.hybrid_retriever(&embedder, dense, fetch).await?,
    };
    let retriever: Arc<dyn Retriever> = match reranker {
        None => retriever,
        Some(encoder) => Arc::new(RerankingRetriever::new(retriever, Arc::new(encoder), args.k)),
    };
    let retriever = tracing.retriever(retriever);
    let llm = match args.retrieve_only {
        true => None,
        false => match choose_llm(&args)? {
            Some(llm) => Some(llm),
            None => match default_local_llm()? {
                Some(llm) => Some(llm),
                None => default_download().await?,
            },
        },
    };
    let llm = llm.map(|llm| tracing.llm(llm));
    let mut request = ChatRequest::default().with_max_tokens(args.max_tokens);
    request.temperature = args.temperature;
    request.seed = args.seed;
    match llm {
        None => {
            let rag = RagChain::new(retriever, Arc::new(NoModel))?;
            let sources = rag.sources(&args.question).await?;
            print_sources(&sources, args.json)?;
            if !args.retrieve_only {
                eprintln!("\n{}", NO_MODEL_HELP);
            }
        }
        Some(llm) => {
            let rag =
                RagChain::new(retriever, llm)?.with_request(request).with_recorded_content(tracing.record_content());
            let mut events = rag.stream(args.question.clone());
            let mut stdout = std::io::stdout();
            while let Some(event) = events.next().await {
                match event? {
                    RagEvent::Text(t) => {
                        stdout.write_all(t.as_bytes())?;
                        stdout.flush()?;
                    }
                    RagEvent::Done(answer) => {
                        println!("\n");
                        if let Some(u) = answer.usage {
                            eprintln!("tokens: {} in / {} out", u.input_tokens, u.output_tokens);
                        }
                        print_sources(&answer.sources, args.json)?;
                    }
                }
            }
        }
    }
    Ok(())
}

const NO_MODEL_HELP: &str = "No model is configured, so only the sources are shown. To get answers, either:\n  \
- the offline default model: bash .ci/fetch-smollm2.sh (build with --features local), or\n  \
- a local GGUF model: --model <file.gguf> or CATENA_LLM_MODEL=<file.gguf> (build with --features local), or\n  \
- an OpenAI-compatible server: OPENAI_BASE_URL=<url>/v1 (and OPENAI_API_KEY for hosted APIs) with \
CATENA_MODEL=<model> or --openai-model <model>.";

fn print_sources(sources: &[Source], json: bool) -> Result<()> {
    if json {
        for s in sources {
            let line = serde_json::json!({"rank": s.rank, "id": s.id, "source": s.source, "score": s.score});
            println!("{line}");
        }
    } else {
        println!("Sources:");
        for s in sources {
            println!("  {s}");
        }
    }
    Ok(())
}

/// `--provider` when given, else `--model` / CATENA_LLM_MODEL, else an OpenAI-compatible server from the
/// environment.
fn choose_llm(args: &Args) -> Result<Option<Arc<dyn Llm>>> {
    if args.server.provider.is_some() {
        return args.server.llm(args.openai_model.as_deref());
    }
    if let Some(path) = &args.model {
        return local_llm(path).map(Some);
    }
    args.server.llm(args.openai_model.as_deref())
}

/// With the `llama-hf-hub` feature and no model configured: the default small instruct model from the Hugging
/// Face hub (downloaded once with a progress bar, then cached). Offline, this fails and the caller falls back to
/// printing sources.
#[cfg(feature = "llama-hf-hub")]
async fn default_download() -> Result<Option<Arc<dyn Llm>>> {
    use catena::providers::llama::{LocalLlm, LocalLlmOptions, DEFAULT_HF_MODEL};
    if std::env::var_os("HF_HUB_OFFLINE").is_some() {
        return Ok(None);
    }
    eprintln!("no model configured: fetching the default model {}/{}", DEFAULT_HF_MODEL.0, DEFAULT_HF_MODEL.1);
    match LocalLlm::from_hf_hub(DEFAULT_HF_MODEL.0, DEFAULT_HF_MODEL.1, LocalLlmOptions::default()).await {
        Ok(llm) => Ok(Some(Arc::new(llm))),
        Err(e) => {
            eprintln!("warning: could not download the default model ({e})");
            Ok(None)
        }
    }
}

#[cfg(not(feature = "llama-hf-hub"))]
async fn default_download() -> Result<Option<Arc<dyn Llm>>> {
    Ok(None)
}

/// The offline default answer model, SmolLM2-135M-Instruct, when it is installed (`.ci/fetch-smollm2.sh`).
#[cfg(feature = "llama-cpp")]
fn default_local_llm() -> Result<Option<Arc<dyn Llm>>> {
    let Some(path) = catena::providers::llama::default_model_path().filter(|p| p.is_file()) else {
        return Ok(None);
    };
    eprintln!(
        "answering with the offline default model {} (choose another with --model or OPENAI_BASE_URL)",
        path.display()
    );
    local_llm(&path).map(Some)
}

#[cfg(not(feature = "llama-cpp"))]
fn default_local_llm() -> Result<Option<Arc<dyn Llm>>> {
    Ok(None)
}

#[cfg(feature = "llama-cpp")]
fn local_llm(path: &std::path::Path) -> Result<Arc<dyn Llm>> {
    use catena::providers::llama::{LocalLlm, LocalLlmOptions};
    Ok(Arc::new(LocalLlm::from_gguf(path, LocalLlmOptions::default())?))
}

#[cfg(not(feature = "llama-cpp"))]
fn local_llm(path: &std::path::Path) -> Result<Arc<dyn Llm>> {
    bail!(
        "{} is a local GGUF model, which needs the `llama-cpp` feature: \
         cargo run --release --example rag --features local -- ...",
        path.display()
    )
}

/// Stands in for a model when only sources are wanted; never called (`RagChain::sources` does not use it).
struct NoModel;

#[catena::async_trait]
impl Llm for NoModel {
    fn capabilities(&self) -> catena::Capabilities {
        catena::Capabilities::minimal("none")
    }
    fn default_model(&self) -> Option<String> {
        None
    }
    async fn chat(&self, _request: ChatRequest) -> catena::Result<catena::ChatResponse> {
        Err(catena::Error::config("CATENA_LLM_MODEL", "is not set", NO_MODEL_HELP))
    }
    async fn chat_stream(&self, _request: ChatRequest) -> catena::Result<catena::ChatStream> {
        Err(catena::Error::config("CATENA_LLM_MODEL", "is not set", NO_MODEL_HELP))
    }
}
