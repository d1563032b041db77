//! The one error type of catena.
//!
//! Every fallible function in every catena crate returns [`Result<T>`]. Variants are grouped by what the
//! caller can do about them: fix configuration ([`Error::Config`]), change the request
//! ([`Error::Unsupported`], [`Error::InvalidInput`], [`Error::Template`]), or retry ([`Error::is_retryable`]).

use std::path::PathBuf;
use std::time::Duration;

/// Shorthand for `std::result::Result<T, catena_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in catena.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A provider answered with a non-success HTTP status.
    ///
    /// Its `Display` shows a one-line preview of the body (the error message of a JSON error body, the text of an
    /// HTML page, at most 300 characters) and what the status usually means; the body itself is kept whole on the
    /// value (as much of it as the client read: catena's clients read at most 1 MiB of an error body).
    #[error("{provider} returned HTTP {status}: {}", http_summary(*status, body))]
    Http {
        /// Which provider answered (for example `openai-compatible`).
        provider: String,
        /// The HTTP status code.
        status: u16,
        /// The response body, as text, kept for debugging (secrets the client knows are redacted from it).
        body: String,
        /// The `Retry-After` delay the server asked for, if any.
        retry_after: Option<Duration>,
    },
    /// The request never got an HTTP answer (connection refused, reset, DNS, TLS, timeout).
    #[error("{provider}: transport error: {message}")]
    Transport {
        /// Which provider was being called.
        provider: String,
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A provider answered with something that is not the expected wire format.
    #[error("{provider}: could not decode the response: {message}")]
    Decode {
        /// Which provider answered.
        provider: String,
        /// What was wrong with it.
        message: String,
    },
    /// A required setting is missing or invalid.
    #[error("configuration: {setting} {problem}; {hint}")]
    Config {
        /// The setting (builder method or environment variable) that is missing or invalid.
        setting: String,
        /// What is wrong with it ("is not set", "is not a valid URL", ...).
        problem: String,
        /// How to fix it.
        hint: String,
    },
    /// The request asks for something the backend cannot do.
    #[error("{backend} does not support {capability}: {hint}")]
    Unsupported {
        /// The backend (provider, model or store) that lacks the capability.
        backend: String,
        /// The capability that was asked for.
        capability: String,
        /// What to do instead.
        hint: String,
    },
    /// The input given to a function is invalid.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A prompt template failed to compile or render.
    #[error("template {template}: {message}")]
    Template {
        /// The template's name.
        template: String,
        /// What went wrong, naming the variable or construct.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not in the expected format (corrupt, wrong version, wrong dimensions).
    #[error("{}: {message}", path.display())]
    Format {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it and what to do.
        message: String,
    },
    /// JSON (de)serialisation failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A vector store operation failed.
    #[error("vector store {store}: {message}")]
    Store {
        /// The store concerned.
        store: String,
        /// What went wrong.
        message: String,
    },
    /// An operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A deadline of a call to a server passed: no connection, no first chunk, a stall between chunks, or the
    /// whole call too long. Retryable (a retry layer retries a stream only until its first chunk).
    #[error("{endpoint}: the {} deadline ({}) passed: {}", deadline.name(), format_limit(*limit), deadline.hint())]
    Deadline {
        /// The server and endpoint called (secrets redacted).
        endpoint: String,
        /// Which deadline passed.
        deadline: Deadline,
        /// The limit that was set for it.
        limit: Duration,
    },
    /// The operation was cancelled (for example, its stream was dropped).
    #[error("cancelled")]
    Cancelled,
    /// Every attempt of a retried or fallback chain failed; holds the last error.
    #[error("all {attempts} attempts failed; last error: {last}")]
    Exhausted {
        /// How many attempts were made.
        attempts: usize,
        /// The last attempt's error.
        last: Box<Error>,
    },
    /// The model's output does not satisfy the requested constraint or type, after every allowed attempt.
    #[error("the model's output is invalid after {attempts} attempt(s) ({strategy}): {reason}; raw output: {raw:?}")]
    InvalidOutput {
        /// The last raw output.
        raw: String,
        /// What is wrong with it.
        reason: String,
        /// How many generations were made.
        attempts: u32,
        /// How the constraint was being enforced.
        strategy: crate::llm::Strategy,
    },
    /// A user-supplied chain step failed.
    #[error("{0}")]
    Chain(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Whether retrying the same request may succeed: rate limits (429), server errors (5xx), timeouts and
    /// transport failures are retryable; client errors (4xx), configuration and input errors are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Http { status, .. } => *status == 408 || *status == 409 || *status == 429 || *status >= 500,
            Error::Transport { .. } | Error::Timeout(_) | Error::Deadline { .. } => true,
            _ => false,
        }
    }

    /// The delay the server asked for before retrying (`Retry-After`), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// This error with its causes: its message, then the message of each underlying error (the `source()` chain)
    /// that the text so far does not already contain, joined by `: `. Logs and traces record this. (Network
    /// errors keep a source only when its text holds no secret, so the causes are as safe to show as the error.)
    ///
    /// ```
    /// use catena_core::Error;
    /// let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
    /// let e = Error::Transport { provider: "openai".into(), message: "sending the request".into(), source: Some(Box::new(io)) };
    /// assert_eq!(e.with_causes(), "openai: transport error: sending the request: connection reset by peer");
    /// ```
    pub fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let message = c.to_string();
            if !message.is_empty() && !text.contains(&message) {
                text.push_str(": ");
                text.push_str(&message);
            }
            cause = c.source();
        }
        text
    }

    /// Wraps any error from user code (for example inside a closure chain).
    pub fn chain<E: Into<Box<dyn std::error::Error + Send + Sync>>>(error: E) -> Self {
        Error::Chain(error.into())
    }

    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Builds an [`Error::Config`].
    pub fn config(setting: impl Into<String>, problem: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Config { setting: setting.into(), problem: problem.into(), hint: hint.into() }
    }

    /// Builds an [`Error::Unsupported`].
    pub fn unsupported(backend: impl Into<String>, capability: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Unsupported { backend: backend.into(), capability: capability.into(), hint: hint.into() }
    }
}

