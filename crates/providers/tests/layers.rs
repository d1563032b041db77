//! The middleware layers of `catena_core::layer` around real clients: the OpenAI client against the real axum
//! wire server (`catena_test_support::wire`, which can fail, stall and count on purpose) and against the real
//! llama.cpp server on the tiny model.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use catena_core::layer::{
    CacheLayer, ConcurrencyLimitLayer, DiskCache, FallbackLayer, FallbackOn, LayerExt, MemoryCache, RateLimitLayer,
    RetryLayer, RetryPolicy, TelemetryLayer, TimeoutLayer, Timeouts,
};
use catena_core::{collect_stream, ChatRequest, Deadline, Embedder, Error, Llm, Message};
use catena_providers::openai::{Compat, OpenAiClient};
use catena_test_support::llama as support;
use catena_test_support::spans as capture;
use catena_test_support::wire::{Canned, Reply, TestServer};
use futures::StreamExt;

fn ask() -> ChatRequest {
    ChatRequest::new(vec![Message::user("hi")]).with_max_tokens(16)
}

fn status(status: u16, retry_after: Option<&str>) -> Reply {
    Reply::Status {
        status,
        headers: retry_after.map(|v| vec![("retry-after", v.to_string())]).unwrap_or_default(),
        body: r#"{"error": {"message": "try later"}}"#,
    }
}

fn quick_retries(attempts: u32) -> RetryLayer {
    let policy = RetryPolicy::new(attempts)
        .unwrap()
        .with_backoff(Duration::from_millis(5), Duration::from_millis(20), 2.0)
        .unwrap()
        .with_max_retry_after(Duration::from_secs(2));
    RetryLayer::new(policy)
}

async fn client(server: &TestServer) -> OpenAiClient {
    server.client(Compat::OpenAi).build().unwrap()
}

#[tokio::test]
async fn retry_waits_out_retry_after_and_then_answers() {
    let server = TestServer::start(Reply::Script(vec![
        status(429, Some("0.2")),
        status(503, None),
        Reply::Answer(Canned::text("third time")),
    ]))
    .await;
    let llm = client(&server).await.layer(quick_retries(3));
    let start = Instant::now();
    let answer = llm.chat(ask()).await.unwrap();
    assert_eq!(answer.text(), "third time");
    assert_eq!(server.request_count(), 3);
    assert!(start.elapsed() >= Duration::from_millis(200), "the Retry-After of 0.2 s was not waited out");
}

