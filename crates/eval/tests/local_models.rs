//! Evaluators and experiments against real local peers: catena's MiniLM embedder (`CATENA_EMBED_MODEL`), the
//! tiny llama.cpp server (`.ci/setup-llama-server.sh`; random weights, so its answers are garbage: the judge must
//! come back with a score or a typed error, never panic) and llm-katan's echo backend (`.ci/setup-katan.sh`;
//! it echoes the last user message, which makes the judge's parse deterministic).

use std::sync::Arc;
use std::time::Duration;

use catena_core::{ChatRequest, Error, Llm, Message};
use catena_eval::{
    llm_task, output_text, run_experiment, EmbeddingSimilarity, Evaluator, ExactMatch, JsonSchemaValid, LlmJudge,
    RegexMatch, Score,
};
use catena_providers::local_embed::LocalEmbedder;
use catena_test_support::katan::Katan;
use catena_test_support::llama::shared_server;
use catena_trace::TraceStore;
use serde_json::{json, Value};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn tiny_llm() -> Arc<dyn Llm> {
    Arc::new(shared_server().client())
}

/// A judge's outcome on garbage: a parsed score on the rubric's scale, or the typed error holding the raw answer.
fn score_or_typed_error(outcome: catena_core::Result<Score>) {
    match outcome {
        Ok(score) => {
            assert!([0.0, 0.25, 0.5, 0.75, 1.0].contains(&score.value), "{score:?}");
            assert!(score.comment.as_deref().is_some_and(|c| c.contains("/5")), "{score:?}");
        }
        Err(Error::InvalidOutput { raw, reason, .. }) => eprintln!("judge answer rejected ({reason}): {raw:?}"),
        Err(other) => panic!("the judge failed with an unexpected error: {other}"),
    }
}

#[test]
fn embedding_similarity_with_the_local_minilm() {
    let embedder = Arc::new(LocalEmbedder::from_env().expect("CATENA_EMBED_MODEL names the MiniLM model"));
    let similar = EmbeddingSimilarity::new(embedder).with_threshold(0.6);
    let rt = runtime();
    let reference = json!("The cat sat on the mat.");
    let recorded =
        json!([{"role": "assistant", "content": [{"type": "text", "text": "A cat was sitting on the mat."}]}]);
    let close = rt.block_on(similar.evaluate(&json!("q"), &recorded, Some(&reference))).unwrap();
    let far = rt
        .block_on(similar.evaluate(&json!("q"), &json!("Quarterly revenue grew by five percent."), Some(&reference)))
        .unwrap();
    let same = rt.block_on(similar.evaluate(&json!("q"), &reference, Some(&reference))).unwrap();
    eprintln!("close {close:?}\nfar {far:?}");
    assert!(close.value > 0.7 && close.passed, "{close:?}");
    assert!(far.value < 0.3 && !far.passed, "{far:?}");
    assert!(same.value > 0.999, "{same:?}");
    assert!(close.comment.unwrap().contains("threshold 0.6"));
    let err = rt.block_on(similar.evaluate(&json!("q"), &reference, None)).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}

#[test]
fn the_judge_on_the_tiny_llama_gives_a_score_or_a_typed_error() {
    let llm = tiny_llm();
    let rt = runtime();
    let (input, output, reference) = (json!("What is 2 + 2?"), json!("4"), json!("4"));
    // Structured output: llama.cpp enforces the verdict schema.
    let structured = LlmJudge::new(Arc::clone(&llm)).with_request(ChatRequest::default().with_max_tokens(48));
    let outcome = rt.block_on(structured.evaluate(&input, &output, Some(&reference)));
    eprintln!("structured: {outcome:?}");
    score_or_typed_error(outcome);
    // A plain answer, read strictly: garbage is an InvalidOutput with the raw answer.
    let plain =
        LlmJudge::new(llm).with_structured_output(false).with_request(ChatRequest::default().with_max_tokens(24));
    let outcome = rt.block_on(plain.evaluate(&input, &output, Some(&reference)));
    eprintln!("plain: {outcome:?}");
    score_or_typed_error(outcome);
}

fn katan_llm(katan: &Katan) -> Arc<dyn Llm> {
    Arc::new(katan.openai_client())
}

