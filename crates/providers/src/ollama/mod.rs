//! Ollama's native API, natively: [`OllamaClient`] implements [`Llm`] over `POST /api/chat` (plain, or streamed
//! as newline-delimited JSON) and [`OllamaEmbedder`] implements [`Embedder`] over `POST /api/embed`, against a
//! local `ollama serve`, a hosted Ollama (with a bearer key), or any server that speaks the same API.
//!
//! (Ollama also serves an OpenAI-compatible `/v1`, which [`crate::openai`] reaches with its `Compat::Ollama`
//! profile. The native API adds `keep_alive`, JSON Schema `format` on every version, and exact token counts in
//! every stream.)
//!
//! # Mapping
//!
//! | catena | Ollama |
//! |---|---|
//! | messages | `messages` `[{role, content}]`, roles `system`, `user`, `assistant`, `tool`; the text parts joined into `content` |
//! | image parts | `images`: the base64 data of a `data:<type>;base64,<data>` URL (Ollama takes no image URLs: an `http(s)` URL is [`Error::InvalidInput`]) |
//! | assistant [`ToolCall`](catena_core::ToolCall)s | `tool_calls` `[{id, function: {name, arguments}}]`, the arguments as a JSON object (empty arguments as `{}`) |
//! | [`Role::Tool`](catena_core::Role::Tool) messages | `{"role": "tool", content, tool_name}`; catena's tool results carry only the call's id, so `tool_name` is the name of the call with that id in the nearest earlier assistant message (left out when there is none) |
//! | `tools` | `tools` `[{"type": "function", function: {name, description, parameters}}]` |
//! | [`ToolChoice::Auto`](catena_core::ToolChoice::Auto) | the default |
//! | [`ToolChoice::None`](catena_core::ToolChoice::None) | the tools are not sent |
//! | `ToolChoice::Required`, `ToolChoice::Tool(name)` | none: Ollama cannot force a tool call, so [`Capabilities::forced_tool_choice`] is `false` and such a request fails with [`Error::Unsupported`] before sending |
//! | `temperature`, `top_p`, `max_tokens`, `stop`, `seed` | `options.temperature`, `.top_p`, `.num_predict`, `.stop`, `.seed` (`options` only when one is set) |
//! | [`OllamaBuilder::keep_alive`] | `keep_alive` in every request |
//!
//! Ollama's `think` (reasoning models) is not sent: [`ChatRequest`] has no such setting, so the model's default
//! applies. An answer's `message.thinking` is kept in [`ChatResponse::raw`](catena_core::ChatResponse::raw) only.
//!
//! In answers, `message.content` is the text; `message.tool_calls` (Ollama sends each call whole, its
//! `function.arguments` a JSON object) become [`ToolCall`](catena_core::ToolCall)s whose `arguments` is that
//! object's JSON text without whitespace outside strings (key order as the server wrote it). A call without an
//! `id` gets a stable one, `call_<position>_<hash of name and arguments>`, the same whether the answer came
//! whole or streamed. `done_reason` becomes a [`FinishReason`](catena_core::FinishReason): `stop` -> `Stop` (or
//! `ToolCalls` when the answer calls tools: Ollama says `stop` then), `length` -> `Length`, anything else
//! (`load`, `unload`, ...) -> `Other`. `prompt_eval_count` and `eval_count` become the [`Usage`](catena_core::Usage)
//! (a missing count is 0: Ollama leaves `prompt_eval_count` out when the whole prompt came from its cache).
//!
//! Streams are one JSON object per line; the last has `"done": true`, the done reason and the counts, so the
//! folded stream ends with the same usage and finish reason as `chat`. A stream that ends without that line is
//! an [`Error::Transport`] (the answer is incomplete), never a silently short answer. A streaming request
//! answered with one JSON document (`application/json`) is accepted and yields the whole answer as one chunk;
//! a plain request answered with a stream (`application/x-ndjson`) is accepted too, its lines folded.
//! Lines are split incrementally: HTTP chunks may cut them anywhere, and one line may be at most 16 MiB.
//!
//! # Structured output
//!
//! [`Constraint::JsonObject`](catena_core::Constraint::JsonObject) is sent as `"format": "json"` and
//! [`Constraint::JsonSchema`](catena_core::Constraint::JsonSchema) as `"format": <the schema>` (`true` as `{}`),
//! both declared [`Strategy::Native`] in [`Capabilities::constraints`]; `catena_constraint::structured`
//! validates the answer as for every strategy. Regex, choice and grammar constraints are not declared: they
//! fail with [`Error::Unsupported`] before sending (and `catena_constraint::structured` falls back to
//! validate-and-repair).
//!
//! # Errors
//!
//! Non-2xx answers are [`Error::Http`] with the status, `Retry-After` and the body (read up to 1 MiB); its
//! Display is one line: Ollama's `{"error": "..."}` message and what the status means. An `{"error": "..."}`
//! document inside a 200 answer (a whole answer, or a line of a stream) is an [`Error::Http`] too, the document as
//! its body: status 404 when Ollama says the model is not found (pull it on the server: `ollama pull <model>`),
//! else 500 (retryable). The API key never appears in
//! errors, `Debug` or `Display` output, even when a server echoes it back: every occurrence is replaced by
//! `[redacted]`.
//!
//! # Example
//!
//! ```no_run
//! use catena_core::{ChatRequest, Embedder, Llm, Message};
//! use catena_providers::ollama::OllamaClient;
//!
//! # async fn run() -> catena_core::Result<()> {
//! // OLLAMA_HOST (default http://127.0.0.1:11434), OLLAMA_API_KEY (hosted Ollama only) and CATENA_MODEL.
//! let client = OllamaClient::from_env()?;
//! let request = ChatRequest::new(vec![Message::system("Be brief."), Message::user("Say hi")]).with_max_tokens(64);
//! let answer = client.chat(request).await?;
//! println!("{answer}");
//!
//! let embedder = client.embedder("all-minilm", 384);
//! let vectors = embedder.embed_documents(&["Why is the sky blue?".to_string()]).await?;
//! assert_eq!(vectors[0].len(), 384);
//! # Ok(()) }
//! ```

