//! The OpenAI chat-completions and embeddings wire format, and its translation to and from catena's data model.
//!
//! Request types borrow from the [`ChatRequest`] they encode; response types accept the variations seen in
//! OpenAI-compatible servers (`null` where OpenAI sends `[]`, tool-call arguments as a JSON object instead of a
//! string, missing `index`, content as an array of text parts).

use catena_core::{
    ChatChunk, ChatRequest, ChatResponse, Constraint, ContentPart, Error, FinishReason, Message, Result, Role,
    ToolCall, ToolCallDelta, ToolChoice, Usage,
};
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use catena_constraint::gbnf::{choice_to_gbnf, regex_to_gbnf, Gbnf};

use super::{ConstraintDialect, MaxTokensField, Quirks, RequiredToolChoice, SeedField};

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
    /// Mistral's name for the seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    random_seed: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<WireResponseFormat<'a>>,
    /// A GBNF grammar (llama.cpp servers).
    #[serde(skip_serializing_if = "Option::is_none")]
    grammar: Option<&'a str>,
    /// vLLM's structured-output parameters (regex, choice, grammar).
    #[serde(skip_serializing_if = "Option::is_none")]
    structured_outputs: Option<&'a StructuredOutputs>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// Encodes `request` for `model`. `stream_usage` asks for the final usage chunk (`stream_options`).
