//! Exact wire fixtures for `catena_providers::gemini`, against a real HTTP server on 127.0.0.1.
//!
//! The server ([`catena_test_support::gemini_wire`]) answers with the bytes each test gives it; it stands in for
//! Google's servers, which cannot run here. The fixtures follow the shapes of Google's published Gemini API
//! reference and guides (generateContent and streamGenerateContent responses, function calling with thought
//! signatures on the first of parallel calls, structured output, `usageMetadata`, safety and `promptFeedback`
//! blocks, Google's error JSON with `RetryInfo`, embedContent and batchEmbedContents), with the values changed and
//! non-ASCII text added. Event streams are written as Google writes them (`data: <json>` and CRLF line ends) and
//! cut into HTTP chunks of many sizes, down to one byte, so events split mid-line and mid-UTF-8 character.

#![cfg(feature = "gemini")]

use std::time::Duration;

use catena_core::{
    collect_stream, ChatChunk, ChatRequest, ChatResponse, Constraint, Deadline, Embedder, Error, FinishReason, Llm,
    Message, ToolCall, ToolChoice, ToolDefinition, Usage,
};
use catena_providers::gemini::{thought_signature, GeminiApi, GeminiAuth, GeminiClient, PromptBlocked};
use catena_test_support::gemini_wire::{GeminiServer, Reply};
use futures::StreamExt;
use serde_json::{json, Value};

const KEY: &str = "AIzaSyD-test-secret-key-0123456789abc";
const MODEL: &str = "gemini-2.5-flash";

fn client(server: &GeminiServer) -> GeminiClient {
    GeminiClient::builder()
        .base_url(&server.base_url)
        .api_key(KEY)
        .model(MODEL)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The response without `raw` (a JSON document for `chat`, the array of event payloads for a folded stream).
fn comparable(r: &ChatResponse) -> (Message, Option<FinishReason>, Option<Usage>, String) {
    (r.message.clone(), r.finish_reason.clone(), r.usage, r.model.clone())
}

/// An event stream as Google writes it: `data: <json>` lines ended by CRLF, a blank line after each.
fn sse(events: &[&str]) -> String {
    let mut out = String::new();
    for data in events {
        let v: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("fixture is not JSON ({e}): {data}"));
        out.push_str(&format!("data: {}\r\n\r\n", v));
    }
    out
}

/// The cuts every stream fixture is sent with: one byte at a time, small odd sizes, whole.
const CUTS: &[&[usize]] = &[&[1], &[2, 3], &[7, 1, 13], &[64, 5], &[100_000]];

async fn chunks_of(client: &GeminiClient, request: ChatRequest) -> Vec<catena_core::Result<ChatChunk>> {
    client.chat_stream(request).await.unwrap().collect().await
}

async fn fold(client: &GeminiClient, request: ChatRequest) -> ChatResponse {
    collect_stream(client.chat_stream(request).await.unwrap()).await.unwrap()
}

