//! Anthropic's Messages API (`POST /v1/messages`), natively: [`AnthropicClient`] implements [`Llm`], plain and
//! streamed as Server-Sent Events, against `api.anthropic.com` or any server that speaks the same format
//! (LiteLLM's proxy, test servers such as llm-katan).
//!
//! # Mapping
//!
//! | catena | Anthropic |
//! |---|---|
//! | [`Role::System`](catena_core::Role::System) messages | the top-level `system` (a string; text blocks when there are several). They are taken out of the conversation wherever they stand, in order |
//! | user messages | `user` messages: a string, or `text` and `image` blocks (a `data:<type>;base64,` URL becomes a `base64` source, an `http(s)` URL a `url` source) |
//! | assistant messages with [`ToolCall`](catena_core::ToolCall)s | `text` blocks, then one `tool_use` block `{id, name, input}` per call (the arguments must be a JSON object; empty arguments are sent as `{}`) |
//! | [`Role::Tool`](catena_core::Role::Tool) messages | `tool_result` blocks `{tool_use_id, content}`; consecutive tool results go in one `user` message |
//! | [`ChatRequest::max_tokens`] | `max_tokens`, which Anthropic requires: when the request sets none, the builder's [`max_tokens`](AnthropicBuilder::max_tokens) (default [`DEFAULT_MAX_TOKENS`]) |
//! | `temperature`, `top_p`, `stop` | `temperature`, `top_p`, `stop_sequences` |
//! | `tools` | `tools` `[{name, description, input_schema}]` |
//! | [`ToolChoice`] `Auto`, `None`, `Required`, `Tool(name)` | `tool_choice` `{"type": "auto"}`, `{"type": "none"}`, `{"type": "any"}`, `{"type": "tool", "name"}` |
//! | `seed` | none: Anthropic has no seed, so a request with one fails with [`Error::Unsupported`] |
//!
//! In answers, `text` blocks are concatenated into the message text and `tool_use` blocks become
//! [`ToolCall`](catena_core::ToolCall)s whose `arguments` is the input's JSON text without whitespace outside
//! strings (key order and escapes as the server wrote them: the same text whether the input came whole or as
//! `input_json_delta` fragments of a stream). `thinking` blocks (with their `signature`) and `redacted_thinking`
//! blocks become the message's [`reasoning`](catena_core::Message::reasoning) (streamed as
//! [`ReasoningDelta`](catena_core::ReasoningDelta)s: `thinking_delta` and `signature_delta` per block), and an
//! assistant message's reasoning goes back first in its turn, unchanged, as Anthropic requires in a tool loop with
//! extended thinking. Server-tool blocks are kept in [`ChatResponse::raw`](catena_core::ChatResponse::raw) only.
//!
//! `stop_reason` becomes a [`FinishReason`](catena_core::FinishReason): `end_turn` and `stop_sequence` ->
//! `Stop`, `max_tokens` and `model_context_window_exceeded` -> `Length`, `tool_use` -> `ToolCalls`, `refusal` ->
//! `ContentFilter` (the safety classifiers stopped the answer), anything else (`pause_turn`, which asks the
//! caller to send the conversation back to let a server tool continue) -> `Other("<reason>")`.
//!
//! `usage` becomes a [`Usage`](catena_core::Usage) whose `input_tokens` is every prompt token: Anthropic's
//! `input_tokens` (the uncached ones) plus `cache_read_input_tokens` plus `cache_creation_input_tokens` (tokens
//! written to the cache were processed, and are billed, as input); `cached_input_tokens` is
//! `cache_read_input_tokens` (when the server reports it). In streams, `message_start` carries the input counts and
//! `message_delta` the cumulative ones; each chunk with usage has the counts known so far, so the folded stream
//! ends with the same usage as `chat`.
//!
//! # Structured output
//!
//! [`Constraint::JsonSchema`](catena_core::Constraint::JsonSchema) and
//! [`Constraint::JsonObject`](catena_core::Constraint::JsonObject) are enforced with a forced tool: the request
//! gets one synthetic tool, [`STRUCTURED_OUTPUT_TOOL`], whose `input_schema` is the schema (`{"type": "object"}`
//! for JSON mode), and `tool_choice: {"type": "tool", "name": "structured_output"}`. The answer's text is that
//! tool's input as JSON text (text blocks next to it are left in `raw`), and its `tool_use` stop reason becomes
//! `Stop`. A tool input is always an object, so a schema that is not `{"type": "object", ...}` is wrapped as
//! `{"type": "object", "properties": {"value": <schema>}, "required": ["value"]}` (its `$defs` and `definitions`
//! moved to the root, so references into them still resolve) and the answer is the input's `value`. Both are
//! declared as [`Strategy::Native`] in [`Capabilities::constraints`]; `catena_constraint::structured` validates
//! the answer as for every strategy. A constrained request cannot also carry tools or a tool choice
//! ([`Error::InvalidInput`]). Regex, choice and grammar constraints are not declared: they fail with
//! [`Error::Unsupported`] (and `catena_constraint::structured` falls back to validate-and-repair).
//!
//! # Errors
//!
//! Non-2xx answers are [`Error::Http`] with the status, `Retry-After` and, as the body, Anthropic's
//! `{"type": "error", "error": {"type", "message"}}` as `<type>: <message>` (any other body as a one-line preview of
//! at most 300 characters; the body kept on the error is read up to 1 MiB, so that a hostile server cannot make an
//! error hold unbounded memory), followed by what to do. An `error` event inside a
//! stream is an [`Error::Http`] with the status Anthropic gives its error type (`overloaded_error` -> 529, ...).
//! The API key never appears in errors, `Debug` or `Display` output, even when a server echoes it back: every
//! occurrence is replaced by `[redacted]`.
//!
//! # Example
//!
//! ```no_run
//! use catena_core::{ChatRequest, Llm, Message};
//! use catena_providers::anthropic::AnthropicClient;
//!
//! # async fn run() -> catena_core::Result<()> {
//! // ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL (default https://api.anthropic.com) and CATENA_MODEL.
//! let client = AnthropicClient::from_env()?;
//! let request = ChatRequest::new(vec![Message::system("Be brief."), Message::user("Say hi")]).with_max_tokens(64);
//! let answer = client.chat(request).await?;
//! println!("{answer}");
//! # Ok(()) }
//! ```

