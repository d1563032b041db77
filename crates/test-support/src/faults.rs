//! A hostile HTTP server for the fault-injection suite: plain TCP on 127.0.0.1, so it can do what a well-behaved
//! server library never does (reset a connection, cut a chunked body, stall, drip bytes, send invalid UTF-8).
//!
//! Each [`FaultServer`] serves one [`Fault`] to every connection (or to the first only, for the `*Once` faults,
//! after which it answers correctly). The correct answers, the first bytes of a stream and the provider's error
//! event come from a [`Dialect`], so the same faults run against every provider's wire format.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Builds a body from a size or a key.
pub type Maker<T> = Arc<dyn Fn(T) -> String + Send + Sync>;

/// The bodies a provider's wire format needs for the faults.
#[derive(Clone)]
pub struct Dialect {
    /// The provider's name, for reports.
    pub name: &'static str,
    /// A complete non-streamed answer.
    pub answer: String,
    /// A complete streamed answer (the whole body).
    pub stream: String,
    /// The media type of streamed answers (`text/event-stream`, `application/x-ndjson`).
    pub stream_type: &'static str,
    /// The first events of the streamed answer: some content, then (in the faults) a stall, a reset or a cut.
    pub stream_head: String,
    /// The first events, then the provider's in-stream error.
    pub stream_error: String,
    /// The first events, then a chunk that is not JSON.
    pub stream_malformed: String,
    /// A complete answer without usage, and a complete stream without it.
    pub answer_no_usage: String,
    /// The stream without usage.
    pub stream_no_usage: String,
    /// A complete answer whose text is `n` bytes long.
    pub huge_answer: Maker<usize>,
    /// A complete stream whose text is `n` bytes long.
    pub huge_stream: Maker<usize>,
    /// A 401 body echoing the key.
    pub echo_key: Maker<String>,
}

/// What the server does to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answers correctly.
    None,
    /// 429 with `Retry-After: 0` to the first request, then correct answers.
    RateLimitedOnce,
    /// 429 with `Retry-After: 1` to every request.
    RateLimitedForever,
    /// 500 to the first request, then correct answers.
    ServerErrorOnce,
    /// 503 to every request.
    UnavailableForever,
    /// Reads the request and resets the connection before any header, on the first request only.
    ResetBeforeHeadersOnce,
    /// Resets the connection before any header, on every request.
    ResetBeforeHeaders,
    /// Sends the head and the stream's first events (or half the answer), then resets the connection.
    ResetMidBody,
    /// A chunked body cut after some chunks (no terminating chunk), then the connection closed.
    TruncatedChunked,
    /// A close-delimited body (no length, no chunking) cut halfway, then the connection closed.
    TruncatedClose,
    /// Sends the head and the first events (or half the answer), then nothing, forever.
    StallAfterFirstChunk,
    /// Reads the request and never answers.
    NeverAnswer,
    /// The correct answer, one byte every 50 ms.
    SlowDrip,
    /// The first events, then a chunk that is not JSON (a whole answer that is not JSON when not streaming).
    MalformedJson,
    /// 502 with an nginx-style HTML page.
    Html502,
    /// 200 with no content type and no body.
    EmptyPlain,
    /// 200 `application/json` with no body.
    EmptyJson,
    /// 200 `text/event-stream` with no body.
    EmptySse,
    /// 200 with the right content type and invalid UTF-8 in the body.
    InvalidUtf8,
    /// A correct answer whose text is 50 MB.
    Huge,
    /// 500 with a 5 MB body.
    HugeErrorBody,
    /// A correct answer without usage.
    MissingUsage,
    /// The stream's first events, then the provider's error event (a whole answer: an error body with 500).
    ErrorMidStream,
    /// 401 with a body that echoes the API key.
    EchoedKey(String),
}

/// The size of [`Fault::Huge`]'s answer text.
pub const HUGE_ANSWER: usize = 50_000_000;

/// A running fault server; stops when dropped.
pub struct FaultServer {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultServer {
    /// Starts a server doing `fault` in `dialect`.
    pub async fn start(dialect: Dialect, fault: Fault) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let base_url = format!("http://{}", listener.local_addr().expect("an address"));
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let shared = Arc::new((dialect, fault));
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                let shared = shared.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let _ = serve(socket, &shared.0, &shared.1, &counter).await;
                });
            }
        });
        FaultServer { base_url, requests, task }
    }

    /// How many requests the server has read.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads one request; `Some(streaming)` when it asked for a stream.
async fn read_request(socket: &mut TcpStream) -> std::io::Result<Option<bool>> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        data.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&data[head_end..]);
    let path = head.lines().next().unwrap_or_default();
    let streaming = compact(&body).contains("\"stream\":true") || path.contains("stream");
    Ok(Some(streaming))
}

fn compact(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

fn head(status: &str, content_type: Option<&str>, framing: &str) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    if let Some(t) = content_type {
        head.push_str(&format!("content-type: {t}\r\n"));
    }
    head.push_str(framing);
    head.push_str("\r\n");
    head.into_bytes()
}

async fn whole(socket: &mut TcpStream, status: &str, content_type: Option<&str>, body: &[u8]) -> std::io::Result<()> {
    let mut out = head(status, content_type, &format!("content-length: {}\r\n", body.len()));
    out.extend_from_slice(body);
    socket.write_all(&out).await?;
    socket.flush().await
}

#[allow(deprecated)] // SO_LINGER 0 does not block: the close sends a reset at once, which is the point.
async fn reset(socket: TcpStream) {
    let _ = socket.set_linger(Some(Duration::ZERO));
    drop(socket);
}

