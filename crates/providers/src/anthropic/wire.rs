//! The Anthropic Messages API wire format: the request body, the response body, error bodies, and the pieces the
//! streaming decoder shares with the non-streaming one (usage, stop reasons, canonical tool-input text).

use catena_core::{
    ChatRequest, ChatResponse, Constraint, ContentPart, Error, FinishReason, Message, Reasoning, Result, Role,
    ToolCall, ToolChoice, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// The name of the synthetic tool that carries a [`Constraint::JsonSchema`] or [`Constraint::JsonObject`] answer
/// (see the module documentation of [`crate::anthropic`]).
pub const STRUCTURED_OUTPUT_TOOL: &str = "structured_output";

// ------------------------------------------------------------------------------------------------------------
// Request
// ------------------------------------------------------------------------------------------------------------

/// The body of `POST /v1/messages`.
#[derive(Debug, Serialize)]
pub(crate) struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Content>,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Debug, Serialize)]
struct WireMessage {
    role: &'static str,
    content: Content,
}

/// Message (or system) content: one string when it is a single text, content blocks otherwise.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Thinking {
        thinking: String,
        signature: String,
    },
    RedactedThinking {
        data: String,
    },
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        input: Box<RawValue>,
    },
    ToolResult {
        tool_use_id: String,
        content: Content,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Serialize)]
struct WireTool {
    name: String,
    description: String,
    input_schema: Value,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireToolChoice {
    Auto,
    Any,
    None,
    Tool { name: String },
}

/// How a structured-output answer is carried by the synthetic tool's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StructuredOutput {
    /// The schema describes an object: the tool's input is the answer.
    Direct,
    /// The schema allows more than objects: the tool's input is `{"value": <answer>}`.
    Wrapped,
}

/// The synthetic tool for a constraint, and how its input carries the answer.
fn structured_tool(constraint: &Constraint, backend: &str) -> Result<(WireTool, StructuredOutput)> {
    let description = "Give your complete answer by calling this tool: its input is the answer.".to_string();
    let tool = |input_schema: Value| WireTool {
        name: STRUCTURED_OUTPUT_TOOL.to_string(),
        description: description.clone(),
        input_schema,
    };
    match constraint {
        Constraint::JsonObject => Ok((tool(json!({"type": "object"})), StructuredOutput::Direct)),
        Constraint::JsonSchema(Value::Bool(false)) => {
            Err(Error::InvalidInput("the JSON Schema `false` accepts no value, so no answer can satisfy it".into()))
        }
        Constraint::JsonSchema(schema) if schema.get("type") == Some(&json!("object")) => {
            Ok((tool(schema.clone()), StructuredOutput::Direct))
        }
        Constraint::JsonSchema(schema @ (Value::Object(_) | Value::Bool(true))) => {
            // A tool's input is always an object: wrap the schema in one, moving its definitions to the root so
            // that `#/$defs/...` and `#/definitions/...` references still resolve.
            let mut inner = match schema {
                Value::Object(map) => map.clone(),
                _ => serde_json::Map::new(),
            };
            let mut root = serde_json::Map::new();
            root.insert("type".into(), json!("object"));
            for key in ["$defs", "definitions"] {
                if let Some(defs) = inner.remove(key) {
                    root.insert(key.into(), defs);
                }
            }
            inner.remove("$schema");
            root.insert("properties".into(), json!({ "value": Value::Object(inner) }));
            root.insert("required".into(), json!(["value"]));
            Ok((tool(Value::Object(root)), StructuredOutput::Wrapped))
        }
        Constraint::JsonSchema(other) => Err(Error::InvalidInput(format!(
            "a JSON Schema must be an object or a boolean, not {}",
            catena_core::error::json_type_name(other)
        ))),
        other => Err(Error::unsupported(
            backend,
            format!("{} constraints", other.kind()),
            "use catena_constraint::structured (validate-and-repair)",
        )),
    }
}

