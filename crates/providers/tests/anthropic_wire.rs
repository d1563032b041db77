//! Exact wire fixtures for `catena_providers::anthropic`, against a real HTTP server on 127.0.0.1.
//!
//! The server ([`catena_test_support::anthropic_wire`]) answers with the bytes each test gives it. The fixtures are
//! transcribed from the examples of Anthropic's published Messages API reference (streaming events, tool use,
//! extended thinking, errors) and extended where the reference describes a case without an example (cache usage
//! in `message_delta`, `refusal` and `pause_turn` stop reasons). Event streams are cut into HTTP chunks of many
//! sizes, down to one byte, so events split mid-line and mid-UTF-8 character.

#![cfg(feature = "anthropic")]

use std::time::Duration;

use catena_core::{
    collect_stream, ChatChunk, ChatRequest, ChatResponse, Constraint, Error, FinishReason, Llm, Message, ToolCall,
    ToolChoice, ToolDefinition, Usage,
};
use catena_core::{Deadline, Reasoning};
use catena_providers::anthropic::{thinking, AnthropicClient, PromptCache, Thinking, STRUCTURED_OUTPUT_TOOL};
use catena_providers::Deadlines;
use catena_test_support::anthropic_wire::{AnthropicServer, Reply};
use futures::StreamExt;
use serde_json::{json, Value};

const KEY: &str = "sk-ant-api03-test-secret-key";

fn client(server: &AnthropicServer) -> AnthropicClient {
    AnthropicClient::builder()
        .base_url(&server.base_url)
        .api_key(KEY)
        .model("claude-sonnet-4-5")
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The response without `raw` (a JSON document for `chat`, the array of event payloads for a folded stream).
fn comparable(r: &ChatResponse) -> (Message, Option<FinishReason>, Option<Usage>, String) {
    (r.message.clone(), r.finish_reason.clone(), r.usage, r.model.clone())
}

/// An event stream: `event: <type>` and `data: <json>` for each payload, as Anthropic writes them.
fn sse(events: &[&str]) -> String {
    let mut out = String::new();
    for data in events {
        let v: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("fixture is not JSON ({e}): {data}"));
        out.push_str(&format!("event: {}\ndata: {data}\n\n", v["type"].as_str().unwrap()));
    }
    out
}

/// The cuts every stream fixture is sent with: one byte at a time, small odd sizes, whole.
const CUTS: &[&[usize]] = &[&[1], &[2, 3], &[7, 1, 13], &[64, 5], &[100_000]];

async fn chunks_of(client: &AnthropicClient, request: ChatRequest) -> Vec<catena_core::Result<ChatChunk>> {
    client.chat_stream(request).await.unwrap().collect().await
}

async fn fold(client: &AnthropicClient, request: ChatRequest) -> ChatResponse {
    collect_stream(client.chat_stream(request).await.unwrap()).await.unwrap()
}

fn weather_tool() -> ToolDefinition {
    ToolDefinition {
        name: "get_weather".into(),
        description: "Get the current weather in a given location".into(),
        parameters: json!({"type": "object", "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}),
    }
}

// The reference's tool-use stream ("Streaming request with tool use"), with non-ASCII text added.
const TOOL_STREAM: &[&str] = &[
    r#"{"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-1-20250805","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}"#,
    r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    r#"{"type": "ping"}"#,
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}"#,
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let's check the weather ☃ for San Francisco"}}"#,
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", CA — naïve:"}}"#,
    r#"{"type":"content_block_stop","index":0}"#,
    r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}"#,
    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}"#,
    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San"}}"#,
    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" Francisc"}}"#,
    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"o,"}}"#,
    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" CA\""}}"#,
    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":", "}}"#,
    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"unit\": \"fah"}}"#,
    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"renheit\"}"}}"#,
    r#"{"type":"content_block_stop","index":1}"#,
    r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_02","name":"get_time","input":{}}}"#,
    r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}"#,
    r#"{"type":"content_block_stop","index":2}"#,
    r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
    r#"{"type":"message_stop"}"#,
];

// The same answer as one message (what `"stream": false` returns).
const TOOL_MESSAGE: &str = r#"{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-1-20250805","content":[{"type":"text","text":"Okay, let's check the weather ☃ for San Francisco, CA — naïve:"},{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{"location":"San Francisco, CA","unit":"fahrenheit"}},{"type":"tool_use","id":"toolu_02","name":"get_time","input":{}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":89}}"#;

