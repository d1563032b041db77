//! The studio in a real browser, end to end: a RAG run on the real SmolLM2-135M-Instruct (llama-cpp-python's
//! OpenAI-compatible server) over MiniLM retrieval of Rust book paragraphs is recorded into a trace store, the
//! studio binary serves that store, and Debian's Chromium, driven by playwright-core (`tests/browser/studio.mjs`),
//! walks it: the runs list, the trace's tree with the model call opened, the playground (edit the prompt, rerun
//! against the same server, compare), the rerun in the list, a dataset from the trace and an evaluation.
//! Full-page screenshots of every page land in `<target dir>/studio-screenshots/`.
//!
//! Needs `bash .ci/setup-browser.sh` (chromium, playwright-core), `bash .ci/setup-llama-server.sh`,
//! `bash .ci/fetch-smollm2.sh` and `CATENA_EMBED_MODEL` (`.ci/fetch-minilm.sh`); a missing one fails the test with
//! the command to run, never skips it. `STUDIO_E2E_UNTIL=tree` stops the walk after the list and the tree.
//!
//! Selector contract of the pages the script walks (kept in step with `tests/browser/studio.mjs`):
//! - `/`: rows `table.runs tbody tr[data-trace=<trace id>]`, the trace link the `a` of the row's second cell;
//!   `[data-testid=total-traces]`.
//! - `/traces/<id>`: `details.run[data-kind=<kind>]` with a `summary` toggling its `.detail`; in a model call's
//!   detail `a[data-testid=open-playground]`; form `[data-testid=add-to-dataset]` with `input[name=dataset]`.
//! - `/playground/<run id>`: `textarea[name=content-N]` per message, `select[name=provider]`, `input[name=model]`,
//!   `input[name=temperature]`, `input[name=max_tokens]`, `[data-testid=rerun]`; the result shows
//!   `[data-testid=original-output]`, `[data-testid=new-output]` and `a[data-testid=new-trace]` (tagged
//!   `playground` in the list).
//! - `/datasets/<name>`: `[data-testid=example]`; form `[data-testid=run-eval]` with `input[name=evaluator]`
//!   checkboxes (exact_match, regex, json_schema, embedding_similarity, llm_judge), `select[name=provider]`,
//!   `input[name=model]`; the experiment shows `[data-testid=score]` and `[data-testid=experiment-summary]`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use catena_core::layer::{LayerExt, TelemetryLayer};
use catena_core::{
    Chain, ChatRequest, Document, EmbeddedDocument, Embedder, Metadata, RagChain, VectorRetriever, VectorStore,
};
use catena_providers::local_embed::LocalEmbedder;
use catena_test_support::llama::{LlamaServer, ServerOptions};
use catena_trace::{RecorderConfig, RunKind, RunRecorder, TraceQuery, TraceStore};
use catena_vectorstores::{InMemoryStore, Metric};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

const CHROMIUM: &str = "/usr/bin/chromium";
const SETUP: &str = "run `bash .ci/setup-browser.sh` from the repository root (Debian's chromium and npm \
playwright-core into $CATENA_CACHE_DIR/browser)";
/// The model name the llama.cpp server reports and the studio's playground asks for.
const ALIAS: &str = "smollm2";
/// The recorded run's root span.
const RUN_NAME: &str = "rust book question";
const QUESTION: &str = "What is ownership in Rust?";
const CHAPTER: &str = "ch04-01-what-is-ownership.md";
/// The whole browser walk's limit on the Rust side (the script stops itself at 120 s).
const WALK_LIMIT: Duration = Duration::from_secs(180);

/// playwright-core's `node_modules`, after checking that Chromium, node and playwright-core are there.
fn browser_tools() -> PathBuf {
    assert!(Path::new(CHROMIUM).is_file(), "{CHROMIUM} is missing; {SETUP}");
    let modules = catena_providers::cache_dir().expect("HOME or CATENA_CACHE_DIR is set").join("browser/node_modules");
    assert!(
        modules.join("playwright-core/package.json").is_file(),
        "playwright-core is not in {}; {SETUP}",
        modules.display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(node.is_ok_and(|o| o.status.success()), "node does not run (Debian: apt-get install nodejs npm)");
    modules
}

/// Four prose paragraphs of the Rust book's "What Is Ownership?" (lines joined, no headings, quotes or code).
fn chunks() -> Vec<String> {
    let path = catena_test_support::rust_book().join(CHAPTER);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let paragraphs: Vec<String> = text
        .split("\n\n")
        .map(|p| p.lines().map(str::trim).collect::<Vec<_>>().join(" "))
        .filter(|p| p.len() > 200 && p.chars().next().is_some_and(|c| c.is_alphabetic()))
        .take(4)
        .collect();
    assert_eq!(paragraphs.len(), 4, "{} has fewer prose paragraphs than expected", path.display());
    paragraphs
}

/// Records one RAG run (root span, chain, retrieval with its query embedding, the model call) into `db` and
/// returns the answer.
async fn record_rag_run(server: &LlamaServer, db: &Path) -> String {
    let (recorder, handle) = RunRecorder::new(TraceStore::open(db).unwrap(), RecorderConfig::default()).unwrap();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder))
        .expect("the only subscriber of this test binary");
    let embedder = LocalEmbedder::from_env().unwrap_or_else(|e| {
        panic!("the MiniLM embedder: {e}; run `export CATENA_EMBED_MODEL=$(bash .ci/fetch-minilm.sh)`")
    });
    // Index without telemetry (indexing is not part of the question's trace), query through it.
    let texts = chunks();
    let vectors = embedder.embed_documents(&texts).await.expect("the chunks embed");
    let store = InMemoryStore::new(embedder.dimensions(), Metric::Cosine).unwrap();
    let documents = texts
        .into_iter()
        .zip(vectors)
        .enumerate()
        .map(|(i, (text, vector))| {
            let mut metadata = Metadata::new();
            metadata.insert("source".into(), format!("rust-book/{CHAPTER}#{}", i + 1).into());
            EmbeddedDocument { document: Document::with_id(format!("ownership-{}", i + 1), text, metadata), vector }
        })
        .collect();
    store.upsert(documents).await.unwrap();
    let telemetry = TelemetryLayer::new().record_content(true);
    let retriever = VectorRetriever::new(Arc::new(embedder.layer(telemetry)), Arc::new(store)).with_k(3);
    let rag = RagChain::new(Arc::new(retriever.layer(telemetry)), Arc::new(server.client().layer(telemetry)))
        .unwrap()
        .with_request(ChatRequest::default().with_max_tokens(48).with_temperature(0.0).with_seed(1))
        .with_recorded_content(true);
    let answer = rag
        .invoke(QUESTION.to_string())
        .instrument(tracing::info_span!("rust book question", catena.tags = "e2e,rag"))
        .await
        .expect("SmolLM2 answers");
    assert!(handle.flush(Duration::from_secs(10)), "the recorder flushes");
    answer.text
}

