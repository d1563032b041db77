//! The Gemini API wire format (`generateContent`, `streamGenerateContent`, `embedContent`,
//! `batchEmbedContents`): request bodies, the JSON Schema conversion, response fragments (every streamed event is
//! a whole `GenerateContentResponse`, so `chat` and streams decode with the same code), error bodies.

use catena_core::{
    ChatRequest, Constraint, ContentPart, Error, FinishReason, Message, Result, Role, ToolCall, ToolChoice, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Separates a tool call's id from the thought signature kept with it (see [`super::thought_signature`]).
pub(crate) const SIGNATURE_SEPARATOR: &str = "#ts=";

/// The prefix of the ids this client makes up for function calls the server gave no id (`gemini-call-0`, ...).
/// Such ids are never sent back.
pub(crate) const SYNTHETIC_ID_PREFIX: &str = "gemini-call-";

/// How deep a JSON Schema may nest (references included) before it is taken for a recursive one.
const MAX_SCHEMA_DEPTH: usize = 48;

// ------------------------------------------------------------------------------------------------------------
// Request
// ------------------------------------------------------------------------------------------------------------

/// The body of `:generateContent` and `:streamGenerateContent`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateContentRequest {
    contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig>,
    generation_config: GenerationConfig,
}

#[derive(Debug, Serialize)]
struct Content {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Part>,
}

/// One part: exactly one of its data fields is set, plus (for function calls) the thought signature.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inline_data: Option<Blob>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_data: Option<FileData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_response: Option<FunctionResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Blob {
    mime_type: String,
    data: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileData {
    mime_type: String,
    file_uri: String,
}

#[derive(Debug, Serialize)]
struct FunctionCall {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    name: String,
    args: Value,
}

#[derive(Debug, Serialize)]
struct FunctionResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    name: String,
    response: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Tool {
    function_declarations: Vec<FunctionDeclaration>,
}

#[derive(Debug, Serialize)]
struct FunctionDeclaration {
    name: String,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    function_calling_config: FunctionCallingConfig,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig {
    mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_function_names: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    candidate_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
}

/// The id and the thought signature a [`ToolCall::id`] carries (see [`super::thought_signature`]).
pub(crate) fn split_call_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once(SIGNATURE_SEPARATOR) {
        Some((id, signature)) if !signature.is_empty() => (id, Some(signature)),
        Some((id, _)) => (id, None),
        None => (id, None),
    }
}

/// The id sent back to the server for a call: none for the ids this client made up.
fn wire_id(id: &str) -> Option<String> {
    let (id, _) = split_call_id(id);
    (!id.is_empty() && !id.starts_with(SYNTHETIC_ID_PREFIX)).then(|| id.to_string())
}

/// The [`ToolCall::id`] for the `index`-th function call of an answer.
pub(crate) fn call_id(server_id: Option<&str>, index: usize, signature: Option<&str>) -> String {
    let mut id = match server_id.filter(|id| !id.is_empty()) {
        Some(id) => id.to_string(),
        None => format!("{SYNTHETIC_ID_PREFIX}{index}"),
    };
    if let Some(signature) = signature.filter(|s| !s.is_empty()) {
        id.push_str(SIGNATURE_SEPARATOR);
        id.push_str(signature);
    }
    id
}

