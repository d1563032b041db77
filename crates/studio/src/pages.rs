//! The studio's routes: HTML pages rendered on the server (maud templates, escaped), and the same data as JSON.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use catena_trace::{Cost, Run, RunKind, RunStatus, Totals, TraceId, TraceQuery, TraceStore, TraceSummary};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

const STYLE: &str = include_str!("style.css");
/// The playground's, datasets' and experiments' components.
const APP_STYLE: &str = include_str!("app.css");

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Studio {
    /// The trace store's file.
    pub(crate) db: Arc<PathBuf>,
    /// The studio's own recorder (playground reruns and evaluations are recorded into the same store).
    pub(crate) recorder: Option<Arc<catena_trace::RecorderHandle>>,
}

impl Studio {
    /// Writes what the studio itself recorded so far, so that a page shows it.
    pub(crate) fn flush(&self) {
        if let Some(r) = &self.recorder {
            r.flush(Duration::from_secs(10));
        }
    }
}

/// The studio's routes over the trace store in `db`; `recorder` is the handle of the recorder writing the
/// studio's own runs into it.
pub fn router(db: PathBuf, recorder: Option<Arc<catena_trace::RecorderHandle>>) -> Router {
    Router::new()
        .route("/", get(runs_page))
        .route("/traces/{id}", get(trace_page))
        .route("/runs/{id}", get(run_page))
        .route("/playground/{run}", get(crate::playground::page).post(crate::playground::rerun))
        .route("/datasets", get(crate::datasets::list))
        .route("/datasets/add", axum::routing::post(crate::datasets::add))
        .route("/datasets/{name}", get(crate::datasets::page))
        .route("/datasets/{name}/run", axum::routing::post(crate::datasets::run))
        .route("/experiments/{id}", get(crate::datasets::experiment))
        .route("/compare", get(crate::datasets::compare))
        .route("/api/traces", get(traces_json))
        .route("/api/traces/{id}", get(trace_json))
        .route("/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }))
        .route("/app.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_STYLE) }))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Studio { db: Arc::new(db), recorder })
}

/// A failure shown as a page with its status.
pub(crate) struct Failure(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = layout("Error", html! { div.empty { h2 { "Something went wrong" } p { (self.1) } } });
        (self.0, Html(body.into_string())).into_response()
    }
}

/// Runs `f` on the store, on a blocking thread (SQLite is synchronous).
pub(crate) async fn with_store<T: Send + 'static>(
    studio: &Studio,
    f: impl FnOnce(&TraceStore) -> catena_core::Result<T> + Send + 'static,
) -> Result<T, Failure> {
    let db = studio.db.clone();
    tokio::task::spawn_blocking(move || {
        let store = TraceStore::open(db.as_path()).map_err(|e| e.to_string())?;
        f(&store).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e))
}

