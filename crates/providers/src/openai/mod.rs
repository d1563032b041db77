//! OpenAI and every server that speaks its chat-completions and embeddings API: vLLM, Ollama (`/v1`),
//! llama-cpp-python's server, llama.cpp's `llama-server`, LM Studio, Mistral, Groq, ...
//!
//! - [`OpenAiClient`] implements [`Llm`] (`POST /chat/completions`, plain and streamed as Server-Sent Events).
//! - [`OpenAiEmbedder`] implements [`Embedder`] (`POST /embeddings`).
//! - [`Compat`] names the server family. It decides the [`Capabilities`] the client reports (requests asking for
//!   more fail with [`Error::Unsupported`] before anything is sent) and the wire [`Quirks`] it works around.
//!
//! Every call runs in a `tracing` span (`chat` or `embedding`) with the OpenTelemetry GenAI fields of
//! [`catena_core::telemetry`]; the API key never appears in spans, errors, `Debug` or `Display` output.
//!
//! # Example
//!
//! ```no_run
//! use catena_core::{ChatRequest, Embedder, Llm, Message};
//! use catena_providers::openai::{Compat, OpenAiClient};
//!
//! # async fn run() -> catena_core::Result<()> {
//! // A local llama-cpp-python server; no key needed.
//! let client = OpenAiClient::builder()
//!     .base_url("http://127.0.0.1:8000/v1")
//!     .compat(Compat::LlamaCpp)
//!     .model("qwen2.5-0.5b-instruct")
//!     .build()?;
//!
//! let answer = client.chat(ChatRequest::new(vec![Message::user("Say hi")]).with_max_tokens(16)).await?;
//! println!("{answer}");
//!
//! // Or configure from OPENAI_BASE_URL, OPENAI_API_KEY and CATENA_MODEL.
//! let from_env = OpenAiClient::from_env()?;
//! let embedder = from_env.embedder("text-embedding-3-small", 1536);
//! let vectors = embedder.embed_documents(&["a".to_string(), "b".to_string()]).await?;
//! assert_eq!(vectors.len(), 2);
//! # Ok(()) }
//! ```

pub(crate) mod sse;
mod stream;
mod wire;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use catena_core::{
    async_trait, Capabilities, ChatChunk, ChatRequest, ChatResponse, ChatStream, ConstraintSupport, Embedder, Error,
    Llm, Result, Strategy, ToolChoice,
};
use catena_http::HttpClient;
pub use catena_http::IoRuntime;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};

use self::stream::SseChatStream;
pub use self::wire::openai_strict_schema;
use self::wire::StreamUsage;
use crate::transport::{Answer, Deadlines, Secrets, DEFAULT_DEADLINES};
pub use catena_constraint::gbnf::{choice_to_gbnf, regex_to_gbnf, Gbnf};

/// OpenAI's API root, the default of [`OpenAiBuilder`] and of [`OpenAiClient::from_env`].
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// An API key. Its `Debug` and `Display` print `[redacted]`, so it cannot leak through logs or error messages.
///
/// ```
/// use catena_providers::openai::ApiKey;
/// let key = ApiKey::new("sk-secret");
/// assert_eq!(format!("{key:?} {key}"), "[redacted] [redacted]");
/// assert_eq!(key.expose(), "sk-secret");
/// ```
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, for sending it. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        ApiKey(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        ApiKey(key.to_string())
    }
}

/// The family of OpenAI-compatible server on the other end. It fixes the [`Capabilities`] and [`Quirks`] a
/// client starts with; [`OpenAiBuilder::capabilities`] and [`OpenAiBuilder::quirks`] override them.
///
/// | profile | streaming usage | tools | forced tool choice | seed | images |
/// |---|---|---|---|---|---|
/// | `OpenAi` | yes | yes | yes | yes | yes |
/// | `Vllm` | yes | yes | yes | yes | yes |
/// | `Ollama` | yes | yes | no | yes | yes |
/// | `LlamaCpp` | no | yes | named tool only | yes | no |
/// | `Generic` | no | yes | no | yes | no |
///
/// All profiles stream.
///
/// # Constraints
///
/// Which [`Constraint`](catena_core::Constraint)s a [`ChatRequest::constraint`] may carry
/// ([`Capabilities::constraints`]) and how they go on the wire ([`ConstraintDialect`]). `Native` is the server's
/// own structured-output feature, `Grammar` a GBNF grammar the server samples under, `-` means the request is
/// rejected with [`Error::Unsupported`] before anything is sent (`catena_core::structured` then uses
/// validate-and-repair, unless forbidden; it does the same when a supported kind is refused for one instance,
/// such as a regex construct with no GBNF equivalent):
///
/// | profile | JSON object (JSON mode) | JSON Schema | regex | choice | Lark grammar | GBNF |
/// |---|---|---|---|---|---|---|
/// | `OpenAi` | Native: `response_format` `json_object` | Native: `response_format` `json_schema`, `strict: true` on a strict-compatible rewrite of the schema (see [`ConstraintDialect::OpenAi`]) | - | - | - | - |
/// | `Vllm` (>= 0.10.2) | Native: `json_object` | Native: `response_format` `json_schema` | Native: `structured_outputs.regex` | Native: `structured_outputs.choice` | - | Native: `structured_outputs.grammar` |
/// | `Ollama` | Native: `json_object` | Native: `response_format` `json_schema` | - | - | - | - |
/// | `LlamaCpp` | Native: `json_object` | Native: `response_format` `{"type": "json_object", "schema": ...}` | Grammar: converted to GBNF | Grammar: GBNF alternation | - | Grammar: top-level `grammar` |
/// | `Generic` | Native: `json_object` | - | - | - | - | - |
///
/// Whatever the strategy, `catena_core::structured` validates the answer against the original constraint before
/// returning it (Lark and GBNF grammars only with catena's `constrain` feature; see `Constrained::validated`): a
/// server that enforces less than it claims (llama.cpp does not enforce integer bounds, OpenAI ignores a schema
/// sent with `strict: false`) costs a repair round, never a wrong value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compat {
    /// OpenAI itself (`api.openai.com`): every feature; sends `max_completion_tokens`.
    OpenAi,
    /// vLLM's OpenAI server (guided decoding backs `json_schema`).
    Vllm,
    /// Ollama's `/v1` endpoints. Ollama ignores `tool_choice`, so forcing a tool is reported unsupported.
    Ollama,
    /// llama-cpp-python's server (`python -m llama_cpp.server`). It rejects `content: null` next to tool calls
    /// (the client sends `""`), answers OpenAI's `json_schema` response format with HTTP 500 (reported
    /// unsupported), accepts `{"type": "json_object", "schema": ...}` (where
    /// [`Constraint::JsonSchema`](catena_core::Constraint::JsonSchema) goes), treats `tool_choice: "required"` as
    /// `auto` (reported unsupported; name the tool instead) and sends no usage in streams. It takes a GBNF grammar
    /// in a top-level `grammar` field ([`Constraint::Gbnf`](catena_core::Constraint::Gbnf)), as llama.cpp's own
    /// `llama-server` does.
    LlamaCpp,
    /// Any other server: plain chat, streaming, tools, JSON mode
    /// ([`Constraint::JsonObject`](catena_core::Constraint::JsonObject)) and `seed`; override the capabilities if
    /// the server can do more.
    Generic,
    /// Azure OpenAI: OpenAI's models behind deployments. Build it with [`OpenAiBuilder::azure`] (the
    /// `/openai/deployments/{deployment}` path, the `api-version` query, the key in an `api-key` header, or an
    /// Entra ID token as `Authorization: Bearer` with [`OpenAiBuilder::bearer_token`]); the features are OpenAI's.
    Azure,
    /// Mistral's API (`https://api.mistral.ai/v1`): OpenAI's format with its own names: `random_seed` for the
    /// seed, `tool_choice: "any"` to force some tool, no `stream_options` (streams end with usage anyway);
    /// `json_schema` response formats.
    Mistral,
}

