//! Exact wire fixtures for `catena_providers::ollama`, against a real HTTP server on 127.0.0.1.
//!
//! The server ([`catena_test_support::ollama_wire`]) answers with the bytes each test gives it. The fixtures are
//! transcribed from the examples of Ollama's published API documentation (`docs/api.md`: chat with and without
//! streaming, structured outputs, JSON mode, tools, embeddings) and extended where the documentation describes a
//! case without an example (`done_reason: "length"`, tool calls inside a stream, error lines inside a stream).
//! Streams are cut into HTTP chunks of many sizes, down to one byte, so lines split anywhere, mid-UTF-8
//! character included.
//!
//! Ollama's own binary cannot be installed on the test machines (no download outside the package registries).
//! The closest real peer, ollama-proxy-plus (PyPI) in front of llm-katan, is what `ollama_peer.rs` runs against;
//! it forwards text only and counts words as tokens, so tool calls, exact usage, embeddings and the edge cases
//! of the format are pinned down here, byte for byte.

#![cfg(feature = "ollama")]

use std::time::Duration;

use catena_core::{
    collect_stream, ChatChunk, ChatRequest, ChatResponse, Constraint, ContentPart, Embedder, Error, FinishReason, Llm,
    Message, ToolCall, ToolChoice, ToolDefinition, Usage,
};
use catena_providers::ollama::{KeepAlive, OllamaClient};
use catena_test_support::ollama_wire::{OllamaServer, Reply};
use futures::StreamExt;
use serde_json::json;

const KEY: &str = "ollama-test-secret-key-0123456789";

fn client(server: &OllamaServer) -> OllamaClient {
    OllamaClient::builder().host(&server.host).model("llama3.2").timeout(Duration::from_secs(20)).build().unwrap()
}

/// The response without `raw` (a JSON document for `chat`, the array of line objects for a folded stream).
fn comparable(r: &ChatResponse) -> (Message, Option<FinishReason>, Option<Usage>, String) {
    (r.message.clone(), r.finish_reason.clone(), r.usage, r.model.clone())
}

/// The cuts every stream fixture is sent with: one byte at a time, small odd sizes, whole.
const CUTS: &[&[usize]] = &[&[1], &[2, 3], &[7, 1, 13], &[64, 5], &[100_000]];

async fn chunks_of(client: &OllamaClient, request: ChatRequest) -> Vec<catena_core::Result<ChatChunk>> {
    client.chat_stream(request).await.unwrap().collect().await
}

async fn fold(client: &OllamaClient, request: ChatRequest) -> ChatResponse {
    collect_stream(client.chat_stream(request).await.unwrap()).await.unwrap()
}

fn usage(input: u64, output: u64) -> Option<Usage> {
    Some(Usage { input_tokens: input, output_tokens: output, total_tokens: input + output, cached_input_tokens: None })
}

fn weather_tool() -> ToolDefinition {
    ToolDefinition {
        name: "get_current_weather".into(),
        description: "Get the current weather for a location".into(),
        parameters: json!({"type": "object", "properties": {
            "location": {"type": "string", "description": "The location to get the weather for, e.g. San Francisco, CA"},
            "format": {"type": "string", "description": "The format to return the weather in, e.g. 'celsius' or 'fahrenheit'",
                "enum": ["celsius", "fahrenheit"]}},
            "required": ["location", "format"]}),
    }
}

// "Chat request (No streaming)", as the documentation prints it (pretty-printed over several lines).
const PLAIN_ANSWER: &str = r#"{
  "model": "llama3.2",
  "created_at": "2023-12-12T14:13:43.416799Z",
  "message": {
    "role": "assistant",
    "content": "Hello! How are you today?"
  },
  "done": true,
  "total_duration": 5191566416,
  "load_duration": 2154458,
  "prompt_eval_count": 26,
  "prompt_eval_duration": 383809000,
  "eval_count": 298,
  "eval_duration": 4799921000
}"#;

// "Chat Request (Streaming)": one object per line, the final one with the statistics (with the `done_reason`
// current servers add), and non-ASCII text so that one-byte cuts split characters.
const STREAM: &str = concat!(
    r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"The","images":null},"done":false}"#,
    "\n",
    r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.412345Z","message":{"role":"assistant","content":" sky ☃ is"},"done":false}"#,
    "\n",
    r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.498765Z","message":{"role":"assistant","content":" blue — naïve 🦀."},"done":false}"#,
    "\n",
    r#"{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}"#,
    "\n",
);

