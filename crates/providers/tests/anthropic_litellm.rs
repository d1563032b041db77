//! `catena_providers::anthropic` against LiteLLM's proxy (1.108.7, `.ci/setup-litellm.sh`), whose
//! Anthropic-format `/v1/messages` endpoint fronts a real llama.cpp server (llama-cpp-python on
//! SmolLM2-135M-Instruct): an Anthropic-format conversation reaching a real model, greedy (temperature 0) so that
//! a streamed answer can be compared with the plain one.

#![cfg(feature = "anthropic")]

use std::sync::OnceLock;
use std::time::Duration;

use catena_core::{
    collect_stream, ChatRequest, Constraint, Error, FinishReason, Llm, Message, ToolChoice, ToolDefinition,
};
use catena_providers::anthropic::AnthropicClient;
use catena_test_support::litellm::LiteLlmProxy;
use serde_json::{json, Value};

/// One proxy (and model server) for the whole test binary; both exit with the test process.
fn proxy() -> &'static LiteLlmProxy {
    static PROXY: OnceLock<LiteLlmProxy> = OnceLock::new();
    PROXY.get_or_init(LiteLlmProxy::start)
}

fn client() -> AnthropicClient {
    AnthropicClient::builder()
        .base_url(proxy().base_url())
        .api_key("sk-local-proxy")
        .model(LiteLlmProxy::MODEL)
        .max_tokens(24)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn weather_tool() -> ToolDefinition {
    ToolDefinition {
        name: "get_weather".into(),
        description: "Get the current weather in a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

#[tokio::test]
async fn a_conversation_reaches_a_real_model_plain_and_streamed() {
    let client = client();
    let request = ChatRequest::new(vec![Message::user("Say hi")]).with_temperature(0.0);
    let whole = client.chat(request.clone()).await.unwrap();
    assert!(!whole.text().trim().is_empty(), "{whole:?}");
    assert_eq!(whole.model, LiteLlmProxy::MODEL);
    assert!(matches!(whole.finish_reason, Some(FinishReason::Stop | FinishReason::Length)), "{whole:?}");
    let usage = whole.usage.unwrap();
    assert!(usage.input_tokens > 0 && usage.output_tokens > 0 && usage.output_tokens <= 24, "{usage:?}");

    let folded = collect_stream(client.chat_stream(request).await.unwrap()).await.unwrap();
    assert_eq!(folded.text(), whole.text(), "greedy decoding gives the same answer streamed");
    assert_eq!(folded.finish_reason, whole.finish_reason);
    assert_eq!(folded.model, whole.model);
    // LiteLLM counts the streamed prompt itself (fewer tokens than llama.cpp reports for the plain call), so only
    // the generated count is the same.
    assert_eq!(folded.usage.map(|u| u.output_tokens), Some(usage.output_tokens));
}

#[tokio::test]
async fn the_system_prompt_and_earlier_turns_reach_the_model() {
    let client = client();
    let plain = ChatRequest::new(vec![Message::user("Say hi")]).with_temperature(0.0);
    let pirate = ChatRequest::new(vec![Message::system("You are a pirate. Talk like one."), Message::user("Say hi")])
        .with_temperature(0.0);
    let (plain, pirate) = (client.chat(plain).await.unwrap(), client.chat(pirate).await.unwrap());
    assert_ne!(plain.text(), pirate.text(), "the system prompt changes the greedy answer");

    let multi = ChatRequest::new(vec![
        Message::user("My name is Ada."),
        Message::assistant("Nice to meet you, Ada."),
        Message::user("What is my name?"),
    ])
    .with_temperature(0.0)
    .with_max_tokens(16);
    let answer = client.chat(multi).await.unwrap();
    assert!(answer.usage.unwrap().input_tokens > pirate.usage.unwrap().input_tokens / 2, "{answer:?}");
    assert!(!answer.text().trim().is_empty());
}

#[tokio::test]
async fn a_forced_tool_call_and_its_result() {
    let client = client();
    let request = ChatRequest::new(vec![Message::user("What is the weather in Paris?")])
        .with_temperature(0.0)
        .with_max_tokens(60)
        .with_tool(weather_tool())
        .with_tool_choice(ToolChoice::Tool("get_weather".into()));
    let response = client.chat(request.clone()).await.unwrap();
    assert_eq!(response.finish_reason, Some(FinishReason::ToolCalls), "{response:?}");
    let call = response.message.tool_calls[0].clone();
    assert_eq!(call.name, "get_weather");
    let arguments: Value = serde_json::from_str(&call.arguments).unwrap();
    assert!(arguments["city"].is_string(), "{arguments}");

    // LiteLLM 1.108.7 streams llama-cpp-python's tool call as one `tool_use` block per fragment (each a piece of
    // JSON, all with the same id): the client reports that instead of returning broken calls.
    let err = collect_stream(client.chat_stream(request).await.unwrap()).await.unwrap_err();
    assert!(matches!(&err, Error::Decode { message, .. } if message.contains("not valid JSON")), "{err}");

    // The call and its result go back; the model answers. The assistant turn carries a text block too: without one,
    // LiteLLM hands llama-cpp-python an assistant message without `content`, which SmolLM2's chat template cannot
    // render (HTTP 500 "'dict object' has no attribute 'content'").
    let mut turn = Message::assistant("Let me check the weather.");
    turn.tool_calls = response.message.tool_calls.clone();
    let follow_up = ChatRequest::new(vec![
        Message::user("What is the weather in Paris?"),
        turn,
        Message::tool_result(call.id.clone(), "18 degrees and sunny"),
    ])
    .with_temperature(0.0)
    .with_max_tokens(24)
    .with_tool(weather_tool());
    let answer = client.chat(follow_up).await.unwrap();
    assert!(!answer.text().trim().is_empty() || !answer.message.tool_calls.is_empty(), "{answer:?}");
}

#[tokio::test]
async fn structured_output_through_the_forced_tool_on_a_real_model() {
    #[derive(serde::Deserialize, Debug)]
    struct City {
        name: String,
        country: String,
    }
    // llama-cpp-python turns the schema into a grammar; its strings may hold control characters (which a 135M
    // model writes, and LiteLLM then fails to parse), so the strings here are closed by enum and pattern.
    let schema = json!({"type": "object", "properties": {
        "name": {"type": "string", "pattern": "^[A-Z][a-z]{1,15}$"},
        "country": {"type": "string", "enum": ["France", "Germany", "Italy"]}}, "required": ["name", "country"]});
    let client = client();
    let request = ChatRequest::new(vec![Message::user("Name a large city in France.")])
        .with_temperature(0.0)
        .with_max_tokens(60)
        .with_constraint(Constraint::JsonSchema(schema));
    let response = client.chat(request).await.unwrap();
    let city: City = serde_json::from_str(&response.text()).unwrap_or_else(|e| panic!("{e}: {response:?}"));
    assert!(["France", "Germany", "Italy"].contains(&city.country.as_str()), "{city:?}");
    assert!(city.name.chars().all(|c| c.is_ascii_alphabetic()), "{city:?}");
    assert_eq!(response.finish_reason, Some(FinishReason::Stop));
}

#[tokio::test]
async fn an_unknown_model_is_a_readable_400() {
    let client = client();
    let err = client.chat(ChatRequest::new(vec![Message::user("hi")]).with_model("no-such-model")).await.unwrap_err();
    let Error::Http { status, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*status, 400);
    assert!(err.to_string().contains("invalid_request_error: anthropic_messages: Invalid model name"), "{err}");
    assert!(!err.is_retryable());
}
