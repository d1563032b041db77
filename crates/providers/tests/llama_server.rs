//! End-to-end tests of [`OpenAiClient`] (profile [`Compat::LlamaCpp`]) against the real llama-cpp-python server,
//! `python3 -m llama_cpp.server`, serving a tiny random-weight llama GGUF written by `scripts/tiny_gguf.py`.
//! Nothing is mocked: one real server per test binary on 127.0.0.1 (see `support`), shared by all tests.
//! Install the peer with `bash .ci/setup-llama-server.sh`; without it these tests fail, naming that script.
//!
//! # What the server does on the wire (llama-cpp-python 0.3.36, measured with curl and Python)
//!
//! Started as `python3 -m llama_cpp.server --model tiny.gguf --model_alias tiny --host 127.0.0.1 --port P
//! --interrupt_requests false --embedding true` (no `--chat_format`: the GGUF's ChatML jinja template is used).
//! Ready (`GET /v1/models` answers) about 2.5 s after spawning.
//!
//! Chat:
//! - Non-streamed: `{"id":"chatcmpl-<uuid>","object":"chat.completion","created":N,"model":M,"choices":[{"index":0,
//!   "message":{"content":"...","role":"assistant"},"logprobs":null,"finish_reason":"length"}],"usage":{
//!   "prompt_tokens":14,"completion_tokens":12,"total_tokens":26}}`. `model` echoes the request's `model` (any
//!   name is accepted; unknown names use the loaded model); without one it is the model *path*, not the alias.
//! - `n` is ignored (one choice); unknown fields (`stream_options`, `parallel_tool_calls`) are ignored.
//! - `max_tokens` absent or <= 0 means unlimited (up to n_ctx). `max_completion_tokens` is ignored, so a client
//!   that sends only that field gets unlimited generation.
//! - `stop` (string or list) works: finish_reason `stop`, the stop text is cut; `completion_tokens` still counts
//!   the tokens of the stop sequence.
//! - `seed` with temperature > 0 reproduces the same text; temperature 0 is greedy.
//! - Content must be a plain string: an array of text parts fails with HTTP 500 (user message: jinja error
//!   `can only concatenate str (not "list") to str`; system/assistant messages: validation error).
//! - An assistant message with `"content": null` next to `tool_calls` is rejected (HTTP 500, validation error);
//!   `"content": ""` or no `content` key works. A `tool` message needs `tool_call_id`.
//!
//! Errors: every error is HTTP 500 `{"error":{"message":"...","type":"internal_server_error","param":null,
//! "code":null}}`, request validation errors included (they are not retryable although 5xx). A malformed JSON
//! body gives 500 `text/plain` "Internal Server Error". **An invalid GBNF `grammar` kills the server process**
//! (llama.cpp prints `parse: error parsing grammar` and returns no sampler, the connection drops), and `{m,n}` with
//! `n < m` makes its parser loop: `Gbnf::parse` refuses such grammars, and the checker is compared with llama.cpp's
//! own parser below. A streamed request whose prompt fails to render answers 200 `text/event-stream` with an empty
//! body (no `[DONE]`).
//!
//! Streaming (SSE): `data: {json}\n\n` (LF only, no `event:` or `id:` lines), closed by `data: [DONE]\n\n`;
//! sse-starlette sends `: ping - <datetime>` comments every 15 s during long generations. Text streams start
//! with `delta: {"role":"assistant"}`, then one chunk per token `delta: {"content":"..."}` (possibly `""`), then
//! `delta: {}` with the finish_reason. **No usage chunk**, even with `stream_options.include_usage`. Folded
//! text equals the non-streamed text (checked on 18 prompt/temperature/seed combinations). With the default
//! `--interrupt_requests true`, a request arriving during a stream ends that stream with `[DONE]` and no
//! finish_reason, hence `false` here, where requests then run one after the other.
//!
//! Tool calls (GGUF template): a *named* `tool_choice` `{"type":"function","function":{"name":N}}` constrains the
//! output with a grammar built from the tool's `parameters` schema (`$ref`/`$defs`, `enum`, `oneOf`+`const` work;
//! integer `minimum`/`maximum` are not enforced): `"message":{"content":null,"tool_calls":[{"id":
//! "call__0_<name>_cmpl-<uuid>","type":"function","function":{"name":N,"arguments":"{ \"city\": \"Lima\", ...}"}}],
//! "role":"assistant","function_call":{...the same...}}`, finish_reason `tool_calls`. `tool_choice` `"required"`,
//! `"auto"`, `"none"` or absent are all ignored (plain text; a template that does not mention tools does not
//! even show them to the model). Streamed tool calls repeat `id` and `name` in every fragment, next to a legacy
//! `function_call` delta; the last chunk has an all-null delta and finish_reason `tool_calls`. With
//! `--chat_format chatml-function-calling`, named tools work the same, `"auto"` lets the model choose (its
//! `function_call.name` then ends with a stray `:`; `tool_calls` is right) and `"required"` is an HTTP 500.
//!
//! Structured output: `response_format {"type":"json_object"}` alone constrains to JSON but a weak model may run
//! to max_tokens inside a string; `{"type":"json_object","schema":{...}}` constrains to the schema (finish
//! `stop`); `{"type":"json_schema",...}` is an HTTP 500 validation error ("Input should be 'text' or
//! 'json_object'"). A top-level `grammar` (GBNF) field works, streamed or not. The converter
//! (`llama_cpp.llama_grammar`) honours `enum`, `const`, `$ref`, `anyOf`/`oneOf` (both as a union), `minItems`/
//! `maxItems`, string `minLength`/`maxLength` and `pattern`, closes objects without `additionalProperties`, bounds
//! integers to 16 digits and ignores `minimum`/`maximum` (`catena_constraint::structured` validates answers anyway).
//! `ChatRequest::constraint` maps onto these: JSON Schema -> `json_object` + schema, GBNF -> `grammar`, choice
//! and regex -> a GBNF grammar with exactly their language (tests at the end of this file).
//!
//! Embeddings (`--embedding true`; chat answers are unchanged): `{"object":"list","data":[{"object":"embedding",
//! "embedding":[128 floats],"index":0},...],"model":M,"usage":{"prompt_tokens":6,"total_tokens":6}}`, input order
//! kept, dimension = the GGUF's `llama.embedding_length`, mean pooling (GGUF `llama.pooling_type`), not
//! normalised. `input: []` and `input: [""]` fail with HTTP 500 "llama_decode returned -1"; `encoding_format` and
//! `dimensions` are ignored. Without `--embedding true`: 500 "Llama model must be created with embedding=True".
//!
//! The tiny model never ends an answer by itself (its output weights for control tokens are zero), so every
//! unconstrained answer stops at `max_tokens` or a stop sequence, and it never emits partial UTF-8.

