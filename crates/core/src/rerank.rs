//! Reranking: the [`Reranker`] trait, [`RerankingRetriever`] (retrieve wide, rerank, keep the best) and
//! [`LlmReranker`] (a chat model grades each passage).

use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};

use crate::constraint::Constraint;
use crate::document::ScoredDocument;
use crate::error::{Error, Result};
use crate::llm::{Llm, Strategy};
use crate::message::{ChatRequest, Message};
use crate::retriever::Retriever;

/// Reorders retrieved documents by their relevance to the query, best first. Every document given comes back
/// once, with the reranker's score in [`ScoredDocument::score`].
#[async_trait]
pub trait Reranker: Send + Sync {
    /// Scores `documents` against `query` and returns them best first.
    async fn rerank(&self, query: &str, documents: Vec<ScoredDocument>) -> Result<Vec<ScoredDocument>>;
}

#[async_trait]
impl<T: Reranker + ?Sized> Reranker for Arc<T> {
    async fn rerank(&self, query: &str, documents: Vec<ScoredDocument>) -> Result<Vec<ScoredDocument>> {
        (**self).rerank(query, documents).await
    }
}

/// Retrieves with an inner retriever (ask it for more than `k`), reranks what it found and keeps the best `k`.
#[derive(Clone)]
pub struct RerankingRetriever {
    inner: Arc<dyn Retriever>,
    reranker: Arc<dyn Reranker>,
    k: usize,
}

impl std::fmt::Debug for RerankingRetriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RerankingRetriever").field("k", &self.k).finish_non_exhaustive()
    }
}

impl RerankingRetriever {
    /// Reranks what `inner` returns with `reranker` and keeps the best `k`.
    pub fn new(inner: Arc<dyn Retriever>, reranker: Arc<dyn Reranker>, k: usize) -> Self {
        RerankingRetriever { inner, reranker, k }
    }
}

#[async_trait]
impl Retriever for RerankingRetriever {
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>> {
        let candidates = self.inner.retrieve(query).await?;
        let mut ranked = self.reranker.rerank(query, candidates).await?;
        ranked.truncate(self.k);
        Ok(ranked)
    }
}

/// A chat model as a reranker: for each passage it answers how relevant the passage is to the query, as one
/// grade from 0 to 10, and the grade divided by 10 is the score (ties keep the retrieval order).
///
/// The answer is constrained to the eleven grades ([`Constraint::Choice`]) when the model enforces choices
/// ([`crate::Capabilities::constraints`]: a local model with grammar support, or a server with structured
/// output); otherwise the model is asked for the number and its answer must start with one, else the rerank
/// fails with [`Error::InvalidOutput`] (nothing is guessed). One request per passage, `concurrency` at a time;
/// passages are cut to `max_chars` characters.
#[derive(Clone)]
pub struct LlmReranker {
    llm: Arc<dyn Llm>,
    request: ChatRequest,
    max_chars: usize,
    concurrency: usize,
}

impl std::fmt::Debug for LlmReranker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmReranker")
            .field("max_chars", &self.max_chars)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

const GRADES: [&str; 11] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];

impl LlmReranker {
    /// Grades with `llm`: greedy decoding (temperature 0), passages cut to 2,000 characters, 4 requests at a time.
    pub fn new(llm: Arc<dyn Llm>) -> Self {
        let request = ChatRequest::default().with_temperature(0.0).with_max_tokens(4);
        LlmReranker { llm, request, max_chars: 2000, concurrency: 4 }
    }

    /// Sets the request settings each grading call starts from (model, temperature, seed); its messages,
    /// constraint and token limit are replaced.
    pub fn with_request(mut self, request: ChatRequest) -> Self {
        self.request = request;
        self
    }

    /// Cuts passages to this many characters (at least 1).
    pub fn with_max_chars(mut self, max_chars: usize) -> Self {
        self.max_chars = max_chars.max(1);
        self
    }

    /// How many grading calls run at once (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    async fn grade(&self, query: &str, passage: String) -> Result<u32> {
        let passage: String = passage.chars().take(self.max_chars).collect();
        let constraint = Constraint::Choice(GRADES.iter().map(|g| g.to_string()).collect());
        let strategy = self.llm.capabilities().constraints.strategy_for(&constraint);
        let mut request = self.request.clone();
        request.messages = vec![
            Message::system(
                "You grade search results. Given a question and a passage, answer with one number from 0 to 10: how \
                 well the passage helps answer the question (0: unrelated, 10: answers it directly). Answer with the \
                 number only.",
            ),
            Message::user(format!("Question: {query}\n\nPassage:\n{passage}\n\nGrade (0-10):")),
        ];
        request.max_tokens = Some(4);
        request.constraint = strategy.map(|_| constraint);
        let response = self.llm.chat(request).await?;
        let text = response.text();
        let digits: String = text.trim_start().chars().take_while(char::is_ascii_digit).collect();
        match digits.parse::<u32>() {
            Ok(grade) if grade <= 10 => Ok(grade),
            _ => Err(Error::InvalidOutput {
                raw: text,
                reason: "a relevance grade must be a number from 0 to 10".into(),
                attempts: 1,
                strategy: strategy.unwrap_or(Strategy::ValidateAndRepair),
            }),
        }
    }
}

#[async_trait]
impl Reranker for LlmReranker {
    async fn rerank(&self, query: &str, documents: Vec<ScoredDocument>) -> Result<Vec<ScoredDocument>> {
        let passages: Vec<String> = documents.iter().map(|d| d.document.content.clone()).collect();
        let grades: Vec<u32> = futures::stream::iter(passages)
            .map(|passage| self.grade(query, passage))
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        let mut graded: Vec<(usize, u32, ScoredDocument)> =
            documents.into_iter().zip(grades).enumerate().map(|(i, (d, g))| (i, g, d)).collect();
        graded.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(graded
            .into_iter()
            .map(|(_, grade, mut d)| {
                d.score = grade as f32 / 10.0;
                d
            })
            .collect())
    }
}
