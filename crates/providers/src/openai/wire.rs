//! The OpenAI chat-completions and embeddings wire format, and its translation to and from catena's data model.
//!
//! Request types borrow from the [`ChatRequest`] they encode; response types accept the variations seen in
//! OpenAI-compatible servers (`null` where OpenAI sends `[]`, tool-call arguments as a JSON object instead of a
//! string, missing `index`, content as an array of text parts).

use catena_core::{
    ChatChunk, ChatRequest, ChatResponse, ContentPart, Error, FinishReason, Message, ResponseFormat, Result, Role,
    ToolCall, ToolCallDelta, ToolChoice, Usage,
};
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ChatOptions, GrammarField, MaxTokensField, Quirks};

// ---------------------------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------------------------

/// `POST /chat/completions` body.
#[derive(Debug, Serialize)]
pub(crate) struct ChatCompletionRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<WireResponseFormat<'a>>,
    /// A GBNF grammar (llama.cpp servers).
    #[serde(skip_serializing_if = "Option::is_none")]
    grammar: Option<&'a str>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Debug, Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    /// `None` serialises as `null` (assistant messages that only carry tool calls).
    content: Option<WireContent<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    /// Plain text: a message's only text part, or all of its text parts joined.
    Text(Cow<'a, str>),
    /// Content parts, for messages with images.
    Parts(Vec<WirePart<'a>>),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WirePart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: WireImageUrl<'a> },
}

#[derive(Debug, Serialize)]
struct WireImageUrl<'a> {
    url: &'a str,
}

#[derive(Debug, Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Debug, Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    parameters: &'a Value,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum WireToolChoice<'a> {
    Mode(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        function: WireToolName<'a>,
    },
}

#[derive(Debug, Serialize)]
struct WireToolName<'a> {
    name: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireResponseFormat<'a> {
    JsonObject {
        /// llama-cpp-python's grammar-constrained JSON mode.
        #[serde(skip_serializing_if = "Option::is_none")]
        schema: Option<&'a Value>,
    },
    JsonSchema {
        json_schema: WireJsonSchema<'a>,
    },
}

#[derive(Debug, Serialize)]
struct WireJsonSchema<'a> {
    name: &'a str,
    schema: &'a Value,
    strict: bool,
}

/// Encodes `request` for `model`. `stream_usage` asks for the final usage chunk (`stream_options`).
///
/// # Errors
/// [`Error::InvalidInput`] for messages the wire format cannot express (a tool result without a call id).
pub(crate) fn encode_chat<'a>(
    request: &'a ChatRequest,
    model: &'a str,
    quirks: &Quirks,
    options: &'a ChatOptions,
    stream: Option<StreamUsage>,
) -> Result<ChatCompletionRequest<'a>> {
    let messages = request.messages.iter().map(|m| encode_message(m, quirks)).collect::<Result<Vec<_>>>()?;
    let (max_tokens, max_completion_tokens) = match quirks.max_tokens_field {
        MaxTokensField::MaxTokens => (request.max_tokens, None),
        MaxTokensField::MaxCompletionTokens => (None, request.max_tokens),
    };
    let tools = request
        .tools
        .iter()
        .map(|t| WireTool {
            kind: "function",
            function: WireFunction { name: &t.name, description: &t.description, parameters: &t.parameters },
        })
        .collect();
    let tool_choice = request.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Auto => WireToolChoice::Mode("auto"),
        ToolChoice::None => WireToolChoice::Mode("none"),
        ToolChoice::Required => WireToolChoice::Mode("required"),
        ToolChoice::Tool(name) => WireToolChoice::Named { kind: "function", function: WireToolName { name } },
    });
    let response_format = match (&options.json_object_schema, &request.response_format) {
        (Some(schema), _) => Some(WireResponseFormat::JsonObject { schema: Some(schema) }),
        (None, None | Some(ResponseFormat::Text)) => None,
        (None, Some(ResponseFormat::JsonObject)) => Some(WireResponseFormat::JsonObject { schema: None }),
        (None, Some(ResponseFormat::JsonSchema { name, schema, strict })) => {
            Some(WireResponseFormat::JsonSchema { json_schema: WireJsonSchema { name, schema, strict: *strict } })
        }
    };
    Ok(ChatCompletionRequest {
        model,
        messages,
        temperature: request.temperature,
        top_p: request.top_p,
        max_tokens,
        max_completion_tokens,
        stop: &request.stop,
        seed: request.seed,
        tools,
        tool_choice,
        response_format,
        grammar: match quirks.grammar_field {
            GrammarField::Grammar => options.grammar.as_ref().map(|g| g.as_str()),
            // The client refuses grammars for such servers before encoding.
            GrammarField::Unsupported => None,
        },
        stream: stream.is_some(),
        stream_options: match stream {
            Some(StreamUsage::Requested) => Some(StreamOptions { include_usage: true }),
            Some(StreamUsage::NotRequested) | None => None,
        },
    })
}

