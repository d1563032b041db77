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
use std::time::Duration;

use bytes::Bytes;
pub use catena_core::Deadline;
use futures_core::Stream;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

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
    Deadline(Deadline, Duration),
}

impl Error {
    /// Whether a timeout of the `reqwest::Client` (connect, read or whole request) or a [`Deadlines`] deadline
    /// expired.
    pub fn is_timeout(&self) -> bool {
        matches!(&self.kind, Kind::Reqwest(e) if e.is_timeout()) || matches!(self.kind, Kind::Deadline(..))
    }

    /// The deadline of [`Deadlines`] that passed and its limit, when that is what ended the exchange (a connect
    /// timeout set with [`Deadlines::client_builder`] included).
    pub fn deadline(&self) -> Option<(Deadline, Duration)> {
        match &self.kind {
            Kind::Deadline(deadline, limit) => Some((*deadline, *limit)),
            _ => None,
        }
    }

    /// Whether no connection could be made.
    pub fn is_connect(&self) -> bool {
        matches!(&self.kind, Kind::Reqwest(e) if e.is_connect())
    }

    /// reqwest's error, when there is one.
    pub fn reqwest(&self) -> Option<&reqwest::Error> {
        match &self.kind {
            Kind::Reqwest(e) => Some(e),
            Kind::IoThreadStopped | Kind::Deadline(..) => None,
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
            Kind::Deadline(deadline, limit) => write!(f, "the {deadline} deadline ({limit:?}) passed"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Reqwest(e) => Some(e),
            Kind::IoThreadStopped | Kind::Deadline(..) => None,
        }
    }
}

/// The deadlines of an exchange (see [`HttpClient::execute_within`]). `None` is no limit of that kind.
///
/// - `connect`: making the connection. reqwest applies it, so it is a setting of the `reqwest::Client`:
///   build the client from [`Deadlines::client_builder`].
/// - `first_chunk`: for a streamed answer, from sending the request to the first chunk of the body (the head
///   included). Not applied to whole answers, whose head comes only when the server has finished.
/// - `idle`: between two chunks of the body; for a whole answer, also from its head to its first chunk.
/// - `total`: from sending the request to the end of the body.
///
/// ```
/// use std::time::Duration;
/// use catena_http::Deadlines;
/// let deadlines = Deadlines::none().with_connect(Duration::from_secs(5)).with_total(Duration::from_secs(120));
/// assert_eq!(deadlines.idle, None);
/// let client = deadlines.client_builder().build().expect("a client");
/// # drop(client);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deadlines {
    /// Making the connection (TCP and TLS).
    pub connect: Option<Duration>,
    /// From sending a streaming request to the first chunk of its body.
    pub first_chunk: Option<Duration>,
    /// Between two chunks of the body.
    pub idle: Option<Duration>,
    /// The whole exchange.
    pub total: Option<Duration>,
}

impl Deadlines {
    /// No deadlines at all.
    pub fn none() -> Self {
        Deadlines::default()
    }

    /// Limits making the connection.
    pub fn with_connect(mut self, limit: Duration) -> Self {
        self.connect = Some(limit);
        self
    }

    /// Limits the wait for a streamed answer's first chunk.
    pub fn with_first_chunk(mut self, limit: Duration) -> Self {
        self.first_chunk = Some(limit);
        self
    }

    /// Limits the wait between two chunks.
    pub fn with_idle(mut self, limit: Duration) -> Self {
        self.idle = Some(limit);
        self
    }

    /// Limits the whole exchange.
    pub fn with_total(mut self, limit: Duration) -> Self {
        self.total = Some(limit);
        self
    }

    /// The deadlines that are zero, by name (a zero deadline fails every call, so builders refuse it).
    pub fn zero_ones(&self) -> Vec<&'static str> {
        let all =
            [("connect", self.connect), ("first_chunk", self.first_chunk), ("idle", self.idle), ("total", self.total)];
        all.into_iter().filter(|(_, d)| d.is_some_and(|d| d.is_zero())).map(|(name, _)| name).collect()
    }

    /// A `reqwest::ClientBuilder` with the connect deadline set (and TCP_NODELAY, which request-response traffic
    /// wants); add the rest of the client's settings to it.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let builder = reqwest::Client::builder().tcp_nodelay(true);
        match self.connect {
            Some(limit) => builder.connect_timeout(limit),
            None => builder,
        }
    }
}

/// Whether an exchange's answer is streamed (the first-chunk deadline applies) or whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A streamed answer (Server-Sent Events, NDJSON): the first chunk is awaited under the first-chunk deadline.
    Streamed,
    /// A whole answer: its head comes when the server has finished, under the total deadline only.
    Whole,
}

/// The clock of one exchange under [`Deadlines`].
#[derive(Debug, Clone, Copy)]
struct Clock {
    deadlines: Deadlines,
    answer: Answer,
    started: Instant,
    /// When the last chunk (or, for a whole answer, the head) arrived; `None` before.
    last: Option<Instant>,
}

impl Clock {
    fn new(deadlines: Deadlines, answer: Answer) -> Self {
        Clock { deadlines, answer, started: Instant::now(), last: None }
    }

    fn total(&self) -> Option<(Instant, Deadline, Duration)> {
        self.deadlines.total.map(|d| (self.started + d, Deadline::Total, d))
    }

    /// The deadline of the response head.
    fn head(&self) -> Option<(Instant, Deadline, Duration)> {
        let first = match self.answer {
            Answer::Streamed => self.deadlines.first_chunk.map(|d| (self.started + d, Deadline::FirstChunk, d)),
            Answer::Whole => None,
        };
        [first, self.total()].into_iter().flatten().min_by_key(|(at, _, _)| *at)
    }