/// Which deadline of a call to a server passed (see [`Error::Deadline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deadline {
    /// Making the connection (TCP and TLS).
    Connect,
    /// From sending the request to the first chunk of a streamed answer.
    FirstChunk,
    /// Between two chunks of an answer, once it has started.
    Idle,
    /// The whole call, from sending the request to the end of the answer.
    Total,
}

impl Deadline {
    /// The deadline's name in messages: `connect`, `first-chunk`, `idle` or `total`.
    pub fn name(self) -> &'static str {
        match self {
            Deadline::Connect => "connect",
            Deadline::FirstChunk => "first-chunk",
            Deadline::Idle => "idle",
            Deadline::Total => "total",
        }
    }

    /// What passing this deadline usually means, and what to do.
    pub fn hint(self) -> &'static str {
        match self {
            Deadline::Connect => {
                "the server did not accept a connection in time; check that it is running and reachable at that \
                 address"
            }
            Deadline::FirstChunk => {
                "the server took the request but sent nothing back in time (overloaded, stuck, or a long prompt on \
                 a slow machine); raise the first-chunk deadline if it is only slow"
            }
            Deadline::Idle => {
                "the server stopped sending in the middle of the answer; raise the idle deadline if it is only slow"
            }
            Deadline::Total => {
                "the call as a whole took too long (a long answer, or a server sending very slowly); raise the total \
                 deadline (`--timeout` in the examples) if the answer is only long"
            }
        }
    }
}

impl std::fmt::Display for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn format_limit(limit: Duration) -> String {
    if limit.subsec_millis() == 0 {
        format!("{} s", limit.as_secs())
    } else {
        format!("{} ms", limit.as_millis())
    }
}

/// How many characters of an error body [`Error::Http`]'s `Display` shows.
const PREVIEW_CHARS: usize = 300;

/// The one-line summary of an HTTP error that [`Error::Http`]'s `Display` shows: the error message of a JSON error
/// body (OpenAI's, Anthropic's, Google's and Ollama's shapes) or a preview of the body's text (HTML tags taken out,
/// whitespace collapsed, at most 300 characters), then what the status usually means.
///
/// ```
/// use catena_core::error::http_summary;
/// let anthropic = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}"#;
/// assert_eq!(http_summary(429, anthropic), "rate_limit_error: Slow down (rate limited: wait and retry)");
/// let html = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<h1>Bad Gateway</h1></body></html>";
/// assert_eq!(http_summary(502, html), "502 Bad Gateway Bad Gateway (a proxy in front of the server could not reach it)");
/// ```
pub fn http_summary(status: u16, body: &str) -> String {
    let text = json_error_message(body).unwrap_or_else(|| body_preview(body));
    let text = if text.is_empty() { "(empty body)".to_string() } else { text };
    match status_hint(status) {
        Some(hint) => format!("{text} ({hint})"),
        None => text,
    }
}

