//! The streaming half of the Gemini client: `:streamGenerateContent?alt=sse` events to [`ChatChunk`]s.
//!
//! Every event is a whole `GenerateContentResponse` holding the next piece of the answer, so [`StreamDecoder`]
//! decodes each with the same code as `chat` and only keeps what spans events: the number of function calls so
//! far (their indexes and made-up ids), whether one came (a final `STOP` then means
//! [`FinishReason::ToolCalls`](catena_core::FinishReason::ToolCalls)), and whether a `finishReason` came (a stream
//! that ends without one is incomplete). [`GeminiStream`] feeds it the body through the shared SSE parser;
//! dropping the stream drops the body, which closes the connection.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use catena_core::{ChatChunk, Error, ReasoningDelta, Result, ToolCallDelta};
use futures::Stream;

use super::wire::{decode_fragment, finish_reason, tool_calls};
use super::Inner;
use crate::openai::sse::{SseEvent, SseParser};

/// The event-by-event state of one streamed answer.
#[derive(Debug)]
pub(crate) struct StreamDecoder {
    provider: String,
    /// The requested model, named by the first chunk (events that carry `modelVersion` override it).
    model: Option<String>,
    calls: usize,
    finished: bool,
}

impl StreamDecoder {
    pub(crate) fn new(provider: String, model: String) -> Self {
        StreamDecoder { provider, model: Some(model), calls: 0, finished: false }
    }

    /// Decodes one event's data.
    ///
    /// # Errors
    /// As [`decode_fragment`]: [`Error::Http`] for an error object in the stream, a blocked prompt, or
    /// [`Error::Decode`] for malformed events.
    pub(crate) fn decode(&mut self, data: &str) -> Result<ChatChunk> {
        let (fragment, raw) = decode_fragment(&self.provider, data.as_bytes())?;
        let calls = tool_calls(&fragment.calls, self.calls);
        let first_index = self.calls;
        self.calls += calls.len();
        let mut chunk = ChatChunk {
            text: (!fragment.text.is_empty()).then_some(fragment.text),
            tool_calls: calls
                .into_iter()
                .enumerate()
                .map(|(i, call)| ToolCallDelta {
                    index: first_index + i,
                    id: Some(call.id),
                    name: Some(call.name),
                    arguments: call.arguments,
                })
                .collect(),
            usage: fragment.usage,
            model: fragment.model.or_else(|| self.model.take()),
            raw: Some(raw),
            ..ChatChunk::default()
        };
        if !fragment.thoughts.is_empty() || fragment.text_signature.is_some() {
            chunk.reasoning.push(ReasoningDelta {
                index: 0,
                text: fragment.thoughts,
                signature: fragment.text_signature,
                redacted: None,
            });
        }
        if let Some(reason) = fragment.finish_reason {
            chunk.finish_reason = Some(finish_reason(&reason, self.calls > 0));
            self.finished = true;
        }
        self.model = None;
        Ok(chunk)
    }

    /// Whether a `finishReason` came: the answer is complete.
    pub(crate) fn is_complete(&self) -> bool {
        self.finished
    }
}

type Body = Pin<Box<dyn Stream<Item = std::result::Result<Bytes, catena_http::Error>> + Send>>;

/// An answer streamed as Server-Sent Events.
pub(crate) struct GeminiStream {
    body: Body,
    parser: SseParser,
    events: Vec<SseEvent>,
    queue: VecDeque<Result<ChatChunk>>,
    finished: bool,
    decoder: StreamDecoder,
    inner: Arc<Inner>,
    /// The stream's endpoint (without the key), named by transport errors.
    url: String,
}

impl GeminiStream {
    pub(crate) fn new(
        body: impl Stream<Item = std::result::Result<Bytes, catena_http::Error>> + Send + 'static,
        inner: Arc<Inner>,
        model: String,
        url: String,
    ) -> Self {
        GeminiStream {
            url,
            body: Box::pin(body),
            parser: SseParser::default(),
            events: Vec::new(),
            queue: VecDeque::new(),
            finished: false,
            decoder: StreamDecoder::new(inner.provider.clone(), model),
            inner,
        }
    }

    fn finish_with(&mut self, error: Option<Error>) {
        self.finished = true;
        self.body = Box::pin(futures::stream::empty());
        if let Some(e) = error {
            self.queue.push_back(Err(self.inner.redact_error(e)));
        }
    }

    fn handle_all(&mut self, events: &mut Vec<SseEvent>) {
        for event in events.drain(..) {
            if self.finished {
                break;
            }
            if event.data.trim().is_empty() || event.data.trim() == "[DONE]" {
                continue;
            }
            match self.decoder.decode(&event.data) {
                Ok(chunk) => self.queue.push_back(Ok(chunk)),
                Err(e) => self.finish_with(Some(e)),
            }
        }
        events.clear();
    }

    fn not_utf8(&self, line_start: &str) -> Error {
        Error::Decode {
            provider: self.inner.provider.clone(),
            message: format!("the event stream is not UTF-8 near `{line_start}`"),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let mut events = std::mem::take(&mut self.events);
        let parsed = self.parser.push(bytes, &mut events);
        self.handle_all(&mut events);
        self.events = events;
        if let Err(bad) = parsed {
            if !self.finished {
                let error = self.not_utf8(&bad.line_start);
                self.finish_with(Some(error));
            }
        }
    }

    fn end_of_body(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        let parsed = self.parser.finish(&mut events);
        self.handle_all(&mut events);
        if self.finished {
            return;
        }
        let error = match parsed {
            Err(bad) => Some(self.not_utf8(&bad.line_start)),
            Ok(()) if self.decoder.is_complete() => None,
            Ok(()) => Some(Error::Transport {
                provider: self.inner.provider.clone(),
                message: "the server closed the event stream before an event with a `finishReason`; the answer is \
                          incomplete"
                    .into(),
                source: None,
            }),
        };
        self.finish_with(error);
    }
}

impl Stream for GeminiStream {
    type Item = Result<ChatChunk>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.queue.pop_front() {
                return Poll::Ready(Some(item));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match this.body.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => this.feed(&bytes),
                Poll::Ready(Some(Err(e))) => {
                    let error = this.inner.transport_error(e, &this.url);
                    this.finish_with(Some(error));
                }
                Poll::Ready(None) => this.end_of_body(),
            }
        }
    }
}

/// The chunks of a whole answer that came as one JSON document instead of an event stream: a
/// `GenerateContentResponse`, or the JSON array of them that `:streamGenerateContent` without `alt=sse` writes.
/// Decoded event by event as a stream would be, so folding them gives the same answer.
pub(crate) fn chunks_of_document(inner: &Inner, body: &[u8], model: String) -> Result<Vec<Result<ChatChunk>>> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| super::wire::decode_error(&inner.provider, "response is not JSON", e, body))?;
    let documents = match value {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    };
    let mut decoder = StreamDecoder::new(inner.provider.clone(), model);
    let mut chunks = Vec::new();
    for document in documents {
        match decoder.decode(&document.to_string()) {
            Ok(chunk) => chunks.push(Ok(chunk)),
            Err(e) => {
                chunks.push(Err(inner.redact_error(e)));
                return Ok(chunks);
            }
        }
    }
    if !decoder.is_complete() {
        chunks.push(Err(Error::Decode {
            provider: inner.provider.clone(),
            message: "the JSON answer to a stream request has no `finishReason`; the answer is incomplete".into(),
        }));
    }
    Ok(chunks)
}
