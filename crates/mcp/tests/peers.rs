//! catena's MCP client against real third-party servers, started by the tests: `mcp-server-time` (Python, stdio)
//! and `@modelcontextprotocol/server-everything` (Node, stdio and streamable HTTP). `.ci/setup-mcp.sh` installs
//! them; a missing one fails the test with that command.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use catena_core::{Tool, ToolError};
use catena_mcp::{McpClient, McpTool};
use catena_test_support::mcp::{server_everything, server_time, EverythingHttp};
use serde_json::{json, Value};

async fn time_server() -> McpClient {
    McpClient::stdio(server_time())
        .args(["--local-timezone", "UTC"])
        .stderr(Stdio::null())
        .connect_timeout(Duration::from_secs(60))
        .connect()
        .await
        .expect("mcp-server-time starts")
}

fn find<'a>(tools: &'a [Arc<dyn Tool>], name: &str) -> &'a Arc<dyn Tool> {
    let names: Vec<String> = tools.iter().map(|t| t.definition().name).collect();
    tools.iter().find(|t| t.definition().name == name).unwrap_or_else(|| panic!("no tool {name} in {names:?}"))
}

#[tokio::test]
async fn time_server_tools_are_catena_tools() {
    let client = time_server().await;
    assert_eq!(client.server_info().name.as_deref(), Some("mcp-time"), "{:?}", client.server_info());
    assert!(client.server_info().has_tools);
    let tools = client.tools().await.unwrap();
    let get_time = find(&tools, "get_current_time");
    let def = get_time.definition();
    assert!(!def.description.is_empty());
    assert_eq!(def.parameters["properties"]["timezone"]["type"], "string", "{}", def.parameters);

    let answer = get_time.call(json!({"timezone": "Europe/Paris"})).await.unwrap();
    // The server answers in JSON (as text, or as structured content): either way it names the zone.
    let parsed: Value = match &answer {
        Value::String(text) => serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}")),
        other => other.clone(),
    };
    assert_eq!(parsed["timezone"], "Europe/Paris", "{parsed}");
    let datetime = parsed["datetime"].as_str().unwrap_or_else(|| panic!("no datetime in {parsed}"));
    assert!(datetime.len() >= 19 && datetime.as_bytes()[4] == b'-' && datetime.contains('T'), "{datetime}");
    assert!(datetime.ends_with("+01:00") || datetime.ends_with("+02:00"), "Paris is UTC+1 or +2: {datetime}");

    // A zone that does not exist is the server's error, back as the tool's error (never a panic).
    let err = get_time.call(json!({"timezone": "Mars/Olympus_Mons"})).await.unwrap_err();
    match &err {
        ToolError::Failed(m) | ToolError::InvalidArguments(m) => assert!(m.contains("Mars/Olympus_Mons"), "{m}"),
        other => panic!("unexpected error {other:?}"),
    }
    let pid = client.process_id().expect("a running child");
    client.shutdown().await;
    assert_reaped(pid);
}

