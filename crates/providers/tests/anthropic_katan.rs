//! `catena_providers::anthropic` against llm-katan 0.22.0, a real server of Anthropic's Messages API (installed
//! by `.ci/setup-katan.sh`), with its `echo` backend: the answer reports what the server understood of the
//! request (`messages=<n> max_tokens=<n> temperature=<t>` and the last user message), its usage counts words,
//! and with tools it answers with a `tool_use` of the first tool (arguments made from its schema). Its failure
//! simulation gives real 429, 500 and 504 answers, and its key validation a 401 that echoes the key sent.

#![cfg(feature = "anthropic")]

use std::time::Duration;

use catena_core::layer::{LayerExt, TelemetryLayer};
use catena_core::{
    collect_stream, ChatRequest, ChatResponse, Constraint, Error, FinishReason, Llm, Message, ToolCall, ToolDefinition,
    Usage,
};
use catena_providers::anthropic::AnthropicClient;
use catena_test_support::katan::Katan;
use catena_test_support::spans as capture;
use serde_json::json;

const KEY: &str = "sk-ant-katan-test-key-0123456789";

fn client(katan: &Katan) -> AnthropicClient {
    AnthropicClient::builder()
        .base_url(katan.base_url())
        .api_key(KEY)
        .model("claude-katan")
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Text, tool calls as (name, arguments), finish reason, usage, model.
type Comparable = (String, Vec<(String, String)>, Option<FinishReason>, Option<Usage>, String);

/// The comparable parts of an answer, with the echo's timestamp (second resolution, so it may differ between
/// two requests) and tool-call ids (random per answer) blanked.
fn comparable(r: &ChatResponse) -> Comparable {
    let time = regex::Regex::new(r"time=\S+").unwrap();
    let text = time.replace_all(&r.text(), "time=T").into_owned();
    let calls = r.message.tool_calls.iter().map(|c| (c.name.clone(), c.arguments.clone())).collect();
    (text, calls, r.finish_reason.clone(), r.usage, r.model.clone())
}

async fn chat_and_stream(client: &AnthropicClient, request: ChatRequest) -> (ChatResponse, ChatResponse) {
    let whole = client.chat(request.clone()).await.unwrap();
    let folded = collect_stream(client.chat_stream(request).await.unwrap()).await.unwrap();
    (whole, folded)
}

#[tokio::test]
async fn plain_chat_and_its_stream_agree() {
    let katan = Katan::start("anthropic", &[]);
    let client = client(&katan);
    let request = ChatRequest::new(vec![Message::user("Hello from catena ☃")]).with_temperature(0.25);
    let (whole, folded) = chat_and_stream(&client, request).await;
    let text = whole.text();
    assert!(text.starts_with("[echo] model=echo"), "{text}");
    // The default max_tokens and the request's temperature reached the server.
    assert!(text.contains("messages=1 max_tokens=4096 temperature=0.25"), "{text}");
    assert!(text.ends_with("User: Hello from catena ☃"), "{text}");
    assert_eq!(whole.model, "claude-katan");
    assert_eq!(whole.finish_reason, Some(FinishReason::Stop));
    let usage = whole.usage.unwrap();
    assert_eq!(usage.input_tokens, 4, "llm-katan counts words");
    assert!(usage.output_tokens > 0 && usage.total_tokens == usage.input_tokens + usage.output_tokens);
    assert_eq!(comparable(&folded), comparable(&whole));
    assert!(folded.raw.as_array().unwrap().len() > 5, "streamed in many events");
}

#[tokio::test]
async fn system_prompt_and_multi_turn_conversation() {
    let katan = Katan::start("anthropic", &[]);
    let client = client(&katan);
    let request = ChatRequest::new(vec![
        Message::system("You are terse."),
        Message::user("First question"),
        Message::assistant("First answer"),
        Message::user("Second question"),
    ])
    .with_max_tokens(77);
    let (whole, folded) = chat_and_stream(&client, request).await;
    let text = whole.text();
    // The system prompt (top-level) counts as one more message on llm-katan's side.
    assert!(text.contains("messages=4 max_tokens=77"), "{text}");
    assert!(text.ends_with("User: Second question"), "{text}");
    assert_eq!(whole.usage.unwrap().input_tokens, 3 + 2 + 2 + 2);
    assert_eq!(comparable(&folded), comparable(&whole));
}

#[tokio::test]
async fn tools_are_sent_and_tool_use_comes_back_the_same_both_ways() {
    let katan = Katan::start("anthropic", &[]);
    let client = client(&katan);
    let tool = ToolDefinition {
        name: "get_weather".into(),
        description: "Current weather".into(),
        parameters: json!({"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"type": "string", "enum": ["c", "f"]}}}),
    };
    let request = ChatRequest::new(vec![Message::user("Weather in Oslo?")]).with_tool(tool.clone());
    let (whole, folded) = chat_and_stream(&client, request).await;
    assert_eq!(whole.finish_reason, Some(FinishReason::ToolCalls));
    let call = &whole.message.tool_calls[0];
    assert_eq!(call.name, "get_weather");
    assert!(call.id.starts_with("toolu_"), "{call:?}");
    // llm-katan writes the input compactly in the message and with spaces in the stream; both give this.
    assert_eq!(call.arguments, r#"{"city":"test_city","days":1,"unit":"c"}"#);
    assert_eq!(comparable(&folded), comparable(&whole));
    assert!(folded.message.tool_calls[0].id.starts_with("toolu_"));

    // The results of two calls go back in one user message: llm-katan echoes that message's text, both results.
    let mut calls = Message::assistant("");
    calls.tool_calls = vec![
        ToolCall { id: "toolu_a".into(), name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() },
        ToolCall { id: "toolu_b".into(), name: "get_weather".into(), arguments: r#"{"city":"Bergen"}"#.into() },
    ];
    let request = ChatRequest::new(vec![
        Message::user("Weather in Oslo and Bergen?"),
        calls,
        Message::tool_result("toolu_a", "Oslo: -3 C"),
        Message::tool_result("toolu_b", "Bergen: rain"),
    ]);
    let (whole, folded) = chat_and_stream(&client, request).await;
    let text = whole.text();
    assert!(text.contains("messages=3"), "{text}");
    assert!(text.ends_with("User: Oslo: -3 C\nBergen: rain"), "{text}");
    assert_eq!(comparable(&folded), comparable(&whole));
}

#[tokio::test]
async fn structured_output_through_the_forced_tool() {
    #[derive(serde::Deserialize, schemars::JsonSchema, Debug, PartialEq)]
    struct Forecast {
        city: String,
        days: i64,
    }
    let katan = Katan::start("anthropic", &[]);
    let client = client(&katan);
    let request = ChatRequest::new(vec![Message::user("Forecast for Oslo")])
        .with_constraint(Constraint::json_schema_for::<Forecast>());
    let (whole, folded) = chat_and_stream(&client, request).await;
    assert_eq!(whole.text(), r#"{"city":"test_city","days":1}"#);
    assert_eq!(
        serde_json::from_str::<Forecast>(&whole.text()).unwrap(),
        Forecast { city: "test_city".into(), days: 1 }
    );
    assert!(whole.message.tool_calls.is_empty());
    assert_eq!(whole.finish_reason, Some(FinishReason::Stop));
    assert_eq!(comparable(&folded), comparable(&whole));

    // A non-object schema goes wrapped in `{"value": ...}`: llm-katan fills an array property with `[]`.
    let list = ChatRequest::new(vec![Message::user("Some cities")])
        .with_constraint(Constraint::JsonSchema(json!({"type": "array", "items": {"type": "string"}})));
    let (whole, folded) = chat_and_stream(&client, list).await;
    assert_eq!(whole.text(), "[]");
    assert_eq!(comparable(&folded), comparable(&whole));
}

#[tokio::test]
async fn rate_limit_after_one_request_is_a_retryable_429() {
    let katan = Katan::start("anthropic", &["--rate-limit-after", "1"]);
    let client = client(&katan);
    let request = ChatRequest::new(vec![Message::user("hi")]);
    client.chat(request.clone()).await.unwrap();
    for streaming in [false, true] {
        let err = if streaming {
            client.chat_stream(request.clone()).await.err().unwrap()
        } else {
            client.chat(request.clone()).await.unwrap_err()
        };
        let Error::Http { status, retry_after, .. } = &err else { panic!("{err:?}") };
        assert_eq!(*status, 429);
        assert!(err.to_string().contains("HTTP 429: rate_limit_error: rate limit exceeded"), "{err}");
        assert_eq!(*retry_after, None, "llm-katan sends no Retry-After");
        assert!(err.is_retryable());
    }
}

#[tokio::test]
async fn server_errors_and_timeouts_are_retryable_5xx() {
    let failing = Katan::start("anthropic", &["--error-rate", "1.0"]);
    let err = client(&failing).chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap_err();
    assert!(
        matches!(&err, Error::Http { status: 500, .. })
            && err.to_string().contains("HTTP 500: api_error: internal server error"),
        "{err}"
    );
    assert!(err.is_retryable());

    let timing_out = Katan::start("anthropic", &["--timeout-after", "1"]);
    let client = client(&timing_out);
    client.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap();
    let err = client.chat_stream(ChatRequest::new(vec![Message::user("hi")])).await.err().unwrap();
    assert!(
        matches!(&err, Error::Http { status: 504, .. }) && err.to_string().contains("upstream request timeout"),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_401_that_echoes_the_key_is_redacted() {
    // With key validation, llm-katan's 401 says "got '<the key sent>', expected '<its key>'".
    let katan = Katan::start("anthropic", &["--validate-keys", "--api-keys", "anthropic=the-right-key"]);
    let err = client(&katan).chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, Error::Http { status: 401, .. }), "{shown}");
    assert!(!shown.contains(KEY), "the key leaked: {shown}");
    assert!(shown.contains("authentication_error: invalid API key for anthropic: got '[redacted]'"), "{shown}");
    assert!(shown.contains("check the API key"), "{shown}");

    let right =
        AnthropicClient::builder().base_url(katan.base_url()).api_key("the-right-key").model("m").build().unwrap();
    assert!(right.chat(ChatRequest::new(vec![Message::user("hi")])).await.is_ok());

    // No key at all: llm-katan requires the header.
    let keyless = AnthropicClient::builder().base_url(katan.base_url()).model("m").build().unwrap();
    let err = keyless.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap_err().to_string();
    assert!(err.contains("HTTP 401: authentication_error: missing x-api-key header"), "{err}");
}

/// Through the telemetry layer every provider goes through, with content recorded: a call records the GenAI
/// attributes and its usage; a 401 that echoes the key and a base URL holding a password show neither secret, in
/// the errors or in anything the layer records.
#[tokio::test]
async fn traced_calls_record_usage_and_never_a_secret() {
    let (captured, _guard) = capture::start();
    let katan = Katan::start("anthropic", &["--validate-keys", "--api-keys", "anthropic=the-right-key"]);
    let traced = |base: String, key: &str| {
        AnthropicClient::builder()
            .base_url(base)
            .api_key(key)
            .model("claude-katan")
            .timeout(Duration::from_secs(30))
            .build()
            .map(|c| c.layer(TelemetryLayer::new().record_content(true)))
    };
    let request = ChatRequest::new(vec![Message::user("hi")]);
    let answer = traced(katan.base_url(), "the-right-key").unwrap().chat(request.clone()).await.unwrap();
    let usage = answer.usage.expect("usage");
    assert_eq!(captured.value("gen_ai", "gen_ai.provider.name"), ["anthropic"]);
    assert_eq!(captured.value("gen_ai", "gen_ai.usage.input_tokens"), [usage.input_tokens.to_string()]);
    assert_eq!(captured.value("gen_ai", "gen_ai.usage.output_tokens"), [usage.output_tokens.to_string()]);

    let echoed = traced(katan.base_url(), KEY).unwrap().chat(request.clone()).await.unwrap_err();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = match traced(format!("http://user:SECRETPASS@127.0.0.1:{port}"), KEY) {
        Ok(client) => client.chat(request).await.unwrap_err(),
        Err(e) => e,
    };
    let shown = format!("{echoed} {echoed:?} {unreachable} {unreachable:?} {}", captured.everything());
    assert!(matches!(echoed, Error::Http { status: 401, .. }), "{shown}");
    assert!(!shown.contains(KEY) && !shown.contains("SECRETPASS"), "a secret leaked: {shown}");
    assert!(captured.value("gen_ai", "error.type").contains(&"401".to_string()), "{shown}");
}
