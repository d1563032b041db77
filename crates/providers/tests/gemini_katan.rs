//! `catena_providers::gemini` against llm-katan 0.22.0, a real server of the Gemini API and Vertex AI's
//! `generateContent` (its `vertexai` provider, installed by `.ci/setup-katan.sh`), with its `echo` backend: the
//! answer reports what the server understood of the request (`messages=<n> max_tokens=<n> temperature=<t>` and
//! the last user turn's text), its usage counts words, with tools it answers with a `functionCall` of the first
//! declaration (arguments made from its schema, as one JSON document even to a stream request), and with
//! `responseMimeType: application/json` it wraps the echo as `{"response": ...}`. Its failure simulation gives
//! real 429, 500 and 504 answers in Google's error format, and its key validation a 401 that echoes the key sent.
//!
//! llm-katan takes the key as `Authorization: Bearer` or as the `?key=` query parameter, not as the
//! `x-goog-api-key` header that the Gemini API prefers (the wire tests cover that header), so Gemini API clients
//! here use [`GeminiAuth::ApiKeyQuery`].

#![cfg(feature = "gemini")]

use std::time::Duration;

use catena_core::layer::{LayerExt, TelemetryLayer};
use catena_core::{
    collect_stream, ChatRequest, ChatResponse, Constraint, Error, FinishReason, Llm, Message, ToolDefinition, Usage,
};
use catena_providers::gemini::{GeminiApi, GeminiAuth, GeminiClient};
use catena_test_support::katan::Katan;
use catena_test_support::spans as capture;
use serde_json::{json, Value};

const KEY: &str = "AIzaSy-katan-test-key-0123456789";

