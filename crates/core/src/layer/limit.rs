//! Limits on load: [`ConcurrencyLimitLayer`] (calls in flight) and [`RateLimitLayer`] (requests and tokens per
//! minute).

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::completion::GrammarCompletion;
use crate::document::ScoredDocument;
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::llm::{Capabilities, ChatStream, Llm};
use crate::message::{ChatRequest, ChatResponse, ContentPart};
use crate::retriever::Retriever;

/// Lets at most `max` calls run at once through every service it wraps (the limit is shared: wrap several
/// clients of one server with the same layer value to bound them together). Further calls wait their turn, in
/// order. A stream holds its slot until it ends or is dropped.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    semaphore: Arc<Semaphore>,
    max: usize,
}

impl ConcurrencyLimitLayer {
    /// At most `max` calls in flight.
    pub fn new(max: NonZeroU32) -> Self {
        let max = max.get() as usize;
        ConcurrencyLimitLayer { semaphore: Arc::new(Semaphore::new(max)), max }
    }
}

impl<S> tower_layer::Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;
    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit { inner, semaphore: self.semaphore.clone(), max: self.max }
    }
}

/// A service with a bound on calls in flight. Built by [`ConcurrencyLimitLayer`].
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    semaphore: Arc<Semaphore>,
    max: usize,
}

impl<S> ConcurrencyLimit<S> {
    /// The wrapped service.
    pub fn inner(&self) -> &S {
        &self.inner
    }
    /// The number of calls that may run at once.
    pub fn max(&self) -> usize {
        self.max
    }
    /// Free slots right now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit> {
        // The semaphore is never closed; if it were, the call could not run.
        self.semaphore.clone().acquire_owned().await.map_err(|_| Error::Cancelled)
    }
}

#[async_trait]
impl<S: Llm> Llm for ConcurrencyLimit<S> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn default_model(&self) -> Option<String> {
        self.inner.default_model()
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let _permit = self.permit().await?;
        self.inner.chat(request).await
    }
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let permit = self.permit().await?;
        let stream = self.inner.chat_stream(request).await?;
        // The permit travels with the stream and is released when the stream is dropped.
        Ok(Box::pin(stream.map(move |item| {
            let _hold = &permit;
            item
        })))
    }
    fn grammar_completion(&self) -> Option<&dyn GrammarCompletion> {
        self.inner.grammar_completion()
    }
}

#[async_trait]
impl<S: Embedder> Embedder for ConcurrencyLimit<S> {
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let _permit = self.permit().await?;
        self.inner.embed_documents(texts).await
    }
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let _permit = self.permit().await?;
        self.inner.embed_query(text).await
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn model_name(&self) -> String {
        self.inner.model_name()
    }
}

#[async_trait]
impl<S: Retriever> Retriever for ConcurrencyLimit<S> {
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>> {
        let _permit = self.permit().await?;
        self.inner.retrieve(query).await
    }
}

/// How a [`RateLimitLayer`] counts the tokens of a request before it is sent (the provider's exact count is only
/// known from the answer's usage, which then corrects the budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEstimate {
    /// One token per this many bytes of text (4 is a fair figure for English with BPE tokenizers).
    BytesPerToken(NonZeroU32),
}

impl TokenEstimate {
    fn of(&self, bytes: usize) -> u64 {
        match self {
            TokenEstimate::BytesPerToken(n) => (bytes as u64).div_ceil(n.get() as u64),
        }
    }
}

/// Request-rate and token-rate limits, shared by every service the layer wraps.
///
/// Both are token buckets that refill continuously: `requests(60, one minute)` allows one request per second on
/// average and a burst of up to 60 after a quiet minute. A call waits until both buckets can pay for it. Tokens
/// are estimated before the call (prompt text by [`TokenEstimate`], plus `max_tokens` when the request sets it);
/// once the answer reports its usage, the difference is paid or refunded. A single request estimated above the
/// whole token budget fails at once with [`Error::InvalidInput`], since waiting would never let it through.
///
/// ```
/// use std::num::NonZeroU32;
/// use catena_core::layer::{RateLimitLayer, TokenEstimate};
/// let n = |v| NonZeroU32::new(v).unwrap();
/// let limit = RateLimitLayer::new()
///     .requests_per_minute(n(60))
///     .tokens_per_minute(n(40_000), TokenEstimate::BytesPerToken(n(4)));
/// # let _ = limit;
/// ```
#[derive(Debug, Clone, Default)]
pub struct RateLimitLayer {
    requests: Option<(NonZeroU32, Duration)>,
    tokens: Option<(NonZeroU32, Duration, TokenEstimate)>,
    state: Arc<Mutex<Option<Arc<Buckets>>>>,
}