/// The runs list's filters, as the form sends them (empty fields mean no filter).
#[derive(Debug, Default, Deserialize)]
struct Filters {
    name: Option<String>,
    model: Option<String>,
    /// `ok` or `error`.
    status: Option<String>,
    tag: Option<String>,
    /// `1h`, `24h`, `7d`, `30d`; anything else is all time.
    since: Option<String>,
    /// Runs that started at or after this UTC time (`2026-12-05T21:03`, as a `datetime-local` input sends it).
    from: Option<String>,
    /// Runs that started before this UTC time.
    until: Option<String>,
    limit: Option<usize>,
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl Filters {
    fn query(&self) -> Result<TraceQuery, Failure> {
        let window = match self.since.as_deref() {
            Some("1h") => Some(Duration::from_secs(3600)),
            Some("24h") => Some(Duration::from_secs(86_400)),
            Some("7d") => Some(Duration::from_secs(7 * 86_400)),
            Some("30d") => Some(Duration::from_secs(30 * 86_400)),
            _ => None,
        };
        let time = |field: &str, value: &Option<String>| -> Result<Option<SystemTime>, Failure> {
            non_empty(value)
                .map(|v| parse_utc(&v).map_err(|why| Failure(StatusCode::BAD_REQUEST, format!("{field}: {why}"))))
                .transpose()
        };
        let from = time("from", &self.from)?;
        let until = time("until", &self.until)?;
        let recent = window.and_then(|w| SystemTime::now().checked_sub(w));
        Ok(TraceQuery {
            name: non_empty(&self.name),
            model: non_empty(&self.model),
            failed: match self.status.as_deref() {
                Some("error") => Some(true),
                Some("ok") => Some(false),
                _ => None,
            },
            // Both a preset window and a start time: the later of the two.
            since: recent.max(from),
            until,
            tag: non_empty(&self.tag),
            limit: Some(self.limit.unwrap_or(200).min(5000)),
        })
    }
}

/// A UTC time written `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` or `YYYY-MM-DDTHH:MM:SS` (a space may stand for the `T`).
fn parse_utc(text: &str) -> Result<SystemTime, String> {
    let bad = || format!("`{text}` is not a UTC time like 2026-12-05T21:03");
    let text = text.trim();
    let (date, time) = text.split_once(['T', ' ']).unwrap_or((text, "00:00"));
    let numbers = |s: &str, sep: char| -> Option<Vec<i64>> { s.split(sep).map(|p| p.parse().ok()).collect() };
    let date = numbers(date, '-').ok_or_else(bad)?;
    let time = numbers(time, ':').ok_or_else(bad)?;
    let ([year, month, day], [hour, minute, rest @ ..]) = (date.as_slice(), time.as_slice()) else {
        return Err(bad());
    };
    let second = match rest {
        [] => 0,
        [s] => *s,
        _ => return Err(bad()),
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(month)
        || !(1..=month_days).contains(day)
        || !(0..24).contains(hour)
        || !(0..60).contains(minute)
        || !(0..60).contains(&second)
    {
        return Err(bad());
    }
    // Days since 1970-01-01 from a civil date (Howard Hinnant's algorithm, the inverse of `timestamp`'s).
    let y = if *month <= 2 { year - 1 } else { *year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let secs = u64::try_from(secs).map_err(|_| format!("`{text}` is before 1970"))?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

fn parse_trace(id: &str) -> Result<TraceId, Failure> {
    id.parse().map_err(|e: catena_trace::ParseIdError| Failure(StatusCode::NOT_FOUND, e.to_string()))
}

/// `GET /runs/<id>`: the run in its trace (a redirect to the trace page, at the run).
async fn run_page(State(studio): State<Studio>, Path(id): Path<String>) -> Result<Response, Failure> {
    let run: catena_trace::RunId =
        id.parse().map_err(|e: catena_trace::ParseIdError| Failure(StatusCode::NOT_FOUND, e.to_string()))?;
    let found = with_store(&studio, move |s| s.run(run)).await?;
    let Some(found) = found else {
        return Err(Failure(StatusCode::NOT_FOUND, format!("no run {id} in this store")));
    };
    Ok(axum::response::Redirect::to(&format!("/traces/{}#run-{}", found.trace_id, found.id)).into_response())
}

async fn traces_json(State(studio): State<Studio>, Query(filters): Query<Filters>) -> Result<Response, Failure> {
    let query = filters.query()?;
    let (traces, totals) = with_store(&studio, move |s| Ok((s.traces(&query)?, s.totals(&query)?))).await?;
    let traces: Vec<_> = traces.iter().map(summary_json).collect();
    Ok(Json(serde_json::json!({ "traces": traces, "totals": totals_json(&totals) })).into_response())
}

async fn trace_json(State(studio): State<Studio>, Path(id): Path<String>) -> Result<Response, Failure> {
    let trace = parse_trace(&id)?;
    let runs = with_store(&studio, move |s| s.trace(trace)).await?;
    if runs.is_empty() {
        return Err(Failure(StatusCode::NOT_FOUND, format!("no trace {id} in this store")));
    }
    Ok(Json(serde_json::json!({ "trace_id": id, "runs": runs })).into_response())
}

fn summary_json(t: &TraceSummary) -> serde_json::Value {
    serde_json::json!({
        "trace_id": t.root.trace_id,
        "name": t.root.name,
        "kind": t.root.kind,
        "start_unix_ms": unix_ms(t.root.start),
        "duration_ms": t.root.duration.as_secs_f64() * 1e3,
        "runs": t.runs,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cost_usd": t.cost_usd,
        "unpriced_calls": t.unpriced_calls,
        "failed": t.failed,
        "models": t.models,
        "tags": t.root.tags,
    })
}

fn totals_json(t: &Totals) -> serde_json::Value {
    serde_json::json!({
        "traces": t.traces,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cost_usd": t.cost_usd,
        "unpriced_calls": t.unpriced_calls,
    })
}

fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// `2026-12-05 21:03:04` (UTC).
pub(crate) fn timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1e3)
    }
}

pub(crate) fn usd(x: f64) -> String {
    if x == 0.0 {
        "$0".into()
    } else if x < 0.01 {
        format!("${x:.5}")
    } else {
        format!("${x:.2}")
    }
}

pub(crate) fn cost_of(cost: &Cost) -> String {
    match cost {
        Cost::Usd(x) => usd(*x),
        Cost::Free => "free (local)".into(),
        Cost::Unpriced => "no price for this model".into(),
        Cost::NoUsage => "—".into(),
    }
}

pub(crate) fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · catena studio" }
                link rel="stylesheet" href="/style.css";
                link rel="stylesheet" href="/app.css";
            }
            body {
                header.top {
                    a.brand href="/" { span.logo { "◆" } " catena studio" }
                    nav { a href="/" { "Runs" } " " a href="/datasets" { "Datasets" } }
                }
                main { (body) }
            }
        }
    }
}

