//! The MCP client: connect to a server over stdio or streamable HTTP, list its tools, call them, and hand them
//! to catena as [`Tool`]s.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use catena_core::{Error, Result, Tool, ToolDefinition, ToolError};
use rmcp::model::{CallToolRequestParams, CallToolResponse, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{Peer, ServiceExt};
use serde_json::Value;

use crate::convert::{arguments_to_rmcp, definition_from_rmcp, McpToolResult};
use crate::process::{ChildGuard, Spawn};

/// How long [`StdioConnect::connect`] and [`HttpConnect::connect`] wait, by default, for the server to start and
/// answer `initialize`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request (`tools/list`, `tools/call`) waits for its answer, by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`McpClient::shutdown`] waits, by default, at each step of a stdio server's shutdown (after closing
/// its stdin, then after SIGTERM) before the next one.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Timeouts shared by both connection builders.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    request: Duration,
    shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            request: DEFAULT_REQUEST_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// Builds a connection to an MCP server that runs as a child process speaking MCP over its stdin and stdout. Made
/// by [`McpClient::stdio`].
///
/// The server's stderr goes to this process's stderr unless [`StdioConnect::stderr`] says otherwise. The child
/// runs in a process group of its own; when the client (and every tool taken from it) is dropped it is killed and
/// reaped at once, and [`McpClient::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct StdioConnect {
    spawn: Spawn,
    timeouts: Timeouts,
}

impl StdioConnect {
    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.spawn.args.push(arg.into());
        self
    }
    /// Adds arguments.
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        self.spawn.args.extend(args.into_iter().map(Into::into));
        self
    }
    /// Sets an environment variable of the server process (which otherwise inherits this process's environment).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.spawn.env.push((key.into(), value.into()));
        self
    }
    /// Starts the server with only the variables given with [`StdioConnect::env`] (`PATH` included: the program
    /// itself is still looked up on this process's `PATH`).
    pub fn env_clear(mut self) -> Self {
        self.spawn.env_clear = true;
        self
    }
    /// Sets the server's working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spawn.current_dir = Some(dir.into());
        self
    }
    /// Where the server's stderr goes (default: inherited, so its log appears in this process's stderr);
    /// `Stdio::null()` silences it, a `File` keeps it.
    pub fn stderr(mut self, stderr: impl Into<Stdio>) -> Self {
        self.spawn.stderr = Some(stderr.into());
        self
    }
    /// How long to wait for the process to start and answer `initialize` (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = timeout;
        self
    }
    /// How long each request waits for its answer (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.request = timeout;
        self
    }
    /// How long [`McpClient::shutdown`] waits after closing the server's stdin, and again after SIGTERM, before
    /// the next step (default [`DEFAULT_SHUTDOWN_GRACE`]).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.timeouts.shutdown_grace = grace;
        self
    }

    /// Starts the server and initializes the MCP session. Errors: [`Error::Config`] when the program cannot be
    /// started, [`Error::Transport`] when it exits, does not answer within the connect timeout, or answers
    /// something that is not MCP. The process is killed on every error.
    pub async fn connect(mut self) -> Result<McpClient> {
        let label = format!("mcp stdio `{}`", self.spawn.display());
        let (mut child, stdout, stdin) = ChildGuard::spawn(&mut self.spawn)?;
        let timeouts = self.timeouts;
        let started = tokio::time::timeout(timeouts.connect, client_config().serve((stdout, stdin))).await;
        let running = match started {
            Ok(Ok(running)) => running,
            Ok(Err(e)) => {
                // Say whether the process died (the usual reason: wrong command, or a crash on start).
                let exited = match child.shutdown(Duration::ZERO).await {
                    Some(status) => format!(" (the process exited: {status})"),
                    None => String::new(),
                };
                return Err(transport(
                    &label,
                    format!(
                        "MCP initialization failed: {e}{exited}; check that the command runs an MCP server on stdio \
                         (its stderr above may say more)"
                    ),
                ));
            }
            Err(_) => {
                return Err(transport(
                    &label,
                    format!(
                        "the server did not answer `initialize` within {:?}; check that the command runs an MCP \
                         server on stdio, or raise StdioConnect::connect_timeout",
                        timeouts.connect
                    ),
                ))
            }
        };
        Ok(McpClient::new(running, Some(child), label, timeouts))
    }
}

/// Builds a connection to an MCP server over streamable HTTP. Made by [`McpClient::http`].
///
/// `https` URLs use rustls with the platform's certificate verifier; if the process has not installed a rustls
/// crypto provider yet, the first HTTP connection installs *ring* as the process default.
#[derive(Debug)]
pub struct HttpConnect {
    url: String,
    headers: Vec<(String, String)>,
    bearer: Option<String>,
    timeouts: Timeouts,
}

