//! A real HTTP server speaking the OpenAI chat-completions and embeddings wire format, for tests.
//!
//! [`TestServer`] is an axum server on `127.0.0.1:0` that answers byte for byte as OpenAI (or llama-cpp-python)
//! does: JSON completions, Server-Sent Events with `data:` framing (events cut mid-line and mid-character across
//! HTTP chunks, several events per chunk, comment lines, `data: [DONE]`), OpenAI-style and llama-cpp-python-style
//! tool-call deltas, the usage chunk with empty `choices`, error statuses with `Retry-After`, stalls and endless
//! streams. It records every request so tests assert on exactly what a client sent.
//!
//! It stands in for OpenAI's own servers, which cannot run on a test machine; the real llama.cpp server
//! ([`crate::llama`]) covers the same protocol from a real implementation.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use catena_providers::openai::{Compat, OpenAiBuilder};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// How the server writes tool-call deltas in streams.
#[derive(Clone, Copy, PartialEq)]
pub enum ToolStyle {
    /// OpenAI: `id`, `type` and `name` in the first fragment only.
    OpenAi,
    /// llama-cpp-python: `id`, `type` and `name` repeated in every fragment, `content: null`, a legacy
    /// `function_call` mirror, `tool_calls: null` in the first and last chunk.
    LlamaCpp,
}

/// The answer the server gives, rendered as JSON or as an event stream depending on `stream` in the request.
#[derive(Clone)]
pub struct Canned {
    /// The model the answer names.
    pub model: &'static str,
    /// The answer's text (`null` when `None`).
    pub content: Option<&'static str>,
    /// Tool calls as `(id, name, arguments)`.
    pub tool_calls: Vec<(&'static str, &'static str, &'static str)>,
    /// The wire `finish_reason`.
    pub finish_reason: &'static str,
    /// `(prompt_tokens, completion_tokens)`.
    pub usage: (u64, u64),
    /// How tool-call deltas are written in streams.
    pub tool_style: ToolStyle,
    /// The line ending of the event stream (`\n` or `\r\n`).
    pub line_ending: &'static str,
    /// Sizes of the HTTP chunks the event stream is cut into, cycled.
    pub cuts: &'static [usize],
}

impl Canned {
    /// A plain text answer with usage (21, 9), finish `stop`, cut into uneven HTTP chunks.
    pub fn text(content: &'static str) -> Self {
        Canned {
            model: "gpt-test-2025",
            content: Some(content),
            tool_calls: Vec::new(),
            finish_reason: "stop",
            usage: (21, 9),
            tool_style: ToolStyle::OpenAi,
            line_ending: "\n",
            cuts: &[5, 1, 17, 2, 300, 9, 64, 3],
        }
    }
}

/// What the server does with the next request.
#[derive(Clone)]
pub enum Reply {
    /// Answer with this.
    Answer(Canned),
    /// Fail with this status, these headers (for example `Retry-After`) and this body.
    Status {
        /// The HTTP status.
        status: u16,
        /// Extra headers.
        headers: Vec<(&'static str, String)>,
        /// The body.
        body: &'static str,
    },
    /// Accept the request and never answer (a stalled server).
    Stall,
    /// Stream the first event of the answer, then stall.
    StallAfterFirstChunk(Canned),
    /// An event stream that sends a text chunk every 10 ms until the client goes away.
    Endless,
    /// Wait, then answer.
    Delay(Duration, Canned),
    /// 200 with this content type and body, verbatim.
    Raw {
        /// The `Content-Type`.
        content_type: &'static str,
        /// The body.
        body: &'static str,
    },
    /// One answer per request, in order (the last one repeats).
    Sequence(Vec<Canned>),
    /// One reply per request, in order (the last one repeats).
    Script(Vec<Reply>),
}

/// A request the server received.
pub struct Recorded {
    /// The path (`/v1/chat/completions`).
    pub path: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The JSON body.
    pub body: Value,
}

/// The server's shared state.
pub struct ServerState {
    /// What the next request gets.
    pub reply: Mutex<Reply>,
    /// Every request received, in order.
    pub requests: Mutex<Vec<Recorded>>,
    /// Notified when the body of an endless stream is dropped (the client went away).
    pub stream_dropped: Notify,
    /// Set when the body of an endless stream is dropped.
    pub stream_dropped_flag: AtomicBool,
    /// Requests answered from the current `Reply::Sequence` or `Reply::Script`.
    pub sequence_position: AtomicUsize,
    /// Chat requests being answered right now.
    pub in_flight: AtomicUsize,
    /// The most chat requests answered at once.
    pub peak_in_flight: AtomicUsize,
    /// When each chat request arrived.
    pub arrivals: Mutex<Vec<std::time::Instant>>,
}

/// The running server; it stops with the test's runtime.
pub struct TestServer {
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    /// What it received and will answer.
    pub state: Arc<ServerState>,
}

impl TestServer {
    /// Starts a server answering every request with `reply` (and installs the span recorder).
    pub async fn start(reply: Reply) -> Self {
        crate::spans::install();
        let state = Arc::new(ServerState {
            reply: Mutex::new(reply),
            requests: Mutex::new(Vec::new()),
            stream_dropped: Notify::new(),
            stream_dropped_flag: AtomicBool::new(false),
            sequence_position: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            arrivals: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_handler))
            .route("/v1/embeddings", post(embeddings_handler))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestServer { base_url: format!("http://{addr}/v1"), state }
    }