pub(crate) fn status_pill(failed: bool) -> Markup {
    if failed {
        html! { span.pill.error { "error" } }
    } else {
        html! { span.pill.ok { "ok" } }
    }
}

pub(crate) fn kind_badge(kind: RunKind) -> Markup {
    html! { span class={ "kind kind-" (kind.as_str()) } { (kind.as_str()) } }
}

async fn runs_page(State(studio): State<Studio>, Query(filters): Query<Filters>) -> Result<Html<String>, Failure> {
    let query = filters.query()?;
    let (traces, totals) = with_store(&studio, move |s| Ok((s.traces(&query)?, s.totals(&query)?))).await?;
    let selected = |value: &str| filters.since.as_deref() == Some(value);
    let status = filters.status.as_deref().unwrap_or("");
    let body = html! {
        section.title-row {
            h1 { "Runs" }
            p.muted { (studio.db.display()) }
        }
        form.filters method="get" action="/" {
            input type="search" name="name" placeholder="Name contains…" value=(filters.name.clone().unwrap_or_default());
            input type="text" name="model" placeholder="Model" value=(filters.model.clone().unwrap_or_default());
            input type="text" name="tag" placeholder="Tag" value=(filters.tag.clone().unwrap_or_default());
            select name="status" {
                option value="" selected[status.is_empty()] { "Any status" }
                option value="ok" selected[status == "ok"] { "OK" }
                option value="error" selected[status == "error"] { "Error" }
            }
            select name="since" {
                option value="" { "All time" }
                option value="1h" selected[selected("1h")] { "Last hour" }
                option value="24h" selected[selected("24h")] { "Last 24 hours" }
                option value="7d" selected[selected("7d")] { "Last 7 days" }
                option value="30d" selected[selected("30d")] { "Last 30 days" }
            }
            label.range { "From" input type="datetime-local" name="from" title="UTC" value=(filters.from.clone().unwrap_or_default()); }
            label.range { "until" input type="datetime-local" name="until" title="UTC" value=(filters.until.clone().unwrap_or_default()); }
            button type="submit" { "Filter" }
            a.clear href="/" { "Clear" }
        }
        section.totals {
            div.stat { span.value data-testid="total-traces" { (totals.traces) } span.label { "traces" } }
            div.stat { span.value { (totals.input_tokens) } span.label { "input tokens" } }
            div.stat { span.value { (totals.output_tokens) } span.label { "output tokens" } }
            div.stat {
                span.value { (usd(totals.cost_usd)) @if totals.unpriced_calls > 0 { "+" } }
                span.label {
                    "cost"
                    @if totals.unpriced_calls > 0 { " (" (totals.unpriced_calls) " calls unpriced)" }
                }
            }
        }
        @if traces.is_empty() {
            div.empty {
                h2 { "No runs yet" }
                p { "Run an example with " code { "CATENA_TRACE_DB=" (studio.db.display()) } " set, then reload." }
            }
        } @else {
            table.runs {
                thead { tr {
                    th { "Started (UTC)" } th { "Name" } th { "Status" } th.num { "Latency" } th.num { "Runs" }
                    th.num { "Tokens in / out" } th.num { "Cost" } th { "Models" } th { "Tags" }
                } }
                tbody {
                    @for t in &traces {
                        tr data-trace=(t.root.trace_id) {
                            td.muted { (timestamp(t.root.start)) }
                            td { a href={ "/traces/" (t.root.trace_id) } { (t.root.name) } " " (kind_badge(t.root.kind)) }
                            td { (status_pill(t.failed)) }
                            td.num { (duration(t.root.duration)) }
                            td.num { (t.runs) }
                            td.num { (t.input_tokens) " / " (t.output_tokens) }
                            td.num {
                                (usd(t.cost_usd))
                                @if t.unpriced_calls > 0 { span.muted title="calls without a price" { " +?" } }
                            }
                            td { @for m in &t.models { span.chip { (m) } } }
                            td { @for tag in &t.root.tags { span.chip.tag { (tag) } } }
                        }
                    }
                }
            }
        }
    };
    Ok(Html(layout("Runs", body).into_string()))
}

