//! The streaming half of the Anthropic client: Server-Sent Events of the Messages API to [`ChatChunk`]s.
//!
//! [`StreamDecoder`] is the event-by-event state machine (content blocks by index, tool inputs accumulated and
//! checked at their block's end, cumulative usage); [`AnthropicStream`] feeds it the response body through the
//! shared SSE parser. Dropping the stream drops the body, which closes the connection.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use catena_core::{ChatChunk, Error, ReasoningDelta, Result, ToolCallDelta};
use futures::Stream;
use serde::Deserialize;
use serde_json::Value;

use super::wire::{
    error_summary, finish_reason, status_of_error_type, structured_answer, JsonMinifier, StructuredOutput, WireUsage,
    STRUCTURED_OUTPUT_TOOL,
};
use super::Inner;
use crate::openai::sse::{SseEvent, SseParser};

/// What a content block (by its stream `index`) is.
#[derive(Debug)]
enum Block {
    /// Text: its deltas are the answer's text.
    Text,
    /// A tool call, the `call`-th `tool_use` block of the answer; `json` is its minified input so far.
    ToolUse { call: usize, json: String, minifier: JsonMinifier },
    /// The synthetic structured-output tool: its input is the answer's text.
    Structured { how: StructuredOutput, json: String, minifier: JsonMinifier },
    /// A thinking or redacted thinking block, the `reasoning`-th of the answer.
    Thinking { reasoning: usize },
    /// Server tools, text under a structured-output request: in `raw` only.
    Ignored,
    /// Its `content_block_stop` came.
    Stopped,
}

#[derive(Deserialize)]
struct MessageStart {
    message: StartMessage,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct BlockStart {
    index: u64,
    content_block: StartBlock,
}

#[derive(Deserialize)]
struct StartBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    text: Option<String>,
    /// A thinking block's text, when it starts with some.
    #[serde(default)]
    thinking: Option<String>,
    /// A thinking block's signature, when it starts with one.
    #[serde(default)]
    signature: Option<String>,
    /// A redacted thinking block's encrypted content.
    #[serde(default)]
    data: Option<String>,
}

#[derive(Deserialize)]
struct BlockDelta {
    index: u64,
    delta: Delta,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
}

#[derive(Deserialize)]
struct BlockStop {
    index: u64,
}

#[derive(Deserialize)]
struct MessageDelta {
    #[serde(default)]
    delta: Option<MessageDeltaBody>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// What one event means for the stream.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A chunk of the answer.
    Chunk(Box<ChatChunk>),
    /// An event that changes nothing (`ping`, unknown event types).
    Nothing,
    /// `message_stop`: the answer is complete (the chunk carries the event's raw JSON).
    Stop(Box<ChatChunk>),
}

/// The event-by-event state of one streamed message.
#[derive(Debug)]
pub(crate) struct StreamDecoder {
    provider: String,
    structured: Option<StructuredOutput>,
    blocks: HashMap<u64, Block>,
    tool_calls: usize,
    /// Reasoning blocks so far.
    reasoning: usize,
    usage: WireUsage,
    saw_usage: bool,
}

impl StreamDecoder {
    pub(crate) fn new(provider: String, structured: Option<StructuredOutput>) -> Self {
        StreamDecoder {
            provider,
            structured,
            blocks: HashMap::new(),
            tool_calls: 0,
            reasoning: 0,
            usage: WireUsage::default(),
            saw_usage: false,
        }
    }

    fn decode_error(&self, what: &str, e: impl std::fmt::Display, data: &str) -> Error {
        super::wire::decode_error(&self.provider, what, e, data.as_bytes())
    }

    fn parse<T: for<'de> Deserialize<'de>>(&self, raw: &Value, kind: &str, data: &str) -> Result<T> {
        T::deserialize(raw).map_err(|e| self.decode_error(&format!("`{kind}` event is malformed"), e, data))
    }

    fn block(&mut self, index: u64, kind: &str, data: &str) -> Result<&mut Block> {
        let provider = self.provider.clone();
        self.blocks.get_mut(&index).ok_or_else(|| {
            super::wire::decode_error(
                &provider,
                &format!("`{kind}` event for content block {index}, which was never started"),
                "no content_block_start",
                data.as_bytes(),
            )
        })
    }