const MINUTE: Duration = Duration::from_secs(60);

impl RateLimitLayer {
    /// No limits yet: add them with the other methods.
    pub fn new() -> Self {
        RateLimitLayer::default()
    }
    /// At most `n` requests per minute.
    pub fn requests_per_minute(self, n: NonZeroU32) -> Self {
        self.with_requests(n, MINUTE)
    }
    /// At most `n` tokens (prompt plus answer) per minute, estimated before a call with `estimate`.
    pub fn tokens_per_minute(self, n: NonZeroU32, estimate: TokenEstimate) -> Self {
        self.with_tokens(n, MINUTE, estimate)
    }
    /// At most `n` requests per `period`.
    ///
    /// # Errors
    /// [`Error::Config`] when `period` is zero.
    pub fn requests(self, n: NonZeroU32, period: Duration) -> Result<Self> {
        check_period(period)?;
        Ok(self.with_requests(n, period))
    }
    /// At most `n` tokens per `period`, estimated before a call with `estimate`.
    ///
    /// # Errors
    /// [`Error::Config`] when `period` is zero.
    pub fn tokens(self, n: NonZeroU32, period: Duration, estimate: TokenEstimate) -> Result<Self> {
        check_period(period)?;
        Ok(self.with_tokens(n, period, estimate))
    }

    fn with_requests(mut self, n: NonZeroU32, period: Duration) -> Self {
        self.requests = Some((n, period));
        self.state = Arc::default();
        self
    }
    fn with_tokens(mut self, n: NonZeroU32, period: Duration, estimate: TokenEstimate) -> Self {
        self.tokens = Some((n, period, estimate));
        self.state = Arc::default();
        self
    }

    fn buckets(&self) -> Arc<Buckets> {
        let mut slot = self.state.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| {
            Arc::new(Buckets {
                requests: self.requests.map(|(n, per)| Mutex::new(Bucket::full(n.get() as f64, per))),
                tokens: self.tokens.map(|(n, per, _)| Mutex::new(Bucket::full(n.get() as f64, per))),
                estimate: self.tokens.map(|(_, _, e)| e),
            })
        })
        .clone()
    }
}

fn check_period(period: Duration) -> Result<()> {
    if period.is_zero() {
        return Err(Error::config(
            "RateLimitLayer period",
            "is zero",
            "give the window the limit applies to, such as one second",
        ));
    }
    Ok(())
}

impl<S> tower_layer::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit { inner, buckets: self.buckets() }
    }
}

/// A service under request and token rate limits. Built by [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    buckets: Arc<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    requests: Option<Mutex<Bucket>>,
    tokens: Option<Mutex<Bucket>>,
    estimate: Option<TokenEstimate>,
}

/// A token bucket refilling at `capacity` per `period`. `level` may go negative when a call used more tokens
/// than estimated: later calls then wait for the debt to be repaid.
#[derive(Debug)]
struct Bucket {
    capacity: f64,
    per_sec: f64,
    period: Duration,
    level: f64,
    updated: Instant,
}

impl Bucket {
    fn full(capacity: f64, period: Duration) -> Self {
        let per_sec = capacity / period.as_secs_f64();
        Bucket { capacity, per_sec, period, level: capacity, updated: Instant::now() }
    }
    fn refill(&mut self, now: Instant) {
        self.level = (self.level + now.duration_since(self.updated).as_secs_f64() * self.per_sec).min(self.capacity);
        self.updated = now;
    }
    /// How long until `amount` is available (zero if it is now).
    fn wait_for(&self, amount: f64) -> Duration {
        let missing = amount - self.level;
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(missing / self.per_sec).unwrap_or(self.period)
    }
}