impl Compat {
    /// The `gen_ai.system` value recorded in spans: `openai`, `vllm`, `ollama`, `llama.cpp`, `openai_compatible`.
    pub fn system(self) -> &'static str {
        match self {
            Compat::OpenAi => "openai",
            Compat::Vllm => "vllm",
            Compat::Ollama => "ollama",
            Compat::LlamaCpp => "llama.cpp",
            Compat::Generic => "openai_compatible",
            Compat::Azure => "az.ai.openai",
            Compat::Mistral => "mistral_ai",
        }
    }

    /// What servers of this family support (see the table on [`Compat`]).
    pub fn capabilities(self) -> Capabilities {
        let all = Capabilities {
            backend: self.system().to_string(),
            provider: self.system().to_string(),
            streaming: true,
            streaming_usage: true,
            streaming_tools: true,
            tools: true,
            forced_tool_choice: true,
            seed: true,
            images: true,
            constraints: ConstraintSupport { json_object: Some(Strategy::Native), ..ConstraintSupport::none() },
        };
        let native = Some(Strategy::Native);
        let grammar = Some(Strategy::Grammar);
        match self {
            Compat::OpenAi | Compat::Azure | Compat::Mistral => {
                Capabilities { constraints: ConstraintSupport { json_schema: native, ..all.constraints }, ..all }
            }
            Compat::Vllm => Capabilities {
                constraints: ConstraintSupport {
                    json_object: native,
                    json_schema: native,
                    regex: native,
                    choice: native,
                    grammar: None,
                    gbnf: native,
                },
                ..all
            },
            Compat::Ollama => Capabilities {
                forced_tool_choice: false,
                constraints: ConstraintSupport { json_schema: native, ..all.constraints },
                ..all
            },
            Compat::LlamaCpp => Capabilities {
                streaming_usage: false,
                images: false,
                constraints: ConstraintSupport {
                    json_object: native,
                    json_schema: native,
                    regex: grammar,
                    choice: grammar,
                    grammar: None,
                    gbnf: grammar,
                },
                ..all
            },
            Compat::Generic => Capabilities { streaming_usage: false, forced_tool_choice: false, images: false, ..all },
        }
    }

    /// The wire differences of this family.
    pub fn quirks(self) -> Quirks {
        Quirks {
            empty_content_with_tool_calls: self == Compat::LlamaCpp,
            max_tokens_field: if matches!(self, Compat::OpenAi | Compat::Azure) {
                MaxTokensField::MaxCompletionTokens
            } else {
                MaxTokensField::MaxTokens
            },
            tool_choice_required: !matches!(self, Compat::LlamaCpp | Compat::Ollama | Compat::Generic),
            stream_requires_finish_reason: true,
            seed_field: if self == Compat::Mistral { SeedField::RandomSeed } else { SeedField::Seed },
            required_tool_choice: if self == Compat::Mistral {
                RequiredToolChoice::Any
            } else {
                RequiredToolChoice::Required
            },
            stream_options: self != Compat::Mistral,
            constraint_dialect: match self {
                Compat::OpenAi | Compat::Azure | Compat::Mistral => ConstraintDialect::OpenAi,
                Compat::Vllm => ConstraintDialect::Vllm,
                Compat::Ollama => ConstraintDialect::Ollama,
                Compat::LlamaCpp => ConstraintDialect::LlamaCpp,
                Compat::Generic => ConstraintDialect::JsonMode,
            },
        }
    }
}

impl fmt::Display for Compat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.system())
    }
}

impl FromStr for Compat {
    type Err = Error;

    /// Parses `openai`, `vllm`, `ollama`, `llama.cpp` (or `llamacpp`, `llama-cpp`) and `generic` (or
    /// `openai_compatible`), ignoring case.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(Compat::OpenAi),
            "vllm" => Ok(Compat::Vllm),
            "ollama" => Ok(Compat::Ollama),
            "llama.cpp" | "llamacpp" | "llama-cpp" | "llama_cpp" => Ok(Compat::LlamaCpp),
            "generic" | "openai_compatible" | "openai-compatible" => Ok(Compat::Generic),
            "azure" | "az.ai.openai" => Ok(Compat::Azure),
            "mistral" | "mistral_ai" => Ok(Compat::Mistral),
            _ => Err(Error::config(
                "CATENA_COMPAT",
                format!("is `{s}`, which is not a known server family"),
                "use one of openai, vllm, ollama, llama.cpp, generic, azure, mistral",
            )),
        }
    }
}

/// Which field carries [`ChatRequest::max_tokens`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaxTokensField {
    /// `max_tokens`: every compatible server.
    MaxTokens,
    /// `max_completion_tokens`: OpenAI, where `max_tokens` is deprecated and rejected by reasoning models.
    MaxCompletionTokens,
}