#[tokio::test]
async fn time_server_converts_between_zones_and_is_reaped_when_dropped() {
    let client = time_server().await;
    let answer = client
        .call_tool("convert_time", json!({"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}))
        .await
        .unwrap();
    let text = answer.to_string();
    assert!(text.contains("Asia/Tokyo") && text.contains("21:00"), "{text}");
    // A tool keeps the session open after the client is gone; the last drop kills and reaps the process.
    let tools = client.tools().await.unwrap();
    let pid = client.process_id().unwrap();
    drop(client);
    assert!(find(&tools, "get_current_time").call(json!({"timezone": "UTC"})).await.is_ok());
    drop(tools);
    assert_reaped(pid);
}

/// The process is gone: not running, and not a zombie (it was waited for).
fn assert_reaped(pid: u32) {
    let stat = std::path::PathBuf::from(format!("/proc/{pid}/stat"));
    // SIGKILL and wait are synchronous; a graceful exit may take a moment to be reaped.
    for _ in 0..100 {
        if !stat.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("process {pid} is still there: {}", std::fs::read_to_string(&stat).unwrap_or_default());
}

async fn check_everything(client: &McpClient) {
    assert!(client.server_info().name.is_some(), "{:?}", client.server_info());
    let tools = client.tools().await.unwrap();
    let echo = find(&tools, "echo");
    assert_eq!(echo.call(json!({"message": "hi from catena"})).await, Ok(json!("Echo: hi from catena")));
    let sum = find(&tools, "get-sum").call(json!({"a": 2, "b": 40})).await.unwrap();
    assert!(sum.as_str().is_some_and(|s| s.contains("42")), "{sum}");
    // Structured content comes back as the JSON value itself.
    let weather = find(&tools, "get-structured-content").call(json!({"location": "Chicago"})).await.unwrap();
    assert_eq!(weather, json!({"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82}));
    // An image result is the array of MCP content blocks.
    let image = client.call_tool("get-tiny-image", json!({})).await.unwrap();
    let blocks = image.as_array().unwrap_or_else(|| panic!("not an array: {image}"));
    assert!(blocks.iter().any(|b| b["type"] == "image" && b["mimeType"] == "image/png"), "{image}");
    let raw = client.call_tool_raw("get-tiny-image", json!({})).await.unwrap();
    assert!(!raw.is_error && raw.content.len() >= 2, "{raw:?}");
    // Arguments the server's schema rejects, and a tool it does not have: errors, not panics.
    let bad = echo.call(json!({"message": 3})).await.unwrap_err();
    assert!(matches!(bad, ToolError::Failed(_) | ToolError::InvalidArguments(_)), "{bad:?}");
    let unknown = client.call_tool("no-such-tool", json!({})).await.unwrap_err();
    assert!(unknown.to_string().contains("no-such-tool"), "{unknown}");
    assert!(matches!(client.call_tool("echo", json!([1])).await, Err(ToolError::InvalidArguments(_))));
}

#[tokio::test]
async fn server_everything_over_stdio() {
    let client = McpClient::stdio(server_everything())
        .arg("stdio")
        .stderr(Stdio::null())
        .connect_timeout(Duration::from_secs(60))
        .connect()
        .await
        .expect("server-everything starts");
    check_everything(&client).await;
    let pid = client.process_id().unwrap();
    client.shutdown().await;
    assert_reaped(pid);
}

#[tokio::test]
async fn server_everything_over_streamable_http() {
    let server = EverythingHttp::start();
    let client = McpClient::http(server.url())
        .header("X-Catena-Test", "1")
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("server-everything answers over HTTP");
    assert!(!client.is_closed());
    check_everything(&client).await;
    // Tools are McpTools underneath, sharing the client's session.
    let tools = client.tools().await.unwrap();
    assert!(tools.iter().all(|t| !t.definition().name.is_empty()));
    let tool = McpTool::clone(&as_mcp(&client, "echo").await);
    assert_eq!(tool.client().server_info(), client.server_info());
    client.clone().shutdown().await;
    let closed = tool.call(json!({"message": "late"})).await.unwrap_err();
    assert!(matches!(closed, ToolError::Failed(ref m) if m.contains("closed")), "{closed:?}");
}

async fn as_mcp(client: &McpClient, name: &str) -> McpTool {
    client.mcp_tools().await.unwrap().into_iter().find(|t| t.definition().name == name).unwrap()
}

#[tokio::test]
async fn connection_failures_say_what_to_do() {
    let err = McpClient::stdio("/nonexistent/mcp-server").connect().await.unwrap_err();
    assert!(err.to_string().contains("cannot be started") && err.to_string().contains("PATH"), "{err}");
    // A program that is not an MCP server: it exits, and the error says so.
    let err = McpClient::stdio("true").connect_timeout(Duration::from_secs(10)).connect().await.unwrap_err();
    assert!(err.to_string().contains("exited") || err.to_string().contains("closed"), "{err}");
    // One that never answers: the connect timeout, named.
    let err = McpClient::stdio("sleep").arg("30").connect_timeout(Duration::from_millis(300)).connect().await;
    let err = err.unwrap_err().to_string();
    assert!(err.contains("did not answer `initialize` within 300ms"), "{err}");
    // Nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = McpClient::http(format!("http://127.0.0.1:{port}/mcp"))
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    let err = McpClient::http("ftp://example/mcp").connect().await.unwrap_err();
    assert!(err.to_string().contains("not an http(s) URL"), "{err}");
    let err = McpClient::http("http://127.0.0.1:1/mcp").header("Accept", "x").connect().await.unwrap_err();
    assert!(err.to_string().contains("set by the MCP transport"), "{err}");
}
