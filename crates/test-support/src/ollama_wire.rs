//! A real HTTP server speaking Ollama's native API wire format byte for byte, for exact fixtures.
//!
//! [`OllamaServer`] is an axum server on `127.0.0.1:0` answering `POST /api/chat` and `POST /api/embed` with
//! exactly the bytes a test gives it: a JSON answer, a newline-delimited JSON stream cut into HTTP chunks of the
//! sizes the test chooses (so lines split anywhere, mid-UTF-8 character included), an error status with headers,
//! or a huge error body. It records every request (path, headers, JSON body) so tests assert on exactly what a
//! client sent.
//!
//! It stands in for Ollama itself, whose binary cannot be installed on a test machine; its fixtures are
//! transcribed from Ollama's published API documentation (`docs/api.md`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use serde_json::Value;

/// What the server does with a request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with `application/json` and this body, verbatim.
    Json(String),
    /// 200 with `application/x-ndjson` and this body, verbatim, written in HTTP chunks of these byte sizes
    /// (cycled; a cut may fall inside a UTF-8 character).
    Lines {
        /// The whole stream.
        body: String,
        /// The sizes of the HTTP chunks.
        cuts: Vec<usize>,
    },
    /// This status, these headers and this body (`application/json`).
    Status {
        /// The HTTP status.
        status: u16,
        /// Extra headers (`retry-after`, ...).
        headers: Vec<(String, String)>,
        /// The body, verbatim.
        body: String,
    },
    /// This status with a body of `bytes` bytes of `x`, written in 64 KiB chunks.
    HugeStatus {
        /// The HTTP status.
        status: u16,
        /// The body's size.
        bytes: usize,
    },
    /// Accept the request and never answer (a stalled server).
    Stall,
    /// 200 with `application/x-ndjson`, this much of a stream, then silence with the connection open.
    StallAfter(String),
    /// One reply per request, in order (the last one repeats).
    Script(Vec<Reply>),
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The path (`/api/chat`, `/api/embed`).
    pub path: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The JSON body.
    pub body: Value,
}

struct ServerState {
    reply: Mutex<Reply>,
    requests: Mutex<Vec<Recorded>>,
    position: AtomicUsize,
}

/// The running server; it stops with the test's runtime.
pub struct OllamaServer {
    /// `http://127.0.0.1:PORT`, what `OllamaBuilder::host` takes.
    pub host: String,
    state: Arc<ServerState>,
}

impl OllamaServer {
    /// Starts a server answering every request with `reply`.
    pub async fn start(reply: Reply) -> Self {
        let state = Arc::new(ServerState {
            reply: Mutex::new(reply),
            requests: Mutex::new(Vec::new()),
            position: AtomicUsize::new(0),
        });
        let app =
            Router::new().route("/api/chat", post(chat)).route("/api/embed", post(embed)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port on 127.0.0.1");
        let addr = listener.local_addr().expect("the listener's address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("the test server runs") });
        OllamaServer { host: format!("http://{addr}"), state }
    }

    /// Changes the reply for the following requests.
    pub fn set_reply(&self, reply: Reply) {
        *self.state.reply.lock().unwrap() = reply;
        self.state.position.store(0, Ordering::SeqCst);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The last request received; panics when there was none.
    pub fn last(&self) -> Recorded {
        self.state.requests.lock().unwrap().last().cloned().expect("the server received no request")
    }
}

async fn chat(state: State<Arc<ServerState>>, headers: HeaderMap, body: Bytes) -> Response {
    answer("/api/chat", state, headers, body).await
}

async fn embed(state: State<Arc<ServerState>>, headers: HeaderMap, body: Bytes) -> Response {
    answer("/api/embed", state, headers, body).await
}

async fn answer(path: &str, State(state): State<Arc<ServerState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).expect("the client sent invalid JSON");
    state.requests.lock().unwrap().push(Recorded { path: path.into(), headers, body });
    let mut reply = state.reply.lock().unwrap().clone();
    if let Reply::Script(replies) = reply {
        let i = state.position.fetch_add(1, Ordering::SeqCst).min(replies.len().saturating_sub(1));
        reply = replies.get(i).cloned().unwrap_or(Reply::Status {
            status: 500,
            headers: vec![],
            body: "empty script".into(),
        });
    }
    match reply {
        Reply::Json(body) => {
            Response::builder().header(header::CONTENT_TYPE, "application/json").body(Body::from(body)).unwrap()
        }
        Reply::Lines { body, cuts } => {
            let bytes = body.into_bytes();
            let mut pieces = Vec::new();
            let mut rest = &bytes[..];
            let cuts = if cuts.is_empty() { vec![usize::MAX] } else { cuts };
            for &cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let n = cut.max(1).min(rest.len());
                pieces.push(Bytes::copy_from_slice(&rest[..n]));
                rest = &rest[n..];
            }
            let stream = futures::stream::iter(pieces).then(|piece| async move {
                // A pause between writes so that pieces reach the client as separate reads.
                tokio::time::sleep(Duration::from_micros(200)).await;
                Ok::<_, std::convert::Infallible>(piece)
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "application/x-ndjson")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        Reply::Status { status, headers, body } => {
            let mut r = Response::builder().status(status).header(header::CONTENT_TYPE, "application/json");
            for (name, value) in headers {
                r = r.header(name, value);
            }
            r.body(Body::from(body)).unwrap()
        }
        Reply::HugeStatus { status, bytes } => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let count = bytes.div_ceil(chunk.len());
            let stream = futures::stream::iter(0..count).map(move |i| {
                let n = (bytes - i * chunk.len()).min(chunk.len());
                Ok::<_, std::convert::Infallible>(chunk.slice(..n))
            });
            Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        Reply::Stall => std::future::pending().await,
        Reply::StallAfter(body) => {
            let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(Bytes::from(body)) })
                .chain(futures::stream::pending());
            Response::builder()
                .header(header::CONTENT_TYPE, "application/x-ndjson")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        Reply::Script(_) => Response::builder().status(500).body(Body::from("nested Reply::Script")).unwrap(),
    }
}
