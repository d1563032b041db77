//! Datasets and evaluations in the studio against a real OpenAI-format server (llm-katan's echo backend) and the
//! real local MiniLM embedder: a recorded call saved as an example, two experiments with every evaluator, their
//! scores, and the comparison.

mod common;

use common::{get, post, record_call, start};

#[test]
fn save_an_example_run_evaluations_and_compare_them() {
    let katan = catena_test_support::katan::Katan::start("openai", &[]);
    let base = format!("{}/v1", katan.base_url());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let call = record_call(&db, &base, "What is a Box?");
    let embed_model = std::env::var("CATENA_EMBED_MODEL")
        .expect("CATENA_EMBED_MODEL names the MiniLM directory (bash .ci/fetch-minilm.sh prints it)");
    let studio = start(
        &db,
        &[
            ("OPENAI_BASE_URL", base.as_str()),
            ("OPENAI_API_KEY", "sk-local"),
            ("CATENA_MODEL", "echo"),
            ("CATENA_EMBED_MODEL", embed_model.as_str()),
        ],
    );

    // The trace page offers the call to a dataset; saving it lands on the dataset.
    let (_, trace) = get(&format!("{}/traces/{}", studio.base, call.trace_id));
    assert!(trace.contains(r#"data-testid="add-to-dataset""#), "{trace}");
    let run = call.id.to_string();
    let (status, page) = post(&format!("{}/datasets/add", studio.base), &[("run", &run), ("dataset", "boxes")]);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page.matches(r#"data-testid="example""#).count(), 1, "{page}");
    assert!(page.contains("What is a Box?"));
    let (_, list) = get(&format!("{}/datasets", studio.base));
    assert!(list.contains(r#"href="/datasets/boxes""#));

    // An evaluation with every evaluator.
    let url = format!("{}/datasets/boxes/run", studio.base);
    let (status, experiment) = post(
        &url,
        &[
            ("evaluator", "exact_match"),
            ("evaluator", "regex"),
            ("evaluator", "json_schema"),
            ("evaluator", "embedding_similarity"),
            ("evaluator", "llm_judge"),
            ("regex", "(?i)box"),
            ("schema", r#"{"type": "object"}"#),
            ("provider", "openai"),
            ("model", "echo"),
            ("name", "baseline"),
        ],
    );
    assert_eq!(status, 200, "{experiment}");
    assert!(experiment.contains(r#"data-testid="experiment-summary""#));
    // Five evaluators, one example: five score cells, whatever the verdicts.
    assert_eq!(experiment.matches(r#"data-testid="score""#).count(), 5, "{experiment}");
    for name in ["exact_match", "regex", "json_schema", "embedding_similarity", "llm_judge"] {
        assert!(experiment.contains(name), "{name} is summarised: {experiment}");
    }

    // A second experiment, then the two side by side.
    let (status, second) =
        post(&url, &[("evaluator", "exact_match"), ("provider", "openai"), ("model", "echo"), ("name", "again")]);
    assert_eq!(status, 200, "{second}");
    let (_, dataset) = get(&format!("{}/datasets/boxes", studio.base));
    assert!(dataset.contains("baseline") && dataset.contains("again") && dataset.contains(r#"data-testid="compare""#));
    let api: Vec<(i64, String)> = {
        let store = catena_trace::TraceStore::open(&db).unwrap();
        store.experiments("boxes").unwrap().into_iter().map(|x| (x.id.0, x.name)).collect()
    };
    assert_eq!(api.len(), 2);
    let (status, compared) = get(&format!("{}/compare?a={}&b={}", studio.base, api[1].0, api[0].0));
    assert_eq!(status, 200, "{compared}");
    assert!(compared.contains(r#"data-testid="comparison""#) && compared.contains("What is a Box?"));
    assert_eq!(compared.matches(r#"data-testid="score""#).count(), 6, "5 + 1 scores: {compared}");

    // Mistakes are answered with what is wrong.
    let (status, body) = post(&url, &[("provider", "openai")]);
    assert_eq!((status, body.contains("at least one evaluator")), (400, true), "{body}");
    let (status, body) = post(&url, &[("evaluator", "regex"), ("regex", "("), ("provider", "openai")]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(get(&format!("{}/datasets/nothing", studio.base)).0, 404);
    assert_eq!(get(&format!("{}/experiments/999", studio.base)).0, 404);
}
