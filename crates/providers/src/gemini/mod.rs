//! Google's Gemini API (`generateContent`), natively: [`GeminiClient`] implements [`Llm`], plain and streamed as
//! Server-Sent Events, against `generativelanguage.googleapis.com` (the Gemini API), Vertex AI
//! ([`GeminiApi::Vertex`]), or any server that speaks the same format (test servers such as llm-katan);
//! [`GeminiEmbedder`] implements [`Embedder`] (`embedContent`, `batchEmbedContents`).
//!
//! # Endpoints and authentication
//!
//! | [`GeminiApi`] | `chat` | `chat_stream` | default [`GeminiAuth`] |
//! |---|---|---|---|
//! | `Gemini` | `POST <base>/v1beta/models/<model>:generateContent` | `...:streamGenerateContent?alt=sse` | [`GeminiAuth::ApiKeyHeader`] (`x-goog-api-key`) |
//! | `Vertex { project, location }` | `POST <base>/v1/projects/<project>/locations/<location>/publishers/google/models/<model>:generateContent` | `...:streamGenerateContent?alt=sse` | [`GeminiAuth::Bearer`] (an OAuth access token) |
//!
//! A model name with a `/` (`tunedModels/my-model`) is used as the path as it is; a leading `models/` is dropped.
//! The base URL defaults to [`GEMINI_BASE_URL`] for the Gemini API and to `https://<location>-aiplatform.googleapis.com`
//! for Vertex AI (`https://aiplatform.googleapis.com` for the `global` location).
//!
//! # Mapping
//!
//! | catena | Gemini |
//! |---|---|
//! | [`Role::System`](catena_core::Role::System) messages | `systemInstruction` `{"parts": [{"text"}, ...]}`, one part per system message, wherever they stand |
//! | user messages | `contents` turns with role `user`: `text` parts, images as `inlineData {mimeType, data}` (a `data:<type>;base64,` URL) or `fileData {mimeType, fileUri}` (an `https://` or `gs://` URI ending in `.png`, `.jpg`, `.webp`, `.gif`, `.heic`, `.heif`) |
//! | assistant messages | turns with role `model`: `text` parts, then one `functionCall {id?, name, args}` part per [`ToolCall`](catena_core::ToolCall), with its `thoughtSignature` (see below); the arguments must be a JSON object (empty ones are sent as `{}`) |
//! | [`Role::Tool`](catena_core::Role::Tool) messages | `functionResponse {id?, name, response}` parts; consecutive results go in one `user` turn. The name is the one of the call the result answers (found by id in the earlier assistant messages). A result that is a JSON object is the `response`; any other text is sent as `{"output": "<text>"}` |
//! | `tools` | `tools: [{"functionDeclarations": [{name, description, parameters}]}]`, the parameters converted (below) and left out for a tool without arguments |
//! | [`ToolChoice`] `Auto`, `None`, `Required`, `Tool(name)` | `toolConfig.functionCallingConfig.mode` `AUTO`, `NONE`, `ANY`, `ANY` with `allowedFunctionNames: [name]` |
//! | `temperature`, `top_p`, `max_tokens`, `stop`, `seed` | `generationConfig` `temperature`, `topP`, `maxOutputTokens`, `stopSequences`, `seed` (a 32-bit integer: a larger seed is [`Error::InvalidInput`]); `candidateCount` is always 1 |
//!
//! In answers, the first candidate's `text` parts are concatenated into the message text (thought summaries,
//! parts with `"thought": true`, go to the message's [`reasoning`](catena_core::Message::reasoning) instead, with
//! the thought signature of a text part, which goes back on the text part of that turn) and its `functionCall`
//! parts become
//! [`ToolCall`](catena_core::ToolCall)s whose `arguments` is the `args` object as compact JSON text. Gemini sends
//! whole calls, never argument fragments, so a stream has one [`ToolCallDelta`](catena_core::ToolCallDelta) per
//! call.
//!
//! ## Function call ids and thought signatures
//!
//! Gemini may give a function call an `id` (then the result must carry it back) or not (results are matched by
//! name). A call without one gets the id `gemini-call-<n>` (its position among the answer's calls); such ids are
//! never sent back.
//!
//! Thinking models attach a `thoughtSignature` to function-call parts, which must come back on the same part of
//! the next request. catena's [`Message`](catena_core::Message) has no place for provider data, so the signature
//! rides in the call's [`ToolCall::id`](catena_core::ToolCall::id): `<id>#ts=<signature>`. Agents copy the
//! assistant message and answer with [`Message::tool_result`](catena_core::Message::tool_result) by that id, so it
//! travels back unchanged and the request carries the signature on the `functionCall` part again (and only the
//! `<id>` in `functionResponse.id`). [`thought_signature`] reads it. Signatures on text parts (Gemini sends one at
//! the end of a thinking answer without calls, and does not require it back) are kept in
//! [`ChatResponse::raw`](catena_core::ChatResponse::raw) only.
//!
//! ## Finish reasons and usage
//!
//! `finishReason` becomes a [`FinishReason`](catena_core::FinishReason): `STOP` -> `Stop` (`ToolCalls` when the
//! answer has function calls), `MAX_TOKENS` -> `Length`, `SAFETY`, `RECITATION`, `BLOCKLIST`,
//! `PROHIBITED_CONTENT`, `SPII` and the `IMAGE_*` ones -> `ContentFilter` (the answer holds what was generated
//! before, often nothing), anything else (`MALFORMED_FUNCTION_CALL`, `LANGUAGE`, `OTHER`, ...) ->
//! `Other("<reason>")`. A prompt blocked before any answer (`promptFeedback.blockReason`, no candidates) is an
//! error: [`PromptBlocked`], as [`Error::Chain`].
//!
//! `usageMetadata` becomes a [`Usage`](catena_core::Usage): input = `promptTokenCount` (cached tokens included)
//! plus `toolUsePromptTokenCount`, output = `candidatesTokenCount` plus `thoughtsTokenCount` (thinking is
//! generated, and billed, as output), total = `totalTokenCount`, cached input = `cachedContentTokenCount`. In
//! streams every event with `usageMetadata` gives a chunk with those counts, so the folded stream ends with the
//! last event's, the same as `chat`.
//!
//! # Structured output
//!
//! [`Constraint::JsonSchema`](catena_core::Constraint::JsonSchema) is sent as `responseMimeType:
//! application/json` with the converted schema as `responseSchema`;
//! [`Constraint::JsonObject`](catena_core::Constraint::JsonObject) as `responseMimeType: application/json` alone
//! (JSON mode). The answer's text is the JSON. Both are declared as [`Strategy::Native`] in
//! [`Capabilities::constraints`]; `catena_constraint::structured` validates the answer as for every strategy
//! (which matters here: the conversion below loosens some schemas). Regex, choice and grammar constraints are not
//! declared: they fail with [`Error::Unsupported`] before anything is sent.
//!
//! ## JSON Schema conversion
//!
//! Gemini's `Schema` is a subset of OpenAPI 3.0, so tool parameters and response schemas are converted:
//!
//! - `$ref`s to `#`, `#/$defs/<name>` and `#/definitions/<name>` are inlined (with the `description` and `title`
//!   next to them); a recursive schema, or one nesting deeper than 48 levels, is [`Error::InvalidInput`], as is a
//!   reference elsewhere;
//! - `"type": [T, "null"]` becomes `T` with `nullable: true` (type names stay lower-case, which Gemini takes as
//!   well as its upper-case enum names), several types become an `anyOf` of each; an `anyOf`/`oneOf`
//!   alternative `{"type": "null"}` becomes `nullable: true` (and a single remaining alternative is merged in); `oneOf` becomes `anyOf`; `allOf` parts
//!   are merged (properties and `required` joined);
//! - `const` with a string becomes a one-value `enum`; `enum` is kept when all its values are strings (Gemini's
//!   enums are string enums), dropped otherwise; `examples` becomes `example` (the first);
//! - kept as they are: `description`, `title`, `nullable`, `properties`, `required`, `items` (a schema),
//!   `minItems`, `maxItems`, `minProperties`, `maxProperties`, `minLength`, `maxLength`, `minimum`, `maximum`,
//!   `pattern`, `default`, `example`, and `format` when it is `date-time`, `enum`, `int32`, `int64`, `float` or
//!   `double`;
//! - dropped: everything else (`$schema`, `$id`, `additionalProperties`, `uniqueItems`, `multipleOf`,
//!   `exclusiveMinimum`, `not`, `if`/`then`/`else`, tuple `items`, other formats, non-string `const`...).
//!
//! # Errors
//!
//! Non-2xx answers are [`Error::Http`] with the status, the `Retry-After` delay (or, without that header, the
//! `retryDelay` of a `google.rpc.RetryInfo` detail) and, as the body, Google's `{"error": {"code", "message",
//! "status"}}` as `<status>: <message>` (any other body as a one-line preview of at most 300 characters; the body
//! kept on the error is read up to 1 MiB, so that a hostile server cannot make an error hold unbounded memory),
//! followed by what to do. An error object inside a stream is an [`Error::Http`] with its
//! `code`. The API key (or token) never appears in errors, `Debug` or `Display` output, even when a server echoes
//! it back: every occurrence is replaced by `[redacted]`.
//!
//! # Example
//!
//! ```no_run
//! use catena_core::{ChatRequest, Llm, Message};
//! use catena_providers::gemini::GeminiClient;
//!
//! # async fn run() -> catena_core::Result<()> {
//! // GEMINI_API_KEY, GEMINI_BASE_URL (default https://generativelanguage.googleapis.com) and CATENA_MODEL.
//! let client = GeminiClient::from_env()?;
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
    async_trait, Capabilities, ChatRequest, ChatResponse, ChatStream, ConstraintSupport, Embedder, Error, Llm, Message,
    Reasoning, Result, Strategy, ToolCall, ToolChoice,
};
use catena_http::HttpClient;
pub use catena_http::IoRuntime;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};