/// Encodes a checked request. Returns the body and, for a constrained request, how the answer comes back.
pub(crate) fn encode_request<'a>(
    request: &'a ChatRequest,
    model: &'a str,
    max_tokens: u32,
    stream: bool,
    backend: &str,
) -> Result<(MessagesRequest<'a>, Option<StructuredOutput>)> {
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<WireMessage> = Vec::new();
    // Consecutive tool results go in one user message.
    let mut tool_results: Vec<Block> = Vec::new();
    let flush = |results: &mut Vec<Block>, messages: &mut Vec<WireMessage>| {
        if !results.is_empty() {
            messages.push(WireMessage { role: "user", content: Content::Blocks(std::mem::take(results)) });
        }
    };
    for (i, m) in request.messages.iter().enumerate() {
        match m.role {
            Role::System => {
                if m.content.iter().any(|p| matches!(p, ContentPart::ImageUrl { .. })) {
                    return Err(Error::InvalidInput(format!(
                        "message {i} is a system message with an image; Anthropic's system prompt is text only"
                    )));
                }
                system.push(m.text());
            }
            Role::Tool => {
                let id = m.tool_call_id.clone().ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "message {i} is a tool result without `tool_call_id`; build it with Message::tool_result"
                    ))
                })?;
                tool_results.push(Block::ToolResult {
                    tool_use_id: id,
                    content: encode_content(m, i)?,
                    is_error: m.is_error,
                });
            }
            Role::User => {
                flush(&mut tool_results, &mut messages);
                messages.push(WireMessage { role: "user", content: encode_content(m, i)? });
            }
            Role::Assistant => {
                flush(&mut tool_results, &mut messages);
                messages.push(WireMessage { role: "assistant", content: encode_assistant(m, i)? });
            }
        }
    }
    flush(&mut tool_results, &mut messages);
    let system = match system.len() {
        0 => None,
        1 => system.pop().map(Content::Text),
        _ => Some(Content::Blocks(system.into_iter().map(|text| Block::Text { text }).collect())),
    };
    let mut tools: Vec<WireTool> = request
        .tools
        .iter()
        .map(|t| WireTool {
            name: t.name.clone(),
            description: t.description.clone(),
            input_schema: t.parameters.clone(),
        })
        .collect();
    let mut tool_choice = request.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Auto => WireToolChoice::Auto,
        ToolChoice::None => WireToolChoice::None,
        ToolChoice::Required => WireToolChoice::Any,
        ToolChoice::Tool(name) => WireToolChoice::Tool { name: name.clone() },
    });
    let mut structured = None;
    if let Some(constraint) = &request.constraint {
        let (tool, how) = structured_tool(constraint, backend)?;
        tools = vec![tool];
        tool_choice = Some(WireToolChoice::Tool { name: STRUCTURED_OUTPUT_TOOL.to_string() });
        structured = Some(how);
    }
    Ok((
        MessagesRequest {
            model,
            max_tokens,
            system,
            messages,
            temperature: request.temperature,
            top_p: request.top_p,
            stop_sequences: &request.stop,
            tools,
            tool_choice,
            stream,
        },
        structured,
    ))
}

/// Marks prompt-cache breakpoints in an encoded request: the last block of the system prompt, the last tool, and
/// with `conversation` the last block of the last message (a string content becomes one text block to carry it).
pub(crate) fn mark_cache_breakpoints(body: &mut Value, conversation: bool) {
    fn mark_last(content: &mut Value) {
        if let Value::String(text) = content {
            *content = serde_json::json!([{"type": "text", "text": std::mem::take(text)}]);
        }
        if let Some(last) = content.as_array_mut().and_then(|blocks| blocks.last_mut()) {
            if let Some(block) = last.as_object_mut() {
                block.insert("cache_control".into(), serde_json::json!({"type": "ephemeral"}));
            }
        }
    }
    if let Some(system) = body.get_mut("system") {
        mark_last(system);
    }
    if let Some(tools) = body.get_mut("tools") {
        mark_last(tools);
    }
    if conversation {
        if let Some(last) = body.get_mut("messages").and_then(|m| m.as_array_mut()).and_then(|m| m.last_mut()) {
            if let Some(content) = last.get_mut("content") {
                mark_last(content);
            }
        }
    }
}

