//! The one owner of catena's span schema: [`TelemetryLayer`] and the [`Telemetry`] wrapper.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use tracing::field::Empty;
use tracing::Instrument;

use crate::completion::GrammarCompletion;
use crate::document::ScoredDocument;
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::llm::{Capabilities, ChatStream, Llm};
use crate::message::{ChatChunk, ChatRequest, ChatResponse, ChatResponseBuilder, FinishReason, Usage};
use crate::retriever::Retriever;

/// Records one span per call in the OpenTelemetry GenAI schema.
///
/// Every model call, embedding call and retrieval through this layer runs in one span that follows the
/// OpenTelemetry GenAI semantic conventions:
///
/// | field | value |
/// |---|---|
/// | span name | `gen_ai`; `otel.name` carries the conventional `{operation} {model}` (`chat gpt-4o`) |
/// | `gen_ai.operation.name` | `chat`, `embeddings` or `retrieval` |
/// | `gen_ai.provider.name` | [`Capabilities::provider`] (`openai`, `llama.cpp`, ...) |
/// | `gen_ai.request.model`, `gen_ai.request.temperature`, `.top_p`, `.max_tokens`, `.seed` | from the request |
/// | `gen_ai.response.model` | the model that answered |
/// | `gen_ai.response.finish_reasons` | normalised: `stop`, `length`, `tool_calls`, `content_filter`, or the provider's own |
/// | `gen_ai.usage.input_tokens`, `.output_tokens`, `.cache_read.input_tokens` | from the answer's [`Usage`](crate::Usage); for embeddings, what the provider reports through [`record_embedding_usage`] |
/// | `catena.time_to_first_chunk_ms` | streams: time from the call to the first chunk |
/// | `catena.latency_ms` | the whole call (for a stream: until it ends or is dropped) |
/// | `catena.cache.hit` | set by a [`super::CacheLayer`] below this one |
/// | `catena.stream.outcome` | streams: `completed`, `failed` or `dropped` |
/// | `error.type` | the error kind when the call failed |
/// | `gen_ai.input.messages`, `gen_ai.output.messages` | JSON, only with [`TelemetryLayer::record_content`] |
/// | `catena.retrieval.query` | retrievals: the query, only with [`TelemetryLayer::record_content`] |
/// | `catena.retrieval.documents`, `.top_score`, `.results` | retrievals: how many documents, the best score, and JSON `[{id, score, source}]` in rank order (each with its `content` only with [`TelemetryLayer::record_content`]) |
///
/// Providers write no spans of their own: wrap them in this layer (outermost, so that one span covers retries,
/// fallbacks and cache hits) and every backend reports the same schema.
#[derive(Debug, Clone, Copy, Default)]
pub struct TelemetryLayer {
    record_content: bool,
}

impl TelemetryLayer {
    /// Records metadata only: no prompt or answer text.
    pub fn new() -> Self {
        TelemetryLayer { record_content: false }
    }
    /// Also records prompts and answers (`gen_ai.input.messages`, `gen_ai.output.messages`, the retrieval query).
    /// They may hold personal data: turn this on deliberately.
    pub fn record_content(mut self, on: bool) -> Self {
        self.record_content = on;
        self
    }
}

impl<S> tower_layer::Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;
    fn layer(&self, inner: S) -> Telemetry<S> {
        Telemetry { inner, record_content: self.record_content }
    }
}

/// A service whose calls are traced. Built by [`TelemetryLayer`].
#[derive(Debug, Clone)]
pub struct Telemetry<S> {
    inner: S,
    record_content: bool,
}

impl<S> Telemetry<S> {
    /// The wrapped service.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

/// The normalised `gen_ai.response.finish_reasons` value.
pub fn finish_reason_name(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other(s) => s,
    }
}

/// The `error.type` value of an error: the status code for HTTP errors (as the conventions ask), else the kind.
pub fn error_type(e: &Error) -> std::borrow::Cow<'static, str> {
    let kind = match e {
        Error::Http { status, .. } => return status.to_string().into(),
        Error::Transport { .. } => "transport",
        Error::Decode { .. } => "decode",
        Error::Config { .. } => "config",
        Error::Unsupported { .. } => "unsupported",
        Error::InvalidInput(_) => "invalid_input",
        Error::Template { .. } => "template",
        Error::Io { .. } => "io",
        Error::Format { .. } => "format",
        Error::Json(_) => "json",
        Error::Store { .. } => "store",
        Error::Timeout(_) | Error::Deadline { .. } => "timeout",
        Error::Cancelled => "cancelled",
        Error::Exhausted { .. } => "exhausted",
        Error::InvalidOutput { .. } => "invalid_output",
        Error::Chain(_) => "chain",
    };
    kind.into()
}