fn weather_tool() -> ToolDefinition {
    ToolDefinition {
        name: "get_weather".into(),
        description: "Get the current weather in a given location".into(),
        parameters: json!({"type": "object", "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["location"], "additionalProperties": false}),
    }
}

// A plain answer, as the reference's generateContent example has it (text, safety ratings, usage, model).
const PLAIN: &str = r#"{"candidates":[{"content":{"parts":[{"text":"Once upon a time, in a town called Ærøskøbing ☃, lived a girl with a magic backpack.","thoughtSignature":"AY89a18iOcFus5wr5bW5xN6zZ4aUiCyhgmg6HE2YjtYDV/dwZ5oZlZHeTmiUKv34qq0="}],"role":"model"},"finishReason":"STOP","index":0,"safetyRatings":[{"category":"HARM_CATEGORY_SEXUALLY_EXPLICIT","probability":"NEGLIGIBLE"},{"category":"HARM_CATEGORY_HATE_SPEECH","probability":"NEGLIGIBLE"},{"category":"HARM_CATEGORY_HARASSMENT","probability":"NEGLIGIBLE"},{"category":"HARM_CATEGORY_DANGEROUS_CONTENT","probability":"NEGLIGIBLE"}]}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":21,"totalTokenCount":29,"promptTokensDetails":[{"modality":"TEXT","tokenCount":8}]},"modelVersion":"gemini-2.5-flash","responseId":"mBHzaM2xJ9-ekdUPu4fT-Qc"}"#;

// The same answer streamed: usage in every event (cumulative), the final event with an empty text part carrying the
// answer's thought signature and the finishReason.
const PLAIN_STREAM: &[&str] = &[
    r#"{"candidates":[{"content":{"parts":[{"text":"Once upon a time, in a town called Ærø"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8},"modelVersion":"gemini-2.5-flash","responseId":"mBHzaM2xJ9-ekdUPu4fT-Qc"}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":"skøbing ☃, lived a girl"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":12,"totalTokenCount":20},"modelVersion":"gemini-2.5-flash","responseId":"mBHzaM2xJ9-ekdUPu4fT-Qc"}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":" with a magic backpack."}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":20,"totalTokenCount":28},"modelVersion":"gemini-2.5-flash","responseId":"mBHzaM2xJ9-ekdUPu4fT-Qc"}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":"","thoughtSignature":"AY89a18iOcFus5wr5bW5xN6zZ4aUiCyhgmg6HE2YjtYDV/dwZ5oZlZHeTmiUKv34qq0="}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":21,"totalTokenCount":29},"modelVersion":"gemini-2.5-flash","responseId":"mBHzaM2xJ9-ekdUPu4fT-Qc"}"#,
];

#[tokio::test]
async fn chat_sends_the_documented_request_and_headers() {
    let server = GeminiServer::start(Reply::Json(PLAIN.into())).await;
    let client = GeminiClient::builder()
        .base_url(&server.base_url)
        .api_key(KEY)
        .model(MODEL)
        .header("x-goog-user-project", "catena-test")
        .build()
        .unwrap();
    let mut look = Message::user("What is in this picture?");
    look.content.push(catena_core::ContentPart::ImageUrl { url: "data:image/png;base64,iVBORw0KGgo=".into() });
    look.content.push(catena_core::ContentPart::ImageUrl { url: "https://example.com/cat.JPG?size=2".into() });
    let request = ChatRequest::new(vec![
        Message::system("You are a cat."),
        look,
        Message::assistant("A cat, naturally."),
        Message::user("Tell me a story."),
        Message::system("Your name is Neko."),
    ])
    .with_temperature(0.5)
    .with_top_p(0.25)
    .with_max_tokens(800)
    .with_stop("Title")
    .with_seed(42)
    .with_tool(weather_tool())
    .with_tool_choice(ToolChoice::Tool("get_weather".into()));
    let response = client.chat(request).await.unwrap();

    let sent = server.last();
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    let header = |name: &str| sent.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(header("x-goog-api-key").as_deref(), Some(KEY));
    assert_eq!(header("x-goog-user-project").as_deref(), Some("catena-test"));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(header("accept").as_deref(), Some("application/json"));
    assert_eq!(header("authorization"), None);
    assert_eq!(
        sent.body,
        json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "What is in this picture?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.JPG?size=2"}}]},
                {"role": "model", "parts": [{"text": "A cat, naturally."}]},
                {"role": "user", "parts": [{"text": "Tell me a story."}]}],
            "systemInstruction": {"parts": [{"text": "You are a cat."}, {"text": "Your name is Neko."}]},
            "tools": [{"functionDeclarations": [{
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "parameters": {"type": "object", "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                    "required": ["location"]}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {"candidateCount": 1, "temperature": 0.5, "topP": 0.25, "maxOutputTokens": 800,
                "stopSequences": ["Title"], "seed": 42},
        })
    );
    assert_eq!(response.text(), "Once upon a time, in a town called Ærøskøbing ☃, lived a girl with a magic backpack.");
    assert_eq!(response.model, "gemini-2.5-flash");
    assert_eq!(response.finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        response.usage,
        Some(Usage { input_tokens: 8, output_tokens: 21, total_tokens: 29, cached_input_tokens: None })
    );
    assert_eq!(response.raw["responseId"], "mBHzaM2xJ9-ekdUPu4fT-Qc");

    // Tool choices map to modes; the minimal request carries only candidateCount; streams ask for SSE.
    let minimal = ChatRequest::new(vec![Message::user("hi")]);
    for (choice, mode) in [(ToolChoice::Auto, "AUTO"), (ToolChoice::None, "NONE"), (ToolChoice::Required, "ANY")] {
        client.chat(minimal.clone().with_tool(weather_tool()).with_tool_choice(choice)).await.unwrap();
        assert_eq!(server.last().body["toolConfig"], json!({"functionCallingConfig": {"mode": mode}}));
    }
    client.chat(minimal.clone()).await.unwrap();
    assert_eq!(
        server.last().body,
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"candidateCount": 1}})
    );
    server.set_reply(Reply::Events { body: sse(PLAIN_STREAM), cuts: vec![100_000] });
    fold(&client, minimal).await;
    assert_eq!(server.last().path, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
    assert_eq!(server.last().headers.get("accept").unwrap(), "text/event-stream");
}

#[tokio::test]
async fn a_stream_cut_anywhere_folds_into_the_chat_answer() {
    let server = GeminiServer::start(Reply::Json(PLAIN.into())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("Write a story about a magic backpack.")]);
    let whole = client.chat(request.clone()).await.unwrap();
    for cuts in CUTS {
        server.set_reply(Reply::Events { body: sse(PLAIN_STREAM), cuts: cuts.to_vec() });
        let chunks: Vec<ChatChunk> =
            chunks_of(&client, request.clone()).await.into_iter().map(|c| c.unwrap()).collect();
        assert_eq!(chunks.len(), 4, "one chunk per event");
        let texts: Vec<Option<&str>> = chunks.iter().map(|c| c.text.as_deref()).collect();
        assert_eq!(
            texts,
            [
                Some("Once upon a time, in a town called Ærø"),
                Some("skøbing ☃, lived a girl"),
                Some(" with a magic backpack."),
                None
            ]
        );
        // Every event's usage is the count so far.
        let outputs: Vec<u64> = chunks.iter().map(|c| c.usage.unwrap().output_tokens).collect();
        assert_eq!(outputs, [0, 12, 20, 21]);
        assert_eq!(chunks[3].finish_reason, Some(FinishReason::Stop));
        let mut builder = catena_core::ChatResponseBuilder::default();
        chunks.iter().for_each(|c| builder.push(c));
        let folded = builder.finish();
        assert_eq!(comparable(&folded), comparable(&whole), "cuts {cuts:?}");
        assert_eq!(folded.raw.as_array().unwrap().len(), 4);
        // The answer's thought signature (on a text part) is kept in raw.
        assert!(folded.raw[3]["candidates"][0]["content"]["parts"][0]["thoughtSignature"].is_string());
    }
    // A server without modelVersion: the requested model names the answer, in chat and stream alike.
    let bare = r#"{"candidates":[{"content":{"parts":[{"text":"ok"}],"role":"model"},"finishReason":"STOP"}]}"#;
    server.set_reply(Reply::Json(bare.into()));
    let whole = client.chat(request.clone()).await.unwrap();
    assert_eq!((whole.model.as_str(), whole.usage), (MODEL, None));
    server.set_reply(Reply::Events { body: sse(&[bare]), cuts: vec![3] });
    assert_eq!(comparable(&fold(&client, request).await), comparable(&whole));
}

