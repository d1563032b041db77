//! An agent with tools: arithmetic, a search of an indexed folder (a retriever as a tool) and, with `--mcp`, every
//! tool of an MCP server. Prints each tool call and its result as they happen, then the answer.
//!
//! ```text
//! cargo run --release --example agent --features local,constrain -- --docs ../shared/corpora/rust-book \
//!     --index target/rust-book.sqlite --first-call required "What is 12 * 7, and what does the book say about Box?"
//! ```
//!
//! The model, in order of preference: `--model` / CATENA_LLM_MODEL (a local GGUF file; tool calls through its
//! grammar, which needs the `constrain` feature), an OpenAI-compatible server when OPENAI_BASE_URL or OPENAI_API_KEY is set (model from CATENA_MODEL),
//! the offline default SmolLM2-135M-Instruct (`bash .ci/fetch-smollm2.sh`). A 135M model rarely decides to call a
//! tool by itself: `--first-call required` (or `--first-call <tool>`) makes its first turn a tool call; later
//! turns are its own choice. `--json` prints the run's typed events as JSON lines instead.
//!
//! `--mcp "python3 -m mcp_server_time"` (repeatable; needs the `mcp` feature) starts that MCP server over stdio and
//! offers every tool it has.
//!
//! Limits: `--max-model-calls` (6), `--max-tool-calls` (8), `--tool-concurrency` (4): the run always ends with an
//! answer within them.

mod common;
#[path = "common/llm.rs"]
mod llm;
#[path = "common/trace.rs"]
mod traces;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use catena::agent::{Agent, AgentEvent, AgentOutcome, Limits, ToolBox};
use catena::{retriever_tool, tool_fn, Chain, ChatRequest, Llm, ToolChoice, VectorRetriever};
use clap::Parser;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;

use common::{EmbedderKind, DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE};

/// Ask an agent with tools.
#[derive(Debug, Parser)]
#[command(name = "agent")]
struct Args {
    /// A folder of documents to index and offer as a search tool.
    #[arg(long)]
    docs: Option<PathBuf>,
    /// Keep the index of --docs in this SQLite file (only changed files are re-embedded next time).
    #[arg(long)]
    index: Option<PathBuf>,
    /// How many passages a search returns.
    #[arg(long, default_value_t = 3)]
    k: usize,
    /// A local GGUF model (default: CATENA_LLM_MODEL, else an OpenAI-compatible server, else SmolLM2).
    #[arg(long, env = "CATENA_LLM_MODEL")]
    model: Option<PathBuf>,
    /// The model server, when no --model is given.
    #[command(flatten)]
    server: llm::ServerArgs,
    /// Offer every tool of the MCP server started by this command (stdio), for example
    /// "python3 -m mcp_server_time". Repeatable.
    #[arg(long)]
    mcp: Vec<String>,
    /// The first model call's tool choice: auto, required (some tool), or a tool's name.
    #[arg(long, default_value = "auto")]
    first_call: String,
    /// Model calls in the run (the last one is made without tools).
    #[arg(long, default_value_t = 6)]
    max_model_calls: usize,
    /// Tool calls in the run.
    #[arg(long, default_value_t = 8)]
    max_tool_calls: usize,
    /// Tool calls of one turn run at once.
    #[arg(long, default_value_t = 4)]
    tool_concurrency: usize,
    /// Maximum tokens per model turn.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Sampling temperature (default: the model's own setting; 0 for greedy, reproducible runs).
    #[arg(long)]
    temperature: Option<f32>,
    /// Seed for reproducible sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the typed events as JSON lines.
    #[arg(long)]
    json: bool,
    /// Which embedder indexes --docs.
    #[arg(long, value_enum, default_value_t = EmbedderKind::Local)]
    embedder: EmbedderKind,
    /// Directory of a local sentence-embedding model (default: CATENA_EMBED_MODEL).
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// The question.
    question: String,
}

/// An arithmetic operation.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Op {
    Add,
    Subtract,
    Multiply,
    Divide,
}

/// The arguments of the `calculate` tool.
#[derive(Debug, Deserialize, JsonSchema)]
struct Calculation {
    /// The operation.
    op: Op,
    /// The left operand.
    a: f64,
    /// The right operand.
    b: f64,
}