#[tokio::test]
async fn chat_sends_the_documented_request_and_headers() {
    let body = r#"{"content":[{"text":"Hi! My name is Claude.","type":"text"}],"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","model":"claude-sonnet-4-5-20250929","role":"assistant","stop_reason":"end_turn","stop_sequence":null,"type":"message","usage":{"input_tokens":2095,"output_tokens":503,"cache_creation_input_tokens":2051,"cache_read_input_tokens":2051}}"#;
    let server = AnthropicServer::start(Reply::Json(body.into())).await;
    let client = AnthropicClient::builder()
        .base_url(&server.base_url)
        .api_key(KEY)
        .model("claude-sonnet-4-5")
        .max_tokens(1000)
        .header("anthropic-beta", "token-efficient-tools-2025-02-19")
        .build()
        .unwrap();
    let mut call = Message::assistant("Let me check both.");
    call.tool_calls = vec![
        ToolCall { id: "toolu_1".into(), name: "get_weather".into(), arguments: r#"{"location": "Paris"}"#.into() },
        ToolCall { id: "toolu_2".into(), name: "get_weather".into(), arguments: r#"{"location":"Oslo"}"#.into() },
    ];
    let request = ChatRequest::new(vec![
        Message::system("You are a weather bot."),
        Message::user("Weather in Paris and Oslo?"),
        call,
        Message::tool_result("toolu_1", "18°C, sunny"),
        Message::tool_result("toolu_2", "-3°C, snow"),
        Message::system("Answer in one sentence."),
    ])
    .with_temperature(0.5)
    .with_top_p(0.9)
    .with_stop("\n\nHuman:")
    .with_tool(weather_tool())
    .with_tool_choice(ToolChoice::Tool("get_weather".into()));
    let response = client.chat(request).await.unwrap();

    let sent = server.last();
    assert_eq!(sent.path, "/v1/messages");
    let header = |name: &str| sent.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(header("x-api-key").as_deref(), Some(KEY));
    assert_eq!(header("anthropic-version").as_deref(), Some("2023-06-01"));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(header("anthropic-beta").as_deref(), Some("token-efficient-tools-2025-02-19"));
    assert_eq!(header("authorization"), None);
    assert_eq!(
        sent.body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1000,
            "system": [{"type": "text", "text": "You are a weather bot."}, {"type": "text", "text": "Answer in one sentence."}],
            "messages": [
                {"role": "user", "content": "Weather in Paris and Oslo?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me check both."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "Oslo"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C, sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "-3°C, snow"}]}],
            "temperature": 0.5,
            "top_p": 0.9,
            "stop_sequences": ["\n\nHuman:"],
            "tools": [{"name": "get_weather", "description": "Get the current weather in a given location",
                "input_schema": weather_tool().parameters}],
            "tool_choice": {"type": "tool", "name": "get_weather"},
        })
    );

    assert_eq!(response.text(), "Hi! My name is Claude.");
    assert_eq!(response.model, "claude-sonnet-4-5-20250929");
    assert_eq!(response.finish_reason, Some(FinishReason::Stop));
    // Input is every prompt token: uncached + cache reads + cache writes.
    assert_eq!(
        response.usage,
        Some(Usage {
            input_tokens: 2095 + 2051 + 2051,
            output_tokens: 503,
            total_tokens: 6700,
            cached_input_tokens: Some(2051)
        })
    );
    assert_eq!(response.raw["id"], "msg_013Zva2CMHLNnXjNJJKqJ2EF");

    // A request's own max_tokens wins; streams say so; tool choices map to Anthropic's types.
    let request = ChatRequest::new(vec![Message::user("hi")])
        .with_max_tokens(7)
        .with_tool(weather_tool())
        .with_tool_choice(ToolChoice::Required);
    client.chat(request.clone()).await.unwrap();
    assert_eq!(server.last().body["max_tokens"], 7);
    assert_eq!(server.last().body["tool_choice"], json!({"type": "any"}));
    assert!(server.last().body.get("stream").is_none());
    for (choice, wire) in [(ToolChoice::Auto, json!({"type": "auto"})), (ToolChoice::None, json!({"type": "none"}))] {
        client.chat(request.clone().with_tool_choice(choice)).await.unwrap();
        assert_eq!(server.last().body["tool_choice"], wire);
    }
    server.set_reply(Reply::Events { body: sse(TOOL_STREAM), cuts: vec![100_000] });
    fold(&client, request).await;
    assert_eq!(server.last().body["stream"], true);
    assert_eq!(server.last().headers.get("accept").unwrap(), "text/event-stream");
}