fn lock(m: &Mutex<Bucket>) -> std::sync::MutexGuard<'_, Bucket> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Buckets {
    /// Waits until one request and `tokens` tokens are available, then takes them.
    async fn acquire(&self, tokens: u64) -> Result<()> {
        if let Some(t) = &self.tokens {
            let capacity = lock(t).capacity;
            if tokens as f64 > capacity {
                return Err(Error::InvalidInput(format!(
                    "this request needs about {tokens} tokens but the rate limit allows {capacity} per period; \
                     shorten it, lower max_tokens, or raise the token limit"
                )));
            }
        }
        loop {
            let wait = self.try_take(tokens);
            if wait.is_zero() {
                return Ok(());
            }
            tracing::debug!(wait_ms = wait.as_millis() as u64, "rate limit: waiting");
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes one request and `tokens` tokens if both are available now (returning zero), else returns how long
    /// to wait before trying again.
    fn try_take(&self, tokens: u64) -> Duration {
        let now = Instant::now();
        let mut req = self.requests.as_ref().map(lock);
        let mut tok = self.tokens.as_ref().map(lock);
        let mut wait = Duration::ZERO;
        if let Some(r) = req.as_mut() {
            r.refill(now);
            wait = wait.max(r.wait_for(1.0));
        }
        if let Some(t) = tok.as_mut() {
            t.refill(now);
            wait = wait.max(t.wait_for(tokens as f64));
        }
        if wait.is_zero() {
            if let Some(r) = req.as_mut() {
                r.level -= 1.0;
            }
            if let Some(t) = tok.as_mut() {
                t.level -= tokens as f64;
            }
        }
        wait
    }

    /// Corrects the token bucket once the real count is known.
    fn settle(&self, estimated: u64, actual: u64) {
        if let Some(t) = &self.tokens {
            lock(t).level += estimated as f64 - actual as f64;
        }
    }

    fn estimate(&self, bytes: usize) -> u64 {
        self.estimate.map_or(0, |e| e.of(bytes))
    }
}

fn request_bytes(request: &ChatRequest) -> usize {
    request
        .messages
        .iter()
        .map(|m| {
            m.content
                .iter()
                .map(|p| match p {
                    ContentPart::Text { text } => text.len(),
                    _ => 0,
                })
                .sum::<usize>()
                + m.tool_calls.iter().map(|c| c.arguments.len() + c.name.len()).sum::<usize>()
        })
        .sum()
}

impl<S> RateLimit<S> {
    /// The wrapped service.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn chat_estimate(&self, request: &ChatRequest) -> u64 {
        if self.buckets.tokens.is_none() {
            return 0;
        }
        self.buckets.estimate(request_bytes(request)) + request.max_tokens.map_or(0, u64::from)
    }
}

#[async_trait]
impl<S: Llm> Llm for RateLimit<S> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn default_model(&self) -> Option<String> {
        self.inner.default_model()
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let estimated = self.chat_estimate(&request);
        self.buckets.acquire(estimated).await?;
        let response = self.inner.chat(request).await?;
        if let Some(u) = response.usage {
            self.buckets.settle(estimated, u.input_tokens + u.output_tokens);
        }
        Ok(response)
    }
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let estimated = self.chat_estimate(&request);
        self.buckets.acquire(estimated).await?;
        let stream = self.inner.chat_stream(request).await?;
        let buckets = self.buckets.clone();
        Ok(Box::pin(stream.inspect(move |item| {
            if let Ok(chunk) = item {
                if let Some(u) = chunk.usage {
                    buckets.settle(estimated, u.input_tokens + u.output_tokens);
                }
            }
        })))
    }
    fn grammar_completion(&self) -> Option<&dyn GrammarCompletion> {
        self.inner.grammar_completion()
    }
}

#[async_trait]
impl<S: Embedder> Embedder for RateLimit<S> {
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let estimated = self.buckets.estimate(texts.iter().map(String::len).sum());
        self.buckets.acquire(estimated).await?;
        self.inner.embed_documents(texts).await
    }
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        self.buckets.acquire(self.buckets.estimate(text.len())).await?;
        self.inner.embed_query(text).await
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn model_name(&self) -> String {
        self.inner.model_name()
    }
}

#[async_trait]
impl<S: Retriever> Retriever for RateLimit<S> {
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>> {
        self.buckets.acquire(self.buckets.estimate(query.len())).await?;
        self.inner.retrieve(query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_per_minute_spaces_calls_after_the_burst() {
        let layer = RateLimitLayer::new().requests_per_minute(NonZeroU32::new(2).unwrap());
        let b = layer.buckets();
        let start = Instant::now();
        for _ in 0..4 {
            b.acquire(0).await.unwrap();
        }
        // Two in the burst, then one every 30 s.
        assert_eq!(start.elapsed().as_secs(), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn token_debt_delays_the_next_call_and_oversized_requests_fail() {
        let est = TokenEstimate::BytesPerToken(NonZeroU32::new(4).unwrap());
        let layer = RateLimitLayer::new().tokens_per_minute(NonZeroU32::new(600).unwrap(), est);
        let b = layer.buckets();
        assert!(b.acquire(601).await.is_err());
        let start = Instant::now();
        b.acquire(100).await.unwrap();
        b.settle(100, 700); // used 700, not 100: the bucket goes from 500 to 100 in debt
        b.acquire(100).await.unwrap(); // needs 200 more tokens, refilled at 10 per second
        assert_eq!(start.elapsed().as_secs(), 20);
    }
}
