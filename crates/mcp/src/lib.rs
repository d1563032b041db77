//! [Model Context Protocol](https://modelcontextprotocol.io) for catena, on the official Rust SDK (`rmcp`): the
//! tools of any MCP server as catena [`Tool`](catena_core::Tool)s, and catena tools (typed [`tool_fn`]s, chains
//! through [`chain_tool`], anything implementing `Tool`) served to any MCP client.
//!
//! - Client: [`McpClient::stdio`] starts a server process and speaks MCP over its stdin/stdout;
//!   [`McpClient::http`] connects to a streamable HTTP endpoint (with headers such as `Authorization`).
//!   [`McpClient::tools`] lists the server's tools (every page) as [`McpTool`]s, ready for an agent's tool box;
//!   [`McpTool`] documents how MCP results become catena values and errors.
//! - Server: [`McpServer`] serves tools over stdio ([`McpServer::serve_stdio`]) or streamable HTTP
//!   ([`McpServer::serve_http`], bound where you say, stopped with its handle); [`McpServer`] documents how tool
//!   outputs and [`ToolError`](catena_core::ToolError)s become MCP results.
//!
//! Timeouts are explicit: connecting (spawn and `initialize`) and each request have one, set on the connection
//! builders ([`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`] until then). Nothing a server sends makes
//! this crate panic: malformed answers are errors naming the server. rmcp's types stay inside this crate.
//!
//! Tools, prompts and resources: this crate covers tools (the part of MCP that catena's tool model has); the
//! server offers no prompts, resources, logging, sampling or elicitation, and the client answers no sampling or
//! elicitation requests.
//!
//! ```
//! use std::sync::Arc;
//! use catena_core::{chain_fn, chain_tool, tool_fn, Tool};
//! use catena_mcp::{McpClient, McpServer};
//! use serde_json::json;
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Add {
//!     /// The first number.
//!     a: f64,
//!     /// The second number.
//!     b: f64,
//! }
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Shout {
//!     text: String,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> catena_core::Result<()> {
//! // Serve a typed tool and a chain over streamable HTTP on a free port of 127.0.0.1.
//! let add = tool_fn("add", "Adds two numbers.", |x: Add| async move { Ok::<_, String>(x.a + x.b) });
//! let shout = chain_tool("shout", "Upper-cases a text.", chain_fn(|s: Shout| async move { Ok(s.text.to_uppercase()) }));
//! let tools: Vec<Arc<dyn Tool>> = vec![Arc::new(add), Arc::new(shout)];
//! let server = McpServer::new(tools)?.serve_http("127.0.0.1:0".parse().unwrap()).await?;
//!
//! // Connect to it as to any MCP server: its tools are catena tools.
//! let client = McpClient::http(server.url()).connect().await?;
//! let tools = client.tools().await?;
//! assert_eq!(tools.iter().map(|t| t.definition().name).collect::<Vec<_>>(), ["add", "shout"]);
//! assert_eq!(tools[1].call(json!({"text": "hi"})).await, Ok(json!("HI")));
//! // A number travels as its JSON text; an error comes back as the tool's error.
//! assert_eq!(client.call_tool("add", json!({"a": 2, "b": 3})).await, Ok(json!("5.0")));
//! let err = client.call_tool("add", json!({"a": 2})).await.unwrap_err();
//! assert!(err.to_string().contains("missing field `b`"), "{err}");
//!
//! client.shutdown().await;
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! [`tool_fn`]: catena_core::tool_fn
//! [`chain_tool`]: catena_core::chain_tool

#![warn(missing_docs)]

mod client;
mod convert;
mod process;
mod server;

pub use client::{
    HttpConnect, McpClient, McpTool, ServerInfo, StdioConnect, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SHUTDOWN_GRACE,
};
pub use convert::McpToolResult;
pub use server::{McpHttpServer, McpServer};