#[tokio::test]
async fn tool_use_stream_cut_anywhere_folds_into_the_chat_answer() {
    let server = AnthropicServer::start(Reply::Json(TOOL_MESSAGE.into())).await;
    let client = client(&server);
    let request =
        ChatRequest::new(vec![Message::user("What's the weather like in San Francisco?")]).with_tool(weather_tool());
    let whole = client.chat(request.clone()).await.unwrap();
    assert_eq!(whole.text(), "Okay, let's check the weather ☃ for San Francisco, CA — naïve:");
    assert_eq!(
        whole.message.tool_calls,
        vec![
            ToolCall {
                id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
                name: "get_weather".into(),
                arguments: r#"{"location":"San Francisco, CA","unit":"fahrenheit"}"#.into(),
            },
            ToolCall { id: "toolu_02".into(), name: "get_time".into(), arguments: "{}".into() },
        ]
    );
    assert_eq!(whole.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        whole.usage,
        Some(Usage { input_tokens: 472, output_tokens: 89, total_tokens: 561, cached_input_tokens: None })
    );

    for cuts in CUTS {
        server.set_reply(Reply::Events { body: sse(TOOL_STREAM), cuts: cuts.to_vec() });
        let chunks: Vec<ChatChunk> =
            chunks_of(&client, request.clone()).await.into_iter().map(|c| c.unwrap()).collect();
        // Tool calls: id and name in the first fragment, arguments as they arrive, indexed among tool_use blocks.
        let deltas: Vec<_> = chunks.iter().flat_map(|c| c.tool_calls.clone()).collect();
        assert_eq!(deltas[0].index, 0);
        assert_eq!(deltas[0].id.as_deref(), Some("toolu_01T1x1fJ34qAmk2tNTrN7Up6"));
        assert_eq!(deltas[0].name.as_deref(), Some("get_weather"));
        let fragments: Vec<&str> =
            deltas.iter().filter(|d| d.index == 0).skip(1).map(|d| d.arguments.as_str()).collect();
        assert_eq!(
            fragments,
            ["{\"location\":", "\"San", " Francisc", "o,", " CA\"", ",", "\"unit\":\"fah", "renheit\"}"]
        );
        assert!(deltas.iter().filter(|d| d.index == 0).skip(1).all(|d| d.id.is_none() && d.name.is_none()));
        assert_eq!(deltas.iter().filter(|d| d.index == 1).count(), 2, "start and the `{{}}` of an empty input");
        // The first chunk names the model and carries message_start's usage.
        assert_eq!(chunks[0].model.as_deref(), Some("claude-opus-4-1-20250805"));
        assert_eq!(chunks[0].usage.map(|u| u.output_tokens), Some(2));
        let mut builder = catena_core::ChatResponseBuilder::default();
        chunks.iter().for_each(|c| builder.push(c));
        let folded = builder.finish();
        assert_eq!(comparable(&folded), comparable(&whole), "cuts {cuts:?}");
        // Every event but `ping` is kept in raw.
        assert_eq!(folded.raw.as_array().unwrap().len(), TOOL_STREAM.len() - 1);
    }
}

// The reference's extended-thinking stream (thinking_delta, signature_delta), with usage.
const THINKING_STREAM: &[&str] = &[
    r#"{"type": "message_start", "message": {"id": "msg_01RvQzx", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 51, "output_tokens": 4}}}"#,
    r#"{"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}"#,
    r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me solve this step by step:\n\n1. First break down 27 * 453"}}"#,
    r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "\n2. 453 = 400 + 50 + 3"}}"#,
    r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."}}"#,
    r#"{"type": "content_block_stop", "index": 0}"#,
    r#"{"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}"#,
    r#"{"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "27 * 453 = 12,231"}}"#,
    r#"{"type": "content_block_stop", "index": 1}"#,
    r#"{"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 120}}"#,
    r#"{"type": "message_stop"}"#,
];

const THINKING_MESSAGE: &str = r#"{"id":"msg_01RvQzx","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"thinking","thinking":"Let me solve this step by step:\n\n1. First break down 27 * 453\n2. 453 = 400 + 50 + 3","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."},{"type":"text","text":"27 * 453 = 12,231"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":51,"output_tokens":120}}"#;

