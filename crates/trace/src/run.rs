//! What one recorded span becomes: a [`Run`], typed.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::price::Cost;

/// A trace: the tree of runs under one root span. 128 bits, shown as 32 hex digits (the OpenTelemetry form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct TraceId(pub u128);

/// One run (span) in a trace. 64 bits, shown as 16 hex digits (the OpenTelemetry form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct RunId(pub u64);

impl TraceId {
    /// A new random, non-zero trace id.
    pub fn random() -> Self {
        TraceId(fastrand::u128(1..))
    }
}

impl RunId {
    /// A new random, non-zero run id.
    pub fn random() -> Self {
        RunId(fastrand::u64(1..))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The error of parsing a [`TraceId`] or [`RunId`] from text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIdError(String);

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseIdError {}

impl std::str::FromStr for TraceId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, ParseIdError> {
        if s.len() != 32 {
            return Err(ParseIdError(format!("a trace id is 32 hex digits, not `{s}`")));
        }
        u128::from_str_radix(s, 16).map(TraceId).map_err(|_| ParseIdError(format!("`{s}` is not a hex trace id")))
    }
}

impl std::str::FromStr for RunId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, ParseIdError> {
        if s.len() != 16 {
            return Err(ParseIdError(format!("a run id is 16 hex digits, not `{s}`")));
        }
        u64::from_str_radix(s, 16).map(RunId).map_err(|_| ParseIdError(format!("`{s}` is not a hex run id")))
    }
}

impl From<TraceId> for String {
    fn from(id: TraceId) -> String {
        id.to_string()
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for TraceId {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, ParseIdError> {
        s.parse()
    }
}

impl TryFrom<String> for RunId {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, ParseIdError> {
        s.parse()
    }
}

/// What a run did, from its `gen_ai.operation.name` (the OpenTelemetry GenAI operation names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// A model call (`chat`, `text_completion`, `generate_content`).
    Llm,
    /// An embedding call (`embeddings`).
    Embedding,
    /// A retrieval (`retrieval`).
    Retrieval,
    /// A tool execution (`execute_tool`).
    Tool,
    /// An agent run (`invoke_agent`, `create_agent`).
    Agent,
    /// A chain step (`chain`).
    Chain,
    /// Any other span (the application's own, for example): recorded so that the tree stays whole.
    Span,
}

impl RunKind {
    /// The kind of a span whose `gen_ai.operation.name` is `operation`.
    pub fn from_operation(operation: Option<&str>) -> Self {
        match operation {
            Some("chat" | "text_completion" | "generate_content") => RunKind::Llm,
            Some("embeddings") => RunKind::Embedding,
            Some("retrieval") => RunKind::Retrieval,
            Some("execute_tool") => RunKind::Tool,
            Some("invoke_agent" | "create_agent") => RunKind::Agent,
            Some("chain") => RunKind::Chain,
            _ => RunKind::Span,
        }
    }

    /// The name stored and shown: `llm`, `embedding`, `retrieval`, `tool`, `agent`, `chain`, `span`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Llm => "llm",
            RunKind::Embedding => "embedding",
            RunKind::Retrieval => "retrieval",
            RunKind::Tool => "tool",
            RunKind::Agent => "agent",
            RunKind::Chain => "chain",
            RunKind::Span => "span",
        }
    }

    /// The kind named `s` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "llm" => RunKind::Llm,
            "embedding" => RunKind::Embedding,
            "retrieval" => RunKind::Retrieval,
            "tool" => RunKind::Tool,
            "agent" => RunKind::Agent,
            "chain" => RunKind::Chain,
            "span" => RunKind::Span,
            _ => return None,
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunStatus {
    /// It finished without an error.
    Ok,
    /// It failed.
    Error {
        /// The `error.type` value (an HTTP status, or a kind such as `timeout`), when the span recorded one.
        kind: Option<String>,
        /// The error's message, from the warning or error event recorded inside the span.
        message: Option<String>,
    },
}

impl RunStatus {
    /// Whether the run failed.
    pub fn is_error(&self) -> bool {
        matches!(self, RunStatus::Error { .. })
    }
}

/// Tokens one model call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens (`gen_ai.usage.input_tokens`), including cached ones.
    pub input: u64,
    /// Generated tokens (`gen_ai.usage.output_tokens`).
    pub output: u64,
    /// Prompt tokens read from the provider's prompt cache (`gen_ai.usage.cache_read.input_tokens`).
    pub cached_input: Option<u64>,
}

/// A span field's value, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer too large for `i64`.
    U64(u64),
    /// A float.
    F64(f64),
    /// Text (also what `Display` and `Debug` values become).
    Str(String),
}

