//! Datasets and evaluations: save recorded calls as examples, run a model over a dataset with evaluators, and
//! compare two experiments side by side.

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use catena_core::layer::{LayerExt, TelemetryLayer};
use catena_core::{ChatRequest, Embedder, Llm};
use catena_eval::{
    llm_task, run_experiment, EmbeddingSimilarity, Evaluator, ExactMatch, JsonSchemaValid, LlmJudge, RegexMatch,
};
use catena_trace::{ExperimentId, ExperimentResult, ExperimentSummary, RunId, Score};
use maud::{html, Markup};
use serde::Deserialize;
use tracing::Instrument;

use crate::pages::{duration, layout, timestamp, with_store, Failure, Studio};
use crate::playground::text_of;
use crate::providers::{self, Provider};

/// The evaluators the form offers: (form value, label).
const EVALUATORS: [(&str, &str); 5] = [
    ("exact_match", "Exact match"),
    ("regex", "Regex"),
    ("json_schema", "JSON Schema valid"),
    ("embedding_similarity", "Embedding similarity"),
    ("llm_judge", "LLM as judge"),
];

/// A value in a table cell: its text (a string; chat messages; the `text` of an answer-like object such as a
/// `RagChain` answer, whose whole JSON, sources included, is a click away; else its JSON).
fn value_cell(value: Option<&serde_json::Value>) -> Markup {
    let Some(value) = value else { return html! {} };
    let text = text_of(value);
    let has_more = value.as_object().is_some_and(|o| o.len() > 1 && o.get("role").is_none());
    html! {
        (cell(text))
        @if has_more { details.raw { summary { "JSON" } pre.json { (crate::pages::pretty(value)) } } }
    }
}

/// A long text in a table cell: its start, the whole on a click.
fn cell(text: String) -> Markup {
    if text.chars().count() <= 300 {
        return html! { (text) };
    }
    html! { details { summary { (crate::pages::shorten(&text, 280)) } (text) } }
}

fn bad(message: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, message.into())
}

fn valid_name(name: &str) -> Result<String, Failure> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 || name.contains('/') {
        return Err(bad("a dataset name is 1 to 100 characters, without `/`"));
    }
    Ok(name.to_string())
}

