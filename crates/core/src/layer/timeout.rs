//! Deadlines on calls: [`Timeouts`], [`TimeoutLayer`] and the [`Timeout`] wrapper.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use crate::completion::GrammarCompletion;
use crate::document::ScoredDocument;
use crate::embed::Embedder;
use crate::error::{Deadline, Error, Result};
use crate::llm::{Capabilities, ChatStream, Llm};
use crate::message::{ChatChunk, ChatRequest, ChatResponse};
use crate::retriever::Retriever;

/// The deadlines a [`TimeoutLayer`] enforces. `None` means no limit of that kind; [`Timeouts::none`] sets none.
///
/// The connect timeout is not here: only a transport knows when a connection is established, so it is a setting
/// of the HTTP client (`OpenAiClient::with_connect_timeout` in `catena-providers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    /// From the call to the first streamed chunk (a stream's time to first token).
    pub first_chunk: Option<Duration>,
    /// Between two streamed chunks, once the first has arrived.
    pub idle: Option<Duration>,
    /// The whole call: for a stream, from the call to its last chunk.
    pub total: Option<Duration>,
}

impl Timeouts {
    /// No limits.
    pub fn none() -> Self {
        Timeouts::default()
    }
    /// Limits the whole call.
    pub fn with_total(mut self, d: Duration) -> Self {
        self.total = Some(d);
        self
    }
    /// Limits the wait for a stream's first chunk.
    pub fn with_first_chunk(mut self, d: Duration) -> Self {
        self.first_chunk = Some(d);
        self
    }
    /// Limits the wait between two chunks of a stream.
    pub fn with_idle(mut self, d: Duration) -> Self {
        self.idle = Some(d);
        self
    }
}

/// Fails calls that exceed their [`Timeouts`] with [`Error::Deadline`] naming the backend and the deadline (which is retryable, so a
/// [`super::RetryLayer`] outside this layer retries them). Wraps an [`Llm`], an [`Embedder`] or a [`Retriever`];
/// non-streaming calls use `total` only.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeouts: Timeouts,
}

impl TimeoutLayer {
    /// A layer enforcing `timeouts`.
    pub fn new(timeouts: Timeouts) -> Self {
        TimeoutLayer { timeouts }
    }
}

impl<S> tower_layer::Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout { inner, timeouts: self.timeouts, backend: std::sync::OnceLock::new() }
    }
}

/// A service with deadlines. Built by [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeouts: Timeouts,
    /// The wrapped backend's name for errors, read from its capabilities once (not on every call).
    backend: std::sync::OnceLock<Arc<str>>,
}

impl<S> Timeout<S> {
    /// The wrapped service.
    pub fn inner(&self) -> &S {
        &self.inner
    }
    /// The deadlines in effect.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    async fn total<T>(
        &self,
        what: &str,
        endpoint: impl FnOnce() -> String,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.timeouts.total {
            Some(limit) => tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                tracing::warn!(limit_ms = limit.as_millis() as u64, "{what} exceeded its total timeout");
                Err(Error::Deadline { endpoint: endpoint(), deadline: Deadline::Total, limit })
            }),
            None => fut.await,
        }
    }
}

#[async_trait]
impl<S: Llm> Llm for Timeout<S> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn default_model(&self) -> Option<String> {
        self.inner.default_model()
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let backend = || self.backend.get_or_init(|| self.inner.capabilities().backend.into()).to_string();
        self.total("chat", backend, self.inner.chat(request)).await
    }
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let start = Instant::now();
        let total_deadline = self.timeouts.total.map(|d| (start + d, d, Deadline::Total));
        let first_deadline = self.timeouts.first_chunk.map(|d| (start + d, d, Deadline::FirstChunk));
        // Opening the stream counts against the first-chunk and total deadlines.
        let open_deadline = [total_deadline, first_deadline].into_iter().flatten().min_by_key(|(at, _, _)| *at);
        let endpoint = self.backend.get_or_init(|| self.inner.capabilities().backend.into()).clone();
        let inner = match open_deadline {
            Some((at, limit, deadline)) => match tokio::time::timeout_at(at, self.inner.chat_stream(request)).await {
                Ok(r) => r?,
                Err(_) => return Err(Error::Deadline { endpoint: endpoint.to_string(), deadline, limit }),
            },
            None => self.inner.chat_stream(request).await?,
        };
        Ok(Box::pin(DeadlineStream::new(inner, endpoint, total_deadline, first_deadline, self.timeouts.idle)))
    }
    fn grammar_completion(&self) -> Option<&dyn GrammarCompletion> {
        self.inner.grammar_completion()
    }
}

#[async_trait]
impl<S: Embedder> Embedder for Timeout<S> {
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.total("embedding", || self.inner.model_name(), self.inner.embed_documents(texts)).await
    }
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        self.total("query embedding", || self.inner.model_name(), self.inner.embed_query(text)).await
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn model_name(&self) -> String {
        self.inner.model_name()
    }
}

#[async_trait]
impl<S: Retriever> Retriever for Timeout<S> {
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>> {
        self.total("retrieval", || "retriever".to_string(), self.inner.retrieve(query)).await
    }
}

/// A chat stream under first-chunk, idle and total deadlines. After a deadline passes it yields one
/// [`Error::Deadline`] and ends (the inner stream is dropped, which cancels the request).
struct DeadlineStream {
    inner: Option<ChatStream>,
    endpoint: Arc<str>,
    total: Option<Armed>,
    idle: Option<Duration>,
    /// The deadline of the next chunk, the limit it stands for and its kind.
    next: Option<Armed>,
    timer: Pin<Box<Sleep>>,
}

type Armed = (Instant, Duration, Deadline);

impl DeadlineStream {
    fn new(
        inner: ChatStream,
        endpoint: Arc<str>,
        total: Option<Armed>,
        first: Option<Armed>,
        idle: Option<Duration>,
    ) -> Self {
        let mut s = DeadlineStream {
            inner: Some(inner),
            endpoint,
            total,
            idle,
            next: None,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
        };
        s.arm(first);
        s
    }

    /// The next deadline is the earlier of the total deadline and `chunk` (the next chunk's own deadline). The
    /// timer itself is moved only when the stream has to wait (see `poll_next`), so chunks that are already there
    /// cost no timer-wheel work.
    fn arm(&mut self, chunk: Option<Armed>) {
        self.next = [self.total, chunk].into_iter().flatten().min_by_key(|(at, _, _)| *at);
    }
}

impl Stream for DeadlineStream {
    type Item = Result<ChatChunk>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        match inner.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => {
                let idle = self.idle.map(|d| (Instant::now() + d, d, Deadline::Idle));
                self.arm(idle);
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                self.inner = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Some((at, limit, deadline)) = self.next else { return Poll::Pending };
                if self.timer.deadline() != at {
                    self.timer.as_mut().reset(at);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.inner = None;
                        tracing::warn!(limit_ms = limit.as_millis() as u64, "chat stream timed out");
                        let endpoint = self.endpoint.to_string();
                        Poll::Ready(Some(Err(Error::Deadline { endpoint, deadline, limit })))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

use std::future::Future as _;
