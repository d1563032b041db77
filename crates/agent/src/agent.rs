//! [`Agent`]: a model and its tools in a loop until a final answer, as a [`Chain`] whose stream is typed
//! [`AgentEvent`]s.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use catena_core::{
    async_trait, ChainStream, ChatChunk, ChatRequest, ChatResponseBuilder, Error, FinishReason, Llm, Message, Result,
    Role, ToolCall, ToolError, Usage,
};
use catena_core::{Chain, ChatStream};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;

use crate::memory::Memory;
use crate::toolbox::ToolBox;

/// The hard limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Model calls in one run, the final answer included (at least 1). The last allowed call is made without
    /// tools, so a run always ends with an answer within the budget.
    pub max_model_calls: usize,
    /// Tool calls in one run. Calls past it are not run (the model is told so), and the next model call is made
    /// without tools.
    pub max_tool_calls: usize,
    /// How many tool calls of one model turn run at once (at least 1).
    pub tool_concurrency: usize,
}

impl Limits {
    /// All three limits, explicitly.
    pub const fn new(max_model_calls: usize, max_tool_calls: usize, tool_concurrency: usize) -> Self {
        Limits { max_model_calls, max_tool_calls, tool_concurrency }
    }
}

/// What a run starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentInput {
    /// A new conversation: the agent's system prompt (if it has one) and this user message.
    Ask(String),
    /// Continue this conversation; the agent's system prompt is put first when it has none.
    Conversation(Vec<Message>),
    /// Continue a run that stopped for approval, with one decision per pending call.
    Resume {
        /// The state the run stopped with.
        state: AgentState,
        /// What to do with each pending call.
        decisions: Vec<Decision>,
    },
}

impl From<&str> for AgentInput {
    fn from(question: &str) -> Self {
        AgentInput::Ask(question.to_string())
    }
}

impl From<String> for AgentInput {
    fn from(question: String) -> Self {
        AgentInput::Ask(question)
    }
}

/// A human's decision about a call waiting for approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Run the call as the model wrote it.
    Approve {
        /// The call's id.
        call_id: String,
    },
    /// Run the call with these arguments instead (the transcript shows the edited call).
    Edit {
        /// The call's id.
        call_id: String,
        /// The arguments to run it with.
        arguments: Value,
    },
    /// Do not run it; the model is told it was rejected, and why.
    Reject {
        /// The call's id.
        call_id: String,
        /// Why, for the model.
        reason: String,
    },
}

impl Decision {
    fn call_id(&self) -> &str {
        match self {
            Decision::Approve { call_id } | Decision::Edit { call_id, .. } | Decision::Reject { call_id, .. } => {
                call_id
            }
        }
    }
}

/// Where a stopped run stands: plain data (serialise it, store it, resume it in another process with
/// [`AgentInput::Resume`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    /// The conversation so far, ending with the model's turn that asked for the pending calls (and the results of
    /// that turn's calls that needed no approval).
    pub messages: Vec<Message>,
    /// The calls waiting for a decision.
    pub pending: Vec<ToolCall>,
    /// Model calls made so far.
    pub model_calls: usize,
    /// Tool calls run (or refused) so far.
    pub tool_calls: usize,
    /// Tokens used so far.
    pub usage: Usage,
}

/// A finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentAnswer {
    /// The final answer's text.
    pub text: String,
    /// Why the final model call stopped (`Length`: the answer was cut at the token limit).
    pub finish_reason: Option<FinishReason>,
    /// The whole conversation, the final answer last.
    pub messages: Vec<Message>,
    /// Model calls made.
    pub model_calls: usize,
    /// Tool calls made.
    pub tool_calls: usize,
    /// Tokens used by every model call of the run.
    pub usage: Usage,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentOutcome {
    /// With a final answer.
    Finished(AgentAnswer),
    /// Waiting for decisions on calls that need approval.
    NeedsApproval(AgentState),
}