impl FieldValue {
    /// The value as text, when it is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            FieldValue::I64(i) => u64::try_from(*i).ok(),
            FieldValue::U64(u) => Some(*u),
            _ => None,
        }
    }
    /// The value as a float, when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::I64(i) => Some(*i as f64),
            FieldValue::U64(u) => Some(*u as f64),
            FieldValue::F64(f) => Some(*f),
            _ => None,
        }
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::I64(i) => write!(f, "{i}"),
            FieldValue::U64(u) => write!(f, "{u}"),
            FieldValue::F64(x) => write!(f, "{x}"),
            FieldValue::Str(s) => f.write_str(s),
        }
    }
}

/// An event (a log line) recorded inside a run: warnings and errors, such as a retry or a failed call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// When it happened, as time since the run started.
    #[serde(with = "duration_ns")]
    pub at: Duration,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The event's message.
    pub message: String,
    /// Its other fields.
    pub fields: Vec<(String, FieldValue)>,
}

/// One recorded span: a chain step, a model call, a retrieval, a tool execution, an agent run or an application
/// span, with what it consumed and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The trace (the tree under one root span) it belongs to.
    pub trace_id: TraceId,
    /// This run.
    pub id: RunId,
    /// The run it ran inside, `None` for a trace's root.
    pub parent_id: Option<RunId>,
    /// A readable name: the span's `otel.name` (`chat gpt-4o`), a chain's step (`catena.chain.step`), a tool's
    /// name, or else the span's own name.
    pub name: String,
    /// What it did.
    pub kind: RunKind,
    /// When it started (wall clock).
    #[serde(with = "system_time_ns")]
    pub start: SystemTime,
    /// How long it ran: for a stream, until the stream was drained or dropped.
    #[serde(with = "duration_ns")]
    pub duration: Duration,
    /// How it ended.
    pub status: RunStatus,
    /// The provider (`gen_ai.provider.name`).
    pub provider: Option<String>,
    /// The model that answered (`gen_ai.response.model`), else the model asked for.
    pub model: Option<String>,
    /// Tokens used, when the provider reported them.
    pub usage: Option<TokenUsage>,
    /// What the tokens cost.
    pub cost: Cost,
    /// For streams: time from the call to the first chunk.
    #[serde(with = "opt_duration_ns")]
    pub time_to_first_chunk: Option<Duration>,
    /// Why generation stopped (`stop`, `length`, `tool_calls`, ...).
    pub finish_reason: Option<String>,
    /// What went in: the messages of a model call, a retrieval's query, a tool call's arguments (each when content
    /// recording is on).
    pub input: Option<serde_json::Value>,
    /// What came out: the answer message of a model call and a tool call's result (when content recording is on),
    /// a retrieval's ranked `[{id, score, source}]` (with each document's `content` when content recording is on).
    pub output: Option<serde_json::Value>,
    /// Tags (`catena.tags`, comma-separated on the span), for filtering.
    pub tags: Vec<String>,
    /// Every field the span recorded, as recorded (content fields excepted: they are `input` and `output`).
    pub attributes: Vec<(String, FieldValue)>,
    /// Warnings and errors logged inside the run.
    pub events: Vec<RunEvent>,
}

impl Run {
    /// A run that finished without error and recorded nothing beyond its place in the tree: no usage, content,
    /// tags or attributes (set the fields you have). For sinks, imports and tests; the recorder builds its own.
    pub fn new(
        trace_id: TraceId,
        id: RunId,
        parent_id: Option<RunId>,
        name: impl Into<String>,
        kind: RunKind,
        start: SystemTime,
        duration: Duration,
    ) -> Run {
        Run {
            trace_id,
            id,
            parent_id,
            name: name.into(),
            kind,
            start,
            duration,
            status: RunStatus::Ok,
            provider: None,
            model: None,
            usage: None,
            cost: Cost::NoUsage,
            time_to_first_chunk: None,
            finish_reason: None,
            input: None,
            output: None,
            tags: Vec::new(),
            attributes: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The attribute named `name`.
    pub fn attribute(&self, name: &str) -> Option<&FieldValue> {
        self.attributes.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

pub(crate) mod duration_ns {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_nanos(u64::deserialize(d)?))
    }
}

pub(crate) mod opt_duration_ns {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_nanos))
    }
}

pub(crate) mod system_time_ns {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::unix_ns(*t))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        Ok(UNIX_EPOCH + Duration::from_nanos(u64::deserialize(d)?))
    }
}

/// Nanoseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
