//! `catena_providers::ollama` against a real server of Ollama's native API: ollama-proxy-plus in front of
//! llm-katan's echo backend ([`catena_test_support::ollama_proxy`]; `bash .ci/setup-katan.sh` and
//! `bash .ci/setup-ollama-proxy.sh` install them).
//!
//! The echo backend answers with what reached it, so these tests see the client's messages and options cross a
//! real Ollama-format server, in plain and streamed (NDJSON over chunked HTTP) answers, and the server's own
//! error bodies and error lines. The proxy forwards text only and counts words as tokens, so tool calls, exact
//! usage and embeddings are covered by the byte-exact fixtures of `ollama_wire.rs` instead.

#![cfg(feature = "ollama")]

use std::time::Duration;

use catena_core::{collect_stream, ChatRequest, Error, FinishReason, Llm, Message};
use catena_providers::ollama::OllamaClient;
use catena_test_support::ollama_proxy::OllamaPeer;
use futures::StreamExt;

const MODEL: &str = "katan/echo";

fn client(peer: &OllamaPeer) -> OllamaClient {
    // OLLAMA_HOST style: host:port, no scheme.
    OllamaClient::builder().host(peer.host()).model(MODEL).timeout(Duration::from_secs(60)).build().unwrap()
}

/// The echo without its `time=...` field (the second it answered), so two answers compare.
fn timeless(text: &str) -> String {
    text.split(' ').filter(|word| !word.starts_with("time=")).collect::<Vec<_>>().join(" ")
}

fn request() -> ChatRequest {
    ChatRequest::new(vec![Message::system("Be brief."), Message::user("why is the sky blue? naïve ☃ 🦀")])
        .with_temperature(0.0)
        .with_max_tokens(50)
}

#[tokio::test]
async fn chat_and_stream_cross_a_real_ollama_server() {
    let peer = OllamaPeer::start("katan-key", &[]);
    let client = client(&peer);
    let answer = client.chat(request()).await.unwrap_or_else(|e| panic!("{e}\n{}", peer.log()));
    let text = answer.text();
    // The conversation and the options reached the model behind the server.
    assert!(text.contains("User: why is the sky blue? naïve ☃ 🦀"), "{text}");
    assert!(
        text.contains("messages=2") && text.contains("temperature=0.0") && text.contains("max_tokens=50"),
        "{text}"
    );
    assert_eq!(answer.finish_reason, Some(FinishReason::Stop));
    assert_eq!(answer.model, MODEL);
    let usage = answer.usage.expect("usage from the final object");
    assert!(usage.input_tokens > 0 && usage.output_tokens > 0, "{usage:?}");

    let mut stream = client.chat_stream(request()).await.unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.unwrap_or_else(|e| panic!("{e}\n{}", peer.log())));
    }
    assert!(chunks.len() > 3, "the answer streams in pieces: {} chunks", chunks.len());
    let last = chunks.last().unwrap();
    assert!(last.usage.is_some() && last.finish_reason == Some(FinishReason::Stop), "{last:?}");
    let folded = collect_stream(client.chat_stream(request()).await.unwrap()).await.unwrap();
    assert_eq!(timeless(&folded.text()), timeless(&text));
    assert_eq!((folded.finish_reason, folded.model.as_str()), (Some(FinishReason::Stop), MODEL));
    assert!(folded.usage.is_some_and(|u| u.output_tokens > 0));
}

#[tokio::test]
async fn the_servers_errors_are_typed() {
    // The upstream refuses the proxy's key: the plain answer is an error status, the stream an error line.
    let peer = OllamaPeer::start("wrong-key", &["--validate-keys", "--api-keys", "openai=right-key"]);
    let client = client(&peer);
    let err = client.chat(request()).await.unwrap_err();
    assert!(matches!(&err, Error::Http { status, .. } if *status >= 400), "{err}\n{}", peer.log());
    let items: Vec<_> = client.chat_stream(request()).await.unwrap().collect().await;
    match items.last() {
        Some(Err(Error::Http { status: 500, body, .. })) => assert!(body.contains("\"error\""), "{body}"),
        other => panic!("an error line: {other:?}\n{}", peer.log()),
    }
    assert!(items.iter().all(|item| item.as_ref().map_or(true, |c| c.finish_reason.is_none())));

    // A model the server cannot route: 400 with its message.
    let err = client.chat(request().with_model("nowhere/echo")).await.unwrap_err();
    match &err {
        Error::Http { status: 400, body, .. } => assert!(body.contains("nowhere"), "{body}"),
        other => panic!("HTTP 400: {other}"),
    }
}