use crate::transport::{Answer, Deadlines, Secrets, DEFAULT_DEADLINES};

pub use crate::openai::ApiKey;

/// The Gemini API's root, the default base URL of [`GeminiApi::Gemini`] clients and of
/// [`GeminiClient::from_env`].
pub const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// How many texts one `batchEmbedContents` request carries at most (the Gemini API's limit); larger inputs are
/// sent in several requests, in order.
pub const MAX_EMBED_BATCH: usize = 100;

/// Which Google API a [`GeminiClient`] speaks: the paths of its requests and its default authentication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GeminiApi {
    /// The Gemini API (Google AI Studio keys): `<base>/v1beta/models/<model>:generateContent`.
    #[default]
    Gemini,
    /// Vertex AI: `<base>/v1/projects/<project>/locations/<location>/publishers/google/models/<model>:generateContent`.
    Vertex {
        /// The Google Cloud project id.
        project: String,
        /// The region (`us-central1`, `europe-west4`, ...) or `global`.
        location: String,
    },
}

/// How a [`GeminiClient`] sends its [`api_key`](GeminiBuilder::api_key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeminiAuth {
    /// The `x-goog-api-key` header (the Gemini API's recommended way; the default for [`GeminiApi::Gemini`]).
    ApiKeyHeader,
    /// The `key` query parameter (`?key=...`), which the Gemini API and some servers (llm-katan) also take.
    ApiKeyQuery,
    /// `Authorization: Bearer <key>`, the key being an OAuth access token (`gcloud auth print-access-token`); the
    /// default for [`GeminiApi::Vertex`].
    Bearer,
}

