//! Notebook readiness: evcxr runs each cell's async code on its runtime and keeps values across cells, so a client
//! or model built in one cell must keep working in the next, even when the runtime that built it (or made its
//! first calls) is gone. Each test builds the value and calls it on one tokio runtime, drops that runtime, and
//! calls it again on a fresh one, against real peers (the llama-cpp-python server on 127.0.0.1, the tiny GGUF in
//! process, the MiniLM files).

#![cfg(all(feature = "local-embed", feature = "llama-cpp"))]

use catena_test_support::llama as support;

use catena::providers::llama::{LocalLlm, LocalLlmOptions};
use catena::providers::local_embed::LocalEmbedder;
use catena::{collect_stream, ChatRequest, Embedder, Llm, Message};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new(vec![Message::user("Hello")]).with_max_tokens(4).with_temperature(0.0)
}

#[test]
fn openai_client_survives_the_runtime_that_built_it() {
    let server = support::shared_server();
    let first = runtime();
    let client = first.block_on(async {
        let client = server.client();
        let r = client.chat(request()).await.unwrap();
        assert!(!r.text().is_empty());
        client
    });
    drop(first); // the "cell" ends; its runtime and any pooled connection tasks are gone
    let second = runtime();
    second.block_on(async {
        let r = client.chat(request()).await.expect("a client from an earlier cell must still work");
        assert!(!r.text().is_empty());
        let folded = collect_stream(client.chat_stream(request()).await.unwrap()).await.unwrap();
        assert_eq!(folded.text(), r.text());
    });
    println!("{client}");
}

#[test]
fn local_models_survive_the_runtime_that_built_them() {
    let first = runtime();
    let (llm, embedder) = first.block_on(async {
        let llm = LocalLlm::from_gguf(support::tiny_gguf(), LocalLlmOptions::default()).unwrap();
        let embedder = LocalEmbedder::from_env().expect("run `bash .ci/fetch-minilm.sh` (or set CATENA_EMBED_MODEL)");
        llm.chat(request()).await.unwrap();
        embedder.embed_query("ownership").await.unwrap();
        (llm, embedder)
    });
    drop(first);
    runtime().block_on(async {
        let r = llm.chat(request()).await.expect("a model from an earlier cell must still work");
        assert_eq!(r.usage.unwrap().output_tokens, 4);
        let v = embedder.embed_query("ownership").await.expect("an embedder from an earlier cell must still work");
        assert_eq!(v.len(), embedder.dimensions());
    });
}
