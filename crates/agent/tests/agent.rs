//! The agent loop against a real HTTP server speaking OpenAI's chat-completions wire format, through catena's
//! OpenAI-compatible client: the test-support server answers each request with the next scripted turn (text or
//! tool calls, streamed as OpenAI or llama-cpp-python streams them) and records every request, so the tests check
//! what the agent sent back to the model. The server stands in for a model whose choices a test can control; the
//! real-model runs are in `real_models.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use catena_agent::{
    Agent, AgentEvent, AgentInput, AgentOutcome, AgentState, Decision, Limits, SummaryWindow, TokenWindow, ToolBox,
    ToolSettings,
};
use catena_core::futures::StreamExt;
use catena_core::{tool_fn, Chain, ChatRequest, Llm, Message, Role, ToolError};
use catena_providers::openai::Compat;
use catena_test_support::wire::{Canned, Reply, TestServer, ToolStyle};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize, JsonSchema)]
struct Pair {
    /// The first number.
    a: f64,
    /// The second number.
    b: f64,
}

#[derive(Deserialize, JsonSchema)]
struct Path {
    path: String,
}

fn calls(calls: Vec<(&'static str, &'static str, &'static str)>, style: ToolStyle) -> Canned {
    Canned { content: None, tool_calls: calls, finish_reason: "tool_calls", tool_style: style, ..Canned::text("") }
}

fn math_tools() -> ToolBox {
    ToolBox::new()
        .with(tool_fn("add", "Adds two numbers.", |p: Pair| async move { Ok::<_, String>(p.a + p.b) }))
        .unwrap()
        .with(tool_fn("mul", "Multiplies two numbers.", |p: Pair| async move { Ok::<_, String>(p.a * p.b) }))
        .unwrap()
}

async fn agent_for(server: &TestServer, tools: ToolBox, limits: Limits) -> Agent {
    let llm: Arc<dyn Llm> = Arc::new(server.client(Compat::OpenAi).build().unwrap());
    Agent::new(llm, tools, limits).unwrap().with_system("You are a calculator.")
}

/// The messages of the `n`th request the server received.
fn sent_messages(server: &TestServer, n: usize) -> Vec<Value> {
    server.bodies()[n]["messages"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn tools_run_in_parallel_and_their_results_go_back_until_the_model_answers() {
    for style in [ToolStyle::OpenAi, ToolStyle::LlamaCpp] {
        let server = TestServer::start(Reply::Sequence(vec![
            calls(vec![("c1", "add", r#"{"a": 2, "b": 3}"#), ("c2", "mul", r#"{"a": 4, "b": 2.5}"#)], style),
            Canned::text("2 + 3 = 5 and 4 * 2.5 = 10."),
        ]))
        .await;
        let agent = agent_for(&server, math_tools(), Limits::new(4, 10, 4)).await;

        let events: Vec<AgentEvent> =
            agent.stream("What are 2+3 and 4*2.5?".into()).map(|e| e.unwrap()).collect().await;
        let AgentEvent::Done { outcome: AgentOutcome::Finished(answer) } = events.last().unwrap().clone() else {
            panic!("the run did not finish: {events:?}")
        };
        assert_eq!(answer.text, "2 + 3 = 5 and 4 * 2.5 = 10.");
        assert_eq!((answer.model_calls, answer.tool_calls), (2, 2));
        assert_eq!(answer.usage.input_tokens, 42, "usage of both model calls is summed");
        let roles: Vec<Role> = answer.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::System, Role::User, Role::Assistant, Role::Tool, Role::Tool, Role::Assistant]);
        assert_eq!(answer.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(answer.messages[3].text(), "5.0");
        assert_eq!(answer.messages[4].text(), "10.0");

        // What the model was sent: tools on both calls, then the call and its results, ids matched.
        assert_eq!(server.request_count(), 2);
        let second = sent_messages(&server, 1);
        assert_eq!(second.len(), 5);
        assert_eq!(second[2]["tool_calls"][1]["function"]["name"], "mul");
        assert_eq!(second[3]["role"], "tool");
        assert_eq!(second[3]["tool_call_id"], "c1");
        assert_eq!(second[4]["content"], "10.0");
        assert_eq!(server.bodies()[1]["tools"].as_array().map(Vec::len), Some(2));

        // The events: model call, call start / argument deltas / end, results, usage, second call, text, done.
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| match e {
                AgentEvent::ModelCall { .. } => "model",
                AgentEvent::TextDelta { .. } => "text",
                AgentEvent::ToolCallStart { .. } => "start",
                AgentEvent::ToolCallArgumentsDelta { .. } => "args",
                AgentEvent::ToolCallEnd { .. } => "end",
                AgentEvent::ToolResult { .. } => "result",
                AgentEvent::Usage { .. } => "usage",
                AgentEvent::Done { .. } => "done",
            })
            .collect();
        assert_eq!(kinds.iter().filter(|k| **k == "start").count(), 2, "{kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == "result").count(), 2);
        let first_end = kinds.iter().position(|k| *k == "end").unwrap();
        let first_result = kinds.iter().position(|k| *k == "result").unwrap();
        let second_model = kinds.iter().rposition(|k| *k == "model").unwrap();
        assert!(kinds[..first_end].iter().all(|k| ["model", "start", "args", "usage"].contains(k)), "{kinds:?}");
        assert!(first_result > first_end && second_model > first_result, "{kinds:?}");
        assert!(kinds[second_model..].contains(&"text") && kinds.last() == Some(&"done"));
        // Argument deltas add up to each call's arguments.
        for (index, want) in [(0usize, r#"{"a": 2, "b": 3}"#), (1, r#"{"a": 4, "b": 2.5}"#)] {
            let streamed: String = events
                .iter()
                .filter_map(|e| match e {
                    AgentEvent::ToolCallArgumentsDelta { index: i, delta } if *i == index => Some(delta.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(streamed, want);
        }
        // Events are plain data.
        let json = serde_json::to_string(&events).unwrap();
        assert_eq!(serde_json::from_str::<Vec<AgentEvent>>(&json).unwrap(), events);
    }
}

/// Every way a call can fail goes back to the model as that call's result, and the run goes on.
#[tokio::test]
async fn bad_calls_go_back_to_the_model_as_errors_it_can_correct() {
    let tools = math_tools()
        .with(tool_fn("fail", "Always fails.", |_: Path| async move { Err::<String, _>("disk on fire") }))
        .unwrap()
        .with(tool_fn("boom", "Panics.", |p: Path| async move {
            if p.path.is_empty() {
                return Ok::<String, String>(String::new());
            }
            panic!("tool bug: {}", p.path)
        }))
        .unwrap()
        .with_settings(
            tool_fn("slow", "Sleeps.", |_: Path| async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, String>("late")
            }),
            ToolSettings::unrestricted().with_timeout(Duration::from_millis(100)),
        )
        .unwrap();
    let server = TestServer::start(Reply::Sequence(vec![
        calls(
            vec![
                ("c1", "add", r#"{"a": "two", "b": 3}"#),
                ("c2", "add", r#"{"a": 2"#),
                ("c3", "nope", "{}"),
                ("c4", "fail", r#"{"path": "/x"}"#),
                ("c5", "boom", r#"{"path": "/y"}"#),
                ("c6", "slow", r#"{"path": "/z"}"#),
                ("c7", "add", r#"{"a": 2, "b": 3, "c": 4}"#),
            ],
            ToolStyle::OpenAi,
        ),
        Canned::text("Sorry."),
    ]))
    .await;
    let agent = agent_for(&server, tools, Limits::new(3, 20, 8)).await;
    let answer = agent.ask("go").await.unwrap();
    assert_eq!(answer.text, "Sorry.");
    let results: Vec<String> = answer.messages.iter().filter(|m| m.role == Role::Tool).map(Message::text).collect();
    assert_eq!(results.len(), 7);
    assert!(results[0].starts_with("error: invalid arguments") && results[0].contains("\"two\""), "{}", results[0]);
    assert!(results[0].ends_with("Fix the call and try again."));
    assert!(results[1].contains("not valid JSON"), "{}", results[1]);
    assert!(results[2].contains("unknown tool `nope` (the tools are: add, mul, fail, boom, slow)"), "{}", results[2]);
    assert_eq!(results[3], "error: the tool failed: disk on fire");
    assert_eq!(results[4], "error: the tool failed: the tool panicked: tool bug: /y");
    assert_eq!(results[5], "error: the tool did not finish within 100 ms");
    // Every failure is marked as one on the message (Anthropic's `is_error`).
    let flags: Vec<bool> = answer.messages.iter().filter(|m| m.role == Role::Tool).map(|m| m.is_error).collect();
    assert!(flags.iter().all(|&failed| failed), "{flags:?}");
    // Tool schemas are closed: an invented field is reported, not silently ignored.
    assert!(
        results[6].contains("Additional properties are not allowed") && results[6].contains("'c'"),
        "{}",
        results[6]
    );
    // And that is what the model saw.
    let second = sent_messages(&server, 1);
    assert_eq!(second[3]["content"], results[0].as_str());
}

#[tokio::test]
async fn budgets_end_the_run_with_an_answer() {
    // The model would call tools forever; the last allowed call goes without tools.
    let server = TestServer::start(Reply::Script(vec![
        Reply::Answer(calls(vec![("c1", "add", r#"{"a": 1, "b": 1}"#)], ToolStyle::OpenAi)),
        Reply::Answer(calls(vec![("c2", "add", r#"{"a": 2, "b": 2}"#)], ToolStyle::OpenAi)),
        Reply::Answer(Canned::text("I stop here.")),
    ]))
    .await;
    let agent = agent_for(&server, math_tools(), Limits::new(3, 10, 1)).await;
    let answer = agent.ask("count").await.unwrap();
    assert_eq!((answer.model_calls, answer.tool_calls), (3, 2));
    let bodies = server.bodies();
    assert!(bodies[1]["tools"].is_array());
    assert!(bodies[2].get("tools").is_none_or(Value::is_null), "the last call offers no tools: {}", bodies[2]);
    assert!(bodies[2]["messages"][0]["content"].as_str().unwrap().contains("No more tool calls are possible"));

    // A tool budget of 1 with two calls in one turn: the second is not run, and the next call has no tools.
    let server = TestServer::start(Reply::Sequence(vec![
        calls(vec![("c1", "add", r#"{"a": 1, "b": 1}"#), ("c2", "mul", r#"{"a": 2, "b": 2}"#)], ToolStyle::OpenAi),
        Canned::text("done"),
    ]))
    .await;
    let agent = agent_for(&server, math_tools(), Limits::new(5, 1, 2)).await;
    let answer = agent.ask("count").await.unwrap();
    assert_eq!(answer.tool_calls, 1);
    let results: Vec<String> = answer.messages.iter().filter(|m| m.role == Role::Tool).map(Message::text).collect();
    assert_eq!(results[0], "2.0");
    assert!(results[1].starts_with("error: the call was not run: the run's budget of 1 tool calls is spent"));
    assert!(server.bodies()[1].get("tools").is_none_or(Value::is_null));

    // A server that still answers with tool calls when none were offered is reported, not looped on.
    let server = TestServer::start(Reply::Answer(calls(vec![("c1", "add", "{}")], ToolStyle::OpenAi))).await;
    let agent = agent_for(&server, math_tools(), Limits::new(1, 10, 1)).await;
    let err = agent.ask("x").await.unwrap_err().to_string();
    assert!(err.contains("asked for tools in a call made without tools"), "{err}");
    assert_eq!(server.request_count(), 1);

    let llm: Arc<dyn Llm> = Arc::new(server.client(Compat::OpenAi).build().unwrap());
    assert!(Agent::new(llm.clone(), math_tools(), Limits::new(0, 1, 1)).is_err());
    assert!(Agent::new(llm, math_tools(), Limits::new(1, 1, 0)).is_err());
}

#[tokio::test]
async fn parallel_tool_calls_are_bounded_by_the_concurrency_limit() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let tools = ToolBox::new()
        .with(tool_fn("work", "Works a while.", move |_: Path| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(150)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, String>("ok")
            }
        }))
        .unwrap();
    let turn = calls(
        vec![
            ("c1", "work", r#"{"path": "1"}"#),
            ("c2", "work", r#"{"path": "2"}"#),
            ("c3", "work", r#"{"path": "3"}"#),
            ("c4", "work", r#"{"path": "4"}"#),
            ("c5", "work", r#"{"path": "5"}"#),
        ],
        ToolStyle::OpenAi,
    );
    for concurrency in [1usize, 2, 5] {
        peak.store(0, Ordering::SeqCst);
        let server = TestServer::start(Reply::Sequence(vec![turn.clone(), Canned::text("done")])).await;
        let agent = agent_for(&server, tools.clone(), Limits::new(2, 10, concurrency)).await;
        let answer = agent.ask("work").await.unwrap();
        assert_eq!(answer.tool_calls, 5);
        assert_eq!(peak.load(Ordering::SeqCst), concurrency);
        // Results in call order whatever order they finished in.
        let ids: Vec<&str> = answer.messages.iter().filter_map(|m| m.tool_call_id.as_deref()).collect();
        assert_eq!(ids, ["c1", "c2", "c3", "c4", "c5"]);
    }
}

#[tokio::test]
async fn calls_needing_approval_stop_the_run_with_a_state_that_resumes_elsewhere() {
    let deleted = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let d = deleted.clone();
    let tools = math_tools()
        .with_settings(
            tool_fn("delete_file", "Deletes a file.", move |p: Path| {
                let d = d.clone();
                async move {
                    d.lock().unwrap().push(p.path.clone());
                    Ok::<_, String>(format!("deleted {}", p.path))
                }
            }),
            ToolSettings::unrestricted().with_approval(),
        )
        .unwrap();
    let turn = calls(
        vec![("c1", "add", r#"{"a": 1, "b": 2}"#), ("c2", "delete_file", r#"{"path": "/etc/passwd"}"#)],
        ToolStyle::OpenAi,
    );
    for decision in ["edit", "reject"] {
        deleted.lock().unwrap().clear();
        let server = TestServer::start(Reply::Sequence(vec![turn.clone(), Canned::text("Done.")])).await;
        let agent = agent_for(&server, tools.clone(), Limits::new(4, 10, 2)).await;
        let outcome = agent.invoke("clean up".into()).await.unwrap();
        let AgentOutcome::NeedsApproval(state) = outcome else { panic!("expected a stop for approval") };
        assert_eq!(state.pending.len(), 1);
        assert_eq!(state.pending[0].name, "delete_file");
        assert!(deleted.lock().unwrap().is_empty(), "nothing ran before approval");
        // The call that needs no approval already ran.
        assert_eq!(state.messages.last().unwrap().text(), "3.0");
        assert_eq!(server.request_count(), 1);

        // Another process: the state as JSON, back to a value, and a fresh agent with the same tools.
        let json = serde_json::to_string(&state).unwrap();
        let state: AgentState = serde_json::from_str(&json).unwrap();
        let agent = agent_for(&server, tools.clone(), Limits::new(4, 10, 2)).await;
        let decisions = match decision {
            "edit" => vec![Decision::Edit { call_id: "c2".into(), arguments: json!({"path": "/tmp/scratch"}) }],
            _ => vec![Decision::Reject { call_id: "c2".into(), reason: "not that file".into() }],
        };
        // A decision for a call that is not pending, or none at all, is refused before anything runs.
        let err =
            agent.invoke(AgentInput::Resume { state: state.clone(), decisions: vec![] }).await.unwrap_err().to_string();
        assert!(err.contains("no decision for pending call `c2`"), "{err}");
        let mut extra = decisions.clone();
        extra.push(Decision::Approve { call_id: "c9".into() });
        let err =
            agent.invoke(AgentInput::Resume { state: state.clone(), decisions: extra }).await.unwrap_err().to_string();
        assert!(err.contains("`c9`, which is not a pending call"), "{err}");

        let answer = agent.invoke(AgentInput::Resume { state, decisions }).await.unwrap().into_answer().unwrap();
        assert_eq!(answer.text, "Done.");
        assert_eq!(answer.model_calls, 2);
        let sent = sent_messages(&server, 1);
        let last_result = sent.last().unwrap();
        assert_eq!(last_result["tool_call_id"], "c2");
        if decision == "edit" {
            assert_eq!(*deleted.lock().unwrap(), ["/tmp/scratch"]);
            assert_eq!(last_result["content"], "deleted /tmp/scratch");
            // The transcript shows the call that ran.
            assert_eq!(sent[2]["tool_calls"][1]["function"]["arguments"], r#"{"path":"/tmp/scratch"}"#);
        } else {
            assert!(deleted.lock().unwrap().is_empty());
            assert_eq!(last_result["content"], "error: the call was rejected: not that file");
        }
    }
}

#[tokio::test]
async fn memory_fits_what_is_sent_and_the_summary_comes_from_the_model() {
    let words = |t: &str| t.split_whitespace().count();
    let long_history = vec![
        Message::user("first question with quite a few words in it to use the budget"),
        Message::assistant("first answer also rather long so that it needs trimming away"),
        Message::user("second question"),
    ];
    let server = TestServer::start(Reply::Answer(Canned::text("ok"))).await;
    let agent = agent_for(&server, math_tools(), Limits::new(2, 2, 1)).await.with_memory(Arc::new(TokenWindow::new(
        20,
        2,
        Arc::new(words),
    )));
    let answer = agent.invoke(AgentInput::Conversation(long_history.clone())).await.unwrap().into_answer().unwrap();
    let sent = sent_messages(&server, 0);
    assert_eq!(sent.len(), 2, "system + the newest user message: {sent:?}");
    assert_eq!(sent[1]["content"], "second question");
    assert_eq!(answer.messages.len(), 5, "the transcript keeps everything");

    // The summarising window asks the model for a summary of what it drops, and sends it in its place.
    let server = TestServer::start(Reply::Sequence(vec![
        Canned::text("The user asked a first question; it was answered."),
        Canned::text("ok"),
    ]))
    .await;
    let llm: Arc<dyn Llm> = Arc::new(server.client(Compat::OpenAi).build().unwrap());
    let memory = SummaryWindow::new(
        TokenWindow::new(40, 2, Arc::new(words)),
        16,
        llm.clone(),
        ChatRequest::default().with_temperature(0.0),
    );
    let agent = Agent::new(llm, ToolBox::new(), Limits::new(1, 0, 1)).unwrap().with_memory(Arc::new(memory));
    agent.invoke(AgentInput::Conversation(long_history)).await.unwrap();
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 2);
    // (OpenAI's own wire name for the token limit.)
    assert_eq!(bodies[0]["max_completion_tokens"], 16);
    assert!(bodies[0]["messages"][1]["content"].as_str().unwrap().contains("first question with quite"));
    let sent = bodies[1]["messages"].as_array().unwrap();
    assert_eq!(
        sent[0]["content"],
        "Summary of the earlier conversation: The user asked a first question; it was answered."
    );
    assert_eq!(sent.last().unwrap()["content"], "second question");
}

#[test]
fn tool_errors_for_the_model_are_stable_text() {
    assert_eq!(
        ToolError::NotRun("x".into()).to_model_text(),
        "error: the call was not run: x",
        "the model-facing text is part of the contract"
    );
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
struct Sum {
    sum: f64,
    explanation: String,
}

/// The typed answer comes from one more call under `T`'s JSON Schema (OpenAI's native `json_schema` response
/// format here), after the tool loop; the stream ends with the value.
#[tokio::test]
async fn a_typed_agent_answers_with_a_value_of_its_type() {
    use catena_agent::{RepairPolicy, TypedEvent, TypedOutcome};
    let script = || {
        Reply::Sequence(vec![
            calls(vec![("c1", "add", r#"{"a": 2, "b": 3}"#)], ToolStyle::OpenAi),
            Canned::text("The sum is 5."),
            Canned::text(r#"{"sum": 5, "explanation": "2 + 3 with the add tool"}"#),
        ])
    };
    let server = TestServer::start(script()).await;
    let agent = agent_for(&server, math_tools(), Limits::new(3, 3, 1)).await.typed::<Sum>(RepairPolicy::Forbid);
    let TypedOutcome::Finished { value, answer } = agent.invoke("2+3?".into()).await.unwrap() else {
        panic!("expected an answer")
    };
    assert_eq!(value, Sum { sum: 5.0, explanation: "2 + 3 with the add tool".into() });
    assert_eq!(answer.text, "The sum is 5.");
    // The structured call is counted: three model calls of (21, 9) tokens each.
    assert_eq!((answer.model_calls, answer.usage.input_tokens, answer.usage.output_tokens), (3, 63, 27));
    let last = server.last_body();
    assert_eq!(last["response_format"]["type"], "json_schema");
    assert!(last.get("tools").is_none_or(Value::is_null));
    assert!(last["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().contains("JSON"));

    let server = TestServer::start(script()).await;
    let agent = agent_for(&server, math_tools(), Limits::new(3, 3, 1)).await.typed::<Sum>(RepairPolicy::Forbid);
    let events: Vec<TypedEvent<Sum>> = agent.stream("2+3?".into()).map(|e| e.unwrap()).collect().await;
    assert!(matches!(events.last(), Some(TypedEvent::Value(Sum { sum, .. })) if *sum == 5.0));
    assert!(matches!(&events[events.len() - 2], TypedEvent::Agent(AgentEvent::Done { .. })));
}

/// A tool choice in the request template applies to the first model call of a run only, so a forced tool cannot
/// loop the run; a resumed run is not a first call.
#[tokio::test]
async fn a_forced_tool_choice_applies_to_the_first_call_only() {
    use catena_core::ToolChoice;
    let server = TestServer::start(Reply::Sequence(vec![
        calls(vec![("c1", "add", r#"{"a": 1, "b": 1}"#)], ToolStyle::OpenAi),
        Canned::text("2"),
    ]))
    .await;
    let agent = agent_for(&server, math_tools(), Limits::new(3, 3, 1))
        .await
        .with_request(ChatRequest::default().with_tool_choice(ToolChoice::Required).with_temperature(0.0));
    agent.ask("1+1").await.unwrap();
    let bodies = server.bodies();
    assert_eq!(bodies[0]["tool_choice"], "required");
    assert_eq!(bodies[0]["temperature"], 0.0);
    assert!(bodies[1].get("tool_choice").is_none_or(Value::is_null), "{}", bodies[1]);
    assert_eq!(bodies[1]["temperature"], 0.0);
}

/// The token window with a real tokenizer (tiktoken's o200k, as GPT-4o counts): whatever the budget, what is sent
/// fits it, keeps the system prompt and the newest message, and never separates a tool result from its call.
#[tokio::test]
async fn the_token_window_fits_real_token_counts() {
    use catena_agent::Memory;
    use catena_text::splitter::{count_tokens, Encoding};
    let counter = Arc::new(|t: &str| count_tokens(Encoding::O200k, t).unwrap_or(t.len()));
    let mut conversation = vec![Message::system("You are a careful assistant who answers about Rust.")];
    for i in 0..10 {
        conversation.push(Message::user(format!("Question {i}: what does `Vec::with_capacity({i})` allocate?")));
        let mut call = Message::assistant("");
        call.tool_calls.push(catena_core::ToolCall {
            id: format!("c{i}"),
            name: "search".into(),
            arguments: format!("{{\"query\": \"with_capacity {i}\"}}"),
        });
        conversation.push(call);
        conversation
            .push(Message::tool_result(format!("c{i}"), "Vec::with_capacity reserves space without initialising it."));
        conversation.push(Message::assistant(format!("It reserves room for {i} elements; the length stays 0.")));
    }
    conversation.push(Message::user("And for a String?"));
    let window = |budget| TokenWindow::new(budget, 4, counter.clone());
    let total: usize = conversation.iter().map(|m| window(0).cost(m)).sum();
    for budget in [60, 100, 200, 400, total] {
        let memory = window(budget);
        let sent = memory.fit(&conversation).await.unwrap();
        let cost: usize = sent.iter().map(|m| memory.cost(m)).sum();
        assert!(cost <= budget, "budget {budget}: sent {cost} tokens");
        assert_eq!(sent.first(), conversation.first(), "the system prompt stays");
        assert_eq!(sent.last(), conversation.last(), "the newest message stays");
        assert_eq!(sent.get(1).map(|m| m.role), Some(Role::User), "history starts at a user message");
        let calls: Vec<&str> = sent.iter().flat_map(|m| m.tool_calls.iter().map(|c| c.id.as_str())).collect();
        let results: Vec<&str> = sent.iter().filter_map(|m| m.tool_call_id.as_deref()).collect();
        assert_eq!(calls, results, "budget {budget}: every kept call has its result and no result is orphaned");
        if budget == total {
            assert_eq!(sent, conversation);
        } else {
            assert!(sent.len() < conversation.len());
        }
    }
}

#[tokio::test]
async fn tool_spans_carry_arguments_and_results_only_when_asked() {
    for record in [false, true] {
        let (captured, _guard) = catena_test_support::spans::start();
        let server = TestServer::start(Reply::Sequence(vec![
            calls(vec![("c1", "add", r#"{"a": 2, "b": 3}"#)], ToolStyle::OpenAi),
            Canned::text("5."),
        ]))
        .await;
        let agent = agent_for(&server, math_tools(), Limits::new(4, 10, 4)).await.with_recorded_content(record);
        agent.ask("What is 2+3?").await.unwrap();
        assert_eq!(captured.value("execute_tool", "gen_ai.tool.name"), ["add"], "{}", captured.everything());
        let arguments = captured.value("execute_tool", "gen_ai.tool.call.arguments");
        let results = captured.value("execute_tool", "gen_ai.tool.call.result");
        if record {
            assert_eq!(arguments, [r#"{"a": 2, "b": 3}"#]);
            assert_eq!(results, ["5.0"]);
        } else {
            assert!(arguments.is_empty() && results.is_empty(), "content is off by default: {arguments:?} {results:?}");
        }
    }
}
