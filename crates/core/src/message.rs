//! Chat messages, requests, responses and streamed chunks: the provider-neutral data model every [`Llm`]
//! speaks.
//!
//! Providers translate these types to and from their wire format; nothing here knows about HTTP or any vendor.
//! A stream of [`ChatChunk`]s folds (with [`ChatResponseBuilder`]) into exactly the [`ChatResponse`] that the
//! non-streaming call returns.
//!
//! [`Llm`]: crate::Llm

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The human (or calling program).
    User,
    /// The model.
    Assistant,
    /// The result of a tool call, sent back to the model.
    Tool,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        })
    }
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// An image, by URL (`https://...` or a `data:` URL).
    ImageUrl {
        /// The image URL.
        url: String,
    },
}

/// A tool call requested by the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for this call; send it back in the tool result message.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as the model wrote them (JSON text; may be invalid if the model erred).
    pub arguments: String,
}

impl ToolCall {
    /// Parses the arguments into `T`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the tool when the arguments are not valid JSON for `T`.
    pub fn parse_arguments<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.arguments).map_err(|e| {
            Error::InvalidInput(format!("arguments of tool call `{}` ({}) do not parse: {e}", self.name, self.id))
        })
    }
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its content parts (usually one text part).
    pub content: Vec<ContentPart>,
    /// Tool calls requested by the model (assistant messages only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For [`Role::Tool`] messages: the id of the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The model's reasoning blocks before this answer (assistant messages of reasoning models), kept so that a
    /// conversation sends them back as they came: Anthropic requires its signed thinking blocks back in a tool
    /// loop. Never part of [`Message::text`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasoning: Vec<Reasoning>,
    /// For [`Role::Tool`] messages: the tool failed and the text says why (Anthropic's `tool_result` carries it as
    /// `is_error`; other formats have only the text).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

/// One block of a model's reasoning ("extended thinking"), as the provider sent it.
///
/// ```
/// use catena_core::{ChatChunk, ChatResponseBuilder, Reasoning, ReasoningDelta};
/// let mut b = ChatResponseBuilder::default();
/// b.push(&ChatChunk { reasoning: vec![ReasoningDelta { index: 0, text: "Let me ".into(), ..Default::default() }], ..Default::default() });
/// b.push(&ChatChunk { reasoning: vec![ReasoningDelta { index: 0, text: "think.".into(), signature: Some("sig".into()), ..Default::default() }], ..Default::default() });
/// let message = b.finish().message;
/// assert_eq!(message.reasoning, vec![Reasoning { text: "Let me think.".into(), signature: Some("sig".into()), redacted: None }]);
/// assert_eq!(message.text(), "");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Reasoning {
    /// The reasoning text (empty for a redacted block).
    #[serde(default)]
    pub text: String,
    /// The provider's signature over the block, to be sent back unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// An encrypted block the provider sent instead of text (Anthropic's `redacted_thinking`), to be sent back
    /// unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted: Option<String>,
}

/// A fragment of a reasoning block in a stream; `index` ties the fragments of one block together.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReasoningDelta {
    /// Which reasoning block (0-based, in order of appearance) this fragment belongs to.
    pub index: usize,
    /// A piece of the reasoning text, to be appended.
    #[serde(default)]
    pub text: String,
    /// The block's signature, when this fragment carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The block's encrypted content, for a redacted block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted: Option<String>,
}

