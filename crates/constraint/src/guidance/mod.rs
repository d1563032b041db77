//! Guidance-style generation templates: handlebars templates with generation slots, executed left to right
//! against a model.
//!
//! A [`Program`] is a handlebars template (strict: a missing variable is an error, no HTML escaping) with three
//! slot helpers and three role blocks:
//!
//! | Helper | Generates | Arguments |
//! |---|---|---|
//! | `{{gen "name" ...}}` | text | `stop` (a string, or `(list ...)` of strings; not part of the capture), `max_tokens` (positive integer), `regex` (the text must fully match it) |
//! | `{{select "name" options=...}}` | one of the options, verbatim | `options`: `(list "a" "b")` or a variable holding a list |
//! | `{{json "name" schema=...}}` | a JSON value valid against the schema | `schema`: a variable holding a JSON Schema, or the schema as a JSON string; `max_tokens` |
//! | `{{#system}}`, `{{#user}}`, `{{#assistant}}` | chat messages | none; slots may only appear in `assistant` blocks |
//!
//! `(list ...)` builds a list and the handlebars built-ins (`if`, `unless`, `each`, `with`, `eq`, `ne`, `and`,
//! `or`, `not`, ...) work as usual. Each capture is available to the rest of the template under its name
//! (`{{#if (eq mood "happy")}}`), and is returned in [`Run::captures`] (a `gen` or `select` capture is a string,
//! a `json` capture the parsed value), or as a struct with [`Run::deserialize`].
//!
//! Every problem that can be found without running is reported by [`Program::new`]: syntax errors, unknown
//! helper arguments, a missing `options`/`schema`, an invalid literal regex or schema, two slots with the same
//! name, a slot inside `{{#each}}` (it would capture many values), inside a `system` or `user` block, or outside
//! any role block in a template that has role blocks.
//!
//! # How a program runs
//!
//! [`Program::run`] picks one of two paths and reports which in [`Run::single_pass`]:
//!
//! - **Single pass.** When the model offers raw grammar continuation ([`Llm::grammar_completion`], a local
//!   model under llguidance) and the template's text cannot depend on a capture (no expression, block or slot
//!   argument reads a capture name) and every slot is in the last assistant turn (or the template has no role
//!   blocks), the template is rendered once and everything from the first slot on (literal text and slots) is
//!   compiled into one Lark grammar whose slot rules are llguidance captures (see [`SinglePass`]). The model
//!   writes it in one constrained pass: literal text is forced, not sampled.
//! - **Slot by slot.** Otherwise the template is rendered up to the first unfilled slot; that slot is generated
//!   with one call and captured; rendering starts again with the capture available, so blocks after it can
//!   depend on it. Each call gets the conversation so far (the role blocks before the slot as messages; the
//!   assistant text already written before the slot as a final assistant message, which servers that support
//!   prefill continue; a template without role blocks is sent as one user message holding the text so far):
//!   - a `gen` without `regex` is a plain chat call with the slot's `stop` and `max_tokens`;
//!   - a `gen` with `regex`, a `select` and a `json` go through [`LlmStructuredExt::constrained`] with
//!     [`Constraint::Regex`], [`Constraint::Choice`] and [`Constraint::JsonSchema`], so they use the backend's
//!     native structured output, its grammar support, or the validate-and-repair loop
//!     ([`RunOptions::fallback`]);
//!   - when the model offers grammar continuation but the template needs this path, each slot is one
//!     grammar continuation of the exact text so far instead.
//!
//! A `gen` with both `regex` and `stop` compiles to a lazy match ended by the stop in a grammar; as a chat call
//! it is the regex constraint alone (the model ends when the text matches).
//!
//! Tracing: a `catena.guidance.run` span with one `catena.guidance.slot` child per slot.
//!
//! # Example
//!
//! ```no_run
//! use catena_constraint::guidance::Program;
//! use catena_core::Llm;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Review {
//!     sentiment: String,
//!     score: String,
//!     summary: String,
//! }
//!
//! # async fn demo(llm: &dyn Llm) -> catena_core::Result<()> {
//! let program = Program::new(
//!     r#"{{#system}}You rate product reviews.{{/system}}
//! {{#user}}Review: {{review}}{{/user}}
//! {{#assistant}}Sentiment: {{select "sentiment" options=(list "positive" "negative")}}
//! Score: {{gen "score" regex="[1-5]"}}
//! {{#if (eq sentiment "negative")}}Main complaint{{else}}Best point{{/if}}: {{gen "summary" stop="\n" max_tokens=30}}
//! {{/assistant}}"#,
//! )?;
//! let run = program.run(llm, &serde_json::json!({"review": "Sturdy, but the battery died in a week."})).await?;
//! let review: Review = run.deserialize()?;
//! println!("{} {} {} (single pass: {})", review.sentiment, review.score, review.summary, run.single_pass);
//! # Ok(()) }
//! ```
//!
//! Parsing and rendering need no model:
//!
//! ```
//! use catena_constraint::guidance::{Program, SlotKind};
//!
//! let program = Program::new(r#"Q: {{question}}
//! A: {{gen "answer" stop="\n" max_tokens=40}}
//! Sure? {{select "sure" options=(list "yes" "no")}}"#)?;
//! assert_eq!(program.slots(), [("answer".to_string(), SlotKind::Gen), ("sure".to_string(), SlotKind::Select)]);
//! assert!(program.is_static());
//!
//! let bad = Program::new(r#"{{gen "x" stop="\n" max_token=3}}"#).unwrap_err();
//! assert!(bad.to_string().contains("unknown argument `max_token`"), "{bad}");
//! # Ok::<(), catena_core::Error>(())
//! ```