/// How a [`ChatRequest::constraint`] is written into the request body ([`Quirks::constraint_dialect`]). Which
/// kinds a client accepts at all is decided by [`Capabilities::constraints`]; a kind the capabilities allow but
/// the dialect cannot express fails with [`Error::Unsupported`] before sending, never silently dropped.
///
/// Every dialect checks the constraint first: an invalid JSON Schema or regex, an empty choice or a GBNF grammar
/// that llama.cpp's parser would reject is an [`Error::InvalidInput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConstraintDialect {
    /// The server has no structured-output feature: every constraint is refused.
    Unsupported,
    /// The server only has OpenAI's JSON mode: [`Constraint::JsonObject`](catena_core::Constraint::JsonObject) goes
    /// as `response_format: {"type": "json_object"}`; every other kind is refused. (Every other dialect sends JSON
    /// mode the same way.)
    JsonMode,
    /// OpenAI: a JSON Schema goes as `response_format: {"type": "json_schema", "json_schema": {"name", "schema",
    /// "strict"}}`. Strict mode only takes a subset of JSON Schema (every object closed with
    /// `"additionalProperties": false` and listing all its properties in `required`, a limited set of keywords,
    /// an object at the root), which schemas derived with `schemars` rarely meet as they are. So the schema is
    /// rewritten into that subset when the rewrite accepts only values the original accepts: open objects with
    /// `properties` are closed, every property becomes required (an `Option` field, whose schema admits `null`,
    /// then says `null` instead of being absent; an answer with every property present is still valid), `oneOf`
    /// whose branches are distinct constants becomes `anyOf`, annotations strict mode rejects (`$schema`,
    /// `default`, `examples`, formats it does not know such as `uint32`) are dropped. The name is the schema's
    /// `title` (made safe), else `response`. A schema that cannot be rewritten that way (maps, i.e.
    /// `additionalProperties` with a schema; `allOf`, `not`, `if`, `minLength`, tuples; a non-object root) is sent
    /// unchanged with `strict: false`: the model is then guided by the schema but not held to it, and the answer
    /// is still validated by `catena_core::structured`.
    OpenAi,
    /// vLLM >= 0.10.2: a JSON Schema goes as `response_format` `json_schema` (the schema unchanged, no `strict`:
    /// vLLM enforces the whole schema with its grammar backend); regex, choice and grammars go in the
    /// `structured_outputs` object (`{"regex": ...}`, `{"choice": [...]}`, `{"grammar": ...}`). The older
    /// top-level `guided_regex`/`guided_choice`/`guided_grammar` fields were removed in vLLM 0.12 and are ignored
    /// by newer servers (unconstrained output with HTTP 200), so they are not used. A GBNF grammar is checked with
    /// [`Gbnf::parse`] and sent verbatim (vLLM's default backend, xgrammar, reads GBNF-style EBNF). A regex uses
    /// catena's (Rust `regex`) syntax; vLLM's backends read the common subset the same way.
    Vllm,
    /// llama.cpp servers (llama-cpp-python, `llama-server`): a JSON Schema goes as `response_format: {"type":
    /// "json_object", "schema": ...}` (OpenAI's `json_schema` form is an HTTP 500 there); a GBNF grammar, after
    /// [`Gbnf::parse`], as the top-level `grammar` (an invalid grammar would crash llama-cpp-python's server); a
    /// choice as a GBNF alternation of the options as literals; a regex as an equivalent GBNF grammar (see
    /// [`regex_to_gbnf`]).
    LlamaCpp,
    /// Ollama's `/v1`: a JSON Schema goes as `response_format` `json_schema`; Ollama passes the schema on as its
    /// native `format`, turned into a grammar by llama.cpp.
    Ollama,
}

/// Wire-format differences between server families. Start from [`Compat::quirks`] and change fields.
///
/// ```
/// use catena_providers::openai::Compat;
/// let mut quirks = Compat::Generic.quirks();
/// quirks.empty_content_with_tool_calls = true;
/// assert!(!Compat::OpenAi.quirks().empty_content_with_tool_calls);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Quirks {
    /// Send `"content": ""` instead of `null` in assistant messages that only carry tool calls.
    pub empty_content_with_tool_calls: bool,
    /// The field for the token limit.
    pub max_tokens_field: MaxTokensField,
    /// The server honours `tool_choice: "required"`; when false such requests fail with [`Error::Unsupported`].
    pub tool_choice_required: bool,
    /// A stream that ends (`data: [DONE]`) before any chunk carried a `finish_reason` is an error (true for every
    /// profile). OpenAI's stream format ends every answer with a chunk that has one; a stream without it was cut
    /// short, for example by llama-cpp-python's server, which ends a running stream this way when another request
    /// arrives unless it runs with `--interrupt_requests false`. Set it to false only for a server that never
    /// sends finish reasons in streams; such answers then end with `finish_reason: None`.
    pub stream_requires_finish_reason: bool,
    /// The name of the seed field.
    pub seed_field: SeedField,
    /// The `tool_choice` value that forces some tool.
    pub required_tool_choice: RequiredToolChoice,
    /// Streams that want usage ask for it with `stream_options: {"include_usage": true}` (servers that always
    /// send it, or reject the field, do without).
    pub stream_options: bool,
    /// How [`ChatRequest::constraint`] goes on the wire.
    pub constraint_dialect: ConstraintDialect,
}

/// The name of the seed field ([`Quirks::seed_field`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeedField {
    /// `seed`: OpenAI and most compatible servers.
    Seed,
    /// `random_seed`: Mistral.
    RandomSeed,
}

/// The `tool_choice` value that forces some tool ([`Quirks::required_tool_choice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequiredToolChoice {
    /// `"required"`: OpenAI and most compatible servers.
    Required,
    /// `"any"`: Mistral.
    Any,
}

/// The Azure OpenAI `api-version` that [`OpenAiBuilder::azure`] callers usually pass and `from_env` uses when
/// `AZURE_OPENAI_API_VERSION` is unset: the latest generally available version this client was checked against.
pub const AZURE_API_VERSION: &str = "2024-10-21";

/// Mistral's API root, used by [`OpenAiBuilder::mistral`].
pub const MISTRAL_BASE_URL: &str = "https://api.mistral.ai/v1";