///
/// # Errors
/// [`Error::InvalidInput`] for messages the wire format cannot express (a tool result without a call id).
pub(crate) fn encode_chat<'a>(
    request: &'a ChatRequest,
    model: &'a str,
    quirks: &Quirks,
    constraint: Option<&'a EncodedConstraint>,
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
        ToolChoice::Required => WireToolChoice::Mode(match quirks.required_tool_choice {
            RequiredToolChoice::Required => "required",
            RequiredToolChoice::Any => "any",
        }),
        ToolChoice::Tool(name) => WireToolChoice::Named { kind: "function", function: WireToolName { name } },
    });
    let response_format = match constraint.and_then(|c| c.response_format.as_ref()) {
        Some(ConstraintFormat::Schema { name, schema, strict }) => {
            Some(WireResponseFormat::JsonSchema { json_schema: WireJsonSchema { name, schema, strict: *strict } })
        }
        Some(ConstraintFormat::AnyObject) => Some(WireResponseFormat::JsonObject { schema: None }),
        Some(ConstraintFormat::ObjectWithSchema(schema)) => {
            Some(WireResponseFormat::JsonObject { schema: Some(schema) })
        }
        None => None,
    };
    Ok(ChatCompletionRequest {
        model,
        messages,
        temperature: request.temperature,
        top_p: request.top_p,
        max_tokens,
        max_completion_tokens,
        stop: &request.stop,
        seed: request.seed.filter(|_| quirks.seed_field == SeedField::Seed),
        random_seed: request.seed.filter(|_| quirks.seed_field == SeedField::RandomSeed),
        tools,
        tool_choice,
        response_format,
        grammar: constraint.and_then(|c| c.grammar.as_deref()),
        structured_outputs: constraint.and_then(|c| c.structured_outputs.as_ref()),
        stream: stream.is_some(),
        stream_options: match stream {
            Some(StreamUsage::Requested) => Some(StreamOptions { include_usage: true }),
            Some(StreamUsage::NotRequested) | None => None,
        },
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Constraints
// ---------------------------------------------------------------------------------------------------------------

/// A [`Constraint`] in the form one server family takes, built by [`encode_constraint`] before the request is
/// encoded (the request borrows from it).
#[derive(Debug)]
pub(crate) struct EncodedConstraint {
    response_format: Option<ConstraintFormat>,
    grammar: Option<String>,
    structured_outputs: Option<StructuredOutputs>,
}

#[derive(Debug)]
enum ConstraintFormat {
    /// `response_format: {"type": "json_object"}` (JSON mode).
    AnyObject,
    /// `response_format: {"type": "json_schema", ...}`.
    Schema { name: String, schema: Value, strict: Option<bool> },
    /// `response_format: {"type": "json_object", "schema": ...}` (llama.cpp servers).
    ObjectWithSchema(Value),
}

/// vLLM's `structured_outputs` request object (vLLM >= 0.10.2); exactly one field is set.
#[derive(Debug, Default, Serialize)]
pub(crate) struct StructuredOutputs {
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    choice: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grammar: Option<String>,
}

impl EncodedConstraint {
    fn format(format: ConstraintFormat) -> Self {
        EncodedConstraint { response_format: Some(format), grammar: None, structured_outputs: None }
    }
    fn grammar(grammar: Gbnf) -> Self {
        EncodedConstraint { response_format: None, grammar: Some(grammar.into_string()), structured_outputs: None }
    }
    fn vllm(outputs: StructuredOutputs) -> Self {
        EncodedConstraint { response_format: None, grammar: None, structured_outputs: Some(outputs) }
    }
}

/// Checks `constraint` and writes it in `dialect`.
///
/// # Errors
/// [`Error::InvalidInput`] for an invalid constraint (schema, regex, empty choice, GBNF); [`Error::Unsupported`]
/// when `dialect` cannot express this kind (capabilities were overridden to allow it) or, for llama.cpp, a regex
/// outside the subset [`regex_to_gbnf`] converts exactly.
pub(crate) fn encode_constraint(
    constraint: &Constraint,
    dialect: ConstraintDialect,
    backend: &str,
) -> Result<EncodedConstraint> {
    // Checks that need no grammar engine: the schema compiles, the regex parses, the choice is not empty.
    if matches!(constraint, Constraint::JsonSchema(_) | Constraint::Regex(_) | Constraint::Choice(_)) {
        catena_constraint::Validator::new(constraint)?;
    }
    let unsupported = || {
        Err(Error::unsupported(
            backend,
            format!("{} constraints on the wire ({dialect:?} dialect)", constraint.kind()),
            "use catena_core::structured's validate-and-repair fallback, or set Quirks::constraint_dialect to a \
             dialect this server speaks",
        ))
    };
    match (dialect, constraint) {
        (ConstraintDialect::Unsupported, _) => unsupported(),
        (_, Constraint::JsonObject) => Ok(EncodedConstraint::format(ConstraintFormat::AnyObject)),
        (ConstraintDialect::OpenAi, Constraint::JsonSchema(schema)) => {
            let name = schema_name(schema);
            Ok(EncodedConstraint::format(match openai_strict_schema(schema) {
                Ok(strict) => ConstraintFormat::Schema { name, schema: strict, strict: Some(true) },
                Err(why) => {
                    tracing::warn!(reason = %why, "JSON Schema sent with strict: false: the server will not enforce it fully");
                    ConstraintFormat::Schema { name, schema: schema.clone(), strict: Some(false) }
                }
            }))
        }
        (ConstraintDialect::Vllm | ConstraintDialect::Ollama, Constraint::JsonSchema(schema)) => {
            Ok(EncodedConstraint::format(ConstraintFormat::Schema {
                name: schema_name(schema),
                schema: schema.clone(),
                strict: None,
            }))
        }
        (ConstraintDialect::LlamaCpp, Constraint::JsonSchema(schema)) => {
            Ok(EncodedConstraint::format(ConstraintFormat::ObjectWithSchema(schema.clone())))
        }
        (ConstraintDialect::Vllm, Constraint::Regex(rx)) => {
            Ok(EncodedConstraint::vllm(StructuredOutputs { regex: Some(rx.clone()), ..Default::default() }))
        }
        (ConstraintDialect::Vllm, Constraint::Choice(options)) => {
            Ok(EncodedConstraint::vllm(StructuredOutputs { choice: Some(options.clone()), ..Default::default() }))
        }
        (ConstraintDialect::Vllm, Constraint::Gbnf(text)) => {
            let checked = Gbnf::parse(text.as_str())?;
            Ok(EncodedConstraint::vllm(StructuredOutputs {
                grammar: Some(checked.into_string()),
                ..Default::default()
            }))
        }
        (ConstraintDialect::Vllm, Constraint::Grammar(lark)) => {
            Ok(EncodedConstraint::vllm(StructuredOutputs { grammar: Some(lark.clone()), ..Default::default() }))
        }
        (ConstraintDialect::LlamaCpp, Constraint::Gbnf(text)) => {
            Ok(EncodedConstraint::grammar(Gbnf::parse(text.as_str())?))
        }
        (ConstraintDialect::LlamaCpp, Constraint::Choice(options)) => {
            Ok(EncodedConstraint::grammar(choice_to_gbnf(options)?))
        }
        (ConstraintDialect::LlamaCpp, Constraint::Regex(rx)) => match regex_to_gbnf(rx) {
            Ok(grammar) => Ok(EncodedConstraint::grammar(grammar)),
            Err(Error::Unsupported { capability, hint, .. }) => Err(Error::unsupported(backend, capability, hint)),
            Err(e) => Err(e),
        },
        _ => unsupported(),
    }
}

/// The `name` OpenAI requires next to a schema (`^[A-Za-z0-9_-]{1,64}$`): the schema's `title` with other
/// characters replaced by `_`, else `response`.
fn schema_name(schema: &Value) -> String {
    let title = schema.get("title").and_then(Value::as_str).unwrap_or_default();
    let name: String = title
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .take(64)
        .collect();
    if name.is_empty() {
        "response".to_string()
    } else {
        name
    }
}

/// Formats OpenAI's strict mode knows; other `format` values (schemars' `uint32`, `double`, ...) are annotations
/// it rejects, and are dropped.
const OPENAI_FORMATS: &[&str] = &["date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"];

/// Rewrites a JSON Schema into the subset OpenAI's strict structured outputs accept, meant so that every value the
/// rewrite accepts is also accepted by `schema` (see [`ConstraintDialect::OpenAi`](super::ConstraintDialect::OpenAi)
/// for the rules). Two rewrites can widen it: `format` values strict mode does not know are dropped, and `oneOf`
/// branches that differ only in number spelling (`1` vs `1.0`) count as distinct; the structured driver's final
/// validation against the original schema catches such answers (a repair round, not a wrong value).
///
/// ```
/// use catena_providers::openai::openai_strict_schema;
/// use serde_json::json;
///
/// let schema = json!({
///     "title": "City",
///     "type": "object",
///     "properties": {"name": {"type": "string"}, "population": {"type": ["integer", "null"], "format": "uint64"}},
///     "required": ["name"]
/// });
/// let strict = openai_strict_schema(&schema).unwrap();
/// assert_eq!(strict["required"], json!(["name", "population"]));
/// assert_eq!(strict["additionalProperties"], json!(false));
/// assert!(strict["properties"]["population"].get("format").is_none());
///
/// // A map has no strict form.
/// let map = json!({"type": "object", "additionalProperties": {"type": "integer"}});
/// assert!(openai_strict_schema(&map).unwrap_err().contains("a map"));
/// ```
///
/// # Errors
/// Why the schema has no strict form that accepts only values the original accepts.
pub fn openai_strict_schema(schema: &Value) -> std::result::Result<Value, String> {
    let out = strict_node(schema, "#")?;
    let is_object = out.get("type").and_then(Value::as_str) == Some("object") && out.get("properties").is_some();
    if !is_object {
        return Err("the root of a strict schema must be an object with `properties` (`\"type\": \"object\"`)".into());
    }
    Ok(out)
}

fn strict_node(node: &Value, at: &str) -> std::result::Result<Value, String> {
    let Value::Object(map) = node else {
        return Err(format!("{at}: the boolean schema `{node}` has no strict form"));
    };
    if map.contains_key("$ref") {
        // Only annotations may sit next to a reference; they are dropped.
        if let Some(k) = map.keys().find(|k| !matches!(k.as_str(), "$ref" | "title" | "description" | "$comment")) {
            return Err(format!("{at}: `{k}` next to `$ref`"));
        }
        let target = map["$ref"].as_str().unwrap_or_default();
        if !(target == "#" || target.starts_with("#/$defs/") || target.starts_with("#/definitions/")) {
            return Err(format!("{at}: `$ref` to `{target}` (only local definitions are allowed)"));
        }
        return Ok(Value::Object(Map::from_iter([("$ref".to_string(), Value::String(target.to_string()))])));
    }
    let mut out = Map::new();
    for (key, value) in map {
        let here = format!("{at}/{key}");
        match key.as_str() {
            "$schema" | "$comment" | "default" | "examples" | "deprecated" | "readOnly" | "writeOnly" => {}
            "title" | "description" | "type" | "enum" | "const" | "pattern" | "minimum" | "maximum"
            | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf" | "minItems" | "maxItems" => {
                out.insert(key.clone(), value.clone());
            }
            "format" => {
                if value.as_str().is_some_and(|f| OPENAI_FORMATS.contains(&f)) {
                    out.insert(key.clone(), value.clone());
                }
            }
            "properties" | "$defs" | "definitions" => {
                let Value::Object(children) = value else { return Err(format!("{here} is not an object")) };
                let mut converted = Map::new();
                for (name, child) in children {
                    converted.insert(name.clone(), strict_node(child, &format!("{here}/{name}"))?);
                }
                out.insert(key.clone(), Value::Object(converted));
            }
            "items" => {
                if !value.is_object() {
                    return Err(format!("{here}: tuple `items` (an array or boolean) has no strict form"));
                }
                out.insert(key.clone(), strict_node(value, &here)?);
            }
            "anyOf" => {
                out.insert(key.clone(), strict_branches(value, &here)?);
            }
            "oneOf" => {
                // `oneOf` is `anyOf` when no value can match two branches: branches that are distinct constants.
                if !distinct_literal_branches(value) {
                    return Err(format!("{here}: `oneOf` whose branches may overlap"));
                }
                out.insert("anyOf".to_string(), strict_branches(value, &here)?);
            }
            "required" | "additionalProperties" => {}
            other => return Err(format!("{at}: `{other}` is not supported by OpenAI's strict mode")),
        }
    }
    if !["type", "anyOf", "enum", "const"].iter().any(|k| out.contains_key(*k)) {
        return Err(format!("{at}: a schema without `type`, `anyOf`, `enum` or `const` accepts any value"));
    }
    let mentions_object = match map.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => false,
    };
    if let Some(Value::Object(properties)) = map.get("properties") {
        match map.get("additionalProperties") {
            None | Some(Value::Bool(false)) => {}
            Some(other) => return Err(format!("{at}: `additionalProperties: {other}` (an open object or a map)")),
        }
        if let Some(Value::Array(required)) = map.get("required") {
            if let Some(missing) = required.iter().find(|r| !r.as_str().is_some_and(|r| properties.contains_key(r))) {
                return Err(format!("{at}: required property {missing} is not among `properties`"));
            }
        }
        out.insert("required".into(), Value::Array(properties.keys().cloned().map(Value::String).collect()));
        out.insert("additionalProperties".into(), Value::Bool(false));
    } else if mentions_object || map.contains_key("additionalProperties") {
        return Err(format!("{at}: an object without `properties` (a map or any object) has no strict form"));
    }
    Ok(Value::Object(out))
}