mod lark;
mod template;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use handlebars::{Context, Handlebars};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::Instrument;

pub use template::SlotSpec;
use template::{Piece, Rendered, STATE_KEY};

use crate::structured::{LlmStructuredExt, RepairPolicy};
use crate::Validator;
use catena_core::completion::{CompletionPrompt, GrammarCompletion, GrammarRequest};
use catena_core::error::{Error, Result};
use catena_core::llm::{Llm, Strategy};
use catena_core::message::{ChatRequest, FinishReason, Message, Role, Usage};
use catena_core::Constraint;

/// The kind of a generation slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    /// `{{gen ...}}`: text, optionally matching a regex.
    Gen,
    /// `{{select ...}}`: one of a list of options.
    Select,
    /// `{{json ...}}`: a JSON value under a schema.
    Json,
}

impl SlotKind {
    /// The helper's name in templates: `gen`, `select` or `json`.
    pub fn helper(self) -> &'static str {
        match self {
            SlotKind::Gen => "gen",
            SlotKind::Select => "select",
            SlotKind::Json => "json",
        }
    }
}

impl fmt::Display for SlotKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.helper())
    }
}

/// Tokens added to every grammar continuation's budget for the prompt bytes that token healing removes and the
/// model regenerates (they count as generated tokens).
const HEALING_SLACK: u64 = 4;

/// Settings of one [`Program::run`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// What to do when the backend cannot enforce a slot's constraint (slot-by-slot path only; the single pass
    /// always enforces by grammar).
    pub fallback: RepairPolicy,
    /// The token limit of a `gen` slot without `max_tokens`; also the budget counted for a `json` slot without
    /// `max_tokens` when sizing a single pass.
    pub default_max_tokens: u32,
    /// Sampling temperature; `None` uses the backend's configuration.
    pub temperature: Option<f32>,
    /// Sampling seed; `None` uses the backend's configuration.
    pub seed: Option<u64>,
}

impl Default for RunOptions {
    /// [`RepairPolicy::default`] (two repairs), `default_max_tokens` 256, backend temperature and seed.
    fn default() -> Self {
        RunOptions { fallback: RepairPolicy::default(), default_max_tokens: 256, temperature: None, seed: None }
    }
}

/// A [`Program`] bound to a model and [`RunOptions`]: a chain step from the template's variables (a JSON object)
/// to the [`Run`]. Made by [`Program::bind`].
///
/// ```no_run
/// # use std::sync::Arc;
/// use catena_constraint::guidance::Program;
/// use catena_core::{Chain, Llm};
/// # async fn demo(llm: Arc<dyn Llm>) -> catena_core::Result<()> {
/// let program = Program::new(r#"{{#user}}Is {{x}} even?{{/user}}{{#assistant}}{{select "a" options=(list "yes" "no")}}{{/assistant}}"#)?;
/// let ask = program.bind(llm).map(|run| run.captures.text("a") == Some("yes"));
/// assert!(ask.invoke(serde_json::json!({"x": 4})).await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ProgramChain {
    program: Program,
    llm: Arc<dyn Llm>,
    options: RunOptions,
}