// Parallel function calls from a thinking model: a thought summary, the signature on the first call only.
const CALLS: &str = r#"{"candidates":[{"content":{"parts":[{"text":"The user wants the weather in two cities; I will call the tool twice.","thought":true},{"functionCall":{"name":"get_weather","args":{"location":"Paris, France","unit":"celsius"}},"thoughtSignature":"CiQB0e2Kb7wzS+8PZ1M5yYpDKF0Ig0qRJ8A6xk3mWY1X2z4QJcESmAEB0e2Kb0G+9Q=="},{"functionCall":{"name":"get_weather","args":{"location":"London, UK"}}}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":120,"candidatesTokenCount":40,"totalTokenCount":310,"thoughtsTokenCount":150},"modelVersion":"gemini-2.5-pro"}"#;

const CALLS_STREAM: &[&str] = &[
    r#"{"candidates":[{"content":{"parts":[{"text":"The user wants the weather in two cities; I will call the tool twice.","thought":true}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":120,"totalTokenCount":270,"thoughtsTokenCount":150},"modelVersion":"gemini-2.5-pro"}"#,
    r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"get_weather","args":{"location":"Paris, France","unit":"celsius"}},"thoughtSignature":"CiQB0e2Kb7wzS+8PZ1M5yYpDKF0Ig0qRJ8A6xk3mWY1X2z4QJcESmAEB0e2Kb0G+9Q=="},{"functionCall":{"name":"get_weather","args":{"location":"London, UK"}}}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":120,"candidatesTokenCount":40,"totalTokenCount":310,"thoughtsTokenCount":150},"modelVersion":"gemini-2.5-pro"}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":120,"candidatesTokenCount":40,"totalTokenCount":310,"thoughtsTokenCount":150},"modelVersion":"gemini-2.5-pro"}"#,
];

const SIGNATURE: &str = "CiQB0e2Kb7wzS+8PZ1M5yYpDKF0Ig0qRJ8A6xk3mWY1X2z4QJcESmAEB0e2Kb0G+9Q==";