mod stream;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use catena_core::{
    async_trait, Capabilities, ChatChunk, ChatRequest, ChatResponse, ChatStream, ConstraintSupport, Error, Llm, Result,
    Strategy, ToolChoice,
};
use catena_http::HttpClient;
pub use catena_http::IoRuntime;
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};

use self::wire::StructuredOutput;
pub use self::wire::STRUCTURED_OUTPUT_TOOL;
pub use crate::openai::ApiKey;
use crate::transport::{Answer, Deadlines, Secrets, DEFAULT_DEADLINES};

/// Anthropic's API root, the default of [`AnthropicBuilder`] and of [`AnthropicClient::from_env`].
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// The `anthropic-version` header every request carries: the version of the Messages API this client speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The `max_tokens` a builder starts with (see [`AnthropicBuilder::max_tokens`]): 4096. Anthropic requires the
/// field in every request; it applies when the [`ChatRequest`] sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Where an [`AnthropicClient`] marks prompt-cache breakpoints ([`AnthropicBuilder::prompt_cache`]). Anthropic
/// caches the prompt up to and including a marked block, so a marked prefix that repeats across requests is read
/// from the cache (cheaper and faster) instead of processed again; prefixes shorter than the model's minimum (1,024
/// tokens for most models) are not cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptCache {
    /// No breakpoints.
    #[default]
    Off,
    /// The system prompt and the tool definitions: the part of a prompt that repeats across conversations.
    Static,
    /// `Static`, and the last message: each turn of a conversation reads the turns before it from the cache.
    Conversation,
}