/// Whether a streaming request asks for the usage chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamUsage {
    /// Send `stream_options: {include_usage: true}`.
    Requested,
    /// Send no `stream_options` (servers that reject or ignore it).
    NotRequested,
}

fn encode_message<'a>(m: &'a Message, quirks: &Quirks) -> Result<WireMessage<'a>> {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let tool_call_id = match (m.role, &m.tool_call_id) {
        (Role::Tool, Some(id)) => Some(id.as_str()),
        (Role::Tool, None) => {
            return Err(Error::InvalidInput(
                "a tool message has no tool_call_id; build tool results with Message::tool_result(call.id, text)"
                    .into(),
            ))
        }
        (_, _) => None,
    };
    // Text-only content goes as one string, its parts joined as `Message::text` joins them. Every server takes a
    // string, while servers differ on arrays of text parts: llama-cpp-python rejects them (HTTP 500), vLLM and
    // llama.cpp join them with newlines, Ollama makes one message per part.
    let all_text = m.content.iter().all(|p| matches!(p, ContentPart::Text { .. }));
    let content = match m.content.as_slice() {
        [] => None,
        [ContentPart::Text { text }] => Some(WireContent::Text(Cow::Borrowed(text))),
        _ if all_text => Some(WireContent::Text(Cow::Owned(m.text()))),
        parts => Some(WireContent::Parts(
            parts
                .iter()
                .map(|p| match p {
                    ContentPart::Text { text } => WirePart::Text { text },
                    ContentPart::ImageUrl { url } => WirePart::ImageUrl { image_url: WireImageUrl { url } },
                })
                .collect(),
        )),
    };
    let has_text = |c: &WireContent<'_>| !matches!(c, WireContent::Text(t) if t.is_empty());
    let content = if m.tool_calls.is_empty() {
        Some(content.unwrap_or(WireContent::Text(Cow::Borrowed(""))))
    } else {
        match content.filter(has_text) {
            Some(c) => Some(c),
            None if quirks.empty_content_with_tool_calls => Some(WireContent::Text(Cow::Borrowed(""))),
            None => None,
        }
    };
    let tool_calls = m
        .tool_calls
        .iter()
        .map(|c| WireToolCall {
            id: &c.id,
            kind: "function",
            function: WireFunctionCall { name: &c.name, arguments: &c.arguments },
        })
        .collect();
    Ok(WireMessage { role, content, tool_calls, tool_call_id })
}

/// `POST /embeddings` body.
#[derive(Debug, Serialize)]
pub(crate) struct EmbeddingRequest<'a> {
    pub(crate) model: &'a str,
    pub(crate) input: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dimensions: Option<usize>,
}

// ---------------------------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ChatCompletion {
    #[serde(default)]
    model: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    index: Option<u32>,
    message: ResponseMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResponseMessage {
    #[serde(default)]
    content: Option<WireText>,
    #[serde(default, deserialize_with = "null_as_default")]
    tool_calls: Vec<ResponseToolCall>,
}

/// Message content in a response: a string (everyone) or an array of text parts (a few servers).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WireText {
    Text(String),
    Parts(Vec<WireTextPart>),
}

#[derive(Debug, Deserialize)]
struct WireTextPart {
    #[serde(default)]
    text: Option<String>,
}

