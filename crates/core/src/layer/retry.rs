//! Retrying failed calls: [`RetryPolicy`] (validated), [`RetryLayer`] and the [`Retry`] wrapper.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use crate::completion::GrammarCompletion;
use crate::document::ScoredDocument;
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::llm::{Capabilities, ChatStream, Llm};
use crate::message::{ChatRequest, ChatResponse};
use crate::retriever::Retriever;

/// How failed calls are retried.
///
/// Exponential backoff from `initial_backoff`, times `multiplier` per attempt, capped at `max_backoff`, with
/// jitter (a random delay between half and all of the backoff) when `jitter` is on. Only retryable errors
/// ([`Error::is_retryable`]: 408, 409, 429, 5xx, transport failures, timeouts) are retried.
///
/// A server's `Retry-After` replaces the computed delay when it is at most `max_retry_after`; when a server asks
/// for a longer wait, the call fails at once with the server's error instead of parking the caller (a `Retry-After`
/// of a day is a "come back tomorrow", not a delay to sleep through).
///
/// Every setting is checked when it is set, so a policy that exists is valid:
///
/// ```
/// use std::time::Duration;
/// use catena_core::layer::RetryPolicy;
/// let policy = RetryPolicy::new(4)?
///     .with_backoff(Duration::from_millis(100), Duration::from_secs(5), 2.0)?
///     .with_max_retry_after(Duration::from_secs(30));
/// assert_eq!(policy.max_attempts(), 4);
/// assert!(RetryPolicy::new(0).is_err());
/// assert!(RetryPolicy::new(3)?.with_backoff(Duration::ZERO, Duration::ZERO, -1.0).is_err());
/// # Ok::<(), catena_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    jitter: bool,
    max_retry_after: Duration,
}

/// What a [`RetryPolicy`] says to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// Give up and return the error.
    GiveUp,
}

impl RetryPolicy {
    /// `max_attempts` attempts in all (the first included). The other settings start at: backoff 200 ms doubling up
    /// to 10 s, jitter on, `Retry-After` honoured up to 60 s; change them with the `with_*` methods.
    ///
    /// # Errors
    /// [`Error::Config`] when `max_attempts` is 0.
    pub fn new(max_attempts: u32) -> Result<Self> {
        if max_attempts == 0 {
            return Err(Error::config(
                "RetryPolicy::max_attempts",
                "is 0",
                "use 1 for no retries, or more to retry failed calls",
            ));
        }
        Ok(RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: true,
            max_retry_after: Duration::from_secs(60),
        })
    }

    /// Sets the backoff: `initial` before the second attempt, times `multiplier` per attempt, never more than
    /// `max`.
    ///
    /// # Errors
    /// [`Error::Config`] when `multiplier` is not a finite number of at least 1, or `initial` is more than `max`.
    pub fn with_backoff(mut self, initial: Duration, max: Duration, multiplier: f64) -> Result<Self> {
        if !multiplier.is_finite() || multiplier < 1.0 {
            return Err(Error::config(
                "RetryPolicy multiplier",
                format!("is {multiplier}"),
                "use a finite growth factor of at least 1.0 (1.0 = constant delay, 2.0 = doubling)",
            ));
        }
        if initial > max {
            return Err(Error::config(
                "RetryPolicy backoff",
                format!("starts at {initial:?}, above its maximum {max:?}"),
                "give an initial backoff no larger than the maximum",
            ));
        }
        self.initial_backoff = initial;
        self.max_backoff = max;
        self.multiplier = multiplier;
        Ok(self)
    }

    /// Turns jitter on or off (off gives exact, reproducible delays).
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The longest server-requested `Retry-After` that is waited out; a longer request fails the call at once.
    pub fn with_max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }

    /// Total attempts, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay before the second attempt.
    pub fn initial_backoff(&self) -> Duration {
        self.initial_backoff
    }

    /// The upper bound of a computed delay.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// The growth factor per attempt.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// Whether delays are randomised.
    pub fn jitter(&self) -> bool {
        self.jitter
    }

    /// The longest `Retry-After` that is waited out.
    pub fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// What to do after attempt number `attempt` (counting from 1) failed with `error`.
    pub fn decide(&self, attempt: u32, error: &Error) -> RetryDecision {
        if !error.is_retryable() || attempt >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        if let Some(asked) = error.retry_after() {
            if asked > self.max_retry_after {
                tracing::warn!(
                    retry_after_s = asked.as_secs_f64(),
                    cap_s = self.max_retry_after.as_secs_f64(),
                    "the server asked to wait longer than the retry policy allows; giving up"
                );
                return RetryDecision::GiveUp;
            }
            return RetryDecision::RetryAfter(asked);
        }
        RetryDecision::RetryAfter(self.backoff(attempt))
    }

    /// The computed backoff after attempt `attempt` (counting from 1), before any `Retry-After`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.multiplier.powi(attempt.saturating_sub(1).min(i32::MAX as u32) as i32);
        let max = self.max_backoff.as_secs_f64();
        // `multiplier >= 1` and finite, so `base` is non-negative; it may be infinite, which `min` caps.
        let base = (self.initial_backoff.as_secs_f64() * exp).min(max);
        let secs = if self.jitter { base * (0.5 + 0.5 * fastrand::f64()) } else { base };
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_backoff)
    }

    /// Runs `op` until it succeeds, the error is not retryable, or the attempts run out. After more than one
    /// attempt the error is [`Error::Exhausted`] holding the last one.
    pub(crate) async fn run<T, F, Fut>(&self, what: &'static str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(out) => return Ok(out),
                Err(e) => match self.decide(attempt, &e) {
                    RetryDecision::RetryAfter(delay) => {
                        tracing::warn!(
                            catena.retry.attempt = attempt,
                            delay_ms = delay.as_millis() as u64,
                            error = %e,
                            "retrying {what}"
                        );
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                    }
                    RetryDecision::GiveUp if attempt > 1 => {
                        return Err(Error::Exhausted { attempts: attempt as usize, last: Box::new(e) })
                    }
                    RetryDecision::GiveUp => return Err(e),
                },
            }
        }
    }
}

