//! The [`Llm`] trait: one interface for every chat model, remote or local, and [`Capabilities`], the data that
//! says what a backend can do so that nothing is silently downgraded.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::completion::GrammarCompletion;
use crate::constraint::Constraint;
use crate::error::{Error, Result};
use crate::message::{ChatChunk, ChatRequest, ChatResponse, ChatResponseBuilder};

/// A stream of chat chunks. It owns everything it needs (`'static`), so it outlives the call that made it.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatChunk>> + Send + 'static>>;

/// What a chat backend supports. Providers fill this in; [`Capabilities::check`] turns a request that asks for
/// more into an [`Error::Unsupported`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// The backend's name, used in error messages.
    pub backend: String,
    /// The provider, as the telemetry layer records it in `gen_ai.provider.name` (`openai`, `vllm`, `ollama`,
    /// `llama.cpp`, `anthropic`, ...).
    #[serde(default)]
    pub provider: String,
    /// Token-by-token streaming.
    pub streaming: bool,
    /// Usage counts in streamed responses.
    pub streaming_usage: bool,
    /// Requests with tools stream incrementally too. When `false` (a local model that can only parse its calls
    /// once the answer is complete), such a stream yields the whole answer as one chunk.
    #[serde(default)]
    pub streaming_tools: bool,
    /// Tool (function) calling.
    pub tools: bool,
    /// `tool_choice = required` / a named tool.
    pub forced_tool_choice: bool,
    /// Reproducible sampling with a seed.
    pub seed: bool,
    /// Image content parts.
    pub images: bool,
    /// Which [`Constraint`]s the backend enforces itself, and how (see `catena_constraint::structured`): the one place
    /// structured output (JSON mode, JSON Schema, regex, choice, grammars) is declared.
    pub constraints: ConstraintSupport,
}

/// How a constraint on the output was (or will be) satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The provider's own structured-output feature (OpenAI `json_schema` strict, vLLM structured outputs,
    /// llama.cpp `json_object` + `schema`, Ollama `format`). How much it enforces is the provider's (some ignore
    /// parts of a schema), so catena validates the answer too.
    Native,
    /// Token-level grammar enforcement: every sampled token is masked to the constraint (a local model under
    /// llguidance, a GBNF grammar on a llama.cpp server). The output matches by construction.
    Grammar,
    /// The backend cannot enforce the constraint: the model is told the format, its answer is validated, and it
    /// is asked again with the validation error, a bounded number of times.
    ValidateAndRepair,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::Native => "native",
            Strategy::Grammar => "grammar",
            Strategy::ValidateAndRepair => "validate_and_repair",
        })
    }
}

/// Per kind of [`Constraint`], how a backend enforces it when a [`ChatRequest::constraint`] asks for it: `None`
/// means it cannot (and [`Capabilities::check`] rejects such a request).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConstraintSupport {
    /// [`Constraint::JsonObject`] (JSON mode).
    #[serde(default)]
    pub json_object: Option<Strategy>,
    /// [`Constraint::JsonSchema`].
    pub json_schema: Option<Strategy>,
    /// [`Constraint::Regex`].
    pub regex: Option<Strategy>,
    /// [`Constraint::Choice`].
    pub choice: Option<Strategy>,
    /// [`Constraint::Grammar`] (Lark).
    pub grammar: Option<Strategy>,
    /// [`Constraint::Gbnf`].
    pub gbnf: Option<Strategy>,
}

impl ConstraintSupport {
    /// Enforces nothing.
    pub fn none() -> Self {
        ConstraintSupport::default()
    }

    /// Enforces every kind with `strategy` (a local model under llguidance: [`Strategy::Grammar`]).
    pub fn all(strategy: Strategy) -> Self {
        let s = Some(strategy);
        ConstraintSupport { json_object: s, json_schema: s, regex: s, choice: s, grammar: s, gbnf: s }
    }

    /// How `constraint` would be enforced, or `None` if it cannot be.
    pub fn strategy_for(&self, constraint: &Constraint) -> Option<Strategy> {
        match constraint {
            Constraint::JsonObject => self.json_object,
            Constraint::JsonSchema(_) => self.json_schema,
            Constraint::Regex(_) => self.regex,
            Constraint::Choice(_) => self.choice,
            Constraint::Grammar(_) => self.grammar,
            Constraint::Gbnf(_) => self.gbnf,
        }
    }
}

impl Capabilities {
    /// A backend that supports nothing beyond plain chat; `provider` is set to `backend` (override it).
    pub fn minimal(backend: impl Into<String>) -> Self {
        let backend = backend.into();
        Capabilities {
            provider: backend.clone(),
            backend,
            streaming: false,
            streaming_usage: false,
            streaming_tools: false,
            tools: false,
            forced_tool_choice: false,
            seed: false,
            images: false,
            constraints: ConstraintSupport::none(),
        }
    }