/// Encodes a checked request for `backend` (named in errors).
pub(crate) fn encode_request(request: &ChatRequest, backend: &str) -> Result<GenerateContentRequest> {
    let mut system: Vec<Part> = Vec::new();
    let mut contents: Vec<Content> = Vec::new();
    // Consecutive tool results go in one user turn.
    let mut responses: Vec<Part> = Vec::new();
    let flush = |responses: &mut Vec<Part>, contents: &mut Vec<Content>| {
        if !responses.is_empty() {
            contents.push(Content { role: Some("user"), parts: std::mem::take(responses) });
        }
    };
    for (i, m) in request.messages.iter().enumerate() {
        match m.role {
            Role::System => {
                if m.content.iter().any(|p| matches!(p, ContentPart::ImageUrl { .. })) {
                    return Err(Error::InvalidInput(format!(
                        "message {i} is a system message with an image; Gemini's systemInstruction is text only: \
                         move the image to a user message"
                    )));
                }
                system.push(Part { text: Some(m.text()), ..Part::default() });
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "message {i} is a tool result without `tool_call_id`; build it with Message::tool_result"
                    ))
                })?;
                let name = called_name(&request.messages[..i], id).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "message {i} answers tool call `{}`, which no earlier assistant message made; Gemini needs \
                         the function's name, which it takes from that call",
                        split_call_id(id).0
                    ))
                })?;
                responses.push(Part {
                    function_response: Some(FunctionResponse {
                        id: wire_id(id),
                        name: name.to_string(),
                        response: tool_output(&m.text()),
                    }),
                    ..Part::default()
                });
            }
            Role::User => {
                flush(&mut responses, &mut contents);
                contents.push(Content { role: Some("user"), parts: encode_parts(m, i)? });
            }
            Role::Assistant => {
                flush(&mut responses, &mut contents);
                contents.push(Content { role: Some("model"), parts: encode_assistant(m, i)? });
            }
        }
    }
    flush(&mut responses, &mut contents);
    if contents.is_empty() {
        return Err(Error::InvalidInput(
            "the request has no user or assistant message; Gemini needs at least one turn in `contents`".into(),
        ));
    }
    let tools = if request.tools.is_empty() {
        Vec::new()
    } else {
        let declarations = request
            .tools
            .iter()
            .map(|t| {
                Ok(FunctionDeclaration {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    parameters: tool_parameters(&t.parameters, &t.name)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        vec![Tool { function_declarations: declarations }]
    };
    let tool_config = request.tool_choice.as_ref().map(|choice| {
        let (mode, allowed) = match choice {
            ToolChoice::Auto => ("AUTO", Vec::new()),
            ToolChoice::None => ("NONE", Vec::new()),
            ToolChoice::Required => ("ANY", Vec::new()),
            ToolChoice::Tool(name) => ("ANY", vec![name.clone()]),
        };
        ToolConfig { function_calling_config: FunctionCallingConfig { mode, allowed_function_names: allowed } }
    });
    let seed = match request.seed {
        None => None,
        Some(seed) => Some(i32::try_from(seed).map_err(|_| {
            Error::InvalidInput(format!(
                "the seed {seed} does not fit Gemini's 32-bit `seed`; pass a seed below 2147483648"
            ))
        })?),
    };
    let (response_mime_type, response_schema) = match &request.constraint {
        None => (None, None),
        Some(Constraint::JsonObject) => (Some("application/json"), None),
        Some(Constraint::JsonSchema(schema)) => {
            (Some("application/json"), Some(to_gemini_schema(schema, "the JSON Schema constraint")?))
        }
        Some(other) => {
            return Err(Error::unsupported(
                backend,
                format!("{} constraints", other.kind()),
                "use catena_constraint::structured (validate-and-repair)",
            ))
        }
    };
    Ok(GenerateContentRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(Content { role: None, parts: system }),
        tools,
        tool_config,
        generation_config: GenerationConfig {
            candidate_count: 1,
            temperature: request.temperature,
            top_p: request.top_p,
            max_output_tokens: request.max_tokens,
            stop_sequences: request.stop.clone(),
            seed,
            response_mime_type,
            response_schema,
        },
    })
}

/// The name of the call `id` answers: the nearest earlier assistant message's call with that id.
fn called_name<'a>(earlier: &'a [Message], id: &str) -> Option<&'a str> {
    earlier
        .iter()
        .rev()
        .filter(|m| m.role == Role::Assistant)
        .flat_map(|m| m.tool_calls.iter())
        .find(|call| call.id == id || split_call_id(&call.id).0 == split_call_id(id).0)
        .map(|call| call.name.as_str())
}

/// A tool's output as a `functionResponse.response` object: a JSON object is sent as it is, anything else as
/// `{"output": <text>}` (the key Gemini documents for a function's output).
fn tool_output(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => json!({ "output": text }),
    }
}

/// A tool's `parameters`: the converted schema, or none for a tool without arguments (Gemini rejects an object
/// schema without properties).
fn tool_parameters(schema: &Value, name: &str) -> Result<Option<Value>> {
    let converted = to_gemini_schema(schema, &format!("the parameters of tool `{name}`"))?;
    let empty_object = converted.get("properties").and_then(Value::as_object).is_none_or(Map::is_empty)
        && converted.get("type").is_none_or(|t| t == "object")
        && converted.get("anyOf").is_none();
    Ok((!empty_object).then_some(converted))
}