/// Configures an [`OpenAiClient`]. Start with [`OpenAiClient::builder`] (OpenAI's URL, [`Compat::OpenAi`],
/// [`DEFAULT_DEADLINES`], no key, no model) or [`OpenAiBuilder::from_env`].
///
/// ```
/// use std::time::Duration;
/// use catena_providers::openai::{Compat, OpenAiClient};
/// let client = OpenAiClient::builder()
///     .base_url("http://127.0.0.1:11434/v1")
///     .compat(Compat::Ollama)
///     .model("llama3.2")
///     .embedding_model("nomic-embed-text")
///     .embedding_dimensions(768)
///     .timeout(Duration::from_secs(60))
///     .header("x-request-source", "docs")
///     .build()
///     .unwrap();
/// assert_eq!(client.to_string(), "ollama at http://127.0.0.1:11434/v1 (model llama3.2)");
/// ```
#[derive(Clone)]
pub struct OpenAiBuilder {
    base_url: String,
    api_key: Option<ApiKey>,
    bearer_token: Option<ApiKey>,
    query: Option<String>,
    model: Option<String>,
    embedding_model: Option<String>,
    embedding_dimensions: Option<usize>,
    deadlines: Deadlines,
    headers: Vec<(String, String)>,
    compat: Compat,
    quirks: Option<Quirks>,
    capabilities: Option<Capabilities>,
    io_runtime: IoRuntime,
}

impl fmt::Debug for OpenAiBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiBuilder")
            .field("base_url", &crate::transport::display_url(&self.base_url))
            .field("api_key", &self.api_key)
            .field("bearer_token", &self.bearer_token)
            .field("query", &self.query)
            .field("model", &self.model)
            .field("embedding_model", &self.embedding_model)
            .field("embedding_dimensions", &self.embedding_dimensions)
            .field("deadlines", &self.deadlines)
            .field("headers", &self.headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>())
            .field("compat", &self.compat)
            .field("quirks", &self.quirks)
            .field("capabilities", &self.capabilities)
            .field("io_runtime", &self.io_runtime)
            .finish()
    }
}

impl Default for OpenAiBuilder {
    fn default() -> Self {
        OpenAiBuilder::new()
    }
}

fn env_var(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_string())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::config(name, "is not valid UTF-8", format!("set {name} to a UTF-8 value")))
        }
    }
}

impl OpenAiBuilder {
    /// OpenAI's URL ([`OPENAI_BASE_URL`]), [`Compat::OpenAi`], [`DEFAULT_DEADLINES`], no key, no model, no extra
    /// headers, connections on [`IoRuntime::detect`]'s choice (see [`io_runtime`](Self::io_runtime)).
    pub fn new() -> Self {
        OpenAiBuilder {
            base_url: OPENAI_BASE_URL.to_string(),
            api_key: None,
            bearer_token: None,
            query: None,
            model: None,
            embedding_model: None,
            embedding_dimensions: None,
            deadlines: DEFAULT_DEADLINES,
            headers: Vec::new(),
            compat: Compat::OpenAi,
            quirks: None,
            capabilities: None,
            io_runtime: IoRuntime::detect(),
        }
    }

    /// A builder configured from the environment:
    ///
    /// | variable | sets | when unset |
    /// |---|---|---|
    /// | `OPENAI_BASE_URL` | [`base_url`](Self::base_url) | [`OPENAI_BASE_URL`] |
    /// | `OPENAI_API_KEY` | [`api_key`](Self::api_key) | no key (required by `api.openai.com`) |
    /// | `CATENA_MODEL` | [`model`](Self::model) | no default model |
    /// | `CATENA_EMBEDDING_MODEL` | [`embedding_model`](Self::embedding_model) | none |
    /// | `CATENA_EMBEDDING_DIMENSIONS` | [`embedding_dimensions`](Self::embedding_dimensions) | none |
    /// | `CATENA_COMPAT` | [`compat`](Self::compat) (`openai`, `vllm`, `ollama`, `llama.cpp`, `generic`) | `openai` for `api.openai.com`, `generic` for any other URL |
    ///
    /// Empty variables count as unset.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable when one is not UTF-8 or does not parse.
    pub fn from_env() -> Result<Self> {
        let mut b = OpenAiBuilder::new();
        if let Some(url) = env_var("OPENAI_BASE_URL")? {
            b.base_url = url;
        }
        b.api_key = env_var("OPENAI_API_KEY")?.map(ApiKey::from);
        b.model = env_var("CATENA_MODEL")?;
        b.embedding_model = env_var("CATENA_EMBEDDING_MODEL")?;
        if let Some(dims) = env_var("CATENA_EMBEDDING_DIMENSIONS")? {
            b.embedding_dimensions = Some(dims.parse().map_err(|_| {
                Error::config(
                    "CATENA_EMBEDDING_DIMENSIONS",
                    format!("is `{dims}`, not a positive integer"),
                    "set it to the length of the embedding model's vectors, for example 1536",
                )
            })?);
        }
        b.compat = match env_var("CATENA_COMPAT")? {
            Some(c) => c.parse()?,
            None if is_openai_host(&b.base_url) => Compat::OpenAi,
            None => Compat::Generic,
        };
        Ok(b)
    }

