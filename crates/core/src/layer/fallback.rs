//! Falling back to another model: [`FallbackLayer`] and the [`WithFallback`] wrapper.

use async_trait::async_trait;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::llm::{Capabilities, ChatStream, Llm};
use crate::message::{ChatRequest, ChatResponse};

/// Which failures of the primary model send a request to the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackOn {
    /// Only errors that retrying could fix ([`Error::is_retryable`]: rate limits, server errors, timeouts,
    /// transport failures), also when a [`super::RetryLayer`] below gave up on them ([`Error::Exhausted`]). A bad
    /// request fails as it would on the fallback too.
    Retryable,
    /// Every error, including unsupported requests (a fallback with more capabilities can take those).
    AnyError,
}

/// Sends a request to a second model when the first fails. A stream falls back only while it has produced
/// nothing; once a chunk has reached the caller, errors are passed on.
///
/// The fallback answers with its own default model: a request's `model` names the primary's model, so it is
/// cleared before the request goes to the fallback. The combined capabilities are those of the primary (what a
/// caller plans for); a request the fallback cannot serve fails there with [`Error::Unsupported`].
#[derive(Debug, Clone)]
pub struct FallbackLayer<F> {
    fallback: F,
    on: FallbackOn,
}

impl<F> FallbackLayer<F> {
    /// Falls back to `fallback` on the errors `on` selects.
    pub fn new(fallback: F, on: FallbackOn) -> Self {
        FallbackLayer { fallback, on }
    }
}

impl<P, F: Clone> tower_layer::Layer<P> for FallbackLayer<F> {
    type Service = WithFallback<P, F>;
    fn layer(&self, primary: P) -> WithFallback<P, F> {
        WithFallback { primary, fallback: self.fallback.clone(), on: self.on }
    }
}

/// A model with a fallback model. Built by [`FallbackLayer`].
#[derive(Debug, Clone)]
pub struct WithFallback<P, F> {
    primary: P,
    fallback: F,
    on: FallbackOn,
}

impl<P, F> WithFallback<P, F> {
    fn falls_back(&self, e: &Error) -> bool {
        match self.on {
            // A retry layer below that gave up on retryable errors hands over too: the usual stack.
            FallbackOn::Retryable => match e {
                Error::Exhausted { last, .. } => last.is_retryable(),
                e => e.is_retryable(),
            },
            FallbackOn::AnyError => !matches!(e, Error::Cancelled),
        }
    }
}

fn for_fallback(mut request: ChatRequest) -> ChatRequest {
    request.model = None;
    request
}

#[async_trait]
impl<P: Llm, F: Llm> Llm for WithFallback<P, F> {
    fn capabilities(&self) -> Capabilities {
        let mut caps = self.primary.capabilities();
        caps.backend = format!("{} (fallback: {})", caps.backend, self.fallback.capabilities().backend);
        caps
    }
    fn default_model(&self) -> Option<String> {
        self.primary.default_model()
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        match self.primary.chat(request.clone()).await {
            Err(e) if self.falls_back(&e) => {
                tracing::warn!(error = %e, "primary model failed; falling back");
                self.fallback.chat(for_fallback(request)).await
            }
            other => other,
        }
    }
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let first = match self.primary.chat_stream(request.clone()).await {
            Ok(mut s) => match s.next().await {
                Some(Err(e)) => Err(e),
                head => return Ok(Box::pin(futures::stream::iter(head).chain(s))),
            },
            Err(e) => Err(e),
        };
        match first {
            Err(e) if self.falls_back(&e) => {
                tracing::warn!(error = %e, "primary model failed before streaming; falling back");
                self.fallback.chat_stream(for_fallback(request)).await
            }
            other => other,
        }
    }
}