/// User content: text parts, and images as `inlineData` (data URLs) or `fileData` (`https://` and `gs://` URIs).
fn encode_parts(m: &Message, i: usize) -> Result<Vec<Part>> {
    m.content
        .iter()
        .map(|part| match part {
            ContentPart::Text { text } => Ok(Part { text: Some(text.clone()), ..Part::default() }),
            ContentPart::ImageUrl { url } => image_part(url, i),
        })
        .collect()
}

fn image_part(url: &str, i: usize) -> Result<Part> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').unwrap_or((rest, ""));
        let mime_type = meta.strip_suffix(";base64").filter(|t| !t.is_empty() && !t.contains(';'));
        return match mime_type {
            Some(mime_type) if !data.is_empty() => Ok(Part {
                inline_data: Some(Blob { mime_type: mime_type.to_string(), data: data.to_string() }),
                ..Part::default()
            }),
            _ => Err(Error::InvalidInput(format!(
                "message {i} has an image data URL that is not `data:<media type>;base64,<data>`; Gemini takes \
                 base64 inline data only"
            ))),
        };
    }
    if url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://") {
        let path = url.split(['?', '#']).next().unwrap_or(url).to_ascii_lowercase();
        let extension = path.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
        let mime_type = match extension {
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "webp" => "image/webp",
            "gif" => "image/gif",
            "heic" => "image/heic",
            "heif" => "image/heif",
            _ => {
                return Err(Error::InvalidInput(format!(
                    "message {i} has an image URL whose type cannot be told from its extension; Gemini's fileData \
                     needs a MIME type: use a .png/.jpg/.webp/.gif/.heic URL or a base64 data URL"
                )))
            }
        };
        return Ok(Part {
            file_data: Some(FileData { mime_type: mime_type.to_string(), file_uri: url.to_string() }),
            ..Part::default()
        });
    }
    let shown: String = url.chars().take(40).collect();
    Err(Error::InvalidInput(format!(
        "message {i} has an image URL `{shown}` that is neither a data: URL nor an https:// or gs:// URI"
    )))
}

/// Model content: text parts, then one `functionCall` part per tool call, with its thought signature.
fn encode_assistant(m: &Message, i: usize) -> Result<Vec<Part>> {
    let mut parts: Vec<Part> =
        encode_parts(m, i)?.into_iter().filter(|p| p.text.as_deref() != Some("") || m.tool_calls.is_empty()).collect();
    // A signature that came on the answer's text goes back on its (first) text part.
    if let Some(signature) = m.reasoning.iter().find_map(|r| r.signature.as_ref()) {
        if let Some(part) = parts.iter_mut().find(|p| p.text.as_deref().is_some_and(|t| !t.is_empty())) {
            part.thought_signature = Some(signature.clone());
        }
    }
    for call in &m.tool_calls {
        let arguments = if call.arguments.trim().is_empty() { "{}" } else { call.arguments.as_str() };
        let args = match serde_json::from_str::<Value>(arguments) {
            Ok(args @ Value::Object(_)) => args,
            _ => {
                return Err(Error::InvalidInput(format!(
                    "message {i}: the arguments of tool call `{}` ({}) are not a JSON object, which Gemini's \
                     `functionCall.args` must be",
                    call.name,
                    split_call_id(&call.id).0
                )))
            }
        };
        let (_, signature) = split_call_id(&call.id);
        parts.push(Part {
            function_call: Some(FunctionCall { id: wire_id(&call.id), name: call.name.clone(), args }),
            thought_signature: signature.map(str::to_string),
            ..Part::default()
        });
    }
    Ok(parts)
}

// ------------------------------------------------------------------------------------------------------------
// JSON Schema -> Gemini Schema
// ------------------------------------------------------------------------------------------------------------

/// Converts a JSON Schema to the subset Gemini's `Schema` object takes (see the module documentation).
pub(crate) fn to_gemini_schema(schema: &Value, what: &str) -> Result<Value> {
    convert_schema(schema, schema, 0, what)
}

fn schema_error(what: &str, problem: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("{what}: {problem}"))
}

