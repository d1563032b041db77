//! Starting the studio binary for a test.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `catena-studio`; killed on drop.
pub struct Studio {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Drop for Studio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the studio on a free port over `db`, with extra environment variables.
pub fn start(db: &std::path::Path, env: &[(&str, &str)]) -> Studio {
    let mut command = Command::new(env!("CARGO_BIN_EXE_catena-studio"));
    command.args(["--db", db.to_str().expect("a UTF-8 path"), "--port", "0"]).stdout(Stdio::piped());
    for var in [
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "GEMINI_API_KEY",
        "GEMINI_BASE_URL",
        "OLLAMA_HOST",
        "AZURE_OPENAI_ENDPOINT",
        "MISTRAL_API_KEY",
        "CATENA_MODEL",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("the studio starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the first line");
    let base = line.split_whitespace().find(|w| w.starts_with("http://")).expect("the address is printed");
    Studio { child, base: base.trim_end_matches('/').to_string() }
}

/// GETs a URL: status and body.
pub fn get(url: &str) -> (u16, String) {
    let response = reqwest::blocking::get(url).expect("the studio answers");
    (response.status().as_u16(), response.text().expect("a text body"))
}

/// POSTs a form: status and body.
pub fn post(url: &str, form: &[(&str, &str)]) -> (u16, String) {
    let response = reqwest::blocking::Client::new().post(url).form(form).send().expect("the studio answers");
    (response.status().as_u16(), response.text().expect("a text body"))
}

/// Records one model call through `llm_base` (an OpenAI-format server; model `echo`) into the store `db`, as an
/// application would (a recorder installed as this test binary's global subscriber), and returns its run.
pub fn record_call(db: &std::path::Path, llm_base: &str, question: &str) -> catena_trace::Run {
    use catena_core::layer::{LayerExt, TelemetryLayer};
    use catena_core::{ChatRequest, Llm, Message};
    use catena_trace::{RecorderConfig, RunKind, RunRecorder, TraceQuery, TraceStore};
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;

    let (recorder, handle) = RunRecorder::new(TraceStore::open(db).unwrap(), RecorderConfig::default()).unwrap();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder)).unwrap();
    let llm = catena_providers::openai::OpenAiClient::builder()
        .base_url(llm_base)
        .api_key("sk-local")
        .model("echo")
        .build()
        .unwrap()
        .layer(TelemetryLayer::new().record_content(true));
    let request =
        ChatRequest::new(vec![Message::system("Answer briefly."), Message::user(question)]).with_max_tokens(40);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async { llm.chat(request).await.unwrap() }.instrument(tracing::info_span!("question")));
    assert!(handle.flush(std::time::Duration::from_secs(10)));
    let store = TraceStore::open(db).unwrap();
    let trace = store.traces(&TraceQuery::default()).unwrap().remove(0);
    store.trace(trace.root.trace_id).unwrap().into_iter().find(|r| r.kind == RunKind::Llm).unwrap()
}