#[tokio::test]
async fn function_calls_and_their_thought_signatures_go_back_exactly() {
    let server = GeminiServer::start(Reply::Json(CALLS.into())).await;
    let client = client(&server);
    let question = Message::user("What's the weather in Paris and London?");
    let request = ChatRequest::new(vec![question.clone()]).with_tool(weather_tool());
    let whole = client.chat(request.clone()).await.unwrap();
    assert_eq!(whole.text(), "", "the thought summary is not answer text");
    assert_eq!(
        whole.message.tool_calls,
        vec![
            ToolCall {
                id: format!("gemini-call-0#ts={SIGNATURE}"),
                name: "get_weather".into(),
                arguments: r#"{"location":"Paris, France","unit":"celsius"}"#.into(),
            },
            ToolCall {
                id: "gemini-call-1".into(),
                name: "get_weather".into(),
                arguments: r#"{"location":"London, UK"}"#.into()
            },
        ]
    );
    assert_eq!(thought_signature(&whole.message.tool_calls[0]), Some(SIGNATURE));
    assert_eq!(thought_signature(&whole.message.tool_calls[1]), None);
    assert_eq!(whole.finish_reason, Some(FinishReason::ToolCalls), "STOP with calls");
    // Thinking is output.
    assert_eq!(
        whole.usage,
        Some(Usage { input_tokens: 120, output_tokens: 190, total_tokens: 310, cached_input_tokens: None })
    );
    for cuts in CUTS {
        server.set_reply(Reply::Events { body: sse(CALLS_STREAM), cuts: cuts.to_vec() });
        let chunks: Vec<ChatChunk> =
            chunks_of(&client, request.clone()).await.into_iter().map(|c| c.unwrap()).collect();
        // Whole calls, one delta each, in the event that brought them.
        let deltas: Vec<_> = chunks.iter().flat_map(|c| c.tool_calls.clone()).collect();
        assert_eq!(deltas.len(), 2);
        assert_eq!((deltas[0].index, deltas[1].index), (0, 1));
        assert_eq!(deltas[1].arguments, r#"{"location":"London, UK"}"#);
        let mut builder = catena_core::ChatResponseBuilder::default();
        chunks.iter().for_each(|c| builder.push(c));
        assert_eq!(comparable(&builder.finish()), comparable(&whole), "cuts {cuts:?}");
    }

    // The next turn: the calls go back with the signature on the first, the results as function responses.
    server.set_reply(Reply::Json(PLAIN.into()));
    let calls = whole.message.tool_calls.clone();
    let next = ChatRequest::new(vec![
        question,
        whole.message.clone(),
        Message::tool_result(&calls[0].id, r#"{"temperature": 18, "sky": "clear"}"#),
        Message::tool_result(&calls[1].id, "Rain, 11 °C"),
    ])
    .with_tool(weather_tool());
    client.chat(next).await.unwrap();
    let sent = server.last().body;
    assert_eq!(
        sent["contents"],
        json!([
            {"role": "user", "parts": [{"text": "What's the weather in Paris and London?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"location": "Paris, France", "unit": "celsius"}},
                 "thoughtSignature": SIGNATURE},
                {"functionCall": {"name": "get_weather", "args": {"location": "London, UK"}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temperature": 18, "sky": "clear"}}},
                {"functionResponse": {"name": "get_weather", "response": {"output": "Rain, 11 °C"}}}]}
        ])
    );

    // Calls with server ids (as Vertex AI and newer models give them): the ids go back in both parts.
    let with_ids = r#"{"candidates":[{"content":{"parts":[{"functionCall":{"id":"call-7f3a","name":"get_weather","args":{"location":"Oslo"}},"thoughtSignature":"EhsKGQ=="}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3,"totalTokenCount":8}}"#;
    server.set_reply(Reply::Json(with_ids.into()));
    let answer = client.chat(request.clone()).await.unwrap();
    let call = answer.message.tool_calls[0].clone();
    assert_eq!(call.id, "call-7f3a#ts=EhsKGQ==");
    server.set_reply(Reply::Json(PLAIN.into()));
    let mut assistant = Message::assistant("Checking.");
    assistant.tool_calls = vec![call.clone()];
    client
        .chat(ChatRequest::new(vec![Message::user("Oslo?"), assistant, Message::tool_result(&call.id, "-3 °C")]))
        .await
        .unwrap();
    assert_eq!(
        server.last().body["contents"].as_array().unwrap()[1..],
        json!([
            {"role": "model", "parts": [{"text": "Checking."},
                {"functionCall": {"id": "call-7f3a", "name": "get_weather", "args": {"location": "Oslo"}},
                 "thoughtSignature": "EhsKGQ=="}]},
            {"role": "user", "parts": [
                {"functionResponse": {"id": "call-7f3a", "name": "get_weather", "response": {"output": "-3 °C"}}}]}
        ])
        .as_array()
        .unwrap()[..]
    );
}

#[tokio::test]
async fn structured_output_sends_the_mime_type_and_the_converted_schema() {
    #[derive(serde::Deserialize, schemars::JsonSchema, Debug, PartialEq)]
    struct Recipe {
        /// The recipe's name.
        recipe_name: String,
        ingredients: Vec<String>,
        minutes: Option<u32>,
    }
    let answer = r#"{"candidates":[{"content":{"parts":[{"text":"{\"recipe_name\": \"Crème brûlée\", \"ingredients\": [\"cream\", \"sugar\"], \"minutes\": 50}"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":25,"totalTokenCount":37},"modelVersion":"gemini-2.5-flash"}"#;
    let server = GeminiServer::start(Reply::Json(answer.into())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("One dessert recipe")])
        .with_constraint(Constraint::json_schema_for::<Recipe>());
    let whole = client.chat(request.clone()).await.unwrap();
    let config = &server.last().body["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    assert_eq!(
        config["responseSchema"],
        json!({"title": "Recipe", "type": "object", "properties": {
            "recipe_name": {"type": "string", "description": "The recipe's name."},
            "ingredients": {"type": "array", "items": {"type": "string"}},
            // schemars' `uint32` format is not one Gemini knows: dropped.
            "minutes": {"type": "integer", "minimum": 0, "nullable": true}},
            "required": ["recipe_name", "ingredients"]})
    );
    let recipe: Recipe = serde_json::from_str(&whole.text()).unwrap();
    assert_eq!(recipe.recipe_name, "Crème brûlée");
    assert_eq!(whole.finish_reason, Some(FinishReason::Stop));
    let events = [
        r#"{"candidates":[{"content":{"parts":[{"text":"{\"recipe_name\": \"Crème"}],"role":"model"},"index":0}],"modelVersion":"gemini-2.5-flash"}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":" brûlée\", \"ingredients\": [\"cream\", \"sugar\"], \"minutes\": 50}"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":25,"totalTokenCount":37},"modelVersion":"gemini-2.5-flash"}"#,
    ];
    server.set_reply(Reply::Events { body: sse(&events), cuts: vec![1] });
    assert_eq!(comparable(&fold(&client, request).await), comparable(&whole));

    // JSON mode: the MIME type alone.
    server.set_reply(Reply::Json(answer.into()));
    client.chat(ChatRequest::new(vec![Message::user("json")]).with_constraint(Constraint::JsonObject)).await.unwrap();
    assert_eq!(
        server.last().body["generationConfig"],
        json!({"candidateCount": 1, "responseMimeType": "application/json"})
    );
}

#[tokio::test]
async fn usage_counts_cache_thoughts_and_tool_prompts_in_chat_and_stream() {
    let answer = r#"{"candidates":[{"content":{"parts":[{"text":"Cached."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":2100,"candidatesTokenCount":3,"totalTokenCount":2160,"cachedContentTokenCount":2048,"thoughtsTokenCount":50,"toolUsePromptTokenCount":7,"cacheTokensDetails":[{"modality":"TEXT","tokenCount":2048}]},"modelVersion":"gemini-2.5-flash"}"#;
    let server = GeminiServer::start(Reply::Json(answer.into())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("again")]);
    let whole = client.chat(request.clone()).await.unwrap();
    let expected = Usage { input_tokens: 2107, output_tokens: 53, total_tokens: 2160, cached_input_tokens: Some(2048) };
    assert_eq!(whole.usage, Some(expected));
    server.set_reply(Reply::Events { body: sse(&[answer]), cuts: vec![9, 4] });
    let folded = fold(&client, request).await;
    assert_eq!(comparable(&folded), comparable(&whole));
}

#[tokio::test]
async fn every_finish_reason_maps_the_same_in_chat_and_stream() {
    let server = GeminiServer::start(Reply::Json(String::new())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("go")]);
    for (reason, expected) in [
        ("STOP", FinishReason::Stop),
        ("MAX_TOKENS", FinishReason::Length),
        ("SAFETY", FinishReason::ContentFilter),
        ("RECITATION", FinishReason::ContentFilter),
        ("BLOCKLIST", FinishReason::ContentFilter),
        ("PROHIBITED_CONTENT", FinishReason::ContentFilter),
        ("SPII", FinishReason::ContentFilter),
        ("MALFORMED_FUNCTION_CALL", FinishReason::Other("MALFORMED_FUNCTION_CALL".into())),
        ("LANGUAGE", FinishReason::Other("LANGUAGE".into())),
        ("OTHER", FinishReason::Other("OTHER".into())),
    ] {
        let body = format!(
            r#"{{"candidates":[{{"content":{{"parts":[{{"text":"Partial"}}],"role":"model"}},"finishReason":"{reason}","index":0}}],"usageMetadata":{{"promptTokenCount":4,"candidatesTokenCount":1,"totalTokenCount":5}}}}"#
        );
        server.set_reply(Reply::Json(body.clone()));
        let whole = client.chat(request.clone()).await.unwrap();
        assert_eq!(whole.finish_reason, Some(expected), "{reason}");
        server.set_reply(Reply::Events { body: sse(&[&body]), cuts: vec![11] });
        assert_eq!(comparable(&fold(&client, request.clone()).await), comparable(&whole), "{reason}");
    }
}

#[tokio::test]
async fn a_safety_stop_is_a_content_filter_and_a_blocked_prompt_a_typed_error() {
    // The candidate was stopped by the safety filters: no content, the ratings say which.
    let stopped = r#"{"candidates":[{"finishReason":"SAFETY","index":0,"safetyRatings":[{"category":"HARM_CATEGORY_SEXUALLY_EXPLICIT","probability":"NEGLIGIBLE"},{"category":"HARM_CATEGORY_HATE_SPEECH","probability":"NEGLIGIBLE"},{"category":"HARM_CATEGORY_HARASSMENT","probability":"MEDIUM","blocked":true},{"category":"HARM_CATEGORY_DANGEROUS_CONTENT","probability":"NEGLIGIBLE"}]}],"usageMetadata":{"promptTokenCount":9,"totalTokenCount":9},"modelVersion":"gemini-2.5-flash"}"#;
    let server = GeminiServer::start(Reply::Json(stopped.into())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("something rude")]);
    let whole = client.chat(request.clone()).await.unwrap();
    assert_eq!(whole.text(), "");
    assert_eq!(whole.finish_reason, Some(FinishReason::ContentFilter));
    assert_eq!(whole.usage.map(|u| u.input_tokens), Some(9), "usage is kept");
    assert_eq!(whole.raw["candidates"][0]["safetyRatings"][2]["blocked"], true);
    server.set_reply(Reply::Events { body: sse(&[stopped]), cuts: vec![5] });
    assert_eq!(comparable(&fold(&client, request.clone()).await), comparable(&whole));

    // The prompt itself was blocked: no candidate, promptFeedback.blockReason.
    let blocked = r#"{"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[{"category":"HARM_CATEGORY_SEXUALLY_EXPLICIT","probability":"NEGLIGIBLE"},{"category":"HARM_CATEGORY_HATE_SPEECH","probability":"HIGH","blocked":true}]},"usageMetadata":{"promptTokenCount":9,"totalTokenCount":9},"modelVersion":"gemini-2.5-flash"}"#;
    server.set_reply(Reply::Json(blocked.into()));
    let err = client.chat(request.clone()).await.unwrap_err();
    let found = PromptBlocked::from_error(&err).unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(found.reason, "SAFETY");
    assert_eq!(found.safety_ratings[1]["blocked"], true);
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("blocked the prompt (SAFETY)"), "{err}");
    server.set_reply(Reply::Events { body: sse(&[blocked]), cuts: vec![3] });
    let items = chunks_of(&client, request.clone()).await;
    assert_eq!(items.len(), 1);
    let err = items[0].as_ref().unwrap_err();
    assert_eq!(PromptBlocked::from_error(err).map(|b| b.reason.as_str()), Some("SAFETY"));
    let other = r#"{"promptFeedback":{"blockReason":"OTHER","blockReasonMessage":"The prompt was blocked."}}"#;
    server.set_reply(Reply::Json(other.into()));
    let err = client.chat(request).await.unwrap_err();
    assert_eq!(PromptBlocked::from_error(&err).and_then(|b| b.message.as_deref()), Some("The prompt was blocked."));
}