use catena_test_support::llama as support;

use catena_core::{
    collect_stream, ChatRequest, Constraint, Embedder, Error, FinishReason, Llm, Message, ToolCall, ToolChoice,
    ToolDefinition,
};
use catena_providers::openai::{Compat, Gbnf, OpenAiClient};
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

/// A client for the shared server, with the llama.cpp profile.
fn client() -> OpenAiClient {
    client_for(support::shared_server())
}

/// A client for `server`, with the llama.cpp profile.
fn client_for(server: &support::LlamaServer) -> OpenAiClient {
    server.client()
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest::new(vec![Message::system("You are terse."), Message::user(text)])
}

#[tokio::test]
async fn chat_returns_text_usage_and_length() {
    let client = client();
    let response =
        client.chat(ask("Tell me about ownership.").with_temperature(0.0).with_max_tokens(16)).await.unwrap();
    assert!(!response.text().trim().is_empty(), "{response}");
    assert_eq!(response.message.role, catena_core::Role::Assistant);
    assert!(response.message.tool_calls.is_empty());
    // The tiny model never stops by itself: the token limit ends every unconstrained answer.
    assert_eq!(response.finish_reason, Some(FinishReason::Length), "{response}");
    let usage = response.usage.expect("non-streamed answers carry usage");
    assert_eq!(usage.output_tokens, 16, "{usage:?}");
    assert!(usage.input_tokens > 0);
    assert_eq!(usage.total_tokens, usage.input_tokens + usage.output_tokens);
    assert_eq!(response.model, support::TINY_ALIAS, "the server echoes the requested model");
    assert!(response.raw["id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-")), "{}", response.raw);

    // A longer prompt is counted as more input tokens.
    let long = client
        .chat(ask(&"Tell me about ownership. ".repeat(4)).with_temperature(0.0).with_max_tokens(1))
        .await
        .unwrap();
    assert!(long.usage.unwrap().input_tokens > usage.input_tokens + 10, "{long:?}");
    assert_eq!(long.usage.unwrap().output_tokens, 1);
}

#[tokio::test]
async fn stream_folds_to_the_same_answer_as_chat() {
    let client = client();
    for (prompt, temperature, seed) in
        [("Explain borrowing.", 0.0, None), ("What is a trait?", 0.8, Some(42)), ("ünïcødé ☃ 日本語", 1.0, Some(7))]
    {
        let mut request = ask(prompt).with_temperature(temperature).with_max_tokens(24);
        if let Some(seed) = seed {
            request = request.with_seed(seed);
        }
        let chat = client.chat(request.clone()).await.unwrap();
        let streamed = collect_stream(client.chat_stream(request).await.unwrap()).await.unwrap();
        assert_eq!(streamed.text(), chat.text(), "prompt {prompt:?}");
        assert_eq!(streamed.finish_reason, chat.finish_reason);
        assert_eq!(streamed.finish_reason, Some(FinishReason::Length));
        assert_eq!(streamed.model, chat.model);
        assert!(streamed.message.tool_calls.is_empty());
        // llama-cpp-python sends no usage in streams; the profile says so instead of inventing numbers.
        assert!(!client.capabilities().streaming_usage);
        assert_eq!(streamed.usage, None);
        // It really streamed: a role chunk, one chunk per token and a final chunk.
        let chunks = streamed.raw.as_array().expect("raw chunks").len();
        assert!(chunks >= 24, "only {chunks} chunks for 24 tokens");
    }
}

#[tokio::test]
async fn seed_makes_sampling_reproducible() {
    let client = client();
    let request = |seed| ask("Name a crate.").with_temperature(5.0).with_max_tokens(12).with_seed(seed);
    let first = client.chat(request(1)).await.unwrap().text();
    assert_eq!(client.chat(request(1)).await.unwrap().text(), first, "same seed, same text");
    let mut others = Vec::new();
    for seed in 2..=4 {
        others.push(client.chat(request(seed)).await.unwrap().text());
    }
    assert!(others.iter().any(|t| *t != first), "four seeds gave the same text {first:?}: the seed is ignored");
}