impl HttpConnect {
    /// Adds a header sent with every request (for example an API key). `Accept`, `Mcp-Session-Id` and
    /// `Last-Event-Id` are the transport's own and are refused by [`HttpConnect::connect`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }
    /// How long to wait for the server to answer `initialize` (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = timeout;
        self
    }
    /// How long each request waits for its answer (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.request = timeout;
        self
    }

    /// Initializes the MCP session. Errors: [`Error::Config`] for an invalid URL or header, [`Error::Transport`]
    /// when the server cannot be reached, refuses (for example HTTP 401: see [`HttpConnect::bearer_token`]), does
    /// not answer within the connect timeout, or answers something that is not MCP.
    pub async fn connect(self) -> Result<McpClient> {
        let label = format!("mcp http {}", self.url);
        let parsed = self.url.parse::<http::Uri>().ok();
        let ok = parsed.as_ref().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some_and(|a| !a.host().is_empty())
        });
        if !ok {
            return Err(Error::Config {
                setting: "McpClient::http url".into(),
                problem: format!("`{}` is not an http(s) URL", self.url),
                hint: "give the server's MCP endpoint, for example http://127.0.0.1:8000/mcp".into(),
            });
        }
        ensure_crypto_provider();
        let mut config = StreamableHttpClientTransportConfig::with_uri(self.url.clone());
        let mut custom = HashMap::new();
        for (name, value) in &self.headers {
            let bad = |problem: String| Error::Config {
                setting: format!("HttpConnect::header {name}"),
                problem,
                hint: "header names are ASCII tokens and values visible ASCII".into(),
            };
            let name =
                http::HeaderName::try_from(name.as_str()).map_err(|e| bad(format!("is not a valid name ({e})")))?;
            let value =
                http::HeaderValue::try_from(value.as_str()).map_err(|e| bad(format!("has an invalid value ({e})")))?;
            if ["accept", "mcp-session-id", "last-event-id"].contains(&name.as_str()) {
                return Err(bad("is set by the MCP transport itself".into()));
            }
            custom.insert(name, value);
        }
        config.custom_headers = custom;
        if let Some(token) = self.bearer {
            config = config.auth_header(token);
        }
        let http = StreamableHttpClientTransport::from_config(config);
        let timeouts = self.timeouts;
        let running = match tokio::time::timeout(timeouts.connect, client_config().serve(http)).await {
            Ok(Ok(running)) => running,
            Ok(Err(e)) => {
                let hint = if e.auth_challenge().is_some() || e.is_authorization_required() {
                    "the server requires authorization: pass a token with HttpConnect::bearer_token or a header"
                } else {
                    "check that the URL is the server's streamable HTTP endpoint (often ending in /mcp) and that it runs"
                };
                return Err(transport(&label, format!("MCP initialization failed: {e}; {hint}")));
            }
            Err(_) => {
                return Err(transport(
                    &label,
                    format!(
                        "the server did not answer `initialize` within {:?}; check the URL, or raise \
                         HttpConnect::connect_timeout",
                        timeouts.connect
                    ),
                ))
            }
        };
        Ok(McpClient::new(running, None, label, timeouts))
    }
}

fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Fails only when another thread installed one first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn client_config() -> ClientConfig {
    let mut config = ClientConfig::default();
    // The newest version with the `initialize` handshake, which every current server speaks.
    config.protocol_version = ProtocolVersion::LATEST_WITH_INITIALIZE;
    config.client_info = Implementation::new("catena-mcp", env!("CARGO_PKG_VERSION"));
    config
}

fn transport(label: &str, message: String) -> Error {
    Error::Transport { provider: label.to_string(), message, source: None }
}

/// What the server said about itself when the session was initialized.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerInfo {
    /// The server's name (`serverInfo.name`), when it gave one.
    pub name: Option<String>,
    /// The server's version (`serverInfo.version`), when it gave one.
    pub version: Option<String>,
    /// Its human-readable title, when it gave one.
    pub title: Option<String>,
    /// The negotiated MCP protocol version (for example `2025-11-25`).
    pub protocol_version: String,
    /// The server's instructions for using it, when it gave some.
    pub instructions: Option<String>,
    /// Whether it offers tools.
    pub has_tools: bool,
}

/// One MCP session; shared by the client and every tool taken from it.
struct Connection {
    label: String,
    peer: Peer<RoleClient>,
    running: Mutex<Option<RunningService<RoleClient, ClientConfig>>>,
    child: Mutex<Option<ChildGuard>>,
    timeouts: Timeouts,
    info: ServerInfo,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The running service's own drop cancels the session; the child is killed and reaped by its guard.
        let running = self.running.get_mut().map(Option::take).unwrap_or_else(|p| p.into_inner().take());
        drop(running);
        let child = self.child.get_mut().map(Option::take).unwrap_or_else(|p| p.into_inner().take());
        drop(child);
    }
}