fn calculate(c: Calculation) -> std::result::Result<f64, String> {
    match c.op {
        Op::Add => Ok(c.a + c.b),
        Op::Subtract => Ok(c.a - c.b),
        Op::Multiply => Ok(c.a * c.b),
        Op::Divide if c.b == 0.0 => Err("division by zero".into()),
        Op::Divide => Ok(c.a / c.b),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let tracing = traces::init()?;
    let args = Args::parse();
    let llm = choose_llm(&args)?;
    let llm = tracing.llm(llm);

    let mut tools = ToolBox::new().with(tool_fn(
        "calculate",
        "Exact arithmetic on two numbers: add, subtract, multiply or divide.",
        |c: Calculation| async move { calculate(c) },
    ))?;
    if let Some(docs) = &args.docs {
        let embedder = common::embedder(args.embedder, args.embed_model.as_deref()).await?;
        let index =
            common::index_markdown(&embedder, docs, args.index.as_ref(), DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_OVERLAP)
                .await?;
        let name = docs.file_name().and_then(|n| n.to_str()).unwrap_or("documents");
        let retriever = VectorRetriever::new(embedder, index.shared()).with_k(args.k);
        tools = tools.with(retriever_tool(
            "search_docs",
            format!("Searches the indexed documents ({name}) and returns the most relevant passages."),
            Arc::new(retriever),
        ))?;
    }
    let _mcp_servers = add_mcp_tools(&mut tools, &args.mcp).await?;

    let first_call = match args.first_call.as_str() {
        "auto" => ToolChoice::Auto,
        "required" => ToolChoice::Required,
        name => ToolChoice::Tool(name.to_string()),
    };
    let mut request = ChatRequest::default().with_max_tokens(args.max_tokens).with_tool_choice(first_call);
    request.temperature = args.temperature;
    request.seed = args.seed;
    let limits = Limits::new(args.max_model_calls, args.max_tool_calls, args.tool_concurrency);
    let agent = Agent::new(llm, tools, limits)?
        .with_system(
            "You are a helpful assistant. Use the tools when they help: calculate for arithmetic, search_docs for \
             questions about the documents. Answer briefly.",
        )
        .with_request(request)
        .with_recorded_content(tracing.record_content());

    let mut events = agent.stream(args.question.clone().into());
    let mut stdout = std::io::stdout();
    while let Some(event) = events.next().await {
        let event = event?;
        if args.json {
            println!("{}", serde_json::to_string(&event)?);
            continue;
        }
        match event {
            AgentEvent::ToolCallEnd { call } => println!("-> {}({})", call.name, call.arguments),
            AgentEvent::ToolResult { call, result, elapsed_ms } => {
                let shown = match result {
                    Ok(v) => shorten(&catena::output_text(&v), 300),
                    Err(e) => e.to_model_text(),
                };
                println!("<- {} [{elapsed_ms} ms]: {shown}", call.name);
            }
            AgentEvent::Done { outcome: AgentOutcome::Finished(answer) } => {
                println!("\nanswer: {}", answer.text.trim());
                println!(
                    "({} model calls, {} tool calls, {} tokens in, {} out)",
                    answer.model_calls, answer.tool_calls, answer.usage.input_tokens, answer.usage.output_tokens
                );
            }
            AgentEvent::Done { outcome: AgentOutcome::NeedsApproval(state) } => {
                println!("waiting for approval of {} call(s)", state.pending.len());
            }
            _ => {}
        }
        stdout.flush()?;
    }
    Ok(())
}

fn shorten(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    match one_line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &one_line[..cut]),
        None => one_line,
    }
}

/// The model: `--model`, a server (`--provider`, or an OpenAI-compatible one from the environment), or the offline
/// default SmolLM2.
fn choose_llm(args: &Args) -> Result<Arc<dyn Llm>> {
    if args.model.is_some() || args.server.chosen().is_some() {
        return llm::choose_llm(args.model.as_deref(), &args.server);
    }
    default_local_llm()
}

#[cfg(feature = "llama-cpp")]
fn default_local_llm() -> Result<Arc<dyn Llm>> {
    let Some(path) = catena::providers::llama::default_model_path().filter(|p| p.is_file()) else {
        bail!("no model: pass --model <file.gguf>, set OPENAI_BASE_URL and CATENA_MODEL, or install the offline default with `bash .ci/fetch-smollm2.sh`")
    };
    eprintln!("using the offline default model {}", path.display());
    llm::local_llm(&path)
}

#[cfg(not(feature = "llama-cpp"))]
fn default_local_llm() -> Result<Arc<dyn Llm>> {
    bail!("no model: set OPENAI_BASE_URL and CATENA_MODEL, or build with --features local and pass --model <file.gguf>")
}

/// With `--mcp`: each command (split on whitespace: the program, then its arguments) is started as an MCP server
/// over stdio, and all its tools join the tool box. The returned clients keep the servers running; dropping them
/// stops the servers.
#[cfg(feature = "mcp")]
async fn add_mcp_tools(tools: &mut ToolBox, commands: &[String]) -> Result<Vec<catena::mcp::McpClient>> {
    use catena::agent::ToolSettings;
    let mut clients = Vec::new();
    for command in commands {
        let mut words = command.split_whitespace();
        let Some(program) = words.next() else { bail!("--mcp needs a command, got {command:?}") };
        let client = catena::mcp::McpClient::stdio(program).args(words).connect().await?;
        let offered = client.tools().await?;
        eprintln!("MCP server `{command}`: {} tool(s)", offered.len());
        for tool in offered {
            *tools = std::mem::take(tools)
                .with_shared(tool, ToolSettings::unrestricted().with_timeout(std::time::Duration::from_secs(60)))?;
        }
        clients.push(client);
    }
    Ok(clients)
}

#[cfg(not(feature = "mcp"))]
async fn add_mcp_tools(_tools: &mut ToolBox, commands: &[String]) -> Result<Vec<()>> {
    if !commands.is_empty() {
        bail!(
            "--mcp needs the `mcp` feature: cargo run --release --example agent --features local,constrain,mcp -- ..."
        );
    }
    Ok(Vec::new())
}