#[tokio::test]
async fn thinking_is_kept_in_raw_and_left_out_of_the_text() {
    let server = AnthropicServer::start(Reply::Json(THINKING_MESSAGE.into())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("What is 27 * 453?")]);
    let whole = client.chat(request.clone()).await.unwrap();
    assert_eq!(whole.text(), "27 * 453 = 12,231");
    assert_eq!(whole.raw["content"][0]["signature"], "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds...");
    let expected = vec![Thinking {
        thinking: "Let me solve this step by step:\n\n1. First break down 27 * 453\n2. 453 = 400 + 50 + 3".into(),
        signature: "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds...".into(),
    }];
    assert_eq!(thinking(&whole), expected);
    let reasoning = vec![Reasoning {
        text: expected[0].thinking.clone(),
        signature: Some(expected[0].signature.clone()),
        redacted: None,
    }];
    assert_eq!(whole.message.reasoning, reasoning);
    for cuts in CUTS {
        server.set_reply(Reply::Events { body: sse(THINKING_STREAM), cuts: cuts.to_vec() });
        let folded = fold(&client, request.clone()).await;
        assert_eq!(comparable(&folded), comparable(&whole), "cuts {cuts:?}");
        let raw = folded.raw.as_array().unwrap();
        assert!(raw.iter().any(|e| e["delta"]["type"] == "thinking_delta"));
        assert!(raw.iter().any(|e| e["delta"]["signature"] == whole.raw["content"][0]["signature"]));
        assert_eq!(thinking(&folded), expected, "cuts {cuts:?}");
        assert_eq!(folded.message.reasoning, reasoning, "cuts {cuts:?}");
    }
}

/// A tool loop with extended thinking: the signed thinking block and a redacted one come back in the assistant
/// message (`Message::reasoning`), chat and stream alike, and go back to the server first in that turn, unchanged,
/// as Anthropic requires.
#[tokio::test]
async fn thinking_blocks_go_back_in_a_tool_loop() {
    let message = r#"{"id":"msg_t","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"thinking","thinking":"I need the weather.","signature":"sig-123"},{"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix/LafPsn4a"},{"type":"tool_use","id":"toolu_1","name":"weather","input":{"city":"Oslo"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":50,"output_tokens":30}}"#;
    let stream = sse(&[
        r#"{"type":"message_start","message":{"id":"msg_t","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":50,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"I need "}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"the weather."}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig-123"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix/LafPsn4a"}}"#,
        r#"{"type":"content_block_stop","index":1}"#,
        r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}}"#,
        r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Oslo\"}"}}"#,
        r#"{"type":"content_block_stop","index":2}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":30}}"#,
        r#"{"type":"message_stop"}"#,
    ]);
    let server = AnthropicServer::start(Reply::Json(message.into())).await;
    let client = client(&server);
    let question = vec![Message::user("Weather in Oslo?")];
    let whole = client.chat(ChatRequest::new(question.clone())).await.unwrap();
    let expected = vec![
        Reasoning { text: "I need the weather.".into(), signature: Some("sig-123".into()), redacted: None },
        Reasoning { text: String::new(), signature: None, redacted: Some("EmwKAhgBEgy3va3pzix/LafPsn4a".into()) },
    ];
    assert_eq!(whole.message.reasoning, expected);
    assert_eq!(whole.text(), "");
    server.set_reply(Reply::Events { body: stream, cuts: vec![7, 31] });
    let folded = fold(&client, ChatRequest::new(question.clone())).await;
    assert_eq!(folded.message.reasoning, expected);
    assert_eq!(folded.message.tool_calls, whole.message.tool_calls);

    // The next turn sends the assistant message back, thinking first.
    server.set_reply(Reply::Json(TOOL_MESSAGE.into()));
    let mut next = question;
    next.push(folded.message.clone());
    next.push(Message::tool_error("toolu_1", "the weather service is down"));
    client.chat(ChatRequest::new(next)).await.unwrap();
    let sent = server.last().body;
    assert_eq!(
        sent["messages"][2]["content"],
        json!([{"type": "tool_result", "tool_use_id": "toolu_1", "content": "the weather service is down", "is_error": true}]),
        "{sent}"
    );
    assert_eq!(
        sent["messages"][1]["content"],
        json!([
            {"type": "thinking", "thinking": "I need the weather.", "signature": "sig-123"},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}
        ]),
        "{sent}"
    );
}

#[tokio::test]
async fn message_delta_usage_is_cumulative_and_cache_counts_are_input() {
    let stream = sse(&[
        r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":300,"cache_read_input_tokens":2000,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Cached."}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":12,"cache_creation_input_tokens":300,"cache_read_input_tokens":2000,"output_tokens":5}}"#,
        r#"{"type":"message_stop"}"#,
    ]);
    let message = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"Cached."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":300,"cache_read_input_tokens":2000,"output_tokens":5}}"#;
    let server = AnthropicServer::start(Reply::Json(message.into())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("again")]);
    let whole = client.chat(request.clone()).await.unwrap();
    let expected = Usage { input_tokens: 2312, output_tokens: 5, total_tokens: 2317, cached_input_tokens: Some(2000) };
    assert_eq!(whole.usage, Some(expected));
    server.set_reply(Reply::Events { body: stream, cuts: vec![9, 4] });
    let chunks: Vec<ChatChunk> = chunks_of(&client, request.clone()).await.into_iter().map(|c| c.unwrap()).collect();
    let usages: Vec<Usage> = chunks.iter().filter_map(|c| c.usage).collect();
    assert_eq!(usages.len(), 2);
    assert_eq!(usages[0], Usage { output_tokens: 1, total_tokens: 2313, ..expected });
    assert_eq!(usages[1], expected);
    let mut builder = catena_core::ChatResponseBuilder::default();
    chunks.iter().for_each(|c| builder.push(c));
    assert_eq!(comparable(&builder.finish()), comparable(&whole));
}