/// A prompt Gemini refused to answer: its `promptFeedback.blockReason` (`SAFETY`, `BLOCKLIST`,
/// `PROHIBITED_CONTENT`, `IMAGE_SAFETY`, `OTHER`, ...) with no candidate. [`GeminiClient`] returns it as
/// [`Error::Chain`]; [`PromptBlocked::from_error`] finds it.
///
/// ```
/// use catena_providers::gemini::PromptBlocked;
/// let blocked = PromptBlocked {
///     provider: "gemini at https://generativelanguage.googleapis.com".into(),
///     reason: "SAFETY".into(),
///     message: None,
///     safety_ratings: serde_json::Value::Null,
/// };
/// let error = catena_core::Error::chain(blocked.clone());
/// assert_eq!(PromptBlocked::from_error(&error), Some(&blocked));
/// assert!(error.to_string().contains("blocked the prompt (SAFETY)"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PromptBlocked {
    /// The client's provider name (`gemini at <base url>`).
    pub provider: String,
    /// `promptFeedback.blockReason`.
    pub reason: String,
    /// `promptFeedback.blockReasonMessage`, when the server gave one.
    pub message: Option<String>,
    /// `promptFeedback.safetyRatings` as the server sent them (`null` when it sent none).
    pub safety_ratings: serde_json::Value,
}

impl PromptBlocked {
    /// The [`PromptBlocked`] inside `error`, if it is one.
    pub fn from_error(error: &Error) -> Option<&PromptBlocked> {
        match error {
            Error::Chain(inner) => inner.downcast_ref::<PromptBlocked>(),
            _ => None,
        }
    }
}

impl fmt::Display for PromptBlocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} blocked the prompt ({})", self.provider, self.reason)?;
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        write!(f, "; nothing was generated: rephrase the prompt (retrying the same one gives the same answer)")
    }
}

impl std::error::Error for PromptBlocked {}

/// The thought signature kept in a tool call of a [`GeminiClient`] answer (see the [module
/// documentation](self#function-call-ids-and-thought-signatures)), or `None` when the call has none.
///
/// ```
/// use catena_core::ToolCall;
/// use catena_providers::gemini::thought_signature;
/// let call = ToolCall { id: "gemini-call-0#ts=CiQB0e2Kb".into(), name: "f".into(), arguments: "{}".into() };
/// assert_eq!(thought_signature(&call), Some("CiQB0e2Kb"));
/// ```
pub fn thought_signature(call: &ToolCall) -> Option<&str> {
    wire::split_call_id(&call.id).1
}

/// Configures a [`GeminiClient`]. Start with [`GeminiClient::builder`] (the Gemini API at [`GEMINI_BASE_URL`],
/// no key, no model, [`DEFAULT_DEADLINES`]) or [`GeminiBuilder::from_env`].
///
/// ```
/// use std::time::Duration;
/// use catena_providers::gemini::{GeminiApi, GeminiClient};
/// let client = GeminiClient::builder()
///     .base_url("http://127.0.0.1:8000")
///     .api_key("AIza-local")
///     .model("gemini-2.5-flash")
///     .timeout(Duration::from_secs(60))
///     .build()
///     .unwrap();
/// assert_eq!(client.to_string(), "gemini at http://127.0.0.1:8000 (model gemini-2.5-flash)");
/// assert!(!format!("{client:?}").contains("AIza-local"));
///
/// let vertex = GeminiClient::builder()
///     .api(GeminiApi::Vertex { project: "my-project".into(), location: "europe-west4".into() })
///     .api_key("ya29.token")
///     .model("gemini-2.5-pro")
///     .build()
///     .unwrap();
/// assert_eq!(vertex.base_url(), "https://europe-west4-aiplatform.googleapis.com");
/// ```
#[derive(Clone)]
pub struct GeminiBuilder {
    base_url: Option<String>,
    api: GeminiApi,
    auth: Option<GeminiAuth>,
    api_key: Option<ApiKey>,
    model: Option<String>,
    deadlines: Deadlines,
    headers: Vec<(String, String)>,
    io_runtime: IoRuntime,
}