// The same answer whole (`"stream": false`).
const STREAM_AS_ONE: &str = r#"{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","message":{"role":"assistant","content":"The sky ☃ is blue — naïve 🦀."},"done_reason":"stop","done":true,"total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}"#;

// "Chat request (with tools)": the call comes whole, without an id, `arguments` an object.
const TOOL_ANSWER: &str = r#"{"model":"llama3.2","created_at":"2024-07-22T20:33:28.123648Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_current_weather","arguments":{"format":"celsius","location":"Paris, FR"}}}]},"done_reason":"stop","done":true,"total_duration":885095291,"load_duration":3753500,"prompt_eval_count":122,"prompt_eval_duration":328493000,"eval_count":33,"eval_duration":552222000}"#;

// The same answer streamed: the call arrives whole in a line of its own, then the final line.
const TOOL_STREAM: &str = concat!(
    r#"{"model":"llama3.2","created_at":"2024-07-22T20:33:28.001Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_current_weather","arguments":{"format":"celsius","location":"Paris, FR"}}}]},"done":false}"#,
    "\n",
    r#"{"model":"llama3.2","created_at":"2024-07-22T20:33:28.123648Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":885095291,"load_duration":3753500,"prompt_eval_count":122,"prompt_eval_duration":328493000,"eval_count":33,"eval_duration":552222000}"#,
    "\n",
);

#[tokio::test]
async fn chat_sends_the_documented_request_and_maps_the_answer() {
    let server = OllamaServer::start(Reply::Json(PLAIN_ANSWER.into())).await;
    // OLLAMA_HOST style: host:port without a scheme.
    let host = server.host.trim_start_matches("http://").to_string();
    let client = OllamaClient::builder()
        .host(host)
        .model("llama3.2")
        .keep_alive(KeepAlive::For(Duration::from_secs(600)))
        .api_key(KEY)
        .build()
        .unwrap();
    let mut image = Message::user("what is in this image?");
    image.content.push(ContentPart::ImageUrl { url: "data:image/png;base64,iVBORw0KGgo=".into() });
    let request = ChatRequest::new(vec![
        Message::system("You are a helpful assistant."),
        Message::user("why is the sky blue?"),
        Message::assistant("due to rayleigh scattering."),
        image,
    ])
    .with_temperature(0.5)
    .with_top_p(0.9)
    .with_max_tokens(100)
    .with_stop("user:")
    .with_seed(101);
    let response = client.chat(request).await.unwrap();

    let sent = server.last();
    assert_eq!(sent.path, "/api/chat");
    let header = |name: &str| sent.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(header("authorization"), Some(format!("Bearer {KEY}")));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(
        sent.body,
        json!({
            "model": "llama3.2",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "why is the sky blue?"},
                {"role": "assistant", "content": "due to rayleigh scattering."},
                {"role": "user", "content": "what is in this image?", "images": ["iVBORw0KGgo="]}],
            "options": {"temperature": 0.5, "top_p": 0.9, "num_predict": 100, "stop": ["user:"], "seed": 101},
            "stream": false,
            "keep_alive": "600s",
        })
    );
    assert_eq!(response.text(), "Hello! How are you today?");
    assert_eq!(response.model, "llama3.2");
    // The documented example predates `done_reason`: no reason is invented.
    assert_eq!(response.finish_reason, None);
    assert_eq!(response.usage, usage(26, 298));
    assert_eq!(response.raw["total_duration"], 5191566416u64);
    assert!(response.message.tool_calls.is_empty());

    // Without options, none are sent; a request's own model wins.
    client.chat(ChatRequest::new(vec![Message::user("hi")]).with_model("qwen3:8b")).await.unwrap();
    let body = server.last().body;
    assert_eq!(body["model"], "qwen3:8b");
    assert!(body.get("options").is_none() && body.get("tools").is_none() && body.get("format").is_none());
}

