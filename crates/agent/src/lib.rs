//! Agents for catena: a model and its tools in a loop until a final answer.
//!
//! - [`ToolBox`]: the tools an agent offers ([`catena_core::Tool`]s, for example from
//!   [`catena_core::tool_fn`]), each with its arguments checked against its JSON Schema before it runs, a time
//!   limit and an approval setting ([`ToolSettings`]). Every failure goes back to the model as the call's result.
//! - [`Agent`]: a [`catena_core::Chain`] from [`AgentInput`] to [`AgentOutcome`] whose stream is typed
//!   [`AgentEvent`]s (text deltas, tool-call start / argument deltas / end, tool results, usage, the outcome),
//!   with hard [`Limits`] on model and tool calls and parallel tool calls. Calls that need approval stop the run
//!   with a serialisable [`AgentState`]; resume it with [`Decision`]s (approve, edit the arguments, reject), in
//!   this process or another.
//! - [`TypedAgent`] ([`Agent::typed`]): the final answer as a typed `T` through the structured-output path.
//! - [`Memory`]: which part of a long conversation is sent: [`TokenWindow`] (a token budget, oldest turns
//!   dropped whole) and [`SummaryWindow`] (dropped turns replaced by a model-written summary).
//!
//! ```
//! use std::sync::Arc;
//! use catena_agent::{Agent, AgentEvent, Limits, ToolBox};
//! use catena_core::{tool_fn, Chain};
//! # async fn demo(llm: Arc<dyn catena_core::Llm>) -> catena_core::Result<()> {
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Add { a: f64, b: f64 }
//! let tools = ToolBox::new().with(tool_fn("add", "Adds two numbers.", |x: Add| async move { Ok::<_, String>(x.a + x.b) }))?;
//! let agent = Agent::new(llm, tools, Limits::new(6, 10, 4))?.with_system("Use the tools for arithmetic.");
//! let answer = agent.ask("What is 2.5 + 4?").await?;
//! println!("{} ({} model calls, {} tool calls)", answer.text, answer.model_calls, answer.tool_calls);
//!
//! // The same run as a stream of typed events.
//! use catena_core::futures::StreamExt;
//! let mut events = agent.stream("What is 1 + 1?".into());
//! while let Some(event) = events.next().await {
//!     if let AgentEvent::ToolResult { call, result, .. } = event? {
//!         println!("{}({}) -> {result:?}", call.name, call.arguments);
//!     }
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod agent;
mod memory;
mod toolbox;
mod typed;

pub use agent::{Agent, AgentAnswer, AgentEvent, AgentInput, AgentOutcome, AgentState, Decision, Limits};
pub use memory::{Memory, SummaryWindow, TokenCounter, TokenWindow};
pub use toolbox::{ToolBox, ToolSettings};
pub use typed::{TypedAgent, TypedEvent, TypedOutcome};

pub use catena_constraint::RepairPolicy;
