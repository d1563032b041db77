//! Retrieval-augmented generation: [`RagChain`] answers a question from retrieved documents and returns the
//! [`Answer`] with its numbered [`Source`]s.
//!
//! question -> [`Retriever`] -> [`ChatPromptTemplate`] with numbered sources -> [`Llm`] -> [`Answer`].
//! The default prompt asks the model to cite sources as `[n]`; replace it with [`RagChain::with_prompt`]
//! (its variables: `question`, and `sources`, a list of `{rank, id, source, score, content}`).

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::chain::{Chain, ChainStream};
use crate::document::ScoredDocument;
use crate::error::Result;
use crate::llm::Llm;
use crate::message::{ChatRequest, ChatResponseBuilder, FinishReason, Usage};
use crate::prompt::ChatPromptTemplate;
use crate::retriever::Retriever;

/// The default system prompt of [`RagChain`]: short, so that small local models follow it too.
pub const DEFAULT_RAG_SYSTEM_PROMPT: &str =
    "Answer the question using the numbered sources. Cite the sources you use by number, like [1]. \
If the sources do not contain the answer, say that you do not know.";

/// The default user prompt of [`RagChain`]: the numbered sources, then the question, then the reminder to be brief
/// and cite (instructions right before the answer are the ones small models follow).
pub const DEFAULT_RAG_USER_PROMPT: &str =
    "{{#each sources}}[{{rank}}] {{content}}\n\n{{/each}}Question: {{question}}\n\
Answer in a few sentences and cite sources like [1].";

/// A retrieved document as cited in an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The number the prompt gave it (1-based; `[1]` in the answer).
    pub rank: usize,
    /// The document id.
    pub id: String,
    /// Where it came from (the `source` metadata), or the id when unknown.
    pub source: String,
    /// The retrieval score.
    pub score: f32,
    /// The document text.
    pub content: String,
}

impl Source {
    fn from_scored(rank: usize, hit: ScoredDocument) -> Self {
        let source = hit.document.source().unwrap_or(&hit.document.id).to_string();
        Source { rank, id: hit.document.id, source, score: hit.score, content: hit.document.content }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {} (score {:.4})", self.rank, self.source, self.score)
    }
}

/// An answer with the sources it was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The model's answer.
    pub text: String,
    /// The sources in the prompt, in rank order.
    pub sources: Vec<Source>,
    /// Token counts of the model call, when reported.
    pub usage: Option<Usage>,
    /// Why the model stopped (`Length` means the answer was cut at the token limit), when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.text.trim_end())?;
        if !self.sources.is_empty() {
            writeln!(f, "\nSources:")?;
            for s in &self.sources {
                writeln!(f, "  {s}")?;
            }
        }
        Ok(())
    }
}

/// An event of a streamed RAG answer: text deltas, then one `Done` with the whole answer and its sources.
#[derive(Debug, Clone, PartialEq)]
pub enum RagEvent {
    /// A piece of the answer text.
    Text(String),
    /// The end: the complete answer with its sources and usage.
    Done(Answer),
}

/// Question in, [`Answer`] with sources out.
///
/// ```no_run
/// # use std::sync::Arc;
/// use catena_core::{Chain, Llm, RagChain, Retriever};
/// # async fn demo(retriever: Arc<dyn Retriever>, llm: Arc<dyn Llm>) -> catena_core::Result<()> {
/// let rag = RagChain::new(retriever, llm)?;
/// let answer = rag.invoke("What is ownership?".to_string()).await?;
/// println!("{answer}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RagChain {
    retriever: Arc<dyn Retriever>,
    llm: Arc<dyn Llm>,
    prompt: ChatPromptTemplate,
    request: ChatRequest,
    record_content: bool,
}

impl fmt::Debug for RagChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RagChain").field("llm", &self.llm.capabilities().backend).field("prompt", &self.prompt).finish()
    }
}

#[derive(Serialize)]
struct PromptVars<'a> {
    question: &'a str,
    sources: &'a [Source],
}

impl RagChain {
    /// A RAG chain with the default prompt.
    ///
    /// # Errors
    /// Never in practice (the default prompt compiles); the signature leaves room for validation.
    pub fn new(retriever: Arc<dyn Retriever>, llm: Arc<dyn Llm>) -> Result<Self> {
        let prompt =
            ChatPromptTemplate::builder().system(DEFAULT_RAG_SYSTEM_PROMPT).user(DEFAULT_RAG_USER_PROMPT).build()?;
        Ok(RagChain { retriever, llm, prompt, request: ChatRequest::default(), record_content: false })
    }

    /// Replaces the prompt (variables: `question`, `sources`).
    pub fn with_prompt(mut self, prompt: ChatPromptTemplate) -> Self {
        self.prompt = prompt;
        self
    }

    /// Uses `request`'s settings (model, temperature, max tokens, ...) for the model call.
    pub fn with_request(mut self, request: ChatRequest) -> Self {
        self.request = request;
        self
    }

    /// Also records the question and the whole [`Answer`] (text, sources with their texts, usage) as JSON on the
    /// chain's span (`catena.chain.input`, `catena.chain.output`), so that a run recorder keeps them: the studio
    /// shows them, and a recorded run can be saved as a dataset example. They may hold personal data: turn this
    /// on deliberately, as with `TelemetryLayer::record_content`. Off by default.
    pub fn with_recorded_content(mut self, on: bool) -> Self {
        self.record_content = on;
        self
    }