mod ndjson;
mod stream;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use catena_core::{
    async_trait, Capabilities, ChatChunk, ChatRequest, ChatResponse, ChatStream, ConstraintSupport, Embedder, Error,
    Llm, Result, Strategy,
};
use catena_http::HttpClient;
pub use catena_http::IoRuntime;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};

use crate::transport::{Answer, Deadlines, Secrets, DEFAULT_DEADLINES};
use serde_json::Value;

pub use crate::openai::ApiKey;

/// Where a local Ollama listens: the default of [`OllamaBuilder`] and of [`OllamaClient::from_env`].
pub const OLLAMA_HOST: &str = "http://127.0.0.1:11434";

/// The port a host given without one (`OLLAMA_HOST=my-server`) gets: Ollama's, 11434.
pub const DEFAULT_PORT: u16 = 11434;

/// How long Ollama keeps the model in memory after a request (`keep_alive`; see [`OllamaBuilder::keep_alive`]).
///
/// ```
/// use std::time::Duration;
/// use catena_providers::ollama::KeepAlive;
/// assert_eq!(KeepAlive::For(Duration::from_secs(600)).to_json(), serde_json::json!("600s"));
/// assert_eq!(KeepAlive::For(Duration::from_millis(1500)).to_json(), serde_json::json!("1500ms"));
/// assert_eq!(KeepAlive::Forever.to_json(), serde_json::json!(-1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// This long after the request (`Duration::ZERO` unloads the model as soon as the answer is complete).
    For(Duration),
    /// Until the server stops (`-1`).
    Forever,
}

