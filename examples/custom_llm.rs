//! Your own model: implement the `Llm` trait, then use it like any other (chains, layers, `Arc<dyn Llm>`).
//!
//! ```text
//! cargo run --example custom_llm
//! ```
//!
//! `Echo` is a rule-based "model" that repeats the last user message, streamed word by word. An implementation
//! says what it supports (`capabilities`, checked against every request), names its default model, and answers
//! with `chat` and `chat_stream`; the stream's chunks must fold into the response `chat` returns. No model file
//! is needed.

#[path = "common/trace.rs"]
mod traces;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use catena::layer::{LayerExt, RetryLayer, RetryPolicy, TimeoutLayer, Timeouts};
use catena::{async_trait, Capabilities, Chain, ChatChunk, ChatPromptTemplate, ChatRequest, ChatResponse, ChatStream};
use catena::{FinishReason, Llm, Message, Role, TextOutput, Usage};
use futures::StreamExt;

const MODEL: &str = "echo-1";

struct Echo;

/// The answer's words (each with its trailing space), its usage and why it ends.
fn reply(request: &ChatRequest) -> (Vec<String>, Usage, FinishReason) {
    let last_user = request.messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.text()).unwrap_or_default();
    let mut words: Vec<String> = format!("You said: {last_user}").split_inclusive(' ').map(String::from).collect();
    let limit = request.max_tokens.map_or(usize::MAX, |n| n as usize);
    let finish = if words.len() > limit { FinishReason::Length } else { FinishReason::Stop };
    words.truncate(limit);
    let input = request.messages.iter().map(|m| m.text().split_whitespace().count() as u64).sum();
    let output = words.len() as u64;
    let usage = Usage { input_tokens: input, output_tokens: output, total_tokens: input + output, ..Usage::default() };
    (words, usage, finish)
}

#[async_trait]
impl Llm for Echo {
    fn capabilities(&self) -> Capabilities {
        Capabilities { streaming: true, streaming_usage: true, ..Capabilities::minimal("echo") }
    }
    fn default_model(&self) -> Option<String> {
        Some(MODEL.to_string())
    }
    async fn chat(&self, request: ChatRequest) -> catena::Result<ChatResponse> {
        self.capabilities().check(&request, false)?; // rejects tools, constraints, seeds, ...: nothing is ignored
        let (words, usage, finish) = reply(&request);
        let message = Message::assistant(words.concat());
        Ok(ChatResponse {
            message,
            finish_reason: Some(finish),
            usage: Some(usage),
            model: MODEL.into(),
            raw: Default::default(),
        })
    }
    async fn chat_stream(&self, request: ChatRequest) -> catena::Result<ChatStream> {
        self.capabilities().check(&request, true)?;
        let (words, usage, finish) = reply(&request);
        let deltas = words.into_iter().map(|w| ChatChunk { text: Some(w), ..ChatChunk::default() });
        let last = ChatChunk {
            usage: Some(usage),
            finish_reason: Some(finish),
            model: Some(MODEL.into()),
            ..ChatChunk::default()
        };
        Ok(Box::pin(futures::stream::iter(deltas.chain([last]).map(Ok))))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let tracing = traces::init()?; // the log, and run recording when CATENA_TRACE_DB is set
                                   // Under layers, as any provider would be: a deadline per attempt, and retries of retryable errors.
    let layered = Echo
        .layer(TimeoutLayer::new(Timeouts::none().with_total(Duration::from_secs(5))))
        .layer(RetryLayer::new(RetryPolicy::new(2)?));
    let llm: Arc<dyn Llm> = Arc::new(layered);
    let llm = tracing.llm(llm);
    println!("default model: {:?}", llm.default_model());

    // In a chain: template -> model -> text.
    let prompt = ChatPromptTemplate::builder().user("Tell me about {{topic}}.").build()?;
    let chain = prompt.then(llm.clone()).then(TextOutput);
    println!("chain: {}", chain.invoke(serde_json::json!({"topic": "crabs"})).await?);

    // Streamed word by word; a token limit ends the answer early.
    let request = ChatRequest::new(vec![Message::user("one two three four five six")]).with_max_tokens(5);
    let mut stream = llm.chat_stream(request).await?;
    let mut words = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        words.extend(chunk.text);
        if let Some(reason) = chunk.finish_reason {
            println!("stream: {words:?}, finish reason {reason:?}, usage {:?}", chunk.usage);
        }
    }
    Ok(())
}