/// A one-text-block stream ending with `stop_reason`, and the same answer as a message.
fn stop_fixture(stop_reason: &str) -> (String, String) {
    let stream = sse(&[
        r#"{"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude-opus-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":8,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Partial"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        &format!(
            r#"{{"type":"message_delta","delta":{{"stop_reason":"{stop_reason}","stop_sequence":null}},"usage":{{"output_tokens":3}}}}"#
        ),
        r#"{"type":"message_stop"}"#,
    ]);
    let message = format!(
        r#"{{"id":"msg_2","type":"message","role":"assistant","model":"claude-opus-4-5","content":[{{"type":"text","text":"Partial"}}],"stop_reason":"{stop_reason}","stop_sequence":null,"usage":{{"input_tokens":8,"output_tokens":3}}}}"#
    );
    (stream, message)
}

#[tokio::test]
async fn every_stop_reason_maps_the_same_in_chat_and_stream() {
    let server = AnthropicServer::start(Reply::Json(String::new())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("go")]);
    for (reason, expected) in [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("tool_use", FinishReason::ToolCalls),
        ("refusal", FinishReason::ContentFilter),
        ("pause_turn", FinishReason::Other("pause_turn".into())),
        ("model_context_window_exceeded", FinishReason::Length),
    ] {
        let (stream, message) = stop_fixture(reason);
        server.set_reply(Reply::Json(message));
        let whole = client.chat(request.clone()).await.unwrap();
        assert_eq!(whole.finish_reason, Some(expected), "{reason}");
        server.set_reply(Reply::Events { body: stream, cuts: vec![11] });
        assert_eq!(comparable(&fold(&client, request.clone()).await), comparable(&whole), "{reason}");
    }
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_it_with_a_typed_error() {
    let stream = sse(&[
        r#"{"type":"message_start","message":{"id":"msg_3","type":"message","role":"assistant","model":"claude-opus-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":8,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
        r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"never read"}}"#,
    ]);
    let server = AnthropicServer::start(Reply::Events { body: stream, cuts: vec![3, 17] }).await;
    let client = client(&server);
    let items = chunks_of(&client, ChatRequest::new(vec![Message::user("hi")])).await;
    let texts: Vec<String> = items.iter().filter_map(|i| i.as_ref().ok()).filter_map(|c| c.text.clone()).collect();
    assert_eq!(texts, ["Hel"]);
    let err = items.last().unwrap().as_ref().unwrap_err();
    match err {
        Error::Http { status, body, .. } => {
            assert_eq!(*status, 529);
            assert!(body.contains("overloaded_error: Overloaded"), "{body}");
        }
        other => panic!("expected Error::Http, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(items[..items.len() - 1].iter().all(Result::is_ok), "the error is the last item");
}

#[tokio::test]
async fn broken_streams_are_errors_never_panics_or_hangs() {
    let server = AnthropicServer::start(Reply::Json(String::new())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("hi")]).with_tool(weather_tool());
    let start = r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}"#;
    let tool_start = r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"get_weather","input":{}}}"#;
    let cases: Vec<(String, &str)> = vec![
        // Cut before message_stop.
        (
            sse(&[start, r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#]),
            "before `message_stop`",
        ),
        // A delta for a block that never started.
        (
            sse(&[start, r#"{"type":"content_block_delta","index":4,"delta":{"type":"text_delta","text":"x"}}"#]),
            "never started",
        ),
        // Tool input that is not JSON when its block stops.
        (
            sse(&[
                start,
                tool_start,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"Par"}}"#,
                r#"{"type":"content_block_stop","index":0}"#,
            ]),
            "not valid JSON",
        ),
        // Tool input that is JSON but not an object.
        (
            sse(&[
                start,
                tool_start,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"[1]"}}"#,
                r#"{"type":"content_block_stop","index":0}"#,
            ]),
            "not an object",
        ),
        // A text delta on a tool block.
        (
            sse(&[
                start,
                tool_start,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}"#,
            ]),
            "mismatched",
        ),
        // Not JSON at all.
        ("event: message_start\ndata: {not json\n\n".to_string(), "not JSON"),
    ];
    for (body, expected) in cases {
        server.set_reply(Reply::Events { body: body.clone(), cuts: vec![5] });
        let items = tokio::time::timeout(Duration::from_secs(10), chunks_of(&client, request.clone())).await.unwrap();
        let err = items.last().unwrap().as_ref().expect_err(&body).to_string();
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    // A server that answers a stream request with one JSON document has sent the whole answer.
    server.set_reply(Reply::Json(TOOL_MESSAGE.into()));
    let whole = client.chat(request.clone()).await.unwrap();
    let streamed = collect_stream(client.chat_stream(request.clone()).await.unwrap()).await.unwrap();
    assert_eq!(streamed.message, whole.message);
    assert_eq!(streamed.usage, whole.usage);
    assert_eq!(streamed.finish_reason, whole.finish_reason);
    // A body that is not a message.
    server.set_reply(Reply::Json(r#"{"type":"message","content":[{"type":"tool_use","id":"t"}]}"#.into()));
    let err = client.chat(request.clone()).await.unwrap_err().to_string();
    assert!(err.contains("content block 0 is malformed"), "{err}");
}

#[tokio::test]
async fn http_errors_are_readable_bounded_and_never_show_the_key() {
    let server = AnthropicServer::start(Reply::Status {
        status: 401,
        headers: vec![],
        body: format!(
            r#"{{"type":"error","error":{{"type":"authentication_error","message":"invalid x-api-key: {KEY}"}},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}}"#
        ),
    })
    .await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("hi")]);
    for streaming in [false, true] {
        let err = if streaming {
            client.chat_stream(request.clone()).await.err().unwrap()
        } else {
            client.chat(request.clone()).await.unwrap_err()
        };
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(KEY), "the key leaked: {shown}");
        assert!(shown.contains("authentication_error: invalid x-api-key: [redacted]"), "{shown}");
        assert!(shown.contains("check the API key"), "says what to do: {shown}");
        assert!(matches!(err, Error::Http { status: 401, .. }));
        assert!(!err.is_retryable());
    }

    server.set_reply(Reply::Status {
        status: 429,
        headers: vec![("retry-after".into(), "17".into())],
        body: r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#.into(),
    });
    let err = client.chat(request.clone()).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));
    assert!(err.is_retryable());
    assert!(err.to_string().contains("rate_limit_error: Number of request tokens"), "{err}");

    server.set_reply(Reply::Status {
        status: 529,
        headers: vec![],
        body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#.into(),
    });
    let err = client.chat(request.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 529, .. }) && err.is_retryable(), "{err}");
    assert!(err.to_string().contains("overloaded"), "{err}");

    // 20 MiB of error body: at most 1 MiB is read and kept on the error, 300 characters are shown.
    server.set_reply(Reply::HugeStatus { status: 500, bytes: 20 << 20 });
    let err = client.chat(request.clone()).await.unwrap_err();
    let Error::Http { status: 500, body, .. } = &err else { panic!("{err:?}") };
    assert!(body.len() < (1 << 20) + 100, "{} bytes", body.len());
    assert!(body.starts_with("xxxxx") && body.contains("larger than 1024 KiB"), "{}", &body[body.len() - 100..]);
    assert!(err.to_string().len() < 600, "{}", err.to_string().len());

    // An HTML error page is previewed as its text on one line.
    server.set_reply(Reply::Status {
        status: 502,
        headers: vec![],
        body: "<html>\n<body>\n<h1>Bad gateway</h1>\n</body>\n</html>".into(),
    });
    let err = client.chat(request).await.unwrap_err().to_string();
    assert!(err.contains("HTTP 502: Bad gateway (a proxy"), "{err}");
}

