//! Wire-level tests of `catena_providers::openai` against a real HTTP server.
//!
//! Each test starts an axum server on `127.0.0.1:0` that speaks the OpenAI chat-completions and embeddings
//! protocol byte for byte: JSON completions, Server-Sent Events with `data:` framing (events cut mid-line and
//! mid-character across HTTP chunks, several events per chunk, comment lines, `data: [DONE]`), OpenAI-style and
//! llama-cpp-python-style tool-call deltas, the usage chunk with empty `choices`, error statuses with
//! `Retry-After`. The server records every request so the tests assert on exactly what the client sent.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use catena_constraint::{LlmStructuredExt, RepairPolicy};
use catena_core::layer::{LayerExt, TelemetryLayer};
use catena_core::{
    collect_stream, ChatRequest, ChatResponse, Constraint, ContentPart, Deadline, Embedder, Error, FinishReason, Llm,
    Message, Strategy, ToolChoice, ToolDefinition, Usage,
};
use catena_providers::openai::{ApiKey, Compat, ConstraintDialect, Gbnf, OpenAiClient};
use catena_test_support::spans as capture;
use catena_test_support::wire::{Canned, Reply, TestServer, ToolStyle};
use futures::StreamExt;
use serde_json::{json, Value};

// ----------------------------------------------------------------------------------------------------------------
// The server
// ----------------------------------------------------------------------------------------------------------------

// ----------------------------------------------------------------------------------------------------------------
// Helpers
// ----------------------------------------------------------------------------------------------------------------

/// The response without `raw` (a JSON document for `chat`, the array of chunks for a folded stream).
fn comparable(r: &ChatResponse) -> (Message, Option<FinishReason>, Option<Usage>, String) {
    (r.message.clone(), r.finish_reason.clone(), r.usage, r.model.clone())
}

fn weather_tool() -> ToolDefinition {
    ToolDefinition {
        name: "weather".into(),
        description: "Current weather in a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

// ----------------------------------------------------------------------------------------------------------------
// Tests
// ----------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn chat_sends_every_field_and_decodes_the_answer() {
    let server = TestServer::start(Reply::Answer(Canned::text("Hej världen ☃ — naïve"))).await;
    let client = server.client(Compat::Vllm).api_key("sk-test-key").header("x-trace", "abc").build().unwrap();
    let request = ChatRequest::new(vec![Message::system("Be brief."), Message::user("Greet me.")])
        .with_temperature(0.25)
        .with_top_p(0.5)
        .with_max_tokens(32)
        .with_stop("\n\n")
        .with_seed(42);
    let response = client.chat(request).await.unwrap();

    assert_eq!(response.text(), "Hej världen ☃ — naïve");
    assert_eq!(response.model, "gpt-test-2025");
    assert_eq!(response.finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        response.usage,
        Some(Usage { input_tokens: 21, output_tokens: 9, total_tokens: 30, cached_input_tokens: None })
    );
    assert_eq!(response.raw["id"], "chatcmpl-1");

    let recorded = server.state.requests.lock().unwrap();
    assert_eq!(recorded.len(), 1);
    let req = &recorded[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.headers["authorization"], "Bearer sk-test-key");
    assert_eq!(req.headers["x-trace"], "abc");
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(
        req.body,
        json!({
            "model": "gpt-test",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Greet me."}],
            "temperature": 0.25,
            "top_p": 0.5,
            "max_tokens": 32,
            "stop": ["\n\n"],
            "seed": 42,
            "stream": false,
        })
    );
}

#[tokio::test]
async fn request_model_overrides_the_default_and_openai_profile_uses_max_completion_tokens() {
    let server = TestServer::start(Reply::Answer(Canned::text("ok"))).await;
    let client = server.client(Compat::OpenAi).build().unwrap();
    client.chat(ChatRequest::new(vec![Message::user("hi")]).with_model("other").with_max_tokens(5)).await.unwrap();
    let body = server.last_body();
    assert_eq!(body["model"], "other");
    assert_eq!(body["max_completion_tokens"], 5);
    assert!(body.get("max_tokens").is_none(), "{body}");
}

#[tokio::test]
async fn stream_folds_into_the_chat_response() {
    let server = TestServer::start(Reply::Answer(Canned::text("Hej världen ☃ — naïve, streamed in pieces."))).await;
    let client = server.client(Compat::OpenAi).build().unwrap();
    let request = ChatRequest::new(vec![Message::user("Greet me.")]).with_temperature(0.0);

    let chat = client.chat(request.clone()).await.unwrap();
    let mut stream = client.chat_stream(request).await.unwrap();
    let mut texts = Vec::new();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if let Some(t) = &chunk.text {
            texts.push(t.clone());
        }
        chunks.push(chunk);
    }
    assert!(texts.len() > 5, "the answer should arrive in pieces: {texts:?}");
    let mut builder = catena_core::ChatResponseBuilder::default();
    for c in &chunks {
        builder.push(c);
    }
    let folded = builder.finish();
    assert_eq!(comparable(&folded), comparable(&chat));
    assert_eq!(
        folded.usage,
        Some(Usage { input_tokens: 21, output_tokens: 9, total_tokens: 30, cached_input_tokens: None })
    );
    assert_eq!(folded.raw.as_array().map(Vec::len), Some(chunks.len()));

    let bodies = server.bodies();
    assert_eq!(bodies[0]["stream"], false);
    assert!(bodies[0].get("stream_options").is_none());
    assert_eq!(bodies[1]["stream"], true);
    assert_eq!(bodies[1]["stream_options"], json!({"include_usage": true}));
    let headers = &server.state.requests.lock().unwrap()[1].headers;
    assert_eq!(headers["accept"], "text/event-stream");
}

#[tokio::test]
async fn tool_calls_round_trip_openai_style() {
    let canned = Canned {
        content: None,
        tool_calls: vec![
            ("call_abc", "weather", r#"{"city": "Oslo"}"#),
            ("call_def", "weather", r#"{"city": "Bergen, Norway"}"#),
        ],
        finish_reason: "tool_calls",
        ..Canned::text("")
    };
    let server = TestServer::start(Reply::Answer(canned)).await;
    let client = server.client(Compat::OpenAi).build().unwrap();
    let request = ChatRequest::new(vec![Message::user("Weather in Oslo and Bergen?")])
        .with_tool(weather_tool())
        .with_tool_choice(ToolChoice::Auto);

    let chat = client.chat(request.clone()).await.unwrap();
    let folded = collect_stream(client.chat_stream(request.clone()).await.unwrap()).await.unwrap();
    assert_eq!(comparable(&folded), comparable(&chat));
    assert_eq!(chat.finish_reason, Some(FinishReason::ToolCalls));
    let calls = &chat.message.tool_calls;
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].id.as_str(), calls[0].name.as_str()), ("call_abc", "weather"));
    assert_eq!(calls[1].arguments, r#"{"city": "Bergen, Norway"}"#);
    assert_eq!(chat.text(), "");

    let sent = server.last_body();
    assert_eq!(
        sent["tools"],
        json!([{"type": "function", "function": {"name": "weather", "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    );
    assert_eq!(sent["tool_choice"], "auto");

    // Send the calls back with their results.
    let mut history = request.messages.clone();
    history.push(chat.message.clone());
    history.push(Message::tool_result("call_abc", "12°C, rain"));
    history.push(Message::tool_result("call_def", "9°C, sun"));
    server.set_reply(Reply::Answer(Canned::text("Oslo: rain. Bergen: sun.")));
    let follow_up = client
        .chat(ChatRequest::new(history).with_tool(weather_tool()).with_tool_choice(ToolChoice::Tool("weather".into())))
        .await
        .unwrap();
    assert_eq!(follow_up.text(), "Oslo: rain. Bergen: sun.");
    let sent = server.last_body();
    assert_eq!(sent["tool_choice"], json!({"type": "function", "function": {"name": "weather"}}));
    assert_eq!(
        sent["messages"][1],
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}},
            {"id": "call_def", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\": \"Bergen, Norway\"}"}},
        ]})
    );
    assert_eq!(sent["messages"][2], json!({"role": "tool", "content": "12°C, rain", "tool_call_id": "call_abc"}));
    assert_eq!(sent["messages"][3], json!({"role": "tool", "content": "9°C, sun", "tool_call_id": "call_def"}));
}

