//! What every network provider shares: [`Deadlines`] and their defaults, secret redaction ([`Secrets`]), bounded
//! reading of error bodies, and the mapping of transport failures to [`Error`]s that name the endpoint.

use std::fmt;
use std::time::{Duration, SystemTime};

use catena_core::Error;
pub use catena_http::{Answer, Deadlines};
use catena_http::{HttpClient, IoRuntime};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// The deadlines a provider's builder starts with, chosen for a model on a slow machine as much as for a hosted
/// API:
///
/// | deadline | limit | why |
/// |---|---|---|
/// | connect | 10 s | a server that is up accepts a connection in milliseconds |
/// | first chunk | 300 s | a CPU-bound local server may read a long prompt for minutes before its first token |
/// | idle | 120 s | the longest a server that is still working stays silent between two chunks |
/// | total | 600 s | bounds a server that trickles bytes forever; a longer answer needs a larger limit |
///
/// Change them with the builders' `deadlines` (all four) or `timeout` (the total) methods.
pub const DEFAULT_DEADLINES: Deadlines = Deadlines {
    connect: Some(Duration::from_secs(10)),
    first_chunk: Some(Duration::from_secs(300)),
    idle: Some(Duration::from_secs(120)),
    total: Some(Duration::from_secs(600)),
};

/// The most of an error body a client reads: a larger one is cut there (its first MiB kept on the error), never
/// held whole.
pub(crate) const MAX_ERROR_BODY: usize = 1 << 20;

/// What replaces a secret in text.
const REDACTED: &str = "[redacted]";

/// The secrets a client knows (its API key, a password in its base URL, sensitive header values), to take out of
/// every text that comes from a server or the transport before it reaches an error, a log or a span.
#[derive(Clone, Default)]
pub(crate) struct Secrets {
    values: Vec<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.values.len())
    }
}

impl Secrets {
    /// No secrets.
    pub(crate) fn new() -> Self {
        Secrets::default()
    }