impl KeepAlive {
    /// The `keep_alive` value sent: a duration string (`"600s"`, `"1500ms"`) or `-1`.
    pub fn to_json(self) -> Value {
        match self {
            KeepAlive::For(d) if d.subsec_nanos() == 0 => Value::String(format!("{}s", d.as_secs())),
            KeepAlive::For(d) => Value::String(format!("{}ms", d.as_millis().max(1))),
            KeepAlive::Forever => Value::from(-1),
        }
    }
}

/// Configures an [`OllamaClient`]. Start with [`OllamaClient::builder`] ([`OLLAMA_HOST`], no key, no model, no
/// `keep_alive`, [`DEFAULT_DEADLINES`]) or [`OllamaBuilder::from_env`].
///
/// ```
/// use std::time::Duration;
/// use catena_providers::ollama::{KeepAlive, OllamaClient};
/// let client = OllamaClient::builder()
///     .host("gpu-box:11500")
///     .model("llama3.2")
///     .keep_alive(KeepAlive::For(Duration::from_secs(600)))
///     .api_key("secret-key")
///     .timeout(Duration::from_secs(60))
///     .build()
///     .unwrap();
/// assert_eq!(client.host(), "http://gpu-box:11500");
/// assert_eq!(client.to_string(), "ollama at http://gpu-box:11500 (model llama3.2)");
/// assert!(!format!("{client:?}").contains("secret-key"));
/// ```
#[derive(Clone)]
pub struct OllamaBuilder {
    host: String,
    api_key: Option<ApiKey>,
    model: Option<String>,
    keep_alive: Option<KeepAlive>,
    deadlines: Deadlines,
    headers: Vec<(String, String)>,
    io_runtime: IoRuntime,
}

impl fmt::Debug for OllamaBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OllamaBuilder")
            .field("host", &self.host)
            .field("api_key", &self.api_key)
            .field("model", &self.model)
            .field("keep_alive", &self.keep_alive)
            .field("deadlines", &self.deadlines)
            .field("headers", &self.headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>())
            .field("io_runtime", &self.io_runtime)
            .finish()
    }
}

impl Default for OllamaBuilder {
    fn default() -> Self {
        OllamaBuilder::new()
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

/// `OLLAMA_HOST` as Ollama's own tools read it: a URL, or `host`, `host:port`, `:port` without a scheme
/// (`http://` is added, and port 11434 when none is given; an empty host is 127.0.0.1). No trailing `/`.
fn normalize_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('/');
    if host.contains("://") {
        return host.to_string();
    }
    let (authority, path) = match host.find('/') {
        Some(i) => host.split_at(i),
        None => (host, ""),
    };
    let authority = if authority.is_empty() || authority.starts_with(':') {
        format!("127.0.0.1{authority}")
    } else {
        authority.to_string()
    };
    // A port follows the last ':' that is not inside an IPv6 literal's brackets.
    let has_port = match authority.rfind(']') {
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port {
        format!("http://{authority}{path}")
    } else {
        format!("http://{authority}:{DEFAULT_PORT}{path}")
    }
}

fn is_hosted_ollama(url: &str) -> bool {
    reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(|h| h.eq_ignore_ascii_case("ollama.com"))) == Some(true)
}

impl OllamaBuilder {
    /// [`OLLAMA_HOST`], no key, no model, no `keep_alive` (the server's default, 5 minutes), [`DEFAULT_DEADLINES`],
    /// no extra headers, connections on [`IoRuntime::detect`]'s choice.
    pub fn new() -> Self {
        OllamaBuilder {
            host: OLLAMA_HOST.to_string(),
            api_key: None,
            model: None,
            keep_alive: None,
            deadlines: DEFAULT_DEADLINES,
            headers: Vec::new(),
            io_runtime: IoRuntime::detect(),
        }
    }