#[tokio::test]
async fn stream_cut_anywhere_folds_into_the_chat_answer() {
    let server = OllamaServer::start(Reply::Json(STREAM_AS_ONE.into())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("why is the sky blue?")]);
    let whole = client.chat(request.clone()).await.unwrap();
    assert_eq!(whole.text(), "The sky ☃ is blue — naïve 🦀.");
    assert_eq!(whole.finish_reason, Some(FinishReason::Stop));
    assert_eq!(whole.usage, usage(26, 282));
    for cuts in CUTS {
        server.set_reply(Reply::Lines { body: STREAM.into(), cuts: cuts.to_vec() });
        let chunks = chunks_of(&client, request.clone()).await;
        let chunks: Vec<ChatChunk> = chunks.into_iter().map(Result::unwrap).collect();
        // One chunk per line; the text as the lines carry it; usage and the reason on the last only.
        let texts: Vec<Option<&str>> = chunks.iter().map(|c| c.text.as_deref()).collect();
        assert_eq!(texts, vec![Some("The"), Some(" sky ☃ is"), Some(" blue — naïve 🦀."), None], "cuts {cuts:?}");
        assert!(chunks[..3].iter().all(|c| c.usage.is_none() && c.finish_reason.is_none()));
        assert_eq!(chunks[3].usage, usage(26, 282));
        let folded = fold(&client, request.clone()).await;
        assert_eq!(comparable(&folded), comparable(&whole), "cuts {cuts:?}");
        assert_eq!(folded.raw.as_array().map(Vec::len), Some(4));
    }
    let sent = server.last();
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.headers.get("accept").unwrap(), "application/x-ndjson");
    // A server that streams a plain request: `chat` folds the lines into the same answer.
    server.set_reply(Reply::Lines { body: STREAM.into(), cuts: vec![5] });
    assert_eq!(comparable(&client.chat(request.clone()).await.unwrap()), comparable(&whole));
    assert_eq!(server.last().body["stream"], false);
}

#[tokio::test]
async fn tool_call_round_trip() {
    let server = OllamaServer::start(Reply::Json(TOOL_ANSWER.into())).await;
    let client = client(&server);
    let question = Message::user("What is the weather today in Paris?");
    let request = ChatRequest::new(vec![question.clone()]).with_tool(weather_tool());
    let answer = client.chat(request.clone()).await.unwrap();
    assert_eq!(
        server.last().body,
        json!({
            "model": "llama3.2",
            "messages": [{"role": "user", "content": "What is the weather today in Paris?"}],
            "tools": [{"type": "function", "function": {"name": "get_current_weather",
                "description": "Get the current weather for a location", "parameters": weather_tool().parameters}}],
            "stream": false,
        })
    );
    assert_eq!(answer.text(), "");
    assert_eq!(answer.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(answer.usage, usage(122, 33));
    let [call] = answer.message.tool_calls.as_slice() else { panic!("one call: {:?}", answer.message) };
    assert_eq!(call.name, "get_current_weather");
    // The server's key order, without whitespace.
    assert_eq!(call.arguments, r#"{"format":"celsius","location":"Paris, FR"}"#);
    // No id on the wire: a generated one, stable.
    assert!(call.id.starts_with("call_0_"), "{}", call.id);
    assert_eq!(client.chat(request.clone()).await.unwrap().message.tool_calls[0].id, call.id);

    // The stream gives the same call, cut anywhere.
    for cuts in CUTS {
        server.set_reply(Reply::Lines { body: TOOL_STREAM.into(), cuts: cuts.to_vec() });
        let folded = fold(&client, request.clone()).await;
        assert_eq!(comparable(&folded), comparable(&answer), "cuts {cuts:?}");
    }

    // The call and its result go back: the result names its tool, found through the call's id.
    server.set_reply(Reply::Json(PLAIN_ANSWER.into()));
    let follow_up =
        ChatRequest::new(vec![question, answer.message.clone(), Message::tool_result(call.id.clone(), "22°C, sunny")])
            .with_tool(weather_tool());
    client.chat(follow_up).await.unwrap();
    assert_eq!(
        server.last().body["messages"],
        json!([
            {"role": "user", "content": "What is the weather today in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": call.id,
                "function": {"name": "get_current_weather", "arguments": {"format": "celsius", "location": "Paris, FR"}}}]},
            {"role": "tool", "content": "22°C, sunny", "tool_name": "get_current_weather"}])
    );

    // Ids the server gives are kept.
    let with_ids = r#"{"model":"qwen3","message":{"role":"assistant","content":"","tool_calls":[{"id":"call_abc","function":{"index":0,"name":"get_current_weather","arguments":{"location":"Oslo","format":"celsius"}}},{"id":"call_def","function":{"index":1,"name":"get_current_weather","arguments":{"location":"Rome","format":"celsius"}}}]},"done":true,"done_reason":"stop","prompt_eval_count":1,"eval_count":2}"#;
    server.set_reply(Reply::Json(with_ids.into()));
    let two = client.chat(request.clone()).await.unwrap();
    let ids: Vec<&str> = two.message.tool_calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["call_abc", "call_def"]);
}

