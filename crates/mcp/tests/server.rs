//! catena's MCP server, tested through catena's MCP client: over stdio (the `catena-mcp-conformance` program of
//! this crate as the server process) and over streamable HTTP (in this process), a chain exposed with
//! `chain_tool` among the tools.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use catena_core::{chain_fn, chain_tool, tool_fn, Error, Tool, ToolError};
use catena_mcp::{McpClient, McpServer};
use serde_json::{json, Value};

const PROGRAM: &str = env!("CARGO_BIN_EXE_catena-mcp-conformance");

const FIXTURE_TOOLS: [&str; 9] = [
    "test_simple_text",
    "test_error_handling",
    "json_schema_2020_12_tool",
    "add",
    "echo",
    "weather",
    "shout",
    "sleep",
    "panic",
];

/// What every transport must get right, on the fixture program's tools.
async fn check_fixture_tools(client: &McpClient) {
    let info = client.server_info();
    assert_eq!(info.name.as_deref(), Some("catena-mcp-conformance"), "{info:?}");
    assert!(info.has_tools);
    assert_eq!(info.protocol_version, "2025-11-25");
    let tools = client.tools().await.unwrap();
    assert_eq!(tools.iter().map(|t| t.definition().name).collect::<Vec<_>>(), FIXTURE_TOOLS);
    let tool = |name: &str| tools.iter().find(|t| t.definition().name == name).unwrap().clone();

    // Definitions keep their schema whole; descriptions come from tool_fn.
    let add = tool("add").definition();
    assert_eq!(add.description, "Adds two numbers.");
    assert_eq!(add.parameters["properties"]["a"]["description"], "The first number.");
    assert_eq!(add.parameters["required"], json!(["a", "b"]));
    let schema = tool("json_schema_2020_12_tool").definition().parameters;
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema["$defs"]["address"].is_object());

    // The chain exposed as a tool, a text output, an object output (structured content), a number (its JSON text).
    assert_eq!(tool("shout").call(json!({"text": "quiet please"})).await, Ok(json!("QUIET PLEASE")));
    assert_eq!(tool("echo").call(json!({"message": "hi"})).await, Ok(json!("hi")));
    assert_eq!(
        tool("weather").call(json!({"city": "Lyon"})).await,
        Ok(json!({"city": "Lyon", "temperature": 21.5, "conditions": "sunny"}))
    );
    assert_eq!(tool("add").call(json!({"a": 2, "b": 3})).await, Ok(json!("5.0")));
    assert_eq!(
        tool("test_simple_text").call(Value::Null).await,
        Ok(json!("This is a simple text response for testing."))
    );
    let raw = client.call_tool_raw("weather", json!({"city": "Lyon"})).await.unwrap();
    assert_eq!(raw.structured_content.as_ref().unwrap()["city"], "Lyon");
    assert_eq!(serde_json::from_str::<Value>(&raw.text()).unwrap(), raw.structured_content.unwrap());

    // Tool errors are results with isError (the model sees them), named by kind.
    let raw = client.call_tool_raw("test_error_handling", json!({})).await.unwrap();
    assert!(raw.is_error);
    assert_eq!(raw.text(), "the tool failed: This tool intentionally returns an error for testing");
    let err = tool("add").call(json!({"a": 2})).await.unwrap_err();
    assert!(
        matches!(err, ToolError::Failed(ref m) if m.starts_with("invalid arguments: missing field `b`")),
        "{err:?}"
    );
    // A panicking tool fails its call only; the session goes on.
    let err = tool("panic").call(json!({})).await.unwrap_err();
    assert_eq!(err, ToolError::Failed("the tool failed: the tool panicked".into()));
    // An unknown tool is the protocol error MCP specifies (invalid params).
    let err = client.call_tool("nope", json!({})).await.unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments(ref m) if m.contains("unknown tool `nope`")), "{err:?}");
    assert_eq!(tool("echo").call(json!({"message": "still here"})).await, Ok(json!("still here")));
}

async fn stdio_client(page_size: Option<usize>, request_timeout: Duration) -> McpClient {
    let mut connect = McpClient::stdio(PROGRAM).args(["server", "--stdio"]).stderr(Stdio::null());
    if let Some(n) = page_size {
        connect = connect.args(["--page-size".to_string(), n.to_string()]);
    }
    connect.connect_timeout(Duration::from_secs(30)).request_timeout(request_timeout).connect().await.unwrap()
}

#[tokio::test]
async fn catena_server_over_stdio() {
    let client = stdio_client(None, Duration::from_secs(30)).await;
    check_fixture_tools(&client).await;
    let pid = client.process_id().unwrap();
    client.shutdown().await;
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the server process is left behind");
}

#[tokio::test]
async fn tool_lists_are_read_page_by_page() {
    // Two tools a page: five pages for nine tools, listed whole and in order.
    let client = stdio_client(Some(2), Duration::from_secs(30)).await;
    let names: Vec<String> = client.list_tools().await.unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(names, FIXTURE_TOOLS);
    client.shutdown().await;
}