/// Configures an [`AnthropicClient`]. Start with [`AnthropicClient::builder`] ([`ANTHROPIC_BASE_URL`], no key, no
/// model, [`DEFAULT_MAX_TOKENS`], [`DEFAULT_DEADLINES`]) or [`AnthropicBuilder::from_env`].
///
/// ```
/// use std::time::Duration;
/// use catena_providers::anthropic::AnthropicClient;
/// let client = AnthropicClient::builder()
///     .base_url("http://127.0.0.1:4000")
///     .api_key("sk-local")
///     .model("claude-sonnet-4-5")
///     .max_tokens(1024)
///     .timeout(Duration::from_secs(60))
///     .header("anthropic-beta", "interleaved-thinking-2025-05-14")
///     .build()
///     .unwrap();
/// assert_eq!(client.to_string(), "anthropic at http://127.0.0.1:4000 (model claude-sonnet-4-5)");
/// assert!(!format!("{client:?}").contains("sk-local"));
/// ```
#[derive(Clone)]
pub struct AnthropicBuilder {
    base_url: String,
    api_key: Option<ApiKey>,
    model: Option<String>,
    max_tokens: u32,
    prompt_cache: PromptCache,
    deadlines: Deadlines,
    headers: Vec<(String, String)>,
    io_runtime: IoRuntime,
}

impl fmt::Debug for AnthropicBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicBuilder")
            .field("base_url", &crate::transport::display_url(&self.base_url))
            .field("api_key", &self.api_key)
            .field("model", &self.model)
            .field("max_tokens", &self.max_tokens)
            .field("prompt_cache", &self.prompt_cache)
            .field("deadlines", &self.deadlines)
            .field("headers", &self.headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>())
            .field("io_runtime", &self.io_runtime)
            .finish()
    }
}

