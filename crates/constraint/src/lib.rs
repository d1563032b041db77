//! Structured output for catena: everything that checks or enforces a [`Constraint`](catena_core::Constraint).
//!
//! - [`Validator`]: checks finished text against a constraint (JSON mode, JSON Schema, regex, choice; Lark and
//!   GBNF grammars with feature `constrain`).
//! - [`structured`]: structured generation on any [`Llm`](catena_core::Llm), with the strategy the backend
//!   declares (native, grammar) or validate-and-repair, and [`StructuredChain`] as a chain step.
//! - [`guidance`]: Guidance-style handlebars templates with generation slots, run in one constrained pass on a
//!   local model or slot by slot elsewhere.
//! - [`gbnf`]: llama.cpp's GBNF grammars, checked exactly as llama.cpp's parser checks them, converted to Lark,
//!   and produced from a choice or a regex.
//! - `ConstraintCompiler` (feature `constrain`): the grammar engine, token masks from llguidance.

#![warn(missing_docs)]

#[cfg(feature = "constrain")]
mod compile;
pub mod gbnf;
pub mod guidance;
pub mod structured;
mod validate;

pub use catena_core::Constraint;
#[cfg(feature = "constrain")]
pub use compile::{AllowedTokens, ConstraintCompiler, ConstraintMatcher, JsonWhitespace, Tokenize, VocabToken};
pub use guidance::{Program, ProgramChain};
pub use structured::{Constrained, LlmStructuredExt, RepairPolicy, Structured, StructuredChain};
pub use validate::Validator;

/// A token id in a model's vocabulary.
pub type TokenId = u32;
