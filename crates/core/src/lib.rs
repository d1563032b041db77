//! Core traits and building blocks of catena.
//!
//! - Data model: [`Message`], [`ChatRequest`], [`ChatResponse`], [`ChatChunk`], [`Document`].
//! - Traits: [`Llm`], [`Embedder`], [`VectorStore`], [`Retriever`], [`Chain`].
//! - Building blocks: [`prompt`] templates, [`chain`] combinators and steps, [`layer`]s (middleware), [`rag`].
//!
//! Loaders and splitters live in `catena-text`, indexing in `catena-index`; validating and enforcing
//! constraints, structured generation and Guidance-style templates in `catena-constraint`.
//!
//! This crate knows no HTTP and no vendor: providers and stores live in `catena-providers` and
//! `catena-vectorstores` and depend on this crate only.

#![warn(missing_docs)]

pub mod chain;
pub mod completion;
pub mod constraint;
pub mod document;
pub mod embed;
pub mod error;
pub mod layer;
pub mod llm;
pub mod message;
pub mod prompt;
pub mod rag;
pub mod rerank;
pub mod retriever;
pub mod steps;
pub mod telemetry;
pub mod tool;
pub mod vectorstore;

pub use chain::{chain_fn, parallel, parallel_map, stream_once, BoxChain, Chain, ChainStream, RetryPolicy};
pub use completion::{CompletionPrompt, GrammarCompletion, GrammarOutput, GrammarRequest};
pub use constraint::Constraint;
pub use document::{stable_id, Document, Metadata, ScoredDocument, SOURCE_KEY, START_INDEX_KEY};
pub use embed::{BatchedEmbedder, Embedder};
pub use error::{Deadline, Error, Result};
pub use llm::{collect_stream, Capabilities, ChatStream, ConstraintSupport, Llm, Strategy};
pub use message::{
    ChatChunk, ChatRequest, ChatResponse, ChatResponseBuilder, ContentPart, FinishReason, Message, Reasoning,
    ReasoningDelta, Role, ToolCall, ToolCallDelta, ToolChoice, ToolDefinition, Usage,
};
pub use prompt::*;
pub use rag::{RagChain, RagEvent};
pub use rerank::{LlmReranker, Reranker, RerankingRetriever};
pub use retriever::{mmr_select, EnsembleRetriever, MmrRetriever, Retriever, VectorRetriever, DEFAULT_RRF_K};
pub use steps::{JsonOutput, LlmChain, PromptChain, TextOutput, TypedOutput};
pub use tool::{
    chain_tool, output_text, retriever_tool, tool_fn, ChainTool, FnTool, Passage, RetrieverTool, SearchArgs, Tool,
    ToolError,
};
pub use vectorstore::{EmbeddedDocument, Filter, SearchRequest, VectorStore};

/// Re-exported so users can write `#[async_trait]` impls of catena traits without adding the crate.
pub use async_trait::async_trait;
/// The `futures` crate whose `Stream` trait catena's streams implement, re-exported so that
/// `catena::futures::StreamExt` always matches them (no second copy of `futures` to add or keep in step).
pub use futures;