impl Default for AnthropicBuilder {
    fn default() -> Self {
        AnthropicBuilder::new()
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

fn is_anthropic_host(url: &str) -> bool {
    reqwest::Url::parse(url.trim()).ok().and_then(|u| u.host_str().map(|h| h.eq_ignore_ascii_case("api.anthropic.com")))
        == Some(true)
}

impl AnthropicBuilder {
    /// [`ANTHROPIC_BASE_URL`], no key, no model, [`DEFAULT_MAX_TOKENS`], [`DEFAULT_DEADLINES`], no extra headers,
    /// connections on [`IoRuntime::detect`]'s choice.
    pub fn new() -> Self {
        AnthropicBuilder {
            base_url: ANTHROPIC_BASE_URL.to_string(),
            api_key: None,
            model: None,
            max_tokens: DEFAULT_MAX_TOKENS,
            prompt_cache: PromptCache::Off,
            deadlines: DEFAULT_DEADLINES,
            headers: Vec::new(),
            io_runtime: IoRuntime::detect(),
        }
    }

    /// A builder configured from the environment:
    ///
    /// | variable | sets | when unset |
    /// |---|---|---|
    /// | `ANTHROPIC_BASE_URL` | [`base_url`](Self::base_url) | [`ANTHROPIC_BASE_URL`] |
    /// | `ANTHROPIC_API_KEY` | [`api_key`](Self::api_key) | no key (required by `api.anthropic.com`) |
    /// | `CATENA_MODEL` | [`model`](Self::model) | no default model |
    ///
    /// Empty variables count as unset.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable when one is not UTF-8.
    pub fn from_env() -> Result<Self> {
        let mut b = AnthropicBuilder::new();
        if let Some(url) = env_var("ANTHROPIC_BASE_URL")? {
            b.base_url = url;
        }
        b.api_key = env_var("ANTHROPIC_API_KEY")?.map(ApiKey::from);
        b.model = env_var("CATENA_MODEL")?;
        Ok(b)
    }

    /// The API root, without the version segment (`https://api.anthropic.com`, `http://127.0.0.1:4000`):
    /// requests go to `<base_url>/v1/messages`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The key sent as `x-api-key`.
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The model used when a request names none (`claude-sonnet-4-5`, ...).
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Where requests mark Anthropic's prompt-cache breakpoints (`cache_control: {"type": "ephemeral"}`); default
    /// [`PromptCache::Off`]. Cached prompt tokens come back in [`Usage::cached_input_tokens`](catena_core::Usage).
    pub fn prompt_cache(mut self, prompt_cache: PromptCache) -> Self {
        self.prompt_cache = prompt_cache;
        self
    }

    /// The `max_tokens` sent when a request sets none ([`ChatRequest::max_tokens`]); default
    /// [`DEFAULT_MAX_TOKENS`]. Anthropic requires one in every request and stops the answer there
    /// (`FinishReason::Length`).
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
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

    /// Adds a header sent with every request (`anthropic-beta`, ...). Its value is never printed.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
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
    /// [`Error::Config`] when the base URL is not an `http(s)` URL, `api.anthropic.com` is used without a key
    /// (naming `ANTHROPIC_API_KEY`), a header name or value is invalid, or a deadline or `max_tokens` is 0.
    pub fn build(self) -> Result<AnthropicClient> {
        let base_url = self.base_url.trim().trim_end_matches('/').to_string();
        let hint = "pass the API root without /v1, for example https://api.anthropic.com or http://127.0.0.1:4000";
        let parsed = reqwest::Url::parse(&base_url).map_err(|e| {
            Error::config(
                "base_url (ANTHROPIC_BASE_URL)",
                format!("is `{base_url}`, which is not a valid URL ({e})"),
                hint,
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(Error::config(
                "base_url (ANTHROPIC_BASE_URL)",
                format!("is `{base_url}`, which is not an http(s) URL with a host"),
                hint,
            ));
        }
        if self.api_key.is_none() && is_anthropic_host(&base_url) {
            return Err(Error::config(
                "ANTHROPIC_API_KEY",
                "is not set, and api.anthropic.com requires a key",
                "export ANTHROPIC_API_KEY=<your key> or call AnthropicBuilder::api_key; for another server set \
                 ANTHROPIC_BASE_URL (or AnthropicBuilder::base_url) to its URL",
            ));
        }
        crate::transport::check_deadlines(&self.deadlines, "AnthropicBuilder")?;
        if self.max_tokens == 0 {
            return Err(Error::config("max_tokens", "is 0", "pass a positive limit to AnthropicBuilder::max_tokens"));
        }
        let mut secrets = Secrets::new();
        secrets.add_url(&parsed);
        let mut headers = crate::transport::header_map(&self.headers, &mut secrets)?;
        headers.insert("anthropic-version", HeaderValue::from_static(ANTHROPIC_VERSION));
        if let Some(key) = &self.api_key {
            secrets.add(key.expose());
            let mut value = HeaderValue::from_str(key.expose()).map_err(|_| {
                Error::config(
                    "api_key (ANTHROPIC_API_KEY)",
                    "contains characters not allowed in HTTP headers",
                    "check the key for line breaks or stray characters",
                )
            })?;
            value.set_sensitive(true);
            headers.insert("x-api-key", value);
        }
        let http = crate::transport::http_client(headers, &self.deadlines, self.io_runtime)?;
        let provider = format!("anthropic at {}", crate::transport::display_url(&base_url));
        let native = Some(Strategy::Native);
        let capabilities = Capabilities {
            backend: provider.clone(),
            provider: "anthropic".to_string(),
            streaming: true,
            streaming_usage: true,
            streaming_tools: true,
            tools: true,
            forced_tool_choice: true,
            seed: false,
            images: true,
            constraints: ConstraintSupport { json_object: native, json_schema: native, ..ConstraintSupport::none() },
        };
        Ok(AnthropicClient {
            inner: Arc::new(Inner {
                http,
                messages_url: format!("{base_url}/v1/messages"),
                base_url,
                provider,
                api_key: self.api_key,
                header_names: self.headers.into_iter().map(|(name, _)| name).collect(),
                model: self.model,
                max_tokens: self.max_tokens,
                prompt_cache: self.prompt_cache,
                deadlines: self.deadlines,
                secrets,
                capabilities,
            }),
        })
    }
}

/// Shared state of a client and its streams.
pub(crate) struct Inner {
    http: HttpClient,
    base_url: String,
    messages_url: String,
    /// `"anthropic at <base url>"`, the `provider` of errors.
    pub(crate) provider: String,
    api_key: Option<ApiKey>,
    header_names: Vec<String>,
    model: Option<String>,
    max_tokens: u32,
    prompt_cache: PromptCache,
    deadlines: Deadlines,
    secrets: Secrets,
    capabilities: Capabilities,
}

impl Inner {
    /// The error with the client's secrets (key, base URL password, credential headers) taken out of every text
    /// that came from the server or the transport.
    pub(crate) fn redact_error(&self, e: Error) -> Error {
        self.secrets.redact_error(e)
    }

    /// Maps a failure that has no HTTP status to [`Error::Deadline`] or [`Error::Transport`] naming the endpoint.
    pub(crate) fn transport_error(&self, e: catena_http::Error) -> Error {
        crate::transport::transport_error(e, &self.provider, "anthropic", &self.messages_url, &self.secrets)
    }

    /// POSTs the body under the client's deadlines; returns the response when its status is 2xx, [`Error::Http`]
    /// (the body read up to 1 MiB, the key redacted) otherwise.
    async fn post(&self, body: Vec<u8>, accept: &'static str, answer: Answer) -> Result<catena_http::Response> {
        let request = self
            .http
            .reqwest()
            .post(&self.messages_url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, accept)
            .body(body)
            .build()
            .map_err(|e| self.transport_error(e.into()))?;
        let response =
            self.http.execute_within(request, self.deadlines, answer).await.map_err(|e| self.transport_error(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(crate::transport::http_error(response, &self.provider, &self.secrets).await)
    }
}

/// A client for Anthropic's Messages API, or any server that speaks it. Cheap to clone (one `Arc`),
/// `Send + Sync`; clones share the connection pool.
///
/// Build it with [`AnthropicClient::builder`] or [`AnthropicClient::from_env`] and use it as an [`Llm`]. The
/// [module documentation](self) says how requests and answers map to the wire.
#[derive(Clone)]
pub struct AnthropicClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for AnthropicClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("AnthropicClient")
            .field("base_url", &crate::transport::display_url(&i.base_url))
            .field("model", &i.model)
            .field("max_tokens", &i.max_tokens)
            .field("prompt_cache", &i.prompt_cache)
            .field("api_key", &i.api_key)
            .field("headers", &i.header_names)
            .field("deadlines", &i.deadlines)
            .field("io_runtime", &i.http.io_runtime())
            .field("capabilities", &i.capabilities)
            .finish()
    }
}

/// `anthropic at <base url> (model <model>)`.
impl fmt::Display for AnthropicClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner.provider)?;
        match &self.inner.model {
            Some(m) => write!(f, " (model {m})"),
            None => write!(f, " (no default model)"),
        }
    }
}

impl AnthropicClient {
    /// The chat stream this client makes of a response body (`chunks`), for the fuzz targets and property tests.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn stream_of(&self, chunks: Vec<bytes::Bytes>) -> ChatStream {
        let body = futures::stream::iter(chunks.into_iter().map(Ok));
        Box::pin(stream::AnthropicStream::new(body, self.inner.clone(), None))
    }