impl fmt::Debug for GeminiBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiBuilder")
            .field("base_url", &self.base_url)
            .field("api", &self.api)
            .field("auth", &self.auth)
            .field("api_key", &self.api_key)
            .field("model", &self.model)
            .field("deadlines", &self.deadlines)
            .field("headers", &self.headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>())
            .field("io_runtime", &self.io_runtime)
            .finish()
    }
}

impl Default for GeminiBuilder {
    fn default() -> Self {
        GeminiBuilder::new()
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

fn is_google_host(url: &reqwest::Url) -> bool {
    url.host_str().is_some_and(|h| h.to_ascii_lowercase().ends_with("googleapis.com"))
}

/// A path segment (project, location) must not change the path's shape.
fn check_segment(setting: &str, value: &str) -> Result<()> {
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(Error::config(
            setting,
            format!("is `{value}`, which is not a Google Cloud {setting} name"),
            "use letters, digits, '-', '_' and '.' only (for example my-project and us-central1)",
        ));
    }
    Ok(())
}

impl GeminiBuilder {
    /// The Gemini API at [`GEMINI_BASE_URL`], no key, no model, [`DEFAULT_DEADLINES`], no extra headers,
    /// connections on [`IoRuntime::detect`]'s choice.
    pub fn new() -> Self {
        GeminiBuilder {
            base_url: None,
            api: GeminiApi::Gemini,
            auth: None,
            api_key: None,
            model: None,
            deadlines: DEFAULT_DEADLINES,
            headers: Vec::new(),
            io_runtime: IoRuntime::detect(),
        }
    }

    /// A builder configured from the environment:
    ///
    /// | variable | sets | when unset |
    /// |---|---|---|
    /// | `GEMINI_BASE_URL` | [`base_url`](Self::base_url) | [`GEMINI_BASE_URL`] |
    /// | `GEMINI_API_KEY` | [`api_key`](Self::api_key) | no key (required by Google's servers) |
    /// | `CATENA_MODEL` | [`model`](Self::model) | no default model |
    ///
    /// Empty variables count as unset. Vertex AI is chosen with [`api`](Self::api) on the result.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable when one is not UTF-8.
    pub fn from_env() -> Result<Self> {
        let mut b = GeminiBuilder::new();
        b.base_url = env_var("GEMINI_BASE_URL")?;
        b.api_key = env_var("GEMINI_API_KEY")?.map(ApiKey::from);
        b.model = env_var("CATENA_MODEL")?;
        Ok(b)
    }

    /// The API root, without a version segment (`https://generativelanguage.googleapis.com`,
    /// `http://127.0.0.1:8000`). Default: [`GEMINI_BASE_URL`] for [`GeminiApi::Gemini`],
    /// `https://<location>-aiplatform.googleapis.com` for [`GeminiApi::Vertex`].
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Which API to speak (see [`GeminiApi`]); default [`GeminiApi::Gemini`].
    pub fn api(mut self, api: GeminiApi) -> Self {
        self.api = api;
        self
    }