impl fmt::Debug for ProgramChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgramChain")
            .field("program", &self.program)
            .field("backend", &self.llm.capabilities().backend)
            .field("options", &self.options)
            .finish()
    }
}

impl ProgramChain {
    /// Runs with `options` instead of [`RunOptions::default`].
    pub fn with_options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }
}

#[async_trait::async_trait]
impl catena_core::chain::Chain for ProgramChain {
    type Input = Value;
    type Output = Run;
    type Chunk = Run;
    async fn invoke(&self, input: Value) -> Result<Run> {
        self.program.run_with(self.llm.as_ref(), &input, &self.options).await
    }
    fn stream(&self, input: Value) -> catena_core::chain::ChainStream<Run> {
        let this = self.clone();
        catena_core::chain::stream_once(
            async move { this.program.run_with(this.llm.as_ref(), &input, &this.options).await },
        )
    }
}

/// One capture: the slot's name, its value, and the text the model wrote for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capture {
    /// The slot's name.
    pub name: String,
    /// The value: a string for `gen` and `select`, the parsed JSON for `json`.
    pub value: Value,
    /// The generated text (for `json`, the JSON text as written).
    pub text: String,
}

/// The captures of a run, in the order their slots were filled. Serialises as a JSON object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Captures {
    entries: Vec<Capture>,
}

impl Captures {
    /// The value captured under `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.capture(name).map(|c| &c.value)
    }

    /// The text generated for `name`.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.capture(name).map(|c| c.text.as_str())
    }

    /// The whole capture `name`.
    pub fn capture(&self, name: &str) -> Option<&Capture> {
        self.entries.iter().find(|c| c.name == name)
    }

    /// Every capture, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Capture> {
        self.entries.iter()
    }

    /// How many captures there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The captures as a JSON object `{name: value}`.
    pub fn to_value(&self) -> Value {
        Value::Object(self.entries.iter().map(|c| (c.name.clone(), c.value.clone())).collect())
    }

    fn insert(&mut self, capture: Capture) {
        self.entries.retain(|c| c.name != capture.name);
        self.entries.push(capture);
    }
}

impl Serialize for Captures {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for c in &self.entries {
            map.serialize_entry(&c.name, &c.value)?;
        }
        map.end()
    }
}

/// How one slot was filled.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotRecord {
    /// The slot's name.
    pub name: String,
    /// The slot's kind.
    pub kind: SlotKind,
    /// The constraint its text had to satisfy (`None` for a free-text `gen`).
    pub constraint: Option<Constraint>,
    /// How the constraint was enforced (`None` for a free-text `gen` sent as a chat call); the single pass
    /// always reports [`Strategy::Grammar`].
    pub strategy: Option<Strategy>,
    /// How many generations it took (1 for the single pass).
    pub attempts: u32,
}

/// The result of [`Program::run`].
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The template rendered with every capture (for a chat template: the message texts concatenated, without
    /// separators or the whitespace between blocks). Stop strings are not part of it.
    pub text: String,
    /// The conversation, one message per role block (empty for a template without role blocks).
    pub messages: Vec<Message>,
    /// What each slot captured.
    pub captures: Captures,
    /// One record per slot, in the order they were filled.
    pub slots: Vec<SlotRecord>,
    /// Token usage summed over every call.
    pub usage: Usage,
    /// Whether the program ran as one grammar-constrained pass.
    pub single_pass: bool,
}

impl Run {
    /// The capture `name` deserialised as `T`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when there is no such capture or it does not deserialise into `T`.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let value = self.captures.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.captures.iter().map(|c| c.name.as_str()).collect();
            Error::InvalidInput(format!("no capture named `{name}`; the captures are {names:?}"))
        })?;
        T::deserialize(value).map_err(|e| {
            Error::InvalidInput(format!(
                "capture `{name}` does not deserialise into {}: {e}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// All captures as a `T` whose fields are the capture names.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the mismatch when the captures do not deserialise into `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.captures.to_value()).map_err(|e| {
            Error::InvalidInput(format!("the captures do not deserialise into {}: {e}", std::any::type_name::<T>()))
        })
    }
}