#[tokio::test]
async fn request_timeouts_fail_the_call_not_the_session() {
    let client = stdio_client(None, Duration::from_millis(300)).await;
    let err = client.call_tool("sleep", json!({"ms": 5000})).await.unwrap_err();
    assert_eq!(err, ToolError::TimedOut(300));
    assert_eq!(client.call_tool("sleep", json!({"ms": 1})).await, Ok(json!("slept 1 ms")));
    // Dropping the last handle kills and reaps the server at once.
    let pid = client.process_id().unwrap();
    drop(client);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the server process is left behind");
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Words {
    /// A sentence.
    text: String,
}

fn http_tools() -> Vec<Arc<dyn Tool>> {
    let count = chain_tool(
        "count_words",
        "Counts the words of a sentence (a chain).",
        chain_fn(|w: Words| async move { Ok(w.text.split_whitespace().count()) }),
    );
    let reverse = tool_fn("reverse", "Reverses a text.", |w: Words| async move {
        Ok::<_, String>(w.text.chars().rev().collect::<String>())
    });
    vec![Arc::new(count), Arc::new(reverse)]
}

#[tokio::test]
async fn catena_server_over_streamable_http() {
    let server = McpServer::new(http_tools())
        .unwrap()
        .with_name("words", "0.1.0")
        .with_instructions("Word tools.")
        .serve_http("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert!(server.url().starts_with("http://127.0.0.1:") && server.url().ends_with("/mcp"));
    let client = McpClient::http(server.url()).connect().await.unwrap();
    let info = client.server_info();
    assert_eq!((info.name.as_deref(), info.version.as_deref()), (Some("words"), Some("0.1.0")));
    assert_eq!(info.instructions.as_deref(), Some("Word tools."));
    let tools = client.tools().await.unwrap();
    assert_eq!(tools[0].definition().name, "count_words");
    assert_eq!(tools[0].definition().parameters["properties"]["text"]["description"], "A sentence.");
    // The chain runs behind MCP; its number comes back as JSON text.
    assert_eq!(tools[0].call(json!({"text": "one two three"})).await, Ok(json!("3")));
    assert_eq!(tools[1].call(json!({"text": "abc"})).await, Ok(json!("cba")));
    let err = tools[1].call(json!({"txt": "abc"})).await.unwrap_err();
    assert!(matches!(err, ToolError::Failed(ref m) if m.contains("missing field `text`")), "{err:?}");

    // Several clients at once, each with its own session.
    let other = McpClient::http(server.url()).connect().await.unwrap();
    let (a, b) = tokio::join!(
        client.call_tool("reverse", json!({"text": "xy"})),
        other.call_tool("count_words", json!({"text": "a b"}))
    );
    assert_eq!((a, b), (Ok(json!("yx")), Ok(json!("2"))));
    other.shutdown().await;

    server.shutdown().await;
    let err = client.call_tool("reverse", json!({"text": "late"})).await.unwrap_err();
    assert!(matches!(err, ToolError::Failed(_)), "{err:?}");
}

#[tokio::test]
async fn fixture_program_over_streamable_http() {
    // The same program the conformance script runs, as a process, checked by catena's client.
    let mut child = tokio::process::Command::new(PROGRAM)
        .args(["server", "--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let url = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let client = McpClient::http(&url).connect().await.unwrap();
    check_fixture_tools(&client).await;
    client.shutdown().await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[test]
fn duplicate_and_empty_tool_names_are_refused() {
    let twice = [http_tools(), http_tools()].concat();
    let err = McpServer::new(twice).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(ref m) if m.contains("`count_words`")), "{err}");
    let nameless = tool_fn("", "No name.", |w: Words| async move { Ok::<_, String>(w.text) });
    let err = McpServer::new(vec![Arc::new(nameless) as Arc<dyn Tool>]).unwrap_err();
    assert!(err.to_string().contains("empty name"), "{err}");
    let server = McpServer::new(http_tools()).unwrap();
    assert_eq!(server.tool_names(), ["count_words", "reverse"]);
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    let first = McpServer::new(http_tools()).unwrap().serve_http("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let err = McpServer::new(http_tools()).unwrap().serve_http(first.local_addr()).await.unwrap_err();
    assert!(err.to_string().contains(&format!("cannot listen on {}", first.local_addr())), "{err}");
}

#[test]
fn a_client_outliving_its_runtime_drops_cleanly() {
    // Dropped after its runtime: no panic, and the server process is still killed and reaped.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(stdio_client(None, Duration::from_secs(30)));
    let tools = runtime.block_on(client.tools()).unwrap();
    let pid = client.process_id().unwrap();
    // The same over HTTP, server handle included.
    let (server, http) = runtime.block_on(async {
        let server = McpServer::new(http_tools()).unwrap().serve_http("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let http = McpClient::http(server.url()).connect().await.unwrap();
        (server, http)
    });
    drop(runtime);
    drop(client);
    drop(tools);
    drop(http);
    drop(server);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the server process is left behind");
}
