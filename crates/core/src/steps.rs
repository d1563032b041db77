//! Chain steps around the core traits: prompt templates ([`ChatPromptTemplate`] itself, or [`PromptChain`] for
//! typed variables), models (`Arc<dyn Llm>` itself, or [`LlmChain`] with request settings), retrievers
//! (`Arc<dyn Retriever>`) and output parsers ([`TextOutput`], [`JsonOutput`], [`TypedOutput`]), so
//! `prompt.then(llm).then(TextOutput)` is a chain.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Serialize;

use crate::chain::{stream_once, Chain, ChainStream};
use crate::document::ScoredDocument;
use crate::error::Result;
use crate::llm::Llm;
use crate::message::{ChatChunk, ChatRequest, ChatResponse, Message};
use crate::prompt::ChatPromptTemplate;
use crate::retriever::Retriever;

/// A [`ChatPromptTemplate`] as a chain from typed variables `T` to messages.
pub struct PromptChain<T> {
    template: ChatPromptTemplate,
    _input: PhantomData<fn(T)>,
}

impl<T> Clone for PromptChain<T> {
    fn clone(&self) -> Self {
        PromptChain { template: self.template.clone(), _input: PhantomData }
    }
}

impl<T> std::fmt::Debug for PromptChain<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PromptChain").field(&self.template).finish()
    }
}

impl<T> PromptChain<T> {
    /// Wraps a template; `T` is the type of the variables it is rendered with.
    pub fn new(template: ChatPromptTemplate) -> Self {
        PromptChain { template, _input: PhantomData }
    }
}

#[async_trait]
impl<T: Serialize + Send + Sync + 'static> Chain for PromptChain<T> {
    type Input = T;
    type Output = Vec<Message>;
    type Chunk = Vec<Message>;
    async fn invoke(&self, input: T) -> Result<Vec<Message>> {
        let _span =
            tracing::info_span!("chain", gen_ai.operation.name = "chain", catena.chain.step = "prompt").entered();
        self.template.format(&input)
    }
    fn stream(&self, input: T) -> ChainStream<Vec<Message>> {
        // Rendering is synchronous: done now, the stream just hands the result over.
        let rendered = self.template.format(&input);
        stream_once(async move { rendered })
    }
}

/// A chat model as a chain from messages to its whole [`ChatResponse`] (text, tool calls, usage, finish reason).
/// Its stream yields the backend's [`ChatChunk`]s when it streams; when it cannot
/// ([`crate::Capabilities::streaming`] is false), the stream makes one `chat` call and yields the whole answer as
/// one chunk, and [`Chain::streams_incrementally`] says `false`.
///
/// An `Arc<dyn Llm>` is itself a chain with the default request settings; wrap it in `LlmChain` to set them
/// (model, temperature, max tokens, a constraint, ...). Parse the answer with a following step
/// ([`TextOutput`], [`JsonOutput`], [`TypedOutput`]).
///
/// ```no_run
/// # use std::sync::Arc;
/// use catena_core::{chain_fn, Chain, ChatRequest, LlmChain, Llm, Message, TextOutput};
/// # async fn demo(llm: Arc<dyn Llm>) -> catena_core::Result<()> {
/// let ask = chain_fn(|q: String| async move { Ok(vec![Message::user(q)]) })
///     .then(LlmChain::new(llm).with_request(ChatRequest::default().with_temperature(0.0)))
///     .then(TextOutput);
/// println!("{}", ask.invoke("Why Rust?".into()).await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LlmChain {
    llm: Arc<dyn Llm>,
    request: ChatRequest,
}

impl std::fmt::Debug for LlmChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmChain").field("backend", &self.llm.capabilities().backend).finish()
    }
}

impl LlmChain {
    /// Wraps a model with default request settings.
    pub fn new(llm: Arc<dyn Llm>) -> Self {
        LlmChain { llm, request: ChatRequest::default() }
    }
    /// Uses `request`'s settings (model, temperature, max tokens, stop, constraint, ...) for every call; its
    /// messages are replaced by the chain's input.
    pub fn with_request(mut self, request: ChatRequest) -> Self {
        self.request = request;
        self
    }
    fn request(&self, messages: Vec<Message>) -> ChatRequest {
        ChatRequest { messages, ..self.request.clone() }
    }
}

