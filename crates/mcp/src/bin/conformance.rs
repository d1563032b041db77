//! `catena-mcp-conformance`: catena's MCP server and client as one small program, for the official MCP
//! conformance suite (`scripts/mcp-conformance.sh`) and for this crate's tests.
//!
//! ```text
//! catena-mcp-conformance server --stdio [--page-size N]     serve the fixture tools on stdin/stdout
//! catena-mcp-conformance server --http ADDR [--page-size N] serve them at http://ADDR/mcp until Ctrl-C or SIGTERM
//! catena-mcp-conformance client URL                         run the client scenario named by $MCP_CONFORMANCE_SCENARIO
//! ```
//!
//! The server's tools are the conformance suite's tool scenarios that catena's tool model can express
//! (`test_simple_text`, `test_error_handling`, `json_schema_2020_12_tool`) and a few for the tests: `add`, `echo`,
//! `weather` (an object output), `shout` (a chain exposed with `chain_tool`), `sleep` and `panic`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use catena_core::{chain_fn, chain_tool, tool_fn, Tool, ToolDefinition, ToolError};
use catena_mcp::{McpClient, McpServer};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize, JsonSchema)]
struct NoArguments {}

#[derive(Deserialize, JsonSchema)]
struct Add {
    /// The first number.
    a: f64,
    /// The second number.
    b: f64,
}

#[derive(Deserialize, JsonSchema)]
struct Echo {
    /// The message to echo.
    message: String,
}

#[derive(Deserialize, JsonSchema)]
struct City {
    /// The city.
    city: String,
}

#[derive(Deserialize, JsonSchema)]
struct Shout {
    /// The text to upper-case.
    text: String,
}

#[derive(Deserialize, JsonSchema)]
struct Sleep {
    /// How long to sleep, in milliseconds.
    ms: u64,
}

/// The conformance suite's `json_schema_2020_12_tool`: its schema must reach the client untouched.
struct JsonSchemaTool;

#[async_trait]
impl Tool for JsonSchemaTool {
    fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: "json_schema_2020_12_tool".into(),
            description: "Tool with JSON Schema 2020-12 features".into(),
            parameters: json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {
                    "address": {
                        "type": "object",
                        "properties": {"street": {"type": "string"}, "city": {"type": "string"}}
                    }
                },
                "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
                "additionalProperties": false
            }),
        }
    }

    async fn call(&self, arguments: Value) -> Result<Value, ToolError> {
        Ok(json!({ "received": arguments }))
    }
}

fn tools() -> Vec<Arc<dyn Tool>> {
    let simple = tool_fn("test_simple_text", "Returns a simple text.", |_: NoArguments| async {
        Ok::<_, String>("This is a simple text response for testing.")
    });
    let error = tool_fn("test_error_handling", "Always fails.", |_: NoArguments| async {
        Err::<String, _>("This tool intentionally returns an error for testing")
    });
    let add = tool_fn("add", "Adds two numbers.", |x: Add| async move { Ok::<_, String>(x.a + x.b) });
    let echo = tool_fn("echo", "Echoes the message.", |x: Echo| async move { Ok::<_, String>(x.message) });
    let weather = tool_fn("weather", "The weather in a city, as an object.", |x: City| async move {
        Ok::<_, String>(json!({"city": x.city, "temperature": 21.5, "conditions": "sunny"}))
    });
    let shout = chain_tool(
        "shout",
        "Upper-cases a text (a catena chain).",
        chain_fn(|s: Shout| async move { Ok(s.text.to_uppercase()) }),
    );
    let sleep = tool_fn("sleep", "Sleeps, then says so.", |x: Sleep| async move {
        tokio::time::sleep(Duration::from_millis(x.ms)).await;
        Ok::<_, String>(format!("slept {} ms", x.ms))
    });
    let panic =
        tool_fn("panic", "Panics (to test that a panicking tool fails only its call).", |_: NoArguments| async {
            if std::hint::black_box(true) {
                panic!("the panic tool panicked, as asked");
            }
            Ok::<_, String>("unreachable")
        });
    vec![
        Arc::new(simple),
        Arc::new(error),
        Arc::new(JsonSchemaTool),
        Arc::new(add),
        Arc::new(echo),
        Arc::new(weather),
        Arc::new(shout),
        Arc::new(sleep),
        Arc::new(panic),
    ]
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: catena-mcp-conformance server (--stdio | --http ADDR) [--page-size N]\n       catena-mcp-conformance client URL   (scenario in $MCP_CONFORMANCE_SCENARIO)"
    );
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["server", rest @ ..] => server(rest).await,
        ["client", url] => client(url).await,
        _ => usage(),
    }
}

async fn server(args: &[&str]) -> ExitCode {
    let mut stdio = false;
    let mut http: Option<SocketAddr> = None;
    let mut page_size = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--stdio" => stdio = true,
            "--http" => match args.next().and_then(|a| a.parse().ok()) {
                Some(addr) => http = Some(addr),
                None => return usage(),
            },
            "--page-size" => match args.next().and_then(|a| a.parse().ok()) {
                Some(n) => page_size = Some(n),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    let mut server = match McpServer::new(tools()) {
        Ok(server) => server.with_name("catena-mcp-conformance", env!("CARGO_PKG_VERSION")),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(n) = page_size {
        server = server.with_page_size(n);
    }
    let served = match (stdio, http) {
        (true, None) => server.serve_stdio().await,
        (false, Some(addr)) => match server.serve_http(addr).await {
            Ok(running) => {
                // The URL on stdout, for scripts; then serve until Ctrl-C or SIGTERM.
                println!("{}", running.url());
                stop_signal().await;
                running.shutdown().await;
                Ok(())
            }
            Err(e) => Err(e),
        },
        _ => return usage(),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(unix))]
async fn stop_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(unix)]
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The client scenarios: connect, list the tools, and call the scenario's tool.
async fn client(url: &str) -> ExitCode {
    let scenario = std::env::var("MCP_CONFORMANCE_SCENARIO").unwrap_or_default();
    let client = match McpClient::http(url).connect_timeout(Duration::from_secs(20)).connect().await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("[{scenario}] {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = async {
        let tools = client.tools().await.map_err(|e| e.to_string())?;
        eprintln!("[{scenario}] tools: {:?}", tools.iter().map(|t| t.definition().name).collect::<Vec<_>>());
        let call = match scenario.as_str() {
            "tools_call" => Some(("add_numbers", json!({"a": 5, "b": 3}))),
            "sse-retry" => Some(("test_reconnection", json!({}))),
            _ => None,
        };
        if let Some((name, arguments)) = call {
            let output = client.call_tool(name, arguments).await.map_err(|e| e.to_string())?;
            eprintln!("[{scenario}] {name}: {output}");
        }
        Ok::<_, String>(())
    }
    .await;
    client.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[{scenario}] {e}");
            ExitCode::FAILURE
        }
    }
}
