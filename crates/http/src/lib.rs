//! The HTTP transport of catena's network clients (the OpenAI-compatible client, the Chroma store, ...).
//!
//! An [`HttpClient`] wraps a [`reqwest::Client`] and runs its connections in one of two places, chosen with
//! [`IoRuntime`]:
//!
//! - [`IoRuntime::Caller`]: on the tokio runtime of the task that makes the call, as reqwest always does. No
//!   extra thread, no extra hop: the right choice for applications and servers.
//! - [`IoRuntime::Dedicated`]: on a thread the client owns, with a single-threaded tokio runtime of its own; a call
//!   crosses a channel to it, and a response body comes back chunk by chunk through a bounded channel. This is what
//!   makes catena's clients work in [evcxr](https://github.com/evcxr/evcxr) notebook cells: evcxr compiles each
//!   cell into a library of its own, with its own copy of tokio, and runs every cell on the runtime that the first
//!   asynchronous cell created. A task that a later cell spawns (reqwest spawns one per connection) then runs on
//!   that runtime's threads, where its own copy of tokio finds no runtime, and the request never completes. The
//!   dedicated thread runs only code of the copy that created the client, so it works from any cell.
//!
//! The same placement is available to clients that are not HTTP (the Qdrant store's gRPC client): a
//! [`Service`] whose requests and responses are plain data runs on a [`ServiceThread`].
//!
//! [`IoRuntime::detect`] picks `Dedicated` inside evcxr (it sets `EVCXR_IS_RUNTIME` in the process that runs the
//! cells) and `Caller` everywhere else; clients that take an `IoRuntime` document it as their default.
//!
//! ```
//! use catena_http::{HttpClient, IoRuntime};
//!
//! # async fn demo() -> Result<(), catena_http::Error> {
//! let client = HttpClient::new(reqwest::Client::new(), IoRuntime::Dedicated).expect("a thread");
//! let request = client.reqwest().get("http://127.0.0.1:8000/api/v2/heartbeat").build()?;
//! let response = client.execute(request).await?;
//! println!("{} {:?}", response.status(), response.bytes().await?);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use tokio::sync::{mpsc, oneshot};

/// Where an [`HttpClient`] runs its connections. See the [crate documentation](crate) for why there is a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoRuntime {
    /// On the tokio runtime of the calling task (reqwest's usual way): no thread of its own.
    Caller,
    /// On a thread the client owns, with its own single-threaded tokio runtime; calls and response chunks cross
    /// channels. Needed in evcxr notebooks; works anywhere, at the cost of one thread per client and a channel hop
    /// per call and per body chunk.
    Dedicated,
}

impl IoRuntime {
    /// [`IoRuntime::Dedicated`] when the process runs evcxr notebook cells (the `EVCXR_IS_RUNTIME` environment
    /// variable is set), [`IoRuntime::Caller`] otherwise.
    pub fn detect() -> Self {
        if std::env::var_os("EVCXR_IS_RUNTIME").is_some() {
            IoRuntime::Dedicated
        } else {
            IoRuntime::Caller
        }
    }
}

/// A failed HTTP exchange: reqwest's error, or the dedicated I/O thread gone.
///
/// Its `Display` names the whole cause chain ("error sending request for url (...): client error (Connect): tcp
/// connect error: Connection refused"), since reqwest's own message alone hides the cause.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Reqwest(reqwest::Error),
    IoThreadStopped,
}

impl Error {
    /// Whether a timeout of the `reqwest::Client` (connect, read or whole request) expired.
    pub fn is_timeout(&self) -> bool {
        matches!(&self.kind, Kind::Reqwest(e) if e.is_timeout())
    }

    /// Whether no connection could be made.
    pub fn is_connect(&self) -> bool {
        matches!(&self.kind, Kind::Reqwest(e) if e.is_connect())
    }