    /// A builder configured from the environment:
    ///
    /// | variable | sets | when unset |
    /// |---|---|---|
    /// | `OLLAMA_HOST` | [`host`](Self::host) (`host:port` without a scheme, or a URL) | [`OLLAMA_HOST`] |
    /// | `OLLAMA_API_KEY` | [`api_key`](Self::api_key) | no key (a local Ollama needs none) |
    /// | `CATENA_MODEL` | [`model`](Self::model) | no default model |
    ///
    /// Empty variables count as unset.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable when one is not UTF-8.
    pub fn from_env() -> Result<Self> {
        let mut b = OllamaBuilder::new();
        if let Some(host) = env_var("OLLAMA_HOST")? {
            b.host = host;
        }
        b.api_key = env_var("OLLAMA_API_KEY")?.map(ApiKey::from);
        b.model = env_var("CATENA_MODEL")?;
        Ok(b)
    }

    /// Where Ollama listens: a URL (`http://127.0.0.1:11434`, `https://ollama.com`, a reverse proxy's
    /// `https://example.com/ollama`) or, as `OLLAMA_HOST` allows, `host`, `host:port` or `:port` without a
    /// scheme (then `http://`, and port 11434 when none is given). Requests go to `<host>/api/chat` and
    /// `<host>/api/embed`.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// The key sent as `Authorization: Bearer <key>` (hosted Ollama; a local server needs none).
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The model used when a request names none (`llama3.2`, `qwen3:8b`, ...).
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// How long the server keeps the model loaded after each request (chat and embeddings); unset, the
    /// server's default (5 minutes, or its `OLLAMA_KEEP_ALIVE`) applies.
    pub fn keep_alive(mut self, keep_alive: KeepAlive) -> Self {
        self.keep_alive = Some(keep_alive);
        self
    }

    /// The longest a call may take, from sending the request to the end of the answer (streamed or not): sets
    /// the total deadline to `timeout` and lowers the other [`deadlines`](Self::deadlines) to it when they are
    /// longer. Passing it gives [`Error::Deadline`] naming the endpoint and the deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.deadlines = crate::transport::with_timeout(self.deadlines, timeout);
        self
    }