/// The runs in tree order (each parent followed by its children, by start), with their depth.
fn tree_order(runs: &[Run]) -> Vec<(usize, &Run)> {
    let ids: std::collections::HashSet<_> = runs.iter().map(|r| r.id).collect();
    let mut children: HashMap<Option<catena_trace::RunId>, Vec<&Run>> = HashMap::new();
    for run in runs {
        // A run whose parent is missing (not recorded, or dropped) is shown at the top level.
        let parent = run.parent_id.filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(run);
    }
    for list in children.values_mut() {
        list.sort_by_key(|r| r.start);
    }
    let mut out = Vec::with_capacity(runs.len());
    let mut stack: Vec<(usize, &Run)> = children.get(&None).into_iter().flatten().rev().map(|r| (0, *r)).collect();
    while let Some((depth, run)) = stack.pop() {
        out.push((depth, run));
        if let Some(kids) = children.get(&Some(run.id)) {
            stack.extend(kids.iter().rev().map(|k| (depth + 1, *k)));
        }
    }
    out
}

/// A recorded input or output: chat messages as a conversation, a retrieval's results as a ranked table, any
/// other value as JSON; the raw JSON is always one click away.
pub(crate) fn value_view(value: &serde_json::Value) -> Markup {
    let raw = html! { details.raw { summary { "Raw JSON" } pre.json { (pretty(value)) } } };
    if let Ok(messages) = serde_json::from_value::<Vec<catena_core::Message>>(value.clone()) {
        return html! {
            div.conversation {
                @for m in &messages {
                    div class={ "bubble bubble-" (m.role) } {
                        span class={ "role role-" (m.role) } { (m.role) }
                        @let text = m.text();
                        @if !text.is_empty() { div.text { (text) } }
                        @for call in &m.tool_calls { div.call { code { (call.name) "(" (call.arguments) ")" } } }
                        @if let Some(id) = &m.tool_call_id { div.muted { "answers " code { (id) } } }
                    }
                }
            }
            (raw)
        };
    }
    if let Some(results) = value.as_array().filter(|r| !r.is_empty() && r.iter().all(|x| x.get("score").is_some())) {
        return html! { (results_table(results)) (raw) };
    }
    // A chain's answer with its sources (a `RagChain` answer): the text, then the sources as a ranked table.
    if let (Some(text), Some(sources)) =
        (value.get("text").and_then(|t| t.as_str()), value.get("sources").and_then(|s| s.as_array()))
    {
        return html! {
            div.conversation {
                div class="bubble bubble-assistant" { span class="role role-assistant" { "answer" } div.text { (text) } }
            }
            @if !sources.is_empty() { (results_table(sources)) }
            (raw)
        };
    }
    match value.as_str() {
        // A question, a prompt: the text itself, not a JSON string literal.
        Some(text) => html! { pre.json { (text) } },
        None => html! { pre.json { (pretty(value)) } },
    }
}