/// Records an embedding call's input token count on the current span: providers that learn it call this, and the
/// [`TelemetryLayer`] span around the call (which declares the field) keeps it.
pub fn record_embedding_usage(input_tokens: u64) {
    tracing::Span::current().record("gen_ai.usage.input_tokens", input_tokens);
}

/// The span of one chat call. When no subscriber wants it, nothing else is computed (not even the backend's
/// capabilities or the model name): the caller checks [`tracing::Span::is_disabled`] and skips the bookkeeping.
fn chat_span(inner: &impl Llm, request: &ChatRequest, record_content: bool) -> tracing::Span {
    // Field values are evaluated only when the span is enabled.
    let model = || request.model.clone().or_else(|| inner.default_model()).unwrap_or_default();
    let span = tracing::info_span!(
        "gen_ai",
        otel.name = Empty,
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = %inner.capabilities().provider,
        gen_ai.request.model = %model(),
        gen_ai.request.temperature = Empty,
        gen_ai.request.top_p = Empty,
        gen_ai.request.max_tokens = Empty,
        gen_ai.request.seed = Empty,
        gen_ai.response.model = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.usage.cache_read.input_tokens = Empty,
        gen_ai.input.messages = Empty,
        gen_ai.output.messages = Empty,
        catena.time_to_first_chunk_ms = Empty,
        catena.latency_ms = Empty,
        catena.cache.hit = Empty,
        catena.stream.outcome = Empty,
        error.type = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    span.record("otel.name", tracing::field::display(format_args!("chat {}", model())));
    if let Some(t) = request.temperature {
        span.record("gen_ai.request.temperature", f64::from(t));
    }
    if let Some(p) = request.top_p {
        span.record("gen_ai.request.top_p", f64::from(p));
    }
    if let Some(n) = request.max_tokens {
        span.record("gen_ai.request.max_tokens", u64::from(n));
    }
    if let Some(s) = request.seed {
        span.record("gen_ai.request.seed", s);
    }
    if record_content {
        if let Ok(json) = serde_json::to_string(&request.messages) {
            span.record("gen_ai.input.messages", json);
        }
    }
    span
}

fn record_usage(span: &tracing::Span, usage: &Usage) {
    span.record("gen_ai.usage.input_tokens", usage.input_tokens);
    span.record("gen_ai.usage.output_tokens", usage.output_tokens);
    if let Some(cached) = usage.cached_input_tokens {
        span.record("gen_ai.usage.cache_read.input_tokens", cached);
    }
}

fn record_response(span: &tracing::Span, response: &ChatResponse, record_content: bool) {
    if !response.model.is_empty() {
        span.record("gen_ai.response.model", response.model.as_str());
    }
    if let Some(r) = &response.finish_reason {
        span.record("gen_ai.response.finish_reasons", finish_reason_name(r));
    }
    if let Some(u) = &response.usage {
        record_usage(span, u);
    }
    if record_content {
        if let Ok(json) = serde_json::to_string(&[&response.message]) {
            span.record("gen_ai.output.messages", json);
        }
    }
}

fn record_error(span: &tracing::Span, e: &Error) {
    span.record("error.type", error_type(e).as_ref());
    tracing::warn!(parent: span, error = %e.with_causes(), "call failed");
}

fn record_latency(span: &tracing::Span, start: Instant) {
    span.record("catena.latency_ms", start.elapsed().as_secs_f64() * 1e3);
}

#[async_trait]
impl<S: Llm> Llm for Telemetry<S> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn default_model(&self) -> Option<String> {
        self.inner.default_model()
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let span = chat_span(&self.inner, &request, self.record_content);
        if span.is_disabled() {
            // No subscriber wants the span: no clock, no records; a failure is still a warning.
            let out = self.inner.chat(request).await;
            if let Err(e) = &out {
                tracing::warn!(error = %e.with_causes(), "call failed");
            }
            return out;
        }
        let start = Instant::now();
        let out = self.inner.chat(request).instrument(span.clone()).await;
        match &out {
            Ok(r) => record_response(&span, r, self.record_content),
            Err(e) => record_error(&span, e),
        }
        record_latency(&span, start);
        out
    }
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let span = chat_span(&self.inner, &request, self.record_content);
        let start = Instant::now();
        match self.inner.chat_stream(request).instrument(span.clone()).await {
            Ok(inner) => Ok(Box::pin(TracedStream {
                inner,
                span,
                start,
                first: true,
                builder: Some(ChatResponseBuilder::default()),
                record_content: self.record_content,
            })),
            Err(e) => {
                record_error(&span, &e);
                record_latency(&span, start);
                Err(e)
            }
        }
    }
    fn grammar_completion(&self) -> Option<&dyn GrammarCompletion> {
        self.inner.grammar_completion()
    }
}