    /// Decodes one event (`event` is the SSE event name, `data` its data).
    ///
    /// # Errors
    /// [`Error::Http`] for an `error` event (the status Anthropic uses for its error type), [`Error::Decode`] for
    /// malformed events, deltas of unknown blocks and tool inputs that are not JSON objects.
    pub(crate) fn decode(&mut self, event: Option<&str>, data: &str) -> Result<Decoded> {
        let raw: Value =
            serde_json::from_str(data).map_err(|e| self.decode_error("stream event is not JSON", e, data))?;
        let kind = raw.get("type").and_then(Value::as_str).or(event).unwrap_or_default().to_string();
        let mut chunk = ChatChunk::default();
        match kind.as_str() {
            "ping" => return Ok(Decoded::Nothing),
            "error" => {
                let (status, summary) = match error_summary(data.as_bytes()) {
                    Some((error_type, summary)) => (status_of_error_type(error_type.as_deref()), summary),
                    None => (500, super::wire::preview(data.as_bytes(), 300)),
                };
                return Err(Error::Http {
                    provider: self.provider.clone(),
                    status,
                    body: format!("error inside the event stream: {summary}"),
                    retry_after: None,
                });
            }
            "message_start" => {
                let start: MessageStart = self.parse(&raw, &kind, data)?;
                chunk.model = start.message.model.filter(|m| !m.is_empty());
                if let Some(usage) = start.message.usage {
                    self.usage.merge(&usage);
                    self.saw_usage = true;
                    chunk.usage = Some(self.usage.to_usage());
                }
            }
            "content_block_start" => {
                let start: BlockStart = self.parse(&raw, &kind, data)?;
                let block = match (start.content_block.kind.as_str(), self.structured) {
                    ("tool_use", Some(how)) if start.content_block.name.as_deref() == Some(STRUCTURED_OUTPUT_TOOL) => {
                        Block::Structured { how, json: String::new(), minifier: JsonMinifier::default() }
                    }
                    ("tool_use", _) => {
                        let call = self.tool_calls;
                        self.tool_calls += 1;
                        chunk.tool_calls.push(ToolCallDelta {
                            index: call,
                            id: start.content_block.id,
                            name: start.content_block.name,
                            arguments: String::new(),
                        });
                        Block::ToolUse { call, json: String::new(), minifier: JsonMinifier::default() }
                    }
                    ("text", None) => {
                        chunk.text = start.content_block.text.filter(|t| !t.is_empty());
                        Block::Text
                    }
                    ("thinking" | "redacted_thinking", _) => {
                        let reasoning = self.reasoning;
                        self.reasoning += 1;
                        let b = start.content_block;
                        chunk.reasoning.push(ReasoningDelta {
                            index: reasoning,
                            text: b.thinking.unwrap_or_default(),
                            signature: b.signature.filter(|s| !s.is_empty()),
                            redacted: b.data,
                        });
                        Block::Thinking { reasoning }
                    }
                    _ => Block::Ignored,
                };
                self.blocks.insert(start.index, block);
            }
            "content_block_delta" => {
                let delta: BlockDelta = self.parse(&raw, &kind, data)?;
                let provider = self.provider.clone();
                let mismatch = |block: &str| {
                    super::wire::decode_error(
                        &provider,
                        &format!("a `{}` delta for content block {}, a {block} block", delta.delta.kind, delta.index),
                        "mismatched delta",
                        data.as_bytes(),
                    )
                };
                let block = self.block(delta.index, &kind, data)?;
                match (delta.delta.kind.as_str(), block) {
                    ("text_delta", Block::Text) => chunk.text = delta.delta.text.filter(|t| !t.is_empty()),
                    ("text_delta", Block::Ignored) => {}
                    ("thinking_delta", Block::Thinking { reasoning }) => chunk.reasoning.push(ReasoningDelta {
                        index: *reasoning,
                        text: delta.delta.thinking.unwrap_or_default(),
                        ..ReasoningDelta::default()
                    }),
                    ("signature_delta", Block::Thinking { reasoning }) => chunk.reasoning.push(ReasoningDelta {
                        index: *reasoning,
                        signature: delta.delta.signature.filter(|s| !s.is_empty()),
                        ..ReasoningDelta::default()
                    }),
                    ("input_json_delta", Block::ToolUse { call, json, minifier }) => {
                        let before = json.len();
                        minifier.push(delta.delta.partial_json.as_deref().unwrap_or_default(), json);
                        if json.len() > before {
                            chunk.tool_calls.push(ToolCallDelta {
                                index: *call,
                                id: None,
                                name: None,
                                arguments: json[before..].to_string(),
                            });
                        }
                    }
                    ("input_json_delta", Block::Structured { how, json, minifier }) => {
                        let before = json.len();
                        minifier.push(delta.delta.partial_json.as_deref().unwrap_or_default(), json);
                        // A direct answer streams as it comes; a wrapped one is unwrapped at the block's end.
                        if *how == StructuredOutput::Direct && json.len() > before {
                            chunk.text = Some(json[before..].to_string());
                        }
                    }
                    ("text_delta", Block::ToolUse { .. } | Block::Structured { .. }) => {
                        return Err(mismatch("tool_use"))
                    }
                    ("input_json_delta", Block::Text) => return Err(mismatch("text")),
                    (_, Block::Stopped) => return Err(mismatch("finished")),
                    // thinking_delta, signature_delta, citations_delta, ...: in `raw` only.
                    _ => {}
                }
            }
            "content_block_stop" => {
                let stop: BlockStop = self.parse(&raw, &kind, data)?;
                let block = std::mem::replace(self.block(stop.index, &kind, data)?, Block::Stopped);
                match block {
                    Block::ToolUse { call, json, .. } => {
                        if json.is_empty() {
                            // A tool without arguments streams `"partial_json": ""`; `chat` gives `{}`.
                            chunk.tool_calls.push(ToolCallDelta {
                                index: call,
                                id: None,
                                name: None,
                                arguments: "{}".into(),
                            });
                        } else {
                            self.check_object(&json, stop.index, data)?;
                        }
                    }
                    Block::Structured { how, json, .. } => {
                        let empty = json.is_empty();
                        let json = if empty { "{}".to_string() } else { json };
                        self.check_object(&json, stop.index, data)?;
                        match how {
                            // Nothing streamed: the input is `{}`, as `chat` would give it.
                            StructuredOutput::Direct if empty => chunk.text = Some(json),
                            StructuredOutput::Direct => {}
                            StructuredOutput::Wrapped => {
                                let answer = structured_answer(&json, how)
                                    .map_err(|e| self.decode_error("structured output", e, data))?;
                                chunk.text = Some(answer);
                            }
                        }
                    }
                    Block::Stopped => {
                        return Err(self.decode_error(
                            &format!("content block {} was stopped twice", stop.index),
                            "duplicate content_block_stop",
                            data,
                        ))
                    }
                    Block::Text | Block::Thinking { .. } | Block::Ignored => {}
                }
            }
            "message_delta" => {
                let delta: MessageDelta = self.parse(&raw, &kind, data)?;
                if let Some(reason) = delta.delta.and_then(|d| d.stop_reason) {
                    chunk.finish_reason = Some(finish_reason(&reason, self.structured.is_some()));
                }
                if let Some(usage) = delta.usage {
                    self.usage.merge(&usage);
                    self.saw_usage = true;
                    chunk.usage = Some(self.usage.to_usage());
                }
            }
            "message_stop" => {
                chunk.raw = Some(raw);
                return Ok(Decoded::Stop(Box::new(chunk)));
            }
            // Event types added to the API later: ignored, as Anthropic's versioning policy asks of clients.
            _ => return Ok(Decoded::Nothing),
        }
        chunk.raw = Some(raw);
        Ok(Decoded::Chunk(Box::new(chunk)))
    }