    /// The API root, up to and including the version segment (`https://api.openai.com/v1`,
    /// `http://127.0.0.1:8000/v1`); `/chat/completions` and `/embeddings` are appended to it.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The key sent as `Authorization: Bearer <key>` (as an `api-key` header for [`Compat::Azure`]). Local servers
    /// usually need none.
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// A token sent as `Authorization: Bearer <token>` whatever the profile: an Entra ID (Azure AD) access token
    /// for [`Compat::Azure`], for example. It replaces the [`api_key`](Self::api_key) on the wire.
    pub fn bearer_token(mut self, token: impl Into<ApiKey>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Azure OpenAI: requests go to `<endpoint>/openai/deployments/<deployment>/chat/completions?api-version=<v>`
    /// (and `.../embeddings`), the key in an `api-key` header, the deployment as the default model; sets
    /// [`Compat::Azure`]. `endpoint` is the resource URL (`https://<resource>.openai.azure.com`).
    ///
    /// ```
    /// use catena_providers::openai::{OpenAiClient, AZURE_API_VERSION};
    /// let client = OpenAiClient::builder()
    ///     .azure("https://my-resource.openai.azure.com", "gpt-4o-mini", AZURE_API_VERSION)
    ///     .api_key("azure-key")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(
    ///     client.to_string(),
    ///     "az.ai.openai at https://my-resource.openai.azure.com/openai/deployments/gpt-4o-mini (model gpt-4o-mini)"
    /// );
    /// ```
    pub fn azure(mut self, endpoint: &str, deployment: &str, api_version: &str) -> Self {
        self.base_url = format!("{}/openai/deployments/{deployment}", endpoint.trim().trim_end_matches('/'));
        self.query = Some(format!("api-version={api_version}"));
        self.model = Some(deployment.to_string());
        self.compat = Compat::Azure;
        self
    }

    /// Azure OpenAI from the environment: `AZURE_OPENAI_ENDPOINT`, the deployment in `CATENA_MODEL`,
    /// `AZURE_OPENAI_API_VERSION` (default [`AZURE_API_VERSION`]), and `AZURE_OPENAI_API_KEY` or an Entra ID token in
    /// `AZURE_OPENAI_AD_TOKEN`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable that is missing or not UTF-8.
    pub fn azure_from_env() -> Result<Self> {
        let endpoint = env_var("AZURE_OPENAI_ENDPOINT")?.ok_or_else(|| {
            Error::config(
                "AZURE_OPENAI_ENDPOINT",
                "is not set",
                "export AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com",
            )
        })?;
        let deployment = env_var("CATENA_MODEL")?.ok_or_else(|| {
            Error::config("CATENA_MODEL", "is not set", "export CATENA_MODEL=<the Azure deployment name>")
        })?;
        let version = env_var("AZURE_OPENAI_API_VERSION")?.unwrap_or_else(|| AZURE_API_VERSION.to_string());
        let mut b = OpenAiBuilder::new().azure(&endpoint, &deployment, &version);
        b.api_key = env_var("AZURE_OPENAI_API_KEY")?.map(ApiKey::from);
        b.bearer_token = env_var("AZURE_OPENAI_AD_TOKEN")?.map(ApiKey::from);
        Ok(b)
    }

    /// Mistral's API ([`MISTRAL_BASE_URL`], [`Compat::Mistral`]); the key from `MISTRAL_API_KEY` when it is set.
    ///
    /// # Errors
    /// [`Error::Config`] when `MISTRAL_API_KEY` or `MISTRAL_BASE_URL` is not UTF-8.
    pub fn mistral() -> Result<Self> {
        let mut b = OpenAiBuilder::new().base_url(MISTRAL_BASE_URL).compat(Compat::Mistral);
        if let Some(url) = env_var("MISTRAL_BASE_URL")? {
            b.base_url = url;
        }
        b.api_key = env_var("MISTRAL_API_KEY")?.map(ApiKey::from);
        b.model = env_var("CATENA_MODEL")?;
        Ok(b)
    }

    /// The chat model used when a request names none.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// The embedding model of [`OpenAiClient::default_embedder`].
    pub fn embedding_model(mut self, model: impl Into<String>) -> Self {
        self.embedding_model = Some(model.into());
        self
    }

    /// The vector length of the embedding model of [`OpenAiClient::default_embedder`].
    pub fn embedding_dimensions(mut self, dimensions: usize) -> Self {
        self.embedding_dimensions = Some(dimensions);
        self
    }

    /// The longest a call may take, from sending the request to the end of the answer (streamed or not): sets
    /// the total deadline to `timeout` and lowers the other [`deadlines`](Self::deadlines) to it when they are
    /// longer. Passing it gives [`Error::Deadline`] naming the endpoint and the deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.deadlines = crate::transport::with_timeout(self.deadlines, timeout);
        self
    }

    /// Every deadline of a call: connecting, the first chunk of a streamed answer, the silence between two
    /// chunks, and the whole call (default [`DEFAULT_DEADLINES`]; `None` for no limit of a kind). Passing one gives
    /// [`Error::Deadline`] naming the endpoint and the deadline, which a retry layer may retry.
    pub fn deadlines(mut self, deadlines: Deadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Adds a header sent with every request (`OpenAI-Organization`, `api-key` for Azure, ...). Its value is
    /// never printed.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The server family (default [`Compat::OpenAi`]).
    pub fn compat(mut self, compat: Compat) -> Self {
        self.compat = compat;
        self
    }

    /// Replaces the wire quirks of the [`compat`](Self::compat) profile.
    pub fn quirks(mut self, quirks: Quirks) -> Self {
        self.quirks = Some(quirks);
        self
    }

    /// Replaces the capabilities of the [`compat`](Self::compat) profile, for a server that can do more (or less)
    /// than its family. Streams ask for usage (`stream_options`) exactly when `streaming_usage` is set.
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = Some(capabilities);
        self
    }

    /// Where the client's connections run: on the caller's tokio runtime ([`IoRuntime::Caller`]) or on a thread
    /// of its own ([`IoRuntime::Dedicated`], what evcxr notebooks need). The default, [`IoRuntime::detect`], is
    /// `Dedicated` inside evcxr and `Caller` everywhere else.
    pub fn io_runtime(mut self, io_runtime: IoRuntime) -> Self {
        self.io_runtime = io_runtime;
        self
    }