    /// How the key is sent (see [`GeminiAuth`]); default: by the API, `x-goog-api-key` for the Gemini API, a
    /// bearer token for Vertex AI.
    pub fn auth(mut self, auth: GeminiAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The API key (Gemini API) or OAuth access token (Vertex AI).
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The model used when a request names none (`gemini-2.5-flash`, ...).
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
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

    /// Adds a header sent with every request (`x-goog-user-project`, ...). Its value is never printed.
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
    /// [`Error::Config`] when the base URL is not an `http(s)` URL, a Google host is used without a key (naming
    /// `GEMINI_API_KEY`), a Vertex project or location is not a plain name, a header name or value is invalid, or
    /// a deadline is 0.
    pub fn build(self) -> Result<GeminiClient> {
        let default_url = match &self.api {
            GeminiApi::Gemini => GEMINI_BASE_URL.to_string(),
            GeminiApi::Vertex { location, .. } if location == "global" => {
                "https://aiplatform.googleapis.com".to_string()
            }
            GeminiApi::Vertex { location, .. } => format!("https://{location}-aiplatform.googleapis.com"),
        };
        if let GeminiApi::Vertex { project, location } = &self.api {
            check_segment("project", project)?;
            check_segment("location", location)?;
        }
        let base_url = self.base_url.unwrap_or(default_url).trim().trim_end_matches('/').to_string();
        let hint = "pass the API root without a version, for example https://generativelanguage.googleapis.com or \
                    http://127.0.0.1:8000";
        let parsed = reqwest::Url::parse(&base_url).map_err(|e| {
            Error::config(
                "base_url (GEMINI_BASE_URL)",
                format!("is `{base_url}`, which is not a valid URL ({e})"),
                hint,
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(Error::config(
                "base_url (GEMINI_BASE_URL)",
                format!("is `{base_url}`, which is not an http(s) URL with a host"),
                hint,
            ));
        }
        if self.api_key.is_none() && is_google_host(&parsed) {
            return Err(Error::config(
                "GEMINI_API_KEY",
                "is not set, and Google's servers require a key (or, for Vertex AI, an access token)",
                "export GEMINI_API_KEY=<your key> or call GeminiBuilder::api_key; for another server set \
                 GEMINI_BASE_URL (or GeminiBuilder::base_url) to its URL",
            ));
        }
        crate::transport::check_deadlines(&self.deadlines, "GeminiBuilder")?;
        let auth = self.auth.unwrap_or(match self.api {
            GeminiApi::Gemini => GeminiAuth::ApiKeyHeader,
            GeminiApi::Vertex { .. } => GeminiAuth::Bearer,
        });
        let mut secrets = Secrets::new();
        secrets.add_url(&parsed);
        let mut headers = crate::transport::header_map(&self.headers, &mut secrets)?;
        if let Some(key) = &self.api_key {
            let bad_key = || {
                Error::config(
                    "api_key (GEMINI_API_KEY)",
                    "contains characters not allowed in HTTP headers",
                    "check the key for line breaks or stray characters",
                )
            };
            match auth {
                GeminiAuth::ApiKeyHeader => {
                    let mut value = HeaderValue::from_str(key.expose()).map_err(|_| bad_key())?;
                    value.set_sensitive(true);
                    headers.insert("x-goog-api-key", value);
                }
                GeminiAuth::Bearer => {
                    let mut value =
                        HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| bad_key())?;
                    value.set_sensitive(true);
                    headers.insert(AUTHORIZATION, value);
                }
                GeminiAuth::ApiKeyQuery => {}
            }
        }
        let http = crate::transport::http_client(headers, &self.deadlines, self.io_runtime)?;
        let provider = format!("gemini at {}", crate::transport::display_url(&base_url));
        let native = Some(Strategy::Native);
        let capabilities = Capabilities {
            backend: provider.clone(),
            provider: match self.api {
                GeminiApi::Gemini => "gcp.gemini".to_string(),
                GeminiApi::Vertex { .. } => "gcp.vertex_ai".to_string(),
            },
            streaming: true,
            streaming_usage: true,
            streaming_tools: true,
            tools: true,
            forced_tool_choice: true,
            seed: true,
            images: true,
            constraints: ConstraintSupport { json_object: native, json_schema: native, ..ConstraintSupport::none() },
        };
        // The key as the query string writes it, for redaction.
        let encoded_key = self.api_key.as_ref().map(|key| {
            let mut url = parsed.clone();
            url.query_pairs_mut().clear().append_pair("key", key.expose());
            url.query().unwrap_or_default().trim_start_matches("key=").to_string()
        });
        for secret in [self.api_key.as_ref().map(ApiKey::expose), encoded_key.as_deref()].into_iter().flatten() {
            secrets.add(secret);
        }
        Ok(GeminiClient {
            inner: Arc::new(Inner {
                http,
                base_url,
                api: self.api,
                auth,
                provider,
                api_key: self.api_key,
                header_names: self.headers.into_iter().map(|(name, _)| name).collect(),
                model: self.model,
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
    api: GeminiApi,
    auth: GeminiAuth,
    /// `"gemini at <base url>"`, the `provider` of errors.
    pub(crate) provider: String,
    api_key: Option<ApiKey>,
    header_names: Vec<String>,
    model: Option<String>,
    deadlines: Deadlines,
    secrets: Secrets,
    capabilities: Capabilities,
}

impl Inner {
    /// The error with the client's secrets (the key, as it is and as a query string writes it, a base URL
    /// password, credential headers) taken out of every text that came from the server or the transport.
    pub(crate) fn redact_error(&self, e: Error) -> Error {
        match e {
            Error::Chain(inner) => match inner.downcast::<PromptBlocked>() {
                Ok(mut blocked) => {
                    blocked.message = blocked.message.map(|m| self.secrets.redact(m));
                    Error::Chain(blocked)
                }
                Err(other) => Error::Chain(other),
            },
            other => self.secrets.redact_error(other),
        }
    }

    /// Maps a failure that has no HTTP status to [`Error::Deadline`] or [`Error::Transport`] naming the endpoint
    /// (`url`, without the key).
    pub(crate) fn transport_error(&self, e: catena_http::Error, url: &str) -> Error {
        let system = match self.api {
            GeminiApi::Gemini => "gemini",
            GeminiApi::Vertex { .. } => "vertex_ai",
        };
        crate::transport::transport_error(e, &self.provider, system, url, &self.secrets)
    }

    /// `<base>/<version>/<model path>:<method>` for the configured API.
    fn model_url(&self, model: &str, method: &str) -> String {
        let model = model.strip_prefix("models/").unwrap_or(model);
        match &self.api {
            GeminiApi::Gemini if model.contains('/') => format!("{}/v1beta/{model}:{method}", self.base_url),
            GeminiApi::Gemini => format!("{}/v1beta/models/{model}:{method}", self.base_url),
            GeminiApi::Vertex { project, location } => format!(
                "{}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}",
                self.base_url
            ),
        }
    }

    /// POSTs the body to `url` (plus `?alt=sse` when `sse`, and the key with [`GeminiAuth::ApiKeyQuery`]); returns
    /// the response when its status is 2xx, [`Error::Http`] otherwise.
    async fn post(&self, url: &str, body: Vec<u8>, sse: bool) -> Result<catena_http::Response> {
        let mut target = reqwest::Url::parse(url).map_err(|e| Error::Transport {
            provider: self.provider.clone(),
            message: format!("POST {url}: not a valid URL ({e}); check the model name"),
            source: None,
        })?;
        if sse {
            target.query_pairs_mut().append_pair("alt", "sse");
        }
        let shown = target.to_string();
        if let (GeminiAuth::ApiKeyQuery, Some(key)) = (self.auth, &self.api_key) {
            target.query_pairs_mut().append_pair("key", key.expose());
        }
        let (accept, answer) =
            if sse { ("text/event-stream", Answer::Streamed) } else { ("application/json", Answer::Whole) };
        let request = self
            .http
            .reqwest()
            .post(target)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, accept)
            .body(body)
            .build()
            .map_err(|e| self.transport_error(e.into(), &shown))?;
        let response = self
            .http
            .execute_within(request, self.deadlines, answer)
            .await
            .map_err(|e| self.transport_error(e, &shown))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let mut error = crate::transport::http_error(response, &self.provider, &self.secrets).await;
        // Google says how long to wait in the body (RetryInfo) when it sends no Retry-After.
        if let Error::Http { body, retry_after: retry_after @ None, .. } = &mut error {
            if let Some((_, _, Some(delay))) = wire::error_summary(body.as_bytes()) {
                *retry_after = Some(delay);
            }
        }
        Err(error)
    }

    /// POSTs a JSON body and reads the whole 2xx answer.
    async fn post_json(&self, url: &str, body: Vec<u8>) -> Result<bytes::Bytes> {
        let response = self.post(url, body, false).await?;
        response.bytes().await.map_err(|e| self.transport_error(e, url))
    }
}

/// A client for the Gemini API or Vertex AI, or any server that speaks them. Cheap to clone (one `Arc`),
/// `Send + Sync`; clones share the connection pool.
///
/// Build it with [`GeminiClient::builder`] or [`GeminiClient::from_env`] and use it as an [`Llm`]; get an
/// [`Embedder`] from [`GeminiClient::embedder`]. The [module documentation](self) says how requests and answers
/// map to the wire.
#[derive(Clone)]
pub struct GeminiClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for GeminiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("GeminiClient")
            .field("base_url", &i.base_url)
            .field("api", &i.api)
            .field("auth", &i.auth)
            .field("model", &i.model)
            .field("api_key", &i.api_key)
            .field("headers", &i.header_names)
            .field("deadlines", &i.deadlines)
            .field("io_runtime", &i.http.io_runtime())
            .field("capabilities", &i.capabilities)
            .finish()
    }
}

/// `gemini at <base url> (model <model>)`.
impl fmt::Display for GeminiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner.provider)?;
        match &self.inner.model {
            Some(m) => write!(f, " (model {m})"),
            None => write!(f, " (no default model)"),
        }
    }
}

impl GeminiClient {
    /// The chat stream this client makes of a response body (`chunks`), for the fuzz targets and property tests.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn stream_of(&self, chunks: Vec<bytes::Bytes>) -> ChatStream {
        let body = futures::stream::iter(chunks.into_iter().map(Ok));
        Box::pin(stream::GeminiStream::new(body, self.inner.clone(), "m".to_string(), self.inner.base_url.clone()))
    }