#[test]
fn the_judge_parses_a_verdict_and_rejects_prose_deterministically() {
    let katan = Katan::start("openai", &[]);
    let llm = katan_llm(&katan);
    let rt = runtime();
    // The echo backend answers with the last user message, which holds the output under grade: a verdict there is
    // the judge's answer.
    let plain = LlmJudge::new(Arc::clone(&llm)).with_structured_output(false).with_name("echo_judge");
    let graded = json!(r#"{"score": 4, "reasoning": "echoed back"}"#);
    let score = rt.block_on(plain.evaluate(&json!("Capital of France?"), &graded, Some(&json!("Paris")))).unwrap();
    assert_eq!(
        (score.evaluator.as_str(), score.value, score.passed, score.comment.as_deref()),
        ("echo_judge", 0.75, true, Some("4/5: echoed back"))
    );
    let low = json!(r#"{"score": 2, "reasoning": "meh"}"#);
    let score = rt.block_on(plain.clone().with_pass_score(3).evaluate(&json!("q"), &low, None)).unwrap();
    assert_eq!((score.value, score.passed), (0.25, false));

    // Prose is an InvalidOutput holding the raw answer, in both modes.
    let prose = json!("Paris is the capital.");
    match rt.block_on(plain.evaluate(&json!("q"), &prose, None)) {
        Err(Error::InvalidOutput { raw, .. }) => assert!(raw.contains("[echo]") && raw.contains("Paris is"), "{raw}"),
        other => panic!("{other:?}"),
    }
    let structured = LlmJudge::new(llm);
    match rt.block_on(structured.evaluate(&json!("q"), &prose, None)) {
        Err(Error::InvalidOutput { raw, attempts, .. }) => {
            assert!(raw.contains("[echo]"), "{raw}");
            assert_eq!(attempts, 2, "one repair by default");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_experiment_over_three_examples_with_the_tiny_llama() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let store = TraceStore::open(&db).unwrap();
    store.create_dataset("arith", "small questions").unwrap();
    let recorded_input =
        serde_json::to_value(vec![Message::system("Be brief."), Message::user("What is 3 + 3?")]).unwrap();
    let ids = [
        store.add_example("arith", json!("What is 2 + 2?"), Some(json!("4")), None).unwrap(),
        store.add_example("arith", recorded_input, Some(json!("6")), None).unwrap(),
        store.add_example("arith", json!({"role": "user", "content": "Name a colour."}), None, None).unwrap(),
    ];

    let llm = tiny_llm();
    let evaluators: Vec<Box<dyn Evaluator>> = vec![
        Box::new(ExactMatch::new()),
        Box::new(RegexMatch::new(r"\S").unwrap().with_name("non_empty")),
        Box::new(JsonSchemaValid::new(json!({"type": "object"})).unwrap()),
        Box::new(LlmJudge::new(Arc::clone(&llm)).with_request(ChatRequest::default().with_max_tokens(32))),
    ];
    let task = llm_task(llm, ChatRequest::default().with_max_tokens(12).with_temperature(0.0));
    let rt = runtime();
    // The experiment's future is Send: it runs as a spawned task.
    let db_for_task = db.clone();
    let experiment = rt
        .block_on(rt.spawn(async move {
            run_experiment(db_for_task, "arith", "tiny baseline", "llama.cpp/tiny", task, &evaluators, 2).await
        }))
        .unwrap()
        .unwrap();
    eprintln!("{experiment:#?}");
    assert_eq!((experiment.name.as_str(), experiment.target.as_str()), ("tiny baseline", "llama.cpp/tiny"));
    assert!(experiment.finished.is_some());
    let summary = &experiment.summary;
    assert_eq!((summary.results, summary.errors), (3, 0));
    assert!(summary.input_tokens > 0 && summary.output_tokens > 0, "{summary:?}");
    let by_name =
        |n: &str| summary.scores.iter().find(|s| s.evaluator == n).unwrap_or_else(|| panic!("{n}: {summary:?}"));
    // Two examples have a reference: the third's exact match is a failed score, not a crash.
    assert_eq!((by_name("exact_match").count, by_name("exact_match").errors), (3, 1));
    assert_eq!(by_name("json_schema").count, 3);
    assert_eq!(by_name("llm_judge").count, 3);

    let detail = store.experiment(experiment.id).unwrap().unwrap();
    assert_eq!(detail.results.iter().map(|r| r.example).collect::<Vec<_>>(), ids);
    for result in &detail.results {
        let output = result.output.as_ref().expect("the model answered");
        assert_eq!(output[0]["role"], "assistant", "{output}");
        assert!(result.usage.is_some() && result.latency > Duration::ZERO);
        assert_eq!(result.scores.len(), 4);
        // The tiny model's verdicts are garbage: each is a score on the rubric's scale or a recorded typed error.
        let judged = &result.scores[3];
        match &judged.error {
            Some(e) => assert!(e.contains("the model's output is invalid"), "{judged:?}"),
            None => assert!([0.0, 0.25, 0.5, 0.75, 1.0].contains(&judged.value), "{judged:?}"),
        }
    }
    let no_reference = &detail.results[2].scores[0];
    assert!(no_reference.error.as_deref().is_some_and(|e| e.contains("reference")), "{no_reference:?}");

    // A second experiment whose task fails on one example and panics on another, compared with the first.
    let task = |input: Value| async move {
        let text = output_text(&input);
        if text.contains("2 + 2") {
            Ok((json!("4"), None))
        } else if text.contains("3 + 3") {
            Err(Error::InvalidInput("no arithmetic today".into()))
        } else {
            panic!("a task bug")
        }
    };
    let evaluators: Vec<Box<dyn Evaluator>> = vec![Box::new(ExactMatch::new())];
    let fixed = rt.block_on(run_experiment(&db, "arith", "fixed", "fn:answers", task, &evaluators, 3)).unwrap();
    assert_eq!((fixed.summary.results, fixed.summary.errors), (3, 2));
    assert_eq!(fixed.summary.scores[0].mean, Some(1.0));

    let comparison = store.compare(experiment.id, fixed.id).unwrap();
    assert_eq!(comparison.examples.len(), 3);
    let [first, second, third] = &comparison.examples[..] else { unreachable!() };
    assert_eq!(first.b.as_ref().unwrap().output, Some(json!("4")));
    assert_eq!(second.b.as_ref().unwrap().error.as_deref(), Some("invalid input: no arithmetic today"));
    assert!(third.b.as_ref().unwrap().error.as_deref().unwrap().contains("panicked: a task bug"));
    assert!(first.a.as_ref().unwrap().output.is_some() && first.reference == Some(json!("4")));
    assert_eq!(store.experiments("arith").unwrap().len(), 2);
}