#[tokio::test]
async fn max_tokens_one_gives_length() {
    let response = client().chat(ask("Hi").with_max_tokens(1)).await.unwrap();
    assert_eq!(response.finish_reason, Some(FinishReason::Length));
    assert_eq!(response.usage.unwrap().output_tokens, 1);
    assert!(!response.text().is_empty());
}

#[tokio::test]
async fn stop_sequence_cuts_the_answer() {
    let client = client();
    let request = ask("Write some Rust.").with_temperature(0.0).with_max_tokens(32);
    let full = client.chat(request.clone()).await.unwrap().text();
    // A stop string taken from the middle of the greedy answer: the same greedy run must stop right before its
    // first occurrence.
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 20, "answer too short to pick a stop sequence: {full:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let expected = &full[..full.find(&stop).expect("the stop string comes from the text")];

    let cut = client.chat(request.clone().with_stop(stop.clone())).await.unwrap();
    assert_eq!(cut.text(), expected, "stop {stop:?} in {full:?}");
    assert_eq!(cut.finish_reason, Some(FinishReason::Stop));

    let streamed = collect_stream(client.chat_stream(request.with_stop(stop.clone())).await.unwrap()).await.unwrap();
    assert_eq!(streamed.text(), expected, "streamed, stop {stop:?}");
    assert_eq!(streamed.finish_reason, Some(FinishReason::Stop));
}

#[derive(Debug, Deserialize, JsonSchema, PartialEq)]
enum City {
    Oslo,
    Paris,
    Lima,
}

#[derive(Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Unit {
    Celsius,
    Fahrenheit,
}

/// Arguments of the test tool. Enums and booleans only: the server's grammar does not bound integers or string
/// lengths, and a random model could fill a string until max_tokens.
#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)]
struct WeatherArgs {
    city: City,
    unit: Unit,
    with_forecast: bool,
}

fn weather_tool() -> ToolDefinition {
    ToolDefinition::for_type::<WeatherArgs>("get_weather", "Current weather in a city")
}

fn weather_request() -> ChatRequest {
    ask("What is the weather in Oslo?")
        .with_tool(weather_tool())
        .with_tool_choice(ToolChoice::Tool("get_weather".into()))
        .with_temperature(0.0)
        .with_max_tokens(128)
}

fn check_weather_call(call: &ToolCall) {
    assert_eq!(call.name, "get_weather");
    assert!(!call.id.is_empty());
    // Valid against the schema: the enums and the boolean deserialize, and no other property is present.
    call.parse_arguments::<WeatherArgs>().unwrap_or_else(|e| panic!("{e}: {}", call.arguments));
    let value: Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(value.as_object().map(|o| o.len()), Some(3), "exactly the schema's properties: {value}");
}