    /// Checks the configuration and builds the client.
    ///
    /// # Errors
    /// [`Error::Config`] when the base URL is not an `http(s)` URL, `api.openai.com` is used without a key
    /// (naming `OPENAI_API_KEY`), a header name or value is invalid, a deadline or the embedding dimensions are 0.
    pub fn build(self) -> Result<OpenAiClient> {
        let base_url = self.base_url.trim().trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base_url).map_err(|e| {
            Error::config(
                "base_url (OPENAI_BASE_URL)",
                format!("is `{base_url}`, which is not a valid URL ({e})"),
                "pass the API root, for example http://127.0.0.1:8000/v1",
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(Error::config(
                "base_url (OPENAI_BASE_URL)",
                format!("is `{base_url}`, which is not an http(s) URL with a host"),
                "pass the API root, for example http://127.0.0.1:8000/v1",
            ));
        }
        if self.api_key.is_none() && is_openai_host(&base_url) {
            return Err(Error::config(
                "OPENAI_API_KEY",
                "is not set, and api.openai.com requires a key",
                "export OPENAI_API_KEY=<your key> or call OpenAiBuilder::api_key; for a local server set \
                 OPENAI_BASE_URL (or OpenAiBuilder::base_url) to its URL",
            ));
        }
        crate::transport::check_deadlines(&self.deadlines, "OpenAiBuilder")?;
        if self.embedding_dimensions == Some(0) {
            return Err(Error::config(
                "embedding_dimensions (CATENA_EMBEDDING_DIMENSIONS)",
                "is 0",
                "set it to the length of the embedding model's vectors",
            ));
        }
        let mut secrets = Secrets::new();
        secrets.add_url(&parsed);
        let mut headers = crate::transport::header_map(&self.headers, &mut secrets)?;
        let bad_key = |setting: &str| {
            Error::config(
                setting,
                "contains characters not allowed in HTTP headers",
                "check the key for line breaks or stray characters",
            )
        };
        match (&self.bearer_token, &self.api_key) {
            (Some(token), _) => {
                secrets.add(token.expose());
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| bad_key("bearer_token (AZURE_OPENAI_AD_TOKEN)"))?;
                value.set_sensitive(true);
                headers.insert(AUTHORIZATION, value);
            }
            (None, Some(key)) if self.compat == Compat::Azure => {
                secrets.add(key.expose());
                let mut value =
                    HeaderValue::from_str(key.expose()).map_err(|_| bad_key("api_key (AZURE_OPENAI_API_KEY)"))?;
                value.set_sensitive(true);
                headers.insert("api-key", value);
            }
            (None, Some(key)) => {
                secrets.add(key.expose());
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| bad_key("api_key (OPENAI_API_KEY)"))?;
                value.set_sensitive(true);
                headers.insert(AUTHORIZATION, value);
            }
            (None, None) => {}
        }
        let http = crate::transport::http_client(headers, &self.deadlines, self.io_runtime)?;
        let system = self.compat.system();
        let shown_url = crate::transport::display_url(&base_url);
        let capabilities = self.capabilities.unwrap_or_else(|| Capabilities {
            backend: format!("{system} at {shown_url}"),
            ..self.compat.capabilities()
        });
        Ok(OpenAiClient {
            inner: Arc::new(Inner {
                http,
                chat_url: with_query(format!("{base_url}/chat/completions"), self.query.as_deref()),
                embeddings_url: with_query(format!("{base_url}/embeddings"), self.query.as_deref()),
                provider: format!("{system} at {shown_url}"),
                shown_url,
                base_url,
                has_api_key: self.api_key.is_some() || self.bearer_token.is_some(),
                header_names: self.headers.into_iter().map(|(name, _)| name).collect(),
                model: self.model,
                embedding_model: self.embedding_model,
                embedding_dimensions: self.embedding_dimensions,
                deadlines: self.deadlines,
                secrets,
                compat: self.compat,
                quirks: self.quirks.unwrap_or_else(|| self.compat.quirks()),
                capabilities,
            }),
        })
    }
}

fn with_query(url: String, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{url}?{q}"),
        None => url,
    }
}

fn is_openai_host(url: &str) -> bool {
    reqwest::Url::parse(url.trim()).ok().and_then(|u| u.host_str().map(|h| h.eq_ignore_ascii_case("api.openai.com")))
        == Some(true)
}

/// Shared state of a client and its embedders and streams.
pub(crate) struct Inner {
    http: HttpClient,
    base_url: String,
    /// The base URL without its userinfo, for messages.
    shown_url: String,
    chat_url: String,
    embeddings_url: String,

    /// `"<system> at <base url>"`, the `provider` of errors.
    pub(crate) provider: String,
    has_api_key: bool,
    header_names: Vec<String>,
    model: Option<String>,
    embedding_model: Option<String>,
    embedding_dimensions: Option<usize>,
    deadlines: Deadlines,
    secrets: Secrets,
    compat: Compat,
    quirks: Quirks,
    capabilities: Capabilities,
}

impl Inner {
    /// Maps a failure that has no HTTP status to [`Error::Deadline`] or [`Error::Transport`], naming the endpoint
    /// (`url`, shown without its userinfo) and with the client's secrets redacted.
    pub(crate) fn transport_error(&self, e: catena_http::Error, url: &str) -> Error {
        crate::transport::transport_error(e, &self.provider, self.compat.system(), url, &self.secrets)
    }

    /// An error with the client's secrets taken out.
    pub(crate) fn redact_error(&self, e: Error) -> Error {
        self.secrets.redact_error(e)
    }

    /// POSTs a JSON body under the client's deadlines; returns the response when its status is 2xx,
    /// [`Error::Http`] otherwise.
    async fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        accept: &'static str,
        answer: Answer,
    ) -> Result<catena_http::Response> {
        let request = self
            .http
            .reqwest()
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, accept)
            .body(body)
            .build()
            .map_err(|e| self.transport_error(e.into(), url))?;
        let response = self
            .http
            .execute_within(request, self.deadlines, answer)
            .await
            .map_err(|e| self.transport_error(e, url))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(crate::transport::http_error(response, &self.provider, &self.secrets).await)
    }
}

/// Reads `retry-after-ms` (milliseconds, sent by OpenAI and Azure) or `Retry-After` (seconds or an HTTP date).
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let seconds = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
    // A value too large for a `Duration` (`1e20`) is kept as the longest one: a retry policy then refuses to wait.
    let duration = |secs: f64| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
    if let Some(ms) = header("retry-after-ms").and_then(seconds) {
        return Some(duration(ms / 1e3));
    }
    let value = header(RETRY_AFTER.as_str())?;
    if let Some(s) = seconds(value) {
        return Some(duration(s));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A client for OpenAI or an OpenAI-compatible server. Cheap to clone (one `Arc`), `Send + Sync`; clones share
/// the connection pool.
///
/// Build it with [`OpenAiClient::builder`] or [`OpenAiClient::from_env`]; use it as an [`Llm`], and get
/// [`OpenAiEmbedder`]s from it with [`OpenAiClient::embedder`], [`OpenAiClient::default_embedder`] or
/// [`OpenAiClient::discover_embedder`].
#[derive(Clone)]
pub struct OpenAiClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("OpenAiClient")
            .field("base_url", &i.shown_url)
            .field("compat", &i.compat)
            .field("model", &i.model)
            .field("embedding_model", &i.embedding_model)
            .field("embedding_dimensions", &i.embedding_dimensions)
            .field("api_key", &if i.has_api_key { Some("[redacted]") } else { None })
            .field("headers", &i.header_names)
            .field("deadlines", &i.deadlines)
            .field("io_runtime", &i.http.io_runtime())
            .field("quirks", &i.quirks)
            .field("capabilities", &i.capabilities)
            .finish()
    }
}

/// `<system> at <base url> (model <model>)`, for example `llama.cpp at http://127.0.0.1:8000/v1 (model qwen)`.
impl fmt::Display for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner.provider)?;
        match &self.inner.model {
            Some(m) => write!(f, " (model {m})"),
            None => write!(f, " (no default model)"),
        }
    }
}