    /// A builder with Anthropic's URL; see [`AnthropicBuilder`].
    pub fn builder() -> AnthropicBuilder {
        AnthropicBuilder::new()
    }

    /// A client configured from the environment; see [`AnthropicBuilder::from_env`] for the variables.
    ///
    /// # Errors
    /// [`Error::Config`]: `ANTHROPIC_API_KEY` is not set while `ANTHROPIC_BASE_URL` is unset or points at
    /// `api.anthropic.com`, or a variable is not UTF-8 or not a URL.
    pub fn from_env() -> Result<Self> {
        AnthropicBuilder::from_env()?.build()
    }

    /// The API root requests go to (without a trailing `/`); the endpoint is `<base_url>/v1/messages`.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The `max_tokens` sent when a request sets none.
    pub fn max_tokens(&self) -> u32 {
        self.inner.max_tokens
    }

    /// Where the client's connections run (see [`AnthropicBuilder::io_runtime`]).
    pub fn io_runtime(&self) -> IoRuntime {
        self.inner.http.io_runtime()
    }

    /// Checks the request, resolves the model and `max_tokens`, and encodes the body.
    fn prepare(&self, request: &ChatRequest, streaming: bool) -> Result<(Vec<u8>, Option<StructuredOutput>)> {
        let inner = &self.inner;
        if request.constraint.is_some() && (!request.tools.is_empty() || request.tool_choice.is_some()) {
            return Err(Error::InvalidInput(
                "on Anthropic, ChatRequest::constraint is enforced with a forced tool of its own, so it cannot be \
                 combined with tools or a tool choice; keep one of the two"
                    .into(),
            ));
        }
        inner.capabilities.check(request, streaming)?;
        if let Some(ToolChoice::Tool(name)) = &request.tool_choice {
            if !request.tools.iter().any(|t| &t.name == name) {
                return Err(Error::InvalidInput(format!(
                    "ToolChoice::Tool(\"{name}\") names no tool of the request; add the tool or choose another"
                )));
            }
        }
        let model = match (&request.model, &inner.model) {
            (Some(m), _) | (None, Some(m)) => m.as_str(),
            (None, None) => {
                return Err(Error::config(
                    "CATENA_MODEL",
                    "is not set and the request names no model",
                    "export CATENA_MODEL=<model>, call AnthropicBuilder::model(\"<model>\"), or use \
                     ChatRequest::with_model",
                ))
            }
        };
        let max_tokens = request.max_tokens.unwrap_or(inner.max_tokens);
        let (body, structured) =
            wire::encode_request(request, model, max_tokens, streaming, &inner.capabilities.backend)?;
        if inner.prompt_cache == PromptCache::Off {
            return Ok((serde_json::to_vec(&body)?, structured));
        }
        let mut body = serde_json::to_value(&body)?;
        wire::mark_cache_breakpoints(&mut body, inner.prompt_cache == PromptCache::Conversation);
        Ok((serde_json::to_vec(&body)?, structured))
    }
}