async fn serve(mut socket: TcpStream, d: &Dialect, fault: &Fault, counter: &AtomicUsize) -> std::io::Result<()> {
    loop {
        let Some(streaming) = read_request(&mut socket).await? else { return Ok(()) };
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let json = Some("application/json");
        let (good, good_type) =
            if streaming { (d.stream.as_str(), Some(d.stream_type)) } else { (d.answer.as_str(), json) };
        // The part of the answer sent before a fault in the middle of the body.
        let partial = if streaming { d.stream_head.clone() } else { d.answer[..d.answer.len() / 2].to_string() };
        let fault = match fault {
            Fault::RateLimitedOnce | Fault::ServerErrorOnce | Fault::ResetBeforeHeadersOnce if n > 0 => &Fault::None,
            other => other,
        };
        match fault {
            Fault::None => whole(&mut socket, "200 OK", good_type, good.as_bytes()).await?,
            Fault::RateLimitedOnce => {
                let body = br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#;
                let mut out = head(
                    "429 Too Many Requests",
                    json,
                    &format!("retry-after: 0\r\ncontent-length: {}\r\n", body.len()),
                );
                out.extend_from_slice(body);
                socket.write_all(&out).await?;
            }
            Fault::RateLimitedForever => {
                let body = br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#;
                let mut out = head(
                    "429 Too Many Requests",
                    json,
                    &format!("retry-after: 1\r\ncontent-length: {}\r\n", body.len()),
                );
                out.extend_from_slice(body);
                socket.write_all(&out).await?;
            }
            Fault::ServerErrorOnce => {
                whole(&mut socket, "500 Internal Server Error", json, br#"{"error":{"message":"oops"}}"#).await?
            }
            Fault::UnavailableForever => {
                whole(&mut socket, "503 Service Unavailable", Some("text/plain"), b"upstream unavailable").await?
            }
            Fault::ResetBeforeHeadersOnce | Fault::ResetBeforeHeaders => {
                reset(socket).await;
                return Ok(());
            }
            Fault::ResetMidBody => {
                let mut out = head("200 OK", good_type, &format!("content-length: {}\r\n", good.len()));
                out.extend_from_slice(partial.as_bytes());
                socket.write_all(&out).await?;
                socket.flush().await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                reset(socket).await;
                return Ok(());
            }
            Fault::TruncatedChunked => {
                let mut out = head("200 OK", good_type, "transfer-encoding: chunked\r\n");
                out.extend_from_slice(format!("{:x}\r\n{partial}\r\n", partial.len()).as_bytes());
                socket.write_all(&out).await?;
                socket.flush().await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Ok(());
            }
            Fault::TruncatedClose => {
                let mut out = head("200 OK", good_type, "connection: close\r\n");
                out.extend_from_slice(partial.as_bytes());
                socket.write_all(&out).await?;
                socket.flush().await?;
                return Ok(());
            }
            Fault::StallAfterFirstChunk => {
                let mut out = head("200 OK", good_type, "transfer-encoding: chunked\r\n");
                out.extend_from_slice(format!("{:x}\r\n{partial}\r\n", partial.len()).as_bytes());
                socket.write_all(&out).await?;
                socket.flush().await?;
                std::future::pending::<()>().await;
            }
            Fault::NeverAnswer => std::future::pending::<()>().await,
            Fault::SlowDrip => {
                let mut out = head("200 OK", good_type, &format!("content-length: {}\r\n", good.len()));
                out.extend_from_slice(good.as_bytes());
                for byte in out {
                    socket.write_all(&[byte]).await?;
                    socket.flush().await?;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Fault::MalformedJson => {
                let body = if streaming { d.stream_malformed.clone() } else { "{\"id\": \"x\", \"choices\": [".into() };
                whole(&mut socket, "200 OK", good_type, body.as_bytes()).await?
            }
            Fault::Html502 => {
                let page = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad \
                            Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
                whole(&mut socket, "502 Bad Gateway", Some("text/html"), page.as_bytes()).await?
            }
            Fault::EmptyPlain => whole(&mut socket, "200 OK", None, b"").await?,
            Fault::EmptyJson => whole(&mut socket, "200 OK", json, b"").await?,
            Fault::EmptySse => whole(&mut socket, "200 OK", Some("text/event-stream"), b"").await?,
            Fault::InvalidUtf8 => {
                let mut body = partial.into_bytes();
                body.extend_from_slice(b"\xff\xfe\xc3(\n\n");
                whole(&mut socket, "200 OK", good_type, &body).await?
            }
            Fault::Huge => {
                let body = if streaming { (d.huge_stream)(HUGE_ANSWER) } else { (d.huge_answer)(HUGE_ANSWER) };
                whole(&mut socket, "200 OK", good_type, body.as_bytes()).await?
            }
            Fault::HugeErrorBody => {
                let body = "e".repeat(5_000_000);
                whole(&mut socket, "500 Internal Server Error", Some("text/plain"), body.as_bytes()).await?
            }
            Fault::MissingUsage => {
                let body = if streaming { &d.stream_no_usage } else { &d.answer_no_usage };
                whole(&mut socket, "200 OK", good_type, body.as_bytes()).await?
            }
            Fault::ErrorMidStream => {
                if streaming {
                    whole(&mut socket, "200 OK", good_type, d.stream_error.as_bytes()).await?
                } else {
                    whole(&mut socket, "500 Internal Server Error", json, br#"{"error":{"message":"boom"}}"#).await?
                }
            }
            Fault::EchoedKey(key) => {
                whole(&mut socket, "401 Unauthorized", json, (d.echo_key)(key.clone()).as_bytes()).await?
            }
        }
    }
}