#[tokio::test]
async fn tool_calls_round_trip_llama_cpp_style() {
    let canned = Canned {
        model: "qwen2.5-0.5b-instruct-q4_k_m.gguf",
        content: None,
        tool_calls: vec![("call__0_weather_cmpl-7", "weather", r#"{"city": "Trondheim"}"#)],
        finish_reason: "tool_calls",
        tool_style: ToolStyle::LlamaCpp,
        line_ending: "\r\n",
        cuts: &[7, 1, 1, 40, 3, 200],
        ..Canned::text("")
    };
    let server = TestServer::start(Reply::Answer(canned)).await;
    let client = server.client(Compat::LlamaCpp).build().unwrap();
    let request = ChatRequest::new(vec![Message::user("Weather in Trondheim?")])
        .with_tool(weather_tool())
        .with_tool_choice(ToolChoice::Tool("weather".into()));

    let chat = client.chat(request.clone()).await.unwrap();
    let folded = collect_stream(client.chat_stream(request.clone()).await.unwrap()).await.unwrap();
    // llama-cpp-python sends no usage in streams, and the profile does not ask for it.
    assert_eq!(folded.usage, None);
    assert!(chat.usage.is_some());
    assert_eq!(
        (folded.message.clone(), folded.finish_reason.clone(), folded.model.clone()),
        (chat.message.clone(), chat.finish_reason.clone(), chat.model.clone())
    );
    let call = &folded.message.tool_calls[0];
    assert_eq!((call.id.as_str(), call.name.as_str()), ("call__0_weather_cmpl-7", "weather"));
    assert_eq!(call.arguments, r#"{"city": "Trondheim"}"#, "repeated ids and names must not be appended");
    assert!(server.last_body().get("stream_options").is_none());

    let mut history = request.messages.clone();
    history.push(folded.message.clone());
    history.push(Message::tool_result(call.id.clone(), "3°C, snow"));
    server.set_reply(Reply::Answer(Canned::text("Snowy.")));
    client.chat(ChatRequest::new(history)).await.unwrap();
    let sent = server.last_body();
    assert_eq!(sent["messages"][1]["content"], "", "llama-cpp-python rejects null content next to tool_calls");
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], "call__0_weather_cmpl-7");
}

#[tokio::test]
async fn llama_cpp_profile_rejects_unsupported_requests_before_sending() {
    let server = TestServer::start(Reply::Answer(Canned::text("{}"))).await;
    let client = server.client(Compat::LlamaCpp).build().unwrap();
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]});
    let lark = ChatRequest::new(vec![Message::user("x")]).with_constraint(Constraint::Grammar("start: \"x\"".into()));
    for result in [client.chat(lark.clone()).await.err(), client.chat_stream(lark.clone()).await.err()] {
        match result {
            Some(Error::Unsupported { capability, backend, .. }) => {
                assert!(capability.contains("grammar"), "{capability}");
                assert!(backend.contains("llama.cpp"), "{backend}");
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
    let required =
        ChatRequest::new(vec![Message::user("x")]).with_tool(weather_tool()).with_tool_choice(ToolChoice::Required);
    assert!(matches!(client.chat(required).await, Err(Error::Unsupported { .. })));
    assert_eq!(server.request_count(), 0, "nothing may be sent for unsupported requests");

    // A JSON Schema goes the llama-cpp-python way (OpenAI's json_schema form is an HTTP 500 there); JSON mode as
    // OpenAI's.
    let plain = ChatRequest::new(vec![Message::user("JSON please")]);
    client.chat(plain.clone().with_constraint(Constraint::JsonSchema(schema.clone()))).await.unwrap();
    assert_eq!(server.last_body()["response_format"], json!({"type": "json_object", "schema": schema}));
    client.chat(plain.clone().with_constraint(Constraint::JsonObject)).await.unwrap();
    assert_eq!(server.last_body()["response_format"], json!({"type": "json_object"}));
    client.chat(plain.clone()).await.unwrap();
    assert!(server.last_body().get("response_format").is_none());

    // JSON mode on every profile, the same way.
    for compat in [Compat::OpenAi, Compat::Vllm, Compat::Ollama, Compat::Generic] {
        let other = server.client(compat).api_key("k").build().unwrap();
        other.chat(plain.clone().with_constraint(Constraint::JsonObject)).await.unwrap();
        assert_eq!(server.last_body()["response_format"], json!({"type": "json_object"}), "{compat}");
    }

    // Capabilities and quirks can be overridden: a generic server that speaks OpenAI's structured outputs.
    let mut quirks = Compat::Generic.quirks();
    quirks.constraint_dialect = ConstraintDialect::OpenAi;
    let overridden = server
        .client(Compat::Generic)
        .quirks(quirks)
        .capabilities(catena_core::Capabilities {
            constraints: catena_core::ConstraintSupport {
                json_schema: Some(Strategy::Native),
                ..Compat::Generic.capabilities().constraints
            },
            ..Compat::Generic.capabilities()
        })
        .build()
        .unwrap();
    overridden.chat(plain.with_constraint(Constraint::JsonSchema(schema))).await.unwrap();
    assert_eq!(server.last_body()["response_format"]["type"], "json_schema");
}

#[tokio::test]
async fn text_parts_are_sent_as_one_string() {
    let server = TestServer::start(Reply::Answer(Canned::text("ok"))).await;
    let mut user = Message::user("Tell me about ");
    user.content.push(ContentPart::Text { text: "lifetimes".into() });
    user.content.push(ContentPart::Text { text: " ☃.".into() });
    let mut system = Message::system("Be ");
    system.content.push(ContentPart::Text { text: "brief.".into() });
    let request = ChatRequest::new(vec![system, user]);
    // Every profile: a string is valid everywhere, while servers disagree on what several text parts mean
    // (llama-cpp-python fails with HTTP 500 on arrays).
    for compat in [Compat::OpenAi, Compat::Vllm, Compat::Ollama, Compat::LlamaCpp, Compat::Generic] {
        let client = server.client(compat).api_key("k").build().unwrap();
        client.chat(request.clone()).await.unwrap();
        collect_stream(client.chat_stream(request.clone()).await.unwrap()).await.unwrap();
        for body in server.bodies().iter().rev().take(2) {
            assert_eq!(
                body["messages"],
                json!([{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "Tell me about lifetimes ☃."}]),
                "{compat}"
            );
        }
    }
    // With an image the parts stay an array, in order.
    let mut with_image = Message::user("What is ");
    with_image.content.push(ContentPart::Text { text: "this?".into() });
    with_image.content.push(ContentPart::ImageUrl { url: "https://example.com/cat.png".into() });
    let client = server.client(Compat::Vllm).build().unwrap();
    client.chat(ChatRequest::new(vec![with_image])).await.unwrap();
    assert_eq!(
        server.last_body()["messages"][0]["content"],
        json!([{"type": "text", "text": "What is "}, {"type": "text", "text": "this?"},
               {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}])
    );
}

#[tokio::test]
async fn grammar_goes_only_to_servers_that_take_it() {
    let server = TestServer::start(Reply::Answer(Canned::text("yes"))).await;
    let grammar = Gbnf::parse("root ::= \"yes\" | \"no\"\n").unwrap();
    let request = ChatRequest::new(vec![Message::user("Is Rust memory safe?")]).with_max_tokens(4);
    let constrained = request.clone().with_constraint(Constraint::Gbnf(grammar.as_str().to_string()));

    // llama.cpp: a top-level `grammar` string, streamed or not.
    let llama = server.client(Compat::LlamaCpp).build().unwrap();
    assert_eq!(llama.chat(constrained.clone()).await.unwrap().text(), "yes");
    assert_eq!(server.last_body()["grammar"], "root ::= \"yes\" | \"no\"\n");
    collect_stream(llama.chat_stream(constrained.clone()).await.unwrap()).await.unwrap();
    assert_eq!(server.last_body()["grammar"], grammar.as_str());
    assert_eq!(server.last_body()["stream"], true);
    // No grammar, no field.
    llama.chat(request.clone()).await.unwrap();
    assert!(server.last_body().get("grammar").is_none());
    // vLLM takes it in `structured_outputs`.
    let vllm = server.client(Compat::Vllm).build().unwrap();
    vllm.chat(constrained.clone()).await.unwrap();
    assert_eq!(server.last_body()["structured_outputs"], json!({"grammar": grammar.as_str()}));
    let sent = server.request_count();

    // Other profiles refuse before sending.
    for compat in [Compat::OpenAi, Compat::Ollama, Compat::Generic] {
        let client = server.client(compat).api_key("k").build().unwrap();
        for err in [
            client.chat(constrained.clone()).await.unwrap_err(),
            client.chat_stream(constrained.clone()).await.err().unwrap(),
        ] {
            assert!(matches!(&err, Error::Unsupported { capability, .. } if capability.contains("gbnf")), "{err}");
        }
    }
    // A grammar with a forced tool call: the server would replace the grammar with its own.
    let forced = constrained.clone().with_tool(weather_tool()).with_tool_choice(ToolChoice::Tool("weather".into()));
    let err = llama.chat(forced).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidInput(m) if m.contains("forced tool choice")), "{err}");
    assert_eq!(server.request_count(), sent, "nothing may be sent for refused grammars");

    // Unforced tools are compatible.
    llama.chat(constrained.clone().with_tool(weather_tool())).await.unwrap();
    assert_eq!(server.last_body()["grammar"], grammar.as_str());

    // A server of another family that takes llama.cpp's field: override the dialect and the capabilities.
    let mut quirks = Compat::Generic.quirks();
    quirks.constraint_dialect = ConstraintDialect::LlamaCpp;
    let generic = server
        .client(Compat::Generic)
        .quirks(quirks)
        .capabilities(catena_core::Capabilities {
            constraints: catena_core::ConstraintSupport {
                gbnf: Some(Strategy::Grammar),
                ..Compat::Generic.capabilities().constraints
            },
            ..Compat::Generic.capabilities()
        })
        .build()
        .unwrap();
    generic.chat(constrained).await.unwrap();
    assert_eq!(server.last_body()["grammar"], grammar.as_str());
}