impl Message {
    /// A message with one text part.
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: vec![ContentPart::Text { text: text.into() }],
            tool_calls: Vec::new(),
            tool_call_id: None,
            reasoning: Vec::new(),
            is_error: false,
        }
    }
    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::new(Role::System, text)
    }
    /// A user message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::new(Role::User, text)
    }
    /// Adds `instruction` to the conversation's first system message (after a blank line), or inserts a system
    /// message holding it at the start when there is none.
    ///
    /// ```
    /// use catena_core::{Message, Role};
    /// let mut messages = vec![Message::user("hi")];
    /// Message::add_system_instruction(&mut messages, "Be brief.");
    /// Message::add_system_instruction(&mut messages, "Answer in French.");
    /// assert_eq!(messages[0].role, Role::System);
    /// assert_eq!(messages[0].text(), "Be brief.\n\nAnswer in French.");
    /// ```
    pub fn add_system_instruction(messages: &mut Vec<Message>, instruction: &str) {
        match messages.iter_mut().find(|m| m.role == Role::System) {
            Some(system) => *system = Message::system(format!("{}\n\n{instruction}", system.text())),
            None => messages.insert(0, Message::system(instruction)),
        }
    }
    /// An assistant message.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new(Role::Assistant, text)
    }
    /// A tool result answering the call with id `tool_call_id`.
    pub fn tool_result(tool_call_id: impl Into<String>, text: impl Into<String>) -> Self {
        let mut m = Self::new(Role::Tool, text);
        m.tool_call_id = Some(tool_call_id.into());
        m
    }
    /// A tool result saying why the call with id `tool_call_id` failed ([`Message::is_error`] set).
    pub fn tool_error(tool_call_id: impl Into<String>, text: impl Into<String>) -> Self {
        let mut m = Self::tool_result(tool_call_id, text);
        m.is_error = true;
        m
    }
    /// All text parts, concatenated.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for part in &self.content {
            if let ContentPart::Text { text } = part {
                out.push_str(text);
            }
        }
        out
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.role, self.text())?;
        for call in &self.tool_calls {
            write!(f, "\n  -> {}({}) [{}]", call.name, call.arguments, call.id)?;
        }
        Ok(())
    }
}

/// A tool the model may call, described by a JSON Schema of its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// The tool's name (what the model calls).
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

impl ToolDefinition {
    /// A tool whose argument schema is derived from `T` with `schemars`.
    pub fn for_type<T: JsonSchema>(name: impl Into<String>, description: impl Into<String>) -> Self {
        let schema = schemars::schema_for!(T);
        ToolDefinition { name: name.into(), description: description.into(), parameters: schema.to_value() }
    }
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must not call tools.
    None,
    /// The model must call some tool.
    Required,
    /// The model must call this tool.
    Tool(String),
}

/// A request to a chat model. Build it with [`ChatRequest::new`] and the `with_*` methods.
///
/// ```
/// use catena_core::{ChatRequest, Message};
/// let req = ChatRequest::new(vec![Message::user("Hi")]).with_temperature(0.2).with_max_tokens(64);
/// assert_eq!(req.max_tokens, Some(64));
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// The model to use; `None` uses the client's configured model.
    pub model: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus sampling probability mass.
    pub top_p: Option<f32>,
    /// Maximum number of tokens to generate.
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
    /// Tools the model may call.
    pub tools: Vec<ToolDefinition>,
    /// Whether and which tool to call.
    pub tool_choice: Option<ToolChoice>,
    /// What the answer must look like: the one way to ask for structured output (JSON mode, a JSON Schema, a
    /// regex, a choice, a grammar). The backend enforces it (see `catena_constraint::structured` for the strategies and the
    /// validate-and-repair fallback); backends reject constraints their
    /// [`Capabilities::constraints`](crate::Capabilities::constraints) do not list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<crate::constraint::Constraint>,
}

impl ChatRequest {
    /// A request with these messages and nothing else set.
    pub fn new(messages: Vec<Message>) -> Self {
        ChatRequest { messages, ..Default::default() }
    }
    /// Sets the model.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }
    /// Sets the temperature.
    pub fn with_temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }
    /// Sets top-p.
    pub fn with_top_p(mut self, p: f32) -> Self {
        self.top_p = Some(p);
        self
    }
    /// Sets the maximum number of generated tokens.
    pub fn with_max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }
    /// Adds a stop sequence.
    pub fn with_stop(mut self, s: impl Into<String>) -> Self {
        self.stop.push(s.into());
        self
    }
    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Adds a tool.
    pub fn with_tool(mut self, tool: ToolDefinition) -> Self {
        self.tools.push(tool);
        self
    }
    /// Sets the tool choice.
    pub fn with_tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = Some(choice);
        self
    }
    /// Constrains the answer (see [`ChatRequest::constraint`]).
    pub fn with_constraint(mut self, constraint: crate::constraint::Constraint) -> Self {
        self.constraint = Some(constraint);
        self
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// It finished naturally or hit a stop sequence.
    Stop,
    /// It hit the token limit.
    Length,
    /// It wants tools called.
    ToolCalls,
    /// Content was filtered.
    ContentFilter,
    /// A provider-specific reason.
    Other(String),
}