/// The studio binary on a free port, with the llama.cpp server as its OpenAI-compatible provider.
struct Studio {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Studio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_studio(db: &Path, server: &LlamaServer) -> Studio {
    let mut command = Command::new(env!("CARGO_BIN_EXE_catena-studio"));
    command
        .args(["--db", db.to_str().unwrap(), "--port", "0"])
        .env("OPENAI_BASE_URL", server.base_url())
        // The server is llama.cpp's: its native JSON-schema output, which the LLM judge asks for.
        .env("CATENA_COMPAT", "llama.cpp")
        .env("CATENA_MODEL", ALIAS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if std::env::var_os("OPENAI_API_KEY").is_none() {
        command.env("OPENAI_API_KEY", "local");
    }
    let mut child = command.spawn().expect("the studio starts");
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    let pipe = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in pipe.lines().map_while(Result::ok) {
            let mut text = sink.lock().unwrap_or_else(|e| e.into_inner());
            text.push_str(&line);
            text.push('\n');
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // Keep draining stdout so that the studio never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("the studio printed no address: {line:?}"))
        .trim_end_matches('/')
        .to_string();
    Studio { child, base, stderr }
}

/// `<target dir>/studio-screenshots` (next to the `debug` directory holding the studio binary).
fn screenshot_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_catena-studio"));
    let target = bin.parent().and_then(Path::parent).expect("the binary is in <target>/<profile>/");
    target.join("studio-screenshots")
}

/// Runs the browser script to its end (or [`WALK_LIMIT`]); its exit status and its output.
fn walk(studio: &Studio, node_modules: &Path, shots: &Path) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/studio.mjs");
    // One file for both streams (one handle: one offset, so neither overwrites the other).
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = log.reopen().unwrap();
    let mut child = Command::new("node")
        .arg(&script)
        .arg(&studio.base)
        .arg(shots)
        .env("NODE_PATH", node_modules)
        .env("STUDIO_E2E_RUN_NAME", RUN_NAME)
        .env("STUDIO_E2E_QUESTION", QUESTION)
        .env("STUDIO_E2E_KINDS", "span,chain,retrieval,embedding,llm")
        .env("STUDIO_E2E_MODEL", ALIAS)
        .stderr(out.try_clone().unwrap())
        .stdout(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node {}: {e}", script.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > WALK_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut output = String::new();
    File::open(log.path()).unwrap().read_to_string(&mut output).unwrap();
    match status {
        Some(s) => (s.success(), output),
        None => (false, format!("{output}\nkilled after {WALK_LIMIT:?}")),
    }
}

#[tokio::test]
async fn a_recorded_rag_run_walked_in_chromium() {
    let node_modules = browser_tools();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let server = LlamaServer::start(ServerOptions {
        model: catena_test_support::smollm2_path(),
        alias: ALIAS.into(),
        chat_format: None,
        embedding: false,
        interrupt_requests: false,
        n_ctx: 2048,
    });

    let answer = record_rag_run(&server, &db).await;
    assert!(!answer.trim().is_empty(), "SmolLM2 answered nothing");
    let store = TraceStore::open(&db).unwrap();
    let traces = store.traces(&TraceQuery { name: Some(RUN_NAME.into()), ..TraceQuery::default() }).unwrap();
    assert_eq!(traces.len(), 1, "{traces:?}");
    let runs = store.trace(traces[0].root.trace_id).unwrap();
    let kinds: Vec<RunKind> = runs.iter().map(|r| r.kind).collect();
    for kind in [RunKind::Span, RunKind::Chain, RunKind::Retrieval, RunKind::Embedding, RunKind::Llm] {
        assert!(kinds.contains(&kind), "a {} run in the recorded tree: {kinds:?}", kind.as_str());
    }
    drop(store);

    let studio = start_studio(&db, &server);
    let shots = screenshot_dir();
    let started = Instant::now();
    let (passed, output) = walk(&studio, &node_modules, &shots);
    println!("{output}");
    println!("browser walk: {:.1} s; screenshots in {}", started.elapsed().as_secs_f64(), shots.display());
    if !passed {
        let stderr = studio.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
        panic!(
            "the browser walk failed (screenshots in {}):\n{output}\n--- studio stderr ---\n{stderr}\n--- llama.cpp \
             server log ---\n{}",
            shots.display(),
            server.log_tail()
        );
    }
}