    /// A builder for the Gemini API; see [`GeminiBuilder`].
    pub fn builder() -> GeminiBuilder {
        GeminiBuilder::new()
    }

    /// A client configured from the environment; see [`GeminiBuilder::from_env`] for the variables.
    ///
    /// # Errors
    /// [`Error::Config`]: `GEMINI_API_KEY` is not set while `GEMINI_BASE_URL` is unset or points at Google, or a
    /// variable is not UTF-8 or not a URL.
    pub fn from_env() -> Result<Self> {
        GeminiBuilder::from_env()?.build()
    }

    /// The API root requests go to (without a trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The API the client speaks.
    pub fn api(&self) -> &GeminiApi {
        &self.inner.api
    }

    /// Where the client's connections run (see [`GeminiBuilder::io_runtime`]).
    pub fn io_runtime(&self) -> IoRuntime {
        self.inner.http.io_runtime()
    }

    /// An embedder for `model` (`gemini-embedding-001`, `text-embedding-004`, ...) whose vectors have
    /// `dimensions` entries (every answer is checked against it).
    pub fn embedder(&self, model: impl Into<String>, dimensions: usize) -> GeminiEmbedder {
        GeminiEmbedder { client: self.clone(), model: model.into(), dimensions, send_dimensions: false }
    }