#[async_trait]
impl Llm for AnthropicClient {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities.clone()
    }

    fn default_model(&self) -> Option<String> {
        self.inner.model.clone()
    }

    /// Sends the request and waits for the whole answer.
    ///
    /// # Errors
    /// [`Error::Unsupported`] (before sending) when the request asks for more than [`Llm::capabilities`] (a seed,
    /// a regex constraint, ...); [`Error::Config`] when neither the request nor the client names a model;
    /// [`Error::InvalidInput`] for messages the wire format cannot carry; [`Error::Http`] for non-2xx answers;
    /// [`Error::Transport`] / [`Error::Timeout`] when no answer came; [`Error::Decode`] for unexpected bodies.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let (body, structured) = self.prepare(&request, false)?;
        let inner = &self.inner;
        let response = inner.post(body, "application/json", Answer::Whole).await?;
        let bytes = response.bytes().await.map_err(|e| inner.redact_error(inner.transport_error(e)))?;
        wire::decode_message(&inner.provider, &bytes, structured).map_err(|e| inner.redact_error(e))
    }

    /// Sends the request and streams the answer. The stream owns a clone of the client; dropping it closes the
    /// connection.
    ///
    /// # Errors
    /// As `chat`, for everything up to the response headers; later failures (an `error` event, a stream that ends
    /// before `message_stop`, malformed events) are items of the stream. A server that answers with one JSON
    /// message instead of an event stream has sent the whole answer: the stream yields it as one chunk.
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let (body, structured) = self.prepare(&request, true)?;
        let inner = &self.inner;
        let response = inner.post(body, "text/event-stream", Answer::Streamed).await?;
        if crate::transport::media_type(&response) == "application/json" {
            // The whole message in one document (a proxy that does not stream): it is the complete answer.
            let bytes = response.bytes().await.map_err(|e| inner.redact_error(inner.transport_error(e)))?;
            let whole = wire::decode_message(&inner.provider, &bytes, structured).map_err(|e| inner.redact_error(e))?;
            return Ok(Box::pin(futures::stream::once(async move { Ok(ChatChunk::from(whole)) })));
        }
        Ok(Box::pin(stream::AnthropicStream::new(response.bytes_stream(), inner.clone(), structured)))
    }
}