    /// Changes the reply for the following requests.
    pub fn set_reply(&self, reply: Reply) {
        *self.state.reply.lock().unwrap() = reply;
        self.state.sequence_position.store(0, Ordering::SeqCst);
    }

    /// The JSON bodies received so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.state.requests.lock().unwrap().iter().map(|r| r.body.clone()).collect()
    }

    /// The last JSON body received.
    pub fn last_body(&self) -> Value {
        self.state.requests.lock().unwrap().last().expect("the server received no request").body.clone()
    }

    /// How many requests it received.
    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// The most chat requests it answered at once (a stream counts until its body is sent).
    pub fn peak_in_flight(&self) -> usize {
        self.state.peak_in_flight.load(Ordering::SeqCst)
    }

    /// When each chat request arrived, in order.
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        self.state.arrivals.lock().unwrap().clone()
    }

    /// A client builder for this server with model `gpt-test`.
    pub fn client(&self, compat: Compat) -> OpenAiBuilder {
        catena_providers::openai::OpenAiClient::builder().base_url(&self.base_url).compat(compat).model("gpt-test")
    }
}

fn record(state: &ServerState, path: &str, headers: HeaderMap, body: &Bytes) -> Value {
    let body: Value = serde_json::from_slice(body).expect("the client sent invalid JSON");
    state.requests.lock().unwrap().push(Recorded { path: path.to_string(), headers, body: body.clone() });
    body
}

async fn chat_handler(State(state): State<Arc<ServerState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = record(&state, "/v1/chat/completions", headers, &body);
    state.arrivals.lock().unwrap().push(std::time::Instant::now());
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(state.clone());
    let mut reply = state.reply.lock().unwrap().clone();
    if let Reply::Script(replies) = reply {
        let i = state.sequence_position.fetch_add(1, Ordering::SeqCst).min(replies.len() - 1);
        reply = replies[i].clone();
    }
    reply_to(&state, reply, &body).await
}

/// Counts a chat request as answered when dropped.
struct InFlight(Arc<ServerState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn reply_to(state: &Arc<ServerState>, reply: Reply, body: &Value) -> Response {
    let streaming = body["stream"] == json!(true);
    let include_usage = body["stream_options"]["include_usage"] == json!(true);
    match reply {
        Reply::Script(_) => Response::builder().status(500).body(Body::from("nested Reply::Script")).unwrap(),
        Reply::Answer(canned) => answer(&canned, streaming, include_usage),
        Reply::Sequence(answers) => {
            let i = state.sequence_position.fetch_add(1, Ordering::SeqCst).min(answers.len() - 1);
            answer(&answers[i], streaming, include_usage)
        }
        Reply::Stall => std::future::pending().await,
        Reply::StallAfterFirstChunk(canned) => {
            let text = render_sse(&canned, include_usage);
            let first = text.split_inclusive("\n\n").next().unwrap_or_default().to_string();
            let events = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(Bytes::from(first)) })
                .chain(futures::stream::pending());
            sse_response(Body::from_stream(events))
        }
        Reply::Delay(delay, canned) => {
            tokio::time::sleep(delay).await;
            answer(&canned, streaming, include_usage)
        }
        Reply::Status { status, headers, body } => {
            let mut r = Response::builder().status(status).header(header::CONTENT_TYPE, "application/json");
            for (name, value) in headers {
                r = r.header(name, value);
            }
            r.body(Body::from(body)).unwrap()
        }
        Reply::Raw { content_type, body } => {
            Response::builder().header(header::CONTENT_TYPE, content_type).body(Body::from(body)).unwrap()
        }
        Reply::Endless => {
            let guard = DropSignal(state.clone());
            let events = futures::stream::unfold((0u64, guard), |(i, guard)| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let event = json!({"id": "c", "object": "chat.completion.chunk", "model": "endless",
                    "choices": [{"index": 0, "delta": {"content": format!("tick{i} ")}, "finish_reason": null}]});
                Some((Ok::<_, std::convert::Infallible>(Bytes::from(format!("data: {event}\n\n"))), (i + 1, guard)))
            });
            sse_response(Body::from_stream(events))
        }
    }
}