    /// Every deadline of a call: connecting, the first chunk of a streamed answer (loading the model into memory
    /// is part of a first request), the silence between two chunks, and the whole call (default
    /// [`DEFAULT_DEADLINES`]; `None` for no limit of a kind). Passing one gives [`Error::Deadline`] naming the
    /// endpoint and the deadline, which a retry layer may retry.
    pub fn deadlines(mut self, deadlines: Deadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Adds a header sent with every request (for a proxy in front of Ollama). Its value is never printed.
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
    /// [`Error::Config`] when the host is not an `http(s)` URL, `ollama.com` is used without a key (naming
    /// `OLLAMA_API_KEY`), a header name or value or the key is not valid in a header, or a deadline is 0.
    pub fn build(self) -> Result<OllamaClient> {
        let host = normalize_host(&self.host);
        let hint = "pass a URL such as http://127.0.0.1:11434, or host:port";
        let parsed = reqwest::Url::parse(&host).map_err(|e| {
            Error::config("host (OLLAMA_HOST)", format!("is `{}`, which is not a valid URL ({e})", self.host), hint)
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(Error::config(
                "host (OLLAMA_HOST)",
                format!("is `{}`, which is not an http(s) URL with a host", self.host),
                hint,
            ));
        }
        if self.api_key.is_none() && is_hosted_ollama(&host) {
            return Err(Error::config(
                "OLLAMA_API_KEY",
                "is not set, and ollama.com requires a key",
                "export OLLAMA_API_KEY=<your key> or call OllamaBuilder::api_key; for a local server set \
                 OLLAMA_HOST (or OllamaBuilder::host) to its address",
            ));
        }
        crate::transport::check_deadlines(&self.deadlines, "OllamaBuilder")?;
        let mut secrets = Secrets::new();
        if let Ok(url) = reqwest::Url::parse(&host) {
            secrets.add_url(&url);
        }
        let mut headers = crate::transport::header_map(&self.headers, &mut secrets)?;
        if let Some(key) = &self.api_key {
            secrets.add(key.expose());
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                Error::config(
                    "api_key (OLLAMA_API_KEY)",
                    "contains characters not allowed in HTTP headers",
                    "check the key for line breaks or stray characters",
                )
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = crate::transport::http_client(headers, &self.deadlines, self.io_runtime)?;
        let provider = format!("ollama at {}", crate::transport::display_url(&host));
        let native = Some(Strategy::Native);
        let capabilities = Capabilities {
            backend: provider.clone(),
            provider: "ollama".to_string(),
            streaming: true,
            streaming_usage: true,
            streaming_tools: true,
            tools: true,
            forced_tool_choice: false,
            seed: true,
            images: true,
            constraints: ConstraintSupport { json_object: native, json_schema: native, ..ConstraintSupport::none() },
        };
        Ok(OllamaClient {
            inner: Arc::new(Inner {
                http,
                chat_url: format!("{host}/api/chat"),
                embed_url: format!("{host}/api/embed"),
                host,
                provider,
                api_key: self.api_key,
                header_names: self.headers.into_iter().map(|(name, _)| name).collect(),
                model: self.model,
                keep_alive: self.keep_alive.map(KeepAlive::to_json),
                deadlines: self.deadlines,
                secrets,
                capabilities,
            }),
        })
    }
}

/// Shared state of a client, its streams and its embedders.
pub(crate) struct Inner {
    http: HttpClient,
    host: String,
    chat_url: String,
    embed_url: String,
    /// `"ollama at <host>"`, the `provider` of errors.
    pub(crate) provider: String,
    api_key: Option<ApiKey>,
    header_names: Vec<String>,
    model: Option<String>,
    keep_alive: Option<Value>,
    deadlines: Deadlines,
    secrets: Secrets,
    capabilities: Capabilities,
}

impl Inner {
    /// The error with the client's secrets (key, host password, credential headers) taken out of every text that
    /// came from the server or the transport.
    pub(crate) fn redact_error(&self, e: Error) -> Error {
        self.secrets.redact_error(e)
    }

    /// Maps a failure that has no HTTP status to [`Error::Deadline`] or [`Error::Transport`] naming the endpoint
    /// (with a hint when no connection could be made).
    pub(crate) fn transport_error(&self, e: catena_http::Error, url: &str) -> Error {
        let refused = e.is_connect() && e.deadline().is_none();
        match crate::transport::transport_error(e, &self.provider, "ollama", url, &self.secrets) {
            Error::Transport { provider, message, source } if refused => Error::Transport {
                provider,
                message: format!(
                    "{message} (is Ollama running there? start it with `ollama serve`, or set OLLAMA_HOST)"
                ),
                source,
            },
            other => other,
        }
    }

    /// POSTs the body under the client's deadlines; returns the response when its status is 2xx, [`Error::Http`]
    /// (the body read up to 1 MiB) otherwise.
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

    /// The request's model, else the client's.
    fn model_for<'a>(&'a self, requested: Option<&'a str>) -> Result<&'a str> {
        requested.or(self.model.as_deref()).ok_or_else(|| {
            Error::config(
                "CATENA_MODEL",
                "is not set and the request names no model",
                "export CATENA_MODEL=<model>, call OllamaBuilder::model(\"<model>\"), or use ChatRequest::with_model",
            )
        })
    }
}

/// A client for Ollama's native API, or any server that speaks it. Cheap to clone (one `Arc`), `Send + Sync`;
/// clones share the connection pool.
///
/// Build it with [`OllamaClient::builder`] or [`OllamaClient::from_env`] and use it as an [`Llm`]; get
/// [`OllamaEmbedder`]s from it with [`OllamaClient::embedder`] or [`OllamaClient::discover_embedder`]. The
/// [module documentation](self) says how requests and answers map to the wire.
#[derive(Clone)]
pub struct OllamaClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for OllamaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("OllamaClient")
            .field("host", &i.host)
            .field("model", &i.model)
            .field("api_key", &i.api_key)
            .field("keep_alive", &i.keep_alive)
            .field("headers", &i.header_names)
            .field("deadlines", &i.deadlines)
            .field("io_runtime", &i.http.io_runtime())
            .field("capabilities", &i.capabilities)
            .finish()
    }
}

/// `ollama at <host> (model <model>)`.
impl fmt::Display for OllamaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner.provider)?;
        match &self.inner.model {
            Some(m) => write!(f, " (model {m})"),
            None => write!(f, " (no default model)"),
        }
    }
}