fn gemini(katan: &Katan) -> GeminiClient {
    GeminiClient::builder()
        .base_url(katan.base_url())
        .api_key(KEY)
        .auth(GeminiAuth::ApiKeyQuery)
        .model("gemini-katan")
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn vertex(katan: &Katan) -> GeminiClient {
    GeminiClient::builder()
        .api(GeminiApi::Vertex { project: "catena-test".into(), location: "europe-west4".into() })
        .base_url(katan.base_url())
        .api_key("ya29.katan-access-token")
        .model("gemini-katan")
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Text, tool calls as (id, name, arguments), finish reason, usage, model.
type Comparable = (String, Vec<(String, String, String)>, Option<FinishReason>, Option<Usage>, String);

/// The comparable parts of an answer, with the echo's timestamp (second resolution, so it may differ between two
/// requests) blanked.
fn comparable(r: &ChatResponse) -> Comparable {
    let time = regex::Regex::new(r"time=\S+").unwrap();
    let text = time.replace_all(&r.text(), "time=T").into_owned();
    let calls = r.message.tool_calls.iter().map(|c| (c.id.clone(), c.name.clone(), c.arguments.clone())).collect();
    (text, calls, r.finish_reason.clone(), r.usage, r.model.clone())
}

async fn chat_and_stream(client: &GeminiClient, request: ChatRequest) -> (ChatResponse, ChatResponse) {
    let whole = client.chat(request.clone()).await.unwrap();
    let folded = collect_stream(client.chat_stream(request).await.unwrap()).await.unwrap();
    (whole, folded)
}

#[tokio::test]
async fn plain_chat_and_its_stream_agree_on_both_apis() {
    let katan = Katan::start("vertexai", &[]);
    for client in [gemini(&katan), vertex(&katan)] {
        let request = ChatRequest::new(vec![Message::user("Hello from catena ☃")]).with_temperature(0.25);
        let (whole, folded) = chat_and_stream(&client, request).await;
        let text = whole.text();
        assert!(text.starts_with("[echo] model=echo"), "{text}");
        // No maxOutputTokens was sent, so llm-katan used its default; the temperature reached it.
        assert!(text.contains("messages=1 max_tokens=512 temperature=0.25"), "{text}");
        assert!(text.ends_with("User: Hello from catena ☃"), "{text}");
        assert_eq!(whole.model, "echo", "modelVersion");
        assert_eq!(whole.finish_reason, Some(FinishReason::Stop));
        let usage = whole.usage.unwrap();
        assert_eq!(usage.input_tokens, 4, "llm-katan counts words");
        assert!(usage.output_tokens > 0 && usage.total_tokens == usage.input_tokens + usage.output_tokens);
        assert_eq!(comparable(&folded), comparable(&whole), "{client}");
        assert!(folded.raw.as_array().unwrap().len() > 5, "streamed in many events");
    }
    // uvicorn's access log shows the two APIs' paths.
    let log = katan.log();
    for path in [
        "/v1beta/models/gemini-katan:generateContent?key=",
        "/v1beta/models/gemini-katan:streamGenerateContent?alt=sse&key=",
        "/v1/projects/catena-test/locations/europe-west4/publishers/google/models/gemini-katan:generateContent",
        "/v1/projects/catena-test/locations/europe-west4/publishers/google/models/gemini-katan:streamGenerateContent?alt=sse",
    ] {
        assert!(log.contains(path), "{path} not in {log}");
    }
}

#[tokio::test]
async fn system_instruction_and_multi_turn_conversation() {
    let katan = Katan::start("vertexai", &[]);
    for client in [gemini(&katan), vertex(&katan)] {
        let request = ChatRequest::new(vec![
            Message::system("You are terse."),
            Message::user("First question"),
            Message::assistant("First answer"),
            Message::user("Second question"),
        ])
        .with_max_tokens(77);
        let (whole, folded) = chat_and_stream(&client, request).await;
        let text = whole.text();
        // The systemInstruction counts as one more message on llm-katan's side.
        assert!(text.contains("messages=4 max_tokens=77"), "{text}");
        assert!(text.ends_with("User: Second question"), "{text}");
        assert_eq!(whole.usage.unwrap().input_tokens, 3 + 2 + 2 + 2);
        assert_eq!(comparable(&folded), comparable(&whole));
    }
}

#[tokio::test]
async fn function_calls_come_back_the_same_from_chat_and_stream_and_results_go_back() {
    let katan = Katan::start("vertexai", &[]);
    let tool = ToolDefinition {
        name: "get_weather".into(),
        description: "Current weather".into(),
        parameters: json!({"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"], "additionalProperties": false}),
    };
    for client in [gemini(&katan), vertex(&katan)] {
        let request = ChatRequest::new(vec![Message::user("Weather in Oslo?")]).with_tool(tool.clone());
        // llm-katan answers a stream request with tools with one JSON document: the stream reads it whole.
        let (whole, folded) = chat_and_stream(&client, request.clone()).await;
        assert_eq!(whole.finish_reason, Some(FinishReason::ToolCalls));
        let call = &whole.message.tool_calls[0];
        assert_eq!(call.name, "get_weather");
        // llm-katan gives no call id: the client makes one up, which is never sent back.
        assert_eq!(call.id, "gemini-call-0");
        // The converted schema reached the server: llm-katan fills the arguments from it.
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(args["city"], "test_city");
        assert_eq!(args["unit"], "c");
        assert_eq!(comparable(&folded), comparable(&whole));
        assert_eq!(folded.raw.as_array().unwrap().len(), 1, "one JSON document, read as the whole answer");

        // The call and its result go back: the function response is a `user` turn of its own.
        let mut next = request.messages.clone();
        next.push(whole.message.clone());
        next.push(Message::tool_result(&call.id, "Oslo: -3 C"));
        next.push(Message::user("Thanks, and tomorrow?"));
        let (whole, folded) = chat_and_stream(&client, ChatRequest::new(next)).await;
        let text = whole.text();
        assert!(text.contains("messages=4"), "{text}");
        assert!(text.ends_with("User: Thanks, and tomorrow?"), "{text}");
        assert_eq!(comparable(&folded), comparable(&whole));
    }
}

#[tokio::test]
async fn structured_output_sends_the_response_mime_type() {
    let katan = Katan::start("vertexai", &[]);
    let schema = Constraint::JsonSchema(json!({"type": "object", "properties": {"response": {"type": "string"}}}));
    for client in [gemini(&katan), vertex(&katan)] {
        for constraint in [schema.clone(), Constraint::JsonObject] {
            let request =
                ChatRequest::new(vec![Message::user("A JSON object, please")]).with_constraint(constraint.clone());
            let (whole, folded) = chat_and_stream(&client, request).await;
            // llm-katan honours `responseMimeType: application/json` by wrapping its echo in an object.
            let answer: Value = serde_json::from_str(&whole.text()).unwrap();
            assert!(answer["response"].as_str().unwrap().ends_with("User: A JSON object, please"), "{answer}");
            assert_eq!(whole.finish_reason, Some(FinishReason::Stop));
            assert_eq!(comparable(&folded), comparable(&whole), "{constraint:?}");
        }
    }
}

#[tokio::test]
async fn rate_limit_after_one_request_is_a_retryable_429() {
    let katan = Katan::start("vertexai", &["--rate-limit-after", "1"]);
    let client = gemini(&katan);
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
        let shown = err.to_string();
        assert!(shown.contains("RESOURCE_EXHAUSTED: rate limit exceeded"), "{shown}");
        assert!(shown.contains("rate limited: wait and retry"), "{shown}");
        assert_eq!(*retry_after, None, "llm-katan sends no Retry-After");
        assert!(err.is_retryable());
    }
}