fn resolve_ref<'a>(reference: &str, root: &'a Value, what: &str) -> Result<&'a Value> {
    let unsupported = || {
        schema_error(
            what,
            format!(
                "the reference `{reference}` cannot be resolved; only `#`, `#/$defs/<name>` and \
                 `#/definitions/<name>` are"
            ),
        )
    };
    let Some(pointer) = reference.strip_prefix('#') else { return Err(unsupported()) };
    root.pointer(pointer).ok_or_else(unsupported)
}

fn convert_schema(schema: &Value, root: &Value, depth: usize, what: &str) -> Result<Value> {
    if depth > MAX_SCHEMA_DEPTH {
        return Err(schema_error(
            what,
            format!(
                "it nests deeper than {MAX_SCHEMA_DEPTH} levels or refers to itself; Gemini's schemas have no \
                 references, so recursive schemas cannot be sent"
            ),
        ));
    }
    let map = match schema {
        Value::Bool(true) => return Ok(json!({})),
        Value::Bool(false) => return Err(schema_error(what, "the schema `false` accepts no value")),
        Value::Object(map) => map,
        other => {
            return Err(schema_error(
                what,
                format!(
                    "a JSON Schema must be an object or a boolean, not {}",
                    catena_core::error::json_type_name(other)
                ),
            ))
        }
    };
    if let Some(reference) = map.get("$ref") {
        let reference = reference.as_str().ok_or_else(|| schema_error(what, "a `$ref` is not a string"))?;
        let mut resolved = convert_schema(resolve_ref(reference, root, what)?, root, depth + 1, what)?;
        // Annotations next to a reference describe this use of it.
        if let Value::Object(out) = &mut resolved {
            for key in ["description", "title"] {
                if let Some(value @ Value::String(_)) = map.get(key) {
                    out.insert(key.to_string(), value.clone());
                }
            }
        }
        return Ok(resolved);
    }
    let mut out = Map::new();
    match map.get("type") {
        Some(Value::String(t)) => {
            out.insert("type".into(), json!(t));
        }
        Some(Value::Array(types)) => {
            let names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
            let non_null: Vec<&str> = names.iter().copied().filter(|t| *t != "null").collect();
            let nullable = non_null.len() < names.len();
            match non_null.as_slice() {
                [] => {
                    out.insert("type".into(), json!("null"));
                }
                [one] => {
                    out.insert("type".into(), json!(one));
                }
                several => {
                    // Each type with the schema's other keywords, as alternatives.
                    let variants = several
                        .iter()
                        .map(|t| {
                            let mut single = map.clone();
                            single.insert("type".into(), json!(t));
                            convert_schema(&Value::Object(single), root, depth + 1, what)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let mut alternatives = Map::new();
                    alternatives.insert("anyOf".into(), Value::Array(variants));
                    if nullable {
                        alternatives.insert("nullable".into(), json!(true));
                    }
                    return Ok(Value::Object(alternatives));
                }
            }
            if nullable {
                out.insert("nullable".into(), json!(true));
            }
        }
        _ => {}
    }
    for (key, value) in map {
        match key.as_str() {
            "description" | "title" | "pattern" if value.is_string() => {
                out.insert(key.clone(), value.clone());
            }
            "format" => {
                if matches!(value.as_str(), Some("date-time" | "enum" | "int32" | "int64" | "float" | "double")) {
                    out.insert(key.clone(), value.clone());
                }
            }
            "nullable" if value.is_boolean() => {
                out.insert(key.clone(), value.clone());
            }
            "enum" => {
                if let Some(values) = value.as_array().filter(|v| v.iter().all(Value::is_string)) {
                    out.insert("enum".into(), Value::Array(values.clone()));
                }
            }
            "const" if value.is_string() => {
                out.insert("enum".into(), json!([value]));
            }
            "minItems" | "maxItems" | "minProperties" | "maxProperties" | "minLength" | "maxLength" | "minimum"
            | "maximum"
                if value.is_number() =>
            {
                out.insert(key.clone(), value.clone());
            }
            "default" | "example" => {
                out.insert(key.clone(), value.clone());
            }
            "examples" => {
                if let Some(first) = value.as_array().and_then(|v| v.first()) {
                    out.entry("example").or_insert_with(|| first.clone());
                }
            }
            "required" => {
                if let Some(names) = value.as_array().filter(|v| v.iter().all(Value::is_string)) {
                    out.insert(key.clone(), Value::Array(names.clone()));
                }
            }
            "properties" => {
                let Some(properties) = value.as_object() else { continue };
                let mut converted = Map::new();
                for (name, property) in properties {
                    converted.insert(name.clone(), convert_schema(property, root, depth + 1, what)?);
                }
                out.insert("properties".into(), Value::Object(converted));
            }
            "items" if value.is_object() || value.is_boolean() => {
                out.insert("items".into(), convert_schema(value, root, depth + 1, what)?);
            }
            "anyOf" | "oneOf" => {
                let Some(variants) = value.as_array() else { continue };
                let mut converted = Vec::new();
                for variant in variants {
                    if variant.get("type").and_then(Value::as_str) == Some("null")
                        && variant.as_object().map(Map::len) == Some(1)
                    {
                        out.insert("nullable".into(), json!(true));
                    } else {
                        converted.push(convert_schema(variant, root, depth + 1, what)?);
                    }
                }
                match converted.len() {
                    0 => {}
                    // `anyOf: [X, {"type": "null"}]` is a nullable X.
                    1 => {
                        if let Some(Value::Object(only)) = converted.pop() {
                            for (k, v) in only {
                                out.entry(k).or_insert(v);
                            }
                        }
                    }
                    _ => {
                        out.insert("anyOf".into(), Value::Array(converted));
                    }
                }
            }
            "allOf" => {
                let Some(parts) = value.as_array() else { continue };
                for part in parts {
                    let Value::Object(converted) = convert_schema(part, root, depth + 1, what)? else { continue };
                    for (k, v) in converted {
                        match (k.as_str(), out.get_mut(&k)) {
                            ("properties", Some(Value::Object(mine))) => {
                                if let Value::Object(theirs) = v {
                                    mine.extend(theirs);
                                }
                            }
                            ("required", Some(Value::Array(mine))) => {
                                if let Value::Array(theirs) = v {
                                    mine.extend(theirs);
                                }
                            }
                            (_, Some(_)) => {}
                            (_, None) => {
                                out.insert(k, v);
                            }
                        }
                    }
                }
            }
            // `$schema`, `$id`, `$defs`, `definitions`, `additionalProperties`, `uniqueItems`, `multipleOf`,
            // `exclusiveMinimum`, `not`, `if`/`then`/`else`, ...: not in Gemini's Schema, dropped.
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

// ------------------------------------------------------------------------------------------------------------
// Response
// ------------------------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    #[serde(default)]
    candidates: Option<Vec<Candidate>>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Option<Vec<WirePart>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<WireFunctionCall>,
    #[serde(default)]
    thought_signature: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireFunctionCall {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
    #[serde(default)]
    block_reason_message: Option<String>,
    #[serde(default)]
    safety_ratings: Option<Value>,
}

/// `usageMetadata`; every count may be missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
    #[serde(default)]
    tool_use_prompt_token_count: Option<u64>,
    #[serde(default)]
    total_token_count: Option<u64>,
}

impl UsageMetadata {
    /// catena's counts: input = prompt + tool-use prompt tokens (cached ones included, as Gemini counts them),
    /// output = candidates + thoughts (thinking is generated, and billed, as output), total as Gemini reports
    /// it (the sum when it does not), cached input = `cachedContentTokenCount`.
    pub(crate) fn to_usage(self) -> Usage {
        let input = self.prompt_token_count.unwrap_or(0).saturating_add(self.tool_use_prompt_token_count.unwrap_or(0));
        let output = self.candidates_token_count.unwrap_or(0).saturating_add(self.thoughts_token_count.unwrap_or(0));
        Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: self.total_token_count.unwrap_or_else(|| input.saturating_add(output)),
            cached_input_tokens: self.cached_content_token_count,
        }
    }
}

/// A function call of an answer, as decoded from one part.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DecodedCall {
    pub(crate) id: Option<String>,
    pub(crate) name: String,
    /// The `args` object as compact JSON text (`{}` when absent).
    pub(crate) arguments: String,
    pub(crate) signature: Option<String>,
}

/// What one `GenerateContentResponse` (a whole answer, or one streamed event) says.
#[derive(Debug, Default)]
pub(crate) struct Fragment {
    /// The text of the first candidate's non-thought parts.
    pub(crate) text: String,
    /// The text of thought-summary parts (`"thought": true`).
    pub(crate) thoughts: String,
    /// A thought signature on a text part (Gemini asks for it back on that part).
    pub(crate) text_signature: Option<String>,
    pub(crate) calls: Vec<DecodedCall>,
    pub(crate) finish_reason: Option<String>,
    pub(crate) usage: Option<Usage>,
    pub(crate) model: Option<String>,
}

/// Maps Gemini's `finishReason`; `STOP` after function calls is [`FinishReason::ToolCalls`] (Gemini ends a
/// function-calling turn with `STOP`).
pub(crate) fn finish_reason(reason: &str, has_calls: bool) -> FinishReason {
    match reason {
        "STOP" if has_calls => FinishReason::ToolCalls,
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_string()),
    }
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

/// Decodes one `GenerateContentResponse` (`body` is its JSON text), returning what it says and its raw JSON.
///
/// # Errors
/// [`Error::Http`] for an `{"error": ...}` body (Gemini sends one inside a stream when it fails mid-way),
/// a [`super::PromptBlocked`] (as [`Error::Chain`]) when the prompt was blocked, [`Error::Decode`] for bodies that
/// are not responses.
pub(crate) fn decode_fragment(provider: &str, body: &[u8]) -> Result<(Fragment, Value)> {
    let raw: Value =
        serde_json::from_slice(body).map_err(|e| decode_error(provider, "response is not JSON", e, body))?;
    if raw.get("error").is_some() {
        if let Some((status, _, retry_after)) = error_summary(body) {
            // The error object as the server sent it (`Error::Http`'s Display summarises it).
            let body = String::from_utf8_lossy(body).into_owned();
            return Err(Error::Http { provider: provider.to_string(), status, body, retry_after });
        }
    }
    if !raw.is_object() {
        return Err(decode_error(
            provider,
            "response is not a JSON object",
            "expected a GenerateContentResponse",
            body,
        ));
    }
    let response = WireResponse::deserialize(&raw)
        .map_err(|e| decode_error(provider, "response is not a Gemini GenerateContentResponse", e, body))?;
    let candidates = response.candidates.unwrap_or_default();
    if candidates.is_empty() {
        if let Some(feedback) = response.prompt_feedback {
            if let Some(reason) = feedback.block_reason.filter(|r| !r.is_empty()) {
                return Err(Error::chain(super::PromptBlocked {
                    provider: provider.to_string(),
                    reason,
                    message: feedback.block_reason_message,
                    safety_ratings: feedback.safety_ratings.unwrap_or(Value::Null),
                }));
            }
        }
    }
    let mut fragment = Fragment {
        usage: response.usage_metadata.map(UsageMetadata::to_usage),
        model: response.model_version.filter(|m| !m.is_empty()),
        ..Fragment::default()
    };
    // One candidate is asked for (`candidateCount: 1`): the one with index 0, else the first.
    let candidate = candidates.iter().find(|c| c.index.unwrap_or(0) == 0).or(candidates.first());
    if let Some(candidate) = candidate {
        fragment.finish_reason = candidate.finish_reason.clone().filter(|r| !r.is_empty());
        let parts = candidate.content.as_ref().and_then(|c| c.parts.as_deref()).unwrap_or_default();
        for part in parts {
            if let Some(call) = &part.function_call {
                let arguments = match &call.args {
                    None | Some(Value::Null) => "{}".to_string(),
                    Some(args @ Value::Object(_)) => args.to_string(),
                    Some(other) => {
                        return Err(decode_error(
                            provider,
                            &format!(
                                "the arguments of function call `{}` are {}, not an object",
                                call.name,
                                catena_core::error::json_type_name(other)
                            ),
                            "invalid functionCall.args",
                            body,
                        ))
                    }
                };
                fragment.calls.push(DecodedCall {
                    id: call.id.clone(),
                    name: call.name.clone(),
                    arguments,
                    signature: part.thought_signature.clone().filter(|s| !s.is_empty()),
                });
            } else if let Some(text) = &part.text {
                // Thought summaries (`"thought": true`) are reasoning, not answer text.
                if part.thought == Some(true) {
                    fragment.thoughts.push_str(text);
                } else {
                    fragment.text.push_str(text);
                    if let Some(signature) = part.thought_signature.as_ref().filter(|s| !s.is_empty()) {
                        fragment.text_signature = Some(signature.clone());
                    }
                }
            }
        }
    }
    Ok((fragment, raw))
}

/// Turns decoded calls into [`ToolCall`]s, numbering made-up ids from `first_index`.
pub(crate) fn tool_calls(calls: &[DecodedCall], first_index: usize) -> Vec<ToolCall> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| ToolCall {
            id: call_id(c.id.as_deref(), first_index + i, c.signature.as_deref()),
            name: c.name.clone(),
            arguments: c.arguments.clone(),
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------------------
// Embeddings
// ------------------------------------------------------------------------------------------------------------

/// The body of `:embedContent` (and one request of `:batchEmbedContents`, which names the model).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EmbedRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) model: Option<String>,
    pub(crate) content: EmbedContent<'a>,
    pub(crate) task_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) output_dimensionality: Option<usize>,
}

#[derive(Debug, Serialize)]
pub(crate) struct EmbedContent<'a> {
    pub(crate) parts: [EmbedText<'a>; 1],
}

#[derive(Debug, Serialize)]
pub(crate) struct EmbedText<'a> {
    pub(crate) text: &'a str,
}

