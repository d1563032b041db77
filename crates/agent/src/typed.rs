//! [`TypedAgent`]: an agent whose final answer is a typed value, through the structured-output path.

use std::marker::PhantomData;

use catena_constraint::{LlmStructuredExt, RepairPolicy};
use catena_core::{async_trait, Chain, ChainStream, ChatRequest, Message, Result};
use futures::StreamExt;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, AgentAnswer, AgentEvent, AgentInput, AgentOutcome, AgentState};

/// How a typed run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypedOutcome<T> {
    /// With the typed answer, and the run that led to it (its last message is the model's text answer; the
    /// structured call is not part of the transcript, but its model calls and tokens are in the counts).
    Finished {
        /// The answer as a `T`.
        value: T,
        /// The run.
        answer: AgentAnswer,
    },
    /// Waiting for decisions on calls that need approval (resume with [`AgentInput::Resume`]).
    NeedsApproval(AgentState),
}

/// What a typed run streams: the agent's events, then the typed value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum TypedEvent<T> {
    /// An event of the tool loop (its [`AgentEvent::Done`] carries the text answer).
    Agent(AgentEvent),
    /// The typed answer, after the loop finished.
    Value(T),
}

/// An [`Agent`] whose answer is a `T`: when the tool loop ends, one more model call asks for the answer as JSON
/// under `T`'s schema (enforced by the backend where it can, else validated and repaired per the
/// [`RepairPolicy`]), with the whole conversation as context. Made by [`Agent::typed`].
pub struct TypedAgent<T> {
    agent: Agent,
    repair: RepairPolicy,
    _out: PhantomData<fn() -> T>,
}

impl<T> Clone for TypedAgent<T> {
    fn clone(&self) -> Self {
        TypedAgent { agent: self.agent.clone(), repair: self.repair, _out: PhantomData }
    }
}

impl<T> std::fmt::Debug for TypedAgent<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedAgent")
            .field("type", &std::any::type_name::<T>())
            .field("agent", &self.agent)
            .field("repair", &self.repair)
            .finish()
    }
}

impl Agent {
    /// This agent with a typed final answer (see [`TypedAgent`]).
    pub fn typed<T>(self, repair: RepairPolicy) -> TypedAgent<T> {
        TypedAgent { agent: self, repair, _out: PhantomData }
    }
}

impl<T> TypedAgent<T>
where
    T: JsonSchema + DeserializeOwned + Send + 'static,
{
    /// The structured call after a finished run; its model calls and tokens are added to `answer`'s counts.
    async fn value(agent: &Agent, repair: RepairPolicy, answer: &mut AgentAnswer) -> Result<T> {
        let mut messages: Vec<Message> = answer.messages.clone();
        messages.push(Message::user(
            "Now give your final answer as a single JSON value matching the required schema, and nothing else.",
        ));
        let request = ChatRequest { messages, tools: Vec::new(), tool_choice: None, ..agent.request_template() };
        let structured = agent.llm().generate_with::<T>(request, repair).await?;
        answer.model_calls += structured.attempts as usize;
        answer.usage = answer.usage + structured.usage;
        Ok(structured.value)
    }
}

#[async_trait]
impl<T> Chain for TypedAgent<T>
where
    T: JsonSchema + DeserializeOwned + Clone + Send + Sync + 'static,
{
    type Input = AgentInput;
    type Output = TypedOutcome<T>;
    type Chunk = TypedEvent<T>;

    async fn invoke(&self, input: AgentInput) -> Result<TypedOutcome<T>> {
        match self.agent.invoke(input).await? {
            AgentOutcome::NeedsApproval(state) => Ok(TypedOutcome::NeedsApproval(state)),
            AgentOutcome::Finished(mut answer) => {
                let value = Self::value(&self.agent, self.repair, &mut answer).await?;
                Ok(TypedOutcome::Finished { value, answer })
            }
        }
    }

    fn stream(&self, input: AgentInput) -> ChainStream<TypedEvent<T>> {
        let agent = self.agent.clone();
        let repair = self.repair;
        let mut events = agent.stream(input);
        Box::pin(async_stream::try_stream! {
            let mut finished = None;
            while let Some(event) = events.next().await {
                let event = event?;
                if let AgentEvent::Done { outcome: AgentOutcome::Finished(answer) } = &event {
                    finished = Some(answer.clone());
                }
                yield TypedEvent::Agent(event);
            }
            if let Some(mut answer) = finished {
                yield TypedEvent::Value(Self::value(&agent, repair, &mut answer).await?);
            }
        })
    }

    fn streams_incrementally(&self) -> bool {
        true
    }
}