impl AgentOutcome {
    /// The answer, or [`Error::InvalidInput`] saying that the run waits for approval.
    pub fn into_answer(self) -> Result<AgentAnswer> {
        match self {
            AgentOutcome::Finished(answer) => Ok(answer),
            AgentOutcome::NeedsApproval(state) => Err(Error::InvalidInput(format!(
                "the agent is waiting for approval of {} call(s) ({}); resume it with AgentInput::Resume",
                state.pending.len(),
                state.pending.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

/// What happens during a run, in order. The last event of a successful run is [`AgentEvent::Done`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    /// A model call starts (`number` counts from 1 within the run).
    ModelCall {
        /// Which call of the run.
        number: usize,
        /// Whether tools are offered (not on the last call the budget allows).
        tools_offered: bool,
    },
    /// A piece of the model's text.
    TextDelta {
        /// The text to append.
        text: String,
    },
    /// The model starts writing a tool call.
    ToolCallStart {
        /// The call's position in the model's turn.
        index: usize,
        /// The call's id, when the backend sends it first (it is always in [`AgentEvent::ToolCallEnd`]).
        id: Option<String>,
        /// The tool's name, when the backend sends it first.
        name: Option<String>,
    },
    /// A piece of a tool call's arguments.
    ToolCallArgumentsDelta {
        /// The call's position in the model's turn.
        index: usize,
        /// The text to append.
        delta: String,
    },
    /// The model finished writing a tool call.
    ToolCallEnd {
        /// The whole call.
        call: ToolCall,
    },
    /// A tool call's result (or why it has none), as the model will see it.
    ToolResult {
        /// The call.
        call: ToolCall,
        /// Its output or error.
        result: std::result::Result<Value, ToolError>,
        /// How long it ran, in milliseconds.
        elapsed_ms: u64,
    },
    /// The token counts of one model call.
    Usage {
        /// The counts.
        usage: Usage,
    },
    /// The run ended.
    Done {
        /// How.
        outcome: AgentOutcome,
    },
}

/// A model and its tools in a loop until a final answer: each model turn's tool calls run (in parallel, at most
/// [`Limits::tool_concurrency`] at once), their results go back to the model, and the loop ends when the model
/// answers without calling tools, within [`Limits`]. Calls to tools marked as needing approval stop the run with an
/// [`AgentState`] to resume.
///
/// An `Agent` is a [`Chain`] from [`AgentInput`] to [`AgentOutcome`] whose stream is [`AgentEvent`]s; it is cheap to
/// clone. Runs are traced: an `invoke_agent` span around each run, a `chat` span per model call (from the model's
/// layers) and an `execute_tool` span per tool call (`gen_ai.tool.name`, `gen_ai.tool.call.id`).
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    llm: Arc<dyn Llm>,
    tools: ToolBox,
    system: Option<String>,
    request: ChatRequest,
    limits: Limits,
    memory: Option<Arc<dyn Memory>>,
    /// Whether tool spans record the calls' arguments and results.
    record_content: bool,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.inner.name)
            .field("backend", &self.inner.llm.capabilities().backend)
            .field("tools", &self.inner.tools)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent calling `llm` with `tools` within `limits`, named `agent`, with no system prompt and default
    /// request settings.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a limit is 0 where it must be at least 1; [`Error::Unsupported`] when `tools`
    /// is not empty and the backend does not declare tool calling.
    pub fn new(llm: Arc<dyn Llm>, tools: ToolBox, limits: Limits) -> Result<Self> {
        if limits.max_model_calls == 0 || limits.tool_concurrency == 0 {
            return Err(Error::InvalidInput(format!(
                "agent limits need max_model_calls >= 1 and tool_concurrency >= 1, got {limits:?}"
            )));
        }
        let caps = llm.capabilities();
        if !tools.is_empty() && !caps.tools {
            return Err(Error::Unsupported {
                backend: caps.backend,
                capability: "tool calling".into(),
                hint: "use a backend that declares tools in its capabilities (an OpenAI-compatible server, a local \
                       GGUF model), or an agent without tools"
                    .into(),
            });
        }
        Ok(Agent {
            inner: Arc::new(Inner {
                name: "agent".into(),
                llm,
                tools,
                system: None,
                request: ChatRequest::default(),
                limits,
                memory: None,
                record_content: false,
            }),
        })
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => f(inner),
            None => {
                let old = &self.inner;
                let mut inner = Inner {
                    name: old.name.clone(),
                    llm: old.llm.clone(),
                    tools: old.tools.clone(),
                    system: old.system.clone(),
                    request: old.request.clone(),
                    limits: old.limits,
                    memory: old.memory.clone(),
                    record_content: old.record_content,
                };
                f(&mut inner);
                self.inner = Arc::new(inner);
            }
        }
        self
    }

    /// Names the agent in traces (`gen_ai.agent.name`).
    pub fn with_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.edit(|i| i.name = name)
    }

    /// Also records the run's conversation as it starts and its final answer on the `invoke_agent` span
    /// (`gen_ai.input.messages`, `gen_ai.output.messages`), and each tool call's arguments and result on its
    /// `execute_tool` span (`gen_ai.tool.call.arguments`, `gen_ai.tool.call.result`). They may hold personal data: turn this on
    /// deliberately, as with `TelemetryLayer::record_content`. Off by default.
    pub fn with_recorded_content(self, on: bool) -> Self {
        self.edit(|i| i.record_content = on)
    }

    /// Puts `system` first in every new conversation.
    pub fn with_system(self, system: impl Into<String>) -> Self {
        let system = system.into();
        self.edit(|i| i.system = Some(system))
    }

    /// Takes model, temperature, token limit, seed and stop sequences from `request` for every model call (its
    /// messages and tools are the agent's). Its `tool_choice`, if set, applies to the first model call of a run
    /// only (for example [`catena_core::ToolChoice::Required`] to make the model start with a tool); later calls
    /// leave the choice to the model, so that the run can end.
    pub fn with_request(self, request: ChatRequest) -> Self {
        self.edit(|i| i.request = request)
    }

    /// Fits the conversation into `memory` before each model call (the full transcript is kept in the answer).
    pub fn with_memory(self, memory: Arc<dyn Memory>) -> Self {
        self.edit(|i| i.memory = Some(memory))
    }

    /// The model.
    pub fn llm(&self) -> &std::sync::Arc<dyn Llm> {
        &self.inner.llm
    }

    /// The request settings every model call starts from (see [`Agent::with_request`]).
    pub fn request_template(&self) -> ChatRequest {
        self.inner.request.clone()
    }

    /// The tools.
    pub fn tools(&self) -> &ToolBox {
        &self.inner.tools
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Runs to the end and returns the answer; a run that stops for approval is an error here (use
    /// [`Chain::invoke`] to get the [`AgentOutcome`]).
    pub async fn ask(&self, question: impl Into<String>) -> Result<AgentAnswer> {
        self.invoke(AgentInput::Ask(question.into())).await?.into_answer()
    }

    fn run(&self, input: AgentInput) -> ChainStream<AgentEvent> {
        let inner = self.inner.clone();
        let span = tracing::info_span!(
            "invoke_agent",
            gen_ai.operation.name = "invoke_agent",
            gen_ai.agent.name = %inner.name,
            catena.agent.model_calls = tracing::field::Empty,
            catena.agent.tool_calls = tracing::field::Empty,
            gen_ai.input.messages = tracing::field::Empty,
            gen_ai.output.messages = tracing::field::Empty,
        );
        let events = async_stream::try_stream! {
            let started = Instant::now();
            let mut run = Run::start(&inner, input)?;
            if inner.record_content {
                record_messages("gen_ai.input.messages", &run.messages);
            }
            // Calls approved (or edited, or rejected) on resume run first.
            if !run.resumed.is_empty() {
                let decided = std::mem::take(&mut run.resumed);
                let mut results = run.execute(&inner, decided);
                while let Some(event) = results.next().await {
                    yield event;
                }
                drop(results);
                run.append_results();
            }
            let outcome = loop {
                run.model_calls += 1;
                let last_call = run.model_calls >= inner.limits.max_model_calls;
                let tools_offered = !inner.tools.is_empty() && !last_call && run.tool_calls < inner.limits.max_tool_calls;
                yield AgentEvent::ModelCall { number: run.model_calls, tools_offered };
                let request = run.request(&inner, tools_offered).await?;
                let mut chunks = model_stream(inner.llm.clone(), request).await?;
                let mut builder = ChatResponseBuilder::default();
                let mut started_calls = HashSet::new();
                while let Some(chunk) = chunks.next().await {
                    let chunk = chunk?;
                    builder.push(&chunk);
                    if let Some(text) = chunk.text.filter(|t| !t.is_empty()) {
                        yield AgentEvent::TextDelta { text };
                    }
                    for delta in chunk.tool_calls {
                        if started_calls.insert(delta.index) {
                            yield AgentEvent::ToolCallStart { index: delta.index, id: delta.id, name: delta.name };
                        }
                        if !delta.arguments.is_empty() {
                            yield AgentEvent::ToolCallArgumentsDelta { index: delta.index, delta: delta.arguments };
                        }
                    }
                }
                let response = builder.finish();
                if let Some(usage) = response.usage {
                    run.usage = run.usage + usage;
                    yield AgentEvent::Usage { usage };
                }
                let finish_reason = response.finish_reason.clone();
                let mut message = response.message;
                for (i, call) in message.tool_calls.iter_mut().enumerate() {
                    if call.id.is_empty() {
                        call.id = format!("call_{}_{i}", run.model_calls);
                    }
                }
                if message.tool_calls.is_empty() {
                    let text = message.text();
                    run.messages.push(message);
                    break AgentOutcome::Finished(AgentAnswer {
                        text,
                        finish_reason,
                        messages: std::mem::take(&mut run.messages),
                        model_calls: run.model_calls,
                        tool_calls: run.tool_calls,
                        usage: run.usage,
                    });
                }
                if !tools_offered {
                    Err(Error::InvalidInput(format!(
                        "{} asked for tools in a call made without tools (the run's budget of {} model call(s) and \
                         {} tool call(s) is spent); raise Limits or check the backend",
                        inner.llm.capabilities().backend,
                        inner.limits.max_model_calls,
                        inner.limits.max_tool_calls
                    )))?;
                }
                let calls = message.tool_calls.clone();
                run.messages.push(message);
                for call in &calls {
                    yield AgentEvent::ToolCallEnd { call: call.clone() };
                }
                let (to_run, pending): (Vec<ToolCall>, Vec<ToolCall>) =
                    calls.into_iter().partition(|c| !inner.tools.needs_approval(&c.name));
                let planned = to_run.into_iter().map(Planned::Run).collect();
                let mut results = run.execute(&inner, planned);
                while let Some(event) = results.next().await {
                    yield event;
                }
                drop(results);
                run.append_results();
                if !pending.is_empty() {
                    break AgentOutcome::NeedsApproval(AgentState {
                        messages: std::mem::take(&mut run.messages),
                        pending,
                        model_calls: run.model_calls,
                        tool_calls: run.tool_calls,
                        usage: run.usage,
                    });
                }
            };
            let span = tracing::Span::current();
            span.record("catena.agent.model_calls", run.model_calls);
            span.record("catena.agent.tool_calls", run.tool_calls);
            if inner.record_content {
                if let AgentOutcome::Finished(answer) = &outcome {
                    record_messages("gen_ai.output.messages", answer.messages.last().map(std::slice::from_ref).unwrap_or_default());
                }
            }
            tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "agent run ended");
            yield AgentEvent::Done { outcome };
        };
        Box::pin(InSpan { inner: Box::pin(events), span })
    }
}

/// Records `messages` as JSON on the current span's `field` (left out, with a warning, if they do not serialise).
fn record_messages(field: &'static str, messages: &[Message]) {
    match serde_json::to_string(messages) {
        Ok(json) => {
            tracing::Span::current().record(field, json.as_str());
        }
        Err(e) => tracing::warn!(field, error = %e, "agent content not recorded"),
    }
}

/// A call to run, as planned: run as written, with edited arguments, or answered without running.
enum Planned {
    Run(ToolCall),
    Refuse(ToolCall, ToolError),
}

/// The mutable part of one run.
struct Run {
    messages: Vec<Message>,
    model_calls: usize,
    /// `model_calls` when this run (or resumption) started.
    model_calls_at_start: usize,
    tool_calls: usize,
    usage: Usage,
    /// Calls decided on resume, to run before the next model call.
    resumed: Vec<Planned>,
    /// Results of the current batch, by position, until they are appended in call order.
    results: Vec<(usize, ToolCall, std::result::Result<Value, ToolError>)>,
}

impl Run {
    fn start(inner: &Inner, input: AgentInput) -> Result<Run> {
        let mut run = Run {
            messages: Vec::new(),
            model_calls: 0,
            model_calls_at_start: 0,
            tool_calls: 0,
            usage: Usage::default(),
            resumed: Vec::new(),
            results: Vec::new(),
        };
        match input {
            AgentInput::Ask(question) => {
                run.messages.extend(inner.system.iter().map(Message::system));
                run.messages.push(Message::user(question));
            }
            AgentInput::Conversation(messages) => {
                if !messages.iter().any(|m| m.role == Role::System) {
                    run.messages.extend(inner.system.iter().map(Message::system));
                }
                run.messages.extend(messages);
            }
            AgentInput::Resume { state, decisions } => {
                run.messages = state.messages;
                run.model_calls = state.model_calls;
                run.model_calls_at_start = state.model_calls;
                run.tool_calls = state.tool_calls;
                run.usage = state.usage;
                let mut decisions: Vec<Option<Decision>> = decisions.into_iter().map(Some).collect();
                for call in state.pending {
                    let found = decisions.iter_mut().find(|d| d.as_ref().is_some_and(|d| d.call_id() == call.id));
                    let Some(decision) = found.and_then(Option::take) else {
                        return Err(Error::InvalidInput(format!(
                            "no decision for pending call `{}` ({}); give one Decision per pending call",
                            call.id, call.name
                        )));
                    };
                    run.resumed.push(match decision {
                        Decision::Approve { .. } => Planned::Run(call),
                        Decision::Edit { arguments, .. } => {
                            let edited = ToolCall { arguments: arguments.to_string(), ..call };
                            // The transcript shows the call that ran.
                            for m in run.messages.iter_mut().rev() {
                                if let Some(c) = m.tool_calls.iter_mut().find(|c| c.id == edited.id) {
                                    c.arguments.clone_from(&edited.arguments);
                                    break;
                                }
                            }
                            Planned::Run(edited)
                        }
                        Decision::Reject { reason, .. } => Planned::Refuse(call, ToolError::Rejected(reason)),
                    });
                }
                if let Some(extra) = decisions.into_iter().flatten().next() {
                    return Err(Error::InvalidInput(format!(
                        "decision for `{}`, which is not a pending call",
                        extra.call_id()
                    )));
                }
            }
        }
        Ok(run)
    }

    /// The request for the next model call: the conversation (fitted to the memory, if any) and, when offered,
    /// the tools.
    async fn request(&self, inner: &Inner, tools_offered: bool) -> Result<ChatRequest> {
        let first_call = self.model_calls == self.model_calls_at_start + 1;
        let mut messages = match &inner.memory {
            Some(memory) => memory.fit(&self.messages).await?,
            None => self.messages.clone(),
        };
        let mut request =
            ChatRequest { messages: Vec::new(), tools: Vec::new(), tool_choice: None, ..inner.request.clone() };
        if tools_offered {
            request.tools = inner.tools.definitions();
            if first_call {
                request.tool_choice.clone_from(&inner.request.tool_choice);
            }
        } else if !inner.tools.is_empty() {
            Message::add_system_instruction(
                &mut messages,
                "No more tool calls are possible in this conversation: answer now with what you have.",
            );
        }
        request.messages = messages;
        Ok(request)
    }

    /// Runs `planned` calls (at most `tool_concurrency` at once, within the tool budget), yielding a
    /// [`AgentEvent::ToolResult`] as each finishes; the results wait in `self.results` for
    /// [`Run::append_results`].
    fn execute<'a>(&'a mut self, inner: &'a Inner, planned: Vec<Planned>) -> impl Stream<Item = AgentEvent> + 'a {
        let budget = inner.limits.max_tool_calls;
        let mut jobs = Vec::with_capacity(planned.len());
        for (position, plan) in planned.into_iter().enumerate() {
            let job = match plan {
                Planned::Refuse(call, error) => Job::Ready(call, Err(error)),
                Planned::Run(call) if self.tool_calls >= budget => Job::Ready(
                    call,
                    Err(ToolError::NotRun(format!(
                        "the run's budget of {budget} tool calls is spent; answer with what you have"
                    ))),
                ),
                Planned::Run(call) => {
                    self.tool_calls += 1;
                    Job::Run(call)
                }
            };
            jobs.push((position, job));
        }
        let tools = &inner.tools;
        let record_content = inner.record_content;
        let results = &mut self.results;
        futures::stream::iter(jobs)
            .map(move |(position, job)| async move {
                let started = Instant::now();
                let (call, result) = match job {
                    Job::Ready(call, result) => (call, result),
                    Job::Run(call) => {
                        let span = tracing::info_span!(
                            "execute_tool",
                            gen_ai.operation.name = "execute_tool",
                            gen_ai.tool.name = %call.name,
                            gen_ai.tool.call.id = %call.id,
                            gen_ai.tool.call.arguments = tracing::field::Empty,
                            gen_ai.tool.call.result = tracing::field::Empty,
                            error.type = tracing::field::Empty,
                        );
                        if record_content {
                            span.record("gen_ai.tool.call.arguments", call.arguments.as_str());
                        }
                        let result = tools.call(&call).instrument(span.clone()).await;
                        match &result {
                            Ok(value) if record_content => {
                                span.record("gen_ai.tool.call.result", value.to_string());
                            }
                            Ok(_) => {}
                            Err(e) => {
                                span.record("error.type", "tool_error");
                                tracing::warn!(parent: &span, error = %e, "tool call failed");
                            }
                        }
                        (call, result)
                    }
                };
                (position, call, result, started.elapsed())
            })
            .buffer_unordered(inner.limits.tool_concurrency)
            .map(move |(position, call, result, elapsed)| {
                results.push((position, call.clone(), result.clone()));
                AgentEvent::ToolResult {
                    call,
                    result,
                    elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                }
            })
    }

    /// Appends the results of the last batch as tool messages, in the order of the calls.
    fn append_results(&mut self) {
        let mut results = std::mem::take(&mut self.results);
        results.sort_by_key(|(position, _, _)| *position);
        for (_, call, result) in results {
            self.messages.push(match &result {
                Ok(output) => Message::tool_result(call.id, catena_core::output_text(output)),
                Err(e) => Message::tool_error(call.id, e.to_model_text()),
            });
        }
    }
}

enum Job {
    Run(ToolCall),
    Ready(ToolCall, std::result::Result<Value, ToolError>),
}

/// The model's answer as a stream of chunks: streamed when the backend streams, else its whole answer as one chunk.
async fn model_stream(llm: Arc<dyn Llm>, request: ChatRequest) -> Result<ChatStream> {
    if llm.capabilities().streaming {
        llm.chat_stream(request).await
    } else {
        let response = llm.chat(request).await?;
        Ok(Box::pin(futures::stream::once(async move { Ok(ChatChunk::from(response)) })))
    }
}

/// A stream polled inside a span, so that everything the run does (model calls, tool calls) nests under it.
struct InSpan<S> {
    inner: S,
    span: tracing::Span,
}

impl<S: Stream + Unpin> Stream for InSpan<S> {
    type Item = S::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        this.inner.poll_next_unpin(cx)
    }
}

#[async_trait]
impl Chain for Agent {
    type Input = AgentInput;
    type Output = AgentOutcome;
    type Chunk = AgentEvent;

    async fn invoke(&self, input: AgentInput) -> Result<AgentOutcome> {
        let mut events = self.run(input);
        while let Some(event) = events.next().await {
            if let AgentEvent::Done { outcome } = event? {
                return Ok(outcome);
            }
        }
        Err(Error::InvalidInput("the agent's event stream ended without an outcome".into()))
    }

    fn stream(&self, input: AgentInput) -> ChainStream<AgentEvent> {
        self.run(input)
    }

    fn streams_incrementally(&self) -> bool {
        true
    }
}