/// The single-pass form of a program for given variables: the prompt before the first slot and the grammar of
/// everything after it (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct SinglePass {
    /// The text (or conversation and assistant prefix) before the first slot.
    pub prompt: CompletionPrompt,
    /// The Lark grammar ([`Constraint::Grammar`]) of the literal text and slots from the first slot on; slot
    /// rules capture under the slot names.
    pub grammar: Constraint,
    /// The token budget: every slot's limit plus one token per byte of literal text and stop strings, plus a few
    /// tokens for the prompt text that token healing regenerates.
    pub max_tokens: u32,
    /// What the grammar describes, in order: literal text and slots with their resolved arguments.
    pub segments: Vec<Segment>,
}

/// One part of a [`SinglePass`] grammar.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Literal text, forced.
    Text(String),
    /// A slot.
    Slot {
        /// The capture name.
        name: String,
        /// What it generates.
        spec: SlotSpec,
    },
}

/// A compiled guidance template (see the module docs). Cheap to clone; safe to share between tasks.
#[derive(Clone)]
pub struct Program {
    source: String,
    registry: Arc<Handlebars<'static>>,
    nonce: u64,
    analysis: template::Analysis,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program").field("source", &self.source).field("slots", &self.analysis.slots).finish()
    }
}

impl Program {
    /// Parses and checks `source`.
    ///
    /// # Errors
    /// [`Error::Template`] with the reason (and position, for syntax errors): see the module docs for what is
    /// checked.
    pub fn new(source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        let nonce = fastrand::u64(..);
        let registry = template::registry(&source, nonce)?;
        let compiled = registry
            .get_template(template::TEMPLATE_NAME)
            .ok_or_else(|| Error::InvalidInput("internal: the template was not registered".into()))?;
        let analysis = template::analyze(compiled)?;
        Ok(Program { source, registry: Arc::new(registry), nonce, analysis })
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The slots in source order: capture name and kind.
    pub fn slots(&self) -> &[(String, SlotKind)] {
        &self.analysis.slots
    }

    /// Whether the template's text cannot depend on a capture (a precondition of the single pass).
    pub fn is_static(&self) -> bool {
        self.analysis.is_static()
    }

    /// Whether the template has role blocks.
    pub fn has_roles(&self) -> bool {
        self.analysis.has_roles
    }

    /// This program as a chain step against `llm`, with [`RunOptions::default`] (see [`ProgramChain`]).
    pub fn bind(&self, llm: Arc<dyn Llm>) -> ProgramChain {
        ProgramChain { program: self.clone(), llm, options: RunOptions::default() }
    }

    /// Runs the program against `llm` with `vars` (any `Serialize` value that serialises to an object, or
    /// `()`/`null` for none) and [`RunOptions::default`].
    ///
    /// # Errors
    /// See [`Program::run_with`].
    pub async fn run<V: Serialize + ?Sized>(&self, llm: &dyn Llm, vars: &V) -> Result<Run> {
        self.run_with(llm, vars, &RunOptions::default()).await
    }

    /// Runs the program with explicit options.
    ///
    /// # Errors
    /// [`Error::Template`] for a missing variable, a variable that collides with a capture name, or a slot
    /// argument given as a variable with an invalid value; [`Error::InvalidOutput`] when a slot's output is
    /// invalid (after the repairs `options.fallback` allows) or the single pass ran out of tokens;
    /// [`Error::Unsupported`] when a constraint cannot be enforced and the fallback is [`RepairPolicy::Forbid`];
    /// the backend's own errors.
    pub async fn run_with<V: Serialize + ?Sized>(&self, llm: &dyn Llm, vars: &V, options: &RunOptions) -> Result<Run> {
        let vars = self.vars(vars)?;
        let span = tracing::info_span!(
            "catena.guidance.run",
            catena.guidance.slots = self.analysis.slots.len(),
            catena.guidance.single_pass = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
        );
        let result = async {
            let mut state = State { captures: Captures::default(), slots: Vec::new(), usage: Usage::default() };
            let mut single_pass = false;
            if let Some(completion) = llm.grammar_completion() {
                if self.is_static() {
                    match self.plan(&vars, options)? {
                        Ok(plan) => {
                            self.run_single_pass(completion, plan, options, &mut state).await?;
                            single_pass = true;
                        }
                        Err(why) => tracing::debug!(%why, "guidance template runs slot by slot"),
                    }
                }
            }
            if !single_pass {
                self.run_slots(llm, &vars, options, &mut state).await?;
            }
            let pieces =
                match template::render(&self.registry, self.nonce, &self.context(&vars, &state.captures, "abort"))? {
                    Rendered::Complete(pieces) => pieces,
                    Rendered::AtSlot(pieces) => {
                        let name = match pieces.last() {
                            Some(Piece::Slot { name, .. }) => name.clone(),
                            _ => String::new(),
                        };
                        return Err(Error::InvalidOutput {
                            raw: template::plain_text(&pieces),
                            reason: format!("slot `{name}` was not filled"),
                            attempts: 1,
                            strategy: Strategy::Grammar,
                        });
                    }
                };
            let (messages, text) = if self.analysis.has_roles {
                let messages = template::to_messages(&pieces)?.0;
                let text = messages.iter().map(Message::text).collect();
                (messages, text)
            } else {
                (Vec::new(), template::plain_text(&pieces))
            };
            Ok(Run { text, messages, captures: state.captures, slots: state.slots, usage: state.usage, single_pass })
        }
        .instrument(span.clone())
        .await;
        if let Ok(run) = &result {
            span.record("catena.guidance.single_pass", run.single_pass);
            span.record("gen_ai.usage.input_tokens", run.usage.input_tokens);
            span.record("gen_ai.usage.output_tokens", run.usage.output_tokens);
        }
        result
    }

    /// The single-pass form of this program for `vars`: the prompt and the grammar a model with
    /// [`Llm::grammar_completion`] is given.
    ///
    /// # Errors
    /// [`Error::Unsupported`] saying why when the template cannot run in one pass; template errors as for
    /// [`Program::run_with`].
    pub fn single_pass<V: Serialize + ?Sized>(&self, vars: &V, options: &RunOptions) -> Result<SinglePass> {
        if !self.is_static() {
            return Err(not_single("the template reads a capture, so its text depends on generated values"));
        }
        let vars = self.vars(vars)?;
        self.plan(&vars, options)?.map_err(|why| not_single(&why))
    }

    /// Checks the variables: they must serialise to an object (or null) whose fields do not use capture names.
    fn vars<V: Serialize + ?Sized>(&self, vars: &V) -> Result<Map<String, Value>> {
        let value = serde_json::to_value(vars).map_err(|e| Error::Template {
            template: template::TEMPLATE_NAME.into(),
            message: format!("the variables do not serialise to JSON: {e}"),
        })?;
        let map = match value {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                return Err(Error::Template {
                    template: template::TEMPLATE_NAME.into(),
                    message: format!("the variables must serialise to a JSON object (a struct or map), got {other}"),
                })
            }
        };
        for (name, _) in &self.analysis.slots {
            if map.contains_key(name) {
                return Err(Error::Template {
                    template: template::TEMPLATE_NAME.into(),
                    message: format!("variable `{name}` has the same name as a slot; rename one of them"),
                });
            }
        }
        if map.contains_key(STATE_KEY) {
            return Err(Error::Template {
                template: template::TEMPLATE_NAME.into(),
                message: format!("`{STATE_KEY}` is reserved"),
            });
        }
        Ok(map)
    }