#[tokio::test]
async fn unsupported_requests_fail_before_sending() {
    let server = AnthropicServer::start(Reply::Json(TOOL_MESSAGE.into())).await;
    let client = client(&server);
    let base = ChatRequest::new(vec![Message::user("hi")]);
    for (request, expected) in [
        (base.clone().with_seed(7), "seed"),
        (base.clone().with_constraint(Constraint::Regex("[0-9]+".into())), "regex"),
        (base.clone().with_constraint(Constraint::choice(["a", "b"])), "choice"),
        (base.clone().with_constraint(Constraint::JsonObject).with_tool(weather_tool()), "forced tool of its own"),
        (base.clone().with_tool(weather_tool()).with_tool_choice(ToolChoice::Tool("nope".into())), "names no tool"),
    ] {
        let err = client.chat(request.clone()).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{expected:?} not in {err}");
        let err = client.chat_stream(request).await.err().unwrap().to_string();
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    let mut bad_call = Message::assistant("");
    bad_call.tool_calls = vec![ToolCall { id: "t".into(), name: "get_weather".into(), arguments: "[1, 2]".into() }];
    let err = client.chat(ChatRequest::new(vec![Message::user("q"), bad_call])).await.unwrap_err().to_string();
    assert!(err.contains("not a JSON object"), "{err}");
    let no_model = AnthropicClient::builder().base_url(&server.base_url).build().unwrap();
    let err = no_model.chat(base).await.unwrap_err().to_string();
    assert!(err.contains("CATENA_MODEL"), "{err}");
    assert!(server.requests().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_json_schema_constraint_is_a_forced_synthetic_tool() {
    #[derive(serde::Deserialize, schemars::JsonSchema, Debug, PartialEq)]
    struct City {
        name: String,
        population: u64,
    }
    let answer = |input: &str| {
        format!(
            r#"{{"id":"m","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{{"type":"tool_use","id":"toolu_9","name":"{STRUCTURED_OUTPUT_TOOL}","input":{input}}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{{"input_tokens":30,"output_tokens":12}}}}"#
        )
    };
    let stream = |fragments: &[&str]| {
        let mut events = vec![
            r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":30,"output_tokens":1}}}"#.to_string(),
            format!(r#"{{"type":"content_block_start","index":0,"content_block":{{"type":"tool_use","id":"toolu_9","name":"{STRUCTURED_OUTPUT_TOOL}","input":{{}}}}}}"#),
        ];
        for f in fragments {
            events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": f}}).to_string());
        }
        events.push(r#"{"type":"content_block_stop","index":0}"#.into());
        events.push(r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":12}}"#.into());
        events.push(r#"{"type":"message_stop"}"#.into());
        sse(&events.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // An object schema: the tool's input is the answer.
    let server = AnthropicServer::start(Reply::Json(answer(r#"{"name": "Zürich", "population": 436551}"#))).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("Largest Swiss city?")])
        .with_constraint(Constraint::json_schema_for::<City>());
    let whole = client.chat(request.clone()).await.unwrap();
    let sent = server.last().body;
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": STRUCTURED_OUTPUT_TOOL}));
    assert_eq!(sent["tools"].as_array().unwrap().len(), 1);
    assert_eq!(sent["tools"][0]["name"], STRUCTURED_OUTPUT_TOOL);
    assert_eq!(sent["tools"][0]["input_schema"]["properties"]["population"]["type"], "integer");
    assert_eq!(whole.text(), r#"{"name":"Zürich","population":436551}"#);
    assert!(whole.message.tool_calls.is_empty());
    assert_eq!(whole.finish_reason, Some(FinishReason::Stop));
    let city: City = serde_json::from_str(&whole.text()).unwrap();
    assert_eq!(city, City { name: "Zürich".into(), population: 436551 });
    server.set_reply(Reply::Events {
        body: stream(&["{\"name\": \"Z", "ürich\", ", "\"population\": 436", "551}"]),
        cuts: vec![1],
    });
    assert_eq!(comparable(&fold(&client, request).await), comparable(&whole));

    // A schema that is not an object: wrapped in `{"value": ...}` and unwrapped again.
    server.set_reply(Reply::Json(answer(r#"{"value": ["a", "b"]}"#)));
    let request = ChatRequest::new(vec![Message::user("Two letters")])
        .with_constraint(Constraint::JsonSchema(json!({"type": "array", "items": {"type": "string"}})));
    let whole = client.chat(request.clone()).await.unwrap();
    assert_eq!(server.last().body["tools"][0]["input_schema"]["required"], json!(["value"]));
    assert_eq!(whole.text(), r#"["a","b"]"#);
    server.set_reply(Reply::Events { body: stream(&["{\"val", "ue\": [\"a\",", " \"b\"]}"]), cuts: vec![7] });
    assert_eq!(comparable(&fold(&client, request).await), comparable(&whole));

    // JSON mode: any object.
    server.set_reply(Reply::Json(answer("{}")));
    let whole =
        client.chat(ChatRequest::new(vec![Message::user("{}")]).with_constraint(Constraint::JsonObject)).await.unwrap();
    assert_eq!(server.last().body["tools"][0]["input_schema"], json!({"type": "object"}));
    assert_eq!(whole.text(), "{}");
    server.set_reply(Reply::Events { body: stream(&[""]), cuts: vec![1000] });
    let folded =
        fold(&client, ChatRequest::new(vec![Message::user("{}")]).with_constraint(Constraint::JsonObject)).await;
    assert_eq!(comparable(&folded), comparable(&whole));
}

#[tokio::test]
async fn transport_errors_name_the_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = AnthropicClient::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .api_key(KEY)
        .model("m")
        .build()
        .unwrap();
    let err = client.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains(&format!("POST http://127.0.0.1:{port}/v1/messages")), "{shown}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(!format!("{client:?} {client}").contains(KEY));
}

#[tokio::test]
async fn a_stalled_server_is_a_timeout_never_a_hang() {
    let server = AnthropicServer::start(Reply::Stall).await;
    let client = AnthropicClient::builder()
        .base_url(&server.base_url)
        .api_key(KEY)
        .model("m")
        .deadlines(Deadlines::none().with_idle(Duration::from_millis(300)).with_total(Duration::from_millis(600)))
        .build()
        .unwrap();
    let request = ChatRequest::new(vec![Message::user("hi")]);
    let err = tokio::time::timeout(Duration::from_secs(10), client.chat(request.clone())).await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Deadline { deadline: Deadline::Total, .. }) && err.is_retryable(), "{err:?}");
    let port = server.base_url.rsplit(':').next().unwrap();
    assert!(
        err.to_string().starts_with(&format!(
            "anthropic POST http://127.0.0.1:{port}/v1/messages: the total deadline (600 ms) passed"
        )),
        "{err}"
    );
    // A stream that goes silent after its first events: the silence between chunks is bounded by the idle deadline.
    server.set_reply(Reply::StallAfter(sse(&TOOL_STREAM[..4])));
    let items = tokio::time::timeout(Duration::from_secs(10), chunks_of(&client, request)).await.unwrap();
    assert!(items.iter().any(|i| i.as_ref().is_ok_and(|c| c.text.as_deref() == Some("Okay"))));
    assert!(
        matches!(items.last().unwrap(), Err(Error::Deadline { deadline: Deadline::Idle, .. })),
        "{:?}",
        items.last()
    );
}

#[tokio::test]
async fn a_client_on_its_own_io_thread_works_the_same() {
    // IoRuntime::Dedicated is what evcxr notebooks use.
    let server = AnthropicServer::start(Reply::Json(TOOL_MESSAGE.into())).await;
    let client = AnthropicClient::builder()
        .base_url(&server.base_url)
        .api_key(KEY)
        .model("m")
        .io_runtime(catena_providers::anthropic::IoRuntime::Dedicated)
        .build()
        .unwrap();
    let request = ChatRequest::new(vec![Message::user("weather?")]).with_tool(weather_tool());
    let whole = client.chat(request.clone()).await.unwrap();
    server.set_reply(Reply::Events { body: sse(TOOL_STREAM), cuts: vec![3, 50] });
    assert_eq!(comparable(&fold(&client, request).await), comparable(&whole));
    assert_eq!(server.requests().len(), 2);
}

/// Prompt caching marks Anthropic's breakpoints where the documentation puts them: the system prompt's last block,
/// the last tool, and (for whole conversations) the last message's last block; nothing without it.
#[tokio::test]
async fn prompt_cache_breakpoints_go_where_anthropic_reads_them() {
    let server = AnthropicServer::start(Reply::Json(TOOL_MESSAGE.into())).await;
    let tool = ToolDefinition {
        name: "weather".into(),
        description: "The weather in a city.".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    };
    let request = ChatRequest::new(vec![
        Message::system("You are a weather bot with a very long system prompt."),
        Message::user("Hi"),
        Message::assistant("Hello!"),
        Message::user("Weather in Oslo?"),
    ])
    .with_tool(tool);
    let ephemeral = json!({"type": "ephemeral"});
    for (mode, last_message_marked) in [(PromptCache::Static, false), (PromptCache::Conversation, true)] {
        let client = AnthropicClient::builder()
            .base_url(&server.base_url)
            .api_key(KEY)
            .model("claude-sonnet-4-5")
            .prompt_cache(mode)
            .build()
            .unwrap();
        client.chat(request.clone()).await.unwrap();
        let body = server.last().body;
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "You are a weather bot with a very long system prompt.", "cache_control": ephemeral}]),
            "{mode:?}"
        );
        assert_eq!(body["tools"][0]["cache_control"], ephemeral, "{mode:?}");
        let last = &body["messages"][2]["content"];
        if last_message_marked {
            assert_eq!(last, &json!([{"type": "text", "text": "Weather in Oslo?", "cache_control": ephemeral}]));
            assert_eq!(body["messages"][0]["content"], "Hi", "only the last message is marked");
        } else {
            assert_eq!(last, "Weather in Oslo?");
        }
    }
    client(&server).chat(request).await.unwrap();
    assert!(!server.last().body.to_string().contains("cache_control"), "no breakpoints by default");
}