/// User or tool-result content: one string for a single text part, blocks otherwise.
fn encode_content(m: &Message, i: usize) -> Result<Content> {
    if let [ContentPart::Text { text }] = m.content.as_slice() {
        return Ok(Content::Text(text.clone()));
    }
    let blocks = m.content.iter().map(|part| encode_part(part, i)).collect::<Result<Vec<_>>>()?;
    Ok(Content::Blocks(blocks))
}

fn encode_part(part: &ContentPart, i: usize) -> Result<Block> {
    match part {
        ContentPart::Text { text } => Ok(Block::Text { text: text.clone() }),
        ContentPart::ImageUrl { url } => Ok(Block::Image { source: image_source(url, i)? }),
    }
}

/// A `data:<media type>;base64,<data>` URL becomes a base64 source, an `http(s)` URL a URL source.
fn image_source(url: &str, i: usize) -> Result<ImageSource> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').unwrap_or((rest, ""));
        let media_type = meta.strip_suffix(";base64").filter(|t| !t.is_empty() && !t.contains(';'));
        return match media_type {
            Some(media_type) if !data.is_empty() => {
                Ok(ImageSource::Base64 { media_type: media_type.to_string(), data: data.to_string() })
            }
            _ => Err(Error::InvalidInput(format!(
                "message {i} has an image data URL that is not `data:<media type>;base64,<data>`; Anthropic takes \
                 base64 images only"
            ))),
        };
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(ImageSource::Url { url: url.to_string() });
    }
    let shown: String = url.chars().take(40).collect();
    Err(Error::InvalidInput(format!(
        "message {i} has an image URL `{shown}` that is neither a data: nor an http(s) URL"
    )))
}

/// Assistant content: text parts as text blocks, then one `tool_use` block per tool call.
fn encode_assistant(m: &Message, i: usize) -> Result<Content> {
    if m.tool_calls.is_empty() && m.reasoning.is_empty() {
        return encode_content(m, i);
    }
    // Thinking blocks go back first, as they came (Anthropic checks their signatures in a tool loop).
    let mut blocks: Vec<Block> = m
        .reasoning
        .iter()
        .map(|r| match &r.redacted {
            Some(data) => Block::RedactedThinking { data: data.clone() },
            None => Block::Thinking { thinking: r.text.clone(), signature: r.signature.clone().unwrap_or_default() },
        })
        .collect();
    for part in &m.content {
        match part {
            ContentPart::Text { text } if text.is_empty() => {}
            other => blocks.push(encode_part(other, i)?),
        }
    }
    for call in &m.tool_calls {
        let arguments = if call.arguments.trim().is_empty() { "{}" } else { call.arguments.as_str() };
        let input = RawValue::from_string(arguments.to_string())
            .ok()
            .filter(|raw| raw.get().trim_start().starts_with('{'))
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "message {i}: the arguments of tool call `{}` ({}) are not a JSON object, which Anthropic's \
                     `tool_use` input must be",
                    call.name, call.id
                ))
            })?;
        blocks.push(Block::ToolUse { id: call.id.clone(), name: call.name.clone(), input });
    }
    Ok(Content::Blocks(blocks))
}

// ------------------------------------------------------------------------------------------------------------
// Response
// ------------------------------------------------------------------------------------------------------------

/// `usage` of a message or of a `message_delta` event; every field may be missing (or `null`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Takes every count `later` reports (`message_delta` usage is cumulative), keeping the others.
    pub(crate) fn merge(&mut self, later: &WireUsage) {
        let take = |mine: &mut Option<u64>, theirs: Option<u64>| {
            if theirs.is_some() {
                *mine = theirs;
            }
        };
        take(&mut self.input_tokens, later.input_tokens);
        take(&mut self.output_tokens, later.output_tokens);
        take(&mut self.cache_read_input_tokens, later.cache_read_input_tokens);
        take(&mut self.cache_creation_input_tokens, later.cache_creation_input_tokens);
    }

    /// catena's counts: input = uncached input + cache reads + cache writes (Anthropic reports the three
    /// separately), cached input = cache reads.
    pub(crate) fn to_usage(self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let input = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(read)
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0));
        let output = self.output_tokens.unwrap_or(0);
        Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input.saturating_add(output),
            cached_input_tokens: self.cache_read_input_tokens,
        }
    }
}

