//! The playground: open a recorded model call, edit its messages and parameters, rerun it against the same
//! provider or another, and see the old and new answers side by side. The rerun is recorded like any run (tag
//! `playground`).

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::Html;
use catena_core::layer::{LayerExt, TelemetryLayer};
use catena_core::{ChatRequest, ContentPart, Llm, Message};
use catena_trace::{FieldValue, Run, RunId, RunKind, TraceQuery};
use maud::{html, Markup};
use tracing::Instrument;

use crate::pages::{duration, kind_badge, layout, pretty, with_store, Failure, Studio};
use crate::providers::{self, Provider};

/// The text of a recorded input or output: the messages' text, a string, the `text` (or `answer`, `output`,
/// `content`) of an answer-like object, or else the JSON itself.
pub(crate) fn text_of(value: &serde_json::Value) -> String {
    if let Ok(messages) = serde_json::from_value::<Vec<Message>>(value.clone()) {
        return messages.iter().map(Message::text).collect::<Vec<_>>().join("\n\n");
    }
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(map) => ["text", "answer", "output", "content"]
            .iter()
            .find_map(|k| map.get(*k).and_then(serde_json::Value::as_str))
            .map_or_else(|| pretty(value), str::to_string),
        other => pretty(other),
    }
}

fn parse_run(id: &str) -> Result<RunId, Failure> {
    id.parse().map_err(|e: catena_trace::ParseIdError| Failure(StatusCode::NOT_FOUND, e.to_string()))
}

/// The recorded model call `id` and its messages.
async fn recorded_call(studio: &Studio, id: &str) -> Result<(Run, Vec<Message>), Failure> {
    let run_id = parse_run(id)?;
    let run = with_store(studio, move |s| s.run(run_id))
        .await?
        .ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("no run {id} in this store")))?;
    if run.kind != RunKind::Llm {
        return Err(Failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("run {id} is a {} run, not a model call", run.kind.as_str()),
        ));
    }
    let Some(input) = &run.input else {
        return Err(Failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this call was recorded without its messages (content recording was off: CATENA_TRACE_CONTENT=false, \
             or TelemetryLayer without record_content), so there is nothing to edit"
                .into(),
        ));
    };
    let messages: Vec<Message> = serde_json::from_value(input.clone()).map_err(|e| {
        Failure(StatusCode::UNPROCESSABLE_ENTITY, format!("the recorded input is not a list of messages: {e}"))
    })?;
    Ok((run, messages))
}

/// Whether a message is plain text (editable in a text box).
fn editable(m: &Message) -> bool {
    m.tool_calls.is_empty() && m.content.iter().all(|p| matches!(p, ContentPart::Text { .. }))
}

fn number(run: &Run, name: &str) -> Option<String> {
    run.attribute(name).map(FieldValue::to_string)
}

fn form(run: &Run, messages: &[Message], chosen: Provider, values: &HashMap<String, String>) -> Markup {
    let value = |k: &str, default: Option<String>| values.get(k).cloned().or(default).unwrap_or_default();
    html! {
        form.playground method="post" action={ "/playground/" (run.id) } {
            div.messages {
                @for (i, m) in messages.iter().enumerate() {
                    div.message {
                        label { span class={ "role role-" (m.role) } { (m.role) } }
                        @if editable(m) {
                            textarea name={ "content-" (i) } rows=(m.text().lines().count().clamp(2, 14)) {
                                (value(&format!("content-{i}"), Some(m.text())))
                            }
                        } @else {
                            pre.json { (pretty(&serde_json::to_value(m).unwrap_or_default())) }
                            p.muted { "Tool calls and images are sent as recorded." }
                        }
                    }
                }
            }
            div.params {
                label { "Provider"
                    select name="provider" {
                        @for p in Provider::ALL {
                            option value=(p.name()) selected[p == chosen] disabled[!p.configured()] {
                                (p.name()) @if !p.configured() { " (not configured)" }
                            }
                        }
                    }
                }
                label { "Model" input type="text" name="model" value=(value("model", run.model.clone())); }
                label { "Temperature" input type="number" step="0.1" min="0" max="2" name="temperature"
                    value=(value("temperature", number(run, "gen_ai.request.temperature"))); }
                label { "Max tokens" input type="number" min="1" name="max_tokens"
                    value=(value("max_tokens", number(run, "gen_ai.request.max_tokens"))); }
                button type="submit" data-testid="rerun" { "Run ▶" }
            }
        }
    }
}