/// `POST /datasets/add`: the run `run` (a model call, a chain, a tool or an agent run with its recorded input)
/// saved as an example of `dataset` (created when new).
pub(crate) async fn add(
    State(studio): State<Studio>,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Result<Response, Failure> {
    let dataset = valid_name(form.get("dataset").map(String::as_str).unwrap_or_default())?;
    let run: RunId = form
        .get("run")
        .ok_or_else(|| bad("which run? (`run` is missing)"))?
        .parse()
        .map_err(|e: catena_trace::ParseIdError| bad(e.to_string()))?;
    let name = dataset.clone();
    with_store(&studio, move |s| {
        let run = s.run(run)?.ok_or_else(|| catena_core::Error::InvalidInput(format!("no run {run} in this store")))?;
        s.create_dataset(&name, "")?;
        s.add_run_as_example(&name, &run)
    })
    .await?;
    Ok(Redirect::to(&format!("/datasets/{}", encode(&dataset))).into_response())
}

/// A path segment, percent-encoded.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /datasets`.
pub(crate) async fn list(State(studio): State<Studio>) -> Result<Html<String>, Failure> {
    let datasets = with_store(&studio, |s| s.datasets()).await?;
    let body = html! {
        section.title-row { h1 { "Datasets" } p.muted { "Save a model call or a chain's run from its trace (" em { "Add to dataset" } ") to start one." } }
        @if datasets.is_empty() {
            div.empty { h2 { "No datasets yet" } p { "Open a trace, and add one of its model calls or chain runs to a dataset (or run examples/rag_experiment.rs, which makes one)." } }
        } @else {
            table.runs {
                thead { tr { th { "Name" } th.num { "Examples" } th { "Created (UTC)" } } }
                tbody { @for d in &datasets { tr {
                    td { a href={ "/datasets/" (encode(&d.name)) } { (d.name) } }
                    td.num { (d.examples) }
                    td.muted { (timestamp(d.created)) }
                } } }
            }
        }
    };
    Ok(Html(layout("Datasets", body).into_string()))
}

fn score_cell(score: &Score) -> Markup {
    let title =
        format!("{}: {}", score.evaluator, score.error.clone().or_else(|| score.comment.clone()).unwrap_or_default());
    html! {
        span class={ "score " (if score.passed { "pass" } else { "fail" }) } data-testid="score" title=(title) {
            (score.evaluator) " " @if score.error.is_some() { "error" } @else { (format!("{:.2}", score.value)) }
        }
        @if let Some(e) = &score.error { span.score-error { (crate::pages::shorten(e, 240)) } }
    }
}

fn summary_cells(summary: &ExperimentSummary) -> Markup {
    html! {
        @for s in &summary.scores {
            span.chip { (s.evaluator) ": "
                @match s.mean { Some(m) => (format!("{m:.2}")), None => "—" }
                @if let Some(p) = s.pass_rate { " (" (format!("{:.0}", p * 100.0)) "% pass)" }
                @if s.errors > 0 { " · " (s.errors) " errors" }
            }
        }
    }
}

/// `GET /datasets/<name>`: its examples, the evaluation form and its experiments.
pub(crate) async fn page(State(studio): State<Studio>, Path(name): Path<String>) -> Result<Html<String>, Failure> {
    let lookup = name.clone();
    let (dataset, examples, experiments) =
        with_store(&studio, move |s| Ok((s.dataset(&lookup)?, s.examples(&lookup)?, s.experiments(&lookup)?))).await?;
    let Some(dataset) = dataset else {
        return Err(Failure(StatusCode::NOT_FOUND, format!("no dataset named {name}")));
    };
    let configured: Vec<Provider> = Provider::ALL.into_iter().filter(|p| p.configured()).collect();
    let body = html! {
        section.title-row { h1 { (dataset.name) } p.muted { (dataset.examples) " examples · created " (timestamp(dataset.created)) " UTC" } }
        table.runs {
            thead { tr { th { "#" } th { "Input" } th { "Reference output" } th { "From" } } }
            tbody { @for e in &examples { tr data-testid="example" {
                td.muted { (e.id) }
                td.cell-text { (value_cell(Some(&e.input))) }
                td.cell-text { (value_cell(e.reference.as_ref())) }
                td { @if let Some(r) = e.source_run { a href={ "/runs/" (r) } { "run" } } }
            } } }
        }
        p.muted {
            "Runs a model on each input, sent as chat messages. For examples saved from a chain (a RAG question, say), "
            "run the chain itself over this dataset from your program (" code { "catena::eval::run_experiment" } " with "
            code { "chain_task" } "; " code { "examples/rag_experiment.rs" } " does it): its experiments appear below."
        }
        form.eval method="post" action={ "/datasets/" (encode(&dataset.name)) "/run" } data-testid="run-eval" {
            fieldset {
                legend { "Evaluators" }
                @for (value, label) in EVALUATORS {
                    label { input type="checkbox" name="evaluator" value=(value) checked[value == "exact_match"]; " " (label) }
                }
            }
            fieldset {
                label.field { "Regex (for the regex evaluator)" }
                input type="text" name="regex" placeholder="e.g. (?i)box";
                label.field { "JSON Schema (for the schema evaluator)" }
                textarea name="schema" rows="2" placeholder=r#"{"type": "object"}"# {}
            }
            fieldset {
                label.field { "Provider" }
                select name="provider" {
                    @for p in Provider::ALL {
                        option value=(p.name()) disabled[!p.configured()] selected[configured.first() == Some(&p)] {
                            (p.name()) @if !p.configured() { " (not configured)" }
                        }
                    }
                }
                label.field { "Model" }
                input type="text" name="model" placeholder="the provider's default";
                label.field { "Max tokens" }
                input type="text" name="max_tokens" value="256";
            }
            fieldset {
                label.field { "Experiment name" }
                input type="text" name="name" value={ "experiment " (experiments.len() + 1) };
                button type="submit" { "Run evaluation ▶" }
            }
        }
        @if !experiments.is_empty() {
            h4 { "Experiments" }
            form method="get" action="/compare" {
                table.runs {
                    thead { tr { th { "A" } th { "B" } th { "Name" } th { "Target" } th { "Results" } th { "Scores" } th { "Started (UTC)" } } }
                    tbody { @for (i, x) in experiments.iter().enumerate() { tr {
                        td { input type="radio" name="a" value=(x.id) checked[i == 1 || experiments.len() == 1]; }
                        td { input type="radio" name="b" value=(x.id) checked[i == 0]; }
                        td { a href={ "/experiments/" (x.id) } { (x.name) } }
                        td { code { (x.target) } }
                        td.num { (x.summary.results) @if x.summary.errors > 0 { " (" (x.summary.errors) " failed)" } }
                        td { (summary_cells(&x.summary)) }
                        td.muted { (timestamp(x.created)) }
                    } } }
                }
                @if experiments.len() > 1 { div.actions { button.secondary type="submit" data-testid="compare" { "Compare A and B" } } }
            }
        }
    };
    Ok(Html(layout(&dataset.name, body).into_string()))
}

/// The local embedder of the embedding-similarity evaluator, loaded once.
#[cfg(feature = "local-embed")]
fn embedder() -> Result<Arc<dyn Embedder>, String> {
    static EMBEDDER: std::sync::OnceLock<Result<Arc<dyn Embedder>, String>> = std::sync::OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            catena_providers::local_embed::LocalEmbedder::from_env()
                .map(|e| Arc::new(e) as Arc<dyn Embedder>)
                .map_err(|e| format!("the embedding-similarity evaluator needs a local embedding model: {e}"))
        })
        .clone()
}

