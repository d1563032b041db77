//! Ollama's native wire format: the bodies of `POST /api/chat` and `POST /api/embed`, their answers, error
//! bodies, and the pieces the streaming decoder shares with the non-streaming one (usage, done reasons, tool
//! calls).

use catena_core::{
    ChatRequest, ChatResponse, Constraint, ContentPart, Error, FinishReason, Message, Result, Role, ToolCall,
    ToolChoice, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

// ------------------------------------------------------------------------------------------------------------
// Request
// ------------------------------------------------------------------------------------------------------------

/// The body of `POST /api/chat`.
#[derive(Debug, Serialize)]
pub(crate) struct ChatBody<'a> {
    model: &'a str,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<Options<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_alive: Option<&'a Value>,
}

#[derive(Debug, Serialize)]
struct WireMessage {
    role: &'static str,
    content: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_name: Option<String>,
}

#[derive(Debug, Serialize)]
struct WireToolCall {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    function: WireFunctionCall,
}

#[derive(Debug, Serialize)]
struct WireFunctionCall {
    name: String,
    arguments: Box<RawValue>,
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
    description: &'a str,
    parameters: &'a Value,
}

/// The sampling `options` catena sets; the others keep the model's defaults.
#[derive(Debug, Default, Serialize)]
struct Options<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_predict: Option<u32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

/// The `format` for a constraint: `"json"` for JSON mode, the schema itself for a JSON Schema.
fn format_for(constraint: &Constraint, backend: &str) -> Result<Value> {
    match constraint {
        Constraint::JsonObject => Ok(Value::String("json".into())),
        Constraint::JsonSchema(Value::Bool(false)) => {
            Err(Error::InvalidInput("the JSON Schema `false` accepts no value, so no answer can satisfy it".into()))
        }
        // `true` accepts every value; Ollama's `format` takes an object, and `{}` means the same.
        Constraint::JsonSchema(Value::Bool(true)) => Ok(Value::Object(serde_json::Map::new())),
        Constraint::JsonSchema(schema @ Value::Object(_)) => Ok(schema.clone()),
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

/// Encodes a checked request (see the module documentation of [`crate::ollama`] for the mapping).
pub(crate) fn encode_chat<'a>(
    request: &'a ChatRequest,
    model: &'a str,
    stream: bool,
    keep_alive: Option<&'a Value>,
    backend: &str,
) -> Result<ChatBody<'a>> {
    let mut messages = Vec::with_capacity(request.messages.len());
    for (i, m) in request.messages.iter().enumerate() {
        let (content, images) = encode_content(m, i)?;
        let mut wire = WireMessage { role: role(m.role), content, images, tool_calls: Vec::new(), tool_name: None };
        match m.role {
            Role::Assistant => {
                for call in &m.tool_calls {
                    wire.tool_calls.push(encode_tool_call(call, i)?);
                }
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "message {i} is a tool result without `tool_call_id`; build it with Message::tool_result"
                    ))
                })?;
                wire.tool_name = tool_name_of(&request.messages[..i], id);
            }
            Role::System | Role::User => {}
        }
        messages.push(wire);
    }
    // Ollama has no tool choice: `None` is honoured by not offering the tools (Required and Tool(name) were
    // rejected by the capability check).
    let tools = if matches!(request.tool_choice, Some(ToolChoice::None)) {
        Vec::new()
    } else {
        request
            .tools
            .iter()
            .map(|t| WireTool {
                kind: "function",
                function: WireFunction { name: &t.name, description: &t.description, parameters: &t.parameters },
            })
            .collect()
    };
    let format = request.constraint.as_ref().map(|c| format_for(c, backend)).transpose()?;
    let options = Options {
        temperature: request.temperature,
        top_p: request.top_p,
        num_predict: request.max_tokens,
        stop: &request.stop,
        seed: request.seed,
    };
    let has_options = options.temperature.is_some()
        || options.top_p.is_some()
        || options.num_predict.is_some()
        || !options.stop.is_empty()
        || options.seed.is_some();
    Ok(ChatBody { model, messages, tools, format, options: has_options.then_some(options), stream, keep_alive })
}

