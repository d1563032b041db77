//! The fault-injection suite: every provider's client, streaming and not, against a hostile server
//! (`catena_test_support::faults`) doing each fault a flaky or broken server does: OpenAI and its Azure and
//! Mistral profiles, Anthropic, Gemini and Ollama. Every call must end within its deadlines (each attempt's total
//! deadline, times the attempts, plus the waits between them) in a typed error or a correct result: no panic, no
//! hang, the key never shown, usage never lost on success. The summary it prints is the table of RELIABILITY.md.
//!
//! The hostile server is written here on purpose (no real server resets connections or cuts chunked bodies on
//! demand); the wire formats it speaks are the ones the wire tests check against the vendors' references and
//! against real servers (llm-katan, LiteLLM, llama.cpp).
#![cfg(all(feature = "anthropic", feature = "gemini", feature = "ollama"))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use catena_core::layer::{LayerExt, RetryLayer, RetryPolicy};
use catena_core::{collect_stream, ChatRequest, ChatResponse, Error, Llm, Message, Usage};
use catena_providers::anthropic::AnthropicClient;
use catena_providers::gemini::GeminiClient;
use catena_providers::ollama::OllamaClient;
use catena_providers::openai::{Compat, IoRuntime, OpenAiClient, AZURE_API_VERSION};
use catena_providers::Deadlines;
use catena_test_support::faults::{Dialect, Fault, FaultServer, HUGE_ANSWER};

const TEXT: &str = "Hello from the fault server, déjà vu ☃.";
const KEY: &str = "sk-fault-suite-0123456789";
/// The usage every correct answer reports.
const USAGE: Usage = Usage { input_tokens: 7, output_tokens: 5, total_tokens: 12, cached_input_tokens: None };

fn pieces() -> Vec<String> {
    let chars: Vec<char> = TEXT.chars().collect();
    chars.chunks(9).map(|c| c.iter().collect()).collect()
}