/// The body of `:batchEmbedContents`.
#[derive(Debug, Serialize)]
pub(crate) struct BatchEmbedRequest<'a> {
    pub(crate) requests: Vec<EmbedRequest<'a>>,
}

#[derive(Deserialize)]
struct EmbeddingValues {
    values: Vec<f32>,
}

#[derive(Deserialize)]
struct EmbedResponse {
    embedding: EmbeddingValues,
}

#[derive(Deserialize)]
struct BatchEmbedResponse {
    embeddings: Vec<EmbeddingValues>,
}

/// The vector of an `:embedContent` answer.
pub(crate) fn decode_embedding(provider: &str, body: &[u8]) -> Result<Vec<f32>> {
    serde_json::from_slice::<EmbedResponse>(body)
        .map(|r| r.embedding.values)
        .map_err(|e| decode_error(provider, "response is not an embedContent answer", e, body))
}

/// The vectors of a `:batchEmbedContents` answer, checked to be one per input.
pub(crate) fn decode_embeddings(provider: &str, body: &[u8], expected: usize) -> Result<Vec<Vec<f32>>> {
    let vectors: Vec<Vec<f32>> = serde_json::from_slice::<BatchEmbedResponse>(body)
        .map_err(|e| decode_error(provider, "response is not a batchEmbedContents answer", e, body))?
        .embeddings
        .into_iter()
        .map(|e| e.values)
        .collect();
    if vectors.len() != expected {
        return Err(Error::Decode {
            provider: provider.to_string(),
            message: format!("asked for {expected} embeddings, got {}", vectors.len()),
        });
    }
    Ok(vectors)
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
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Option<Vec<Value>>,
}