/// Maps Anthropic's `stop_reason`; with a structured-output request, `tool_use` (the synthetic tool was called)
/// is a normal end.
pub(crate) fn finish_reason(stop_reason: &str, structured: bool) -> FinishReason {
    match stop_reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "tool_use" if structured => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_string()),
    }
}

/// Removes the whitespace outside strings from JSON text fed in arbitrary fragments: the canonical form of tool
/// inputs, the same whether the input came whole (`chat`) or as `input_json_delta` fragments (streams). Key
/// order, escapes and number spellings stay as the server wrote them.
#[derive(Debug, Default, Clone)]
pub(crate) struct JsonMinifier {
    in_string: bool,
    escaped: bool,
}

impl JsonMinifier {
    pub(crate) fn push(&mut self, fragment: &str, out: &mut String) {
        for c in fragment.chars() {
            if self.in_string {
                out.push(c);
                if self.escaped {
                    self.escaped = false;
                } else if c == '\\' {
                    self.escaped = true;
                } else if c == '"' {
                    self.in_string = false;
                }
            } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
                out.push(c);
                if c == '"' {
                    self.in_string = true;
                }
            }
        }
    }

    pub(crate) fn minify(json: &str) -> String {
        let mut out = String::with_capacity(json.len());
        JsonMinifier::default().push(json, &mut out);
        out
    }
}

#[derive(Deserialize)]
struct Wrapped<'a> {
    #[serde(borrow)]
    value: &'a RawValue,
}

/// The answer text of a structured-output tool input (minified JSON text of an object).
pub(crate) fn structured_answer(input: &str, how: StructuredOutput) -> std::result::Result<String, String> {
    match how {
        StructuredOutput::Direct => Ok(input.to_string()),
        StructuredOutput::Wrapped => serde_json::from_str::<Wrapped<'_>>(input)
            .map(|w| w.value.get().to_string())
            .map_err(|e| format!("the structured-output tool's input has no `value`: {e}")),
    }
}

#[derive(Deserialize)]
struct MessageBody {
    #[serde(default)]
    model: Option<String>,
    content: Vec<Box<RawValue>>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct BlockType {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct TextBlock {
    text: String,
}

#[derive(Deserialize)]
struct ThinkingBlock {
    #[serde(default)]
    thinking: String,
    #[serde(default)]
    signature: Option<String>,
}

#[derive(Deserialize)]
struct RedactedBlock {
    data: String,
}

#[derive(Deserialize)]
struct ToolUseBlock {
    id: String,
    name: String,
    input: Box<RawValue>,
}

/// A short, single-line preview of a body for error messages.
pub(crate) fn preview(body: &[u8], limit: usize) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(limit)]);
    let mut s: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if body.len() > limit {
        s.push_str(&format!("... ({} bytes in all)", body.len()));
    }
    s
}

pub(crate) fn decode_error(provider: &str, what: &str, e: impl std::fmt::Display, body: &[u8]) -> Error {
    Error::Decode { provider: provider.to_string(), message: format!("{what}: {e}; body: {}", preview(body, 300)) }
}