fn model_stream(llm: Arc<dyn Llm>, request: ChatRequest) -> ChainStream<ChatChunk> {
    if !llm.capabilities().streaming {
        return stream_once(async move { Ok(ChatChunk::from(llm.chat(request).await?)) });
    }
    Box::pin(
        futures::stream::once(async move { llm.chat_stream(request).await })
            .map(|r| match r {
                Ok(s) => s,
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten(),
    )
}

#[async_trait]
impl Chain for LlmChain {
    type Input = Vec<Message>;
    type Output = ChatResponse;
    type Chunk = ChatChunk;
    async fn invoke(&self, input: Vec<Message>) -> Result<ChatResponse> {
        self.llm.chat(self.request(input)).await
    }
    fn stream(&self, input: Vec<Message>) -> ChainStream<ChatChunk> {
        model_stream(self.llm.clone(), self.request(input))
    }
    fn streams_incrementally(&self) -> bool {
        self.llm.capabilities().streaming
    }
}

/// A shared model is a chain step from messages to its [`ChatResponse`], with default request settings (see
/// [`LlmChain`] to set them).
#[async_trait]
impl Chain for Arc<dyn Llm> {
    type Input = Vec<Message>;
    type Output = ChatResponse;
    type Chunk = ChatChunk;
    async fn invoke(&self, input: Vec<Message>) -> Result<ChatResponse> {
        self.chat(ChatRequest::new(input)).await
    }
    fn stream(&self, input: Vec<Message>) -> ChainStream<ChatChunk> {
        model_stream(self.clone(), ChatRequest::new(input))
    }
    fn streams_incrementally(&self) -> bool {
        self.capabilities().streaming
    }
}

/// A shared retriever is a chain step from a query to scored documents.
#[async_trait]
impl Chain for Arc<dyn Retriever> {
    type Input = String;
    type Output = Vec<ScoredDocument>;
    type Chunk = Vec<ScoredDocument>;
    async fn invoke(&self, input: String) -> Result<Vec<ScoredDocument>> {
        self.retrieve(&input).await
    }
    fn stream(&self, input: String) -> ChainStream<Vec<ScoredDocument>> {
        let retriever = self.clone();
        stream_once(async move { retriever.retrieve(&input).await })
    }
}

/// A chat prompt template as a chain step: its variables as a JSON object in, the messages out. For typed
/// variables, use [`PromptChain`].
#[async_trait]
impl Chain for ChatPromptTemplate {
    type Input = serde_json::Value;
    type Output = Vec<Message>;
    type Chunk = Vec<Message>;
    async fn invoke(&self, input: serde_json::Value) -> Result<Vec<Message>> {
        self.format(&input)
    }
    fn stream(&self, input: serde_json::Value) -> ChainStream<Vec<Message>> {
        let rendered = self.format(&input);
        stream_once(async move { rendered })
    }
}

/// Output parser: a model's answer as its text.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextOutput;

#[async_trait]
impl Chain for TextOutput {
    type Input = ChatResponse;
    type Output = String;
    type Chunk = String;
    async fn invoke(&self, input: ChatResponse) -> Result<String> {
        Ok(input.text())
    }
    fn stream(&self, input: ChatResponse) -> ChainStream<String> {
        stream_once(async move { Ok(input.text()) })
    }
}

/// Output parser: a model's answer as JSON. The text may wrap the value in a Markdown code fence or prose; the
/// first JSON value found is taken. No value is [`crate::Error::InvalidOutput`] holding the text.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOutput;

fn parse_json(text: &str) -> Result<serde_json::Value> {
    let fail = |reason: String| crate::Error::InvalidOutput {
        raw: text.to_string(),
        reason,
        attempts: 1,
        strategy: crate::llm::Strategy::ValidateAndRepair,
    };
    if let Ok(v) = serde_json::from_str(text.trim()) {
        return Ok(v);
    }
    let start = text.find(['{', '[']).ok_or_else(|| fail("the answer holds no JSON value".into()))?;
    serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<serde_json::Value>()
        .next()
        .ok_or_else(|| fail("the answer holds no JSON value".into()))?
        .map_err(|e| fail(format!("the answer is not valid JSON: {e}")))
}

#[async_trait]
impl Chain for JsonOutput {
    type Input = ChatResponse;
    type Output = serde_json::Value;
    type Chunk = serde_json::Value;
    async fn invoke(&self, input: ChatResponse) -> Result<serde_json::Value> {
        parse_json(&input.text())
    }
    fn stream(&self, input: ChatResponse) -> ChainStream<serde_json::Value> {
        stream_once(async move { parse_json(&input.text()) })
    }
}

/// Output parser: a model's answer as a typed value `T`, read from its JSON (as [`JsonOutput`] finds it).
/// For answers that must match `T`'s schema by construction, ask with a constraint
/// (`catena_constraint::StructuredChain`) instead.
pub struct TypedOutput<T>(PhantomData<fn() -> T>);

impl<T> TypedOutput<T> {
    /// A parser into `T`.
    pub fn new() -> Self {
        TypedOutput(PhantomData)
    }
}

impl<T> Default for TypedOutput<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for TypedOutput<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for TypedOutput<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TypedOutput<{}>", std::any::type_name::<T>())
    }
}