#[tokio::test]
async fn stream_ending_without_a_finish_reason_is_an_error() {
    // What llama-cpp-python sends when another request interrupts a stream: chunks, then [DONE], and no chunk
    // with a finish_reason.
    let interrupted =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Once\"},\"finish_reason\":null}]}\n\n\
        data: [DONE]\n\n";
    let server = TestServer::start(Reply::Raw { content_type: "text/event-stream", body: interrupted }).await;
    let request = ChatRequest::new(vec![Message::user("Tell a story")]);
    for compat in [Compat::LlamaCpp, Compat::OpenAi, Compat::Generic] {
        let client = server.client(compat).api_key("k").build().unwrap();
        let mut stream = client.chat_stream(request.clone()).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().text, None);
        assert_eq!(stream.next().await.unwrap().unwrap().text.as_deref(), Some("Once"));
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(
            matches!(&err, Error::Decode { message, .. }
                if message.contains("without a finish_reason") && message.contains("--interrupt_requests false")),
            "{err:?}"
        );
        assert!(stream.next().await.is_none());
        let err = collect_stream(client.chat_stream(request.clone()).await.unwrap()).await.unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    }

    // Empty finish reasons (sent by some servers in every chunk but the last) do not count.
    server.set_reply(Reply::Raw {
        content_type: "text/event-stream",
        body: "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Once\"},\"finish_reason\":\"\"}]}\n\n\
               data: [DONE]\n\n",
    });
    let client = server.client(Compat::Generic).build().unwrap();
    let err = collect_stream(client.chat_stream(request.clone()).await.unwrap()).await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");

    // A finish reason followed by a usage-only chunk (OpenAI with include_usage) and by empty finish reasons is
    // a complete answer.
    server.set_reply(Reply::Raw {
        content_type: "text/event-stream",
        body: "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Done.\"},\"finish_reason\":\"\"}]}\n\n\
               data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n\
               data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n\
               data: [DONE]\n\n",
    });
    let folded = collect_stream(client.chat_stream(request.clone()).await.unwrap()).await.unwrap();
    assert_eq!(folded.text(), "Done.");
    assert_eq!(folded.finish_reason, Some(FinishReason::Length));
    assert_eq!(
        folded.usage,
        Some(Usage { input_tokens: 3, output_tokens: 2, total_tokens: 5, cached_input_tokens: None })
    );

    // For a server that never sends finish reasons, the check can be turned off.
    server.set_reply(Reply::Raw { content_type: "text/event-stream", body: interrupted });
    let mut quirks = Compat::Generic.quirks();
    quirks.stream_requires_finish_reason = false;
    let lenient = server.client(Compat::Generic).quirks(quirks).build().unwrap();
    let folded = collect_stream(lenient.chat_stream(request).await.unwrap()).await.unwrap();
    assert_eq!(folded.text(), "Once");
    assert_eq!(folded.finish_reason, None);
}