    /// Adds a secret (ignored when empty or shorter than 4 characters, which would redact ordinary words).
    pub(crate) fn add(&mut self, secret: &str) {
        if secret.len() >= 4 && !self.values.iter().any(|v| v == secret) {
            self.values.push(secret.to_string());
            // Longest first, so a secret that contains another is replaced whole.
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// Adds the userinfo of `url` (`user:password@`): the password, and the user with it.
    pub(crate) fn add_url(&mut self, url: &reqwest::Url) {
        if let Some(password) = url.password() {
            let decoded = percent_decode(password);
            self.add(&format!("{}:{password}", url.username()));
            self.add(password);
            self.add(&decoded);
        }
    }

    /// Adds the value of a header whose name says it carries a credential (`api-key`, `authorization`, anything
    /// with `key`, `token`, `secret` or `password` in its name).
    pub(crate) fn add_header(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        if ["key", "token", "secret", "password", "authorization", "cookie"].iter().any(|w| name.contains(w)) {
            self.add(value);
            if let Some(bearer) = value.strip_prefix("Bearer ") {
                self.add(bearer);
            }
        }
    }

    /// `text` with every secret replaced by `[redacted]`.
    pub(crate) fn redact(&self, text: String) -> String {
        let mut text = text;
        for secret in &self.values {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        text
    }

    fn leaks(&self, text: &str) -> bool {
        self.values.iter().any(|s| text.contains(s.as_str()))
    }

    /// The error with the secrets taken out of every text that came from the server or the transport. A source
    /// error whose text would show a secret is dropped (its text stays in the message, redacted).
    pub(crate) fn redact_error(&self, e: Error) -> Error {
        if self.values.is_empty() {
            return e;
        }
        match e {
            Error::Http { provider, status, body, retry_after } => {
                Error::Http { provider: self.redact(provider), status, body: self.redact(body), retry_after }
            }
            Error::Decode { provider, message } => {
                Error::Decode { provider: self.redact(provider), message: self.redact(message) }
            }
            Error::Transport { provider, message, source } => {
                let leaks = source.as_ref().is_some_and(|s| self.leaks(&full_chain(s.as_ref())));
                Error::Transport {
                    provider: self.redact(provider),
                    message: self.redact(message),
                    source: if leaks { None } else { source },
                }
            }
            Error::Deadline { endpoint, deadline, limit } => {
                Error::Deadline { endpoint: self.redact(endpoint), deadline, limit }
            }
            Error::Exhausted { attempts, last } => {
                Error::Exhausted { attempts, last: Box::new(self.redact_error(*last)) }
            }
            other => other,
        }
    }
}

fn full_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` as it may be shown: without its userinfo (`user:password@`).
pub(crate) fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.as_str().trim_end_matches('/').to_string()
        }
        _ => url.to_string(),
    }
}

/// A transport failure (no HTTP status) of a request to `url` as an [`Error`]: [`Error::Deadline`] naming
/// `system` and the URL when a deadline passed, [`Error::Transport`] with the request line otherwise; the URL shown
/// without its userinfo, secrets redacted.
pub(crate) fn transport_error(
    e: catena_http::Error,
    provider: &str,
    system: &str,
    url: &str,
    secrets: &Secrets,
) -> Error {
    let url = display_url(url);
    if let Some((deadline, limit)) = e.deadline() {
        let endpoint = format!("{system} POST {url}");
        return secrets.redact_error(Error::Deadline { endpoint, deadline, limit });
    }
    let message = format!("POST {url}: {e}");
    secrets.redact_error(Error::Transport { provider: provider.to_string(), message, source: Some(Box::new(e)) })
}

/// Reads the body of a non-2xx response (at most [`MAX_ERROR_BODY`] bytes) into [`Error::Http`], with the
/// server's `Retry-After` and the secrets redacted. A body that cannot be read whole keeps what was read and says
/// why it stops.
pub(crate) async fn http_error(mut response: catena_http::Response, provider: &str, secrets: &Secrets) -> Error {
    let status = response.status().as_u16();
    let retry_after = crate::openai::parse_retry_after(response.headers(), SystemTime::now());
    let mut bytes = Vec::new();
    let mut note = None;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_ERROR_BODY - bytes.len();
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if chunk.len() > room {
                    note = Some(format!("\n(cut: the body is larger than {} KiB)", MAX_ERROR_BODY / 1024));
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                note = Some(format!("\n(the rest of the body could not be read: {e})"));
                break;
            }
        }
    }
    let mut body = String::from_utf8_lossy(&bytes).into_owned();
    if let Some(note) = note {
        body.push_str(&note);
    }
    secrets.redact_error(Error::Http { provider: provider.to_string(), status, body, retry_after })
}

/// The extra headers a builder was given, checked and marked sensitive (never printed); the values of
/// credential-looking ones join `secrets`.
///
/// # Errors
/// [`Error::Config`] naming a header whose name or value is not valid HTTP.
pub(crate) fn header_map(headers: &[(String, String)], secrets: &mut Secrets) -> catena_core::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        secrets.add_header(name, value);
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Error::config(format!("header `{name}`"), "is not a valid header name", "use letters, digits and '-'")
        })?;
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            Error::config(
                format!("header `{name}`"),
                "has a value with characters not allowed in HTTP headers",
                "use visible ASCII characters",
            )
        })?;
        value.set_sensitive(true);
        map.append(header, value);
    }
    Ok(map)
}

/// The HTTP client of a provider: `headers` on every request, the connect deadline of `deadlines`, connections
/// where `io` says.
///
/// # Errors
/// [`Error::Config`] when the client or its I/O thread cannot be made.
pub(crate) fn http_client(headers: HeaderMap, deadlines: &Deadlines, io: IoRuntime) -> catena_core::Result<HttpClient> {
    let client = deadlines
        .client_builder()
        .default_headers(headers)
        .build()
        .map_err(|e| Error::config("HTTP client", format!("could not be built ({e})"), "report this as a bug"))?;
    HttpClient::new(client, io).map_err(|e| {
        Error::config("io_runtime", format!("could not start the client's I/O thread ({e})"), "use IoRuntime::Caller")
    })
}

/// The media type of a response (`text/event-stream`, `application/json`, ...), lowercased, without parameters.
pub(crate) fn media_type(response: &catena_http::Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `deadlines` with the total set to `timeout` and every other deadline lowered to it when longer (what the
/// builders' `timeout` methods do).
pub(crate) fn with_timeout(deadlines: Deadlines, timeout: Duration) -> Deadlines {
    let cap = |d: Option<Duration>| Some(d.map_or(timeout, |d| d.min(timeout)));
    Deadlines {
        connect: cap(deadlines.connect),
        first_chunk: cap(deadlines.first_chunk),
        idle: cap(deadlines.idle),
        total: Some(timeout),
    }
}

/// Checks a builder's deadlines.
///
/// # Errors
/// [`Error::Config`] naming a deadline that is zero.
pub(crate) fn check_deadlines(deadlines: &Deadlines, builder: &str) -> catena_core::Result<()> {
    match deadlines.zero_ones().first() {
        Some(name) => Err(Error::config(
            format!("{builder}::deadlines ({name})"),
            "is 0, which would fail every call",
            "pass a positive duration, or None for no limit",
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_everywhere() {
        let mut secrets = Secrets::new();
        secrets.add("sk-live-123456");
        let url = reqwest::Url::parse("http://alice:p%40ss-word@127.0.0.1:9/v1").unwrap();
        secrets.add_url(&url);
        secrets.add_header("x-request-source", "docs");
        secrets.add_header("api-key", "azure-key-987");
        let text = "key sk-live-123456, url http://alice:p%40ss-word@127.0.0.1:9/v1, decoded p@ss-word, \
                    azure azure-key-987, docs";
        let shown = secrets.redact(text.to_string());
        for leak in ["sk-live", "p%40ss", "p@ss", "azure-key", "alice:"] {
            assert!(!shown.contains(leak), "{shown}");
        }
        assert!(shown.ends_with("docs"), "{shown}");
        assert_eq!(display_url("http://alice:secret@127.0.0.1:9/v1"), "http://127.0.0.1:9/v1");
        assert_eq!(display_url("http://127.0.0.1:9/v1"), "http://127.0.0.1:9/v1");
        let e = secrets.redact_error(Error::Exhausted {
            attempts: 2,
            last: Box::new(Error::Http {
                provider: "p".into(),
                status: 401,
                body: "bad key sk-live-123456".into(),
                retry_after: None,
            }),
        });
        assert!(!format!("{e} {e:?}").contains("sk-live"), "{e:?}");
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
        assert_eq!(percent_decode("%"), "%");
    }
}
