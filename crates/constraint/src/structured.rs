//! Structured generation: one API for constrained output on every backend.
//!
//! Ask for a typed value with [`LlmStructuredExt::generate`] (`T: JsonSchema + DeserializeOwned`), or for text
//! under any [`Constraint`] with [`LlmStructuredExt::constrained`]; in a chain, use [`StructuredChain`].
//!
//! How the constraint is met depends on what the backend declares in
//! [`Capabilities::constraints`](catena_core::Capabilities::constraints), and is reported on the result as a
//! [`Strategy`]:
//!
//! - [`Strategy::Native`] / [`Strategy::Grammar`]: the request carries the constraint
//!   ([`ChatRequest::constraint`]) and the backend enforces it (a provider's structured-output feature, or
//!   token-level grammar masking on a local model).
//! - [`Strategy::ValidateAndRepair`]: the backend cannot enforce it, so the model is told the format (a system
//!   instruction from [`Constraint::describe`]), its answer is checked with a [`Validator`], and on failure it is
//!   asked again with the validation error, at most [`RepairPolicy::Repair`]'s `max_repairs` times. The caller can
//!   forbid this with [`RepairPolicy::Forbid`], and then gets [`Error::Unsupported`] instead.
//!
//! Whatever the strategy, the final text is validated (and, for a typed call, deserialised) before it is
//! returned (the one exception, a Lark or GBNF grammar enforced by the backend while catena's grammar engine is
//! not compiled in, is flagged by [`Constrained::validated`]). A backend that supports a kind of constraint but
//! refuses one instance of it before generating (say, a regex construct its grammar converter cannot express)
//! falls back to validate-and-repair when the fallback is allowed, with a warning and the strategy reported.
//! Usage is summed over every attempt, and every attempt is a `catena.structured.attempt` span. When
//! nothing valid comes back, the error is [`Error::InvalidOutput`] with the raw text.
//!
//! ```no_run
//! use catena_constraint::structured::LlmStructuredExt;
//! use catena_core::Llm;
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct City { name: String, country: String, population: u64 }
//!
//! # async fn demo(llm: &dyn Llm) -> catena_core::Result<()> {
//! let city = llm.generate::<City>("Describe the largest city of Japan.").await?;
//! println!("{} ({}) via {}, {} attempt(s)", city.value.name, city.value.country, city.strategy, city.attempts);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::Validator;
use catena_core::chain::{stream_once, Chain, ChainStream};
use catena_core::error::{Error, Result};
use catena_core::llm::{Llm, Strategy};
use catena_core::message::{ChatRequest, ChatResponse, FinishReason, Message, Usage};
use catena_core::Constraint;

/// What to do when the backend cannot enforce a constraint, or its output fails validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairPolicy {
    /// Never fall back: a backend that cannot enforce the constraint is an [`Error::Unsupported`], and an invalid
    /// output is an [`Error::InvalidOutput`] at once.
    Forbid,
    /// Validate and re-ask with the validation error, at most `max_repairs` times after the first attempt.
    Repair {
        /// Extra generations allowed after the first one.
        max_repairs: u32,
    },
}

impl Default for RepairPolicy {
    /// `Repair { max_repairs: 2 }`: at most three generations in all.
    fn default() -> Self {
        RepairPolicy::Repair { max_repairs: 2 }
    }
}

/// Text generated under a [`Constraint`], with how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Constrained {
    /// The valid text (for [`Strategy::ValidateAndRepair`], the part of the answer that validated: surrounding
    /// whitespace, quotes or code fences are removed).
    pub text: String,
    /// How the constraint was enforced.
    pub strategy: Strategy,
    /// How many generations it took (1 when the first answer was valid).
    pub attempts: u32,
    /// Token usage summed over every attempt.
    pub usage: Usage,
    /// The last (valid) response.
    pub response: ChatResponse,
    /// Whether catena checked the text against the constraint. Always `true` except for a Lark or GBNF grammar
    /// enforced by the backend when catena is built without the `constrain` feature (which provides the grammar
    /// engine): the text is then the backend's, unchecked.
    pub validated: bool,
}

/// A typed value generated under its JSON Schema, with how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Structured<T> {
    /// The value.
    pub value: T,
    /// The JSON text it was parsed from.
    pub text: String,
    /// How the schema was enforced.
    pub strategy: Strategy,
    /// How many generations it took.
    pub attempts: u32,
    /// Token usage summed over every attempt.
    pub usage: Usage,
}

/// Anything that can be the prompt of a structured call: a `&str` or `String` (one user message), a
/// [`Message`], a `Vec<Message>`, or a full [`ChatRequest`] (its settings are kept).
pub trait IntoChatRequest {
    /// Converts to a request.
    fn into_chat_request(self) -> ChatRequest;
}