#[tokio::test]
async fn embeddings_come_back_in_input_order() {
    let server = TestServer::start(Reply::Answer(Canned::text(""))).await;
    let client = server.client(Compat::OpenAi).api_key("k").build().unwrap();
    let embedder = client.embedder("text-embedding-test", 3);
    let texts: Vec<String> = ["a", "bb", "ccc", "dddd"].iter().map(|s| s.to_string()).collect();
    let vectors = embedder.embed_documents(&texts).await.unwrap();
    assert_eq!(vectors.len(), 4);
    for (i, v) in vectors.iter().enumerate() {
        assert_eq!(v, &vec![(i + 1) as f32, i as f32, 0.5]);
    }
    assert_eq!(server.last_body(), json!({"model": "text-embedding-test", "input": ["a", "bb", "ccc", "dddd"]}));
    assert_eq!(embedder.embed_query("hello").await.unwrap(), vec![5.0, 0.0, 0.5]);
    assert_eq!(embedder.dimensions(), 3);
    assert_eq!(embedder.model_name(), "text-embedding-test");

    let before = server.request_count();
    assert!(embedder.embed_documents(&[]).await.unwrap().is_empty());
    assert_eq!(server.request_count(), before, "no request for no input");

    let discovered = client.discover_embedder("text-embedding-test").await.unwrap();
    assert_eq!(discovered.dimensions(), 3);

    let wrong = client.embedder("text-embedding-test", 1536);
    let err = wrong.embed_query("x").await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }) && err.to_string().contains("1536"), "{err}");

    let shortened = client.embedder("text-embedding-test", 3).with_requested_dimensions();
    shortened.embed_query("x").await.unwrap();
    assert_eq!(server.last_body()["dimensions"], 3);

    let err = client.default_embedder().unwrap_err();
    assert!(err.to_string().contains("CATENA_EMBEDDING_MODEL"), "{err}");
    let configured = server
        .client(Compat::OpenAi)
        .embedding_model("text-embedding-test")
        .embedding_dimensions(3)
        .build()
        .unwrap()
        .default_embedder()
        .unwrap();
    assert_eq!(configured.embed_query("abc").await.unwrap()[0], 3.0);
}

#[tokio::test]
async fn rate_limit_keeps_status_body_and_retry_after() {
    let body = r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
    let server =
        TestServer::start(Reply::Status { status: 429, headers: vec![("retry-after", "7".into())], body }).await;
    let client = server.client(Compat::OpenAi).build().unwrap();
    let request = ChatRequest::new(vec![Message::user("hi")]);
    for err in
        [client.chat(request.clone()).await.unwrap_err(), client.chat_stream(request.clone()).await.err().unwrap()]
    {
        match &err {
            Error::Http { status, body: got, retry_after, .. } => {
                assert_eq!(*status, 429);
                assert_eq!(got, body);
                assert_eq!(*retry_after, Some(Duration::from_secs(7)));
            }
            other => panic!("expected Http, got {other:?}"),
        }
        assert!(err.is_retryable());
    }

    let at = SystemTime::now() + Duration::from_secs(120);
    server.set_reply(Reply::Status {
        status: 503,
        headers: vec![("retry-after", httpdate::fmt_http_date(at))],
        body: "overloaded",
    });
    let retry_after = client.chat(request).await.unwrap_err().retry_after().expect("an HTTP-date Retry-After");
    assert!((Duration::from_secs(115)..=Duration::from_secs(120)).contains(&retry_after), "{retry_after:?}");
}

#[tokio::test]
async fn server_error_body_is_kept() {
    let body = "Internal Server Error: ValueError: Unsupported response_format type json_schema";
    let server = TestServer::start(Reply::Status { status: 500, headers: vec![], body }).await;
    let client = server.client(Compat::Generic).build().unwrap();
    let err = client.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap_err();
    assert!(matches!(&err, Error::Http { status: 500, body: b, retry_after: None, .. } if b == body), "{err:?}");
    assert!(err.to_string().contains("HTTP 500"), "{err}");
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    capture::install();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = OpenAiClient::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .compat(Compat::Generic)
        .model("m")
        .build()
        .unwrap();
    let err = client.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap_err();
    match &err {
        Error::Transport { message, .. } => assert!(message.to_lowercase().contains("refused"), "{message}"),
        other => panic!("expected Transport, got {other:?}"),
    }
    assert!(err.is_retryable());
    let err = client.embedder("e", 3).embed_query("x").await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
}

/// A server that answers a streaming request with one whole JSON document (a proxy that ignores `stream`, say):
/// the stream yields that answer, the same as `chat` gives, instead of an error.
#[tokio::test]
async fn a_whole_json_answer_to_a_stream_request_is_the_answer() {
    let body = r#"{"id":"c1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#;
    let server = TestServer::start(Reply::Raw { content_type: "application/json", body }).await;
    let client = server.client(Compat::Generic).build().unwrap();
    let request = ChatRequest::new(vec![Message::user("Capital of France?")]);
    let plain = client.chat(request.clone()).await.unwrap();
    let streamed = collect_stream(client.chat_stream(request).await.unwrap()).await.unwrap();
    assert_eq!(streamed.text(), "Paris.");
    assert_eq!(streamed.finish_reason, Some(FinishReason::Stop));
    assert_eq!(streamed.usage.map(|u| (u.input_tokens, u.output_tokens)), Some((9, 2)));
    assert_eq!(comparable(&streamed), comparable(&plain));
}

#[tokio::test]
async fn bad_payloads_are_decode_errors() {
    let server =
        TestServer::start(Reply::Raw { content_type: "application/json", body: "<html>not json</html>" }).await;
    let client = server.client(Compat::Generic).build().unwrap();
    let request = ChatRequest::new(vec![Message::user("hi")]);
    let err = client.chat(request.clone()).await.unwrap_err();
    assert!(matches!(&err, Error::Decode { message, .. } if message.contains("not json")), "{err:?}");
    // A JSON answer to a streaming request is decoded as the whole answer (here: not JSON, a decode error).
    let err = client.chat_stream(request.clone()).await.err().unwrap();
    assert!(matches!(&err, Error::Decode { message, .. } if message.contains("not json")), "{err:?}");

    server.set_reply(Reply::Raw {
        content_type: "text/event-stream",
        body: "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}\n\ndata: {broken\n\n",
    });
    let mut stream = client.chat_stream(request.clone()).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().text.as_deref(), Some("ok"));
    assert!(matches!(stream.next().await, Some(Err(Error::Decode { .. }))));
    assert!(stream.next().await.is_none());

    // The body ends without [DONE] or a finish_reason: the answer is incomplete.
    server.set_reply(Reply::Raw {
        content_type: "text/event-stream",
        body: "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Once upon\"}}]}\n\n",
    });
    let err = collect_stream(client.chat_stream(request.clone()).await.unwrap()).await.unwrap_err();
    assert!(matches!(&err, Error::Transport { message, .. } if message.contains("[DONE]")), "{err:?}");

    // An error object inside the stream.
    server.set_reply(Reply::Raw {
        content_type: "text/event-stream",
        body: "data: {\"error\":{\"message\":\"context length exceeded\",\"code\":400}}\n\n",
    });
    let err = collect_stream(client.chat_stream(request).await.unwrap()).await.unwrap_err();
    assert!(matches!(&err, Error::Http { status: 400, body, .. } if body.contains("context length")), "{err:?}");
}

