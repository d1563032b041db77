//! The streaming half of the chat client: turns an SSE response body into [`ChatChunk`]s.
//!
//! [`SseChatStream`] owns the response body. Dropping it drops the body, which closes the connection, so the
//! server stops generating. It writes no spans: wrap the client in `catena_core::layer::TelemetryLayer`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use catena_core::{ChatChunk, Error, Result};
use futures::Stream;

use super::sse::{SseEvent, SseParser};
use super::wire::{decode_stream_event, StreamEvent};
use super::Inner;

type Body = Pin<Box<dyn Stream<Item = std::result::Result<Bytes, catena_http::Error>> + Send>>;

/// A chat answer streamed as Server-Sent Events.
pub(crate) struct SseChatStream {
    body: Body,
    parser: SseParser,
    /// Scratch space for the events one network chunk completes.
    events: Vec<SseEvent>,
    queue: VecDeque<Result<ChatChunk>>,
    /// No more items will be read from the body (`[DONE]`, an error, or its end).
    finished: bool,
    /// A chunk carried a finish reason: a body that ends without `[DONE]` after that is still complete.
    saw_finish_reason: bool,
    inner: std::sync::Arc<Inner>,
}

impl SseChatStream {
    pub(crate) fn new(
        body: impl Stream<Item = std::result::Result<Bytes, catena_http::Error>> + Send + 'static,
        inner: std::sync::Arc<Inner>,
    ) -> Self {
        SseChatStream {
            body: Box::pin(body),
            parser: SseParser::default(),
            events: Vec::new(),
            queue: VecDeque::new(),
            finished: false,
            saw_finish_reason: false,
            inner,
        }
    }

    fn finish_with(&mut self, error: Option<Error>) {
        self.finished = true;
        // Release the connection now rather than when the consumer drops the stream.
        self.body = Box::pin(futures::stream::empty());
        if let Some(e) = error {
            self.queue.push_back(Err(self.inner.redact_error(e)));
        }
    }

    fn handle(&mut self, event: &SseEvent) {
        match decode_stream_event(&self.inner.provider, event.event.as_deref(), &event.data) {
            Ok(StreamEvent::Done) if !self.saw_finish_reason && self.inner.quirks.stream_requires_finish_reason => {
                let message = "the server ended the stream (`data: [DONE]`) without a finish_reason, so the answer \
                               is incomplete (interrupted? llama-cpp-python's server ends a running stream this way \
                               when another request arrives unless it runs with `--interrupt_requests false`)";
                self.finish_with(Some(Error::Decode { provider: self.inner.provider.clone(), message: message.into() }))
            }
            Ok(StreamEvent::Done) => self.finish_with(None),
            Ok(StreamEvent::Chunk(chunk)) => {
                self.saw_finish_reason |= chunk.finish_reason.is_some();
                self.queue.push_back(Ok(*chunk));
            }
            Err(e) => self.finish_with(Some(e)),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let mut events = std::mem::take(&mut self.events);
        let parsed = self.parser.push(bytes, &mut events);
        self.handle_all(&mut events);
        self.events = events;
        if let Err(bad) = parsed {
            if !self.finished {
                let message = format!("the event stream is not UTF-8 near `{}`", bad.line_start);
                self.finish_with(Some(Error::Decode { provider: self.inner.provider.clone(), message }));
            }
        }
    }

    fn handle_all(&mut self, events: &mut Vec<SseEvent>) {
        for event in events.drain(..) {
            if self.finished {
                break;
            }
            self.handle(&event);
        }
        events.clear();
    }

    fn end_of_body(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        let parsed = self.parser.finish(&mut events);
        self.handle_all(&mut events);
        if self.finished {
            return;
        }
        let error = match parsed {
            Err(bad) => Some(Error::Decode {
                provider: self.inner.provider.clone(),
                message: format!("the event stream is not UTF-8 near `{}`", bad.line_start),
            }),
            Ok(()) if self.saw_finish_reason => None,
            Ok(()) => Some(Error::Transport {
                provider: self.inner.provider.clone(),
                message: "the server closed the event stream before `data: [DONE]` or a finish_reason; the answer \
                          is incomplete"
                    .into(),
                source: None,
            }),
        };
        self.finish_with(error);
    }
}

impl Stream for SseChatStream {
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
                    let error = this.inner.transport_error(e, &this.inner.chat_url);
                    this.finish_with(Some(error));
                }
                Poll::Ready(None) => this.end_of_body(),
            }
        }
    }
}