/// A connection to an MCP server: list and call its tools, or take them as catena [`Tool`]s with
/// [`McpClient::tools`]. Cheap to clone (clones share the session).
///
/// The session ends when the client and every tool taken from it are dropped (a stdio server is then killed and
/// reaped at once), or on [`McpClient::shutdown`], which stops it gracefully; calls made after that fail with
/// [`ToolError::Failed`] saying the connection is closed.
#[derive(Clone)]
pub struct McpClient {
    connection: Arc<Connection>,
}

impl fmt::Debug for McpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpClient")
            .field("server", &self.connection.label)
            .field("info", &self.connection.info)
            .finish_non_exhaustive()
    }
}

impl McpClient {
    /// A connection to the stdio server that `program` starts (add arguments, environment, timeouts on the
    /// returned builder, then [`StdioConnect::connect`]).
    pub fn stdio(program: impl Into<OsString>) -> StdioConnect {
        StdioConnect {
            spawn: Spawn {
                program: program.into(),
                args: Vec::new(),
                env: Vec::new(),
                env_clear: false,
                current_dir: None,
                stderr: None,
            },
            timeouts: Timeouts::default(),
        }
    }

    /// A connection to the streamable HTTP server at `url`, its MCP endpoint (for example
    /// `http://127.0.0.1:8000/mcp`); add headers and timeouts on the returned builder, then
    /// [`HttpConnect::connect`].
    pub fn http(url: impl Into<String>) -> HttpConnect {
        HttpConnect { url: url.into(), headers: Vec::new(), bearer: None, timeouts: Timeouts::default() }
    }

    fn new(
        running: RunningService<RoleClient, ClientConfig>,
        child: Option<ChildGuard>,
        label: String,
        timeouts: Timeouts,
    ) -> McpClient {
        let peer = running.peer().clone();
        let info = match peer.peer_info() {
            Some(info) => ServerInfo {
                name: info.server_info.as_ref().map(|i| i.name.clone()),
                version: info.server_info.as_ref().map(|i| i.version.clone()),
                title: info.server_info.as_ref().and_then(|i| i.title.clone()),
                protocol_version: info.protocol_version.to_string(),
                instructions: info.instructions.clone(),
                has_tools: info.capabilities.tools.is_some(),
            },
            None => ServerInfo {
                name: None,
                version: None,
                title: None,
                protocol_version: String::new(),
                instructions: None,
                has_tools: false,
            },
        };
        McpClient {
            connection: Arc::new(Connection {
                label,
                peer,
                running: Mutex::new(Some(running)),
                child: Mutex::new(child),
                timeouts,
                info,
            }),
        }
    }

    /// What the server said about itself at initialization.
    pub fn server_info(&self) -> &ServerInfo {
        &self.connection.info
    }

    /// The process id of a stdio server while it runs (`None` over HTTP, or after shutdown).
    pub fn process_id(&self) -> Option<u32> {
        self.connection.child.lock().ok()?.as_ref()?.id()
    }

    /// Whether the session has ended (shut down, or the server went away).
    pub fn is_closed(&self) -> bool {
        self.connection.peer.is_transport_closed()
    }

    /// The server's tools, every page of `tools/list`.
    pub async fn list_tools(&self) -> Result<Vec<ToolDefinition>> {
        let c = &self.connection;
        let listed = tokio::time::timeout(c.timeouts.request, c.peer.list_all_tools()).await;
        match listed {
            Ok(Ok(tools)) => Ok(tools.iter().map(definition_from_rmcp).collect()),
            Ok(Err(e)) => Err(transport(&c.label, format!("tools/list failed: {}", service_error(&e)))),
            Err(_) => Err(transport(&c.label, format!("tools/list got no answer within {:?}", c.timeouts.request))),
        }
    }

    /// The server's tools as catena tools, each calling the server through this session (see [`McpTool`]).
    pub async fn tools(&self) -> Result<Vec<Arc<dyn Tool>>> {
        Ok(self.mcp_tools().await?.into_iter().map(|tool| Arc::new(tool) as Arc<dyn Tool>).collect())
    }

    /// Like [`McpClient::tools`], as the concrete [`McpTool`] type.
    pub async fn mcp_tools(&self) -> Result<Vec<McpTool>> {
        Ok(self
            .list_tools()
            .await?
            .into_iter()
            .map(|definition| McpTool { definition, client: self.clone() })
            .collect())
    }