    /// Checks the request, resolves the model, and encodes the body.
    fn prepare(&self, request: &ChatRequest, streaming: bool) -> Result<(String, Vec<u8>)> {
        let inner = &self.inner;
        inner.capabilities.check(request, streaming)?;
        if let Some(ToolChoice::Tool(name)) = &request.tool_choice {
            if !request.tools.iter().any(|t| &t.name == name) {
                return Err(Error::InvalidInput(format!(
                    "ToolChoice::Tool(\"{name}\") names no tool of the request; add the tool or choose another"
                )));
            }
        }
        let model = match (&request.model, &inner.model) {
            (Some(m), _) | (None, Some(m)) => m.clone(),
            (None, None) => {
                return Err(Error::config(
                    "CATENA_MODEL",
                    "is not set and the request names no model",
                    "export CATENA_MODEL=<model>, call GeminiBuilder::model(\"<model>\"), or use \
                     ChatRequest::with_model",
                ))
            }
        };
        let body = wire::encode_request(request, &inner.capabilities.backend)?;
        Ok((model, serde_json::to_vec(&body)?))
    }
}

#[async_trait]
impl Llm for GeminiClient {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities.clone()
    }

    fn default_model(&self) -> Option<String> {
        self.inner.model.clone()
    }

    /// Sends the request and waits for the whole answer.
    ///
    /// # Errors
    /// [`Error::Unsupported`] (before sending) when the request asks for more than [`Llm::capabilities`] (a regex
    /// constraint, ...); [`Error::Config`] when neither the request nor the client names a model;
    /// [`Error::InvalidInput`] for messages or schemas the wire format cannot carry; [`Error::Http`] for non-2xx
    /// answers; [`PromptBlocked`] (as [`Error::Chain`]) for a blocked prompt; [`Error::Transport`] /
    /// [`Error::Timeout`] when no answer came; [`Error::Decode`] for unexpected bodies.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let (model, body) = self.prepare(&request, false)?;
        let inner = &self.inner;
        let bytes = inner.post_json(&inner.model_url(&model, "generateContent"), body).await?;
        let (fragment, raw) = wire::decode_fragment(&inner.provider, &bytes).map_err(|e| inner.redact_error(e))?;
        let Some(reason) = fragment.finish_reason.as_deref() else {
            if fragment.text.is_empty() && fragment.calls.is_empty() {
                return Err(inner.redact_error(wire::decode_error(
                    &inner.provider,
                    "the answer has no candidate",
                    "no candidates and no blockReason",
                    &bytes,
                )));
            }
            return Ok(response(fragment, raw, model, None));
        };
        let finish = wire::finish_reason(reason, !fragment.calls.is_empty());
        Ok(response(fragment, raw, model, Some(finish)))
    }

    /// Sends the request and streams the answer. The stream owns a clone of the client; dropping it closes the
    /// connection.
    ///
    /// # Errors
    /// As `chat`, for everything up to the response headers; later failures (an error object in the stream, a
    /// stream that ends before a `finishReason`, malformed events) are items of the stream. A server that answers
    /// with one JSON document (a response, or the JSON array of them) instead of an event stream is read as the
    /// whole answer.
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let (model, body) = self.prepare(&request, true)?;
        let inner = &self.inner;
        let url = inner.model_url(&model, "streamGenerateContent");
        let response = inner.post(&url, body, true).await?;
        let content_type =
            response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
        if content_type.starts_with("application/json") {
            let bytes = response.bytes().await.map_err(|e| inner.transport_error(e, &url))?;
            let chunks = stream::chunks_of_document(inner, &bytes, model).map_err(|e| inner.redact_error(e))?;
            return Ok(Box::pin(futures::stream::iter(chunks)));
        }
        Ok(Box::pin(stream::GeminiStream::new(response.bytes_stream(), inner.clone(), model, url)))
    }
}

/// The [`ChatResponse`] of a whole answer.
fn response(
    fragment: wire::Fragment,
    raw: serde_json::Value,
    model: String,
    finish_reason: Option<catena_core::FinishReason>,
) -> ChatResponse {
    let mut message = Message::assistant(fragment.text);
    message.tool_calls = wire::tool_calls(&fragment.calls, 0);
    if !fragment.thoughts.is_empty() || fragment.text_signature.is_some() {
        message.reasoning =
            vec![Reasoning { text: fragment.thoughts, signature: fragment.text_signature, redacted: None }];
    }
    ChatResponse { message, finish_reason, usage: fragment.usage, model: fragment.model.unwrap_or(model), raw }
}

/// Embeddings from the Gemini API: `:embedContent` for queries (`taskType: RETRIEVAL_QUERY`) and
/// `:batchEmbedContents` for documents (`taskType: RETRIEVAL_DOCUMENT`, at most [`MAX_EMBED_BATCH`] texts per
/// request, in order). Get one from [`GeminiClient::embedder`].
///
/// Vertex AI serves embeddings through another method (`:predict`), which this embedder does not speak: on a
/// [`GeminiApi::Vertex`] client its calls fail with [`Error::Unsupported`].
///
/// ```no_run
/// use catena_core::Embedder;
/// use catena_providers::gemini::GeminiClient;
/// # async fn run() -> catena_core::Result<()> {
/// let embedder = GeminiClient::from_env()?.embedder("gemini-embedding-001", 768).with_output_dimensionality();
/// let vectors = embedder.embed_documents(&["Rust is a language.".to_string()]).await?;
/// assert_eq!(vectors[0].len(), 768);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct GeminiEmbedder {
    client: GeminiClient,
    model: String,
    dimensions: usize,
    send_dimensions: bool,
}