    /// Checks that `request` only asks for supported features.
    ///
    /// # Errors
    /// [`Error::Unsupported`] naming the first unsupported feature and what to do instead.
    pub fn check(&self, request: &ChatRequest, streaming: bool) -> Result<()> {
        let fail = |cap: &str, hint: &str| Err(Error::unsupported(&self.backend, cap, hint));
        if streaming && !self.streaming {
            return fail("streaming", "call `chat` instead of `chat_stream`");
        }
        if !request.tools.is_empty() && !self.tools {
            return fail("tool calling", "remove `tools` from the request or use a backend with tool support");
        }
        if let Some(choice) = &request.tool_choice {
            use crate::message::ToolChoice;
            if matches!(choice, ToolChoice::Required | ToolChoice::Tool(_)) && !self.forced_tool_choice {
                return fail("forced tool choice", "use `ToolChoice::Auto`");
            }
        }
        if let Some(constraint) = &request.constraint {
            if self.constraints.strategy_for(constraint).is_none() {
                return fail(
                    &format!("{} constraints", constraint.kind()),
                    "use catena_core::structured (validate-and-repair), or a backend that enforces it",
                );
            }
        }
        if request.seed.is_some() && !self.seed {
            return fail("seed", "remove the seed from the request");
        }
        if !self.images {
            let has_image = request
                .messages
                .iter()
                .any(|m| m.content.iter().any(|p| matches!(p, crate::message::ContentPart::ImageUrl { .. })));
            if has_image {
                return fail("image inputs", "send text only");
            }
        }
        Ok(())
    }
}

/// A chat model. Object safe: use it as `Arc<dyn Llm>`.
///
/// Implementations must make `chat_stream` fold (with [`ChatResponseBuilder`]) into the same [`ChatResponse`] that
/// `chat` returns for the same request, usage included, and must reject unsupported requests with
/// [`Error::Unsupported`] (see [`Capabilities::check`]) rather than ignore parts of them.
#[async_trait]
pub trait Llm: Send + Sync {
    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// The model used when a request names none.
    fn default_model(&self) -> Option<String>;

    /// Sends the request and waits for the whole answer.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse>;

    /// Sends the request and streams the answer.
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream>;

    /// The backend's single-pass grammar continuation, if it has one (local models under llguidance do; remote
    /// providers return `None`). Guidance templates use it to run in one constrained pass.
    fn grammar_completion(&self) -> Option<&dyn GrammarCompletion> {
        None
    }
}

// Written without `#[async_trait]` so a call through an `Arc` returns the inner model's boxed future as it is
// instead of boxing it a second time.
impl<T: Llm + ?Sized> Llm for Arc<T> {
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn default_model(&self) -> Option<String> {
        (**self).default_model()
    }
    fn chat<'life0, 'async_trait>(
        &'life0 self,
        request: ChatRequest,
    ) -> Pin<Box<dyn Future<Output = Result<ChatResponse>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        (**self).chat(request)
    }
    fn chat_stream<'life0, 'async_trait>(
        &'life0 self,
        request: ChatRequest,
    ) -> Pin<Box<dyn Future<Output = Result<ChatStream>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        (**self).chat_stream(request)
    }
    fn grammar_completion(&self) -> Option<&dyn GrammarCompletion> {
        (**self).grammar_completion()
    }
}

/// Drains a chat stream into the response it represents.
///
/// # Errors
/// The first error the stream yields.
pub async fn collect_stream(mut stream: ChatStream) -> Result<ChatResponse> {
    let mut builder = ChatResponseBuilder::default();
    while let Some(chunk) = stream.next().await {
        builder.push(&chunk?);
    }
    Ok(builder.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    #[test]
    fn check_rejects_unsupported_features() {
        let caps = Capabilities { streaming: true, ..Capabilities::minimal("test") };
        let req = ChatRequest::new(vec![Message::user("hi")]);
        assert!(caps.check(&req, true).is_ok());
        let schema = req.clone().with_constraint(Constraint::JsonSchema(serde_json::json!({})));
        let err = caps.check(&schema, false).unwrap_err().to_string();
        assert!(err.contains("json_schema"), "{err}");
        let json_mode = Capabilities {
            constraints: ConstraintSupport { json_object: Some(Strategy::Native), ..ConstraintSupport::none() },
            ..caps.clone()
        };
        assert!(json_mode.check(&req.clone().with_constraint(Constraint::JsonObject), false).is_ok());
        assert!(json_mode.check(&schema, false).is_err());
        let seeded = req.with_seed(1);
        assert!(matches!(caps.check(&seeded, false), Err(Error::Unsupported { .. })));
    }
}