/// Retries calls of the service it wraps under a [`RetryPolicy`]. Wraps an [`Llm`], an [`Embedder`] or a
/// [`Retriever`].
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// A layer retrying under `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryLayer { policy }
    }
}

impl<S> tower_layer::Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry { inner, policy: self.policy.clone() }
    }
}

/// A service whose failed calls are retried. Built by [`RetryLayer`].
///
/// A stream is retried only until its first chunk: once output has reached the caller, an error is passed on.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S> Retry<S> {
    /// The wrapped service.
    pub fn inner(&self) -> &S {
        &self.inner
    }
    /// The policy in effect.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

#[async_trait]
impl<S: Llm> Llm for Retry<S> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn default_model(&self) -> Option<String> {
        self.inner.default_model()
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        self.policy.run("chat", || self.inner.chat(request.clone())).await
    }
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        self.policy
            .run("chat stream", || async {
                let mut stream = self.inner.chat_stream(request.clone()).await?;
                match stream.next().await {
                    Some(Err(e)) => Err(e),
                    first => {
                        let head = futures::stream::iter(first);
                        Ok(Box::pin(head.chain(stream)) as ChatStream)
                    }
                }
            })
            .await
    }
    fn grammar_completion(&self) -> Option<&dyn GrammarCompletion> {
        self.inner.grammar_completion()
    }
}

#[async_trait]
impl<S: Embedder> Embedder for Retry<S> {
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.policy.run("embedding", || self.inner.embed_documents(texts)).await
    }
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        self.policy.run("query embedding", || self.inner.embed_query(text)).await
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn model_name(&self) -> String {
        self.inner.model_name()
    }
}

#[async_trait]
impl<S: Retriever> Retriever for Retry<S> {
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>> {
        self.policy.run("retrieval", || self.inner.retrieve(query)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, retry_after: Option<Duration>) -> Error {
        Error::Http { provider: "t".into(), status, body: String::new(), retry_after }
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(RetryPolicy::new(0).is_err());
        let p = RetryPolicy::new(3).unwrap();
        for m in [-1.0, 0.5, f64::NAN, f64::INFINITY] {
            let e = p.clone().with_backoff(Duration::ZERO, Duration::from_secs(1), m).unwrap_err();
            assert!(e.to_string().contains("multiplier"), "{e}");
        }
        assert!(p.with_backoff(Duration::from_secs(2), Duration::from_secs(1), 2.0).is_err());
    }

    #[test]
    fn delays_grow_and_stay_capped_even_after_many_attempts() {
        let p = RetryPolicy::new(u32::MAX)
            .unwrap()
            .with_backoff(Duration::from_millis(100), Duration::from_secs(1), 10.0)
            .unwrap()
            .with_jitter(false);
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_secs(1));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(1));
        let j = RetryPolicy::new(3).unwrap();
        for _ in 0..100 {
            let d = j.backoff(1);
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(200), "{d:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = RetryPolicy::new(5).unwrap().with_max_retry_after(Duration::from_secs(30));
        assert_eq!(
            p.decide(1, &http(429, Some(Duration::from_secs(3)))),
            RetryDecision::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(p.decide(1, &http(429, Some(Duration::from_secs(86_400)))), RetryDecision::GiveUp);
        assert_eq!(p.decide(1, &http(400, None)), RetryDecision::GiveUp);
        assert_eq!(p.decide(5, &http(503, None)), RetryDecision::GiveUp);
    }
}