fn sse(events: &[String]) -> String {
    events.iter().map(|e| format!("{e}\n\n")).collect()
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn openai() -> Dialect {
    let answer = |text: &str, usage: bool| {
        let usage = if usage { r#","usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}"# } else { "" };
        format!(
            r#"{{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":{}}},"finish_reason":"stop"}}]{usage}}}"#,
            json_str(text)
        )
    };
    let chunk = |delta: &str, finish: &str| {
        format!(
            r#"data: {{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]}}"#
        )
    };
    let events = move |texts: &[String], usage: bool| {
        let mut e = vec![chunk(r#"{"role":"assistant"}"#, "null")];
        e.extend(texts.iter().map(|t| chunk(&format!(r#"{{"content":{}}}"#, json_str(t)), "null")));
        e.push(chunk("{}", r#""stop""#));
        if usage {
            e.push(r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}}"#.to_string());
        }
        e.push("data: [DONE]".to_string());
        e
    };
    let all = events(&pieces(), true);
    let head = sse(&all[..3]);
    Dialect {
        name: "openai",
        answer: answer(TEXT, true),
        stream: sse(&all),
        stream_type: "text/event-stream",
        stream_head: head.clone(),
        stream_error: format!("{head}data: {{\"error\":{{\"message\":\"the model crashed\",\"code\":500}}}}\n\n"),
        stream_malformed: format!("{head}data: {{\"id\":\"c1\",\"choices\":[{{\n\n"),
        answer_no_usage: answer(TEXT, false),
        stream_no_usage: sse(&events(&pieces(), false)),
        huge_answer: Arc::new(move |n| answer(&"x".repeat(n), true)),
        huge_stream: Arc::new(move |n| {
            let text = "x".repeat(n);
            let parts: Vec<String> =
                text.as_bytes().chunks(1 << 16).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            sse(&events(&parts, true))
        }),
        echo_key: Arc::new(|key| {
            format!(
                r#"{{"error":{{"message":"Incorrect API key provided: {key}","type":"invalid_request_error","code":"invalid_api_key"}}}}"#
            )
        }),
    }
}

fn anthropic() -> Dialect {
    let message = |text: &str, usage: bool| {
        let usage = if usage { r#","usage":{"input_tokens":7,"output_tokens":5}"# } else { "" };
        format!(
            r#"{{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{{"type":"text","text":{}}}],"stop_reason":"end_turn","stop_sequence":null{usage}}}"#,
            json_str(text)
        )
    };
    let events = move |texts: &[String], usage: bool| {
        let start_usage = if usage { r#","usage":{"input_tokens":7,"output_tokens":1}"# } else { "" };
        let mut e = vec![
            format!(
                r#"event: message_start
data: {{"type":"message_start","message":{{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null{start_usage}}}}}"#
            ),
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}".to_string(),
        ];
        e.extend(texts.iter().map(|t| {
            format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{}}}}}",
                json_str(t)
            )
        }));
        e.push("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}".to_string());
        let delta_usage = if usage { r#","usage":{"output_tokens":5}"# } else { "" };
        e.push(format!(
            "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}}{delta_usage}}}"
        ));
        e.push("event: message_stop\ndata: {\"type\":\"message_stop\"}".to_string());
        e
    };
    let all = events(&pieces(), true);
    let head = sse(&all[..3]);
    Dialect {
        name: "anthropic",
        answer: message(TEXT, true),
        stream: sse(&all),
        stream_type: "text/event-stream",
        stream_head: head.clone(),
        stream_error: format!(
            "{head}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n"
        ),
        stream_malformed: format!("{head}event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\n\n"),
        answer_no_usage: message(TEXT, false),
        stream_no_usage: sse(&events(&pieces(), false)),
        huge_answer: Arc::new(move |n| message(&"x".repeat(n), true)),
        huge_stream: Arc::new(move |n| {
            let text = "x".repeat(n);
            let parts: Vec<String> = text.as_bytes().chunks(1 << 16).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            sse(&events(&parts, true))
        }),
        echo_key: Arc::new(|key| {
            format!(r#"{{"type":"error","error":{{"type":"authentication_error","message":"invalid x-api-key: {key}"}}}}"#)
        }),
    }
}

fn gemini() -> Dialect {
    let response = |parts: &str, finish: bool, usage: bool| {
        let finish = if finish { r#","finishReason":"STOP""# } else { "" };
        let usage = if usage {
            r#","usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":5,"totalTokenCount":12}"#
        } else {
            ""
        };
        format!(
            r#"{{"candidates":[{{"content":{{"parts":[{parts}],"role":"model"}}{finish},"index":0}}]{usage},"modelVersion":"m"}}"#
        )
    };
    let text = |t: &str| format!(r#"{{"text":{}}}"#, json_str(t));
    let events = move |texts: &[String], usage: bool| {
        let last = texts.len() - 1;
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| format!("data: {}", response(&text(t), i == last, usage && i == last)))
            .collect::<Vec<_>>()
    };
    let all = events(&pieces(), true);
    let head = sse(&all[..2]);
    Dialect {
        name: "gemini",
        answer: response(&text(TEXT), true, true),
        stream: sse(&all),
        stream_type: "text/event-stream",
        stream_head: head.clone(),
        stream_error: format!(
            "{head}data: {{\"error\":{{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}}}\n\n"
        ),
        stream_malformed: format!("{head}data: {{\"candidates\":[{{\n\n"),
        answer_no_usage: response(&text(TEXT), true, false),
        stream_no_usage: sse(&events(&pieces(), false)),
        huge_answer: Arc::new(move |n| response(&text(&"x".repeat(n)), true, true)),
        huge_stream: Arc::new(move |n| {
            let text = "x".repeat(n);
            let parts: Vec<String> =
                text.as_bytes().chunks(1 << 16).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            sse(&events(&parts, true))
        }),
        echo_key: Arc::new(|key| {
            format!(r#"{{"error":{{"code":401,"message":"API key not valid: {key}","status":"UNAUTHENTICATED"}}}}"#)
        }),
    }
}

fn ollama() -> Dialect {
    let line = |content: &str, done: bool, usage: bool| {
        let end = match (done, usage) {
            (true, true) => r#","done":true,"done_reason":"stop","prompt_eval_count":7,"eval_count":5"#,
            (true, false) => r#","done":true,"done_reason":"stop""#,
            (false, _) => r#","done":false"#,
        };
        format!(
            r#"{{"model":"m","created_at":"2026-12-05T10:00:00Z","message":{{"role":"assistant","content":{}}}{end}}}"#,
            json_str(content)
        )
    };
    let lines = move |texts: &[String], usage: bool| {
        let mut l: Vec<String> = texts.iter().map(|t| line(t, false, usage)).collect();
        l.push(line("", true, usage));
        l.iter().map(|l| format!("{l}\n")).collect::<String>()
    };
    let head: String = pieces()[..2].iter().map(|t| format!("{}\n", line(t, false, true))).collect();
    Dialect {
        name: "ollama",
        answer: line(TEXT, true, true),
        stream: lines(&pieces(), true),
        stream_type: "application/x-ndjson",
        stream_head: head.clone(),
        stream_error: format!("{head}{{\"error\":\"llama runner process has terminated\"}}\n"),
        stream_malformed: format!("{head}{{\"model\":\"m\",\"message\":\n"),
        answer_no_usage: line(TEXT, true, false),
        stream_no_usage: lines(&pieces(), false),
        huge_answer: Arc::new(move |n| line(&"x".repeat(n), true, true)),
        huge_stream: Arc::new(move |n| {
            let text = "x".repeat(n);
            let parts: Vec<String> =
                text.as_bytes().chunks(1 << 16).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            lines(&parts, true)
        }),
        echo_key: Arc::new(|key| format!(r#"{{"error":"unauthorized: the key {key} is not valid"}}"#)),
    }
}

/// The deadlines of the suite's clients: short, so that the faults that need one end fast.
fn deadlines(fault: &Fault) -> Deadlines {
    if *fault == Fault::Huge {
        // The test server takes a few seconds to build 50 MB in a debug build before its first byte.
        return Deadlines::none().with_first_chunk(Duration::from_secs(30)).with_total(Duration::from_secs(60));
    }
    let total = Duration::from_secs(4);
    Deadlines::none()
        .with_connect(Duration::from_secs(2))
        .with_first_chunk(Duration::from_millis(1500))
        .with_idle(Duration::from_secs(1))
        .with_total(total)
}

/// Azure OpenAI and Mistral speak OpenAI's format (their profiles differ in paths, headers and field names).
fn azure() -> Dialect {
    Dialect { name: "azure", ..openai() }
}

fn mistral() -> Dialect {
    Dialect { name: "mistral", ..openai() }
}

/// The longest a call may take: each of its 3 attempts' total deadline, the waits between them (`Retry-After`,
/// capped at 2 s), and slack for a loaded machine. Far below the 90 s that counts as a hang.
fn budget(fault: &Fault) -> Duration {
    let total = if *fault == Fault::Huge { Duration::from_secs(60) } else { Duration::from_secs(4) };
    total * 3 + Duration::from_secs(2) * 2 + Duration::from_secs(10)
}

fn client(dialect: &str, base_url: &str, fault: &Fault, io: IoRuntime) -> Arc<dyn Llm> {
    client_with(dialect, base_url, deadlines(fault), io)
}

fn client_with(dialect: &str, base_url: &str, deadlines: Deadlines, io: IoRuntime) -> Arc<dyn Llm> {
    let retry = RetryPolicy::new(3)
        .unwrap()
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50), 2.0)
        .unwrap()
        .with_max_retry_after(Duration::from_secs(2));
    match dialect {
        "openai" => Arc::new(
            OpenAiClient::builder()
                .base_url(format!("{base_url}/v1"))
                .api_key(KEY)
                .model("m")
                .compat(Compat::OpenAi)
                .io_runtime(io)
                .deadlines(deadlines)
                .build()
                .unwrap()
                .layer(RetryLayer::new(retry)),
        ),
        "azure" => Arc::new(
            OpenAiClient::builder()
                .azure(base_url, "dep", AZURE_API_VERSION)
                .api_key(KEY)
                .io_runtime(io)
                .deadlines(deadlines)
                .build()
                .unwrap()
                .layer(RetryLayer::new(retry)),
        ),
        "mistral" => Arc::new(
            OpenAiClient::builder()
                .base_url(format!("{base_url}/v1"))
                .api_key(KEY)
                .model("m")
                .compat(Compat::Mistral)
                .io_runtime(io)
                .deadlines(deadlines)
                .build()
                .unwrap()
                .layer(RetryLayer::new(retry)),
        ),
        "anthropic" => Arc::new(
            AnthropicClient::builder()
                .base_url(base_url)
                .api_key(KEY)
                .model("m")
                .io_runtime(io)
                .deadlines(deadlines)
                .build()
                .unwrap()
                .layer(RetryLayer::new(retry)),
        ),
        "gemini" => Arc::new(
            GeminiClient::builder()
                .base_url(base_url)
                .api_key(KEY)
                .model("m")
                .io_runtime(io)
                .deadlines(deadlines)
                .build()
                .unwrap()
                .layer(RetryLayer::new(retry)),
        ),
        "ollama" => Arc::new(
            OllamaClient::builder()
                .host(base_url)
                .api_key(KEY)
                .model("m")
                .io_runtime(io)
                .deadlines(deadlines)
                .build()
                .unwrap()
                .layer(RetryLayer::new(retry)),
        ),
        other => panic!("no client for {other}"),
    }
}

/// What a call must end in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// The correct answer, with its usage.
    Correct,
    /// The correct text; the server sent no usage.
    CorrectNoUsage,
    /// The huge answer.
    Huge,
    /// A typed error.
    Error,
}

fn expectation(fault: &Fault, streaming: bool) -> Expect {
    match fault {
        Fault::None | Fault::RateLimitedOnce | Fault::ServerErrorOnce | Fault::ResetBeforeHeadersOnce => {
            Expect::Correct
        }
        Fault::MissingUsage => Expect::CorrectNoUsage,
        Fault::Huge => Expect::Huge,
        // A whole answer cut in the middle is retried from the start; a stream that has delivered content is not.
        Fault::ResetMidBody | Fault::TruncatedChunked | Fault::TruncatedClose if !streaming => Expect::Error,
        _ => Expect::Error,
    }
}

/// What the typed error must say (a part of [`kind`]'s description), where the fault decides it.
fn expected_kind(fault: &Fault, streaming: bool) -> Option<&'static str> {
    Some(match (fault, streaming) {
        (Fault::RateLimitedForever, _) => "Exhausted(3, Http 429)",
        (Fault::UnavailableForever, _) => "Exhausted(3, Http 503)",
        (Fault::ResetBeforeHeaders, _) => "Exhausted(3, Transport)",
        // Content reached the caller: not retried.
        (Fault::ResetMidBody | Fault::TruncatedChunked, true) => "Transport",
        (Fault::ResetMidBody | Fault::TruncatedChunked, false) => "Exhausted(3, Transport)",
        (Fault::StallAfterFirstChunk, true) => "Deadline idle",
        (Fault::StallAfterFirstChunk, false) => "Exhausted(3, Deadline idle)",
        (Fault::NeverAnswer | Fault::SlowDrip, true) => "Exhausted(3, Deadline first-chunk)",
        (Fault::NeverAnswer | Fault::SlowDrip, false) => "Exhausted(3, Deadline total)",
        (Fault::Html502, _) => "Exhausted(3, Http 502)",
        (Fault::HugeErrorBody, _) => "Exhausted(3, Http 500)",
        (Fault::MalformedJson | Fault::InvalidUtf8 | Fault::EmptyJson, _) => "Decode",
        (Fault::EmptyPlain | Fault::EmptySse, false) => "Decode",
        (Fault::EchoedKey(_), _) => "Http 401",
        _ => return None,
    })
}

fn faults() -> Vec<Fault> {
    vec![
        Fault::None,
        Fault::RateLimitedOnce,
        Fault::RateLimitedForever,
        Fault::ServerErrorOnce,
        Fault::UnavailableForever,
        Fault::ResetBeforeHeadersOnce,
        Fault::ResetBeforeHeaders,
        Fault::ResetMidBody,
        Fault::TruncatedChunked,
        Fault::TruncatedClose,
        Fault::StallAfterFirstChunk,
        Fault::NeverAnswer,
        Fault::SlowDrip,
        Fault::MalformedJson,
        Fault::Html502,
        Fault::EmptyPlain,
        Fault::EmptyJson,
        Fault::EmptySse,
        Fault::InvalidUtf8,
        Fault::Huge,
        Fault::HugeErrorBody,
        Fault::MissingUsage,
        Fault::ErrorMidStream,
        Fault::EchoedKey(KEY.to_string()),
    ]
}

/// How one call ended.
#[derive(Debug)]
enum Outcome {
    Answer(ChatResponse),
    Failed(Error),
    Panicked(String),
    Hung,
}

async fn call(llm: Arc<dyn Llm>, streaming: bool) -> Outcome {
    let request = ChatRequest::new(vec![Message::user("hi")]).with_max_tokens(16);
    let task = tokio::spawn(async move {
        if streaming {
            match llm.chat_stream(request).await {
                Ok(stream) => collect_stream(stream).await,
                Err(e) => Err(e),
            }
        } else {
            llm.chat(request).await
        }
    });
    // Far past every deadline of the suite: reaching it is a hang.
    match tokio::time::timeout(Duration::from_secs(90), task).await {
        Err(_) => Outcome::Hung,
        Ok(Err(join)) if join.is_panic() => Outcome::Panicked(format!("{join:?}")),
        Ok(Err(join)) => Outcome::Panicked(format!("cancelled: {join:?}")),
        Ok(Ok(Ok(answer))) => Outcome::Answer(answer),
        Ok(Ok(Err(e))) => Outcome::Failed(e),
    }
}

/// Checks one outcome; `Err` says what is wrong.
/// The path a transport or deadline error must name: the endpoint the call went to.
fn endpoint_path(provider: &str, streaming: bool) -> &'static str {
    match (provider, streaming) {
        ("openai" | "mistral", _) => "/v1/chat/completions",
        ("azure", _) => "/openai/deployments/dep/chat/completions",
        ("anthropic", _) => "/v1/messages",
        ("gemini", false) => ":generateContent",
        ("gemini", true) => ":streamGenerateContent",
        ("ollama", _) => "/api/chat",
        _ => "",
    }
}

fn check(outcome: &Outcome, expect: Expect, expected_kind: Option<&str>, path: &str) -> Result<String, String> {
    match (outcome, expect) {
        (Outcome::Hung, _) => Err("hung".into()),
        (Outcome::Panicked(p), _) => Err(format!("panicked: {p}")),
        (Outcome::Answer(a), Expect::Correct) if a.text() == TEXT && a.usage == Some(USAGE) => Ok("correct".into()),
        (Outcome::Answer(a), Expect::CorrectNoUsage) if a.text() == TEXT => Ok("correct (no usage sent)".into()),
        (Outcome::Answer(a), Expect::Huge) if a.text().len() == HUGE_ANSWER && a.usage == Some(USAGE) => {
            Ok("correct (50 MB)".into())
        }
        (Outcome::Answer(a), _) => {
            let text = a.text();
            Err(format!("wrong answer: {} bytes, usage {:?}: {:?}", text.len(), a.usage, &text[..text.len().min(80)]))
        }
        (Outcome::Failed(e), Expect::Error) => {
            let shown = format!("{e} {e:?}");
            if shown.contains(KEY) {
                return Err(format!("the key leaked: {shown}"));
            }
            if e.to_string().len() > 2000 {
                return Err(format!("an unbounded message ({} bytes)", e.to_string().len()));
            }
            let mut last = e;
            while let Error::Exhausted { last: inner, .. } = last {
                last = inner;
            }
            if let Error::Http { body, .. } = last {
                if body.len() > (1 << 20) + 200 {
                    return Err(format!("an error body of {} bytes was kept", body.len()));
                }
            }
            // A deadline names its endpoint; a transport error that names one names the right one.
            let named = match last {
                Error::Deadline { endpoint, .. } => Some(endpoint.as_str()),
                Error::Transport { message, .. } if message.contains("http://") => Some(message.as_str()),
                _ => None,
            };
            if let Some(named) = named.filter(|n| !n.contains(path)) {
                return Err(format!("the error does not name the endpoint ({path}): {named}"));
            }
            let kind = kind(e);
            match expected_kind {
                Some(expected) if !kind.contains(expected) => Err(format!("{kind} where {expected} was due: {e}")),
                _ => Ok(kind),
            }
        }
        (Outcome::Failed(e), _) => Err(format!("failed where a correct answer was due: {e}")),
    }
}

fn kind(e: &Error) -> String {
    match e {
        Error::Http { status, .. } => format!("Http {status}"),
        Error::Transport { .. } => "Transport".into(),
        Error::Decode { .. } => "Decode".into(),
        Error::Deadline { deadline, .. } => format!("Deadline {deadline}"),
        Error::Exhausted { attempts, last } => format!("Exhausted({attempts}, {})", kind(last)),
        other => format!("{other:?}").chars().take(40).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_survives_every_fault() {
    let started = Instant::now();
    let mut cases = Vec::new();
    for dialect in [openai(), azure(), mistral(), anthropic(), gemini(), ollama()] {
        for fault in faults() {
            for streaming in [false, true] {
                cases.push((dialect.clone(), fault.clone(), streaming, IoRuntime::Caller));
            }
        }
    }
    // The deadlines run on the client's own thread when it has one (notebooks): the timing faults again there.
    for dialect in [openai(), anthropic(), gemini(), ollama()] {
        for fault in
            [Fault::None, Fault::StallAfterFirstChunk, Fault::NeverAnswer, Fault::SlowDrip, Fault::ResetMidBody]
        {
            for streaming in [false, true] {
                cases.push((dialect.clone(), fault.clone(), streaming, IoRuntime::Dedicated));
            }
        }
    }
    let total = cases.len();
    let run = |(dialect, fault, streaming, io): (Dialect, Fault, bool, IoRuntime)| async move {
        let server = FaultServer::start(dialect.clone(), fault.clone()).await;
        let llm = client(dialect.name, &server.base_url, &fault, io);
        let t = Instant::now();
        let outcome = call(llm, streaming).await;
        let elapsed = t.elapsed();
        let verdict = check(
            &outcome,
            expectation(&fault, streaming),
            expected_kind(&fault, streaming),
            endpoint_path(dialect.name, streaming),
        )
        .and_then(|v| match elapsed > budget(&fault) {
            true => Err(format!("{v}, but after {elapsed:.1?}: past its deadlines ({:?})", budget(&fault))),
            false => Ok(v),
        });
        (dialect.name, fault, streaming, io, verdict, elapsed, server.requests())
    };
    // The small ones all at once (the slow ones, waiting out deadlines and Retry-After, overlap), then the 50 MB
    // answers one at a time (building and parsing them would starve the others' clocks on a small machine).
    let (huge, small): (Vec<_>, Vec<_>) = cases.into_iter().partition(|(_, fault, _, _)| *fault == Fault::Huge);
    let mut results = futures::future::join_all(small.into_iter().map(run)).await;
    for case in huge {
        results.push(run(case).await);
    }
    let mut failures = Vec::new();
    let (mut correct, mut typed) = (0, 0);
    println!("| provider | mode | fault | outcome | requests | time |");
    println!("|---|---|---|---|---|---|");
    for (provider, fault, streaming, io, verdict, elapsed, requests) in &results {
        let mode = match (streaming, io) {
            (false, IoRuntime::Caller) => "chat",
            (true, IoRuntime::Caller) => "stream",
            (false, IoRuntime::Dedicated) => "chat (own I/O thread)",
            (true, IoRuntime::Dedicated) => "stream (own I/O thread)",
        };
        let fault_name = match fault {
            Fault::EchoedKey(_) => "EchoedKey".to_string(),
            other => format!("{other:?}"),
        };
        let shown = match verdict {
            Ok(v) => {
                if v.starts_with("correct") {
                    correct += 1;
                } else {
                    typed += 1;
                }
                v.clone()
            }
            Err(problem) => {
                failures.push(format!("{provider} {mode} {fault_name}: {problem}"));
                format!("FAILED: {problem}")
            }
        };
        println!("| {provider} | {mode} | {fault_name} | {shown} | {requests} | {:.2} s |", elapsed.as_secs_f64());
    }
    println!(
        "\n{total} calls: {correct} correct answers, {typed} typed errors, {} failures (panics, hangs, wrong answers, \
         leaks) in {:.1} s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A server whose accept queue is full never completes a connection (the kernel drops further handshakes): every
/// client, streaming or not, ends at its connect deadline, naming the endpoint, after its retries (nothing was
/// sent, so a connect failure is retried), well within its deadlines' budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_accepts_ends_at_the_connect_deadline() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    // Fill the accept queue (nothing accepts): later connections wait for an answer to their handshake.
    let mut held = Vec::new();
    while held.len() < 65_536 {
        match std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
            Ok(stream) => held.push(stream),
            Err(_) => break,
        }
    }
    assert!(held.len() < 65_536, "the accept queue never filled");
    let base = format!("http://{address}");
    let cases: Vec<(&str, bool)> = ["openai", "azure", "mistral", "anthropic", "gemini", "ollama"]
        .into_iter()
        .flat_map(|name| [(name, false), (name, true)])
        .collect();
    // The connect deadline first (for a stream, the first-chunk deadline also covers connecting).
    let deadlines = Deadlines::none()
        .with_connect(Duration::from_secs(1))
        .with_first_chunk(Duration::from_secs(3))
        .with_total(Duration::from_secs(4));
    let outcomes = futures::future::join_all(cases.iter().map(|&(name, streaming)| {
        let llm = client_with(name, &base, deadlines, IoRuntime::Caller);
        async move {
            let started = Instant::now();
            (call(llm, streaming).await, started.elapsed())
        }
    }))
    .await;
    for ((name, streaming), (outcome, elapsed)) in cases.iter().zip(&outcomes) {
        let Outcome::Failed(e) = outcome else { panic!("{name} (streaming: {streaming}): {outcome:?}") };
        assert_eq!(kind(e), "Exhausted(3, Deadline connect)", "{name} (streaming: {streaming}): {e}");
        let Error::Exhausted { last, .. } = e else { unreachable!() };
        assert!(
            matches!(&**last, Error::Deadline { endpoint, .. } if endpoint.contains(&address.to_string())),
            "{name}: the error names the server: {last}"
        );
        assert!(*elapsed <= budget(&Fault::NeverAnswer), "{name} (streaming: {streaming}) took {elapsed:?}");
    }
    drop((held, listener));
}