#[tokio::test]
async fn forced_tool_choices_and_other_constraints_are_refused_before_sending() {
    let server = OllamaServer::start(Reply::Json(PLAIN_ANSWER.into())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("q")]).with_tool(weather_tool());
    for choice in [ToolChoice::Required, ToolChoice::Tool("get_current_weather".into())] {
        let err = client.chat(request.clone().with_tool_choice(choice.clone())).await.unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        assert!(client.chat_stream(request.clone().with_tool_choice(choice)).await.is_err());
    }
    for constraint in [Constraint::Regex("[a-z]+".into()), Constraint::Choice(vec!["a".into(), "b".into()])] {
        let err = client.chat(request.clone().with_constraint(constraint)).await.unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    }
    assert!(server.requests().is_empty(), "nothing may be sent");
    let caps = client.capabilities();
    assert!(!caps.forced_tool_choice && caps.constraints.regex.is_none() && caps.constraints.json_schema.is_some());
    // `None` is honoured by not offering the tools; `Auto` is the default.
    client.chat(request.clone().with_tool_choice(ToolChoice::None)).await.unwrap();
    assert!(server.last().body.get("tools").is_none());
    client.chat(request.with_tool_choice(ToolChoice::Auto)).await.unwrap();
    assert_eq!(server.last().body["tools"][0]["function"]["name"], "get_current_weather");
}

#[tokio::test]
async fn json_mode_and_json_schema_become_format() {
    // "Chat request (Structured outputs)".
    let answer = r#"{"model":"llama3.1","created_at":"2024-12-06T00:46:58.265747Z","message":{"role":"assistant","content":"{\"age\": 22, \"available\": false}"},"done_reason":"stop","done":true,"total_duration":2254970291,"load_duration":574751416,"prompt_eval_count":34,"prompt_eval_duration":1502000000,"eval_count":12,"eval_duration":175000000}"#;
    let server = OllamaServer::start(Reply::Json(answer.into())).await;
    let client = client(&server);
    let schema = json!({"type": "object", "properties": {"age": {"type": "integer"}, "available": {"type": "boolean"}},
        "required": ["age", "available"]});
    let request = ChatRequest::new(vec![Message::user(
        "Ollama is 22 years old and busy saving the world. Return a JSON object with the age and availability.",
    )])
    .with_model("llama3.1")
    .with_temperature(0.0)
    .with_constraint(Constraint::JsonSchema(schema.clone()));
    let response = client.chat(request).await.unwrap();
    assert_eq!(
        server.last().body,
        json!({
            "model": "llama3.1",
            "messages": [{"role": "user", "content": "Ollama is 22 years old and busy saving the world. Return a JSON object with the age and availability."}],
            "stream": false,
            "format": schema,
            "options": {"temperature": 0.0},
        })
    );
    assert_eq!(response.text(), "{\"age\": 22, \"available\": false}");
    assert_eq!(response.usage, usage(34, 12));

    let request = ChatRequest::new(vec![Message::user(
        "What color is the sky at different times of the day? Respond using JSON",
    )])
    .with_constraint(Constraint::JsonObject);
    client.chat(request).await.unwrap();
    assert_eq!(
        server.last().body,
        json!({
            "model": "llama3.2",
            "messages": [{"role": "user", "content": "What color is the sky at different times of the day? Respond using JSON"}],
            "stream": false,
            "format": "json",
        })
    );
}