impl OllamaClient {
    /// The chat stream this client makes of a response body (`chunks`), for the fuzz targets and property tests.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn stream_of(&self, chunks: Vec<bytes::Bytes>) -> ChatStream {
        let body = futures::stream::iter(chunks.into_iter().map(Ok));
        Box::pin(stream::OllamaStream::new(body, self.inner.clone()))
    }

    /// A builder for a local Ollama; see [`OllamaBuilder`].
    pub fn builder() -> OllamaBuilder {
        OllamaBuilder::new()
    }

    /// A client configured from the environment; see [`OllamaBuilder::from_env`] for the variables.
    ///
    /// # Errors
    /// [`Error::Config`]: `OLLAMA_HOST` is not a URL or `host:port`, it points at `ollama.com` while
    /// `OLLAMA_API_KEY` is not set, or a variable is not UTF-8.
    pub fn from_env() -> Result<Self> {
        OllamaBuilder::from_env()?.build()
    }

    /// The server's URL (scheme, host, port, and any path prefix; no trailing `/`).
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Where the client's connections run (see [`OllamaBuilder::io_runtime`]).
    pub fn io_runtime(&self) -> IoRuntime {
        self.inner.http.io_runtime()
    }

    /// An embedder for `model` whose vectors have `dimensions` entries (every answer is checked against it).
    pub fn embedder(&self, model: impl Into<String>, dimensions: usize) -> OllamaEmbedder {
        OllamaEmbedder { client: self.clone(), model: model.into(), dimensions, truncate: None, send_dimensions: false }
    }

    /// An embedder for `model` whose dimensions are learnt by embedding one short probe text now.
    ///
    /// # Errors
    /// As [`Embedder::embed_query`]; [`Error::Decode`] when the server returns an empty vector.
    pub async fn discover_embedder(&self, model: impl Into<String>) -> Result<OllamaEmbedder> {
        let model = model.into();
        let probe = self.embed_checked(&model, wire::EmbedInput::One("dimension probe"), 1, None, None).await?;
        let dimensions = probe.first().map_or(0, Vec::len);
        if dimensions == 0 {
            return Err(Error::Decode {
                provider: self.inner.provider.clone(),
                message: format!("embedding model `{model}` returned an empty vector for a probe text"),
            });
        }
        Ok(self.embedder(model, dimensions))
    }

    /// Checks the request, resolves the model, and encodes the body.
    fn prepare(&self, request: &ChatRequest, streaming: bool) -> Result<Vec<u8>> {
        let inner = &self.inner;
        inner.capabilities.check(request, streaming)?;
        let model = inner.model_for(request.model.as_deref())?;
        let body =
            wire::encode_chat(request, model, streaming, inner.keep_alive.as_ref(), &inner.capabilities.backend)?;
        Ok(serde_json::to_vec(&body)?)
    }

    /// One `/api/embed` call; `count` is the number of inputs, `expected` the vector length every answer must
    /// have.
    async fn embed_checked(
        &self,
        model: &str,
        input: wire::EmbedInput<'_>,
        count: usize,
        truncate: Option<bool>,
        request_dimensions: Option<usize>,
    ) -> Result<Vec<Vec<f32>>> {
        let inner = &self.inner;
        let body = wire::EmbedBody {
            model,
            input,
            truncate,
            dimensions: request_dimensions,
            keep_alive: inner.keep_alive.as_ref(),
        };
        let response =
            inner.post(&inner.embed_url, serde_json::to_vec(&body)?, "application/json", Answer::Whole).await?;
        let bytes = response.bytes().await.map_err(|e| inner.transport_error(e, &inner.embed_url))?;
        let answer: wire::EmbedAnswer = serde_json::from_slice(&bytes).map_err(|e| {
            inner.redact_error(wire::decode_error(&inner.provider, "response is not an Ollama embed answer", e, &bytes))
        })?;
        if answer.embeddings.len() != count {
            return Err(Error::Decode {
                provider: inner.provider.clone(),
                message: format!(
                    "embedding model `{model}` returned {} vectors for {count} inputs",
                    answer.embeddings.len()
                ),
            });
        }
        if let Some(t) = answer.prompt_eval_count {
            catena_core::layer::record_embedding_usage(t);
        }
        Ok(answer.embeddings)
    }
}

