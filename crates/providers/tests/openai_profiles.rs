//! The Azure OpenAI and Mistral profiles of the OpenAI-compatible client.
//!
//! Azure runs against llm-katan 0.22.0 (installed by `.ci/setup-katan.sh`), a real server of Azure OpenAI's
//! deployment API: `/openai/deployments/{deployment}/chat/completions?api-version=...` with the key in an `api-key`
//! header or an Entra ID token as `Authorization: Bearer`, both validated when it runs with `--validate-keys`.
//! No server of Mistral's API can run here, so its request shape is checked on the test-support wire server
//! against Mistral's published API reference (`random_seed`, `tool_choice: "any"`, no `stream_options`).

use std::time::Duration;

use catena_core::{collect_stream, ChatRequest, Error, Llm, Message, ToolChoice, ToolDefinition};
use catena_providers::openai::{Compat, OpenAiClient, AZURE_API_VERSION};
use catena_test_support::katan::Katan;
use catena_test_support::wire::{Canned, Reply, TestServer};
use serde_json::json;

#[tokio::test]
async fn azure_deployments_answer_with_a_key_or_an_entra_token() {
    let key = "azure-test-key-0123456789".to_string();
    let katan = Katan::start("azure_openai", &["--validate-keys", "--api-keys", &format!("azure_openai={key}")]);
    let client = OpenAiClient::builder()
        .azure(&katan.base_url(), "gpt-4o-mini", AZURE_API_VERSION)
        .api_key(key.clone())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(client.compat(), Compat::Azure);
    let request =
        ChatRequest::new(vec![Message::system("Be brief."), Message::user("Hello from Azure")]).with_max_tokens(32);
    let answer = client.chat(request.clone()).await.unwrap();
    assert!(answer.text().contains("Hello from Azure"), "{}", answer.text());
    assert!(answer.usage.is_some_and(|u| u.input_tokens > 0 && u.output_tokens > 0), "{:?}", answer.usage);
    let streamed = collect_stream(client.chat_stream(request.clone()).await.unwrap()).await.unwrap();
    assert!(streamed.text().contains("Hello from Azure"), "{}", streamed.text());
    assert!(katan.log().contains(&format!("api-version={AZURE_API_VERSION}")), "{}", katan.log());

    // An Entra ID token instead of the key.
    let entra = OpenAiClient::builder()
        .azure(&katan.base_url(), "gpt-4o-mini", AZURE_API_VERSION)
        .bearer_token(key)
        .build()
        .unwrap();
    assert!(entra.chat(request.clone()).await.unwrap().text().contains("Hello from Azure"));

    // A wrong key: a 401 that does not show it.
    let wrong = OpenAiClient::builder()
        .azure(&katan.base_url(), "gpt-4o-mini", AZURE_API_VERSION)
        .api_key("azure-wrong-key-123456")
        .build()
        .unwrap();
    let err = wrong.chat(request).await.unwrap_err();
    assert!(matches!(err, Error::Http { status: 401, .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("azure-wrong-key-123456"), "{err:?}");
}

#[tokio::test]
async fn mistral_requests_use_its_own_names() {
    let server = TestServer::start(Reply::Answer(Canned::text("ok"))).await;
    let client =
        server.client(Compat::Mistral).api_key("mistral-key-0123").model("mistral-small-latest").build().unwrap();
    let tool = ToolDefinition {
        name: "lookup".into(),
        description: "Looks a word up.".into(),
        parameters: json!({"type": "object", "properties": {}}),
    };
    let request = ChatRequest::new(vec![Message::user("hi")])
        .with_seed(42)
        .with_tool(tool)
        .with_tool_choice(ToolChoice::Required);
    client.chat(request.clone()).await.unwrap();
    let body = server.last_body();
    assert_eq!(body["random_seed"], 42, "{body}");
    assert!(body.get("seed").is_none(), "{body}");
    assert_eq!(body["tool_choice"], "any", "{body}");
    assert!(body.get("max_completion_tokens").is_none(), "{body}");
    collect_stream(client.chat_stream(request).await.unwrap()).await.unwrap();
    let body = server.last_body();
    assert_eq!(body["stream"], true, "{body}");
    assert!(body.get("stream_options").is_none(), "Mistral has no stream_options: {body}");
}