#[tokio::test]
async fn forced_tool_call_matches_the_schema() {
    let client = client();
    let response = client.chat(weather_request()).await.unwrap();
    assert_eq!(response.finish_reason, Some(FinishReason::ToolCalls), "{response}");
    assert_eq!(response.message.tool_calls.len(), 1, "{response}");
    assert_eq!(response.text(), "", "the server answers content: null next to tool calls");
    let call = &response.message.tool_calls[0];
    check_weather_call(call);

    // Streamed fragments (id and name repeated in each) fold into the same call.
    let streamed = collect_stream(client.chat_stream(weather_request()).await.unwrap()).await.unwrap();
    assert_eq!(streamed.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(streamed.message.tool_calls.len(), 1, "{streamed}");
    let streamed_call = &streamed.message.tool_calls[0];
    check_weather_call(streamed_call);
    assert_eq!(streamed_call.arguments, call.arguments);

    // The result goes back to the model: the assistant turn carries only tool calls (sent with content "", as
    // this server rejects null) and the tool message answers it by id.
    let mut followup = weather_request();
    followup.tool_choice = None;
    followup.messages.push(response.message.clone());
    followup.messages.push(Message::tool_result(call.id.clone(), "12 degrees, light rain"));
    followup.max_tokens = Some(8);
    let answer = client.chat(followup).await.unwrap();
    assert!(!answer.text().is_empty(), "{answer}");
    assert_eq!(answer.finish_reason, Some(FinishReason::Length));
}

#[tokio::test]
async fn tool_choice_required_is_rejected_before_sending() {
    let request = weather_request().with_tool_choice(ToolChoice::Required);
    // The server would silently answer with text; the client refuses instead.
    let err = client().chat(request.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    // Nothing is sent: a client pointing at a closed port reports the same error, not a transport failure.
    let err = closed_port_client().chat(request).await.unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}

#[derive(Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Color {
    Red,
    Green,
    Blue,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Verdict {
    ok: bool,
    color: Color,
}

#[tokio::test]
async fn json_object_with_schema_is_valid_against_it() {
    let client = client();
    let schema = schemars::schema_for!(Verdict).to_value();
    let options = Constraint::JsonSchema(schema);
    let request = ask("Is the sky blue? Answer in JSON.").with_temperature(0.0).with_max_tokens(64);
    let response = client.chat(request.clone().with_constraint(options.clone())).await.unwrap();
    assert_eq!(response.finish_reason, Some(FinishReason::Stop), "{response}");
    serde_json::from_str::<Verdict>(&response.text()).unwrap_or_else(|e| panic!("{e}: {response}"));

    let streamed =
        collect_stream(client.chat_stream(request.with_constraint(options.clone())).await.unwrap()).await.unwrap();
    assert_eq!(streamed.text(), response.text());
    assert_eq!(streamed.finish_reason, Some(FinishReason::Stop));
}

/// Why the llama.cpp dialect sends a JSON Schema as `{"type": "json_object", "schema": ...}`: the server answers
/// OpenAI's `json_schema` form with HTTP 500.
#[tokio::test]
async fn openai_json_schema_form_is_an_error_on_this_server() {
    let server = support::shared_server();
    let schema = schemars::schema_for!(Verdict).to_value();
    let raw = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .header("content-type", "application/json")
        .body(
            json!({
                "model": server.model(),
                "messages": [{"role": "user", "content": "Is the sky blue?"}],
                "max_tokens": 8,
                "response_format": {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}},
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 500);
    let body = raw.text().await.unwrap();
    assert!(body.contains("json_object"), "{body}");
}

#[tokio::test]
async fn embeddings_have_the_model_dimension_and_keep_order() {
    let server = support::shared_server();
    let n_embd = support::gguf_u32(support::tiny_gguf(), "llama.embedding_length") as usize;
    let client = client();
    let embedder = client.discover_embedder(server.model()).await.unwrap();
    assert_eq!(embedder.dimensions(), n_embd, "discovered dimension = the model's n_embd");
    assert_eq!(embedder.model_name(), support::TINY_ALIAS);

    let texts: Vec<String> =
        ["ownership and borrowing", "a completely different topic", "ownership and borrowing", "Cargo.toml"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let vectors = embedder.embed_documents(&texts).await.unwrap();
    assert_eq!(vectors.len(), texts.len());
    assert!(vectors.iter().all(|v| v.len() == n_embd && v.iter().all(|x| x.is_finite())));
    assert_eq!(vectors[0], vectors[2], "same text, same vector");
    assert_ne!(vectors[0], vectors[1]);

    // Order: each vector is the one the text gets on its own, and a reversed batch comes back reversed.
    for (text, vector) in texts.iter().zip(&vectors) {
        let alone = embedder.embed_query(text).await.unwrap();
        assert!(cosine(&alone, vector) > 0.9999, "{text:?}: batch and single embeddings differ");
    }
    let reversed: Vec<String> = texts.iter().rev().cloned().collect();
    let back = embedder.embed_documents(&reversed).await.unwrap();
    for (i, v) in back.iter().rev().enumerate() {
        assert!(cosine(v, &vectors[i]) > 0.9999, "input {i} moved");
    }

    // No request for no input (the server would answer HTTP 500).
    assert!(embedder.embed_documents(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn embedder_with_wrong_dimensions_fails_clearly() {
    let server = support::shared_server();
    let err = client().embedder(server.model(), 7).embed_query("hello").await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    assert!(err.to_string().contains("dimensions"), "{err}");
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// A client whose server port has nothing listening: any request it sends fails with a transport error, so an
/// `Unsupported` error from it proves the request was refused before sending.
fn closed_port_client() -> OpenAiClient {
    let port = support::free_port();
    OpenAiClient::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .compat(Compat::LlamaCpp)
        .model(support::TINY_ALIAS)
        .build()
        .expect("client builds")
}

#[tokio::test]
async fn message_with_several_text_parts_is_accepted() {
    // This server only takes string content; a message built from several text parts must still go through.
    let mut user = Message::user("Tell me about ");
    user.content.push(catena_core::ContentPart::Text { text: "lifetimes.".into() });
    let request = ChatRequest::new(vec![user]).with_temperature(0.0).with_max_tokens(8);
    let joined =
        ChatRequest::new(vec![Message::user("Tell me about lifetimes.")]).with_temperature(0.0).with_max_tokens(8);
    let client = client();
    let response = client.chat(request).await.unwrap();
    assert_eq!(response.text(), client.chat(joined).await.unwrap().text(), "parts are joined without separator");
}

#[tokio::test]
async fn grammar_limits_the_answer_to_its_language() {
    let client = client();
    let yes_no = Constraint::Gbnf(Gbnf::parse(r#"root ::= ("yes" | "no")"#).unwrap().into_string());
    for seed in 1..=6 {
        let request =
            ask("Is the borrow checker your friend?").with_temperature(1.0).with_seed(seed).with_max_tokens(8);
        let response = client.chat(request.clone().with_constraint(yes_no.clone())).await.unwrap();
        assert!(["yes", "no"].contains(&response.text().as_str()), "seed {seed}: {response}");
        // The grammar is complete after one word, so the server ends the answer itself.
        assert_eq!(response.finish_reason, Some(FinishReason::Stop), "seed {seed}");
        let streamed =
            collect_stream(client.chat_stream(request.clone().with_constraint(yes_no.clone())).await.unwrap())
                .await
                .unwrap();
        assert_eq!(streamed.text(), response.text(), "seed {seed}, streamed");
        assert_eq!(streamed.finish_reason, Some(FinishReason::Stop));
        // Without the grammar the same request is the model's usual gibberish, cut by max_tokens.
        let free = client.chat(request).await.unwrap();
        assert!(!["yes", "no"].contains(&free.text().as_str()), "seed {seed}: {free}");
        assert_eq!(free.finish_reason, Some(FinishReason::Length));
    }
}

#[tokio::test]
async fn digit_grammar_gives_only_digits_up_to_max_tokens() {
    let client = client();
    let digits = Constraint::Gbnf(Gbnf::parse("root ::= [0-9]+").unwrap().into_string());
    let request = ask("Count for me.").with_temperature(0.0).with_max_tokens(12);
    let response = client.chat(request.clone().with_constraint(digits.clone())).await.unwrap();
    let text = response.text();
    assert!(!text.is_empty() && text.chars().all(|c| c.is_ascii_digit()), "{response}");
    let usage = response.usage.unwrap();
    match &response.finish_reason {
        // `[0-9]+` never has to end: the token limit ends it...
        Some(FinishReason::Length) => assert_eq!(usage.output_tokens, 12, "{response}"),
        // ...unless the model prefers ending (allowed after one digit) to any digit.
        Some(FinishReason::Stop) => assert!(usage.output_tokens <= 12, "{response}"),
        other => panic!("unexpected finish reason {other:?}: {response}"),
    }
    let streamed =
        collect_stream(client.chat_stream(request.with_constraint(digits.clone())).await.unwrap()).await.unwrap();
    assert_eq!(streamed.text(), text);
    assert_eq!(streamed.finish_reason, response.finish_reason);
}

/// Grammars that llama.cpp's parser rejects, so llama-cpp-python's server would die on them: the client refuses
/// them first, naming the problem. `gbnf_checker_agrees_with_llama_cpp` shows llama.cpp rejects each of them.
const INVALID_GRAMMARS: &[(&str, &str)] = &[
    ("root ::= answer", "`answer` is referenced but never defined"),
    ("answer ::= \"yes\"", "no `root` rule"),
    ("root ::= (\"yes\" | \"no\"", "`(` is never closed"),
    ("root ::= \"yes", "string literal is never closed"),
    ("root ::= [0-9", "character class is never closed"),
    ("root ::= \"a\" )", "`)` without a matching `(`"),
    ("root ::= \"\\q\"", "unknown escape"),
    ("root ::= \"a\"\n| \"b\"", "a line cannot start with `|`"),
    ("root ::= my_rule\nmy_rule ::= \"x\"", "not `_`"),
    ("root ::= root \"a\" | \"b\"", "left-recursive"),
    ("root ::= \"a\"{2001}", "limit of 2000"),
    ("root ::= (\"a\"{0,100}){0,30}", "too many rules"),
    ("root ::= +", "nothing to repeat"),
    ("root ::= <[12]", "expected `>`"),
];

#[tokio::test]
async fn invalid_grammars_are_refused_before_reaching_the_server() {
    for (text, problem) in INVALID_GRAMMARS {
        match Gbnf::parse(*text) {
            Err(Error::InvalidInput(message)) => assert!(message.contains(problem), "{text:?}: {message}"),
            other => panic!("{text:?}: expected InvalidInput, got {other:?}"),
        }
    }
    // `{m,n}` with n < m would not crash llama.cpp's parser but keep it busy for hours.
    assert!(Gbnf::parse(r#"root ::= "a"{3,2}"#).unwrap_err().to_string().contains("below its lower bound"));
    // The shared server is alive and still takes grammars.
    let options = Constraint::Gbnf(Gbnf::parse(r#"root ::= "ok""#).unwrap().into_string());
    let response = client().chat(ask("Say ok").with_max_tokens(4).with_constraint(options.clone())).await.unwrap();
    assert_eq!(response.text(), "ok");
    assert_eq!(support::http_get(support::shared_server().port(), "/v1/models").unwrap().0, 200);
}

/// Asks llama.cpp itself, through llama-cpp-python's bindings, which grammars it accepts: the vocabulary of the
/// tiny model is loaded and `llama_sampler_init_grammar` is called on each grammar read from stdin (a JSON list);
/// it returns no sampler for grammars llama.cpp rejects, which is what crashes the server. Also prints the
/// grammars llama-cpp-python ships and ones it generates from JSON schemas, for the checker to accept.
const LLAMA_CPP_GRAMMAR_ORACLE: &str = r#"
import json, sys
import llama_cpp
from llama_cpp import llama_grammar
llama_cpp.llama_backend_init()
params = llama_cpp.llama_model_default_params()
params.vocab_only = True
model = llama_cpp.llama_model_load_from_file(sys.argv[1].encode(), params)
assert model, "cannot load " + sys.argv[1]
vocab = llama_cpp.llama_model_get_vocab(model)

def accepted(text):
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode("utf-8"), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True

shipped = {name: getattr(llama_grammar, name) for name in dir(llama_grammar) if name.endswith("_GBNF")}
schemas = [json.loads(s) for s in sys.argv[2:]]
for i, schema in enumerate(schemas):
    shipped["schema%d" % i] = llama_grammar.json_schema_to_gbnf(json.dumps(schema))
corpus = json.load(sys.stdin)
print(json.dumps({
    "verdicts": [accepted(g) for g in corpus],
    "shipped": {name: [text, accepted(text)] for name, text in shipped.items()},
}))
"#;

#[derive(Debug, JsonSchema)]
#[allow(dead_code)]
struct Review {
    title: String,
    stars: u8,
    tags: Vec<String>,
    verdict: Option<Verdict>,
}

#[test]
fn gbnf_checker_agrees_with_llama_cpp() {
    support::require_python_modules(&["llama_cpp"]);
    // Grammars both must accept, then the invalid ones above, which both must reject.
    let mut corpus: Vec<String> = [
        r#"root ::= ("yes" | "no")"#,
        "root ::= [0-9]+",
        "# comment\nroot ::= greeting \" \" name # trailing\ngreeting ::= \"hi\" | \"hello\"\nname ::= [A-Z] [a-z]*",
        "root ::= (\n  \"a\"\n  | \"b\"\n)",
        "root ::= \"a\" |\n  \"b\"",
        "root ::= [^\"\\\\] . \"\\x41\\u00e9\\U0001F600\\t\\r\\n\\[\\]\\-\"",
        "root ::= [a-] [\\]-\\x7F] [^] []",
        "root ::= \"é日😀\" [α-ω]",
        "root ::= x? y{2} z{0,} w{0,3} v{ 1 , 2 }\nx ::= \"x\"\ny ::= \"y\"\nz ::= \"z\"\nw ::= \"w\"\nv ::= \"v\"",
        "root ::= <[5]> !<[7]>*",
        "root ::=\r\n  \"crlf\"\r\nother ::= root\r\n",
        "root ::= ",
        "root ::= \"a\"{0,5000}",
        "root ::= (\"a\"{0,30}){0,30}",
        "root ::= \"a\" root | \"b\"",
        "root ::= x root | \"b\"\nx ::= y\ny ::= ",
        "root ::= list\nlist ::= item (\",\" item)*\nitem ::= [a-z]+",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let valid = corpus.len();
    corpus.extend(INVALID_GRAMMARS.iter().map(|(text, _)| text.to_string()));
    // Stricter than llama.cpp by design: a token spelled as text depends on the server's vocabulary (this one
    // happens to know `<|im_end|>`), deep nesting and huge unrolled repetitions could exhaust the server.
    let stricter = [
        "root ::= <|im_end|>".to_string(),
        format!("root ::= {}\"a\"{}", "(".repeat(65), ")".repeat(65)),
        format!("root ::= \"{}\"{{1999}}", "x".repeat(1000)),
    ];
    corpus.extend(stricter.iter().cloned());

    let schemas = [schemars::schema_for!(Review).to_value(), schemars::schema_for!(WeatherArgs).to_value()];
    let mut command = std::process::Command::new(support::python());
    command.arg("-c").arg(LLAMA_CPP_GRAMMAR_ORACLE).arg(support::tiny_gguf());
    command.args(schemas.iter().map(Value::to_string));
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), serde_json::to_string(&corpus).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "oracle failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();

    let verdicts: Vec<bool> = serde_json::from_value(report["verdicts"].clone()).unwrap();
    assert_eq!(verdicts.len(), corpus.len());
    for (i, (text, llama_ok)) in corpus.iter().zip(&verdicts).enumerate() {
        let ours = Gbnf::parse(text.as_str());
        if i < valid {
            assert!(*llama_ok, "llama.cpp rejects {text:?}");
            ours.unwrap_or_else(|e| panic!("{text:?}: {e}"));
        } else if i < valid + INVALID_GRAMMARS.len() {
            assert!(!*llama_ok, "llama.cpp accepts {text:?}");
            assert!(ours.is_err(), "{text:?} was accepted");
        } else {
            assert!(*llama_ok, "llama.cpp rejects {text:?}");
            assert!(ours.is_err(), "{text:?} was accepted");
        }
    }
    let shipped = report["shipped"].as_object().unwrap();
    assert!(shipped.len() >= 9, "{shipped:?}");
    for (name, pair) in shipped {
        let (text, llama_ok) = (pair[0].as_str().unwrap(), pair[1].as_bool().unwrap());
        assert_eq!(Gbnf::parse(text).is_ok(), llama_ok, "{name}: {:?}\n{text}", Gbnf::parse(text).err());
    }
}

#[tokio::test]
async fn interrupted_stream_is_an_error() {
    // llama-cpp-python's default: a request that arrives while a stream runs ends that stream with [DONE] and no
    // finish_reason. A dedicated server, so that the shared one keeps serialising requests.
    let server = support::LlamaServer::start(support::ServerOptions {
        interrupt_requests: true,
        embedding: false,
        ..support::ServerOptions::tiny()
    });
    let client = client_for(&server);
    let long = ask("Tell me everything about Rust.").with_temperature(0.0).with_max_tokens(3000);
    let mut stream = client.chat_stream(long).await.unwrap();
    stream.next().await.expect("a first chunk").expect("the stream starts normally");
    let other = tokio::spawn({
        let client = client.clone();
        async move { client.chat(ask("Hi").with_max_tokens(2)).await }
    });
    let mut received = 0;
    let error = loop {
        match stream.next().await {
            Some(Ok(_)) => received += 1,
            Some(Err(e)) => break e,
            None => panic!("the stream ended normally after {received} chunks"),
        }
    };
    assert!(
        matches!(&error, Error::Decode { message, .. } if message.contains("without a finish_reason")),
        "{error:?}"
    );
    assert!(received < 3000, "{received} chunks: the stream was not interrupted");
    assert!(stream.next().await.is_none());
    let answer = other.await.unwrap().unwrap();
    assert_eq!(answer.finish_reason, Some(FinishReason::Length));
}

// ----------------------------------------------------------------------------------------------------------------
// Constraints (ChatRequest::constraint and catena_constraint::structured) on the real server
// ----------------------------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Mood {
    Calm,
    Stormy,
    Foggy,
}

/// Required fields, an enum, a boolean.
#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Forecast {
    mood: Mood,
    rain: bool,
}

/// An array bounded by minItems/maxItems (llama.cpp's converter honours both).
#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Week {
    #[schemars(length(min = 1, max = 3))]
    moods: Vec<Mood>,
}

/// An integer (llama.cpp's grammar allows at most 16 digits, so an i64 always fits; `minimum`/`maximum` would not
/// be enforced by llama-cpp-python 0.3.36), a string bounded by maxLength, an optional nested object.
#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Station {
    id: i64,
    #[schemars(length(max = 6))]
    code: String,
    last: Option<Forecast>,
}

/// Generates `T` natively (json_object + schema) with the fallback forbidden, for several seeds, and checks the
/// text against `T`'s schema independently of the driver.
async fn generate_natively<T: JsonSchema + serde::de::DeserializeOwned + Send + std::fmt::Debug>() {
    use catena_constraint::structured::{LlmStructuredExt, RepairPolicy};
    let client = client();
    let validator = catena_constraint::Validator::new(&catena_core::Constraint::json_schema_for::<T>()).unwrap();
    for seed in 1..=4 {
        let request = ask("Describe it in JSON.").with_temperature(1.0).with_seed(seed).with_max_tokens(400);
        let out = client
            .generate_with::<T>(request, RepairPolicy::Forbid)
            .await
            .unwrap_or_else(|e| panic!("{} seed {seed}: {e}", std::any::type_name::<T>()));
        assert_eq!(out.strategy, catena_core::Strategy::Native);
        assert_eq!(out.attempts, 1);
        validator.check(&out.text).unwrap_or_else(|e| panic!("seed {seed}: {e}: {}", out.text));
        assert!(out.usage.output_tokens > 0 && out.usage.output_tokens < 400, "{:?}", out.usage);
    }
}

#[tokio::test]
async fn json_schema_constraints_are_enforced_by_the_server() {
    assert_eq!(client().capabilities().constraints.json_schema, Some(catena_core::Strategy::Native));
    generate_natively::<Forecast>().await;
    generate_natively::<Week>().await;
    generate_natively::<Station>().await;
}

#[tokio::test]
async fn choice_constraint_gives_one_of_the_options() {
    use catena_constraint::structured::{LlmStructuredExt, RepairPolicy};
    let client = client();
    let options = ["yes", "no", "no way", "naïve \"quoted\" ☃"];
    let mut seen = std::collections::HashSet::new();
    for seed in 1..=8 {
        let request = ask("Is Rust fun?").with_temperature(1.0).with_seed(seed).with_max_tokens(32);
        let done = client
            .constrained(request.clone(), catena_core::Constraint::choice(options), RepairPolicy::Forbid)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(options.contains(&done.text.as_str()), "seed {seed}: {:?}", done.text);
        assert_eq!((done.strategy, done.attempts), (catena_core::Strategy::Grammar, 1));
        assert_eq!(done.response.finish_reason, Some(FinishReason::Stop), "seed {seed}");
        seen.insert(done.text.clone());
        // Streamed, the same answer.
        let constrained = request.with_constraint(catena_core::Constraint::choice(options));
        let streamed = collect_stream(client.chat_stream(constrained).await.unwrap()).await.unwrap();
        assert_eq!(streamed.text(), done.text, "seed {seed}");
    }
    // The tiny model never ends an answer by itself, so it always takes the longest continuation the grammar
    // allows, and the server stops once the grammar is complete. Unconstrained, the same request is gibberish.
    assert!(seen.iter().all(|s| s != "no"), "{seen:?}");
    let free = client.chat(ask("Is Rust fun?").with_temperature(1.0).with_seed(1).with_max_tokens(32)).await.unwrap();
    assert!(!options.contains(&free.text().as_str()), "{free}");
}

#[tokio::test]
async fn regex_constraint_output_always_matches() {
    use catena_constraint::structured::{LlmStructuredExt, RepairPolicy};
    let client = client();
    for regex in [
        "[A-Z]{2}-[0-9]{3}",
        "(?i)ab?c{1,3}",
        r"\d{1,4}(\.\d{2})?",
        r"[a-z]{1,6}@[a-z]{1,6}\.(com|org)",
        "(yes|no|maybe)!{0,2}",
        r"[^\n]{2,5}",
    ] {
        let validator = catena_constraint::Validator::new(&catena_core::Constraint::Regex(regex.into())).unwrap();
        for seed in 1..=3 {
            let request = ask("Write something.").with_temperature(1.0).with_seed(seed).with_max_tokens(64);
            let done = client
                .constrained(request, catena_core::Constraint::Regex(regex.into()), RepairPolicy::Forbid)
                .await
                .unwrap_or_else(|e| panic!("{regex} seed {seed}: {e}"));
            validator.check(&done.text).unwrap_or_else(|e| panic!("{regex} seed {seed}: {e}"));
            assert_eq!(done.strategy, catena_core::Strategy::Grammar);
            assert_eq!(done.response.finish_reason, Some(FinishReason::Stop), "{regex}: {}", done.response);
        }
    }
}

#[tokio::test]
async fn gbnf_constraint_round_trips() {
    let client = client();
    let grammar = r#"root ::= ("yes" | "no") " " [0-9] [0-9]"#;
    // The same language as a regex, to check the answers.
    let same =
        catena_constraint::Validator::new(&catena_core::Constraint::Regex("(yes|no) [0-9][0-9]".into())).unwrap();
    for seed in 1..=4 {
        let request = ask("Answer.")
            .with_temperature(1.0)
            .with_seed(seed)
            .with_max_tokens(16)
            .with_constraint(catena_core::Constraint::Gbnf(grammar.into()));
        let response = client.chat(request.clone()).await.unwrap();
        same.check(&response.text()).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(response.finish_reason, Some(FinishReason::Stop));
        let streamed = collect_stream(client.chat_stream(request).await.unwrap()).await.unwrap();
        assert_eq!(streamed.text(), response.text());
    }
}

#[tokio::test]
async fn unsupported_constraints_never_reach_the_server() {
    let lark = ask("x").with_constraint(catena_core::Constraint::Grammar("start: \"a\"".into()));
    let err = closed_port_client().chat(lark).await.unwrap_err();
    assert!(matches!(&err, Error::Unsupported { capability, .. } if capability.contains("grammar")), "{err}");
    // A grammar that would kill the server is refused by the client, and the server is still alive.
    let bad = ask("x").with_constraint(catena_core::Constraint::Gbnf("root ::= (\"a\"".into()));
    assert!(matches!(closed_port_client().chat(bad).await, Err(Error::InvalidInput(_))));
    let word_boundary = ask("x").with_constraint(catena_core::Constraint::Regex(r"a\b".into()));
    assert!(matches!(closed_port_client().chat(word_boundary).await, Err(Error::Unsupported { .. })));
}

/// A GBNF constraint through the structured driver: sent as the server's `grammar` (strategy `grammar`), and
/// the answers checked by catena's own GBNF validator (the grammar converted to Lark, run by llguidance).
#[cfg(feature = "constrain")]
#[tokio::test]
async fn gbnf_constraint_through_the_structured_driver() {
    use catena_constraint::structured::{LlmStructuredExt, RepairPolicy};
    let client = client();
    let grammar = r#"root ::= word (", " word){0,2} "."
word ::= [a-z]{2,6}"#;
    let constraint = catena_core::Constraint::Gbnf(grammar.into());
    let validator = catena_constraint::Validator::new(&constraint).unwrap();
    assert!(validator.check("ab, cde.").is_ok() && validator.check("ab cde.").is_err());
    for seed in 1..=4 {
        let request = ask("List words.").with_temperature(1.0).with_seed(seed).with_max_tokens(40);
        let done = client.constrained(request, constraint.clone(), RepairPolicy::Forbid).await.unwrap();
        assert_eq!(done.strategy, catena_core::Strategy::Grammar);
        assert_eq!(done.attempts, 1);
        validator.check(&done.text).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

/// A Guidance-style template against the real server: no single pass (a remote model has no grammar
/// continuation), so each slot is one request with the slot's constraint mapped to the server's feature, and a
/// branch on a capture re-renders between slots.
#[tokio::test]
async fn guidance_template_runs_slot_by_slot_on_the_server() {
    use catena_constraint::guidance::{Program, RunOptions};
    let client = client();
    assert!(client.grammar_completion().is_none());
    let program = Program::new(
        r#"{{#system}}You fill in forms.{{/system}}{{#user}}Describe {{thing}}.{{/user}}{{#assistant}}Kind: {{select "kind" options=(list "animal" "plant")}}
Code: {{gen "code" regex="[A-Z]{2}-[0-9]{3}"}}
{{#if (eq kind "animal")}}Legs: {{gen "legs" regex="[0-9]"}}{{else}}Leaves: {{select "leaves" options=(list "many" "few")}}{{/if}}
Facts: {{json "facts" schema=schema}}{{/assistant}}"#,
    )
    .unwrap();
    let schema = json!({"type": "object", "properties": {"rare": {"type": "boolean"}}, "required": ["rare"]});
    let vars = json!({"thing": "a moss", "schema": schema});
    let code_format = regex::Regex::new("^[A-Z]{2}-[0-9]{3}$").unwrap();
    for seed in 1..=3 {
        let options =
            RunOptions { seed: Some(seed), temperature: Some(1.0), default_max_tokens: 40, ..RunOptions::default() };
        let run = program.run_with(&client, &vars, &options).await.unwrap();
        assert!(!run.single_pass);
        let kind = run.captures.text("kind").unwrap();
        assert!(["animal", "plant"].contains(&kind), "{kind}");
        let code = run.captures.text("code").unwrap();
        assert!(code_format.is_match(code), "{code}");
        match kind {
            "animal" => assert!(run.captures.text("legs").is_some_and(|l| l.len() == 1)),
            _ => assert!(["many", "few"].contains(&run.captures.text("leaves").unwrap())),
        }
        assert!(run.captures.get("facts").unwrap()["rare"].is_boolean(), "{:?}", run.captures);
        assert_eq!(run.slots.len(), 4);
        assert!(run.slots.iter().all(|s| s.attempts == 1), "{:?}", run.slots);
        assert!(run.usage.output_tokens > 0);
        assert!(run.messages.last().unwrap().text().starts_with(&format!("Kind: {kind}\nCode: {code}\n")));
    }
}