/// `GET /playground/<run id>`: the recorded call, editable.
pub(crate) async fn page(State(studio): State<Studio>, Path(id): Path<String>) -> Result<Html<String>, Failure> {
    let (run, messages) = recorded_call(&studio, &id).await?;
    let chosen = providers::for_recorded(run.provider.as_deref());
    let body = html! {
        section.title-row {
            h1 { "Playground" }
            p.muted { "from " (kind_badge(run.kind)) " " a href={ "/traces/" (run.trace_id) "#run-" (run.id) } { (run.name) }
                " · " (duration(run.duration)) }
        }
        @if !Provider::ALL.iter().any(|p| p.configured()) {
            div.error-box { "No provider is configured for the studio: " (providers::setup_hint(Provider::Openai)) " (or another provider's variables)." }
        }
        (form(&run, &messages, chosen, &HashMap::new()))
        @if let Some(output) = &run.output {
            h4 { "Recorded answer" }
            pre.answer data-testid="original-output" { (text_of(output)) }
        }
    };
    Ok(Html(layout("Playground", body).into_string()))
}

/// `POST /playground/<run id>`: reruns the edited call, records it, and shows the old and new answers.
pub(crate) async fn rerun(
    State(studio): State<Studio>,
    Path(id): Path<String>,
    Form(values): Form<HashMap<String, String>>,
) -> Result<Html<String>, Failure> {
    let (run, mut messages) = recorded_call(&studio, &id).await?;
    for (i, m) in messages.iter_mut().enumerate() {
        if let Some(text) = values.get(&format!("content-{i}")) {
            if editable(m) {
                m.content = vec![ContentPart::Text { text: text.replace("\r\n", "\n") }];
            }
        }
    }
    let bad = |what: &str, e: &dyn std::fmt::Display| Failure(StatusCode::BAD_REQUEST, format!("{what}: {e}"));
    let provider_name = values.get("provider").map(String::as_str).unwrap_or("openai");
    let provider = provider_name.parse::<Provider>().map_err(|e| bad("provider", &e))?;
    let mut request = ChatRequest::new(messages);
    if let Some(t) = values.get("temperature").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        request.temperature = Some(t.parse().map_err(|e| bad("temperature", &e))?);
    }
    if let Some(n) = values.get("max_tokens").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        request.max_tokens = Some(n.parse().map_err(|e| bad("max tokens", &e))?);
    }
    let model = values.get("model").cloned();
    let chosen = provider;
    let marker = RunId::random().to_string();
    let started = Instant::now();
    let span = tracing::info_span!(
        "playground",
        catena.tags = "playground",
        catena.playground.source_run = %run.id,
        catena.playground.rerun = %marker,
    );
    let answer = async {
        let llm = providers::client(provider, model.as_deref())?.layer(TelemetryLayer::new().record_content(true));
        llm.chat(request).await
    }
    .instrument(span)
    .await;
    let elapsed = started.elapsed();
    studio.flush();
    let new_trace = with_store(&studio, move |s| {
        let recent =
            s.traces(&TraceQuery { tag: Some("playground".into()), limit: Some(50), ..TraceQuery::default() })?;
        Ok(recent
            .into_iter()
            .find(|t| t.root.attribute("catena.playground.rerun").is_some_and(|v| v.to_string() == marker)))
    })
    .await?;
    let body = html! {
        section.title-row {
            h1 { "Playground" }
            p.muted { "rerun of " a href={ "/traces/" (run.trace_id) "#run-" (run.id) } { (run.name) } " with " (chosen.name()) }
        }
        div.compare {
            div.side {
                h3 { "Recorded" }
                p.muted { (run.model.clone().unwrap_or_default()) " · " (duration(run.duration))
                    @if let Some(u) = run.usage { " · " (u.input) " in / " (u.output) " out" } }
                pre.answer data-testid="original-output" { (run.output.as_ref().map(text_of).unwrap_or_default()) }
            }
            div.side {
                h3 { "New" }
                @match &answer {
                    Ok(a) => {
                        p.muted { (a.model) " · " (duration(elapsed))
                            @if let Some(u) = a.usage { " · " (u.input_tokens) " in / " (u.output_tokens) " out" } }
                        pre.answer data-testid="new-output" { (a.text()) }
                    }
                    Err(e) => {
                        div.error-box data-testid="new-output" { strong { "The call failed" } pre { (e) } }
                    }
                }
                @if let Some(t) = &new_trace {
                    p { a data-testid="new-trace" href={ "/traces/" (t.root.trace_id) } { "Open the new run's trace →" } }
                }
            }
        }
        h4 { "Edit again" }
        (form(&run, &serde_json::from_value::<Vec<Message>>(run.input.clone().unwrap_or_default()).unwrap_or_default(), chosen, &values))
    };
    Ok(Html(layout("Playground", body).into_string()))
}
