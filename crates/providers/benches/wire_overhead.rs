//! Per-request client overhead: catena's OpenAI, Anthropic and Gemini clients against the official Python SDKs
//! (`openai`, `anthropic`, `google-genai`), every one calling the same local server in the same run.
//!
//! The server (axum, in this process, on a runtime of its own) answers each wire format with a canned answer of
//! about 200 words, whole or as 100 streamed events, so what differs between two rows is the client: building and
//! encoding the request, the HTTP exchange on loopback, decoding the answer (and folding the stream). The server's
//! own time is in every row alike.
//!
//! ```text
//! bash crates/providers/benches/wire_overhead_setup.sh     # the SDKs, in their own virtualenv
//! cargo bench -p catena-providers --features anthropic,gemini --bench wire_overhead
//! ```
//! Set `WIRE_OVERHEAD_REQUESTS` to change the number of timed requests per row (default 2000).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, Response};
use axum::routing::post;
use axum::Router;
use catena_core::{collect_stream, ChatRequest, Llm, Message};
use catena_providers::anthropic::AnthropicClient;
use catena_providers::gemini::GeminiClient;
use catena_providers::openai::{Compat, OpenAiClient};

const EVENTS: usize = 100;

fn words() -> Vec<String> {
    (0..200).map(|i| format!("word{i}")).collect()
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

/// The canned answers: (whole, streamed) per wire format.
struct Canned {
    openai: (String, String),
    anthropic: (String, String),
    gemini: (String, String),
}

fn canned() -> Canned {
    let text = words().join(" ");
    let pieces: Vec<String> = words().chunks(2).map(|w| format!("{} ", w.join(" "))).collect();
    assert_eq!(pieces.len(), EVENTS);
    let openai_whole = format!(
        r#"{{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":{}}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":20,"completion_tokens":200,"total_tokens":220}}}}"#,
        json_str(&text)
    );
    let mut openai_stream = String::new();
    for p in &pieces {
        openai_stream.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\n",
            json_str(p)
        ));
    }
    openai_stream.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    openai_stream.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":200,\"total_tokens\":220}}\n\ndata: [DONE]\n\n");

    let anthropic_whole = format!(
        r#"{{"id":"msg","type":"message","role":"assistant","model":"m","content":[{{"type":"text","text":{}}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":20,"output_tokens":200}}}}"#,
        json_str(&text)
    );
    let mut anthropic_stream = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":20,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    );
    for p in &pieces {
        anthropic_stream.push_str(&format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{}}}}}\n\n",
            json_str(p)
        ));
    }
    anthropic_stream.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":200}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");

    let gemini = |parts: &str, last: bool| {
        let end = if last {
            r#","finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":200,"totalTokenCount":220}"#
        } else {
            "}]"
        };
        format!(
            r#"{{"candidates":[{{"content":{{"parts":[{{"text":{parts}}}],"role":"model"}},"index":0{end},"modelVersion":"m"}}"#
        )
    };
    let gemini_whole = gemini(&json_str(&text), true);
    let mut gemini_stream = String::new();
    for (i, p) in pieces.iter().enumerate() {
        gemini_stream.push_str(&format!("data: {}\n\n", gemini(&json_str(p), i + 1 == pieces.len())));
    }
    Canned {
        openai: (openai_whole, openai_stream),
        anthropic: (anthropic_whole, anthropic_stream),
        gemini: (gemini_whole, gemini_stream),
    }
}

fn reply(body: &str, streaming: bool) -> Response<Body> {
    let kind = if streaming { "text/event-stream" } else { "application/json" };
    Response::builder().header(header::CONTENT_TYPE, kind).body(Body::from(body.to_string())).expect("a response")
}

fn streaming(body: &str) -> bool {
    body.contains("\"stream\":true") || body.contains("\"stream\": true")
}

async fn openai(State(c): State<Arc<Canned>>, body: String) -> Response<Body> {
    let s = streaming(&body);
    reply(if s { &c.openai.1 } else { &c.openai.0 }, s)
}

async fn anthropic(State(c): State<Arc<Canned>>, body: String) -> Response<Body> {
    let s = streaming(&body);
    reply(if s { &c.anthropic.1 } else { &c.anthropic.0 }, s)
}