/// Decodes a (non-streamed) message.
///
/// # Errors
/// [`Error::Decode`] when the body is not a message, a content block lacks its fields, or a constrained answer
/// has no synthetic tool call.
pub(crate) fn decode_message(
    provider: &str,
    body: &[u8],
    structured: Option<StructuredOutput>,
) -> Result<ChatResponse> {
    let raw: Value =
        serde_json::from_slice(body).map_err(|e| decode_error(provider, "response is not JSON", e, body))?;
    let message: MessageBody = serde_json::from_slice(body)
        .map_err(|e| decode_error(provider, "response is not an Anthropic message", e, body))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let mut answer: Option<String> = None;
    let mut reasoning = Vec::new();
    for (i, block) in message.content.iter().enumerate() {
        let bad = |e: serde_json::Error| decode_error(provider, &format!("content block {i} is malformed"), e, body);
        let kind = serde_json::from_str::<BlockType>(block.get()).map_err(bad)?.kind;
        match kind.as_str() {
            "text" if structured.is_none() => {
                text.push_str(&serde_json::from_str::<TextBlock>(block.get()).map_err(bad)?.text)
            }
            "tool_use" => {
                let call: ToolUseBlock = serde_json::from_str(block.get()).map_err(bad)?;
                let arguments = JsonMinifier::minify(call.input.get());
                match structured {
                    Some(how) if call.name == STRUCTURED_OUTPUT_TOOL => {
                        let value = structured_answer(&arguments, how)
                            .map_err(|e| decode_error(provider, "structured output", e, body))?;
                        answer.get_or_insert(value);
                    }
                    _ => tool_calls.push(ToolCall { id: call.id, name: call.name, arguments }),
                }
            }
            "thinking" => {
                let block: ThinkingBlock = serde_json::from_str(block.get()).map_err(bad)?;
                reasoning.push(Reasoning {
                    text: block.thinking,
                    signature: block.signature.filter(|s| !s.is_empty()),
                    redacted: None,
                });
            }
            "redacted_thinking" => {
                let block: RedactedBlock = serde_json::from_str(block.get()).map_err(bad)?;
                reasoning.push(Reasoning { redacted: Some(block.data), ..Reasoning::default() });
            }
            // Server tools' blocks, citations: kept in `raw` only.
            _ => {}
        }
    }
    let structured_flag = structured.is_some();
    if let Some(answer) = answer {
        text = answer;
    }
    let mut out = Message::assistant(text);
    out.tool_calls = tool_calls;
    out.reasoning = reasoning;
    Ok(ChatResponse {
        message: out,
        finish_reason: message.stop_reason.as_deref().map(|r| finish_reason(r, structured_flag)),
        usage: message.usage.map(WireUsage::to_usage),
        model: message.model.unwrap_or_default(),
        raw,
    })
}

// ------------------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Anthropic's `{"type": "error", "error": {"type", "message"}}` as `<type>: <message>` (the message cut to 1000
/// characters), or `None` when `body` is not such an error.
pub(crate) fn error_summary(body: &[u8]) -> Option<(Option<String>, String)> {
    let env: ErrorEnvelope = serde_json::from_slice(body).ok()?;
    let message: String = env.error.message.unwrap_or_default();
    let mut shown: String = message.chars().take(1000).collect();
    if shown.len() < message.len() {
        shown.push_str("...");
    }
    let summary = match &env.error.kind {
        Some(kind) => format!("{kind}: {shown}"),
        None => shown,
    };
    Some((env.error.kind, summary))
}