    /// Retrieves and numbers the sources for `question`, without calling the model.
    pub async fn sources(&self, question: &str) -> Result<Vec<Source>> {
        let hits = self.retriever.retrieve(question).await?;
        Ok(hits.into_iter().enumerate().map(|(i, h)| Source::from_scored(i + 1, h)).collect())
    }

    async fn prepare(&self, question: &str) -> Result<(Vec<Source>, ChatRequest)> {
        let sources = self.sources(question).await?;
        let messages = self.prompt.format(&PromptVars { question, sources: &sources })?;
        Ok((sources, ChatRequest { messages, ..self.request.clone() }))
    }
}

fn rag_span(question: &str, record_content: bool) -> tracing::Span {
    let span = tracing::info_span!(
        "chain",
        gen_ai.operation.name = "chain",
        catena.chain.step = "rag",
        catena.latency_ms = tracing::field::Empty,
        catena.chain.input = tracing::field::Empty,
        catena.chain.output = tracing::field::Empty,
    );
    if record_content && !span.is_disabled() {
        record_json(&span, "catena.chain.input", &question);
    }
    span
}

/// Records `value` as JSON on `span` (a value that does not serialise is left out, with a warning).
fn record_json(span: &tracing::Span, field: &'static str, value: &impl Serialize) {
    match serde_json::to_string(value) {
        Ok(json) => {
            span.record(field, json.as_str());
        }
        Err(e) => tracing::warn!(parent: span, field, error = %e, "chain content not recorded"),
    }
}

#[async_trait]
impl Chain for RagChain {
    type Input = String;
    type Output = Answer;
    type Chunk = RagEvent;

    async fn invoke(&self, question: String) -> Result<Answer> {
        let span = rag_span(&question, self.record_content);
        async move {
            let start = Instant::now();
            let (sources, request) = self.prepare(&question).await?;
            let response = self.llm.chat(request).await?;
            let span = tracing::Span::current();
            span.record("catena.latency_ms", start.elapsed().as_secs_f64() * 1e3);
            let answer =
                Answer { text: response.text(), sources, usage: response.usage, finish_reason: response.finish_reason };
            if self.record_content {
                record_json(&span, "catena.chain.output", &answer);
            }
            Ok(answer)
        }
        .instrument(span)
        .await
    }

    /// Streams text deltas and ends with [`RagEvent::Done`]. A backend that cannot stream answers in one
    /// [`RagEvent::Text`] (with a logged warning; see [`Chain::streams_incrementally`]).
    fn stream(&self, question: String) -> ChainStream<RagEvent> {
        let span = rag_span(&question, self.record_content);
        // The chain's span stays open until the answer is complete (`Done`) or fails, not only while the future
        // below builds the stream; the answer is recorded on it then, with content recording on.
        let mut open_span = (!span.is_disabled()).then(|| span.clone());
        let record_content = self.record_content;
        let this = self.clone();
        let fut = async move {
            let (sources, request) = this.prepare(&question).await?;
            if !this.llm.capabilities().streaming {
                tracing::warn!(backend = %this.llm.capabilities().backend, "backend cannot stream; answering in one chunk");
                let response = this.llm.chat(request).await?;
                let answer = Answer { text: response.text(), sources, usage: response.usage, finish_reason: response.finish_reason };
                let events = vec![Ok(RagEvent::Text(answer.text.clone())), Ok(RagEvent::Done(answer))];
                return Ok(futures::stream::iter(events).boxed());
            }
            let inner = this.llm.chat_stream(request).await?;
            let state = (inner, ChatResponseBuilder::default(), Some(sources));
            let events = futures::stream::unfold(state, |(mut inner, mut builder, mut sources)| async move {
                loop {
                    let sources_left = sources.take()?;
                    match inner.next().await {
                        Some(Ok(chunk)) => {
                            builder.push(&chunk);
                            sources = Some(sources_left);
                            if let Some(t) = chunk.text.filter(|t| !t.is_empty()) {
                                return Some((Ok(RagEvent::Text(t)), (inner, builder, sources)));
                            }
                        }
                        Some(Err(e)) => return Some((Err(e), (inner, builder, None))),
                        None => {
                            let response = std::mem::take(&mut builder).finish();
                            let answer = Answer {
                                text: response.text(),
                                sources: sources_left,
                                usage: response.usage,
                                finish_reason: response.finish_reason,
                            };
                            return Some((Ok(RagEvent::Done(answer)), (inner, builder, None)));
                        }
                    }
                }
            });
            Ok(events.boxed())
        }
        .instrument(span);
        Box::pin(
            futures::stream::once(fut)
                .map(|r| match r {
                    Ok(s) => s,
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                })
                .flatten()
                .inspect(move |event| match event {
                    Ok(RagEvent::Done(answer)) => {
                        if let Some(span) = open_span.take() {
                            if record_content {
                                record_json(&span, "catena.chain.output", answer);
                            }
                        }
                    }
                    Err(_) => drop(open_span.take()),
                    Ok(RagEvent::Text(_)) => {}
                }),
        )
    }

    fn streams_incrementally(&self) -> bool {
        self.llm.capabilities().streaming
    }
}