impl WireText {
    fn into_string(self) -> String {
        match self {
            WireText::Text(s) => s,
            WireText::Parts(parts) => parts.into_iter().filter_map(|p| p.text).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ResponseToolCall {
    #[serde(default)]
    id: Option<String>,
    function: ResponseFunction,
}

#[derive(Debug, Deserialize)]
struct ResponseFunction {
    name: String,
    #[serde(default)]
    arguments: Option<Arguments>,
}

/// Tool-call arguments: JSON text (OpenAI) or, from a few servers, the JSON object itself.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Arguments {
    Text(String),
    Json(Value),
}

impl Arguments {
    fn into_string(self) -> String {
        match self {
            Arguments::Text(s) => s,
            Arguments::Json(v) => v.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Usage {
        Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            total_tokens: u.total_tokens.unwrap_or(u.prompt_tokens + u.completion_tokens),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ChatCompletionChunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default, deserialize_with = "null_as_default")]
    delta: Delta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    tool_calls: Vec<DeltaToolCall>,
}

#[derive(Debug, Deserialize)]
struct DeltaToolCall {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<DeltaFunction>,
}

#[derive(Debug, Deserialize)]
struct DeltaFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// An `{"error": {...}}` object, sent by some servers inside a stream.
#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<Value>,
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A short, single-line preview of a body for error messages.
pub(crate) fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    let mut s: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if body.len() > 300 {
        s.push_str("...");
    }
    s
}

fn decode_error(provider: &str, what: &str, e: impl std::fmt::Display, body: &[u8]) -> Error {
    Error::Decode { provider: provider.to_string(), message: format!("{what}: {e}; body: {}", preview(body)) }
}

/// Decodes a non-streaming chat completion.
///
/// # Errors
/// [`Error::Decode`] when the body is not a chat completion with at least one choice.
pub(crate) fn decode_chat(provider: &str, body: &[u8]) -> Result<ChatResponse> {
    let raw: Value =
        serde_json::from_slice(body).map_err(|e| decode_error(provider, "response is not JSON", e, body))?;
    let completion = ChatCompletion::deserialize(&raw)
        .map_err(|e| decode_error(provider, "response is not a chat completion", e, body))?;
    let choice = completion
        .choices
        .into_iter()
        .min_by_key(|c| c.index.unwrap_or(0))
        .ok_or_else(|| decode_error(provider, "chat completion has no choices", "empty `choices`", body))?;
    let mut message = Message::assistant(choice.message.content.map(WireText::into_string).unwrap_or_default());
    message.tool_calls = choice
        .message
        .tool_calls
        .into_iter()
        .map(|c| ToolCall {
            id: c.id.unwrap_or_default(),
            name: c.function.name,
            arguments: c.function.arguments.map(Arguments::into_string).unwrap_or_default(),
        })
        .collect();
    Ok(ChatResponse {
        message,
        finish_reason: choice.finish_reason.as_deref().filter(|r| !r.is_empty()).map(FinishReason::from_wire),
        usage: completion.usage.map(Usage::from),
        model: completion.model.unwrap_or_default(),
        raw,
    })
}

/// What one `data:` payload of a chat stream means.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    /// A chunk of the answer.
    Chunk(ChatChunk),
    /// `data: [DONE]`: the answer is complete.
    Done,
}

/// Decodes one `data:` payload of a chat stream (`event` is the SSE event name, if any).
///
/// # Errors
/// [`Error::Decode`] for payloads that are not chat-completion chunks; [`Error::Http`] when the server reports an
/// error inside the stream (its `code` when that is an HTTP status, otherwise 500).
pub(crate) fn decode_stream_event(provider: &str, event: Option<&str>, data: &str) -> Result<StreamEvent> {
    if data.trim() == "[DONE]" {
        return Ok(StreamEvent::Done);
    }
    let raw: Value = serde_json::from_str(data)
        .map_err(|e| decode_error(provider, "stream event is not JSON", e, data.as_bytes()))?;
    if event == Some("error") || raw.get("error").is_some_and(|e| !e.is_null()) {
        let (status, message) = match ErrorEnvelope::deserialize(&raw) {
            Ok(env) => {
                let status = env
                    .error
                    .code
                    .as_ref()
                    .and_then(|c| c.as_u64().or_else(|| c.as_str().and_then(|s| s.parse().ok())))
                    .filter(|c| (400..600).contains(c))
                    .map_or(500, |c| c as u16);
                (status, env.error.message.unwrap_or_else(|| data.to_string()))
            }
            Err(_) => (500, data.to_string()),
        };
        return Err(Error::Http {
            provider: provider.to_string(),
            status,
            body: format!("error inside the event stream: {message}"),
            retry_after: None,
        });
    }
    let chunk = ChatCompletionChunk::deserialize(&raw)
        .map_err(|e| decode_error(provider, "stream event is not a chat completion chunk", e, data.as_bytes()))?;
    let mut out = ChatChunk {
        usage: chunk.usage.map(Usage::from),
        model: chunk.model.filter(|m| !m.is_empty()),
        ..ChatChunk::default()
    };
    // n = 1 is all catena asks for; choices of another index would be a second answer.
    for choice in chunk.choices.into_iter().filter(|c| c.index.unwrap_or(0) == 0) {
        if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
            out.text.get_or_insert_with(String::new).push_str(&text);
        }
        for (position, call) in choice.delta.tool_calls.into_iter().enumerate() {
            let (name, arguments) = match call.function {
                Some(f) => (f.name, f.arguments.unwrap_or_default()),
                None => (None, String::new()),
            };
            out.tool_calls.push(ToolCallDelta { index: call.index.unwrap_or(position), id: call.id, name, arguments });
        }
        // A few servers send `"finish_reason": ""` in every chunk but the last.
        if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
            out.finish_reason = Some(FinishReason::from_wire(&reason));
        }
    }
    out.raw = Some(raw);
    Ok(StreamEvent::Chunk(out))
}