/// The HTTP status Anthropic uses for an error type (for errors inside an event stream, which have no status).
pub(crate) fn status_of_error_type(kind: Option<&str>) -> u16 {
    match kind {
        Some("invalid_request_error") => 400,
        Some("authentication_error") => 401,
        Some("billing_error") => 402,
        Some("permission_error") => 403,
        Some("not_found_error") => 404,
        Some("request_too_large") => 413,
        Some("rate_limit_error") => 429,
        Some("timeout_error") => 504,
        Some("overloaded_error") => 529,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use catena_core::ToolDefinition;

    fn encode(request: &ChatRequest) -> Value {
        let (body, _) = encode_request(request, "claude-test", 100, false, "anthropic").unwrap();
        serde_json::to_value(&body).unwrap()
    }

    #[test]
    fn minifier_keeps_strings_and_drops_whitespace_across_fragments() {
        let json = "{ \"a b\" : \"x \\\" y\\\\\" ,\n\t\"c\": [1, 2] }";
        let whole = JsonMinifier::minify(json);
        assert_eq!(whole, "{\"a b\":\"x \\\" y\\\\\",\"c\":[1,2]}");
        for size in 1..json.len() {
            let mut m = JsonMinifier::default();
            let mut out = String::new();
            let chars: Vec<char> = json.chars().collect();
            for piece in chars.chunks(size) {
                m.push(&piece.iter().collect::<String>(), &mut out);
            }
            assert_eq!(out, whole, "piece size {size}");
        }
    }

    #[test]
    fn system_messages_go_top_level_and_tool_results_are_grouped() {
        let mut call = Message::assistant("Let me look.");
        call.tool_calls = vec![
            ToolCall { id: "t1".into(), name: "a".into(), arguments: "{\"x\": 1}".into() },
            ToolCall { id: "t2".into(), name: "b".into(), arguments: String::new() },
        ];
        let request = ChatRequest::new(vec![
            Message::system("S1"),
            Message::user("hi"),
            call,
            Message::tool_result("t1", "r1"),
            Message::tool_result("t2", "r2"),
            Message::user("thanks"),
        ]);
        let body = encode(&request);
        assert_eq!(body["system"], "S1");
        assert_eq!(body["messages"].as_array().unwrap().len(), 4);
        assert_eq!(
            body["messages"][1]["content"][1],
            json!({"type": "tool_use", "id": "t1", "name": "a", "input": {"x": 1}})
        );
        assert_eq!(body["messages"][1]["content"][2]["input"], json!({}));
        assert_eq!(
            body["messages"][2],
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "r1"},
                {"type": "tool_result", "tool_use_id": "t2", "content": "r2"}]})
        );
        assert_eq!(body["messages"][3], json!({"role": "user", "content": "thanks"}));
        let two = ChatRequest::new(vec![Message::system("A"), Message::system("B"), Message::user("q")]);
        assert_eq!(encode(&two)["system"], json!([{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]));
    }

    #[test]
    fn images_become_base64_or_url_sources() {
        let mut m = Message::user("look");
        m.content.push(ContentPart::ImageUrl { url: "data:image/png;base64,AAAA".into() });
        m.content.push(ContentPart::ImageUrl { url: "https://example.com/cat.jpg".into() });
        let body = encode(&ChatRequest::new(vec![m]));
        assert_eq!(
            body["messages"][0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
        );
        assert_eq!(
            body["messages"][0]["content"][2]["source"],
            json!({"type": "url", "url": "https://example.com/cat.jpg"})
        );
        let mut bad = Message::user("x");
        bad.content.push(ContentPart::ImageUrl { url: "data:image/png,rawbytes".into() });
        assert!(encode_request(&ChatRequest::new(vec![bad]), "m", 1, false, "a").is_err());
    }

    #[test]
    fn constraints_become_a_forced_synthetic_tool() {
        let request = ChatRequest::new(vec![Message::user("q")])
            .with_constraint(Constraint::JsonSchema(json!({"type": "array", "$defs": {"x": {}}})));
        let (body, how) = encode_request(&request, "m", 1, false, "a").unwrap();
        assert_eq!(how, Some(StructuredOutput::Wrapped));
        let body = serde_json::to_value(&body).unwrap();
        assert_eq!(body["tool_choice"], json!({"type": "tool", "name": STRUCTURED_OUTPUT_TOOL}));
        assert_eq!(
            body["tools"][0]["input_schema"],
            json!({"type": "object", "$defs": {"x": {}}, "properties": {"value": {"type": "array"}}, "required": ["value"]})
        );
        assert_eq!(structured_answer("{\"value\":[1,2]}", StructuredOutput::Wrapped).unwrap(), "[1,2]");
        let regex = ChatRequest::new(vec![Message::user("q")]).with_constraint(Constraint::Regex("a".into()));
        assert!(matches!(encode_request(&regex, "m", 1, false, "a"), Err(Error::Unsupported { .. })));
        let tool = ToolDefinition { name: "t".into(), description: "d".into(), parameters: json!({"type": "object"}) };
        let forced = ChatRequest::new(vec![Message::user("q")]).with_tool(tool).with_tool_choice(ToolChoice::Required);
        assert_eq!(encode(&forced)["tool_choice"], json!({"type": "any"}));
    }

    #[test]
    fn usage_adds_cache_reads_and_writes_to_input() {
        let u: WireUsage = serde_json::from_value(json!({"input_tokens": 10, "output_tokens": 5,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}))
        .unwrap();
        assert_eq!(
            u.to_usage(),
            Usage { input_tokens: 130, output_tokens: 5, total_tokens: 135, cached_input_tokens: Some(100) }
        );
        let huge: WireUsage = serde_json::from_value(json!({"input_tokens": u64::MAX, "output_tokens": 5})).unwrap();
        assert_eq!(huge.to_usage().total_tokens, u64::MAX);
    }
}