#[cfg(not(feature = "local-embed"))]
fn embedder() -> Result<Arc<dyn Embedder>, String> {
    Err("the embedding-similarity evaluator needs the studio's `local-embed` feature".into())
}

/// `POST /datasets/<name>/run`: runs the chosen model over every example, scores the answers, records the
/// experiment, and shows it.
pub(crate) async fn run(
    State(studio): State<Studio>,
    Path(name): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, Failure> {
    let field = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.trim().to_string()).unwrap_or_default();
    let provider_name = field("provider");
    let provider = provider_name.parse::<Provider>().map_err(|e| bad(e.to_string()))?;
    let model = Some(field("model")).filter(|m| !m.is_empty());
    let untraced: Arc<dyn Llm> = providers::client(provider, model.as_deref()).map_err(|e| bad(e.to_string()))?;
    // The task's and the judge's calls are recorded like any run (with their messages).
    let llm: Arc<dyn Llm> = Arc::new(untraced.layer(TelemetryLayer::new().record_content(true)));
    let max_tokens: Option<u32> = match field("max_tokens") {
        m if m.is_empty() => None,
        m => Some(m.parse().map_err(|e| bad(format!("max tokens: {e}")))?),
    };
    let target = format!("{}/{}", provider.name(), llm.default_model().unwrap_or_else(|| "default".into()));
    let mut evaluators: Vec<Box<dyn Evaluator>> = Vec::new();
    for (_, chosen) in form.iter().filter(|(k, _)| k == "evaluator") {
        evaluators.push(match chosen.as_str() {
            "exact_match" => Box::new(ExactMatch::new()),
            "regex" => Box::new(RegexMatch::new(&field("regex")).map_err(|e| bad(format!("regex: {e}")))?),
            "json_schema" => {
                let schema = serde_json::from_str(&field("schema")).map_err(|e| bad(format!("JSON Schema: {e}")))?;
                Box::new(JsonSchemaValid::new(schema).map_err(|e| bad(format!("JSON Schema: {e}")))?)
            }
            "embedding_similarity" => Box::new(EmbeddingSimilarity::new(embedder().map_err(bad)?)),
            "llm_judge" => Box::new(LlmJudge::new(llm.clone())),
            other => return Err(bad(format!("unknown evaluator `{other}`"))),
        });
    }
    if evaluators.is_empty() {
        return Err(bad("choose at least one evaluator"));
    }
    let experiment_name = Some(field("name")).filter(|n| !n.is_empty()).unwrap_or_else(|| "experiment".into());
    let template = ChatRequest { max_tokens, ..ChatRequest::default() };
    let task = llm_task(llm, template);
    let span = tracing::info_span!(
        "evaluation",
        otel.name = %format_args!("evaluation {experiment_name}"),
        catena.tags = "evaluation",
        catena.dataset = %name,
    );
    let db = studio.db.clone();
    let experiment = run_experiment(db.as_path(), &name, &experiment_name, &target, task, &evaluators, 2)
        .instrument(span)
        .await
        .map_err(|e| bad(e.to_string()))?;
    studio.flush();
    Ok(Redirect::to(&format!("/experiments/{}", experiment.id)).into_response())
}

