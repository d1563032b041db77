//! The streaming half of the Ollama client: newline-delimited JSON objects of `/api/chat` to [`ChatChunk`]s.
//!
//! [`LineDecoder`] turns one line into a chunk (text, whole tool calls numbered across the answer, and on the
//! final `done: true` line the usage and finish reason); [`OllamaStream`] feeds it the response body through
//! the [`LineSplitter`]. Dropping the stream drops the body, which closes the connection (and stops
//! generation on the server).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use catena_core::{ChatChunk, Error, Result, ToolCallDelta};
use futures::Stream;
use serde_json::Value;

use super::ndjson::LineSplitter;
use super::wire::{error_summary, finish_reason, tool_calls, ChatObject};
use super::Inner;

/// What one line means for the stream.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A chunk of the answer.
    Chunk(Box<ChatChunk>),
    /// The final `done: true` object: the answer is complete.
    Done(Box<ChatChunk>),
}

/// The line-by-line state of one streamed answer.
#[derive(Debug)]
pub(crate) struct LineDecoder {
    provider: String,
    tool_calls: usize,
}

impl LineDecoder {
    pub(crate) fn new(provider: String) -> Self {
        LineDecoder { provider, tool_calls: 0 }
    }

    /// Decodes one line.
    ///
    /// # Errors
    /// [`Error::Http`] (status 500) for an `{"error": "..."}` line; [`Error::Decode`] for a line that is not
    /// UTF-8 JSON or not an answer object, and for tool calls whose arguments are not objects.
    pub(crate) fn decode(&mut self, line: &[u8]) -> Result<Decoded> {
        let bad = |what: &str, e: &dyn std::fmt::Display| super::wire::decode_error(&self.provider, what, e, line);
        let raw: Value = serde_json::from_slice(line).map_err(|e| bad("stream line is not JSON", &e))?;
        if let Some(summary) = raw.get("error").filter(|e| !e.is_null()).and_then(|_| error_summary(line)) {
            return Err(super::wire::in_body_error(&self.provider, &summary, line));
        }
        let object: ChatObject =
            serde_json::from_value(raw.clone()).map_err(|e| bad("stream line is not an Ollama chat object", &e))?;
        let mut chunk = ChatChunk { model: object.model.clone().filter(|m| !m.is_empty()), ..ChatChunk::default() };
        let usage = object.usage();
        if let Some(message) = object.message {
            chunk.text = message.content.filter(|t| !t.is_empty());
            let calls = tool_calls(message.tool_calls.unwrap_or_default(), self.tool_calls)
                .map_err(|e| bad("malformed tool call", &e))?;
            for call in calls {
                chunk.tool_calls.push(ToolCallDelta {
                    index: self.tool_calls,
                    id: Some(call.id),
                    name: Some(call.name),
                    arguments: call.arguments,
                });
                self.tool_calls += 1;
            }
        }
        chunk.raw = Some(raw);
        if object.done == Some(true) {
            chunk.usage = usage;
            chunk.finish_reason = finish_reason(object.done_reason.as_deref(), self.tool_calls > 0);
            return Ok(Decoded::Done(Box::new(chunk)));
        }
        Ok(Decoded::Chunk(Box::new(chunk)))
    }
}

type Body = Pin<Box<dyn Stream<Item = std::result::Result<Bytes, catena_http::Error>> + Send>>;

/// An answer streamed as newline-delimited JSON.
pub(crate) struct OllamaStream {
    body: Body,
    splitter: LineSplitter,
    lines: Vec<Vec<u8>>,
    queue: VecDeque<Result<ChatChunk>>,
    finished: bool,
    decoder: LineDecoder,
    inner: Arc<Inner>,
}

impl OllamaStream {
    pub(crate) fn new(
        body: impl Stream<Item = std::result::Result<Bytes, catena_http::Error>> + Send + 'static,
        inner: Arc<Inner>,
    ) -> Self {
        OllamaStream {
            body: Box::pin(body),
            splitter: LineSplitter::default(),
            lines: Vec::new(),
            queue: VecDeque::new(),
            finished: false,
            decoder: LineDecoder::new(inner.provider.clone()),
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

    fn handle_lines(&mut self) {
        let mut lines = std::mem::take(&mut self.lines);
        for line in lines.drain(..) {
            if self.finished {
                break;
            }
            match self.decoder.decode(&line) {
                Ok(Decoded::Chunk(chunk)) => self.queue.push_back(Ok(*chunk)),
                Ok(Decoded::Done(chunk)) => {
                    self.queue.push_back(Ok(*chunk));
                    self.finish_with(None);
                }
                Err(e) => self.finish_with(Some(e)),
            }
        }
        self.lines = lines;
    }

    fn feed(&mut self, bytes: &[u8]) {
        let split = self.splitter.push(bytes, &mut self.lines);
        self.handle_lines();
        if let Err(long) = split {
            if !self.finished {
                let error = Error::Decode {
                    provider: self.inner.provider.clone(),
                    message: format!(
                        "a stream line is longer than {} MiB without a newline (it starts `{}`); the server does \
                         not send newline-delimited JSON",
                        long.limit / (1024 * 1024),
                        super::wire::preview(long.start.as_bytes(), 80)
                    ),
                };
                self.finish_with(Some(error));
            }
        }
    }

    fn end_of_body(&mut self) {
        self.splitter.finish(&mut self.lines);
        self.handle_lines();
        if self.finished {
            return;
        }
        self.finish_with(Some(Error::Transport {
            provider: self.inner.provider.clone(),
            message: "the server closed the stream before its final `\"done\": true` line; the answer is incomplete"
                .into(),
            source: None,
        }));
    }
}

impl Stream for OllamaStream {
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

#[cfg(test)]
mod tests {
    use super::*;
    use catena_core::FinishReason;

    #[test]
    fn lines_decode_to_chunks_and_the_done_line_ends_the_answer() {
        let mut d = LineDecoder::new("ollama".into());
        let Decoded::Chunk(c) = d
            .decode(br#"{"model":"m","message":{"role":"assistant","content":"Hi","images":null},"done":false}"#)
            .unwrap()
        else {
            panic!("a chunk")
        };
        assert_eq!(c.text.as_deref(), Some("Hi"));
        let line = br#"{"model":"m","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":{"a":1}}}]},"done":false}"#;
        let Decoded::Chunk(c) = d.decode(line).unwrap() else { panic!("a chunk") };
        assert_eq!(c.tool_calls[0].index, 0);
        assert_eq!(c.tool_calls[0].arguments, "{\"a\":1}");
        let Decoded::Done(c) = d.decode(br#"{"done":true,"done_reason":"stop","eval_count":2}"#).unwrap() else {
            panic!("done")
        };
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(c.usage.unwrap().output_tokens, 2);
        let err = d.decode(br#"{"error":"an error was encountered while running the model"}"#).unwrap_err();
        assert!(matches!(err, Error::Http { status: 500, .. }), "{err}");
        assert!(matches!(d.decode(b"{\"done\":"), Err(Error::Decode { .. })));
        assert!(matches!(d.decode(b"\xff\xfe"), Err(Error::Decode { .. })));
    }
}