impl IntoChatRequest for &str {
    fn into_chat_request(self) -> ChatRequest {
        ChatRequest::new(vec![Message::user(self)])
    }
}
impl IntoChatRequest for String {
    fn into_chat_request(self) -> ChatRequest {
        ChatRequest::new(vec![Message::user(self)])
    }
}
impl IntoChatRequest for Message {
    fn into_chat_request(self) -> ChatRequest {
        ChatRequest::new(vec![self])
    }
}
impl IntoChatRequest for Vec<Message> {
    fn into_chat_request(self) -> ChatRequest {
        ChatRequest::new(self)
    }
}
impl IntoChatRequest for ChatRequest {
    fn into_chat_request(self) -> ChatRequest {
        self
    }
}

/// Structured generation on any [`Llm`] (implemented for every `Llm`, sized or `dyn`).
pub trait LlmStructuredExt: Llm {
    /// Generates a `T` under its JSON Schema (derived with `schemars`), with the default [`RepairPolicy`].
    ///
    /// # Errors
    /// [`Error::InvalidOutput`] (with the raw text) when no attempt produced a valid `T`; the backend's own errors.
    fn generate<T>(&self, prompt: impl IntoChatRequest + Send) -> impl Future<Output = Result<Structured<T>>> + Send
    where
        T: schemars::JsonSchema + DeserializeOwned + Send,
    {
        self.generate_with(prompt, RepairPolicy::default())
    }

    /// [`LlmStructuredExt::generate`] with an explicit [`RepairPolicy`].
    fn generate_with<T>(
        &self,
        prompt: impl IntoChatRequest + Send,
        fallback: RepairPolicy,
    ) -> impl Future<Output = Result<Structured<T>>> + Send
    where
        T: schemars::JsonSchema + DeserializeOwned + Send,
    {
        let request = prompt.into_chat_request();
        async move {
            let constraint = Constraint::json_schema_for::<T>();
            let (value, done) = run(self, request, &constraint, fallback, |text| {
                serde_json::from_str::<T>(text)
                    .map_err(|e| format!("the JSON does not deserialise into {}: {e}", std::any::type_name::<T>()))
            })
            .await?;
            Ok(Structured {
                value,
                text: done.text,
                strategy: done.strategy,
                attempts: done.attempts,
                usage: done.usage,
            })
        }
    }

    /// Generates text under `constraint`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid constraint; [`Error::Unsupported`] when the backend cannot enforce
    /// it and `fallback` is [`RepairPolicy::Forbid`]; [`Error::InvalidOutput`] when no attempt was valid.
    fn constrained(
        &self,
        prompt: impl IntoChatRequest + Send,
        constraint: Constraint,
        fallback: RepairPolicy,
    ) -> impl Future<Output = Result<Constrained>> + Send {
        let request = prompt.into_chat_request();
        async move { Ok(run(self, request, &constraint, fallback, |_| Ok(())).await?.1) }
    }
}

impl<L: Llm + ?Sized> LlmStructuredExt for L {}

/// The strategy `llm` would use for `constraint` (its native enforcement, or validate-and-repair).
pub fn strategy_for(llm: &(impl Llm + ?Sized), constraint: &Constraint) -> Strategy {
    llm.capabilities().constraints.strategy_for(constraint).unwrap_or(Strategy::ValidateAndRepair)
}

