//! Text for catena: document [`loader`]s (text, Markdown, JSON/JSONL, directory trees) and text [`splitter`]s
//! (LangChain-identical recursive splitter, Markdown headers, tiktoken windows).
//!
//! Loaders turn files into [`catena_core::Document`]s, splitters cut them into chunks small enough to embed;
//! `catena-index` runs both (and an embedder and a vector store) incrementally over a folder.

#![warn(missing_docs)]

pub mod loader;
pub mod splitter;

pub use loader::*;
#[cfg(feature = "tokens")]
pub use splitter::{count_tokens, Encoding, TokenTextSplitter};
pub use splitter::{MarkdownSplitter, RecursiveCharacterTextSplitter, TextSplitter};