/// A request checked and encoded, ready to send.
struct Prepared {
    body: Vec<u8>,
}

impl OpenAiClient {
    /// The chat stream this client makes of a response body (`chunks`), for the fuzz targets and property tests.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn stream_of(&self, chunks: Vec<bytes::Bytes>) -> ChatStream {
        Box::pin(SseChatStream::new(futures::stream::iter(chunks.into_iter().map(Ok)), self.inner.clone()))
    }

    /// A builder with OpenAI's URL, [`Compat::OpenAi`] and [`DEFAULT_DEADLINES`]; see [`OpenAiBuilder`].
    pub fn builder() -> OpenAiBuilder {
        OpenAiBuilder::new()
    }

    /// A client configured from the environment; see [`OpenAiBuilder::from_env`] for the variables.
    ///
    /// # Errors
    /// [`Error::Config`]: `OPENAI_API_KEY` is not set while `OPENAI_BASE_URL` is unset or points at
    /// `api.openai.com`, or a variable does not parse.
    pub fn from_env() -> Result<Self> {
        OpenAiBuilder::from_env()?.build()
    }

    /// Where the client's connections run (see [`OpenAiBuilder::io_runtime`]).
    pub fn io_runtime(&self) -> IoRuntime {
        self.inner.http.io_runtime()
    }

    /// The API root requests go to (without a trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The server family this client was built for.
    pub fn compat(&self) -> Compat {
        self.inner.compat
    }

    /// The wire quirks in effect.
    pub fn quirks(&self) -> Quirks {
        self.inner.quirks
    }

    /// Checks the request against capabilities and quirks, resolves the model and encodes the body.
    fn prepare(&self, request: &ChatRequest, streaming: bool) -> Result<Prepared> {
        let inner = &self.inner;
        let caps = &inner.capabilities;
        if request.constraint.is_some()
            && matches!(request.tool_choice, Some(ToolChoice::Required | ToolChoice::Tool(_)))
        {
            return Err(Error::InvalidInput(
                "ChatRequest::constraint cannot be combined with a forced tool choice (the answer would be a tool \
                 call, not constrained text); keep one of the two"
                    .into(),
            ));
        }
        caps.check(request, streaming)?;
        let constraint = match &request.constraint {
            Some(constraint) => {
                Some(wire::encode_constraint(constraint, inner.quirks.constraint_dialect, &caps.backend)?)
            }
            None => None,
        };
        if request.tool_choice == Some(ToolChoice::Required) && !inner.quirks.tool_choice_required {
            return Err(Error::unsupported(
                &caps.backend,
                "tool_choice = required",
                "name the tool with ToolChoice::Tool(name), or use ToolChoice::Auto",
            ));
        }
        let model = match (&request.model, &inner.model) {
            (Some(m), _) | (None, Some(m)) => m.clone(),
            (None, None) => {
                return Err(Error::config(
                    "CATENA_MODEL",
                    "is not set and the request names no model",
                    "export CATENA_MODEL=<model>, call OpenAiBuilder::model(\"<model>\"), or use \
                     ChatRequest::with_model",
                ))
            }
        };
        let stream = streaming.then_some(if caps.streaming_usage && inner.quirks.stream_options {
            StreamUsage::Requested
        } else {
            StreamUsage::NotRequested
        });
        let wire = wire::encode_chat(request, &model, &inner.quirks, constraint.as_ref(), stream)?;
        let body = serde_json::to_vec(&wire)?;
        Ok(Prepared { body })
    }

    /// An embedder for `model`, whose vectors have `dimensions` entries (every answer is checked against it).
    pub fn embedder(&self, model: impl Into<String>, dimensions: usize) -> OpenAiEmbedder {
        OpenAiEmbedder { client: self.clone(), model: model.into(), dimensions, send_dimensions: false }
    }

    /// The embedder configured with [`OpenAiBuilder::embedding_model`] and [`OpenAiBuilder::embedding_dimensions`]
    /// (or `CATENA_EMBEDDING_MODEL` and `CATENA_EMBEDDING_DIMENSIONS`).
    ///
    /// # Errors
    /// [`Error::Config`] naming whichever of the two is missing.
    pub fn default_embedder(&self) -> Result<OpenAiEmbedder> {
        let model = self.inner.embedding_model.clone().ok_or_else(|| {
            Error::config(
                "CATENA_EMBEDDING_MODEL",
                "is not set",
                "export CATENA_EMBEDDING_MODEL=<model> or call OpenAiBuilder::embedding_model",
            )
        })?;
        let dimensions = self.inner.embedding_dimensions.ok_or_else(|| {
            Error::config(
                "CATENA_EMBEDDING_DIMENSIONS",
                "is not set",
                "export CATENA_EMBEDDING_DIMENSIONS=<n>, call OpenAiBuilder::embedding_dimensions, or use \
                 OpenAiClient::discover_embedder to ask the server",
            )
        })?;
        Ok(self.embedder(model, dimensions))
    }

    /// An embedder for `model` whose dimensions are learnt by embedding one short probe text now.
    ///
    /// # Errors
    /// Whatever the probe request fails with; [`Error::Decode`] if the server returns an empty vector.
    pub async fn discover_embedder(&self, model: impl Into<String>) -> Result<OpenAiEmbedder> {
        let model = model.into();
        let probe = self.embed_checked(&model, &["dimension probe".to_string()], None, None).await?;
        let dimensions = probe.first().map_or(0, Vec::len);
        if dimensions == 0 {
            return Err(Error::Decode {
                provider: self.inner.provider.clone(),
                message: format!("embedding model `{model}` returned an empty vector for the probe text"),
            });
        }
        Ok(self.embedder(model, dimensions))
    }

    /// One `/embeddings` call; `expected` is the vector length every answer must have.
    async fn embed_checked(
        &self,
        model: &str,
        texts: &[String],
        request_dimensions: Option<usize>,
        expected: Option<usize>,
    ) -> Result<Vec<Vec<f32>>> {
        let inner = &self.inner;
        let result = async {
            let body =
                serde_json::to_vec(&wire::EmbeddingRequest { model, input: texts, dimensions: request_dimensions })?;
            let response = inner.post(&inner.embeddings_url, body, "application/json", Answer::Whole).await?;
            let bytes = response.bytes().await.map_err(|e| inner.transport_error(e, &inner.embeddings_url))?;
            let decoded = wire::decode_embeddings(&inner.provider, &bytes, texts.len())?;
            if let Some(t) = decoded.input_tokens {
                catena_core::layer::record_embedding_usage(t);
            }
            if let Some(dims) = expected {
                if let Some((i, v)) = decoded.vectors.iter().enumerate().find(|(_, v)| v.len() != dims) {
                    return Err(Error::Decode {
                        provider: inner.provider.clone(),
                        message: format!(
                            "embedding model `{model}` returned a vector of length {} for input {i}, but the embedder \
                             was built for {dims} dimensions; pass the model's real dimensions or use \
                             OpenAiClient::discover_embedder",
                            v.len()
                        ),
                    });
                }
            }
            Ok(decoded.vectors)
        }
        .await;
        result
    }
}