fn strict_branches(value: &Value, at: &str) -> std::result::Result<Value, String> {
    let Value::Array(branches) = value else { return Err(format!("{at} is not an array")) };
    let converted = branches
        .iter()
        .enumerate()
        .map(|(i, b)| strict_node(b, &format!("{at}/{i}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Value::Array(converted))
}

/// Whether every branch only allows constants (`const` or `enum`, plus `type` and annotations) and no constant
/// appears in two branches.
fn distinct_literal_branches(value: &Value) -> bool {
    let Value::Array(branches) = value else { return false };
    let mut seen: Vec<&Value> = Vec::new();
    for branch in branches {
        let Value::Object(map) = branch else { return false };
        if map.keys().any(|k| !matches!(k.as_str(), "const" | "enum" | "type" | "title" | "description")) {
            return false;
        }
        let literals: Vec<&Value> = match (map.get("const"), map.get("enum")) {
            (Some(c), None) => vec![c],
            (None, Some(Value::Array(e))) => e.iter().collect(),
            _ => return false,
        };
        for literal in literals {
            if seen.contains(&literal) {
                return false;
            }
            seen.push(literal);
        }
    }
    true
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
    /// OpenAI's (and vLLM's) prompt-cache report.
    #[serde(default)]
    prompt_tokens_details: Option<WirePromptDetails>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct WirePromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Usage {
        Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            total_tokens: u.total_tokens.unwrap_or(u.prompt_tokens + u.completion_tokens),
            cached_input_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
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
    Chunk(Box<ChatChunk>),
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
    Ok(StreamEvent::Chunk(Box::new(out)))
}

#[derive(Debug, Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingData>,
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
    Ok(Embeddings { vectors, input_tokens: response.usage.map(|u| u.prompt_tokens) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Compat;
    use catena_core::ToolDefinition;
    use serde_json::json;

    fn encode(req: &ChatRequest, quirks: &Quirks, stream: Option<StreamUsage>) -> Value {
        let constraint =
            req.constraint.as_ref().map(|c| encode_constraint(c, quirks.constraint_dialect, "test").unwrap());
        // Through bytes, as on the wire: f32 fields must print as written (0.9, not 0.8999999761581421).
        let bytes = serde_json::to_vec(&encode_chat(req, "m", quirks, constraint.as_ref(), stream).unwrap()).unwrap();
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
            .with_constraint(Constraint::JsonSchema(json!({"title": "answer", "type": "object",
                "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": false})));
        let quirks = Compat::OpenAi.quirks();
        let body = encode(&req, &quirks, Some(StreamUsage::Requested));
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
                    "name": "answer", "schema": {"title": "answer", "type": "object",
                    "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": false},
                    "strict": true}},
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
        let openai = encode(&req, &Compat::OpenAi.quirks(), None);
        assert_eq!(openai["messages"][0]["content"], Value::Null);
        assert_eq!(openai["messages"][0]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(openai["messages"][1], json!({"role": "tool", "content": "sunny", "tool_call_id": "call_1"}));
        let llama = encode(&req, &Compat::LlamaCpp.quirks(), None);
        assert_eq!(llama["messages"][0]["content"], "");
        assert_eq!(llama.get("max_completion_tokens"), None);
    }

    #[test]
    fn image_parts_become_an_array() {
        let mut m = Message::user("what is this?");
        m.content.push(ContentPart::ImageUrl { url: "data:image/png;base64,AAAA".into() });
        let body = encode(&ChatRequest::new(vec![m]), &Compat::Generic.quirks(), None);
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
        let body = encode(&ChatRequest::new(vec![m]), &Compat::OpenAi.quirks(), None);
        assert_eq!(body["messages"][0], json!({"role": "user", "content": "abc"}));
    }

    #[test]
    fn each_dialect_puts_a_constraint_where_its_servers_read_it() {
        let req = ChatRequest::new(vec![Message::user("hi")]);
        let gbnf = req.clone().with_constraint(Constraint::Gbnf("root ::= [0-9]+".into()));
        assert_eq!(encode(&gbnf, &Compat::LlamaCpp.quirks(), None)["grammar"], "root ::= [0-9]+");
        let vllm = encode(&gbnf, &Compat::Vllm.quirks(), None);
        assert_eq!((vllm.get("grammar"), &vllm["structured_outputs"]["grammar"]), (None, &json!("root ::= [0-9]+")));
        assert_eq!(encode(&req, &Compat::LlamaCpp.quirks(), None).get("grammar"), None);
        let schema = req.clone().with_constraint(Constraint::JsonSchema(json!({"type": "object"})));
        let body = encode(&schema, &Compat::LlamaCpp.quirks(), None);
        assert_eq!(body["response_format"], json!({"type": "json_object", "schema": {"type": "object"}}));
        for compat in [Compat::OpenAi, Compat::Vllm, Compat::Ollama, Compat::LlamaCpp, Compat::Generic] {
            let body = encode(&req.clone().with_constraint(Constraint::JsonObject), &compat.quirks(), None);
            assert_eq!(body["response_format"], json!({"type": "json_object"}), "{compat}");
        }
        let refused = encode_constraint(&Constraint::JsonObject, ConstraintDialect::Unsupported, "x").unwrap_err();
        assert!(matches!(refused, Error::Unsupported { .. }));
        let refused = encode_constraint(&Constraint::Regex("a".into()), ConstraintDialect::JsonMode, "x").unwrap_err();
        assert!(matches!(refused, Error::Unsupported { .. }));
    }

    #[test]
    fn strict_schema_refuses_what_it_cannot_rewrite_soundly() {
        let refuse = |schema: Value| openai_strict_schema(&schema).unwrap_err();
        assert!(refuse(json!({"type": "string"})).contains("root"));
        assert!(refuse(json!({"type": "object", "properties": {"any": {"description": "x"}}})).contains("any value"));
        assert!(refuse(
            json!({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}})
        )
        .contains("oneOf"));
        assert!(refuse(json!({"type": "object", "properties": {"a": {"type": "string", "minLength": 2}}}))
            .contains("minLength"));
        assert!(refuse(json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}))
            .contains("\"b\""));
        let ok =
            openai_strict_schema(&json!({"type": "object", "properties": {"t": {"type": "string", "format": "date"}}}))
                .unwrap();
        assert_eq!(ok["properties"]["t"], json!({"type": "string", "format": "date"}));
    }

    #[test]
    fn tool_message_without_id_is_rejected() {
        let mut m = Message::tool_result("x", "y");
        m.tool_call_id = None;
        let err = encode_chat(&ChatRequest::new(vec![m]), "m", &Compat::Generic.quirks(), None, None).unwrap_err();
        assert!(err.to_string().contains("Message::tool_result"), "{err}");
    }

    #[test]
    fn lenient_response_decoding() {
        let body = br#"{"model":"x","choices":[{"index":0,"message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":{"a":1}}}]},
            "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        let r = decode_chat("p", body).unwrap();
        assert_eq!(r.text(), "");
        assert_eq!(r.message.tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(
            r.usage,
            Some(Usage { input_tokens: 3, output_tokens: 4, total_tokens: 7, cached_input_tokens: None })
        );
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