    fn context(&self, vars: &Map<String, Value>, captures: &Captures, mode: &str) -> Context {
        let mut data = vars.clone();
        let mut raw = Map::new();
        for c in captures.iter() {
            data.insert(c.name.clone(), c.value.clone());
            raw.insert(c.name.clone(), Value::String(c.text.clone()));
        }
        data.insert(STATE_KEY.into(), serde_json::json!({"mode": mode, "raw": raw}));
        Context::from(Value::Object(data))
    }

    /// Renders in collect mode and builds the single-pass plan, or says why there is none.
    fn plan(&self, vars: &Map<String, Value>, options: &RunOptions) -> Result<std::result::Result<SinglePass, String>> {
        let pieces =
            match template::render(&self.registry, self.nonce, &self.context(vars, &Captures::default(), "collect"))? {
                Rendered::Complete(_) => return Ok(Err("no slot is reached with these variables".into())),
                Rendered::AtSlot(pieces) => pieces,
            };
        let first = pieces.iter().position(|p| matches!(p, Piece::Slot { .. })).unwrap_or(pieces.len());
        let (before, after) = pieces.split_at(first);
        // From the first slot on: text and slots, then at most the close of the current role block and
        // whitespace.
        let mut elements = Vec::new();
        let mut closed = false;
        for piece in after {
            match piece {
                Piece::Text(t) if closed => {
                    if !t.trim().is_empty() {
                        return Ok(Err("text follows the assistant block that holds the slots".into()));
                    }
                }
                Piece::Text(t) => elements.push(lark::Element::Text(t)),
                Piece::Slot { .. } if closed => {
                    return Ok(Err("a slot follows the assistant block that holds the first slot".into()))
                }
                Piece::Slot { name, spec } => {
                    elements.push(lark::Element::Slot(name, spec));
                }
                Piece::Close if !closed => closed = true,
                Piece::Close | Piece::Open(_) => {
                    return Ok(Err("slots are spread over several role blocks; only the last assistant turn can be \
                                   generated in one pass"
                        .into()))
                }
            }
        }
        let prompt = if self.analysis.has_roles {
            let (messages, open) = template::to_messages(before)?;
            match open {
                Some((Role::Assistant, prefix)) => CompletionPrompt::Chat { messages, assistant_prefix: prefix },
                _ => return Ok(Err("the first slot is not inside an assistant block".into())),
            }
        } else {
            CompletionPrompt::Text(template::plain_text(before))
        };
        let grammar = lark::grammar(&elements, options.default_max_tokens);
        let mut budget: u64 = 0;
        for element in &elements {
            budget += match element {
                lark::Element::Text(t) => t.len() as u64,
                lark::Element::Slot(_, SlotSpec::Gen { max_tokens, stop, .. }) => {
                    u64::from(max_tokens.unwrap_or(options.default_max_tokens))
                        + stop.iter().map(|s| s.len() as u64).max().unwrap_or(1)
                }
                lark::Element::Slot(_, SlotSpec::Select { options }) => {
                    options.iter().map(|o| o.len() as u64).max().unwrap_or(0)
                }
                lark::Element::Slot(_, SlotSpec::Json { max_tokens, .. }) => {
                    u64::from(max_tokens.unwrap_or(options.default_max_tokens))
                }
            };
        }
        let max_tokens = u32::try_from(budget.saturating_add(HEALING_SLACK)).unwrap_or(u32::MAX);
        let segments = elements
            .iter()
            .map(|e| match e {
                lark::Element::Text(t) => Segment::Text(t.to_string()),
                lark::Element::Slot(name, spec) => Segment::Slot { name: name.to_string(), spec: (*spec).clone() },
            })
            .collect();
        Ok(Ok(SinglePass { prompt, grammar: Constraint::Grammar(grammar), max_tokens, segments }))
    }