impl FinishReason {
    /// Maps an OpenAI-style `finish_reason` string.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "stop" | "end_turn" | "stop_sequence" => FinishReason::Stop,
            "length" | "max_tokens" => FinishReason::Length,
            "tool_calls" | "function_call" | "tool_use" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            other => FinishReason::Other(other.to_string()),
        }
    }
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Their sum, as the provider reported it.
    pub total_tokens: u64,
    /// Prompt tokens served from the provider's prompt cache (part of `input_tokens`), when it reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_tokens: Option<u64>,
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens + o.input_tokens,
            output_tokens: self.output_tokens + o.output_tokens,
            total_tokens: self.total_tokens + o.total_tokens,
            cached_input_tokens: match (self.cached_input_tokens, o.cached_input_tokens) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
            },
        }
    }
}

/// A chat model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The assistant message (text and/or tool calls).
    pub message: Message,
    /// Why generation stopped.
    pub finish_reason: Option<FinishReason>,
    /// Token counts, when the provider reports them.
    pub usage: Option<Usage>,
    /// The model that answered.
    pub model: String,
    /// The provider's raw JSON (for streams: the array of raw chunks), kept for debugging.
    pub raw: Value,
}

impl ChatResponse {
    /// The answer's text.
    pub fn text(&self) -> String {
        self.message.text()
    }
}

impl fmt::Display for ChatResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.message)?;
        write!(f, "[model {}", self.model)?;
        if let Some(r) = &self.finish_reason {
            write!(f, ", finish {r:?}")?;
        }
        if let Some(u) = &self.usage {
            write!(f, ", tokens {} in / {} out", u.input_tokens, u.output_tokens)?;
        }
        write!(f, "]")
    }
}

/// A fragment of a tool call in a stream. Providers split a call across chunks; `index` ties them together.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which tool call (0-based, in order of appearance) this fragment belongs to.
    pub index: usize,
    /// The call id, usually only in the first fragment (some servers repeat it).
    pub id: Option<String>,
    /// The tool name, usually only in the first fragment (some servers repeat it).
    pub name: Option<String>,
    /// A piece of the arguments text, to be appended.
    pub arguments: String,
}

/// One streamed piece of a chat answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatChunk {
    /// Text to append to the answer.
    pub text: Option<String>,
    /// Tool-call fragments.
    pub tool_calls: Vec<ToolCallDelta>,
    /// Token counts (usually in the last chunk).
    pub usage: Option<Usage>,
    /// Why generation stopped (in the final chunk).
    pub finish_reason: Option<FinishReason>,
    /// The model, when the chunk names it.
    pub model: Option<String>,
    /// The raw provider payload of this chunk.
    pub raw: Option<Value>,
    /// Reasoning fragments (thinking blocks of reasoning models).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasoning: Vec<ReasoningDelta>,
}

impl From<ChatResponse> for ChatChunk {
    /// A whole answer as one chunk (what a backend that cannot stream yields): folding it with
    /// [`ChatResponseBuilder`] gives the response back.
    fn from(response: ChatResponse) -> Self {
        let text = response.message.text();
        ChatChunk {
            text: (!text.is_empty()).then_some(text),
            tool_calls: response
                .message
                .tool_calls
                .into_iter()
                .enumerate()
                .map(|(index, call)| ToolCallDelta {
                    index,
                    id: Some(call.id),
                    name: Some(call.name),
                    arguments: call.arguments,
                })
                .collect(),
            reasoning: response
                .message
                .reasoning
                .into_iter()
                .enumerate()
                .map(|(index, r)| ReasoningDelta { index, text: r.text, signature: r.signature, redacted: r.redacted })
                .collect(),
            usage: response.usage,
            finish_reason: response.finish_reason,
            model: (!response.model.is_empty()).then_some(response.model),
            raw: (!response.raw.is_null()).then_some(response.raw),
        }
    }
}