/// A `thinking` block of an answer: the model's reasoning (extended thinking) and the signature Anthropic uses to
/// check it when it is sent back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Thinking {
    /// The reasoning text.
    pub thinking: String,
    /// The block's signature (empty when the server sent none).
    pub signature: String,
}

/// The `thinking` blocks of an answer of an [`AnthropicClient`], in order, read from its
/// [`raw`](ChatResponse::raw) JSON: the message of `chat`, or the array of event payloads of a folded stream
/// (`thinking_delta` and `signature_delta` events joined per block). `redacted_thinking` blocks are not included.
///
/// ```
/// use catena_core::{ChatResponse, Message};
/// use catena_providers::anthropic::{thinking, Thinking};
/// let raw = serde_json::json!({"content": [
///     {"type": "thinking", "thinking": "27 * 453 = 12,231", "signature": "EqQB"},
///     {"type": "text", "text": "12,231"}]});
/// let response = ChatResponse { message: Message::assistant("12,231"), finish_reason: None, usage: None,
///     model: String::new(), raw };
/// assert_eq!(thinking(&response), vec![Thinking { thinking: "27 * 453 = 12,231".into(), signature: "EqQB".into() }]);
/// ```
pub fn thinking(response: &ChatResponse) -> Vec<Thinking> {
    let text = |v: &serde_json::Value, key: &str| {
        v.get(key).and_then(serde_json::Value::as_str).unwrap_or_default().to_string()
    };
    match &response.raw {
        serde_json::Value::Object(message) => message
            .get("content")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter(|block| block.get("type").and_then(serde_json::Value::as_str) == Some("thinking"))
            .map(|block| Thinking { thinking: text(block, "thinking"), signature: text(block, "signature") })
            .collect(),
        serde_json::Value::Array(events) => {
            let mut blocks: Vec<(u64, Thinking)> = Vec::new();
            for event in events {
                let index = event.get("index").and_then(serde_json::Value::as_u64);
                match (event.get("type").and_then(serde_json::Value::as_str), index) {
                    (Some("content_block_start"), Some(index)) => {
                        let block = &event["content_block"];
                        if block.get("type").and_then(serde_json::Value::as_str) == Some("thinking") {
                            let start =
                                Thinking { thinking: text(block, "thinking"), signature: text(block, "signature") };
                            blocks.push((index, start));
                        }
                    }
                    (Some("content_block_delta"), Some(index)) => {
                        let Some((_, block)) = blocks.iter_mut().rev().find(|(i, _)| *i == index) else { continue };
                        let delta = &event["delta"];
                        match delta.get("type").and_then(serde_json::Value::as_str) {
                            Some("thinking_delta") => block.thinking.push_str(&text(delta, "thinking")),
                            Some("signature_delta") => block.signature.push_str(&text(delta, "signature")),
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
            blocks.into_iter().map(|(_, block)| block).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_rejects_bad_settings() {
        let err = AnthropicClient::builder().build().unwrap_err().to_string();
        assert!(err.contains("ANTHROPIC_API_KEY"), "{err}");
        let err = AnthropicClient::builder().base_url("not a url").build().unwrap_err().to_string();
        assert!(err.contains("base_url"), "{err}");
        let err = AnthropicClient::builder().base_url("http://h").max_tokens(0).build().unwrap_err().to_string();
        assert!(err.contains("max_tokens"), "{err}");
        let ok = AnthropicClient::builder().base_url("http://h:1/").build().unwrap();
        assert_eq!(ok.base_url(), "http://h:1");
        assert_eq!(ok.max_tokens(), DEFAULT_MAX_TOKENS);
        assert!(!ok.capabilities().seed);
    }
}