fn parse_typed<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    let value = parse_json(text)?;
    serde_json::from_value(value).map_err(|e| crate::Error::InvalidOutput {
        raw: text.to_string(),
        reason: format!("the JSON does not fit {}: {e}", std::any::type_name::<T>()),
        attempts: 1,
        strategy: crate::llm::Strategy::ValidateAndRepair,
    })
}

#[async_trait]
impl<T: serde::de::DeserializeOwned + Send + 'static> Chain for TypedOutput<T> {
    type Input = ChatResponse;
    type Output = T;
    type Chunk = T;
    async fn invoke(&self, input: ChatResponse) -> Result<T> {
        parse_typed(&input.text())
    }
    fn stream(&self, input: ChatResponse) -> ChainStream<T> {
        stream_once(async move { parse_typed(&input.text()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::chain_fn;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn streams_outlive_their_chain_and_cross_tasks() {
        let chain = chain_fn(|n: u32| async move { Ok(n * 2) }).then(chain_fn(|n: u32| async move { Ok(n + 1) }));
        let stream = chain.stream(20);
        drop(chain);
        let out: Vec<u32> = tokio::spawn(async move { stream.try_collect().await }).await.unwrap().unwrap();
        assert_eq!(out, vec![41]);
    }

    /// The model step here is a closure returning a fixed answer: the parsers' behaviour is what is tested (real
    /// models run through chains in the workspace's `tests/rag.rs`).
    #[tokio::test]
    async fn templates_and_output_parsers_are_chain_steps() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Crab {
            name: String,
            legs: u8,
        }
        let prompt = ChatPromptTemplate::builder().user("Describe {{animal}} as JSON.").build().unwrap();
        let answer = |text: &'static str| {
            chain_fn(move |messages: Vec<Message>| async move {
                assert!(messages[0].text().contains("a crab"));
                Ok(ChatResponse {
                    message: Message::assistant(text),
                    finish_reason: None,
                    usage: None,
                    model: "closure".into(),
                    raw: serde_json::Value::Null,
                })
            })
        };
        let json = "Here:\n```json\n{\"name\": \"Ferris\", \"legs\": 10}\n```";
        let vars = serde_json::json!({"animal": "a crab"});
        let typed = prompt.clone().then(answer(json)).then(TypedOutput::<Crab>::new());
        assert_eq!(typed.invoke(vars.clone()).await.unwrap(), Crab { name: "Ferris".into(), legs: 10 });
        let value = prompt.clone().then(answer(json)).then(JsonOutput).invoke(vars.clone()).await.unwrap();
        assert_eq!(value["legs"], 10);
        let text = prompt.clone().then(answer("plain")).then(TextOutput).invoke(vars.clone()).await.unwrap();
        assert_eq!(text, "plain");
        let err = prompt.then(answer("no json here")).then(JsonOutput).invoke(vars).await.unwrap_err();
        assert!(matches!(err, crate::Error::InvalidOutput { .. }), "{err}");
    }
}