    async fn run_single_pass(
        &self,
        completion: &dyn GrammarCompletion,
        plan: SinglePass,
        options: &RunOptions,
        state: &mut State,
    ) -> Result<()> {
        let mut request = GrammarRequest::new(plan.prompt.clone(), plan.grammar.clone(), plan.max_tokens);
        request.temperature = options.temperature;
        request.seed = options.seed;
        let output = completion.complete_grammar(request).await?;
        state.usage = state.usage + output.usage;
        for (name, spec) in plan.segments.iter().filter_map(|s| match s {
            Segment::Slot { name, spec } => Some((name, spec)),
            Segment::Text(_) => None,
        }) {
            let span = tracing::info_span!(
                "catena.guidance.slot",
                catena.guidance.slot.name = name.as_str(),
                catena.guidance.slot.kind = spec.kind().helper(),
                catena.structured.strategy = %Strategy::Grammar,
                catena.structured.attempts = 1,
            );
            let _entered = span.enter();
            let text = output.captures.iter().rev().find(|(n, _)| n == name).map(|(_, t)| t.clone());
            let Some(text) = text else {
                let reason = if output.finish_reason == FinishReason::Length {
                    format!(
                        "the single pass ran out of tokens before slot `{name}` was complete; raise the slot's \
                         max_tokens or RunOptions::default_max_tokens"
                    )
                } else {
                    format!("{} reported no capture for slot `{name}`", completion.backend())
                };
                return Err(Error::InvalidOutput {
                    raw: output.text,
                    reason,
                    attempts: 1,
                    strategy: Strategy::Grammar,
                });
            };
            let capture = to_capture(name, spec, text, None).map_err(|reason| Error::InvalidOutput {
                raw: output.text.clone(),
                reason,
                attempts: 1,
                strategy: Strategy::Grammar,
            })?;
            state.captures.insert(capture);
            state.slots.push(SlotRecord {
                name: name.clone(),
                kind: spec.kind(),
                constraint: spec.constraint(),
                strategy: Some(Strategy::Grammar),
                attempts: 1,
            });
        }
        Ok(())
    }