fn role(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// The name of the tool whose call has id `id`: the nearest earlier assistant message that made such a call.
fn tool_name_of(before: &[Message], id: &str) -> Option<String> {
    before
        .iter()
        .rev()
        .filter(|m| m.role == Role::Assistant)
        .find_map(|m| m.tool_calls.iter().find(|c| c.id == id))
        .map(|c| c.name.clone())
        .filter(|name| !name.is_empty())
}

/// The text parts joined, and the images as base64 (Ollama takes base64 data only).
fn encode_content(m: &Message, i: usize) -> Result<(String, Vec<String>)> {
    let mut text = String::new();
    let mut images = Vec::new();
    for part in &m.content {
        match part {
            ContentPart::Text { text: t } => text.push_str(t),
            ContentPart::ImageUrl { url } => images.push(image_base64(url, i)?),
        }
    }
    Ok((text, images))
}

/// The base64 data of a `data:<media type>;base64,<data>` URL.
fn image_base64(url: &str, i: usize) -> Result<String> {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((meta, data)) = rest.split_once(',') {
            if meta.ends_with(";base64") && !data.is_empty() {
                return Ok(data.to_string());
            }
        }
        return Err(Error::InvalidInput(format!(
            "message {i} has an image data URL that is not `data:<media type>;base64,<data>`; Ollama takes base64 \
             images only"
        )));
    }
    let shown: String = url.chars().take(40).collect();
    Err(Error::InvalidInput(format!(
        "message {i} has an image URL `{shown}`, but Ollama takes images as base64 data only: download the image \
         and pass it as a `data:<media type>;base64,<data>` URL"
    )))
}

/// A tool call of an assistant message: `arguments` must be a JSON object (empty arguments are sent as `{}`).
fn encode_tool_call(call: &ToolCall, i: usize) -> Result<WireToolCall> {
    let arguments = if call.arguments.trim().is_empty() { "{}" } else { call.arguments.as_str() };
    let arguments = RawValue::from_string(arguments.to_string())
        .ok()
        .filter(|raw| raw.get().trim_start().starts_with('{'))
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "message {i}: the arguments of tool call `{}` ({}) are not a JSON object, which Ollama's \
                 `function.arguments` must be",
                call.name, call.id
            ))
        })?;
    Ok(WireToolCall {
        id: (!call.id.is_empty()).then(|| call.id.clone()),
        function: WireFunctionCall { name: call.name.clone(), arguments },
    })
}

/// The body of `POST /api/embed`.
#[derive(Debug, Serialize)]
pub(crate) struct EmbedBody<'a> {
    pub(crate) model: &'a str,
    pub(crate) input: EmbedInput<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) truncate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dimensions: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) keep_alive: Option<&'a Value>,
}

/// One text (a query) or several (documents).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum EmbedInput<'a> {
    One(&'a str),
    Many(&'a [String]),
}

// ------------------------------------------------------------------------------------------------------------
// Response
// ------------------------------------------------------------------------------------------------------------

/// One answer object: the whole answer (`"stream": false`) or one line of a stream.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatObject {
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) message: Option<ObjectMessage>,
    /// `true` on the last object of an answer; a whole answer without the field counts as complete.
    #[serde(default)]
    pub(crate) done: Option<bool>,
    #[serde(default)]
    pub(crate) done_reason: Option<String>,
    #[serde(default)]
    pub(crate) prompt_eval_count: Option<u64>,
    #[serde(default)]
    pub(crate) eval_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ObjectMessage {
    #[serde(default)]
    pub(crate) content: Option<String>,
    #[serde(default)]
    pub(crate) tool_calls: Option<Vec<ObjectToolCall>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ObjectToolCall {
    #[serde(default)]
    id: Option<String>,
    function: ObjectFunction,
}

#[derive(Debug, Deserialize)]
struct ObjectFunction {
    name: String,
    #[serde(default)]
    arguments: Option<Box<RawValue>>,
}

impl ChatObject {
    /// The counts of the final object: `prompt_eval_count` as input, `eval_count` as output (a missing count is
    /// 0: Ollama leaves `prompt_eval_count` out when the whole prompt came from its cache). `None` when both are
    /// missing.
    pub(crate) fn usage(&self) -> Option<Usage> {
        if self.prompt_eval_count.is_none() && self.eval_count.is_none() {
            return None;
        }
        let input = self.prompt_eval_count.unwrap_or(0);
        let output = self.eval_count.unwrap_or(0);
        Some(Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input.saturating_add(output),
            cached_input_tokens: None,
        })
    }
}

