//! The MCP server: catena tools served over stdio or streamable HTTP.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use catena_core::{Error, Result, Tool, ToolError};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ErrorData, Implementation, InitializeResult, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, ServiceExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::convert::{definition_to_rmcp, result_to_rmcp};

/// How long [`McpHttpServer::shutdown`] waits for open requests and streams to finish before it drops them.
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A set of catena tools served as an MCP server, over stdio ([`McpServer::serve_stdio`]), any byte stream
/// ([`McpServer::serve_io`]) or streamable HTTP ([`McpServer::serve_http`]).
///
/// - `tools/list` lists each tool's [`Tool::definition`] (its parameters schema as `inputSchema`, kept as it is:
///   `$schema`, `$defs`, `additionalProperties` included; a schema that is not an object becomes
///   `{"type": "object"}`), all in one page unless [`McpServer::with_page_size`] sets one.
/// - `tools/call` runs [`Tool::call`] with the arguments (`{}` when the client sends none). Its output becomes the
///   result: a JSON string as one text block; a JSON object as `structuredContent`, with its compact JSON as the
///   text block for clients that read only text; any other value as its compact JSON text.
/// - Every [`ToolError`] (invalid arguments, the tool's failure, a timeout, ...) is a result with `isError: true`
///   whose text is the error's message, so that the model sees it; only a call of a tool that is not served is a
///   protocol error (`-32602`, invalid params, as MCP specifies).
///
/// ```
/// use std::sync::Arc;
/// use catena_core::{tool_fn, Tool};
/// use catena_mcp::McpServer;
/// # #[derive(serde::Deserialize, schemars::JsonSchema)] struct Add { a: f64, b: f64 }
/// let add = tool_fn("add", "Adds two numbers.", |x: Add| async move { Ok::<_, String>(x.a + x.b) });
/// let server = McpServer::new(vec![Arc::new(add) as Arc<dyn Tool>])
///     .unwrap()
///     .with_name("calculator", "1.0.0")
///     .with_instructions("Use add to add numbers.");
/// # drop(server);
/// ```
#[derive(Clone)]
pub struct McpServer {
    shared: Arc<Shared>,
}

struct Shared {
    tools: Vec<Arc<dyn Tool>>,
    listed: Vec<rmcp::model::Tool>,
    by_name: HashMap<String, usize>,
    info: InitializeResult,
    page_size: Option<usize>,
    allowed_hosts: Option<Vec<String>>,
}

impl fmt::Debug for McpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpServer")
            .field("name", &self.shared.info.server_info.name)
            .field("tools", &self.shared.listed.iter().map(|t| t.name.as_ref()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl McpServer {
    /// A server of these tools, named `catena-mcp` with this crate's version until [`McpServer::with_name`].
    /// Errors with [`Error::InvalidInput`] when two tools have the same name, or a name is empty.
    pub fn new(tools: impl IntoIterator<Item = Arc<dyn Tool>>) -> Result<McpServer> {
        let tools: Vec<Arc<dyn Tool>> = tools.into_iter().collect();
        let mut listed = Vec::with_capacity(tools.len());
        let mut by_name = HashMap::new();
        for (i, tool) in tools.iter().enumerate() {
            let definition = tool.definition();
            if definition.name.is_empty() {
                return Err(Error::InvalidInput(format!("tool #{i} has an empty name; MCP tools need a name")));
            }
            if by_name.insert(definition.name.clone(), i).is_some() {
                return Err(Error::InvalidInput(format!(
                    "two tools are named `{}`; an MCP server's tool names must be unique",
                    definition.name
                )));
            }
            listed.push(definition_to_rmcp(&definition));
        }
        let mut info = InitializeResult::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new("catena-mcp", env!("CARGO_PKG_VERSION"));
        Ok(McpServer {
            shared: Arc::new(Shared { tools, listed, by_name, info, page_size: None, allowed_hosts: None }),
        })
    }

    fn shared_mut(&mut self) -> &mut Shared {
        // Only the builder methods mutate, before any session shares the server; clone if one already does.
        if Arc::get_mut(&mut self.shared).is_none() {
            let s = &self.shared;
            self.shared = Arc::new(Shared {
                tools: s.tools.clone(),
                listed: s.listed.clone(),
                by_name: s.by_name.clone(),
                info: s.info.clone(),
                page_size: s.page_size,
                allowed_hosts: s.allowed_hosts.clone(),
            });
        }
        Arc::get_mut(&mut self.shared).expect("the server was just made unique")
    }

    /// The name and version the server gives in `initialize` (`serverInfo`).
    pub fn with_name(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.shared_mut().info.server_info = Implementation::new(name, version);
        self
    }

    /// Instructions for the client (and its model) on how to use the server, sent in `initialize`.
    pub fn with_instructions(mut self, instructions: impl Into<String>) -> Self {
        self.shared_mut().info.instructions = Some(instructions.into());
        self
    }

    /// Lists tools `page_size` at a time (`nextCursor` pages), instead of all in one page. Zero counts as one.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.shared_mut().page_size = Some(page_size.max(1));
        self
    }

    /// The `Host` header values the HTTP server accepts (names, or `name:port`). By default only loopback names
    /// (`localhost`, `127.0.0.1`, `::1`), which protects a local server from DNS rebinding; a server reachable
    /// under other names must list them. Requests with another `Host` get HTTP 403.
    pub fn with_allowed_hosts(mut self, hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.shared_mut().allowed_hosts = Some(hosts.into_iter().map(Into::into).collect());
        self
    }

    /// The names of the served tools, in order.
    pub fn tool_names(&self) -> Vec<String> {
        self.shared.listed.iter().map(|t| t.name.to_string()).collect()
    }

    /// Serves one MCP session over this process's stdin and stdout, until the client closes stdin (or ends the
    /// session). Nothing else may write to stdout meanwhile: log to stderr.
    pub async fn serve_stdio(self) -> Result<()> {
        self.serve_io(rmcp::transport::io::stdio_pipes()).await
    }

    /// Serves one MCP session over a byte stream (a pair of reader and writer, for example a socket split in two or
    /// a `tokio::io::duplex` pipe in a test), until the peer closes it.
    pub async fn serve_io<R, W>(self, (read, write): (R, W)) -> Result<()>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let running = Handler { shared: self.shared }.serve((read, write)).await.map_err(|e| Error::Transport {
            provider: "mcp server".into(),
            message: format!("the MCP session did not start: {e}"),
            source: None,
        })?;
        running.waiting().await.map_err(|e| Error::Transport {
            provider: "mcp server".into(),
            message: format!("the MCP session task failed: {e}"),
            source: None,
        })?;
        Ok(())
    }

    /// Serves MCP over streamable HTTP at `http://ADDR/mcp`, on a tokio task, until [`McpHttpServer::shutdown`]
    /// or until the returned handle is dropped. Bind `127.0.0.1:0` for a free port ([`McpHttpServer::local_addr`]
    /// tells which). Sessions are kept in memory (`Mcp-Session-Id`). Errors with [`Error::Transport`] when the
    /// address cannot be bound (in use, or not this machine's).
    pub async fn serve_http(self, addr: SocketAddr) -> Result<McpHttpServer> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| Error::Transport {
            provider: "mcp http server".into(),
            message: format!("cannot listen on {addr}: {e}; choose another port (0 picks a free one)"),
            source: Some(Box::new(e)),
        })?;
        let local_addr = listener.local_addr().map_err(|e| Error::Transport {
            provider: "mcp http server".into(),
            message: format!("cannot read the bound address: {e}"),
            source: Some(Box::new(e)),
        })?;
        let stop = CancellationToken::new();
        let mut config = StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token());
        if let Some(hosts) = &self.shared.allowed_hosts {
            config = config.with_allowed_hosts(hosts.clone());
        }
        let shared = self.shared.clone();
        let service = StreamableHttpService::new(
            move || Ok(Handler { shared: shared.clone() }),
            LocalSessionManager::default().into(),
            config,
        );
        let router = axum::Router::new().nest_service("/mcp", service);
        let graceful = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(graceful.cancelled_owned()).await;
        });
        Ok(McpHttpServer { local_addr, stop, task: Some(task) })
    }

    /// Like [`McpServer::serve_http`], but serves until `signal` completes (for example `tokio::signal::ctrl_c()`),
    /// then shuts down.
    pub async fn serve_http_until(self, addr: SocketAddr, signal: impl Future<Output = ()>) -> Result<()> {
        let server = self.serve_http(addr).await?;
        signal.await;
        server.shutdown().await;
        Ok(())
    }
}