/// Signals the test when the server drops the body of an endless stream, which hyper does when the connection
/// closes.
struct DropSignal(Arc<ServerState>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.stream_dropped_flag.store(true, Ordering::SeqCst);
        self.0.stream_dropped.notify_one();
    }
}

fn sse_response(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap()
}

fn answer(c: &Canned, streaming: bool, include_usage: bool) -> Response {
    if !streaming {
        let mut message = json!({"role": "assistant", "content": c.content});
        if !c.tool_calls.is_empty() {
            message["tool_calls"] = c
                .tool_calls
                .iter()
                .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
                .collect();
        }
        let body = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": c.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": c.finish_reason}],
            "usage": {"prompt_tokens": c.usage.0, "completion_tokens": c.usage.1, "total_tokens": c.usage.0 + c.usage.1},
        });
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
    }
    let text = render_sse(c, include_usage);
    let bytes = text.into_bytes();
    let mut pieces = Vec::new();
    let mut rest = &bytes[..];
    for &cut in c.cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = cut.min(rest.len());
        pieces.push(Bytes::copy_from_slice(&rest[..n]));
        rest = &rest[n..];
    }
    let body = futures::stream::iter(pieces).then(|piece| async move {
        // A pause between writes so that pieces reach the client as separate reads.
        tokio::time::sleep(Duration::from_micros(200)).await;
        Ok::<_, std::convert::Infallible>(piece)
    });
    sse_response(Body::from_stream(body))
}

/// The event stream OpenAI (or llama-cpp-python) sends for `c`.
fn render_sse(c: &Canned, include_usage: bool) -> String {
    let nl = c.line_ending;
    let mut events: Vec<String> = Vec::new();
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut v = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": c.model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            v["usage"] = Value::Null;
        }
        v.to_string()
    };
    match c.tool_style {
        ToolStyle::OpenAi => events.push(chunk(json!({"role": "assistant", "content": ""}), None)),
        ToolStyle::LlamaCpp => events.push(chunk(
            json!({"role": "assistant", "content": null, "function_call": null, "tool_calls": null}),
            None,
        )),
    }
    if let Some(content) = c.content {
        let chars: Vec<char> = content.chars().collect();
        for piece in chars.chunks(3) {
            events.push(chunk(json!({"content": piece.iter().collect::<String>()}), None));
        }
    }
    events.push(String::new()); // marker for a comment line, see below
    for (i, (id, name, args)) in c.tool_calls.iter().enumerate() {
        let args: Vec<char> = args.chars().collect();
        let pieces: Vec<String> = args.chunks(4).map(|p| p.iter().collect()).collect();
        match c.tool_style {
            ToolStyle::OpenAi => {
                events.push(chunk(
                    json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                        "function": {"name": name, "arguments": ""}}]}),
                    None,
                ));
                for p in &pieces {
                    events.push(chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": p}}]}), None));
                }
            }
            ToolStyle::LlamaCpp => {
                for p in &pieces {
                    events.push(chunk(
                        json!({"role": null, "content": null, "function_call": {"name": name, "arguments": p},
                            "tool_calls": [{"index": i, "id": id, "type": "function",
                                "function": {"name": name, "arguments": p}}]}),
                        None,
                    ));
                }
            }
        }
    }
    let last_delta = match c.tool_style {
        ToolStyle::OpenAi => json!({}),
        ToolStyle::LlamaCpp => json!({"role": null, "content": null, "function_call": null, "tool_calls": null}),
    };
    events.push(chunk(last_delta, Some(c.finish_reason)));
    if include_usage {
        events.push(
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": c.model, "choices": [],
                "usage": {"prompt_tokens": c.usage.0, "completion_tokens": c.usage.1,
                    "total_tokens": c.usage.0 + c.usage.1}})
            .to_string(),
        );
    }
    events.push("[DONE]".to_string());
    let mut out = String::new();
    for e in events {
        if e.is_empty() {
            out.push_str(&format!(": keep-alive{nl}{nl}"));
        } else {
            out.push_str(&format!("data: {e}{nl}{nl}"));
        }
    }
    out
}

async fn embeddings_handler(State(state): State<Arc<ServerState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = record(&state, "/v1/embeddings", headers, &body);
    let inputs: Vec<String> = serde_json::from_value(body["input"].clone()).expect("input is an array of strings");
    // Listed in reverse, as servers that batch internally may do; clients must order by `index`.
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, text)| {
            json!({"object": "embedding", "index": i, "embedding": [text.chars().count() as f32, i as f32, 0.5]})
        })
        .collect();
    let response = json!({"object": "list", "data": data, "model": body["model"],
        "usage": {"prompt_tokens": inputs.len() * 2, "total_tokens": inputs.len() * 2}});
    Response::builder().header(header::CONTENT_TYPE, "application/json").body(Body::from(response.to_string())).unwrap()
}
