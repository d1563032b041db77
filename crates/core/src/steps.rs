//! Ready-made chain steps around the core traits: a prompt ([`PromptChain`]), a model ([`LlmChain`]) and a
//! retriever ([`RetrieverChain`]), so `prompt.then(llm)` is a chain whose text streams.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Serialize;

use crate::chain::{stream_once, Chain, ChainStream};
use crate::document::ScoredDocument;
use crate::error::Result;
use crate::llm::Llm;
use crate::message::{ChatRequest, Message};
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
    fn stream(&self, input: T) -> ChainStream<'_, Vec<Message>> {
        stream_once(self.invoke(input))
    }
}

/// A chat model as a chain from messages to the answer's text. Its stream yields text deltas when the backend
/// streams; when it cannot ([`crate::Capabilities::streaming`] is false), the stream makes one `chat` call and
/// yields the whole text as one chunk, logs a warning, and [`Chain::streams_incrementally`] says `false`.
///
/// ```no_run
/// # use std::sync::Arc;
/// use catena_core::{chain_fn, Chain, ChatRequest, LlmChain, Llm, Message};
/// # async fn demo(llm: Arc<dyn Llm>) -> catena_core::Result<()> {
/// let ask = chain_fn(|q: String| async move { Ok(vec![Message::user(q)]) })
///     .then(LlmChain::new(llm).with_request(ChatRequest::default().with_temperature(0.0)));
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
    /// Uses `request`'s settings (model, temperature, max tokens, stop, ...) for every call; its messages are
    /// replaced by the chain's input.
    pub fn with_request(mut self, request: ChatRequest) -> Self {
        self.request = request;
        self
    }
    fn request(&self, messages: Vec<Message>) -> ChatRequest {
        ChatRequest { messages, ..self.request.clone() }
    }
}

#[async_trait]
impl Chain for LlmChain {
    type Input = Vec<Message>;
    type Output = String;
    type Chunk = String;
    async fn invoke(&self, input: Vec<Message>) -> Result<String> {
        Ok(self.llm.chat(self.request(input)).await?.text())
    }
    fn stream(&self, input: Vec<Message>) -> ChainStream<'_, String> {
        let request = self.request(input);
        if !self.llm.capabilities().streaming {
            tracing::warn!(backend = %self.llm.capabilities().backend, "backend cannot stream; answering in one chunk");
            return stream_once(async move { Ok(self.llm.chat(request).await?.text()) });
        }
        let llm = self.llm.clone();
        Box::pin(
            futures::stream::once(async move { llm.stream(request).await })
                .map(|r| match r {
                    Ok(s) => s.boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                })
                .flatten()
                .filter_map(|chunk| async move {
                    match chunk {
                        Ok(c) => c.text.filter(|t| !t.is_empty()).map(Ok),
                        Err(e) => Some(Err(e)),
                    }
                }),
        )
    }
    fn streams_incrementally(&self) -> bool {
        self.llm.capabilities().streaming
    }
}

/// A [`Retriever`] as a chain from a query to scored documents.
#[derive(Clone)]
pub struct RetrieverChain {
    retriever: Arc<dyn Retriever>,
}

impl std::fmt::Debug for RetrieverChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetrieverChain")
    }
}

impl RetrieverChain {
    /// Wraps a retriever.
    pub fn new(retriever: Arc<dyn Retriever>) -> Self {
        RetrieverChain { retriever }
    }
}

#[async_trait]
impl Chain for RetrieverChain {
    type Input = String;
    type Output = Vec<ScoredDocument>;
    type Chunk = Vec<ScoredDocument>;
    async fn invoke(&self, input: String) -> Result<Vec<ScoredDocument>> {
        self.retriever.retrieve(&input).await
    }
    fn stream(&self, input: String) -> ChainStream<'_, Vec<ScoredDocument>> {
        stream_once(self.invoke(input))
    }
}