/// Ranked retrieval results (`[{id, score, source, content?}]`) as a table, each text under its row.
fn results_table(results: &[serde_json::Value]) -> Markup {
    html! {
        table.results {
            thead { tr { th.num { "#" } th.num { "Score" } th { "Source" } th { "Id" } } }
            tbody { @for (i, r) in results.iter().enumerate() {
                tr {
                    td.num { (i + 1) }
                    td.num { (r["score"].as_f64().map(|x| format!("{x:.4}")).unwrap_or_default()) }
                    td { (r["source"].as_str().unwrap_or("")) }
                    td { code { (r["id"].as_str().unwrap_or("")) } }
                }
                @if let Some(text) = r["content"].as_str() { tr.snippet { td {} td colspan="3" { (text) } } }
            } }
        }
    }
}

/// At most `max` characters of `text`, with an ellipsis when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

pub(crate) fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn run_detail(run: &Run) -> Markup {
    html! {
        div.detail {
            dl.facts {
                dt { "Kind" } dd { (kind_badge(run.kind)) }
                dt { "Started" } dd { (timestamp(run.start)) }
                dt { "Latency" } dd { (duration(run.duration)) }
                @if let Some(t) = run.time_to_first_chunk { dt { "First chunk" } dd { (duration(t)) } }
                @if let Some(p) = &run.provider { dt { "Provider" } dd { (p) } }
                @if let Some(m) = &run.model { dt { "Model" } dd { (m) } }
                @if let Some(u) = &run.usage {
                    dt { "Tokens" }
                    dd {
                        (u.input) " in / " (u.output) " out"
                        @if let Some(c) = u.cached_input { " (" (c) " cached)" }
                    }
                }
                dt { "Cost" } dd { (cost_of(&run.cost)) }
                @if let Some(f) = &run.finish_reason { dt { "Finish" } dd { (f) } }
            }
            @if let RunStatus::Error { kind, message } = &run.status {
                div.error-box {
                    strong { "Error" @if let Some(k) = kind { " (" (k) ")" } }
                    @if let Some(m) = message { pre { (m) } }
                }
            }
            @if run.kind == RunKind::Llm && run.input.is_some() {
                div.actions {
                    a.button data-testid="open-playground" href={ "/playground/" (run.id) } { "Open in playground" }
                }
            }
            @if run.input.is_some() && matches!(run.kind, RunKind::Llm | RunKind::Chain | RunKind::Tool | RunKind::Agent) {
                form.inline method="post" action="/datasets/add" data-testid="add-to-dataset" {
                    input type="hidden" name="run" value=(run.id);
                    input type="text" name="dataset" placeholder="Dataset name" required;
                    button.secondary type="submit" { "Add to dataset" }
                }
            }
            @if let Some(input) = &run.input { h4 { "Input" } (value_view(input)) }
            @if let Some(output) = &run.output { h4 { "Output" } (value_view(output)) }
            @if !run.events.is_empty() {
                h4 { "Events" }
                ul.events {
                    @for e in &run.events {
                        li { span.muted { "+" (duration(e.at)) } " " span class={ "level " (e.level.to_lowercase()) } { (e.level) } " " (e.message)
                            @for (k, v) in &e.fields { " " code { (k) "=" (v.to_string()) } } }
                    }
                }
            }
            details.attrs {
                summary { "All attributes (" (run.attributes.len()) ")" }
                table { @for (k, v) in &run.attributes { tr { td { code { (k) } } td { (v.to_string()) } } } }
            }
        }
    }
}