#[tokio::test]
async fn an_error_object_mid_stream_ends_it_with_a_typed_error() {
    let body = sse(&[
        PLAIN_STREAM[0],
        r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
        PLAIN_STREAM[1],
    ]);
    let server = GeminiServer::start(Reply::Events { body, cuts: vec![3, 17] }).await;
    let client = client(&server);
    let items = chunks_of(&client, ChatRequest::new(vec![Message::user("hi")])).await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap().text.as_deref(), Some("Once upon a time, in a town called Ærø"));
    let err = items[1].as_ref().unwrap_err();
    assert!(
        matches!(err, Error::Http { status: 503, .. })
            && err.to_string().contains("UNAVAILABLE: The model is overloaded"),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn broken_streams_are_errors_never_panics_or_hangs() {
    let server = GeminiServer::start(Reply::Json(String::new())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("hi")]).with_tool(weather_tool());
    let cases: Vec<(String, &str)> = vec![
        // Cut before the event with the finishReason.
        (sse(&PLAIN_STREAM[..2]), "before an event with a `finishReason`"),
        // Not JSON.
        ("data: {not json\r\n\r\n".to_string(), "not JSON"),
        // Not an object.
        ("data: [1, 2]\r\n\r\n".to_string(), "not a JSON object"),
        // Arguments that are not an object.
        (
            sse(&[
                r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"get_weather","args":[1]}}],"role":"model"},"finishReason":"STOP"}]}"#,
            ]),
            "not an object",
        ),
        // Parts of the wrong shape.
        (sse(&[r#"{"candidates":[{"content":{"parts":{"text":"x"}}}]}"#]), "not a Gemini GenerateContentResponse"),
    ];
    for (body, expected) in cases {
        server.set_reply(Reply::Events { body: body.clone(), cuts: vec![5] });
        let items = tokio::time::timeout(Duration::from_secs(10), chunks_of(&client, request.clone())).await.unwrap();
        let err = items.last().unwrap().as_ref().expect_err(&body).to_string();
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    server.set_reply(Reply::Json(r#"{"usageMetadata":{"promptTokenCount":1}}"#.into()));
    let err = client.chat(request).await.unwrap_err().to_string();
    assert!(err.contains("no candidate"), "{err}");
}

#[tokio::test]
async fn a_json_answer_to_a_stream_request_is_the_whole_answer() {
    let server = GeminiServer::start(Reply::Json(PLAIN.into())).await;
    let client = client(&server);
    let request = ChatRequest::new(vec![Message::user("story")]);
    let whole = client.chat(request.clone()).await.unwrap();
    let folded = fold(&client, request.clone()).await;
    assert_eq!(comparable(&folded), comparable(&whole));
    assert_eq!(folded.raw.as_array().unwrap().len(), 1);
    // The JSON array `:streamGenerateContent` writes without `alt=sse`: every element is an event.
    let array = format!("[{}]", PLAIN_STREAM.join(",\r\n"));
    server.set_reply(Reply::Json(array));
    let folded = fold(&client, request.clone()).await;
    assert_eq!(comparable(&folded), comparable(&whole));
    assert_eq!(folded.raw.as_array().unwrap().len(), 4);
    // A document without a finishReason is incomplete.
    server.set_reply(Reply::Json(PLAIN_STREAM[0].into()));
    let items = chunks_of(&client, request).await;
    assert!(items.last().unwrap().as_ref().unwrap_err().to_string().contains("incomplete"));
}

#[tokio::test]
async fn http_errors_are_readable_bounded_and_never_show_the_key() {
    // Google's answer to a bad key, with the key echoed in the message for the test.
    let server = GeminiServer::start(Reply::Status {
        status: 400,
        headers: vec![],
        body: format!(
            r#"{{"error":{{"code":400,"message":"API key not valid: {KEY}. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{{"service":"generativelanguage.googleapis.com"}}}}]}}}}"#
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
        assert!(shown.contains("INVALID_ARGUMENT: API key not valid: [redacted]. Please pass"), "{shown}");
        assert!(matches!(err, Error::Http { status: 400, .. }));
        assert!(!err.is_retryable());
    }

    // 429 with Retry-After.
    server.set_reply(Reply::Status {
        status: 429,
        headers: vec![("retry-after".into(), "17".into())],
        body: r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#.into(),
    });
    let err = client.chat(request.clone()).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));
    assert!(err.is_retryable());
    assert!(err.to_string().contains("RESOURCE_EXHAUSTED: Resource has been exhausted"), "{err}");
    // 429 with Google's RetryInfo detail instead of the header.
    server.set_reply(Reply::Status {
        status: 429,
        headers: vec![],
        body: r#"{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"38s"}]}}"#.into(),
    });
    let err = client.chat_stream(request.clone()).await.err().unwrap();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(38)));

    server.set_reply(Reply::Status {
        status: 500,
        headers: vec![],
        body: r#"{"error":{"code":500,"message":"An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting","status":"INTERNAL"}}"#.into(),
    });
    let err = client.chat(request.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 500, .. }) && err.is_retryable(), "{err}");
    assert!(err.to_string().contains("INTERNAL: An internal error has occurred"), "{err}");
    assert!(err.to_string().contains("retry later"), "{err}");

    // 20 MiB of error body: at most 1 MiB is read and kept, 300 characters are shown.
    server.set_reply(Reply::HugeStatus { status: 500, bytes: 20 << 20 });
    let err = client.chat(request.clone()).await.unwrap_err();
    let Error::Http { status: 500, body, .. } = &err else { panic!("{err:?}") };
    assert!(body.len() < (1 << 20) + 100, "{} bytes", body.len());
    assert!(body.starts_with("xxxxx") && body.contains("larger than 1024 KiB"), "{}", &body[body.len() - 80..]);
    assert!(err.to_string().len() < 600, "{err}");

    // A non-JSON error body is previewed as its text; 404 says what to check.
    server.set_reply(Reply::Status { status: 404, headers: vec![], body: "<html>Not Found</html>".into() });
    let err = client.chat(request).await.unwrap_err().to_string();
    assert!(err.contains("HTTP 404: Not Found (check the base URL and the model name"), "{err}");
}