fn json_error_message(body: &str) -> Option<String> {
    let trimmed = body.trim_start();
    if !trimmed.starts_with('{') || trimmed.len() > 1 << 20 {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(trimmed).ok()?;
    let error = value.get("error").unwrap_or(&value);
    let message = match error {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => {
            let message = o.get("message").and_then(|m| m.as_str())?;
            let kind = o.get("type").or_else(|| o.get("status")).or_else(|| o.get("code")).and_then(|t| t.as_str());
            match kind {
                Some(kind) if !kind.is_empty() => format!("{kind}: {message}"),
                _ => message.to_string(),
            }
        }
        _ => return None,
    };
    Some(shorten(&collapse(&message)))
}

fn body_preview(body: &str) -> String {
    let looks_like_markup = body.trim_start().starts_with('<');
    let mut text = String::with_capacity(body.len().min(4 * PREVIEW_CHARS));
    let mut in_tag = false;
    for c in body.chars() {
        if text.chars().count() > 2 * PREVIEW_CHARS {
            break;
        }
        match c {
            '<' if looks_like_markup => in_tag = true,
            '>' if looks_like_markup && in_tag => {
                in_tag = false;
                text.push(' ');
            }
            _ if in_tag => {}
            c => text.push(c),
        }
    }
    let mut shown = shorten(&collapse(&text));
    if body.chars().count() > PREVIEW_CHARS && !shown.ends_with("...") {
        shown.push_str("...");
    }
    if body.len() > PREVIEW_CHARS {
        shown.push_str(&format!(" ({} bytes in all; the whole body is on the error value)", body.len()));
    }
    shown
}

/// Whitespace and control characters collapsed to single spaces, trimmed.
fn collapse(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

fn status_hint(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "the server rejected the request",
        401 => "check the API key",
        403 => "the key is not allowed to do this",
        404 => "check the base URL and the model name; a local server may need the model pulled first",
        408 => "the server timed out waiting for the request: retry",
        413 => "the request is too large",
        422 => "the server could not process the request's content",
        429 => "rate limited: wait and retry",
        500 => "server error: retry later",
        502 => "a proxy in front of the server could not reach it",
        503 => "the server is unavailable or overloaded: retry later",
        504 => "a proxy in front of the server timed out waiting for it",
        529 => "the server is overloaded: retry later",
        _ => return None,
    })
}

/// What kind of JSON value `value` is, for error messages: "null", "a boolean", "a number", "a string", "an
/// array" or "an object".
pub fn json_type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        let http = |status| Error::Http { provider: "p".into(), status, body: String::new(), retry_after: None };
        assert!(http(429).is_retryable());
        assert!(http(503).is_retryable());
        assert!(!http(400).is_retryable());
        assert!(!http(401).is_retryable());
        assert!(Error::Timeout(Duration::from_secs(1)).is_retryable());
        let deadline =
            Error::Deadline { endpoint: "x".into(), deadline: Deadline::Idle, limit: Duration::from_secs(1) };
        assert!(deadline.is_retryable());
        assert!(!Error::InvalidInput("x".into()).is_retryable());
    }

    #[test]
    fn http_display_is_a_bounded_preview() {
        let http = |status, body: String| Error::Http { provider: "p".into(), status, body, retry_after: None };
        let huge = "x".repeat(5 << 20);
        let shown = http(500, huge.clone()).to_string();
        assert!(shown.len() < 500, "{}", shown.len());
        assert!(shown.contains("5242880 bytes in all"), "{shown}");
        let page = format!("<html>\n<body>\n{}\n</body></html>", "<p>line</p>\n".repeat(10_000));
        let shown = http(502, page).to_string();
        assert!(!shown.contains('\n') && !shown.contains("<p>") && shown.len() < 600, "{shown}");
        let google = r#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(
            http(400, google.into()).to_string(),
            "p returned HTTP 400: INVALID_ARGUMENT: API key not valid. (the server rejected the request)"
        );
        assert_eq!(
            http(404, r#"{"error":"model 'x' not found"}"#.into()).to_string(),
            "p returned HTTP 404: model 'x' not found (check the base URL and the model name; a local server may need the model pulled first)"
        );
        assert_eq!(http(418, String::new()).to_string(), "p returned HTTP 418: (empty body)");
        // Multi-byte characters are cut on a boundary.
        let shown = http(500, "é".repeat(1000)).to_string();
        assert!(shown.contains("é..."), "{shown}");
    }

    #[test]
    fn deadline_names_endpoint_and_limit() {
        let e = Error::Deadline {
            endpoint: "llama.cpp at http://127.0.0.1:8080/v1".into(),
            deadline: Deadline::FirstChunk,
            limit: Duration::from_millis(1500),
        };
        let s = e.to_string();
        assert!(
            s.starts_with("llama.cpp at http://127.0.0.1:8080/v1: the first-chunk deadline (1500 ms) passed"),
            "{s}"
        );
    }

    #[test]
    fn config_error_names_setting_and_fix() {
        let e = Error::config("OPENAI_BASE_URL", "is not set", "export OPENAI_BASE_URL=http://127.0.0.1:8080/v1");
        let s = e.to_string();
        assert!(s.contains("OPENAI_BASE_URL is not set"), "{s}");
        assert!(s.contains("export"), "{s}");
    }
}
