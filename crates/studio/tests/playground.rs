//! The playground against a real OpenAI-format server (llm-katan, whose echo backend answers with what it was
//! sent): a recorded call opens with its messages, an edited rerun answers with the edit, old and new side by
//! side, and the rerun is recorded as a trace of its own.

mod common;

use catena_trace::{RunKind, TraceStore};
use common::{get, post, record_call, start};

#[test]
fn rerun_an_edited_call_and_see_both_answers() {
    let katan = catena_test_support::katan::Katan::start("openai", &[]);
    let base = format!("{}/v1", katan.base_url());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");

    // A call recorded as an application records it.
    let call = record_call(&db, &base, "What is a Box?");
    let store = catena_trace::TraceStore::open(&db).unwrap();
    let trace = store.traces(&catena_trace::TraceQuery::default()).unwrap().remove(0);

    let studio =
        start(&db, &[("OPENAI_BASE_URL", base.as_str()), ("OPENAI_API_KEY", "sk-local"), ("CATENA_MODEL", "echo")]);
    let url = format!("{}/playground/{}", studio.base, call.id);
    let (status, page) = get(&url);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(r#"name="content-1""#) && page.contains("What is a Box?"), "{page}");
    assert!(page.contains(r#"value="openai" selected"#), "the recorded provider is chosen: {page}");
    assert!(page.contains(r#"name="max_tokens" value="40""#), "{page}");

    let (status, result) = post(
        &url,
        &[
            ("content-0", "Answer briefly."),
            ("content-1", "What is an Rc, edited in the playground?"),
            ("provider", "openai"),
            ("model", "echo"),
            ("temperature", "0"),
            ("max_tokens", "40"),
        ],
    );
    assert_eq!(status, 200, "{result}");
    let new_output = &result[result.find(r#"data-testid="new-output""#).expect("the new answer")..];
    assert!(new_output.contains("edited in the playground"), "the echo carries the edit: {new_output}");
    assert!(result.contains(r#"data-testid="original-output""#));
    let link = result.split(r#"data-testid="new-trace" href="/traces/"#).nth(1).expect("a link to the new trace");
    let new_trace: catena_trace::TraceId = link[..32].parse().unwrap();

    // The rerun is a trace of its own, tagged, with the edited messages.
    let store = TraceStore::open(&db).unwrap();
    let rerun = store.trace(new_trace).unwrap();
    assert_eq!(rerun[0].tags, ["playground"]);
    let rerun_call = rerun.iter().find(|r| r.kind == RunKind::Llm).expect("the rerun's model call");
    assert!(rerun_call.input.as_ref().unwrap().to_string().contains("edited in the playground"));
    assert_eq!(rerun_call.attribute("gen_ai.request.temperature").and_then(|v| v.as_f64()), Some(0.0));
    let (_, list) = get(&format!("{}/?tag=playground", studio.base));
    assert!(list.contains(r#"data-testid="total-traces">1<"#), "{list}");

    // What cannot be rerun says why.
    assert_eq!(get(&format!("{}/playground/{}", studio.base, trace.root.id)).0, 422, "a span is not a model call");
    assert_eq!(get(&format!("{}/playground/{:016x}", studio.base, 7)).0, 404);
    let (status, body) = post(&url, &[("provider", "nonsense")]);
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(&url, &[("provider", "anthropic"), ("content-1", "hi")]);
    assert_eq!(status, 200);
    assert!(body.contains("The call failed") && body.contains("ANTHROPIC_API_KEY"), "an unconfigured provider: {body}");
}