#[tokio::test]
async fn slow_server_times_out() {
    let server = TestServer::start(Reply::Delay(Duration::from_secs(3), Canned::text("late"))).await;
    let timeout = Duration::from_millis(300);
    let client = server.client(Compat::Generic).timeout(timeout).build().unwrap();
    let started = std::time::Instant::now();
    let err = client.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap_err();
    assert!(matches!(err, Error::Deadline { deadline: Deadline::Total, limit, .. } if limit == timeout), "{err:?}");
    assert!(err.to_string().contains("openai_compatible POST http://127.0.0.1:"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn dropping_a_stream_closes_the_connection() {
    let server = TestServer::start(Reply::Endless).await;
    let client = server.client(Compat::Generic).build().unwrap();
    let mut stream = client.chat_stream(ChatRequest::new(vec![Message::user("count forever")])).await.unwrap();
    for i in 0..3 {
        let chunk = stream.next().await.unwrap().unwrap();
        assert_eq!(chunk.text, Some(format!("tick{i} ")));
    }
    assert!(!server.state.stream_dropped_flag.load(Ordering::SeqCst));
    drop(stream);
    tokio::time::timeout(Duration::from_secs(5), server.state.stream_dropped.notified())
        .await
        .expect("the server kept generating after the client dropped the stream");
    assert!(server.state.stream_dropped_flag.load(Ordering::SeqCst));
}

#[test]
fn clients_and_embedders_are_shareable() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<OpenAiClient>();
    shareable::<catena_providers::openai::OpenAiEmbedder>();
    shareable::<ApiKey>();
}

#[tokio::test]
async fn streams_outlive_the_client_and_cross_tasks() {
    let server = TestServer::start(Reply::Answer(Canned::text("owned"))).await;
    let stream = {
        let client = server.client(Compat::OpenAi).build().unwrap();
        client.chat_stream(ChatRequest::new(vec![Message::user("hi")])).await.unwrap()
    };
    let folded = tokio::spawn(collect_stream(stream)).await.unwrap().unwrap();
    assert_eq!(folded.text(), "owned");
}

#[tokio::test]
async fn api_key_never_leaks() {
    const KEY: &str = "sk-proj-SECRET0123456789";
    let (captured, _guard) = capture::start();

    let server = TestServer::start(Reply::Answer(Canned::text("fine"))).await;
    let builder = server.client(Compat::OpenAi).api_key(KEY).header("api-key", KEY);
    let client = builder.clone().build().unwrap();
    // Traced with content on: nothing the telemetry layer records may hold the key either.
    let traced = client.clone().layer(TelemetryLayer::new().record_content(true));
    let request = ChatRequest::new(vec![Message::user("hi")]);
    traced.chat(request.clone()).await.unwrap();
    client.chat(request.clone()).await.unwrap();
    collect_stream(client.chat_stream(request.clone()).await.unwrap()).await.unwrap();
    assert_eq!(server.state.requests.lock().unwrap()[0].headers["authorization"], format!("Bearer {KEY}"));

    let mut printed = vec![
        format!("{:?}", ApiKey::new(KEY)),
        format!("{}", ApiKey::new(KEY)),
        format!("{builder:?}"),
        format!("{client:?}"),
        format!("{client}"),
        format!("{:?}", client.embedder("e", 3)),
    ];
    server.set_reply(Reply::Status { status: 401, headers: vec![], body: "{\"error\":\"invalid key\"}" });
    let err = traced.chat(request.clone()).await.unwrap_err();
    printed.push(format!("{err} {err:?}"));
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        OpenAiClient::builder().base_url(format!("http://127.0.0.1:{port}/v1")).api_key(KEY).model("m").build().unwrap()
    };
    let err = refused.chat(request.clone()).await.unwrap_err();
    printed.push(format!("{err} {err:?}"));
    let err = OpenAiClient::builder().base_url("http://x/v1").api_key("bad\nkey-SECRET").build().unwrap_err();
    printed.push(format!("{err} {err:?}"));
    printed.push(captured.everything());

    for text in &printed {
        assert!(!text.contains("SECRET"), "the key leaked: {text}");
    }
    assert!(printed[0] == "[redacted]" && printed[2].contains("[redacted]") && printed[3].contains("[redacted]"));
    assert!(captured.everything().contains("gen_ai.usage.input_tokens"), "the capture layer saw the spans");
}

#[tokio::test]
async fn environment_configuration() {
    // The only test that touches these variables, so no other test observes the changes.
    const VARS: [&str; 6] = [
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "CATENA_MODEL",
        "CATENA_COMPAT",
        "CATENA_EMBEDDING_MODEL",
        "CATENA_EMBEDDING_DIMENSIONS",
    ];
    for v in VARS {
        std::env::remove_var(v);
    }
    let err = OpenAiClient::from_env().unwrap_err();
    assert!(matches!(&err, Error::Config { setting, .. } if setting == "OPENAI_API_KEY"), "{err:?}");

    let server = TestServer::start(Reply::Answer(Canned::text("from env"))).await;
    std::env::set_var("OPENAI_BASE_URL", &server.base_url);
    let client = OpenAiClient::from_env().unwrap();
    assert_eq!(client.compat(), Compat::Generic);
    assert_eq!(client.default_model(), None);
    let err = client.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap_err();
    match &err {
        Error::Config { setting, hint, .. } => {
            assert_eq!(setting, "CATENA_MODEL");
            assert!(hint.contains("OpenAiBuilder::model"), "{hint}");
        }
        other => panic!("expected Config, got {other:?}"),
    }
    assert_eq!(server.request_count(), 0);

    std::env::set_var("CATENA_MODEL", "env-model");
    std::env::set_var("CATENA_COMPAT", "llama.cpp");
    std::env::set_var("OPENAI_API_KEY", "sk-env");
    let client = OpenAiClient::from_env().unwrap();
    assert_eq!(client.compat(), Compat::LlamaCpp);
    assert_eq!(client.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap().text(), "from env");
    assert_eq!(server.last_body()["model"], "env-model");
    assert_eq!(server.state.requests.lock().unwrap()[0].headers["authorization"], "Bearer sk-env");

    std::env::set_var("CATENA_COMPAT", "bogus");
    assert!(matches!(OpenAiClient::from_env(), Err(Error::Config { setting, .. }) if setting == "CATENA_COMPAT"));
    std::env::remove_var("CATENA_COMPAT");
    std::env::set_var("CATENA_EMBEDDING_DIMENSIONS", "many");
    assert!(
        matches!(OpenAiClient::from_env(), Err(Error::Config { setting, .. }) if setting == "CATENA_EMBEDDING_DIMENSIONS")
    );
    std::env::set_var("CATENA_EMBEDDING_DIMENSIONS", "3");
    std::env::set_var("CATENA_EMBEDDING_MODEL", "env-embed");
    let embedder = OpenAiClient::from_env().unwrap().default_embedder().unwrap();
    assert_eq!(embedder.embed_query("hey").await.unwrap(), vec![3.0, 0.0, 0.5]);

    std::env::set_var("OPENAI_BASE_URL", "https://api.openai.com/v1/");
    std::env::remove_var("OPENAI_API_KEY");
    let err = OpenAiClient::from_env().unwrap_err();
    assert!(err.to_string().contains("OPENAI_API_KEY"), "{err}");
    for v in VARS {
        std::env::remove_var(v);
    }
}

// ----------------------------------------------------------------------------------------------------------------
// Constraints and structured generation
// ----------------------------------------------------------------------------------------------------------------

/// A schema shaped like what `schemars` derives: `$schema`, a `$ref` with a description, an `Option` field that is
/// not required, a `oneOf` of constants, a non-standard `format`, a `default`.
fn verdict_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Verdict",
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "color": {"$ref": "#/$defs/Color", "description": "The sky's color"},
            "note": {"type": ["string", "null"], "default": null},
            "count": {"type": "integer", "format": "uint32", "minimum": 0}
        },
        "required": ["ok", "color"],
        "$defs": {"Color": {"oneOf": [
            {"const": "red", "type": "string", "description": "Warm"},
            {"const": "blue", "type": "string"}
        ]}}
    })
}