#[derive(Debug, Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingData>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<EmbeddingUsage>,
}

#[derive(Debug, Deserialize)]
struct EmbeddingData {
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct EmbeddingUsage {
    #[serde(default)]
    prompt_tokens: u64,
}

/// Decoded `/embeddings` answer, vectors in input order.
#[derive(Debug)]
pub(crate) struct Embeddings {
    pub(crate) vectors: Vec<Vec<f32>>,
    pub(crate) model: Option<String>,
    pub(crate) input_tokens: Option<u64>,
}

/// Decodes an `/embeddings` answer for `count` inputs, ordering vectors by their `index`.
///
/// # Errors
/// [`Error::Decode`] when the body is not an embeddings list or its indices are not exactly `0..count`.
pub(crate) fn decode_embeddings(provider: &str, body: &[u8], count: usize) -> Result<Embeddings> {
    let response: EmbeddingResponse = serde_json::from_slice(body)
        .map_err(|e| decode_error(provider, "response is not an embeddings list", e, body))?;
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; count];
    for item in response.data {
        match slots.get_mut(item.index) {
            Some(slot @ None) => *slot = Some(item.embedding),
            Some(Some(_)) => {
                return Err(decode_error(
                    provider,
                    "embeddings list",
                    format!("index {} appears twice", item.index),
                    body,
                ))
            }
            None => {
                return Err(decode_error(
                    provider,
                    "embeddings list",
                    format!("index {} is out of range for {count} inputs", item.index),
                    body,
                ))
            }
        }
    }
    let vectors = slots
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            v.ok_or_else(|| decode_error(provider, "embeddings list", format!("no vector for input {i}"), body))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Embeddings { vectors, model: response.model, input_tokens: response.usage.map(|u| u.prompt_tokens) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Compat;
    use catena_core::ToolDefinition;
    use serde_json::json;

    fn encode(req: &ChatRequest, quirks: &Quirks, options: &ChatOptions, stream: Option<StreamUsage>) -> Value {
        // Through bytes, as on the wire: f32 fields must print as written (0.9, not 0.8999999761581421).
        let bytes = serde_json::to_vec(&encode_chat(req, "m", quirks, options, stream).unwrap()).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn request_fields_map_to_the_wire() {
        let req = ChatRequest::new(vec![Message::system("be brief"), Message::user("hi")])
            .with_temperature(0.5)
            .with_top_p(0.9)
            .with_max_tokens(12)
            .with_stop("\n")
            .with_seed(7)
            .with_tool(ToolDefinition {
                name: "weather".into(),
                description: "Weather in a city".into(),
                parameters: json!({"type": "object"}),
            })
            .with_tool_choice(ToolChoice::Tool("weather".into()))
            .with_response_format(ResponseFormat::JsonSchema {
                name: "answer".into(),
                schema: json!({"type": "object"}),
                strict: true,
            });
        let quirks = Compat::OpenAi.quirks();
        let body = encode(&req, &quirks, &ChatOptions::default(), Some(StreamUsage::Requested));
        assert_eq!(
            body,
            json!({
                "model": "m",
                "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                "temperature": 0.5,
                "top_p": 0.9,
                "max_completion_tokens": 12,
                "stop": ["\n"],
                "seed": 7,
                "tools": [{"type": "function", "function": {
                    "name": "weather", "description": "Weather in a city", "parameters": {"type": "object"}}}],
                "tool_choice": {"type": "function", "function": {"name": "weather"}},
                "response_format": {"type": "json_schema", "json_schema": {
                    "name": "answer", "schema": {"type": "object"}, "strict": true}},
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
    }

    #[test]
    fn assistant_tool_calls_content_null_or_empty_by_quirk() {
        let mut assistant = Message::assistant("");
        assistant.tool_calls =
            vec![ToolCall { id: "call_1".into(), name: "weather".into(), arguments: "{\"city\":\"Oslo\"}".into() }];
        let req = ChatRequest::new(vec![assistant, Message::tool_result("call_1", "sunny")]);
        let openai = encode(&req, &Compat::OpenAi.quirks(), &ChatOptions::default(), None);
        assert_eq!(openai["messages"][0]["content"], Value::Null);
        assert_eq!(openai["messages"][0]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(openai["messages"][1], json!({"role": "tool", "content": "sunny", "tool_call_id": "call_1"}));
        let llama = encode(&req, &Compat::LlamaCpp.quirks(), &ChatOptions::default(), None);
        assert_eq!(llama["messages"][0]["content"], "");
        assert_eq!(llama.get("max_completion_tokens"), None);
    }

    #[test]
    fn image_parts_become_an_array() {
        let mut m = Message::user("what is this?");
        m.content.push(ContentPart::ImageUrl { url: "data:image/png;base64,AAAA".into() });
        let body = encode(&ChatRequest::new(vec![m]), &Compat::Generic.quirks(), &ChatOptions::default(), None);
        assert_eq!(
            body["messages"][0]["content"],
            json!([{"type": "text", "text": "what is this?"},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
        );
    }

    #[test]
    fn text_parts_become_one_string() {
        let mut m = Message::user("a");
        m.content.push(ContentPart::Text { text: "b".into() });
        m.content.push(ContentPart::Text { text: String::new() });
        m.content.push(ContentPart::Text { text: "c".into() });
        let body = encode(&ChatRequest::new(vec![m]), &Compat::OpenAi.quirks(), &ChatOptions::default(), None);
        assert_eq!(body["messages"][0], json!({"role": "user", "content": "abc"}));
    }

    #[test]
    fn grammar_is_a_top_level_field_where_the_quirk_says_so() {
        let grammar = crate::openai::Gbnf::parse("root ::= [0-9]+").unwrap();
        let options = ChatOptions::default().with_grammar(grammar);
        let req = ChatRequest::new(vec![Message::user("hi")]);
        assert_eq!(encode(&req, &Compat::LlamaCpp.quirks(), &options, None)["grammar"], "root ::= [0-9]+");
        assert_eq!(encode(&req, &Compat::Vllm.quirks(), &options, None).get("grammar"), None);
        assert_eq!(encode(&req, &Compat::LlamaCpp.quirks(), &ChatOptions::default(), None).get("grammar"), None);
    }

    #[test]
    fn tool_message_without_id_is_rejected() {
        let mut m = Message::tool_result("x", "y");
        m.tool_call_id = None;
        let err =
            encode_chat(&ChatRequest::new(vec![m]), "m", &Compat::Generic.quirks(), &ChatOptions::default(), None)
                .unwrap_err();
        assert!(err.to_string().contains("Message::tool_result"), "{err}");
    }

    #[test]
    fn json_object_schema_option() {
        let options = ChatOptions::default().with_json_object_schema(json!({"type": "object"}));
        let req = ChatRequest::new(vec![Message::user("hi")]);
        let body = encode(&req, &Compat::Generic.quirks(), &options, None);
        assert_eq!(body["response_format"], json!({"type": "json_object", "schema": {"type": "object"}}));
    }

    #[test]
    fn lenient_response_decoding() {
        let body = br#"{"model":"x","choices":[{"index":0,"message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":{"a":1}}}]},
            "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        let r = decode_chat("p", body).unwrap();
        assert_eq!(r.text(), "");
        assert_eq!(r.message.tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(r.usage, Some(Usage { input_tokens: 3, output_tokens: 4, total_tokens: 7 }));
        let err = decode_chat("p", b"{\"choices\":[]}").unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
    }

    #[test]
    fn stream_error_event_becomes_http_error() {
        let err = decode_stream_event("p", None, r#"{"error":{"message":"overloaded","code":503}}"#).unwrap_err();
        assert!(matches!(err, Error::Http { status: 503, .. }), "{err}");
        assert!(err.to_string().contains("overloaded"));
    }

    #[test]
    fn embeddings_are_ordered_and_checked() {
        let body = br#"{"data":[{"index":1,"embedding":[2.0]},{"index":0,"embedding":[1.0]}]}"#;
        assert_eq!(decode_embeddings("p", body, 2).unwrap().vectors, vec![vec![1.0], vec![2.0]]);
        assert!(decode_embeddings("p", body, 3).is_err());
        let dup = br#"{"data":[{"index":0,"embedding":[2.0]},{"index":0,"embedding":[1.0]}]}"#;
        assert!(decode_embeddings("p", dup, 2).is_err());
    }
}