    /// The whole input of a tool block must be a JSON object, as `chat` would have it.
    fn check_object(&self, json: &str, index: u64, data: &str) -> Result<()> {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(_)) => Ok(()),
            Ok(other) => Err(self.decode_error(
                &format!(
                    "the input of tool_use block {index} is {}, not an object",
                    catena_core::error::json_type_name(&other)
                ),
                "invalid tool input",
                data,
            )),
            Err(e) => Err(self.decode_error(
                &format!("the streamed input of tool_use block {index} is not valid JSON ({e})"),
                format!("input so far: {}", super::wire::preview(json.as_bytes(), 200)),
                data,
            )),
        }
    }
}

type Body = Pin<Box<dyn Stream<Item = std::result::Result<Bytes, catena_http::Error>> + Send>>;

/// A message streamed as Server-Sent Events.
pub(crate) struct AnthropicStream {
    body: Body,
    parser: SseParser,
    events: Vec<SseEvent>,
    queue: VecDeque<Result<ChatChunk>>,
    finished: bool,
    decoder: StreamDecoder,
    inner: Arc<Inner>,
}

impl AnthropicStream {
    pub(crate) fn new(
        body: impl Stream<Item = std::result::Result<Bytes, catena_http::Error>> + Send + 'static,
        inner: Arc<Inner>,
        structured: Option<StructuredOutput>,
    ) -> Self {
        AnthropicStream {
            body: Box::pin(body),
            parser: SseParser::default(),
            events: Vec::new(),
            queue: VecDeque::new(),
            finished: false,
            decoder: StreamDecoder::new(inner.provider.clone(), structured),
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
            match self.decoder.decode(event.event.as_deref(), &event.data) {
                Ok(Decoded::Chunk(chunk)) => self.queue.push_back(Ok(*chunk)),
                Ok(Decoded::Nothing) => {}
                Ok(Decoded::Stop(chunk)) => {
                    self.queue.push_back(Ok(*chunk));
                    self.finish_with(None);
                }
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
            Err(bad) => self.not_utf8(&bad.line_start),
            Ok(()) => Error::Transport {
                provider: self.inner.provider.clone(),
                message: "the server closed the event stream before `message_stop`; the answer is incomplete".into(),
                source: None,
            },
        };
        self.finish_with(Some(error));
    }
}

impl Stream for AnthropicStream {
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
                    let error = this.inner.transport_error(e);
                    this.finish_with(Some(error));
                }
                Poll::Ready(None) => this.end_of_body(),
            }
        }
    }
}
