//! Raw-text continuation under a grammar, in one pass: what a local model offers beyond chat.
//!
//! A backend that decodes token by token under a grammar engine (a local GGUF model with llguidance) can
//! continue a prompt with text that follows a whole grammar, literal parts included, and report what each
//! `[capture]` rule of the grammar matched. Guidance-style templates (`catena_constraint::guidance`) compile to such a
//! grammar and run in a single pass when [`Llm::grammar_completion`](crate::Llm::grammar_completion) offers
//! this; remote backends do not, and templates then run one call per slot.

use async_trait::async_trait;

use crate::constraint::Constraint;
use crate::error::Result;
use crate::message::{FinishReason, Message, Usage};

/// What the continuation starts from.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionPrompt {
    /// Raw text, tokenized as is (the model's BOS token is added when it expects one).
    Text(String),
    /// A conversation rendered with the model's chat template and an open assistant turn; `assistant_prefix` is
    /// text already written at the start of that turn, which the output continues.
    Chat {
        /// The conversation (its last message is usually the user's).
        messages: Vec<Message>,
        /// Text of the assistant turn before the generated part (may be empty).
        assistant_prefix: String,
    },
}

/// One grammar-constrained continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct GrammarRequest {
    /// Where to start.
    pub prompt: CompletionPrompt,
    /// What the continuation must match; [`Constraint::Grammar`] rules marked `[capture]` (or
    /// `[capture="name"]`) are reported in [`GrammarOutput::captures`].
    pub constraint: Constraint,
    /// The most tokens to generate (forced tokens included).
    pub max_tokens: u32,
    /// Sampling temperature; `None` uses the backend's configured sampling.
    pub temperature: Option<f32>,
    /// Seed for reproducible sampling; `None` uses the backend's configured seed.
    pub seed: Option<u64>,
}

impl GrammarRequest {
    /// A request for at most `max_tokens` tokens with the backend's own sampling settings.
    pub fn new(prompt: CompletionPrompt, constraint: Constraint, max_tokens: u32) -> Self {
        GrammarRequest { prompt, constraint, max_tokens, temperature: None, seed: None }
    }
}

/// The result of a [`GrammarRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct GrammarOutput {
    /// The generated text (after the prompt).
    pub text: String,
    /// What each capture matched, in the order the captures completed (a name captured twice appears twice).
    pub captures: Vec<(String, String)>,
    /// [`FinishReason::Stop`] when the grammar was completed; [`FinishReason::Length`] when `max_tokens` ran out
    /// first (the text is then an incomplete sentence of the grammar).
    pub finish_reason: FinishReason,
    /// Prompt and generated tokens.
    pub usage: Usage,
    /// Tokens the grammar forced without sampling (fast-forward), a subset of the generated tokens.
    pub forced_tokens: u64,
}

/// A backend that continues text under a grammar in one pass (see the module docs).
#[async_trait]
pub trait GrammarCompletion: Send + Sync {
    /// The backend's name, for errors and spans.
    fn backend(&self) -> String;

    /// Continues `request.prompt` under `request.constraint`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for a constraint the grammar engine rejects; the backend's own errors.
    async fn complete_grammar(&self, request: GrammarRequest) -> Result<GrammarOutput>;
}