    /// reqwest's error, when there is one.
    pub fn reqwest(&self) -> Option<&reqwest::Error> {
        match &self.kind {
            Kind::Reqwest(e) => Some(e),
            Kind::IoThreadStopped => None,
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        Error { kind: Kind::Reqwest(e) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Reqwest(e) => {
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
            Kind::IoThreadStopped => {
                f.write_str("the HTTP client's I/O thread has stopped (a bug: please report it); build a new client")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Reqwest(e) => Some(e),
            Kind::IoThreadStopped => None,
        }
    }
}

/// A `reqwest::Client` and the place its connections run. Cheap to clone; clones share the connection pool and,
/// with [`IoRuntime::Dedicated`], the thread (which ends when the last clone and the last response are dropped).
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    io: Option<Arc<ServiceThread<HttpService>>>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient").field("io_runtime", &self.io_runtime()).finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Wraps `client`, running its connections where `io` says.
    ///
    /// # Errors
    /// With [`IoRuntime::Dedicated`], when the operating system refuses a thread or the runtime's I/O driver.
    pub fn new(client: reqwest::Client, io: IoRuntime) -> std::io::Result<Self> {
        let io = match io {
            IoRuntime::Caller => None,
            IoRuntime::Dedicated => {
                Some(Arc::new(ServiceThread::start(HttpService { client: client.clone() }, "catena-http-io")?))
            }
        };
        Ok(HttpClient { client, io })
    }

    /// The wrapped client, to build requests with (`client.reqwest().post(url)...build()`); send them with
    /// [`HttpClient::execute`].
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.client
    }

    /// Where this client runs its connections.
    pub fn io_runtime(&self) -> IoRuntime {
        if self.io.is_some() {
            IoRuntime::Dedicated
        } else {
            IoRuntime::Caller
        }
    }

    /// Sends `request`; returns the response once its status and headers are in (the body follows through
    /// [`Response::chunk`], [`Response::bytes`] or [`Response::bytes_stream`]). Dropping the future cancels the
    /// request.
    ///
    /// # Errors
    /// The client's failure to connect, send or read the head (with its timeouts), as an [`Error`].
    pub async fn execute(&self, request: reqwest::Request) -> Result<Response, Error> {
        let Some(io) = &self.io else {
            let response = self.client.execute(request).await?;
            return Ok(Response::direct(response));
        };
        io.call(request).await.map_err(|_| Error { kind: Kind::IoThreadStopped })?
    }
}

/// Chunks a dedicated thread may read ahead of the caller.
const BODY_CHANNEL_CHUNKS: usize = 8;

/// The HTTP side of a dedicated thread: runs one request and forwards its body.
struct HttpService {
    client: reqwest::Client,
}

impl Service for HttpService {
    type Request = reqwest::Request;
    type Response = Result<Response, Error>;

    async fn call(&self, request: reqwest::Request, mut reply: Reply<Self::Response>) {
        let response = tokio::select! {
            response = self.client.execute(request) => response,
            () = reply.closed() => return,
        };
        let mut response = match response {
            Ok(response) => response,
            Err(e) => return reply.send(Err(e.into())),
        };
        let (chunks, body) = mpsc::channel(BODY_CHANNEL_CHUNKS);
        let head = Response {
            status: response.status(),
            headers: std::mem::take(response.headers_mut()),
            body: Body::Channel(body),
        };
        if !reply.send_checked(Ok(head)) {
            return;
        }
        // The call goes on after its reply: the thread keeps running until the body is read or dropped.
        loop {
            let next = tokio::select! {
                next = response.chunk() => next,
                () = chunks.closed() => return,
            };
            let (item, last) = match next {
                Ok(Some(chunk)) => (Ok(chunk), false),
                Ok(None) => return,
                Err(e) => (Err(Error::from(e)), true),
            };
            if chunks.send(item).await.is_err() || last {
                return;
            }
        }
    }
}

/// Work done on a [`ServiceThread`]: requests and responses are plain data that cross channels, and the code that
/// handles them is the service's own, so a service started by one copy of a crate serves callers from any other
/// (what evcxr notebook cells are; see the [crate documentation](crate)).
pub trait Service: Send + Sync + 'static {
    /// What a caller sends.
    type Request: Send + 'static;
    /// What the caller gets back.
    type Response: Send + 'static;

    /// Handles one request on the service's thread and answers through `reply` (at most once). The future may
    /// go on after replying (to stream a body, say); the thread waits for it before it ends. A caller that stops
    /// waiting closes the reply ([`Reply::closed`]): stop working then.
    fn call(&self, request: Self::Request, reply: Reply<Self::Response>) -> impl Future<Output = ()> + Send;
}

/// The answer channel of one [`Service::call`].
#[derive(Debug)]
pub struct Reply<T> {
    sender: oneshot::Sender<T>,
}

impl<T> Reply<T> {
    /// Sends the answer; does nothing when the caller has stopped waiting.
    pub fn send(self, value: T) {
        let _ = self.sender.send(value);
    }

    /// Sends the answer; `false` when the caller has stopped waiting.
    pub fn send_checked(self, value: T) -> bool {
        self.sender.send(value).is_ok()
    }

    /// Completes when the caller stops waiting (drops its future).
    pub async fn closed(&mut self) {
        self.sender.closed().await;
    }
}

/// A [`Service`] running on a thread of its own with a current-thread tokio runtime, serving calls from any
/// thread or runtime (or none) concurrently. The thread ends when the last handle is dropped and every call in
/// progress has finished.
pub struct ServiceThread<S: Service> {
    jobs: mpsc::UnboundedSender<(S::Request, oneshot::Sender<S::Response>)>,
}