/// A running streamable HTTP MCP server (from [`McpServer::serve_http`]). Dropping it stops the server at once;
/// [`McpHttpServer::shutdown`] lets open requests finish first.
#[derive(Debug)]
pub struct McpHttpServer {
    local_addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl McpHttpServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The MCP endpoint's URL, `http://ADDR/mcp`, to give to clients.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.local_addr)
    }

    /// Stops accepting connections, ends the sessions, and waits (up to 5 seconds) for open requests to finish.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(HTTP_SHUTDOWN_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for McpHttpServer {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The rmcp handler of one session.
#[derive(Clone)]
struct Handler {
    shared: Arc<Shared>,
}

impl ServerHandler for Handler {
    fn get_info(&self) -> InitializeResult {
        self.shared.info.clone()
    }

    fn get_tool(&self, name: &str) -> Option<rmcp::model::Tool> {
        self.shared.by_name.get(name).map(|&i| self.shared.listed[i].clone())
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListToolsResult, ErrorData> {
        let all = &self.shared.listed;
        let Some(page_size) = self.shared.page_size else {
            return Ok(ListToolsResult::with_all_items(all.clone()));
        };
        let start = match request.and_then(|r| r.cursor) {
            None => 0,
            Some(cursor) => match cursor.parse::<usize>() {
                Ok(start) if start <= all.len() => start,
                _ => return Err(ErrorData::invalid_params(format!("invalid cursor `{cursor}`"), None)),
            },
        };
        let end = start.saturating_add(page_size).min(all.len());
        let mut result = ListToolsResult::with_all_items(all[start..end].to_vec());
        if end < all.len() {
            result.next_cursor = Some(end.to_string());
        }
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResponse, ErrorData> {
        let Some(&index) = self.shared.by_name.get(request.name.as_ref()) else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{}`; tools/list gives the tools served", request.name),
                None,
            ));
        };
        let tool = self.shared.tools[index].clone();
        let arguments = serde_json::Value::Object(request.arguments.unwrap_or_default());
        // The tool runs on a task of its own, so that a panicking tool fails its call instead of the session.
        let call = tokio::spawn(async move { tool.call(arguments).await });
        let abort = call.abort_handle();
        let output = tokio::select! {
            joined = call => match joined {
                Ok(output) => output,
                Err(e) if e.is_panic() => Err(ToolError::Failed("the tool panicked".into())),
                Err(_) => Err(ToolError::NotRun("the call was cancelled".into())),
            },
            _ = context.ct.cancelled() => {
                abort.abort();
                Err(ToolError::NotRun("the client cancelled the call".into()))
            }
        };
        Ok(CallToolResponse::Complete(result_to_rmcp(output)))
    }
}