async fn gemini(State(c): State<Arc<Canned>>, Path(rest): Path<String>) -> Response<Body> {
    let s = rest.ends_with(":streamGenerateContent");
    reply(if s { &c.gemini.1 } else { &c.gemini.0 }, s)
}

/// Starts the server on its own thread and runtime; returns its base URL.
fn start_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    listener.set_nonblocking(true).expect("non-blocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async move {
            let app = Router::new()
                .route("/v1/chat/completions", post(openai))
                .route("/v1/messages", post(anthropic))
                .route("/v1beta/models/{*rest}", post(gemini))
                .with_state(Arc::new(canned()));
            let listener = tokio::net::TcpListener::from_std(listener).expect("a listener");
            axum::serve(listener, app).await.expect("the server");
        });
    });
    url
}

/// Mean and median of per-request times, in microseconds.
fn stats(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let mean = times.iter().map(Duration::as_secs_f64).sum::<f64>() / times.len() as f64 * 1e6;
    (mean, times[times.len() / 2].as_secs_f64() * 1e6)
}

async fn measure(llm: &dyn Llm, streamed: bool, n: usize) -> (f64, f64) {
    let request = ChatRequest::new(vec![Message::user("Tell me a long story.")]).with_max_tokens(256);
    let once = |request: ChatRequest| async move {
        let answer = if streamed {
            collect_stream(llm.chat_stream(request).await.expect("a stream")).await.expect("an answer")
        } else {
            llm.chat(request).await.expect("an answer")
        };
        assert_eq!(answer.usage.map(|u| u.output_tokens), Some(200));
        assert!(answer.text().ends_with("word199") || answer.text().ends_with("word199 "));
    };
    for _ in 0..n / 10 {
        once(request.clone()).await;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        once(request.clone()).await;
        times.push(started.elapsed());
    }
    stats(times)
}

fn main() {
    let n: usize = std::env::var("WIRE_OVERHEAD_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let url = start_server();
    // The Python SDKs first, against the same server.
    let python = catena_providers::cache_dir().expect("a cache dir").join("bench-sdk/venv/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/wire_overhead_peer.py");
    let output =
        Command::new(&python).args([script, "--base-url", &url, "--requests", &n.to_string()]).output().unwrap_or_else(
            |e| panic!("cannot run {} ({e}); run crates/providers/benches/wire_overhead_setup.sh", python.display()),
        );
    assert!(output.status.success(), "the Python peer failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let mut peer = std::collections::HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let key =
            (v["format"].as_str().unwrap_or_default().to_string(), v["mode"].as_str().unwrap_or_default().to_string());
        peer.insert(
            key,
            (
                v["sdk"].as_str().unwrap_or_default().to_string(),
                v["mean_us"].as_f64().unwrap_or(f64::NAN),
                v["p50_us"].as_f64().unwrap_or(f64::NAN),
            ),
        );
    }

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let openai_client = OpenAiClient::builder()
        .base_url(format!("{url}/v1"))
        .api_key("sk-bench")
        .model("m")
        .compat(Compat::OpenAi)
        .build()
        .expect("a client");
    let anthropic_client =
        AnthropicClient::builder().base_url(&url).api_key("sk-ant-bench").model("m").build().expect("a client");
    let gemini_client = GeminiClient::builder().base_url(&url).api_key("bench").model("m").build().expect("a client");
    let clients: [(&str, &dyn Llm); 3] =
        [("openai", &openai_client), ("anthropic", &anthropic_client), ("gemini", &gemini_client)];
    println!("{n} sequential requests per row on one connection; each answer: 200 words (whole, or 100 events)\n");
    println!(
        "| wire format | mode | catena mean / p50 (us) | Python SDK | SDK mean / p50 (us) | SDK / catena (mean) |"
    );
    println!("|---|---|---|---|---|---|");
    for (format, llm) in clients {
        for streamed in [false, true] {
            let mode = if streamed { "stream" } else { "chat" };
            let (mean, p50) = runtime.block_on(measure(llm, streamed, n));
            let (sdk, sdk_mean, sdk_p50) =
                peer.get(&(format.to_string(), mode.to_string())).cloned().unwrap_or(("-".into(), f64::NAN, f64::NAN));
            println!(
                "| {format} | {mode} | {mean:.0} / {p50:.0} | {sdk} | {sdk_mean:.0} / {sdk_p50:.0} | {:.1}x |",
                sdk_mean / mean
            );
        }
    }
}