#[tokio::test]
async fn absurd_retry_after_values_fail_at_once_without_panicking() {
    for value in ["1e20", "86400", "inf", "-5", "soon", "Wed, 21 Oct 2099 07:28:00 GMT"] {
        let server = TestServer::start(status(429, Some(value))).await;
        let llm = client(&server).await.layer(quick_retries(5));
        let start = Instant::now();
        let err = llm.chat(ask()).await.unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2), "Retry-After: {value} parked the call");
        match err {
            // A wait beyond the cap: given up after the first attempt.
            Error::Http { status: 429, .. } => assert_eq!(server.request_count(), 1, "Retry-After: {value}"),
            // An unreadable value: ordinary backoff, all attempts used.
            Error::Exhausted { attempts: 5, .. } => assert_eq!(server.request_count(), 5, "Retry-After: {value}"),
            other => panic!("Retry-After: {value}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn client_errors_are_not_retried_and_streams_retry_before_their_first_chunk() {
    let server = TestServer::start(status(400, None)).await;
    let llm = client(&server).await.layer(quick_retries(4));
    assert!(matches!(llm.chat(ask()).await, Err(Error::Http { status: 400, .. })));
    assert_eq!(server.request_count(), 1);

    server.set_reply(Reply::Script(vec![status(502, None), Reply::Answer(Canned::text("streamed"))]));
    let answer = collect_stream(llm.chat_stream(ask()).await.unwrap()).await.unwrap();
    assert_eq!(answer.text(), "streamed");
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn timeouts_cut_stalled_calls_and_retries_start_over() {
    let server = TestServer::start(Reply::Stall).await;
    let total = Timeouts::none().with_total(Duration::from_millis(150));
    let llm = client(&server).await.layer(TimeoutLayer::new(total));
    let start = Instant::now();
    let err = llm.chat(ask()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Deadline { deadline: Deadline::Total, limit, endpoint } if *limit == Duration::from_millis(150) && endpoint.starts_with("openai at http://127.0.0.1:")),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));

    // Time to first chunk.
    let first = Timeouts::none().with_first_chunk(Duration::from_millis(150));
    let llm = client(&server).await.layer(TimeoutLayer::new(first));
    let err = match llm.chat_stream(ask()).await {
        Err(e) => e,
        Ok(mut s) => s.next().await.unwrap().unwrap_err(),
    };
    assert!(matches!(err, Error::Deadline { deadline: Deadline::FirstChunk, .. }), "{err:?}");

    // Idle between chunks: the first chunk arrives, then the server stalls.
    server.set_reply(Reply::StallAfterFirstChunk(Canned::text("partial answer")));
    let idle = Timeouts::none().with_first_chunk(Duration::from_secs(5)).with_idle(Duration::from_millis(150));
    let llm = client(&server).await.layer(TimeoutLayer::new(idle));
    let mut stream = llm.chat_stream(ask()).await.unwrap();
    let mut got_ok = false;
    let err = loop {
        match stream.next().await {
            Some(Ok(_)) => got_ok = true,
            Some(Err(e)) => break e,
            None => panic!("the stream ended without the idle timeout"),
        }
    };
    assert!(got_ok, "the first chunk should arrive before the stall");
    assert!(
        matches!(err, Error::Deadline { deadline: Deadline::Idle, limit, .. } if limit == Duration::from_millis(150)),
        "{err:?}"
    );
    assert!(stream.next().await.is_none(), "a timed-out stream ends");

    // A timeout is retryable: retry outside the timeout tries again.
    server.set_reply(Reply::Script(vec![Reply::Stall, Reply::Answer(Canned::text("after a stall"))]));
    let llm = client(&server).await.layer(TimeoutLayer::new(total)).layer(quick_retries(3));
    assert_eq!(llm.chat(ask()).await.unwrap().text(), "after a stall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_bounds_calls_in_flight() {
    let server = TestServer::start(Reply::Delay(Duration::from_millis(80), Canned::text("ok"))).await;
    let llm = Arc::new(client(&server).await.layer(ConcurrencyLimitLayer::new(NonZeroU32::new(2).unwrap())));
    let calls = (0..8).map(|_| {
        let llm = llm.clone();
        tokio::spawn(async move { llm.chat(ask()).await })
    });
    for call in futures::future::join_all(calls).await {
        call.unwrap().unwrap();
    }
    assert_eq!(server.request_count(), 8);
    assert_eq!(server.peak_in_flight(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_spaces_requests_under_load() {
    let server = TestServer::start(Reply::Answer(Canned::text("ok"))).await;
    // Two requests per 200 ms: a burst of two, then one every 100 ms.
    let limit = RateLimitLayer::new().requests(NonZeroU32::new(2).unwrap(), Duration::from_millis(200)).unwrap();
    let llm = Arc::new(client(&server).await.layer(limit));
    let start = Instant::now();
    let calls = (0..6).map(|_| {
        let llm = llm.clone();
        tokio::spawn(async move { llm.chat(ask()).await })
    });
    for call in futures::future::join_all(calls).await {
        call.unwrap().unwrap();
    }
    assert!(start.elapsed() >= Duration::from_millis(380), "6 calls at 2 per 200 ms took {:?}", start.elapsed());
    let arrivals = server.arrivals();
    let first = arrivals[0];
    let late = arrivals.iter().filter(|t| t.duration_since(first) >= Duration::from_millis(90)).count();
    assert!(
        late >= 4,
        "only the burst of 2 may arrive at once: {:?}",
        arrivals.iter().map(|t| t.duration_since(first)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn cache_answers_repeats_and_marks_hits_in_the_span() {
    let (captured, _guard) = capture::start();
    let server = TestServer::start(Reply::Answer(Canned::text("cached answer"))).await;
    let cache = CacheLayer::new(MemoryCache::new(NonZeroUsize::new(16).unwrap()));
    let llm = client(&server).await.layer(cache).layer(TelemetryLayer::new());

    let first = llm.chat(ask()).await.unwrap();
    let second = llm.chat(ask()).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(server.request_count(), 1);
    // A stream of the same request replays the cached answer.
    let replayed = collect_stream(llm.chat_stream(ask()).await.unwrap()).await.unwrap();
    assert_eq!(replayed.text(), "cached answer");
    assert_eq!(replayed.usage, first.usage);
    assert_eq!(server.request_count(), 1);
    // Any change to the request misses.
    llm.chat(ask().with_temperature(0.1)).await.unwrap();
    assert_eq!(server.request_count(), 2);
    assert_eq!(captured.value("gen_ai", "catena.cache.hit"), ["false", "true", "true", "false"]);
}

#[tokio::test]
async fn disk_cache_survives_a_new_client_and_caches_streams() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(Reply::Answer(Canned::text("from disk"))).await;
    let streamed = {
        let llm = client(&server).await.layer(CacheLayer::new(DiskCache::open(dir.path()).unwrap()));
        collect_stream(llm.chat_stream(ask()).await.unwrap()).await.unwrap()
    };
    let llm = client(&server).await.layer(CacheLayer::new(DiskCache::open(dir.path()).unwrap()));
    let again = llm.chat(ask()).await.unwrap();
    assert_eq!(again.text(), "from disk");
    assert_eq!(again.usage, streamed.usage);
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn embedding_cache_embeds_only_new_texts() {
    let server = TestServer::start(Reply::Answer(Canned::text("unused"))).await;
    let embedder = client(&server)
        .await
        .embedder("emb", 3)
        .layer(CacheLayer::new(MemoryCache::new(NonZeroUsize::new(64).unwrap())));
    let texts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let a = embedder.embed_documents(&texts(&["one", "three"])).await.unwrap();
    let b = embedder.embed_documents(&texts(&["three", "seven", "one"])).await.unwrap();
    assert_eq!(b[0], a[1]);
    assert_eq!(b[2], a[0]);
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[1]["input"], serde_json::json!(["seven"]));
}

#[tokio::test]
async fn fallback_takes_over_on_retryable_errors_only() {
    let broken = TestServer::start(status(503, None)).await;
    let healthy = TestServer::start(Reply::Answer(Canned::text("from the fallback"))).await;
    let llm = client(&broken).await.layer(FallbackLayer::new(client(&healthy).await, FallbackOn::Retryable));
    assert_eq!(llm.chat(ask().with_model("primary-only")).await.unwrap().text(), "from the fallback");
    // The fallback answers with its own model, not the primary's.
    assert_eq!(healthy.last_body()["model"], "gpt-test");
    let streamed = collect_stream(llm.chat_stream(ask()).await.unwrap()).await.unwrap();
    assert_eq!(streamed.text(), "from the fallback");

    broken.set_reply(status(400, None));
    assert!(matches!(llm.chat(ask()).await, Err(Error::Http { status: 400, .. })));
    let any = client(&broken).await.layer(FallbackLayer::new(client(&healthy).await, FallbackOn::AnyError));
    assert_eq!(any.chat(ask()).await.unwrap().text(), "from the fallback");

    // The usual stack: retries of the primary first, then the fallback once they are used up on retryable
    // errors; a client error is still not retried and not handed over.
    broken.set_reply(status(503, None));
    let stacked = client(&broken)
        .await
        .layer(quick_retries(2))
        .layer(FallbackLayer::new(client(&healthy).await, FallbackOn::Retryable));
    let before = broken.request_count();
    assert_eq!(stacked.chat(ask()).await.unwrap().text(), "from the fallback");
    assert_eq!(broken.request_count() - before, 2, "both attempts reached the primary first");
    broken.set_reply(status(400, None));
    assert!(matches!(stacked.chat(ask()).await, Err(Error::Http { status: 400, .. })));
}

#[tokio::test]
async fn telemetry_records_the_gen_ai_schema() {
    let (captured, _guard) = capture::start();
    let server = TestServer::start(Reply::Answer(Canned::text("traced"))).await;
    let llm = server.client(Compat::Vllm).build().unwrap().layer(TelemetryLayer::new());
    let request = ChatRequest::new(vec![Message::user("hi")]).with_temperature(0.5).with_max_tokens(8);
    llm.chat(request.clone()).await.unwrap();
    collect_stream(llm.chat_stream(request).await.unwrap()).await.unwrap();

    let c = &captured;
    assert_eq!(c.value("gen_ai", "otel.name"), ["chat gpt-test", "chat gpt-test"]);
    assert_eq!(c.value("gen_ai", "gen_ai.operation.name"), ["chat", "chat"]);
    assert_eq!(c.value("gen_ai", "gen_ai.provider.name"), ["vllm", "vllm"]);
    assert_eq!(c.value("gen_ai", "gen_ai.request.model"), ["gpt-test", "gpt-test"]);
    assert_eq!(c.value("gen_ai", "gen_ai.request.temperature"), ["0.5", "0.5"]);
    assert_eq!(c.value("gen_ai", "gen_ai.request.max_tokens"), ["8", "8"]);
    assert_eq!(c.value("gen_ai", "gen_ai.response.model"), ["gpt-test-2025", "gpt-test-2025"]);
    assert_eq!(c.value("gen_ai", "gen_ai.response.finish_reasons"), ["stop", "stop"]);
    assert_eq!(c.value("gen_ai", "gen_ai.usage.input_tokens"), ["21", "21"]);
    assert_eq!(c.value("gen_ai", "gen_ai.usage.output_tokens"), ["9", "9"]);
    assert_eq!(c.value("gen_ai", "catena.stream.outcome"), ["completed"]);
    assert_eq!(c.value("gen_ai", "catena.time_to_first_chunk_ms").len(), 1);
    assert_eq!(c.value("gen_ai", "catena.latency_ms").len(), 2);
    assert!(c.value("gen_ai", "gen_ai.input.messages").is_empty(), "content is recorded only when asked");

    server.set_reply(status(429, None));
    llm.chat(ask()).await.unwrap_err();
    assert_eq!(c.value("gen_ai", "error.type"), ["429"]);

    server.set_reply(Reply::Endless);
    let mut stream = llm.chat_stream(ask()).await.unwrap();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    assert_eq!(c.value("gen_ai", "catena.stream.outcome"), ["completed", "dropped"]);

    server.set_reply(Reply::Answer(Canned::text("secret answer")));
    let with_content = server.client(Compat::Vllm).build().unwrap().layer(TelemetryLayer::new().record_content(true));
    with_content.chat(ask()).await.unwrap();
    assert!(c.value("gen_ai", "gen_ai.output.messages")[0].contains("secret answer"));
}

/// The layers around the real llama.cpp server: a stack of timeout, retry, cache and telemetry answers, and a
/// client of a closed port falls back to the server.
#[tokio::test]
async fn layers_work_around_the_real_llama_cpp_server() {
    let server = support::shared_server();
    let real = server.client();
    let stacked = real
        .clone()
        .layer(TimeoutLayer::new(Timeouts::none().with_total(Duration::from_secs(120))))
        .layer(quick_retries(2))
        .layer(CacheLayer::new(MemoryCache::new(NonZeroUsize::new(4).unwrap())))
        .layer(TelemetryLayer::new());
    let request = ChatRequest::new(vec![Message::user("Say hi")]).with_max_tokens(8).with_temperature(0.0);
    let first = stacked.chat(request.clone()).await.unwrap();
    let again = stacked.chat(request.clone()).await.unwrap();
    assert_eq!(first, again);
    assert!(!first.text().is_empty() || first.usage.is_some());

    let dead = OpenAiClient::builder()
        .base_url(format!("http://127.0.0.1:{}/v1", support::free_port()))
        .compat(Compat::LlamaCpp)
        .model(support::TINY_ALIAS)
        .build()
        .unwrap();
    let rescued = dead.layer(FallbackLayer::new(real, FallbackOn::Retryable));
    let answer = rescued.chat(request).await.unwrap();
    assert_eq!(answer.model, support::TINY_ALIAS);
}