fn result_row(r: Option<&ExperimentResult>) -> Markup {
    html! {
        @match r {
            None => { td.muted { "—" } td {} }
            Some(r) => {
                td.cell-text {
                    @if let Some(e) = &r.error { span.pill.error { "failed" } " " (e) }
                    @else { (value_cell(r.output.as_ref())) }
                }
                td { @for s in &r.scores { (score_cell(s)) " " } br; span.muted { (duration(r.latency)) } }
            }
        }
    }
}

/// `GET /experiments/<id>`.
pub(crate) async fn experiment(State(studio): State<Studio>, Path(id): Path<i64>) -> Result<Html<String>, Failure> {
    let (detail, examples) = with_store(&studio, move |s| {
        let detail = s.experiment(ExperimentId(id))?;
        let examples = match &detail {
            Some(d) => s.examples(&d.experiment.dataset)?,
            None => Vec::new(),
        };
        Ok((detail, examples))
    })
    .await?;
    let Some(detail) = detail else { return Err(Failure(StatusCode::NOT_FOUND, format!("no experiment {id}"))) };
    let x = &detail.experiment;
    let body = html! {
        section.title-row {
            h1 { (x.name) }
            p.muted { "on " a href={ "/datasets/" (encode(&x.dataset)) } { (x.dataset) } " · " code { (x.target) } " · " (timestamp(x.created)) " UTC" }
        }
        section.totals data-testid="experiment-summary" {
            div.stat { span.value { (x.summary.results) } span.label { "results" } }
            div.stat { span.value { (x.summary.errors) } span.label { "failed" } }
            div.stat { span.value { (x.summary.mean_latency.map(duration).unwrap_or_default()) } span.label { "mean latency" } }
            div.stat { span.value { (x.summary.input_tokens) " / " (x.summary.output_tokens) } span.label { "tokens in / out" } }
            @for s in &x.summary.scores {
                div.stat {
                    span.value { @match s.mean { Some(m) => (format!("{m:.2}")), None => "—" } }
                    span.label {
                        (s.evaluator) @if let Some(p) = s.pass_rate { " · " (format!("{:.0}", p * 100.0)) "% pass" }
                        @if s.errors > 0 { " · " (s.errors) " failed to score" }
                    }
                }
            }
        }
        table.runs {
            thead { tr { th { "Input" } th { "Reference" } th { "Output" } th { "Scores" } } }
            tbody { @for r in &detail.results {
                @let example = examples.iter().find(|e| e.id == r.example);
                tr {
                    td.cell-text { (value_cell(example.map(|e| &e.input))) }
                    td.cell-text { (value_cell(example.and_then(|e| e.reference.as_ref()))) }
                    (result_row(Some(r)))
                }
            } }
        }
    };
    Ok(Html(layout(&x.name, body).into_string()))
}

/// The two experiments of a comparison.
#[derive(Debug, Deserialize)]
pub(crate) struct Pair {
    a: i64,
    b: i64,
}

/// `GET /compare?a=<id>&b=<id>`: two experiments side by side, example by example.
pub(crate) async fn compare(State(studio): State<Studio>, Query(pair): Query<Pair>) -> Result<Html<String>, Failure> {
    let comparison = with_store(&studio, move |s| s.compare(ExperimentId(pair.a), ExperimentId(pair.b)))
        .await
        .map_err(|f| Failure(StatusCode::NOT_FOUND, f.1))?;
    let (a, b) = (&comparison.a, &comparison.b);
    let body = html! {
        section.title-row { h1 { "Compare" } p.muted { "on " (a.dataset) } }
        div.compare data-testid="comparison" {
            div.side { h3 { "A: " a href={ "/experiments/" (a.id) } { (a.name) } } p.muted { code { (a.target) } } (summary_cells(&a.summary)) }
            div.side { h3 { "B: " a href={ "/experiments/" (b.id) } { (b.name) } } p.muted { code { (b.target) } } (summary_cells(&b.summary)) }
        }
        table.runs {
            thead { tr { th { "Input" } th { "Reference" } th { "A output" } th { "A scores" } th { "B output" } th { "B scores" } } }
            tbody { @for e in &comparison.examples { tr {
                td.cell-text { (value_cell(e.input.as_ref())) }
                td.cell-text { (value_cell(e.reference.as_ref())) }
                (result_row(e.a.as_ref()))
                (result_row(e.b.as_ref()))
            } } }
        }
    };
    Ok(Html(layout("Compare", body).into_string()))
}