async fn trace_page(State(studio): State<Studio>, Path(id): Path<String>) -> Result<Html<String>, Failure> {
    let trace = parse_trace(&id)?;
    let runs = with_store(&studio, move |s| s.trace(trace)).await?;
    let ordered = tree_order(&runs);
    let Some((_, root)) = ordered.first() else {
        return Err(Failure(StatusCode::NOT_FOUND, format!("no trace {id} in this store")));
    };
    let origin = runs.iter().map(|r| r.start).min().unwrap_or(root.start);
    let end = runs.iter().map(|r| r.start + r.duration).max().unwrap_or(root.start + root.duration);
    let span = end.duration_since(origin).unwrap_or_default().as_secs_f64().max(1e-9);
    let offset = |r: &Run| r.start.duration_since(origin).unwrap_or_default().as_secs_f64() / span * 100.0;
    let llm: Vec<&Run> = runs.iter().filter(|r| r.kind == RunKind::Llm).collect();
    let tokens_in: u64 = llm.iter().filter_map(|r| r.usage.map(|u| u.input)).sum();
    let tokens_out: u64 = llm.iter().filter_map(|r| r.usage.map(|u| u.output)).sum();
    let cost: f64 = runs
        .iter()
        .filter_map(|r| match r.cost {
            Cost::Usd(x) => Some(x),
            _ => None,
        })
        .sum();
    let failed = runs.iter().any(|r| r.status.is_error());
    let unpriced = runs.iter().filter(|r| r.cost == Cost::Unpriced).count();
    let body = html! {
        section.title-row {
            h1 { (root.name) " " (status_pill(failed)) }
            p.muted { "trace " code { (id) } " · " (timestamp(root.start)) " UTC" }
        }
        section.totals {
            div.stat { span.value { (duration(root.duration)) } span.label { "latency" } }
            div.stat { span.value { (runs.len()) } span.label { "runs" } }
            div.stat { span.value { (llm.len()) } span.label { "model calls" } }
            div.stat { span.value { (tokens_in) " / " (tokens_out) } span.label { "tokens in / out" } }
            div.stat {
                span.value { (usd(cost)) @if unpriced > 0 { "+" } }
                span.label { "cost" @if unpriced > 0 { " (" (unpriced) " unpriced)" } }
            }
        }
        section.waterfall {
            div.scale { span { "0" } span { (duration(Duration::from_secs_f64(span))) } }
            @for (depth, run) in &ordered {
                details.run id={ "run-" (run.id) } data-kind=(run.kind.as_str()) {
                    summary {
                        span.name style={ "padding-left:" (depth * 18) "px" } {
                            (kind_badge(run.kind)) " " (run.name)
                            @if run.status.is_error() { " " span.pill.error { "error" } }
                        }
                        span.track {
                            span class={ "bar bar-" (run.kind.as_str()) }
                                style={ "left:" (format!("{:.3}", offset(run))) "%;width:"
                                    (format!("{:.3}", (run.duration.as_secs_f64() / span * 100.0).max(0.4))) "%" } {}
                        }
                        span.time { (duration(run.duration)) }
                    }
                    (run_detail(run))
                }
            }
        }
    };
    Ok(Html(layout(&root.name, body).into_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_parse_as_timestamp_prints_them() {
        for text in ["2026-12-05 21:03:04", "1970-01-01 00:00:00", "2024-02-29 23:59:59", "2000-03-01 12:00:00"] {
            assert_eq!(timestamp(parse_utc(text).unwrap()), text);
        }
        assert_eq!(timestamp(parse_utc("2026-12-05T21:03").unwrap()), "2026-12-05 21:03:00");
        assert_eq!(timestamp(parse_utc("2026-12-05").unwrap()), "2026-12-05 00:00:00");
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-02-29",
            "2026-04-31",
            "2026-12-05T25:00",
            "2026-12-05T10",
            "1969-12-31T23:59",
            "",
        ] {
            assert!(parse_utc(bad).is_err(), "{bad}");
        }
    }
}
