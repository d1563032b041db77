//! Framework overhead per agent step, and parallel tool execution, against LangChain's `create_agent` in the same
//! run (`agent_step_peer.py`).
//!
//! ```text
//! pip install langchain langchain-core
//! cargo bench -p catena-agent --bench agent_step
//! ```
//!
//! Overhead: a scripted model (an in-process `Llm` that answers turn `t` of a conversation with one call to an
//! instant tool, and the last turn with text) and a tool that returns at once, so everything measured is the
//! framework: building each request from the conversation, the model-call plumbing, argument validation against
//! the schema, running the tool, appending messages, emitting events. A run has 20 tool turns and a final answer
//! (21 steps; a step is one model call and its tool calls); the figure is the run's time divided by 21, median of
//! the runs. Parallel: one turn with 8 calls to a tool that sleeps 20 ms, at concurrency 1, 2, 4 and 8; the figure
//! is the run's wall time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use catena_agent::{Agent, AgentInput, Limits, ToolBox};
use catena_core::{
    async_trait, tool_fn, Capabilities, Chain, ChatRequest, ChatResponse, ChatStream, FinishReason, Llm, Message, Role,
    ToolCall, Usage,
};
use schemars::JsonSchema;
use serde::Deserialize;

const TOOL_TURNS: usize = 20;

/// Answers turn `t` (the number of assistant messages so far) with `calls` calls to `tool`, until `turns` turns,
/// then with text.
struct Scripted {
    turns: usize,
    calls: usize,
    tool: &'static str,
}

#[async_trait]
impl Llm for Scripted {
    fn capabilities(&self) -> Capabilities {
        Capabilities { tools: true, ..Capabilities::minimal("scripted") }
    }
    fn default_model(&self) -> Option<String> {
        Some("scripted".into())
    }
    async fn chat(&self, request: ChatRequest) -> catena_core::Result<ChatResponse> {
        let turn = request.messages.iter().filter(|m| m.role == Role::Assistant).count();
        let mut message = Message::assistant(if turn < self.turns { "" } else { "done" });
        if turn < self.turns {
            message.tool_calls = (0..self.calls)
                .map(|i| ToolCall {
                    id: format!("call_{turn}_{i}"),
                    name: self.tool.to_string(),
                    arguments: format!("{{\"x\": {i}}}"),
                })
                .collect();
        }
        Ok(ChatResponse {
            message,
            finish_reason: Some(if turn < self.turns { FinishReason::ToolCalls } else { FinishReason::Stop }),
            usage: Some(Usage { input_tokens: 10, output_tokens: 5, total_tokens: 15, cached_input_tokens: None }),
            model: "scripted".into(),
            raw: serde_json::Value::Null,
        })
    }
    async fn chat_stream(&self, request: ChatRequest) -> catena_core::Result<ChatStream> {
        let response = self.chat(request).await?;
        Ok(Box::pin(futures::stream::once(async move { Ok(response.into()) })))
    }
}

#[derive(Deserialize, JsonSchema)]
struct X {
    x: i64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        // Per-step overhead.
        let tools = ToolBox::new()
            .with(tool_fn("noop", "Returns its input.", |a: X| async move { Ok::<_, String>(a.x) }))
            .expect("tool");
        let llm: Arc<dyn Llm> = Arc::new(Scripted { turns: TOOL_TURNS, calls: 1, tool: "noop" });
        let agent = Agent::new(llm, tools, Limits::new(TOOL_TURNS + 1, TOOL_TURNS, 4)).expect("agent");
        let steps = (TOOL_TURNS + 1) as f64;
        for _ in 0..200 {
            agent.invoke(AgentInput::Ask("go".into())).await.expect("run");
        }
        let mut per_step = Vec::new();
        for _ in 0..2000 {
            let t = Instant::now();
            let outcome = agent.invoke(AgentInput::Ask("go".into())).await.expect("run");
            per_step.push(t.elapsed().as_secs_f64() * 1e6 / steps);
            std::hint::black_box(outcome);
        }
        println!("catena per step: {:.2} us (median of 2000 runs of {steps} steps)", median(per_step));

        // Parallel tool execution.
        let tools = ToolBox::new()
            .with(tool_fn("sleep", "Sleeps 20 ms.", |a: X| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, String>(a.x)
            }))
            .expect("tool");
        for concurrency in [1usize, 2, 4, 8] {
            let llm: Arc<dyn Llm> = Arc::new(Scripted { turns: 1, calls: 8, tool: "sleep" });
            let agent = Agent::new(llm, tools.clone(), Limits::new(2, 8, concurrency)).expect("agent");
            let mut times = Vec::new();
            for _ in 0..10 {
                let t = Instant::now();
                agent.invoke(AgentInput::Ask("go".into())).await.expect("run");
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            println!("catena 8 x 20 ms tools, concurrency {concurrency}: {:.1} ms", median(times));
        }
    });
    let peer = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/agent_step_peer.py");
    match std::process::Command::new("python3").arg(&peer).status() {
        Ok(s) if s.success() => {}
        other => println!("LangChain peer did not run ({other:?}); pip install langchain langchain-core"),
    }
}