    async fn run_slots(
        &self,
        llm: &dyn Llm,
        vars: &Map<String, Value>,
        options: &RunOptions,
        state: &mut State,
    ) -> Result<()> {
        loop {
            let pieces =
                match template::render(&self.registry, self.nonce, &self.context(vars, &state.captures, "abort"))? {
                    Rendered::Complete(_) => return Ok(()),
                    Rendered::AtSlot(pieces) => pieces,
                };
            let (before, slot) = pieces.split_at(pieces.len() - 1);
            let Some(Piece::Slot { name, spec }) = slot.first() else { return Ok(()) };
            let span = tracing::info_span!(
                "catena.guidance.slot",
                catena.guidance.slot.name = name.as_str(),
                catena.guidance.slot.kind = spec.kind().helper(),
                catena.structured.strategy = tracing::field::Empty,
                catena.structured.attempts = tracing::field::Empty,
            );
            let (capture, record, usage) =
                self.fill_slot(llm, before, name, spec, options).instrument(span.clone()).await?;
            if let Some(strategy) = record.strategy {
                span.record("catena.structured.strategy", tracing::field::display(strategy));
            }
            span.record("catena.structured.attempts", record.attempts);
            state.usage = state.usage + usage;
            state.captures.insert(capture);
            state.slots.push(record);
        }
    }