#[async_trait]
impl Llm for OpenAiClient {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities.clone()
    }

    fn default_model(&self) -> Option<String> {
        self.inner.model.clone()
    }

    /// Sends the request and waits for the whole answer.
    ///
    /// # Errors
    /// [`Error::Unsupported`] (before sending) when the request asks for more than [`Llm::capabilities`];
    /// [`Error::Config`] when neither the request nor the client names a model; [`Error::InvalidInput`] for
    /// messages the wire format cannot carry or an invalid constraint; [`Error::Http`] for non-2xx answers (body
    /// and `Retry-After` kept); [`Error::Transport`] / [`Error::Timeout`] when no answer came; [`Error::Decode`]
    /// for unexpected bodies.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let prepared = self.prepare(&request, false)?;
        let inner = &self.inner;
        let response = inner.post(&inner.chat_url, prepared.body, "application/json", Answer::Whole).await?;
        let bytes = response.bytes().await.map_err(|e| inner.transport_error(e, &inner.chat_url))?;
        wire::decode_chat(&inner.provider, &bytes).map_err(|e| inner.redact_error(e))
    }

    /// Sends the request and streams the answer. The stream owns a clone of the client; dropping it closes the
    /// connection, which stops generation on the server.
    ///
    /// # Errors
    /// As `chat`, for everything up to the response headers; later failures are items of the stream. A server
    /// that answers with one JSON document instead of an event stream (some proxies do) has sent the whole answer:
    /// the stream yields it as one chunk.
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let prepared = self.prepare(&request, true)?;
        let inner = &self.inner;
        let response = inner.post(&inner.chat_url, prepared.body, "text/event-stream", Answer::Streamed).await?;
        if crate::transport::media_type(&response) == "application/json" {
            let bytes = response.bytes().await.map_err(|e| inner.transport_error(e, &inner.chat_url))?;
            let whole = wire::decode_chat(&inner.provider, &bytes).map_err(|e| inner.redact_error(e))?;
            return Ok(Box::pin(futures::stream::once(async move { Ok(ChatChunk::from(whole)) })));
        }
        Ok(Box::pin(SseChatStream::new(response.bytes_stream(), self.inner.clone())))
    }
}

/// Embeddings from an OpenAI-compatible `/embeddings` endpoint. Get one from [`OpenAiClient::embedder`],
/// [`OpenAiClient::default_embedder`] or [`OpenAiClient::discover_embedder`].
///
/// `embed_documents` sends all texts in one request (wrap it in [`catena_core::BatchedEmbedder`] to split large
/// inputs) and returns vectors in input order, whatever order the server lists them in.
#[derive(Debug, Clone)]
pub struct OpenAiEmbedder {
    client: OpenAiClient,
    model: String,
    dimensions: usize,
    send_dimensions: bool,
}

impl OpenAiEmbedder {
    /// Also sends `dimensions` in every request, asking models that can shorten their vectors (OpenAI's
    /// `text-embedding-3-*`) for exactly [`Embedder::dimensions`] entries. Servers that do not know the field may
    /// reject it.
    pub fn with_requested_dimensions(mut self) -> Self {
        self.send_dimensions = true;
        self
    }

    /// The client this embedder sends requests with.
    pub fn client(&self) -> &OpenAiClient {
        &self.client
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let request_dimensions = self.send_dimensions.then_some(self.dimensions);
        self.client.embed_checked(&self.model, texts, request_dimensions, Some(self.dimensions)).await
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let mut vectors = self.embed_documents(&[text.to_string()]).await?;
        vectors.pop().ok_or_else(|| Error::Decode {
            provider: self.client.inner.provider.clone(),
            message: "no vector returned for the query".into(),
        })
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn model_name(&self) -> String {
        self.model.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h, now), None);
        let mut huge = HeaderMap::new();
        huge.insert(RETRY_AFTER, HeaderValue::from_static("1e20"));
        assert_eq!(parse_retry_after(&huge, now), Some(Duration::MAX));
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&httpdate::fmt_http_date(now + Duration::from_secs(30))).unwrap());
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&httpdate::fmt_http_date(now - Duration::from_secs(30))).unwrap());
        assert_eq!(parse_retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h, now), None);
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn compat_parses_and_profiles_differ() {
        assert_eq!("LLAMA.CPP".parse::<Compat>().unwrap(), Compat::LlamaCpp);
        assert!("nope".parse::<Compat>().unwrap_err().to_string().contains("CATENA_COMPAT"));
        assert_eq!(Compat::LlamaCpp.capabilities().constraints.gbnf, Some(Strategy::Grammar));
        assert_eq!(Compat::OpenAi.capabilities().constraints.gbnf, None);
        assert_eq!(Compat::Generic.capabilities().constraints.json_object, Some(Strategy::Native));
        assert_eq!(Compat::Generic.capabilities().constraints.json_schema, None);
        assert_eq!(Compat::OpenAi.quirks().max_tokens_field, MaxTokensField::MaxCompletionTokens);
    }

    #[test]
    fn builder_rejects_bad_settings() {
        let err = OpenAiClient::builder().build().unwrap_err().to_string();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
        let err = OpenAiClient::builder().base_url("not a url").build().unwrap_err().to_string();
        assert!(err.contains("base_url"), "{err}");
        let err = OpenAiClient::builder().base_url("http://h/v1").header("bad header", "x").build().unwrap_err();
        assert!(err.to_string().contains("bad header"), "{err}");
        let ok = OpenAiClient::builder().base_url("http://h/v1/").build().unwrap();
        assert_eq!(ok.base_url(), "http://h/v1");
    }
}