#[async_trait]
impl Llm for OllamaClient {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities.clone()
    }

    fn default_model(&self) -> Option<String> {
        self.inner.model.clone()
    }

    /// Sends the request (`"stream": false`) and waits for the whole answer.
    ///
    /// # Errors
    /// [`Error::Unsupported`] (before sending) when the request asks for more than [`Llm::capabilities`] (a
    /// forced tool choice, a regex constraint, ...); [`Error::Config`] when neither the request nor the client
    /// names a model; [`Error::InvalidInput`] for messages the wire format cannot carry (image URLs, tool-call
    /// arguments that are not objects); [`Error::Http`] for non-2xx answers and `{"error": ...}` bodies;
    /// [`Error::Transport`] / [`Error::Timeout`] when no answer came; [`Error::Decode`] for unexpected bodies.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let body = self.prepare(&request, false)?;
        let inner = &self.inner;
        let response = inner.post(&inner.chat_url, body, "application/json", Answer::Whole).await?;
        if is_ndjson(&response) {
            // A server that streams although asked not to: the lines folded, as a stream would be.
            let lines = stream::OllamaStream::new(response.bytes_stream(), inner.clone());
            return catena_core::collect_stream(Box::pin(lines)).await;
        }
        let bytes = response.bytes().await.map_err(|e| inner.transport_error(e, &inner.chat_url))?;
        wire::decode_chat(&inner.provider, &bytes).map_err(|e| inner.redact_error(e))
    }

    /// Sends the request (`"stream": true`) and streams the answer. The stream owns a clone of the client;
    /// dropping it closes the connection, which stops generation on the server.
    ///
    /// # Errors
    /// As `chat`, for everything up to the response headers; later failures (an `{"error": ...}` line, a stream
    /// that ends before its `done` line, malformed lines, a line over 16 MiB) are items of the stream.
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let body = self.prepare(&request, true)?;
        let inner = &self.inner;
        let response = inner.post(&inner.chat_url, body, "application/x-ndjson", Answer::Streamed).await?;
        if content_type(&response).starts_with("application/json") {
            // One whole answer (a server or proxy that does not stream): the answer as one chunk.
            let bytes = response.bytes().await.map_err(|e| inner.transport_error(e, &inner.chat_url))?;
            let item =
                wire::decode_chat(&inner.provider, &bytes).map(ChatChunk::from).map_err(|e| inner.redact_error(e));
            return Ok(Box::pin(futures::stream::iter([item])));
        }
        Ok(Box::pin(stream::OllamaStream::new(response.bytes_stream(), inner.clone())))
    }
}

/// The response's media type, lowercase (empty when there is none).
fn content_type(response: &catena_http::Response) -> String {
    response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().trim().to_ascii_lowercase()
}

/// Whether the body is newline-delimited JSON (`application/x-ndjson`, also spelled `application/ndjson` and
/// `application/jsonl`).
fn is_ndjson(response: &catena_http::Response) -> bool {
    let media = content_type(response);
    ["application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"]
        .iter()
        .any(|t| media.starts_with(t))
}