/// The strict-mode form of [`verdict_schema`]: closed, every property required, annotations strict mode rejects
/// dropped, the `oneOf` of distinct constants as `anyOf`.
fn verdict_schema_strict() -> Value {
    let mut strict = json!({
        "title": "Verdict",
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "color": {"$ref": "#/$defs/Color"},
            "note": {"type": ["string", "null"]},
            "count": {"type": "integer", "minimum": 0}
        },
        "additionalProperties": false,
        "$defs": {"Color": {"anyOf": [
            {"const": "red", "type": "string", "description": "Warm"},
            {"const": "blue", "type": "string"}
        ]}}
    });
    // Every property, in the order the client's JSON map lists them.
    let names: Vec<Value> = strict["properties"].as_object().unwrap().keys().cloned().map(Value::String).collect();
    strict["required"] = Value::Array(names);
    strict
}

const LARK: &str = "start: \"yes\" | \"no\"";

fn all_constraints() -> Vec<(&'static str, Constraint)> {
    vec![
        ("json_schema", Constraint::JsonSchema(verdict_schema())),
        ("regex", Constraint::Regex("[A-Z]{2}-[0-9]{3}".into())),
        ("choice", Constraint::choice(["yes", "no \"way\"", "naïve"])),
        ("grammar", Constraint::Grammar(LARK.into())),
        ("gbnf", Constraint::Gbnf("root ::= (\"yes\" | \"no\") [0-9]".into())),
    ]
}

/// What each family must put in the body for each kind (`None`: rejected before sending).
fn expected_fields(compat: Compat, kind: &str) -> Option<Value> {
    let schema_format = |strict: Option<bool>, schema: Value| {
        let mut json_schema = json!({"name": "Verdict", "schema": schema});
        if let Some(strict) = strict {
            json_schema["strict"] = json!(strict);
        }
        json!({"response_format": {"type": "json_schema", "json_schema": json_schema}})
    };
    match (compat, kind) {
        (Compat::OpenAi, "json_schema") => Some(schema_format(Some(true), verdict_schema_strict())),
        (Compat::Vllm | Compat::Ollama, "json_schema") => Some(schema_format(None, verdict_schema())),
        (Compat::Vllm, "regex") => Some(json!({"structured_outputs": {"regex": "[A-Z]{2}-[0-9]{3}"}})),
        (Compat::Vllm, "choice") => Some(json!({"structured_outputs": {"choice": ["yes", "no \"way\"", "naïve"]}})),
        (Compat::Vllm, "gbnf") => Some(json!({"structured_outputs": {"grammar": "root ::= (\"yes\" | \"no\") [0-9]"}})),
        (Compat::LlamaCpp, "json_schema") => {
            Some(json!({"response_format": {"type": "json_object", "schema": verdict_schema()}}))
        }
        (Compat::LlamaCpp, "regex") => Some(json!({"grammar": "root ::= [A-Z]{2} \"-\" [0-9]{3}"})),
        (Compat::LlamaCpp, "choice") => {
            Some(json!({"grammar": "root ::= \"yes\" | \"no \\x22way\\x22\" | \"na\\xEFve\""}))
        }
        (Compat::LlamaCpp, "gbnf") => Some(json!({"grammar": "root ::= (\"yes\" | \"no\") [0-9]"})),
        _ => None,
    }
}

#[tokio::test]
async fn each_family_gets_constraints_in_its_own_dialect() {
    let server = TestServer::start(Reply::Answer(Canned::text("yes"))).await;
    let prompt = ChatRequest::new(vec![Message::user("Q")]);
    for compat in [Compat::OpenAi, Compat::Vllm, Compat::Ollama, Compat::LlamaCpp, Compat::Generic] {
        let client = server.client(compat).api_key("k").build().unwrap();
        let support = client.capabilities().constraints;
        for (kind, constraint) in all_constraints() {
            let request = prompt.clone().with_constraint(constraint.clone());
            let before = server.request_count();
            match expected_fields(compat, kind) {
                Some(fields) => {
                    assert!(support.strategy_for(&constraint).is_some(), "{compat} {kind}: capabilities");
                    client.chat(request.clone()).await.unwrap_or_else(|e| panic!("{compat} {kind}: {e}"));
                    let mut expected = json!({"model": "gpt-test", "messages": [{"role": "user", "content": "Q"}],
                        "stream": false});
                    for (k, v) in fields.as_object().unwrap() {
                        expected[k] = v.clone();
                    }
                    assert_eq!(server.last_body(), expected, "{compat} {kind}");
                    // Streams carry the same constraint.
                    collect_stream(client.chat_stream(request).await.unwrap()).await.unwrap();
                    let streamed = server.last_body();
                    for (k, v) in fields.as_object().unwrap() {
                        assert_eq!(&streamed[k], v, "{compat} {kind} streamed");
                    }
                    assert_eq!(server.request_count(), before + 2);
                }
                None => {
                    assert_eq!(support.strategy_for(&constraint), None, "{compat} {kind}: capabilities");
                    for err in [
                        client.chat(request.clone()).await.unwrap_err(),
                        client.chat_stream(request).await.err().unwrap(),
                    ] {
                        match &err {
                            Error::Unsupported { capability, .. } => {
                                assert!(capability.contains(kind), "{compat} {kind}: {capability}")
                            }
                            other => panic!("{compat} {kind}: expected Unsupported, got {other:?}"),
                        }
                    }
                    assert_eq!(server.request_count(), before, "{compat} {kind}: nothing may be sent");
                }
            }
        }
    }
    // The strategies the profiles declare.
    let caps = |c: Compat| c.capabilities().constraints;
    assert_eq!(caps(Compat::OpenAi).json_schema, Some(Strategy::Native));
    assert_eq!(caps(Compat::Vllm).regex, Some(Strategy::Native));
    assert_eq!(caps(Compat::LlamaCpp).json_schema, Some(Strategy::Native));
    assert_eq!(caps(Compat::LlamaCpp).choice, Some(Strategy::Grammar));
    assert_eq!(caps(Compat::LlamaCpp).gbnf, Some(Strategy::Grammar));
    assert_eq!(
        caps(Compat::Generic),
        catena_core::ConstraintSupport {
            json_object: Some(Strategy::Native),
            ..catena_core::ConstraintSupport::none()
        }
    );
}