/// Google's `{"error": {"code", "message", "status", "details"}}` (or an array holding one, as the non-SSE
/// stream endpoint writes it) as `(code, "<status>: <message>", retry delay from a RetryInfo detail)`, the message
/// cut to 1000 characters; `None` when `body` is not such an error.
pub(crate) fn error_summary(body: &[u8]) -> Option<(u16, String, Option<std::time::Duration>)> {
    let value = match serde_json::from_slice::<Value>(body).ok()? {
        Value::Array(items) => items.into_iter().next()?,
        other => other,
    };
    let env = ErrorEnvelope::deserialize(&value).ok()?;
    let message = env.error.message.unwrap_or_default();
    let mut shown: String = message.chars().take(1000).collect();
    if shown.len() < message.len() {
        shown.push_str("...");
    }
    let summary = match &env.error.status {
        Some(status) => format!("{status}: {shown}"),
        None => shown,
    };
    let retry_after = env.error.details.unwrap_or_default().iter().find_map(|d| {
        let is_retry_info = d.get("@type").and_then(Value::as_str)?.ends_with("google.rpc.RetryInfo");
        let delay = d.get("retryDelay").and_then(Value::as_str).filter(|_| is_retry_info)?;
        parse_duration(delay)
    });
    Some((env.error.code.unwrap_or(500), summary, retry_after))
}