    /// Calls a tool and returns MCP's result as it came (content blocks as JSON). Errors: `Err` for everything
    /// that is not a tool result — arguments that are not an object, an unknown tool or other protocol error, a
    /// transport failure, a timeout; a result with `isError: true` is `Ok`, with [`McpToolResult::is_error`] set.
    pub async fn call_tool_raw(&self, name: &str, arguments: Value) -> Result<McpToolResult, ToolError> {
        let c = &self.connection;
        let mut params = CallToolRequestParams::new(name.to_string());
        params.arguments = arguments_to_rmcp(arguments)?;
        let called = tokio::time::timeout(c.timeouts.request, c.peer.call_tool_once(params)).await;
        let timeout_ms = u64::try_from(c.timeouts.request.as_millis()).unwrap_or(u64::MAX);
        match called {
            Err(_) => Err(ToolError::TimedOut(timeout_ms)),
            Ok(Ok(CallToolResponse::Complete(result))) => Ok(McpToolResult::from_rmcp(result)),
            Ok(Ok(_)) => Err(ToolError::Failed(format!(
                "{}: the server answered tools/call `{name}` with a request for more input or a task, which \
                 catena's MCP client does not support",
                c.label
            ))),
            Ok(Err(ServiceError::McpError(e))) if e.code == rmcp::model::ErrorCode::INVALID_PARAMS => {
                Err(ToolError::InvalidArguments(format!("{} (from {})", e.message, c.label)))
            }
            Ok(Err(ServiceError::Timeout { .. })) => Err(ToolError::TimedOut(timeout_ms)),
            Ok(Err(e)) => {
                Err(ToolError::Failed(format!("{}: tools/call `{name}` failed: {}", c.label, service_error(&e))))
            }
        }
    }

    /// Calls a tool and returns its result as a catena value, by the rule documented on [`McpTool`].
    pub async fn call_tool(&self, name: &str, arguments: Value) -> Result<Value, ToolError> {
        self.call_tool_raw(name, arguments).await?.into_output()
    }

    /// Ends the session gracefully: closes the connection (an HTTP session is deleted), then for a stdio server
    /// waits for the process to exit, sending SIGTERM and then SIGKILL if it does not within the shutdown grace.
    /// Tools taken from this client fail from then on. Never hangs longer than the grace periods.
    pub async fn shutdown(self) {
        let c = &self.connection;
        let running = c.running.lock().map(|mut r| r.take()).unwrap_or_else(|p| p.into_inner().take());
        if let Some(mut running) = running {
            let _ = running.close_with_timeout(c.timeouts.shutdown_grace).await;
        }
        let child = c.child.lock().map(|mut r| r.take()).unwrap_or_else(|p| p.into_inner().take());
        if let Some(mut child) = child {
            child.shutdown(c.timeouts.shutdown_grace).await;
        }
    }
}

fn service_error(e: &ServiceError) -> String {
    match e {
        ServiceError::TransportClosed => {
            "the connection is closed (the server exited or the client was shut down)".into()
        }
        ServiceError::McpError(e) => format!("the server answered with error {}: {}", e.code.0, e.message),
        other => other.to_string(),
    }
}

/// One tool of an MCP server as a catena [`Tool`]: its definition is the server's (name, description — empty when
/// the server gives none —, `inputSchema` as the parameters), and [`Tool::call`] sends `tools/call` through the
/// session it came from (which it keeps open).
///
/// The result becomes a catena value by this rule:
/// - `isError: true` → [`ToolError::Failed`] with the result's text blocks joined with newlines;
/// - `structuredContent` present → that JSON value;
/// - one text block → its text as a JSON string; several text blocks → their texts joined with newlines;
/// - no content → `null`;
/// - any non-text block (image, audio, embedded resource, resource link) → the array of all blocks as MCP JSON
///   (`{"type": "image", "data": ..., "mimeType": ...}`, ...).
///
/// An unknown tool or arguments the server rejects as a protocol error (`-32602`) are
/// [`ToolError::InvalidArguments`]; the request timeout is [`ToolError::TimedOut`]; transport failures and other
/// protocol errors are [`ToolError::Failed`] naming the server.
#[derive(Clone)]
pub struct McpTool {
    definition: ToolDefinition,
    client: McpClient,
}

impl fmt::Debug for McpTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpTool").field("name", &self.definition.name).field("client", &self.client).finish()
    }
}

impl McpTool {
    /// The client whose session this tool calls through.
    pub fn client(&self) -> &McpClient {
        &self.client
    }
}

#[async_trait]
impl Tool for McpTool {
    fn definition(&self) -> ToolDefinition {
        self.definition.clone()
    }

    async fn call(&self, arguments: Value) -> Result<Value, ToolError> {
        self.client.call_tool(&self.definition.name, arguments).await
    }
}
