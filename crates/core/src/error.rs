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
    #[error("{provider} returned HTTP {status}: {body}")]
    Http {
        /// Which provider answered (for example `openai-compatible`).
        provider: String,
        /// The HTTP status code.
        status: u16,
        /// The response body, as text, kept for debugging.
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
            Error::Transport { .. } | Error::Timeout(_) => true,
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
        assert!(!Error::InvalidInput("x".into()).is_retryable());
    }

    #[test]
    fn config_error_names_setting_and_fix() {
        let e = Error::config("OPENAI_BASE_URL", "is not set", "export OPENAI_BASE_URL=http://127.0.0.1:8080/v1");
        let s = e.to_string();
        assert!(s.contains("OPENAI_BASE_URL is not set"), "{s}");
        assert!(s.contains("export"), "{s}");
    }
}