    /// Generates one slot given the rendered pieces before it.
    async fn fill_slot(
        &self,
        llm: &dyn Llm,
        before: &[Piece],
        name: &str,
        spec: &SlotSpec,
        options: &RunOptions,
    ) -> Result<(Capture, SlotRecord, Usage)> {
        let (messages, prefix, prompt) = if self.analysis.has_roles {
            let (messages, open) = template::to_messages(before)?;
            let prefix = match open {
                Some((Role::Assistant, prefix)) => prefix,
                _ => {
                    return Err(Error::Template {
                        template: template::TEMPLATE_NAME.into(),
                        message: format!("slot `{name}` is not inside an assistant block"),
                    })
                }
            };
            let prompt = CompletionPrompt::Chat { messages: messages.clone(), assistant_prefix: prefix.clone() };
            (messages, prefix, prompt)
        } else {
            let text = template::plain_text(before);
            (Vec::new(), text.clone(), CompletionPrompt::Text(text))
        };
        let record = |strategy, attempts| SlotRecord {
            name: name.to_string(),
            kind: spec.kind(),
            constraint: spec.constraint(),
            strategy,
            attempts,
        };

        if let Some(completion) = llm.grammar_completion() {
            let grammar = lark::grammar(&[lark::Element::Slot(name, spec)], options.default_max_tokens);
            let budget = match spec {
                SlotSpec::Gen { max_tokens, stop, .. } => max_tokens
                    .unwrap_or(options.default_max_tokens)
                    .saturating_add(stop.iter().map(|s| s.len() as u32).max().unwrap_or(1)),
                SlotSpec::Select { options } => options.iter().map(|o| o.len() as u32).max().unwrap_or(1),
                SlotSpec::Json { max_tokens, .. } => max_tokens.unwrap_or(options.default_max_tokens),
            }
            .saturating_add(HEALING_SLACK as u32);
            let mut request = GrammarRequest::new(prompt, Constraint::Grammar(grammar), budget);
            request.temperature = options.temperature;
            request.seed = options.seed;
            let output = completion.complete_grammar(request).await?;
            let text = output.captures.iter().rev().find(|(n, _)| n == name).map(|(_, t)| t.clone());
            let invalid = |reason: String| Error::InvalidOutput {
                raw: output.text.clone(),
                reason,
                attempts: 1,
                strategy: Strategy::Grammar,
            };
            let text = match text {
                Some(t) => t,
                None if output.finish_reason == FinishReason::Length => {
                    return Err(invalid(format!("slot `{name}` ran out of tokens ({budget}); raise its max_tokens")))
                }
                None => return Err(invalid(format!("{} reported no capture for slot `{name}`", completion.backend()))),
            };
            let capture = to_capture(name, spec, text, None).map_err(invalid)?;
            return Ok((capture, record(Some(Strategy::Grammar), 1), output.usage));
        }

        let mut conversation = if self.analysis.has_roles { messages } else { Vec::new() };
        if self.analysis.has_roles {
            if !prefix.is_empty() {
                conversation.push(Message::assistant(prefix));
            }
        } else {
            if prefix.trim().is_empty() {
                return Err(Error::Template {
                    template: template::TEMPLATE_NAME.into(),
                    message: format!(
                        "slot `{name}` has no text before it to send to the model; write the prompt before the slot"
                    ),
                });
            }
            conversation.push(Message::user(prefix));
        }
        let mut request = ChatRequest::new(conversation);
        request.temperature = options.temperature;
        request.seed = options.seed;
        match spec {
            SlotSpec::Gen { regex: None, stop, max_tokens } => {
                request.max_tokens = Some(max_tokens.unwrap_or(options.default_max_tokens));
                request.stop = stop.clone();
                let response = llm.chat(request).await?;
                let mut text = response.text();
                // Servers exclude the stop string; one that ignores `stop` still has its text cut here.
                if let Some(cut) = stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                    text.truncate(cut);
                }
                let usage = response.usage.unwrap_or_default();
                let capture = Capture { name: name.to_string(), value: Value::String(text.clone()), text };
                Ok((capture, record(None, 1), usage))
            }
            _ => {
                let constraint = spec.constraint().unwrap_or(Constraint::Regex("(?s:.*)".into()));
                match spec {
                    SlotSpec::Gen { max_tokens, .. } => {
                        request.max_tokens = Some(max_tokens.unwrap_or(options.default_max_tokens));
                    }
                    SlotSpec::Json { max_tokens, .. } => request.max_tokens = *max_tokens,
                    SlotSpec::Select { .. } => {}
                }
                let done = llm.constrained(request, constraint, options.fallback).await?;
                let capture = to_capture(name, spec, done.text, Some(())).map_err(|reason| Error::InvalidOutput {
                    raw: done.response.text(),
                    reason,
                    attempts: done.attempts,
                    strategy: done.strategy,
                })?;
                Ok((capture, record(Some(done.strategy), done.attempts), done.usage))
            }
        }
    }
}

struct State {
    captures: Captures,
    slots: Vec<SlotRecord>,
    usage: Usage,
}

fn not_single(why: &str) -> Error {
    Error::unsupported("guidance", "single-pass execution of this template", why)
}

/// Validates a slot's text and builds its capture (`checked` is `Some` when the text was already validated).
fn to_capture(name: &str, spec: &SlotSpec, text: String, checked: Option<()>) -> std::result::Result<Capture, String> {
    if checked.is_none() {
        if let Some(constraint) = spec.constraint() {
            let validator: Validator = Validator::new(&constraint).map_err(|e| e.to_string())?;
            validator.check(&text).map_err(|why| format!("slot `{name}`: {why}"))?;
        }
    }
    let value = match spec {
        SlotSpec::Json { .. } => {
            serde_json::from_str(&text).map_err(|e| format!("slot `{name}` is not valid JSON: {e}"))?
        }
        _ => Value::String(text.clone()),
    };
    Ok(Capture { name: name.to_string(), value, text })
}