#[tokio::test]
async fn openai_sends_schemas_without_a_strict_form_unenforced() {
    let server = TestServer::start(Reply::Answer(Canned::text("{}"))).await;
    let client = server.client(Compat::OpenAi).api_key("k").build().unwrap();
    let map = json!({"type": "object", "additionalProperties": {"type": "integer"}});
    let list = json!({"title": "Names", "type": "array", "items": {"type": "string"}});
    let short = json!({"type": "object", "properties": {"s": {"type": "string", "maxLength": 3}}});
    for (schema, name) in [(map, "response"), (list, "Names"), (short, "response")] {
        let request =
            ChatRequest::new(vec![Message::user("Q")]).with_constraint(Constraint::JsonSchema(schema.clone()));
        client.chat(request).await.unwrap();
        assert_eq!(
            server.last_body()["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": false}})
        );
    }
}

#[tokio::test]
async fn invalid_or_conflicting_constraints_are_refused_before_sending() {
    let server = TestServer::start(Reply::Answer(Canned::text("yes"))).await;
    let prompt = ChatRequest::new(vec![Message::user("Q")]);
    let llama = server.client(Compat::LlamaCpp).build().unwrap();
    let vllm = server.client(Compat::Vllm).build().unwrap();
    let invalid = |e: &Error, what: &str| matches!(e, Error::InvalidInput(m) if m.contains(what));
    for client in [&llama, &vllm] {
        let err = client.chat(prompt.clone().with_constraint(Constraint::Choice(vec![]))).await.unwrap_err();
        assert!(invalid(&err, "at least one option"), "{err}");
        let err = client.chat(prompt.clone().with_constraint(Constraint::Regex("[0-9".into()))).await.unwrap_err();
        assert!(invalid(&err, "regex"), "{err}");
        // A GBNF grammar llama.cpp's parser rejects (it would crash llama-cpp-python's server).
        let err = client.chat(prompt.clone().with_constraint(Constraint::Gbnf("root ::= answer".into()))).await;
        assert!(invalid(&err.unwrap_err(), "never defined"));
        let err = client.chat(prompt.clone().with_constraint(Constraint::JsonSchema(json!(false)))).await;
        assert!(invalid(&err.unwrap_err(), "false"));
    }
    // A regex llama.cpp's grammars cannot express exactly.
    let err = llama.chat(prompt.clone().with_constraint(Constraint::Regex(r"\bword\b".into()))).await.unwrap_err();
    assert!(matches!(&err, Error::Unsupported { capability, .. } if capability.contains("regex")), "{err}");
    // A constraint next to a forced tool call (the answer would be the call, not constrained text).
    let choice = prompt.clone().with_constraint(Constraint::choice(["yes", "no"]));
    let forced = choice.clone().with_tool(weather_tool()).with_tool_choice(ToolChoice::Tool("weather".into()));
    assert!(invalid(&llama.chat(forced.clone()).await.unwrap_err(), "forced tool choice"));
    assert!(invalid(&vllm.chat(forced).await.unwrap_err(), "forced tool choice"));
    // Capabilities that claim more than the wire dialect can say: refused, never dropped silently.
    let overclaiming = server
        .client(Compat::Generic)
        .capabilities(catena_core::Capabilities {
            constraints: catena_core::ConstraintSupport::all(Strategy::Native),
            ..Compat::Generic.capabilities()
        })
        .build()
        .unwrap();
    let err = overclaiming.chat(choice).await.unwrap_err();
    assert!(matches!(&err, Error::Unsupported { capability, .. } if capability.contains("choice")), "{err}");
    assert_eq!(server.request_count(), 0, "nothing may be sent");
}

#[derive(Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
enum SkyColor {
    Blue,
    Grey,
}

#[derive(Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
struct Sky {
    color: SkyColor,
    cloudy: bool,
}

/// A canned answer with its own usage counts.
fn canned(content: &'static str, usage: (u64, u64)) -> Canned {
    Canned { usage, ..Canned::text(content) }
}