/// Embeddings from Ollama's `POST /api/embed`. Get one from [`OllamaClient::embedder`] or
/// [`OllamaClient::discover_embedder`].
///
/// `embed_documents` sends all texts in one request (`input` as an array; wrap the embedder in
/// [`catena_core::BatchedEmbedder`] to split large inputs), `embed_query` one text (`input` as a string). Every
/// vector is checked against [`Embedder::dimensions`].
#[derive(Debug, Clone)]
pub struct OllamaEmbedder {
    client: OllamaClient,
    model: String,
    dimensions: usize,
    truncate: Option<bool>,
    send_dimensions: bool,
}

impl OllamaEmbedder {
    /// Sends `truncate`: `true` cuts inputs longer than the model's context (Ollama's default), `false` makes
    /// them an error.
    pub fn with_truncate(mut self, truncate: bool) -> Self {
        self.truncate = Some(truncate);
        self
    }

    /// Also sends `dimensions` in every request, asking models that can shorten their vectors for exactly
    /// [`Embedder::dimensions`] entries (older servers ignore the field; the answer is checked either way).
    pub fn with_requested_dimensions(mut self) -> Self {
        self.send_dimensions = true;
        self
    }

    /// The client this embedder sends requests with.
    pub fn client(&self) -> &OllamaClient {
        &self.client
    }

    async fn embed(&self, input: wire::EmbedInput<'_>, count: usize) -> Result<Vec<Vec<f32>>> {
        let request_dimensions = self.send_dimensions.then_some(self.dimensions);
        let vectors = self.client.embed_checked(&self.model, input, count, self.truncate, request_dimensions).await?;
        if let Some((i, v)) = vectors.iter().enumerate().find(|(_, v)| v.len() != self.dimensions) {
            return Err(Error::Decode {
                provider: self.client.inner.provider.clone(),
                message: format!(
                    "embedding model `{}` returned a vector of length {} for input {i}, but the embedder was built \
                     for {} dimensions; pass the model's real dimensions or use OllamaClient::discover_embedder",
                    self.model,
                    v.len(),
                    self.dimensions
                ),
            });
        }
        Ok(vectors)
    }
}

#[async_trait]
impl Embedder for OllamaEmbedder {
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.embed(wire::EmbedInput::Many(texts), texts.len()).await
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let mut vectors = self.embed(wire::EmbedInput::One(text), 1).await?;
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
    fn hosts_are_read_as_ollama_host_is() {
        for (given, expected) in [
            ("127.0.0.1", "http://127.0.0.1:11434"),
            ("gpu-box:8080", "http://gpu-box:8080"),
            (":11500", "http://127.0.0.1:11500"),
            ("", "http://127.0.0.1:11434"),
            ("[::1]", "http://[::1]:11434"),
            ("[::1]:9", "http://[::1]:9"),
            ("example.com/ollama/", "http://example.com:11434/ollama"),
            ("https://ollama.com/", "https://ollama.com"),
            ("http://h:1", "http://h:1"),
        ] {
            assert_eq!(normalize_host(given), expected, "{given:?}");
        }
    }

    #[test]
    fn builder_rejects_bad_settings() {
        let err = OllamaClient::builder().host("https://ollama.com").build().unwrap_err().to_string();
        assert!(err.contains("OLLAMA_API_KEY"), "{err}");
        let err = OllamaClient::builder().host("ftp://x").build().unwrap_err().to_string();
        assert!(err.contains("OLLAMA_HOST"), "{err}");
        let err = OllamaClient::builder().timeout(Duration::ZERO).build().unwrap_err().to_string();
        assert!(err.contains("deadlines"), "{err}");
        let err = OllamaClient::builder().api_key("a\nb").build().unwrap_err().to_string();
        assert!(err.contains("OLLAMA_API_KEY") && !err.contains("a\nb"), "{err}");
        let ok = OllamaClient::builder().build().unwrap();
        assert_eq!(ok.host(), OLLAMA_HOST);
        let caps = ok.capabilities();
        assert!(caps.seed && caps.tools && caps.streaming_usage && !caps.forced_tool_choice);
        assert_eq!(caps.provider, "ollama");
    }
}