#[tokio::test]
async fn done_reason_length_is_the_token_limit_in_chat_and_stream() {
    let whole = r#"{"model":"llama3.2","created_at":"2024-12-06T00:46:58.265747Z","message":{"role":"assistant","content":"The sky is blue because"},"done_reason":"length","done":true,"prompt_eval_count":30,"eval_count":5}"#;
    let lines = concat!(
        r#"{"model":"llama3.2","message":{"role":"assistant","content":"The sky is"},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","message":{"role":"assistant","content":" blue because"},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","message":{"role":"assistant","content":""},"done_reason":"length","done":true,"prompt_eval_count":30,"eval_count":5}"#,
    );
    let server = OllamaServer::start(Reply::Json(whole.into())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("why?")]).with_max_tokens(5);
    let response = client.chat(request.clone()).await.unwrap();
    assert_eq!(response.finish_reason, Some(FinishReason::Length));
    assert_eq!(response.usage, usage(30, 5));
    assert_eq!(server.last().body["options"], json!({"num_predict": 5}));
    // The final line has no newline: it counts all the same.
    server.set_reply(Reply::Lines { body: lines.into(), cuts: vec![3] });
    assert_eq!(comparable(&fold(&client, request).await), comparable(&response));
}

#[tokio::test]
async fn a_stream_request_answered_with_one_json_document_is_accepted() {
    let server = OllamaServer::start(Reply::Json(PLAIN_ANSWER.into())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("why is the sky blue?")]);
    let chunks = chunks_of(&client, request.clone()).await;
    assert_eq!(chunks.len(), 1);
    let folded = fold(&client, request.clone()).await;
    assert_eq!(comparable(&folded), comparable(&client.chat(request).await.unwrap()));
    assert_eq!(folded.text(), "Hello! How are you today?");
    assert_eq!(folded.usage, usage(26, 298));
}

#[tokio::test]
async fn a_stream_without_its_done_line_is_an_error_not_a_short_answer() {
    let cut_short: String = STREAM.lines().take(2).map(|l| format!("{l}\n")).collect();
    let server = OllamaServer::start(Reply::Lines { body: cut_short.clone(), cuts: vec![5] }).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("q")]);
    let chunks = chunks_of(&client, request.clone()).await;
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    assert!(chunks[0].is_ok() && chunks[1].is_ok());
    let err = chunks[2].as_ref().unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert!(err.to_string().contains("done"), "{err}");
    assert!(collect_stream(client.chat_stream(request.clone()).await.unwrap()).await.is_err());
    let err = client.chat(request.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "chat too: {err}");
    // Cut inside a line: the same.
    server.set_reply(Reply::Lines { body: cut_short[..cut_short.len() - 10].to_string(), cuts: vec![1] });
    let chunks = chunks_of(&client, request.clone()).await;
    assert!(chunks.last().unwrap().is_err());
    // A line that is not JSON.
    server.set_reply(Reply::Lines { body: "{\"model\":\"llama3.2\",\"message\"\n".into(), cuts: vec![100] });
    let chunks = chunks_of(&client, request.clone()).await;
    assert!(matches!(chunks.as_slice(), [Err(Error::Decode { .. })]), "{chunks:?}");
    // A "line" longer than 16 MiB: an error, without holding it all.
    server.set_reply(Reply::Lines { body: "x".repeat(17 * 1024 * 1024), cuts: vec![1 << 20] });
    let chunks = chunks_of(&client, request).await;
    let [Err(err)] = chunks.as_slice() else { panic!("one error: {} items", chunks.len()) };
    assert!(err.to_string().contains("16 MiB"), "{err}");
}

#[tokio::test]
async fn an_error_line_inside_the_stream_is_a_typed_error() {
    let body = concat!(
        r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"The"},"done":false}"#,
        "\n",
        r#"{"error":"an error was encountered while running the model: unexpected EOF"}"#,
        "\n",
        r#"{"model":"llama3.2","message":{"role":"assistant","content":"never read"},"done":false}"#,
        "\n",
    );
    let server = OllamaServer::start(Reply::Lines { body: body.into(), cuts: vec![1] }).await;
    let client = client(&server);
    let chunks = chunks_of(&client, ChatRequest::new(vec![Message::user("q")])).await;
    assert_eq!(chunks.len(), 2, "the stream ends at the error: {chunks:?}");
    assert_eq!(chunks[0].as_ref().unwrap().text.as_deref(), Some("The"));
    match &chunks[1] {
        Err(Error::Http { status: 500, body, .. }) => {
            assert_eq!(body, r#"{"error":"an error was encountered while running the model: unexpected EOF"}"#)
        }
        other => panic!("an HTTP error: {other:?}"),
    }
}