#[tokio::test]
async fn vertex_paths_bearer_tokens_and_query_keys() {
    let server = GeminiServer::start(Reply::Json(PLAIN.into())).await;
    let vertex = GeminiClient::builder()
        .api(GeminiApi::Vertex { project: "my-project".into(), location: "us-central1".into() })
        .base_url(&server.base_url)
        .api_key("ya29.a0-token")
        .model("gemini-2.5-pro")
        .build()
        .unwrap();
    let request = ChatRequest::new(vec![Message::user("hi")]);
    let whole = vertex.chat(request.clone()).await.unwrap();
    let sent = server.last();
    assert_eq!(
        sent.path,
        "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent"
    );
    assert_eq!(sent.headers.get("authorization").unwrap(), "Bearer ya29.a0-token");
    assert!(sent.headers.get("x-goog-api-key").is_none());
    server.set_reply(Reply::Events { body: sse(PLAIN_STREAM), cuts: vec![13] });
    assert_eq!(comparable(&fold(&vertex, request.clone()).await), comparable(&whole));
    assert_eq!(
        server.last().path,
        "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
    assert_eq!(vertex.capabilities().provider, "gcp.vertex_ai");
    server.set_reply(Reply::Status {
        status: 403,
        headers: vec![],
        body: r#"{"error":{"code":403,"message":"Permission denied","status":"PERMISSION_DENIED"}}"#.into(),
    });
    let err = vertex.chat(request.clone()).await.unwrap_err().to_string();
    assert!(err.contains("PERMISSION_DENIED: Permission denied (the key is not allowed"), "{err}");

    // The key as a query parameter: in the URL, never in an error.
    let query = GeminiClient::builder()
        .base_url(&server.base_url)
        .api_key("AIza key+/=&")
        .auth(GeminiAuth::ApiKeyQuery)
        .model("models/gemini-2.5-flash")
        .build()
        .unwrap();
    server.set_reply(Reply::Events { body: sse(PLAIN_STREAM), cuts: vec![100] });
    fold(&query, request.clone()).await;
    assert_eq!(
        server.last().path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=AIza+key%2B%2F%3D%26"
    );
    assert!(server.last().headers.get("x-goog-api-key").is_none());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let closed = GeminiClient::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .api_key(KEY)
        .auth(GeminiAuth::ApiKeyQuery)
        .model(MODEL)
        .build()
        .unwrap();
    let err = closed.chat(request).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    let shown = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
    assert!(shown.contains(&format!("POST http://127.0.0.1:{port}/v1beta/models/{MODEL}:generateContent")), "{shown}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(!format!("{closed:?} {closed}").contains(KEY));
}

#[tokio::test]
async fn unsupported_or_invalid_requests_fail_before_sending() {
    let server = GeminiServer::start(Reply::Json(PLAIN.into())).await;
    let client = client(&server);
    let base = ChatRequest::new(vec![Message::user("hi")]);
    let mut bad_call = Message::assistant("");
    bad_call.tool_calls = vec![ToolCall { id: "t".into(), name: "get_weather".into(), arguments: "[1, 2]".into() }];
    let recursive = json!({"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
        "$ref": "#/$defs/N"});
    for (request, expected) in [
        (base.clone().with_constraint(Constraint::Regex("[0-9]+".into())), "regex"),
        (base.clone().with_constraint(Constraint::choice(["a", "b"])), "choice"),
        (base.clone().with_constraint(Constraint::Grammar("start: \"a\"".into())), "grammar"),
        (base.clone().with_seed(1 << 40), "32-bit"),
        (base.clone().with_tool(weather_tool()).with_tool_choice(ToolChoice::Tool("nope".into())), "names no tool"),
        (ChatRequest::new(vec![Message::user("q"), bad_call]), "not a JSON object"),
        (ChatRequest::new(vec![Message::user("q"), Message::tool_result("call_9", "r")]), "no earlier assistant"),
        (ChatRequest::new(vec![Message::system("only a system prompt")]), "at least one turn"),
        (base.clone().with_constraint(Constraint::JsonSchema(recursive)), "refers to itself"),
    ] {
        let err = client.chat(request.clone()).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{expected:?} not in {err}");
        let err = client.chat_stream(request).await.err().unwrap().to_string();
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    let no_model = GeminiClient::builder().base_url(&server.base_url).build().unwrap();
    let err = no_model.chat(base).await.unwrap_err().to_string();
    assert!(err.contains("CATENA_MODEL"), "{err}");
    assert!(server.requests().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_stalled_server_is_a_timeout_never_a_hang() {
    let server = GeminiServer::start(Reply::Stall).await;
    let client = GeminiClient::builder()
        .base_url(&server.base_url)
        .api_key(KEY)
        .model(MODEL)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let request = ChatRequest::new(vec![Message::user("hi")]);
    let err = tokio::time::timeout(Duration::from_secs(10), client.chat(request.clone())).await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Deadline { deadline: Deadline::Total, .. }) && err.is_retryable(), "{err:?}");
    // A stream that goes silent after its first event: the silence between chunks is bounded by the timeout.
    server.set_reply(Reply::StallAfter(sse(&PLAIN_STREAM[..1])));
    let items = tokio::time::timeout(Duration::from_secs(10), chunks_of(&client, request)).await.unwrap();
    assert!(items[0].as_ref().is_ok_and(|c| c.text.is_some()));
    assert!(matches!(items.last().unwrap(), Err(Error::Deadline { .. })), "{:?}", items.last());
}

#[tokio::test]
async fn embeddings_one_query_and_documents_in_batches() {
    let server =
        GeminiServer::start(Reply::Json(r#"{"embedding":{"values":[0.013168523,-0.008711934,-0.046782676]}}"#.into()))
            .await;
    let client = client(&server);
    let embedder = client.embedder("gemini-embedding-001", 3).with_output_dimensionality();
    assert_eq!((embedder.dimensions(), embedder.model_name().as_str()), (3, "gemini-embedding-001"));
    let query = embedder.embed_query("What is the meaning of life?").await.unwrap();
    assert_eq!(query, vec![0.013168523, -0.008711934, -0.046782676]);
    let sent = server.last();
    assert_eq!(sent.path, "/v1beta/models/gemini-embedding-001:embedContent");
    assert_eq!(sent.headers.get("x-goog-api-key").unwrap(), KEY);
    assert_eq!(
        sent.body,
        json!({"content": {"parts": [{"text": "What is the meaning of life?"}]}, "taskType": "RETRIEVAL_QUERY",
            "outputDimensionality": 3})
    );

    // 150 documents: two batchEmbedContents requests (100, then 50), vectors in order.
    let batch = |n: usize, from: usize| {
        let embeddings: Vec<Value> = (0..n).map(|i| json!({"values": [(from + i) as f32, 0.5, -1.0]})).collect();
        json!({ "embeddings": embeddings }).to_string()
    };
    server.set_reply(Reply::Script(vec![Reply::Json(batch(100, 0)), Reply::Json(batch(50, 100))]));
    let texts: Vec<String> = (0..150).map(|i| format!("document {i} ✓")).collect();
    let vectors = embedder.embed_documents(&texts).await.unwrap();
    assert_eq!(vectors.len(), 150);
    assert!(vectors.iter().enumerate().all(|(i, v)| v[0] == i as f32));
    let requests = server.requests();
    let batches: Vec<&Value> = requests[1..].iter().map(|r| &r.body).collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(requests[1].path, "/v1beta/models/gemini-embedding-001:batchEmbedContents");
    assert_eq!(batches[0]["requests"].as_array().unwrap().len(), 100);
    assert_eq!(
        batches[1]["requests"][49],
        json!({"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "document 149 ✓"}]},
            "taskType": "RETRIEVAL_DOCUMENT", "outputDimensionality": 3})
    );
    assert!(embedder.embed_documents(&[]).await.unwrap().is_empty());

    // Wrong lengths and counts are errors.
    server.set_reply(Reply::Json(r#"{"embeddings":[{"values":[1.0,2.0]}]}"#.into()));
    let err = embedder.embed_documents(&["x".to_string()]).await.unwrap_err().to_string();
    assert!(err.contains("vector of length 2") && err.contains("3 dimensions"), "{err}");
    server.set_reply(Reply::Json(r#"{"embeddings":[]}"#.into()));
    let err = embedder.embed_documents(&["x".to_string()]).await.unwrap_err().to_string();
    assert!(err.contains("asked for 1 embeddings, got 0"), "{err}");
    server.set_reply(Reply::Status {
        status: 400,
        headers: vec![],
        body: r#"{"error":{"code":400,"message":"Request contains an invalid argument.","status":"INVALID_ARGUMENT"}}"#
            .into(),
    });
    let err = embedder.embed_query("x").await.unwrap_err().to_string();
    assert!(err.contains("INVALID_ARGUMENT: Request contains an invalid argument."), "{err}");

    // Vertex AI's embeddings are another method: refused before sending.
    let count = server.requests().len();
    let vertex = GeminiClient::builder()
        .api(GeminiApi::Vertex { project: "p".into(), location: "us-central1".into() })
        .base_url(&server.base_url)
        .api_key("t")
        .build()
        .unwrap()
        .embedder("text-embedding-005", 768);
    assert!(matches!(vertex.embed_query("x").await, Err(Error::Unsupported { .. })));
    assert_eq!(server.requests().len(), count);
}

#[tokio::test]
async fn a_client_on_its_own_io_thread_works_the_same() {
    // IoRuntime::Dedicated is what evcxr notebooks use.
    let server = GeminiServer::start(Reply::Json(CALLS.into())).await;
    let client = GeminiClient::builder()
        .base_url(&server.base_url)
        .api_key(KEY)
        .model(MODEL)
        .io_runtime(catena_providers::gemini::IoRuntime::Dedicated)
        .build()
        .unwrap();
    let request = ChatRequest::new(vec![Message::user("weather?")]).with_tool(weather_tool());
    let whole = client.chat(request.clone()).await.unwrap();
    server.set_reply(Reply::Events { body: sse(CALLS_STREAM), cuts: vec![3, 50] });
    assert_eq!(comparable(&fold(&client, request).await), comparable(&whole));
    assert_eq!(server.requests().len(), 2);
}

/// A thought signature that came on the answer's text (the last streamed event's empty text part, or the text part
/// of a whole answer) is kept in `Message::reasoning` and goes back on the text part of that turn.
#[tokio::test]
async fn a_text_parts_thought_signature_goes_back_on_its_part() {
    let server = GeminiServer::start(Reply::Events { body: sse(PLAIN_STREAM), cuts: vec![11] }).await;
    let client = client(&server);
    let question = vec![Message::user("story")];
    let folded = fold(&client, ChatRequest::new(question.clone())).await;
    let signature = "AY89a18iOcFus5wr5bW5xN6zZ4aUiCyhgmg6HE2YjtYDV/dwZ5oZlZHeTmiUKv34qq0=";
    assert_eq!(folded.message.reasoning.len(), 1);
    assert_eq!(folded.message.reasoning[0].signature.as_deref(), Some(signature));
    server.set_reply(Reply::Json(PLAIN.into()));
    let mut next = question;
    next.push(folded.message.clone());
    next.push(Message::user("and then?"));
    client.chat(ChatRequest::new(next)).await.unwrap();
    let sent = server.last().body;
    assert_eq!(sent["contents"][1]["role"], "model", "{sent}");
    assert_eq!(sent["contents"][1]["parts"][0]["thoughtSignature"], signature, "{sent}");
    assert_eq!(sent["contents"][1]["parts"][0]["text"], folded.text(), "{sent}");
}