#[tokio::test]
async fn server_errors_and_timeouts_are_retryable_5xx() {
    let failing = Katan::start("vertexai", &["--error-rate", "1.0"]);
    let err = vertex(&failing).chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap_err();
    assert!(
        matches!(&err, Error::Http { status: 500, .. }) && err.to_string().contains("HTTP 500: INTERNAL: "),
        "{err}"
    );
    assert!(err.is_retryable());

    let timing_out = Katan::start("vertexai", &["--timeout-after", "1"]);
    let client = gemini(&timing_out);
    client.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap();
    let err = client.chat_stream(ChatRequest::new(vec![Message::user("hi")])).await.err().unwrap();
    assert!(matches!(&err, Error::Http { status: 504, .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_401_that_echoes_the_key_is_redacted() {
    // With key validation, llm-katan's 401 says "got '<the key sent>', expected '<its key>'".
    let katan = Katan::start("vertexai", &["--validate-keys", "--api-keys", "vertexai=the-right-key"]);
    let request = ChatRequest::new(vec![Message::user("hi")]);
    for auth in [GeminiAuth::ApiKeyQuery, GeminiAuth::Bearer] {
        let client =
            GeminiClient::builder().base_url(katan.base_url()).api_key(KEY).auth(auth).model("m").build().unwrap();
        for streaming in [false, true] {
            let err = if streaming {
                client.chat_stream(request.clone()).await.err().unwrap()
            } else {
                client.chat(request.clone()).await.unwrap_err()
            };
            let shown = format!("{err} {err:?}");
            assert!(matches!(err, Error::Http { status: 401, .. }), "{shown}");
            assert!(!shown.contains(KEY), "the key leaked: {shown}");
            assert!(shown.contains("UNAUTHENTICATED: invalid API key for vertexai: got '[redacted]'"), "{shown}");
            assert!(shown.contains("check the API key"), "{shown}");
        }
    }
    let right = GeminiClient::builder()
        .base_url(katan.base_url())
        .api_key("the-right-key")
        .auth(GeminiAuth::Bearer)
        .model("m")
        .build()
        .unwrap();
    assert!(right.chat(request.clone()).await.is_ok());

    // No key at all: llm-katan requires one.
    let keyless = GeminiClient::builder().base_url(katan.base_url()).model("m").build().unwrap();
    let err = keyless.chat(request).await.unwrap_err().to_string();
    assert!(err.contains("HTTP 401: UNAUTHENTICATED: missing Authorization header or ?key= query parameter"), "{err}");
}

/// Through the telemetry layer every provider goes through, with content recorded: a call records the GenAI
/// attributes and its usage; a 401 that echoes the key and a base URL holding a password show neither secret, in
/// the errors or in anything the layer records.
#[tokio::test]
async fn traced_calls_record_usage_and_never_a_secret() {
    let (captured, _guard) = capture::start();
    let katan = Katan::start("vertexai", &["--validate-keys", "--api-keys", "vertexai=the-right-key"]);
    let traced = |base: String, key: &str| {
        GeminiClient::builder()
            .base_url(base)
            .api_key(key)
            .auth(GeminiAuth::ApiKeyQuery)
            .model("gemini-katan")
            .timeout(Duration::from_secs(30))
            .build()
            .map(|c| c.layer(TelemetryLayer::new().record_content(true)))
    };
    let request = ChatRequest::new(vec![Message::user("hi")]);
    let answer = traced(katan.base_url(), "the-right-key").unwrap().chat(request.clone()).await.unwrap();
    let usage = answer.usage.expect("usage");
    let provider = captured.value("gen_ai", "gen_ai.provider.name");
    assert!(provider.len() == 1 && provider[0].starts_with("gcp."), "{provider:?}");
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