/// The validate-and-repair loop shared by every entry point. `accept` runs after the constraint's own check (for
/// typed calls: deserialisation) and may reject too.
async fn run<L, V>(
    llm: &L,
    request: ChatRequest,
    constraint: &Constraint,
    fallback: RepairPolicy,
    accept: impl Fn(&str) -> std::result::Result<V, String> + Send,
) -> Result<(V, Constrained)>
where
    L: Llm + ?Sized,
{
    let caps = llm.capabilities();
    let enforced = caps.constraints.strategy_for(constraint);
    let strategy = enforced.unwrap_or(Strategy::ValidateAndRepair);
    if enforced.is_none() && fallback == RepairPolicy::Forbid {
        return Err(Error::unsupported(
            &caps.backend,
            format!("{} constraints", constraint.kind()),
            "allow the validate-and-repair fallback (RepairPolicy::Repair) or use a backend that enforces it",
        ));
    }
    if request.constraint.is_some() {
        return Err(Error::InvalidInput(
            "the prompt request already has a constraint; structured generation sets it".into(),
        ));
    }
    // The validator: a grammar enforced by the backend needs no second check when the grammar engine is not
    // compiled in (the output matches by construction).
    let validator: Option<Validator> = match Validator::new(constraint) {
        Ok(v) => Some(v),
        Err(Error::Unsupported { .. }) if enforced.is_some() => None,
        Err(e) => return Err(e),
    };
    let max_attempts = match fallback {
        RepairPolicy::Forbid => 1,
        RepairPolicy::Repair { max_repairs } => max_repairs.saturating_add(1),
    };

    let span = tracing::info_span!(
        "catena.structured",
        catena.constraint.kind = constraint.kind(),
        catena.structured.strategy = %strategy,
        catena.structured.attempts = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
    );
    let result = async {
        let mut strategy = strategy;
        let request_for = |strategy: Strategy| {
            let mut request = request.clone();
            match strategy {
                Strategy::ValidateAndRepair => {
                    Message::add_system_instruction(&mut request.messages, &constraint.describe());
                    // JSON mode helps only when the schema wants an object.
                    let wants_object = matches!(constraint, Constraint::JsonSchema(schema)
                        if schema.get("type").and_then(|t| t.as_str()) == Some("object"));
                    if wants_object && caps.constraints.json_object.is_some() {
                        request.constraint = Some(Constraint::JsonObject);
                    }
                }
                Strategy::Native | Strategy::Grammar => request.constraint = Some(constraint.clone()),
            }
            request
        };
        let mut request = request_for(strategy);
        let mut usage = Usage::default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let attempt_span = tracing::info_span!(
                "catena.structured.attempt",
                catena.structured.attempt = attempt,
                catena.structured.valid = tracing::field::Empty,
                catena.structured.error = tracing::field::Empty,
            );
            let response = match llm.chat(request.clone()).instrument(attempt_span.clone()).await {
                Ok(response) => response,
                // The backend enforces this kind of constraint but refused this one (a regex construct its
                // grammar converter cannot express, say), before generating anything: fall back, visibly.
                Err(Error::Unsupported { capability, .. })
                    if attempt == 1
                        && strategy != Strategy::ValidateAndRepair
                        && max_attempts > 1
                        && validator.is_some() =>
                {
                    tracing::warn!(
                        parent: &attempt_span,
                        %capability,
                        "the backend cannot enforce this constraint; falling back to validate-and-repair"
                    );
                    strategy = Strategy::ValidateAndRepair;
                    tracing::Span::current().record("catena.structured.strategy", tracing::field::display(strategy));
                    request = request_for(strategy);
                    attempt = 0;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(u) = response.usage {
                usage = usage + u;
            }
            let raw = response.text();
            let verdict = judge(&raw, strategy, validator.as_ref(), &accept, response.finish_reason.as_ref());
            match verdict {
                Ok((text, value)) => {
                    attempt_span.record("catena.structured.valid", true);
                    let validated = validator.is_some();
                    let done = Constrained { text, strategy, attempts: attempt, usage, response, validated };
                    return Ok((value, done));
                }
                Err(reason) => {
                    attempt_span.record("catena.structured.valid", false);
                    attempt_span.record("catena.structured.error", reason.as_str());
                    tracing::warn!(parent: &attempt_span, attempt, %reason, "output failed validation");
                    if attempt >= max_attempts {
                        return Err(Error::InvalidOutput { raw, reason, attempts: attempt, strategy });
                    }
                    request.messages.push(Message::assistant(raw));
                    request
                        .messages
                        .push(Message::user(format!("That reply is invalid: {reason}. {}", constraint.describe())));
                }
            }
        }
    }
    .instrument(span.clone())
    .await;
    if let Ok((_, done)) = &result {
        span.record("catena.structured.attempts", done.attempts);
        span.record("gen_ai.usage.input_tokens", done.usage.input_tokens);
        span.record("gen_ai.usage.output_tokens", done.usage.output_tokens);
    }
    result
}

/// Checks one answer: the candidates (the raw text, then for validate-and-repair the text with wrapping removed)
/// are tried in order; the first that passes both checks wins.
fn judge<V>(
    raw: &str,
    strategy: Strategy,
    validator: Option<&Validator>,
    accept: &impl Fn(&str) -> std::result::Result<V, String>,
    finish: Option<&FinishReason>,
) -> std::result::Result<(String, V), String> {
    let candidates = if strategy == Strategy::ValidateAndRepair { unwrap_candidates(raw) } else { vec![raw] };
    let mut first_error = None;
    for candidate in candidates {
        let checked = match validator {
            Some(v) => v.check(candidate),
            None => Ok(()),
        }
        .and_then(|()| accept(candidate));
        match checked {
            Ok(value) => return Ok((candidate.to_string(), value)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let mut reason = first_error.unwrap_or_else(|| "the reply is empty".into());
    if finish == Some(&FinishReason::Length) {
        reason.push_str(" (the output was cut off by the token limit; raise max_tokens)");
    }
    Err(reason)
}

/// The raw text, then the same without surrounding whitespace, a Markdown code fence, wrapping quotes or
/// backticks, and the outermost JSON object or array inside prose.
fn unwrap_candidates(raw: &str) -> Vec<&str> {
    fn push<'a>(s: &'a str, out: &mut Vec<&'a str>) {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    let mut out = vec![raw];
    let trimmed = raw.trim();
    push(trimmed, &mut out);
    let fenced = strip_fence(trimmed);
    push(fenced, &mut out);
    for (open, close) in [('"', '"'), ('`', '`'), ('\'', '\'')] {
        if fenced.len() >= 2 && fenced.starts_with(open) && fenced.ends_with(close) {
            push(&fenced[1..fenced.len() - 1], &mut out);
        }
    }
    for (open, close) in [('{', '}'), ('[', ']')] {
        if let (Some(a), Some(b)) = (fenced.find(open), fenced.rfind(close)) {
            if a < b {
                push(&fenced[a..=b], &mut out);
            }
        }
    }
    out
}

fn strip_fence(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("```") else { return s };
    let Some(body_start) = rest.find('\n') else { return s };
    let body = &rest[body_start + 1..];
    match body.rfind("```") {
        Some(end) => body[..end].trim(),
        None => s,
    }
}

/// A chain step that turns a conversation into a typed `T` with [`LlmStructuredExt::generate_with`].
///
/// ```no_run
/// # use std::sync::Arc;
/// use catena_constraint::structured::{RepairPolicy, StructuredChain};
/// use catena_core::{Chain, Llm, Message};
///
/// #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
/// struct Sentiment { positive: bool, confidence: f32 }
///
/// # async fn demo(llm: Arc<dyn Llm>) -> catena_core::Result<()> {
/// let classify = StructuredChain::<Sentiment>::new(llm).with_repair_policy(RepairPolicy::Forbid);
/// let s = classify.invoke(vec![Message::user("I love this library")]).await?;
/// println!("{s:?}");
/// # Ok(()) }
/// ```
pub struct StructuredChain<T> {
    llm: Arc<dyn Llm>,
    request: ChatRequest,
    fallback: RepairPolicy,
    _out: PhantomData<fn() -> T>,
}

impl<T> Clone for StructuredChain<T> {
    fn clone(&self) -> Self {
        StructuredChain {
            llm: self.llm.clone(),
            request: self.request.clone(),
            fallback: self.fallback,
            _out: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for StructuredChain<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StructuredChain")
            .field("type", &std::any::type_name::<T>())
            .field("backend", &self.llm.capabilities().backend)
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl<T> StructuredChain<T> {
    /// A step generating `T` with `llm`, the default request settings and the default [`RepairPolicy`].
    pub fn new(llm: Arc<dyn Llm>) -> Self {
        StructuredChain { llm, request: ChatRequest::default(), fallback: RepairPolicy::default(), _out: PhantomData }
    }
    /// Uses `request`'s settings (model, temperature, max tokens, ...) for every call; its messages are replaced
    /// by the chain's input.
    pub fn with_request(mut self, request: ChatRequest) -> Self {
        self.request = request;
        self
    }
    /// Sets the repair policy: what happens when the backend cannot enforce the constraint or the output fails
    /// validation.
    pub fn with_repair_policy(mut self, fallback: RepairPolicy) -> Self {
        self.fallback = fallback;
        self
    }
}

#[async_trait]
impl<T> Chain for StructuredChain<T>
where
    T: schemars::JsonSchema + DeserializeOwned + Send + 'static,
{
    type Input = Vec<Message>;
    type Output = T;
    type Chunk = T;
    async fn invoke(&self, input: Vec<Message>) -> Result<T> {
        let request = ChatRequest { messages: input, ..self.request.clone() };
        Ok(self.llm.generate_with::<T>(request, self.fallback).await?.value)
    }
    fn stream(&self, input: Vec<Message>) -> ChainStream<T> {
        let this = self.clone();
        stream_once(async move { this.invoke(input).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use catena_core::message::Role;

    #[test]
    fn candidates_unwrap_fences_quotes_and_prose() {
        let c = unwrap_candidates("Sure! Here it is:\n```json\n{\"a\": 1}\n```\n");
        assert!(c.contains(&"{\"a\": 1}"), "{c:?}");
        let c = unwrap_candidates("  \"yes\"\n");
        assert!(c.contains(&"yes"), "{c:?}");
        let c = unwrap_candidates("The answer is {\"a\": [1, 2]} as requested.");
        assert!(c.contains(&"{\"a\": [1, 2]}"), "{c:?}");
        assert_eq!(c[0], "The answer is {\"a\": [1, 2]} as requested.");
    }

    #[test]
    fn instruction_merges_into_system_message() {
        let mut m = vec![Message::system("Be brief."), Message::user("hi")];
        Message::add_system_instruction(&mut m, "Reply in JSON.");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].text(), "Be brief.\n\nReply in JSON.");
        let mut m = vec![Message::user("hi")];
        Message::add_system_instruction(&mut m, "Reply in JSON.");
        assert_eq!(m[0].role, Role::System);
    }
}