#[tokio::test]
async fn error_statuses_are_summarised_with_what_to_do() {
    let server = OllamaServer::start(Reply::Status {
        status: 404,
        headers: vec![],
        body: r#"{"error":"model \"llama3.2\" not found, try pulling it first"}"#.into(),
    })
    .await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("q")]);
    for streaming in [false, true] {
        let err = if streaming {
            client.chat_stream(request.clone()).await.err().unwrap()
        } else {
            client.chat(request.clone()).await.unwrap_err()
        };
        let Error::Http { status: 404, body, retry_after: None, .. } = &err else { panic!("{err}") };
        assert!(body.contains(r#"model \"llama3.2\" not found"#), "{body}");
        assert!(err.to_string().contains("the model pulled first"), "{err}");
        assert!(!err.is_retryable());
    }

    server.set_reply(Reply::Status {
        status: 429,
        headers: vec![("retry-after".into(), "7".into())],
        body: r#"{"error":"too many requests"}"#.into(),
    });
    let err = client.chat(request.clone()).await.unwrap_err();
    assert!(matches!(&err, Error::Http { status: 429, retry_after: Some(d), .. } if *d == Duration::from_secs(7)));
    assert!(err.is_retryable() && err.to_string().contains("rate limited"), "{err}");

    server.set_reply(Reply::Status {
        status: 500,
        headers: vec![],
        body: r#"{"error":"llama runner process has terminated: exit status 2"}"#.into(),
    });
    let err = client.chat(request.clone()).await.unwrap_err();
    assert!(matches!(&err, Error::Http { status: 500, .. }) && err.is_retryable());
    assert!(err.to_string().contains("llama runner process has terminated"), "{err}");

    // A body that is not Ollama's error, and a huge one: previewed, read at most 1 MiB.
    server.set_reply(Reply::Status { status: 502, headers: vec![], body: "<html>Bad Gateway</html>".into() });
    let err = client.chat(request.clone()).await.unwrap_err();
    assert!(err.to_string().contains("HTTP 502: Bad Gateway"), "{err}");
    server.set_reply(Reply::HugeStatus { status: 503, bytes: 50 * 1024 * 1024 });
    let err = client.chat(request.clone()).await.unwrap_err();
    let Error::Http { status: 503, body, .. } = &err else { panic!("{err}") };
    assert!(body.len() < (1 << 20) + 100 && body.contains("larger than 1024 KiB"), "{} bytes", body.len());
    assert!(err.to_string().len() < 600, "{err}");

    // An `{"error": ...}` document with status 200 is an error too.
    server.set_reply(Reply::Json(r#"{"error":"unexpected server status"}"#.into()));
    let err = client.chat(request).await.unwrap_err();
    assert!(matches!(&err, Error::Http { .. }) && err.to_string().contains("unexpected server status"), "{err}");
}

#[tokio::test]
async fn an_echoed_key_is_redacted_everywhere() {
    let echo = format!(r#"{{"error":"unauthorized: the key {KEY} is not valid"}}"#);
    let server = OllamaServer::start(Reply::Status { status: 401, headers: vec![], body: echo.clone() }).await;
    let client = OllamaClient::builder().host(&server.host).api_key(KEY).model("llama3.2").build().unwrap();
    assert!(!format!("{client:?} {client}").contains(KEY));
    let request = ChatRequest::new(vec![Message::user("q")]);
    let err = client.chat(request.clone()).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(KEY) && shown.contains("[redacted]") && shown.contains("check the API key"), "{shown}");
    // In a stream's error line and in an undecodable line, too.
    let lines = format!("{{\"done\":false,\"message\":{{\"content\":\"a\"}}}}\n{echo}\n");
    server.set_reply(Reply::Lines { body: lines, cuts: vec![4] });
    let chunks = chunks_of(&client, request.clone()).await;
    let shown = format!("{:?}", chunks.last().unwrap());
    assert!(!shown.contains(KEY) && shown.contains("[redacted]"), "{shown}");
    server.set_reply(Reply::Lines { body: format!("not json {KEY}\n"), cuts: vec![100] });
    let shown = format!("{:?}", chunks_of(&client, request.clone()).await);
    assert!(!shown.contains(KEY), "{shown}");
    // Embeddings.
    server.set_reply(Reply::Status { status: 401, headers: vec![], body: echo });
    let err = client.embedder("all-minilm", 10).embed_query("q").await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains(KEY), "{err}");
}

// "Generate Embeddings", one input and several.
const EMBED_ONE: &str = r#"{
  "model": "all-minilm",
  "embeddings": [[
    0.010071029, -0.0017594862, 0.05007221, 0.04692972, 0.054916814,
    0.008599704, 0.105441414, -0.025878139, 0.12958129, 0.031952348
  ]],
  "total_duration": 14143917,
  "load_duration": 1019500,
  "prompt_eval_count": 8
}"#;

const EMBED_TWO: &str = r#"{
  "model": "all-minilm",
  "embeddings": [[
    0.010071029, -0.0017594862, 0.05007221, 0.04692972, 0.054916814,
    0.008599704, 0.105441414, -0.025878139, 0.12958129, 0.031952348
  ],[
    -0.0098027075, 0.06042469, 0.025257962, -0.006364387, 0.07272725,
    0.017194884, 0.09032035, -0.051705178, 0.09951512, 0.09072481
  ]]
}"#;