#[tokio::test]
async fn generate_uses_the_native_feature_where_there_is_one() {
    let server = TestServer::start(Reply::Answer(canned(r#"{"color": "grey", "cloudy": true}"#, (30, 12)))).await;
    for compat in [Compat::OpenAi, Compat::Vllm, Compat::Ollama, Compat::LlamaCpp] {
        let client = server.client(compat).api_key("k").build().unwrap();
        let before = server.request_count();
        let sky = client.generate::<Sky>("What is the sky like?").await.unwrap();
        assert_eq!(sky.value, Sky { color: SkyColor::Grey, cloudy: true }, "{compat}");
        assert_eq!((sky.strategy, sky.attempts), (Strategy::Native, 1), "{compat}");
        assert_eq!(
            sky.usage,
            Usage { input_tokens: 30, output_tokens: 12, total_tokens: 42, cached_input_tokens: None }
        );
        assert_eq!(server.request_count(), before + 1);
        let body = server.last_body();
        // The prompt goes as it is (no format instruction), the schema in the family's form.
        assert_eq!(body["messages"], json!([{"role": "user", "content": "What is the sky like?"}]), "{compat}");
        let schema = Constraint::json_schema_for::<Sky>();
        let Constraint::JsonSchema(schema) = schema else { unreachable!() };
        match compat {
            Compat::LlamaCpp => assert_eq!(body["response_format"], json!({"type": "json_object", "schema": schema})),
            Compat::OpenAi => {
                assert_eq!(body["response_format"]["json_schema"]["strict"], true);
                assert_eq!(body["response_format"]["json_schema"]["name"], "Sky");
                assert_eq!(body["response_format"]["json_schema"]["schema"]["additionalProperties"], false);
            }
            _ => assert_eq!(
                body["response_format"],
                json!({"type": "json_schema", "json_schema": {"name": "Sky", "schema": schema}})
            ),
        }
    }
    // Text constraints on vLLM.
    let vllm = server.client(Compat::Vllm).build().unwrap();
    server.set_reply(Reply::Answer(Canned::text("blue")));
    let done = vllm.constrained("Sky?", Constraint::choice(["blue", "grey"]), RepairPolicy::Forbid).await.unwrap();
    assert_eq!((done.text.as_str(), done.strategy, done.attempts), ("blue", Strategy::Native, 1));
    assert_eq!(server.last_body()["structured_outputs"], json!({"choice": ["blue", "grey"]}));
}

#[tokio::test]
async fn generic_servers_get_validate_and_repair() {
    // First an answer that is not JSON, then one that breaks the schema, then a valid one.
    for (bad, reason) in
        [("Sure! The sky is grey.", "not valid JSON"), (r#"{"color": "green", "cloudy": true}"#, "/color")]
    {
        let server = TestServer::start(Reply::Sequence(vec![
            canned(bad, (40, 7)),
            canned(r#"{"color": "blue", "cloudy": false}"#, (60, 11)),
        ]))
        .await;
        let client = server.client(Compat::Generic).build().unwrap();
        let sky = client.generate::<Sky>("What is the sky like?").await.unwrap();
        assert_eq!(sky.value, Sky { color: SkyColor::Blue, cloudy: false });
        assert_eq!((sky.strategy, sky.attempts), (Strategy::ValidateAndRepair, 2));
        assert_eq!(
            sky.usage,
            Usage { input_tokens: 100, output_tokens: 18, total_tokens: 118, cached_input_tokens: None }
        );
        let bodies = server.bodies();
        assert_eq!(bodies.len(), 2);
        for body in &bodies {
            // Generic servers take json_object, which the repair loop asks for; no schema goes on the wire.
            assert_eq!(body["response_format"], json!({"type": "json_object"}));
            assert!(body.get("structured_outputs").is_none() && body.get("grammar").is_none());
            assert_eq!(body["messages"][0]["role"], "system");
            assert!(body["messages"][0]["content"].as_str().unwrap().contains("JSON Schema"));
        }
        let messages = bodies[1]["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert_eq!(messages[1], json!({"role": "user", "content": "What is the sky like?"}));
        assert_eq!(messages[2], json!({"role": "assistant", "content": bad}));
        assert_eq!(messages[3]["role"], "user");
        let repair = messages[3]["content"].as_str().unwrap();
        assert!(repair.contains("invalid") && repair.contains(reason), "{repair}");
    }
}

#[tokio::test]
async fn forbidding_the_fallback_on_a_generic_server_sends_nothing() {
    let server = TestServer::start(Reply::Answer(Canned::text("{}"))).await;
    let client = server.client(Compat::Generic).build().unwrap();
    let err = client.generate_with::<Sky>("Sky?", RepairPolicy::Forbid).await.unwrap_err();
    assert!(matches!(&err, Error::Unsupported { capability, .. } if capability.contains("json_schema")), "{err}");
    let err = client.constrained("Sky?", Constraint::Regex("[a-z]+".into()), RepairPolicy::Forbid).await.unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn no_valid_attempt_is_invalid_output_with_the_raw_text() {
    // A generic server that never complies: three attempts (the default allows two repairs).
    let server = TestServer::start(Reply::Answer(canned("I cannot answer in JSON.", (10, 5)))).await;
    let client = server.client(Compat::Generic).build().unwrap();
    match client.generate::<Sky>("Sky?").await.unwrap_err() {
        Error::InvalidOutput { raw, reason, attempts, strategy } => {
            assert_eq!(raw, "I cannot answer in JSON.");
            assert!(reason.contains("not valid JSON"), "{reason}");
            assert_eq!((attempts, strategy), (3, Strategy::ValidateAndRepair));
        }
        other => panic!("expected InvalidOutput, got {other:?}"),
    }
    assert_eq!(server.request_count(), 3);
    // A server that claims to enforce the schema but does not: caught by the final validation too.
    let vllm = server.client(Compat::Vllm).build().unwrap();
    server.set_reply(Reply::Answer(Canned { finish_reason: "length", ..canned(r#"{"color": "bl"#, (10, 64)) }));
    match vllm.generate_with::<Sky>("Sky?", RepairPolicy::Forbid).await.unwrap_err() {
        Error::InvalidOutput { raw, reason, attempts, strategy } => {
            assert_eq!(raw, r#"{"color": "bl"#);
            assert!(reason.contains("max_tokens"), "a cut answer names the token limit: {reason}");
            assert_eq!((attempts, strategy), (1, Strategy::Native));
        }
        other => panic!("expected InvalidOutput, got {other:?}"),
    }
    assert_eq!(server.request_count(), 4);
}

/// Every attempt of the validate-and-repair loop is a span saying whether it was valid and why not; the parent
/// span carries the strategy, the number of attempts and the summed usage.
#[tokio::test]
async fn structured_attempts_are_traced() {
    let (captured, _guard) = capture::start();
    let server = TestServer::start(Reply::Sequence(vec![
        canned("not json", (40, 7)),
        canned(r#"{"color": "blue", "cloudy": false}"#, (60, 11)),
    ]))
    .await;
    let client = server.client(Compat::Generic).build().unwrap();
    let sky = client.generate::<Sky>("Sky?").await.unwrap();
    assert_eq!(sky.attempts, 2);
    let c = &captured;
    assert_eq!(c.value("catena.structured.attempt", "catena.structured.attempt"), ["1", "2"], "{}", c.everything());
    assert_eq!(c.value("catena.structured.attempt", "catena.structured.valid"), ["false", "true"]);
    let errors = c.value("catena.structured.attempt", "catena.structured.error");
    assert!(errors.len() == 1 && errors[0].contains("not valid JSON"), "{errors:?}");
    assert_eq!(c.value("catena.structured", "catena.structured.strategy"), ["validate_and_repair"]);
    assert_eq!(c.value("catena.structured", "catena.structured.attempts"), ["2"]);
    assert_eq!(c.value("catena.structured", "gen_ai.usage.input_tokens"), ["100"]);
    assert_eq!(c.value("catena.structured", "gen_ai.usage.output_tokens"), ["18"]);
    // Each attempt's model call is a child span of its attempt under the telemetry layer.
    let traced = client.layer(TelemetryLayer::new());
    server.set_reply(Reply::Sequence(vec![
        canned("not json", (1, 1)),
        canned(r#"{"color": "grey", "cloudy": true}"#, (1, 1)),
    ]));
    traced.generate::<Sky>("Sky?").await.unwrap();
    assert_eq!(c.value("gen_ai", "gen_ai.operation.name").len(), 2);
}

/// `json_object` is asked for only when the schema wants an object: a list is valid JSON but not an object.
#[tokio::test]
async fn validate_and_repair_asks_for_json_object_only_for_objects() {
    let server = TestServer::start(Reply::Answer(canned(r#"["a", "b"]"#, (5, 5)))).await;
    let client = server.client(Compat::Generic).build().unwrap();
    let list = client.generate::<Vec<String>>("Two letters?").await.unwrap();
    assert_eq!((list.value, list.attempts), (vec!["a".to_string(), "b".to_string()], 1));
    assert!(server.last_body().get("response_format").is_none(), "{}", server.last_body());
}

/// A backend that supports regexes but cannot express this one (llama.cpp: no GBNF for `\b`) refuses it before
/// sending; with the fallback allowed the call goes on as validate-and-repair, and says so.
#[tokio::test]
async fn a_constraint_the_backend_refuses_falls_back_visibly() {
    let server = TestServer::start(Reply::Answer(canned("foo", (5, 1)))).await;
    let client = server.client(Compat::LlamaCpp).build().unwrap();
    let word = Constraint::Regex(r"\bfoo\b".into());
    let err = client.constrained("Say foo.", word.clone(), RepairPolicy::Forbid).await.unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert_eq!(server.request_count(), 0);
    let done = client.constrained("Say foo.", word, RepairPolicy::default()).await.unwrap();
    assert_eq!((done.text.as_str(), done.strategy, done.attempts), ("foo", Strategy::ValidateAndRepair, 1));
    assert!(done.validated);
    let body = server.last_body();
    assert!(body.get("grammar").is_none(), "{body}");
    assert!(body["messages"][0]["content"].as_str().unwrap().contains("regular expression"), "{body}");
}
