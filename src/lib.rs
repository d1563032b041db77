//! # catena
//!
//! Build LLM applications in Rust: typed, composable chains; retrieval-augmented generation; providers for
//! OpenAI and every OpenAI-compatible server; vector stores; tracing of every run.
//!
//! This facade re-exports [`catena_core`] at its root, loaders and splitters as [`text`], and the provider,
//! vector-store, indexing and agent crates as [`providers`], [`vectorstores`], [`index`] and [`agent`] behind the
//! features of the same names (all on by default); in `vectorstores`, the SQLite store is the feature `sqlite` (on by default)
//! and the Chroma store the feature `chroma`.
//!
//! ```
//! use catena::{chain_fn, Chain};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> catena::Result<()> {
//! let greet = chain_fn(|name: String| async move { Ok(format!("Hello, {name}!")) });
//! assert_eq!(greet.invoke("Ferris".into()).await?, "Hello, Ferris!");
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub use catena_core::*;

/// Structured output: constraints and their validation, structured generation, Guidance-style templates, GBNF,
/// the grammar engine (`catena-constraint`; replaces `catena_core::constraint`, which it re-exports).
pub use catena_constraint as constraint;
pub use catena_constraint::{gbnf, guidance, structured};
pub use catena_constraint::{
    Constrained, LlmStructuredExt, Program, ProgramChain, RepairPolicy, Structured, StructuredChain, Validator,
};

/// Document loaders and text splitters (`catena-text`).
pub use catena_text as text;

/// Model providers (`catena-providers`).
#[cfg(feature = "providers")]
pub use catena_providers as providers;

/// Agents: a model and its tools in a loop, with budgets, approval and memory (`catena-agent`).
#[cfg(feature = "agent")]
pub use catena_agent as agent;

/// The Model Context Protocol: MCP servers' tools as catena tools, catena tools served over MCP (`catena-mcp`).
#[cfg(feature = "mcp")]
pub use catena_mcp as mcp;

/// Incremental indexing of a folder into any vector store (`catena-index`).
#[cfg(feature = "index")]
pub use catena_index as index;

/// Runs recorded into an embedded SQLite trace store, and OpenTelemetry export (`catena-trace`).
#[cfg(feature = "trace")]
pub use catena_trace as trace;

/// Evaluations: evaluators (exact match, regex, JSON Schema, embedding similarity, LLM as judge) and experiments
/// over datasets of the trace store (`catena-eval`).
#[cfg(feature = "eval")]
pub use catena_eval as eval;

/// Vector stores (`catena-vectorstores`).
#[cfg(feature = "vectorstores")]
pub use catena_vectorstores as vectorstores;

/// The README's Rust examples, compiled as doctests so the quick start stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