/// Maps `done_reason`. Ollama says `stop` for an answer that calls tools, so `with_tool_calls` turns it into
/// `ToolCalls`.
pub(crate) fn finish_reason(done_reason: Option<&str>, with_tool_calls: bool) -> Option<FinishReason> {
    match done_reason {
        Some("stop") | None if with_tool_calls => Some(FinishReason::ToolCalls),
        Some("stop") => Some(FinishReason::Stop),
        Some("length") => Some(FinishReason::Length),
        Some(other) => Some(FinishReason::Other(other.to_string())),
        None => None,
    }
}

/// Removes the whitespace outside strings from JSON text (key order, escapes and numbers as the server wrote
/// them).
fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
            in_string = c == '"';
        }
    }
    out
}

/// A stable id for the `position`-th tool call of an answer that came without one: `call_<position>_<hash>`,
/// the hash (FNV-1a, 32 bits) over the name and arguments, so the same answer gets the same ids whether it
/// came whole or streamed.
fn generated_id(position: usize, name: &str, arguments: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes().chain([0]).chain(arguments.bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("call_{position}_{hash:08x}")
}

/// Converts wire tool calls, numbering them from `first` (their position in the whole answer).
///
/// # Errors
/// A message naming the call whose arguments are not a JSON object.
pub(crate) fn tool_calls(calls: Vec<ObjectToolCall>, first: usize) -> std::result::Result<Vec<ToolCall>, String> {
    let mut out = Vec::with_capacity(calls.len());
    for (k, call) in calls.into_iter().enumerate() {
        let arguments = match &call.function.arguments {
            None => "{}".to_string(),
            Some(raw) if raw.get().trim() == "null" => "{}".to_string(),
            Some(raw) => minify(raw.get()),
        };
        if !arguments.starts_with('{') {
            return Err(format!(
                "the arguments of tool call `{}` are not a JSON object: {}",
                call.function.name,
                preview(arguments.as_bytes(), 100)
            ));
        }
        let id = match call.id.filter(|id| !id.is_empty()) {
            Some(id) => id,
            None => generated_id(first + k, &call.function.name, &arguments),
        };
        out.push(ToolCall { id, name: call.function.name, arguments });
    }
    Ok(out)
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

/// Decodes a whole (non-streamed) answer.
///
/// # Errors
/// [`Error::Http`] when the body is Ollama's `{"error": "..."}`; [`Error::Decode`] when it is not an answer
/// object or a tool call's arguments are not an object.
pub(crate) fn decode_chat(provider: &str, body: &[u8]) -> Result<ChatResponse> {
    let raw: Value =
        serde_json::from_slice(body).map_err(|e| decode_error(provider, "response is not JSON", e, body))?;
    if let Some(summary) = error_summary(body) {
        return Err(in_body_error(provider, &summary, body));
    }
    let object: ChatObject = serde_json::from_value(raw.clone())
        .map_err(|e| decode_error(provider, "response is not an Ollama chat answer", e, body))?;
    if object.done == Some(false) {
        return Err(decode_error(
            provider,
            "the answer is not complete (`done` is false)",
            "one streamed line where a whole answer was expected",
            body,
        ));
    }
    let usage = object.usage();
    let (text, calls) = match object.message {
        Some(m) => (m.content.unwrap_or_default(), m.tool_calls.unwrap_or_default()),
        None => (String::new(), Vec::new()),
    };
    let calls = tool_calls(calls, 0).map_err(|e| decode_error(provider, "malformed tool call", e, body))?;
    let finish = finish_reason(object.done_reason.as_deref(), !calls.is_empty());
    let mut message = Message::assistant(text);
    message.tool_calls = calls;
    Ok(ChatResponse { message, finish_reason: finish, usage, model: object.model.unwrap_or_default(), raw })
}

/// The answer of `POST /api/embed`.
#[derive(Debug, Deserialize)]
pub(crate) struct EmbedAnswer {
    pub(crate) embeddings: Vec<Vec<f32>>,
    #[serde(default)]
    pub(crate) prompt_eval_count: Option<u64>,
}

// ------------------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ErrorBody {
    error: Value,
}

/// Ollama's `{"error": "..."}` as its message (cut to 1000 characters), or `None` when `body` is not such an
/// error.
pub(crate) fn error_summary(body: &[u8]) -> Option<String> {
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    let message = match parsed.error {
        Value::String(s) => s,
        Value::Null => return None,
        // Some proxies send `{"error": {"message": ...}}`.
        other => match other.get("message").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None => other.to_string(),
        },
    };
    let mut shown: String = message.chars().take(1000).collect();
    if shown.len() < message.len() {
        shown.push_str("...");
    }
    Some(shown)
}