/// Folds a stream of [`ChatChunk`]s into the [`ChatResponse`] the non-streaming call would return.
///
/// ```
/// use catena_core::{ChatChunk, ChatResponseBuilder};
/// let mut b = ChatResponseBuilder::default();
/// b.push(&ChatChunk { text: Some("Hel".into()), ..Default::default() });
/// b.push(&ChatChunk { text: Some("lo".into()), ..Default::default() });
/// assert_eq!(b.finish().text(), "Hello");
/// ```
#[derive(Debug, Clone, Default)]
pub struct ChatResponseBuilder {
    text: String,
    tool_calls: Vec<ToolCall>,
    reasoning: Vec<Reasoning>,
    usage: Option<Usage>,
    finish_reason: Option<FinishReason>,
    model: String,
    raw: Vec<Value>,
}

impl ChatResponseBuilder {
    /// Adds one chunk.
    pub fn push(&mut self, chunk: &ChatChunk) {
        if let Some(t) = &chunk.text {
            self.text.push_str(t);
        }
        for d in &chunk.tool_calls {
            while self.tool_calls.len() <= d.index {
                self.tool_calls.push(ToolCall { id: String::new(), name: String::new(), arguments: String::new() });
            }
            let call = &mut self.tool_calls[d.index];
            // Ids and names arrive once (OpenAI) or repeated in every fragment (llama.cpp): set, never append.
            if let Some(id) = &d.id {
                if !id.is_empty() {
                    call.id.clone_from(id);
                }
            }
            if let Some(name) = &d.name {
                if !name.is_empty() {
                    call.name.clone_from(name);
                }
            }
            call.arguments.push_str(&d.arguments);
        }
        for d in &chunk.reasoning {
            while self.reasoning.len() <= d.index {
                self.reasoning.push(Reasoning::default());
            }
            let block = &mut self.reasoning[d.index];
            block.text.push_str(&d.text);
            if d.signature.is_some() {
                block.signature.clone_from(&d.signature);
            }
            if d.redacted.is_some() {
                block.redacted.clone_from(&d.redacted);
            }
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        if let Some(r) = &chunk.finish_reason {
            self.finish_reason = Some(r.clone());
        }
        if let Some(m) = &chunk.model {
            if !m.is_empty() {
                self.model.clone_from(m);
            }
        }
        if let Some(raw) = &chunk.raw {
            self.raw.push(raw.clone());
        }
    }

    /// The text gathered so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The folded response.
    pub fn finish(self) -> ChatResponse {
        let mut message = Message::assistant(self.text);
        message.tool_calls = self.tool_calls;
        message.reasoning = self.reasoning;
        ChatResponse {
            message,
            finish_reason: self.finish_reason,
            usage: self.usage,
            model: self.model,
            raw: Value::Array(self.raw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_fragments_fold_with_repeated_ids() {
        let mut b = ChatResponseBuilder::default();
        for (i, args) in ["{\"ci", "ty\":", "\"Oslo\"}"].iter().enumerate() {
            b.push(&ChatChunk {
                tool_calls: vec![ToolCallDelta {
                    index: 0,
                    id: Some("call_1".into()),
                    name: if i == 0 || i == 2 { Some("weather".into()) } else { None },
                    arguments: args.to_string(),
                }],
                ..Default::default()
            });
        }
        b.push(&ChatChunk { finish_reason: Some(FinishReason::ToolCalls), ..Default::default() });
        let r = b.finish();
        assert_eq!(r.message.tool_calls.len(), 1);
        let call = &r.message.tool_calls[0];
        assert_eq!((call.id.as_str(), call.name.as_str()), ("call_1", "weather"));
        #[derive(serde::Deserialize)]
        struct A {
            city: String,
        }
        assert_eq!(call.parse_arguments::<A>().unwrap().city, "Oslo");
        assert_eq!(r.finish_reason, Some(FinishReason::ToolCalls));
    }

    #[test]
    fn tool_definition_from_type_has_properties() {
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        struct Args {
            city: String,
        }
        let t = ToolDefinition::for_type::<Args>("weather", "Weather in a city");
        assert_eq!(t.parameters["properties"]["city"]["type"], "string");
    }
}