#[tokio::test]
async fn embeddings_single_batch_and_dimension_checks() {
    let server = OllamaServer::start(Reply::Json(EMBED_ONE.into())).await;
    let client = client(&server);
    let embedder = client.embedder("all-minilm", 10);
    assert_eq!((embedder.dimensions(), embedder.model_name().as_str()), (10, "all-minilm"));
    let query = embedder.embed_query("Why is the sky blue?").await.unwrap();
    assert_eq!(query.len(), 10);
    assert_eq!(query[0], 0.010071029);
    let sent = server.last();
    assert_eq!(sent.path, "/api/embed");
    assert_eq!(sent.body, json!({"model": "all-minilm", "input": "Why is the sky blue?"}));

    server.set_reply(Reply::Json(EMBED_TWO.into()));
    let texts = vec!["Why is the sky blue?".to_string(), "Why is the grass green?".to_string()];
    let embedder = embedder.with_truncate(false).with_requested_dimensions();
    let vectors = embedder.embed_documents(&texts).await.unwrap();
    assert_eq!(vectors.len(), 2);
    assert_eq!(vectors[1][0], -0.0098027075);
    assert_eq!(
        server.last().body,
        json!({"model": "all-minilm", "input": ["Why is the sky blue?", "Why is the grass green?"],
            "truncate": false, "dimensions": 10})
    );
    assert!(embedder.embed_documents(&[]).await.unwrap().is_empty());

    // A vector of another length, or a count that does not match the inputs: errors that say so.
    let wrong = client.embedder("all-minilm", 384);
    let err = wrong.embed_documents(&texts).await.unwrap_err();
    assert!(matches!(&err, Error::Decode { .. }) && err.to_string().contains("384"), "{err}");
    let err = client.embedder("all-minilm", 10).embed_documents(&texts[..1]).await.unwrap_err();
    assert!(err.to_string().contains("2 vectors for 1 inputs"), "{err}");
    // The dimensions can be learnt from a probe.
    server.set_reply(Reply::Json(EMBED_ONE.into()));
    let discovered = client.discover_embedder("all-minilm").await.unwrap();
    assert_eq!(discovered.dimensions(), 10);
    // An unknown embedding model.
    server.set_reply(Reply::Status {
        status: 404,
        headers: vec![],
        body: r#"{"error":"model \"nomic-embed-text\" not found, try pulling it first"}"#.into(),
    });
    let err = client.embedder("nomic-embed-text", 768).embed_query("q").await.unwrap_err();
    assert!(err.to_string().contains("not found, try pulling it first"), "{err}");
}

#[tokio::test]
async fn assistant_tool_calls_must_have_object_arguments_and_images_must_be_data() {
    let server = OllamaServer::start(Reply::Json(PLAIN_ANSWER.into())).await;
    let client = client(&server);
    let mut call = Message::assistant("");
    call.tool_calls = vec![ToolCall { id: "c".into(), name: "t".into(), arguments: "[1, 2]".into() }];
    let err = client.chat(ChatRequest::new(vec![Message::user("q"), call])).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidInput(m) if m.contains("JSON object")), "{err}");
    let mut image = Message::user("look");
    image.content.push(ContentPart::ImageUrl { url: "https://example.com/cat.png".into() });
    let err = client.chat(ChatRequest::new(vec![image])).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidInput(m) if m.contains("base64")), "{err}");
    assert!(server.requests().is_empty());
}