impl<S: Service> fmt::Debug for ServiceThread<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceThread").field("running", &!self.jobs.is_closed()).finish()
    }
}

impl<S: Service> ServiceThread<S> {
    /// Starts `service` on a new thread named `name`.
    ///
    /// # Errors
    /// When the operating system refuses the thread or the runtime's I/O driver.
    pub fn start(service: S, name: &str) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (jobs, mut incoming) = mpsc::unbounded_channel::<(S::Request, oneshot::Sender<S::Response>)>();
        let service = Arc::new(service);
        std::thread::Builder::new().name(name.to_string()).spawn(move || {
            runtime.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        job = incoming.recv() => match job {
                            Some((request, sender)) => {
                                let service = service.clone();
                                tasks.spawn(async move { service.call(request, Reply { sender }).await });
                            }
                            None => break,
                        },
                        Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                    }
                }
                while tasks.join_next().await.is_some() {}
            });
        })?;
        Ok(ServiceThread { jobs })
    }

    /// Sends `request` to the thread and waits for the answer. Dropping the future tells the service to stop.
    ///
    /// # Errors
    /// [`ServiceStopped`] when the thread is gone or the service dropped the reply without answering.
    pub async fn call(&self, request: S::Request) -> Result<S::Response, ServiceStopped> {
        let (sender, answer) = oneshot::channel();
        self.jobs.send((request, sender)).map_err(|_| ServiceStopped)?;
        answer.await.map_err(|_| ServiceStopped)
    }
}

/// A [`ServiceThread`] call that got no answer: the thread is gone, or the service dropped the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceStopped;

impl fmt::Display for ServiceStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the service thread stopped without answering (a bug: please report it); build a new client")
    }
}

impl std::error::Error for ServiceStopped {}

/// The head of an HTTP response and its body, read with [`Response::chunk`], [`Response::bytes`] or
/// [`Response::bytes_stream`].
#[derive(Debug)]
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Body,
}

enum Body {
    Direct(reqwest::Response),
    Channel(mpsc::Receiver<Result<Bytes, Error>>),
    Done,
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Body::Direct(_) => "Direct",
            Body::Channel(_) => "Channel",
            Body::Done => "Done",
        })
    }
}

impl Response {
    fn direct(mut response: reqwest::Response) -> Self {
        Response {
            status: response.status(),
            headers: std::mem::take(response.headers_mut()),
            body: Body::Direct(response),
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The next chunk of the body, `None` at its end.
    ///
    /// # Errors
    /// A transport failure or timeout while reading; the body ends with it.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        let next = match &mut self.body {
            Body::Direct(response) => response.chunk().await.map_err(Error::from),
            Body::Channel(rx) => rx.recv().await.transpose(),
            Body::Done => Ok(None),
        };
        if !matches!(next, Ok(Some(_))) {
            self.body = Body::Done;
        }
        next
    }

    /// The whole body.
    ///
    /// # Errors
    /// As [`Response::chunk`].
    pub async fn bytes(mut self) -> Result<Bytes, Error> {
        if let Body::Direct(_) = &self.body {
            if let Body::Direct(response) = std::mem::replace(&mut self.body, Body::Done) {
                return Ok(response.bytes().await?);
            }
        }
        let mut whole = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            whole.extend_from_slice(&chunk);
        }
        Ok(whole.into())
    }

    /// The body as a `'static` stream of chunks; it ends after an error.
    pub fn bytes_stream(self) -> BytesStream {
        let body = match self.body {
            Body::Direct(response) => StreamBody::Direct(Box::pin(response.bytes_stream())),
            Body::Channel(rx) => StreamBody::Channel(rx),
            Body::Done => StreamBody::Done,
        };
        BytesStream { body }
    }
}

/// The body of a [`Response`] as a stream of chunks, from [`Response::bytes_stream`].
pub struct BytesStream {
    body: StreamBody,
}

enum StreamBody {
    Direct(Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>),
    Channel(mpsc::Receiver<Result<Bytes, Error>>),
    Done,
}

impl fmt::Debug for BytesStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = match self.body {
            StreamBody::Direct(_) => "Direct",
            StreamBody::Channel(_) => "Channel",
            StreamBody::Done => "Done",
        };
        f.debug_struct("BytesStream").field("body", &body).finish()
    }
}

impl Stream for BytesStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = match &mut self.body {
            StreamBody::Direct(stream) => match stream.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(item) => item.map(|r| r.map_err(Error::from)),
            },
            StreamBody::Channel(rx) => match rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(item) => item,
            },
            StreamBody::Done => None,
        };
        if !matches!(next, Some(Ok(_))) {
            self.body = StreamBody::Done;
        }
        Poll::Ready(next)
    }
}