/// A chat stream polled inside its span; it records the outcome when it ends, fails or is dropped.
struct TracedStream {
    inner: ChatStream,
    span: tracing::Span,
    start: Instant,
    first: bool,
    /// `None` once the outcome is recorded.
    builder: Option<ChatResponseBuilder>,
    record_content: bool,
}

impl TracedStream {
    fn finish(&mut self, outcome: &'static str, error: Option<&Error>) {
        let Some(builder) = self.builder.take() else { return };
        self.span.record("catena.stream.outcome", outcome);
        match error {
            Some(e) => record_error(&self.span, e),
            None => record_response(&self.span, &builder.finish(), self.record_content),
        }
        record_latency(&self.span, self.start);
    }
}

impl Stream for TracedStream {
    type Item = Result<ChatChunk>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let polled = {
            let _entered = this.span.enter();
            this.inner.poll_next_unpin(cx)
        };
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                if this.first {
                    this.first = false;
                    this.span.record("catena.time_to_first_chunk_ms", this.start.elapsed().as_secs_f64() * 1e3);
                }
                if let Some(b) = this.builder.as_mut() {
                    b.push(chunk);
                }
            }
            Poll::Ready(Some(Err(e))) => this.finish("failed", Some(e)),
            Poll::Ready(None) => this.finish("completed", None),
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for TracedStream {
    fn drop(&mut self) {
        self.finish("dropped", None);
    }
}

/// Runs one embedding call inside its span.
async fn traced_embedding<T>(
    embedder: &impl Embedder,
    inputs: usize,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let model = embedder.model_name();
    let span = tracing::info_span!(
        "gen_ai",
        otel.name = %format_args!("embeddings {model}"),
        otel.kind = "client",
        gen_ai.operation.name = "embeddings",
        gen_ai.request.model = %model,
        gen_ai.embeddings.dimension.count = embedder.dimensions() as u64,
        catena.embeddings.inputs = inputs as u64,
        gen_ai.usage.input_tokens = Empty,
        catena.latency_ms = Empty,
        catena.cache.hit = Empty,
        error.type = Empty,
    );
    let start = Instant::now();
    let out = call.instrument(span.clone()).await;
    if let Err(e) = &out {
        record_error(&span, e);
    }
    record_latency(&span, start);
    out
}

#[async_trait]
impl<S: Embedder> Embedder for Telemetry<S> {
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        traced_embedding(&self.inner, texts.len(), self.inner.embed_documents(texts)).await
    }
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        traced_embedding(&self.inner, 1, self.inner.embed_query(text)).await
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn model_name(&self) -> String {
        self.inner.model_name()
    }
}

#[async_trait]
impl<S: Retriever> Retriever for Telemetry<S> {
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>> {
        let span = tracing::info_span!(
            "gen_ai",
            otel.name = "retrieval",
            gen_ai.operation.name = "retrieval",
            catena.retrieval.query = Empty,
            catena.retrieval.documents = Empty,
            catena.retrieval.top_score = Empty,
            catena.retrieval.results = Empty,
            catena.latency_ms = Empty,
            error.type = Empty,
        );
        if self.record_content {
            span.record("catena.retrieval.query", query);
        }
        let start = Instant::now();
        let out = self.inner.retrieve(query).instrument(span.clone()).await;
        match &out {
            Ok(docs) => {
                span.record("catena.retrieval.documents", docs.len() as u64);
                if let Some(d) = docs.first() {
                    span.record("catena.retrieval.top_score", f64::from(d.score));
                }
                if !span.is_disabled() {
                    // The ranked ids, scores and sources (the texts only with content recording).
                    let results: Vec<serde_json::Value> = docs
                        .iter()
                        .map(|d| {
                            let mut r = serde_json::json!({
                                "id": d.document.id,
                                "score": d.score,
                                "source": d.document.source(),
                            });
                            if self.record_content {
                                r["content"] = d.document.content.clone().into();
                            }
                            r
                        })
                        .collect();
                    if let Ok(json) = serde_json::to_string(&results) {
                        span.record("catena.retrieval.results", json);
                    }
                }
            }
            Err(e) => record_error(&span, e),
        }
        record_latency(&span, start);
        out
    }
}