/// The [`Error::Http`] for an `{"error": "..."}` document that came inside a 200 answer (a whole answer or a stream
/// line). The document is kept as the body, so the error's one-line Display shows Ollama's message and one hint;
/// the status is 404 when Ollama says the model is not there (its meaning: pull the model or fix the name), and
/// 500 otherwise (a server-side failure, retryable).
pub(crate) fn in_body_error(provider: &str, summary: &str, document: &[u8]) -> Error {
    let lower = summary.to_ascii_lowercase();
    let status = if lower.contains("model") && lower.contains("not found") { 404 } else { 500 };
    Error::Http {
        provider: provider.to_string(),
        status,
        body: String::from_utf8_lossy(document).trim().to_string(),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use catena_core::ToolDefinition;
    use serde_json::json;

    fn encode(request: &ChatRequest) -> Value {
        serde_json::to_value(encode_chat(request, "llama3.2", false, None, "ollama").unwrap()).unwrap()
    }

    #[test]
    fn tool_results_name_their_tool_and_options_are_grouped() {
        let mut call = Message::assistant("");
        call.tool_calls = vec![
            ToolCall { id: "c1".into(), name: "get_weather".into(), arguments: "{\"city\": \"Paris\"}".into() },
            ToolCall { id: "c2".into(), name: "get_time".into(), arguments: String::new() },
        ];
        let request = ChatRequest::new(vec![
            Message::user("q"),
            call,
            Message::tool_result("c2", "noon"),
            Message::tool_result("c1", "sunny"),
            Message::tool_result("unknown", "?"),
        ])
        .with_max_tokens(5)
        .with_seed(7);
        let body = encode(&request);
        assert_eq!(
            body["messages"][1]["tool_calls"],
            json!([{"id": "c1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                   {"id": "c2", "function": {"name": "get_time", "arguments": {}}}])
        );
        assert_eq!(body["messages"][2], json!({"role": "tool", "content": "noon", "tool_name": "get_time"}));
        assert_eq!(body["messages"][3]["tool_name"], "get_weather");
        assert!(body["messages"][4].get("tool_name").is_none());
        assert_eq!(body["options"], json!({"num_predict": 5, "seed": 7}));
        assert!(encode(&ChatRequest::new(vec![Message::user("q")])).get("options").is_none());
        let mut bad = Message::assistant("");
        bad.tool_calls = vec![ToolCall { id: "x".into(), name: "t".into(), arguments: "[1]".into() }];
        assert!(encode_chat(&ChatRequest::new(vec![bad]), "m", false, None, "o").is_err());
    }

    #[test]
    fn images_must_be_base64_and_tool_choice_none_drops_the_tools() {
        let mut m = Message::user("look");
        m.content.push(ContentPart::ImageUrl { url: "data:image/png;base64,AAAA".into() });
        assert_eq!(encode(&ChatRequest::new(vec![m]))["messages"][0]["images"], json!(["AAAA"]));
        for url in ["https://example.com/cat.png", "data:image/png,raw"] {
            let mut m = Message::user("look");
            m.content.push(ContentPart::ImageUrl { url: url.into() });
            let err = encode_chat(&ChatRequest::new(vec![m]), "m", false, None, "o").unwrap_err();
            assert!(err.to_string().contains("base64"), "{err}");
        }
        let tool = ToolDefinition { name: "t".into(), description: "d".into(), parameters: json!({"type": "object"}) };
        let request = ChatRequest::new(vec![Message::user("q")]).with_tool(tool);
        assert_eq!(encode(&request)["tools"][0]["function"]["name"], "t");
        assert!(encode(&request.with_tool_choice(ToolChoice::None)).get("tools").is_none());
    }

    #[test]
    fn constraints_become_format() {
        let json_mode = ChatRequest::new(vec![Message::user("q")]).with_constraint(Constraint::JsonObject);
        assert_eq!(encode(&json_mode)["format"], "json");
        let any = ChatRequest::new(vec![Message::user("q")]).with_constraint(Constraint::JsonSchema(json!(true)));
        assert_eq!(encode(&any)["format"], json!({}));
        let never = ChatRequest::new(vec![Message::user("q")]).with_constraint(Constraint::JsonSchema(json!(false)));
        assert!(matches!(encode_chat(&never, "m", false, None, "o"), Err(Error::InvalidInput(_))));
        let regex = ChatRequest::new(vec![Message::user("q")]).with_constraint(Constraint::Regex("a".into()));
        assert!(matches!(encode_chat(&regex, "m", false, None, "o"), Err(Error::Unsupported { .. })));
    }

    #[test]
    fn tool_calls_get_stable_ids_and_minified_arguments() {
        // From text: the arguments keep the server's key order.
        let calls: Vec<ObjectToolCall> = serde_json::from_str(
            r#"[{"function": {"name": "a", "arguments": {"z": 1, "a": "x y"}}},
                {"id": "call_given", "function": {"index": 1, "name": "b", "arguments": {}}},
                {"function": {"name": "c"}}]"#,
        )
        .unwrap();
        let out = tool_calls(calls, 0).unwrap();
        assert_eq!(out[0].arguments, "{\"z\":1,\"a\":\"x y\"}");
        assert!(out[0].id.starts_with("call_0_"), "{}", out[0].id);
        assert_eq!(out[1].id, "call_given");
        assert_eq!(out[2].arguments, "{}");
        assert_eq!(generated_id(0, "a", "{}"), generated_id(0, "a", "{}"));
        assert_ne!(generated_id(0, "a", "{}"), generated_id(1, "a", "{}"));
        let bad: Vec<ObjectToolCall> =
            serde_json::from_value(json!([{"function": {"name": "a", "arguments": "x"}}])).unwrap();
        assert!(tool_calls(bad, 0).is_err());
    }

    #[test]
    fn done_reasons_and_usage() {
        assert_eq!(finish_reason(Some("stop"), false), Some(FinishReason::Stop));
        assert_eq!(finish_reason(Some("stop"), true), Some(FinishReason::ToolCalls));
        assert_eq!(finish_reason(Some("length"), true), Some(FinishReason::Length));
        assert_eq!(finish_reason(Some("load"), false), Some(FinishReason::Other("load".into())));
        assert_eq!(finish_reason(None, false), None);
        let o: ChatObject =
            serde_json::from_value(json!({"done": true, "eval_count": u64::MAX, "prompt_eval_count": 3})).unwrap();
        assert_eq!(o.usage().unwrap().total_tokens, u64::MAX);
        let cached: ChatObject = serde_json::from_value(json!({"done": true, "eval_count": 4})).unwrap();
        assert_eq!(cached.usage().unwrap().input_tokens, 0);
        assert_eq!(serde_json::from_value::<ChatObject>(json!({"done": true})).unwrap().usage(), None);
    }

    #[test]
    fn error_bodies_and_hints() {
        let summary = error_summary(br#"{"error":"model \"llama9\" not found, try pulling it first"}"#).unwrap();
        assert_eq!(summary, "model \"llama9\" not found, try pulling it first");
        let err = in_body_error("ollama", &summary, br#"{"error":"model \"llama9\" not found, try pulling it first"}"#);
        // One hint: the status's, after Ollama's own message.
        assert_eq!(
            err.to_string(),
            "ollama returned HTTP 404: model \"llama9\" not found, try pulling it first (check the base URL and the \
             model name; a local server may need the model pulled first)"
        );
        let err = in_body_error("ollama", "unexpected EOF", br#"{"error":"unexpected EOF"}"#);
        assert_eq!(err.to_string(), "ollama returned HTTP 500: unexpected EOF (server error: retry later)");
        assert_eq!(error_summary(br#"{"error":{"message":"m"}}"#).unwrap(), "m");
        assert_eq!(error_summary(b"not json"), None);
        assert_eq!(error_summary(br#"{"model":"x"}"#), None);
    }
}