impl GeminiEmbedder {
    /// Also sends `outputDimensionality` (the embedder's [`dimensions`](Embedder::dimensions)) in every request,
    /// asking models that can shorten their vectors (`gemini-embedding-001`, `text-embedding-004`) for exactly
    /// that many entries.
    pub fn with_output_dimensionality(mut self) -> Self {
        self.send_dimensions = true;
        self
    }

    /// The client this embedder sends requests with.
    pub fn client(&self) -> &GeminiClient {
        &self.client
    }

    fn check_api(&self) -> Result<()> {
        match self.client.inner.api {
            GeminiApi::Gemini => Ok(()),
            GeminiApi::Vertex { .. } => Err(Error::unsupported(
                &self.client.inner.provider,
                "embeddings on Vertex AI",
                "Vertex AI serves embeddings through :predict; use a Gemini API client (GeminiApi::Gemini) for \
                 GeminiEmbedder",
            )),
        }
    }

    fn request<'a>(&self, text: &'a str, task_type: &'static str, named: bool) -> wire::EmbedRequest<'a> {
        let model = self.model.strip_prefix("models/").unwrap_or(&self.model);
        wire::EmbedRequest {
            model: named.then(|| format!("models/{model}")),
            content: wire::EmbedContent { parts: [wire::EmbedText { text }] },
            task_type,
            output_dimensionality: self.send_dimensions.then_some(self.dimensions),
        }
    }

    fn check_dimensions(&self, vectors: &[Vec<f32>], offset: usize) -> Result<()> {
        if let Some((i, v)) = vectors.iter().enumerate().find(|(_, v)| v.len() != self.dimensions) {
            return Err(Error::Decode {
                provider: self.client.inner.provider.clone(),
                message: format!(
                    "embedding model `{}` returned a vector of length {} for input {}, but the embedder was built \
                     for {} dimensions; pass the model's real dimensions, or call with_output_dimensionality to ask \
                     for that many",
                    self.model,
                    v.len(),
                    offset + i,
                    self.dimensions
                ),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Embedder for GeminiEmbedder {
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.check_api()?;
        let inner = &self.client.inner;
        let url = inner.model_url(&self.model, "batchEmbedContents");
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(MAX_EMBED_BATCH) {
            let body = wire::BatchEmbedRequest {
                requests: batch.iter().map(|t| self.request(t, "RETRIEVAL_DOCUMENT", true)).collect(),
            };
            let bytes = inner.post_json(&url, serde_json::to_vec(&body)?).await?;
            let vectors =
                wire::decode_embeddings(&inner.provider, &bytes, batch.len()).map_err(|e| inner.redact_error(e))?;
            self.check_dimensions(&vectors, out.len())?;
            out.extend(vectors);
        }
        Ok(out)
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        self.check_api()?;
        let inner = &self.client.inner;
        let url = inner.model_url(&self.model, "embedContent");
        let body = serde_json::to_vec(&self.request(text, "RETRIEVAL_QUERY", false))?;
        let bytes = inner.post_json(&url, body).await?;
        let vector = wire::decode_embedding(&inner.provider, &bytes).map_err(|e| inner.redact_error(e))?;
        self.check_dimensions(std::slice::from_ref(&vector), 0)?;
        Ok(vector)
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
    fn builder_rejects_bad_settings() {
        let err = GeminiClient::builder().build().unwrap_err().to_string();
        assert!(err.contains("GEMINI_API_KEY"), "{err}");
        let err = GeminiClient::builder().base_url("not a url").build().unwrap_err().to_string();
        assert!(err.contains("base_url"), "{err}");
        let vertex = GeminiApi::Vertex { project: "p/../x".into(), location: "us-central1".into() };
        let err = GeminiClient::builder().api(vertex).api_key("k").build().unwrap_err().to_string();
        assert!(err.contains("project"), "{err}");
        let ok = GeminiClient::builder().base_url("http://h:1/").build().unwrap();
        assert_eq!(ok.base_url(), "http://h:1");
        assert!(ok.capabilities().seed);
        assert_eq!(
            ok.inner.model_url("models/gemini-x", "generateContent"),
            "http://h:1/v1beta/models/gemini-x:generateContent"
        );
        assert_eq!(
            ok.inner.model_url("tunedModels/t", "generateContent"),
            "http://h:1/v1beta/tunedModels/t:generateContent"
        );
        let global = GeminiApi::Vertex { project: "p".into(), location: "global".into() };
        let client = GeminiClient::builder().api(global).api_key("k").build().unwrap();
        assert_eq!(
            client.inner.model_url("gemini-2.5-pro", "generateContent"),
            "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/google/models/gemini-2.5-pro:generateContent"
        );
    }
}