    /// The deadline of the next body chunk.
    fn chunk(&self) -> Option<(Instant, Deadline, Duration)> {
        let own = match (self.last, self.answer) {
            (None, Answer::Streamed) => self.deadlines.first_chunk.map(|d| (self.started + d, Deadline::FirstChunk, d)),
            (None, Answer::Whole) => self.deadlines.idle.map(|d| (Instant::now() + d, Deadline::Idle, d)),
            (Some(last), _) => self.deadlines.idle.map(|d| (last + d, Deadline::Idle, d)),
        };
        [own, self.total()].into_iter().flatten().min_by_key(|(at, _, _)| *at)
    }

    /// Runs `fut` under `deadline`.
    async fn within<T>(
        deadline: Option<(Instant, Deadline, Duration)>,
        fut: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match deadline {
            Some((at, which, limit)) => match tokio::time::timeout_at(at, fut).await {
                Ok(result) => result,
                Err(_) => Err(Error { kind: Kind::Deadline(which, limit) }),
            },
            None => fut.await,
        }
    }
}

/// reqwest's error, or [`Kind::Deadline`] when it is the connect timeout that `deadlines` set.
fn classify(e: reqwest::Error, deadlines: &Deadlines) -> Error {
    match deadlines.connect {
        Some(limit) if e.is_connect() && e.is_timeout() => Error { kind: Kind::Deadline(Deadline::Connect, limit) },
        _ => Error::from(e),
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
            return Ok(Response::direct(response, None));
        };
        io.call((request, None)).await.map_err(|_| Error { kind: Kind::IoThreadStopped })?
    }

    /// Sends `request` under `deadlines`: as [`HttpClient::execute`], and the head and every chunk of the body
    /// are awaited under the deadline that applies ([`Deadlines`] says which); when one passes, the exchange ends
    /// with an error whose [`Error::deadline`] names it. The clock runs where the connection runs (on the
    /// dedicated thread with [`IoRuntime::Dedicated`]), so it works from any runtime.
    ///
    /// # Errors
    /// As [`HttpClient::execute`], and a passed deadline.
    pub async fn execute_within(
        &self,
        request: reqwest::Request,
        deadlines: Deadlines,
        answer: Answer,
    ) -> Result<Response, Error> {
        let clock = Clock::new(deadlines, answer);
        let Some(io) = &self.io else {
            return Response::start(&self.client, request, clock).await;
        };
        io.call((request, Some(clock))).await.map_err(|_| Error { kind: Kind::IoThreadStopped })?
    }
}

/// Chunks a dedicated thread may read ahead of the caller.
const BODY_CHANNEL_CHUNKS: usize = 8;

/// The HTTP side of a dedicated thread: runs one request and forwards its body.
struct HttpService {
    client: reqwest::Client,
}

impl Service for HttpService {
    type Request = (reqwest::Request, Option<Clock>);
    type Response = Result<Response, Error>;

    async fn call(&self, (request, clock): Self::Request, mut reply: Reply<Self::Response>) {
        let response = tokio::select! {
            response = async {
                match clock {
                    Some(clock) => Response::start(&self.client, request, clock).await,
                    None => self.client.execute(request).await.map(|r| Response::direct(r, None)).map_err(Error::from),
                }
            } => response,
            () = reply.closed() => return,
        };
        let mut response = match response {
            Ok(response) => response,
            Err(e) => return reply.send(Err(e)),
        };
        let (chunks, body) = mpsc::channel(BODY_CHANNEL_CHUNKS);
        let head = Response {
            status: response.status(),
            headers: std::mem::take(&mut response.headers),
            body: Body::Channel(body),
            clock: None,
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
                Err(e) => (Err(e), true),
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
    /// The deadlines the body is read under, for a direct body read on the caller's runtime.
    clock: Option<Clock>,
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
    fn direct(mut response: reqwest::Response, clock: Option<Clock>) -> Self {
        Response {
            status: response.status(),
            headers: std::mem::take(response.headers_mut()),
            body: Body::Direct(response),
            clock,
        }
    }

    /// Sends `request` with `client` under `clock` (on the current runtime).
    async fn start(client: &reqwest::Client, request: reqwest::Request, mut clock: Clock) -> Result<Response, Error> {
        let deadlines = clock.deadlines;
        let head =
            Clock::within(clock.head(), async { client.execute(request).await.map_err(|e| classify(e, &deadlines)) })
                .await?;
        if clock.answer == Answer::Whole {
            clock.last = Some(Instant::now());
        }
        Ok(Response::direct(head, Some(clock)))
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
            Body::Direct(response) => match &mut self.clock {
                Some(clock) => {
                    let deadlines = clock.deadlines;
                    let next = Clock::within(clock.chunk(), async {
                        response.chunk().await.map_err(|e| classify(e, &deadlines))
                    })
                    .await;
                    clock.last = Some(Instant::now());
                    next
                }
                None => response.chunk().await.map_err(Error::from),
            },
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
        if let (Body::Direct(_), None) = (&self.body, &self.clock) {
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
            Body::Direct(_) if self.clock.is_some() => {
                let chunks = futures::stream::unfold(self, |mut response| async move {
                    match response.chunk().await {
                        Ok(Some(chunk)) => Some((Ok(chunk), response)),
                        Ok(None) => None,
                        Err(e) => Some((Err(e), response)),
                    }
                });
                StreamBody::Timed(Box::pin(chunks))
            }
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
    Timed(Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>),
    Channel(mpsc::Receiver<Result<Bytes, Error>>),
    Done,
}

impl fmt::Debug for BytesStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = match self.body {
            StreamBody::Direct(_) => "Direct",
            StreamBody::Timed(_) => "Timed",
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
            StreamBody::Timed(stream) => match stream.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(item) => item,
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