/// A protobuf JSON duration (`"37s"`, `"1.5s"`).
fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let seconds: f64 = text.strip_suffix('s')?.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| std::time::Duration::from_secs_f64(seconds.min(1e9)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_converted_to_geminis_subset() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Order",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "id": {"type": "integer", "format": "int64", "minimum": 1},
                "note": {"type": ["string", "null"], "format": "uri"},
                "kind": {"const": "order"},
                "size": {"enum": [1, 2]},
                "item": {"$ref": "#/$defs/Item", "description": "The item"},
                "maybe": {"anyOf": [{"$ref": "#/$defs/Item"}, {"type": "null"}]},
                "either": {"oneOf": [{"type": "string"}, {"type": "number"}]},
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true, "examples": [["a"]]}
            },
            "required": ["id"],
            "$defs": {"Item": {"type": "object", "properties": {"sku": {"type": "string"}}}}
        });
        let item = json!({"type": "object", "properties": {"sku": {"type": "string"}}});
        assert_eq!(
            to_gemini_schema(&schema, "t").unwrap(),
            json!({
                "title": "Order",
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "format": "int64", "minimum": 1},
                    "note": {"type": "string", "nullable": true},
                    "kind": {"enum": ["order"]},
                    "size": {},
                    "item": {"type": "object", "properties": {"sku": {"type": "string"}}, "description": "The item"},
                    "maybe": {"type": "object", "properties": item["properties"], "nullable": true},
                    "either": {"anyOf": [{"type": "string"}, {"type": "number"}]},
                    "tags": {"type": "array", "items": {"type": "string"}, "example": ["a"]}
                },
                "required": ["id"]
            })
        );
        let recursive = json!({"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
            "$ref": "#/$defs/N"});
        let err = to_gemini_schema(&recursive, "t").unwrap_err().to_string();
        assert!(err.contains("refers to itself"), "{err}");
        assert!(to_gemini_schema(&json!({"$ref": "other.json"}), "t").is_err());
        assert!(to_gemini_schema(&json!(false), "t").is_err());
        assert_eq!(
            to_gemini_schema(&json!({"type": ["integer", "string"], "description": "d"}), "t").unwrap(),
            json!({"anyOf": [{"type": "integer", "description": "d"}, {"type": "string", "description": "d"}]})
        );
    }

    #[test]
    fn call_ids_carry_thought_signatures() {
        let id = call_id(None, 2, Some("CiQBsig=="));
        assert_eq!(id, "gemini-call-2#ts=CiQBsig==");
        assert_eq!(split_call_id(&id), ("gemini-call-2", Some("CiQBsig==")));
        assert_eq!(wire_id(&id), None);
        assert_eq!(wire_id(&call_id(Some("abc"), 0, Some("s"))), Some("abc".into()));
        assert_eq!(call_id(Some("abc"), 0, None), "abc");
    }

    #[test]
    fn usage_counts_thoughts_as_output_and_tool_prompts_as_input() {
        let u: UsageMetadata = serde_json::from_value(json!({"promptTokenCount": 100, "candidatesTokenCount": 10,
            "thoughtsTokenCount": 50, "toolUsePromptTokenCount": 5, "cachedContentTokenCount": 60,
            "totalTokenCount": 165}))
        .unwrap();
        assert_eq!(
            u.to_usage(),
            Usage { input_tokens: 105, output_tokens: 60, total_tokens: 165, cached_input_tokens: Some(60) }
        );
        let u: UsageMetadata = serde_json::from_value(json!({"promptTokenCount": 3})).unwrap();
        assert_eq!(
            u.to_usage(),
            Usage { input_tokens: 3, output_tokens: 0, total_tokens: 3, cached_input_tokens: None }
        );
    }

    #[test]
    fn error_bodies_and_retry_info() {
        let body = br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}"#;
        let (code, summary, retry) = error_summary(body).unwrap();
        assert_eq!((code, summary.as_str()), (429, "RESOURCE_EXHAUSTED: Quota exceeded"));
        assert_eq!(retry, Some(std::time::Duration::from_secs(37)));
        let array = br#"[{"error":{"code":500,"message":"x","status":"INTERNAL"}}]"#;
        assert_eq!(error_summary(array).unwrap().1, "INTERNAL: x");
        assert!(error_summary(b"<html>").is_none());
    }
}
