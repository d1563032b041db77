//! The studio binary serving a real trace store: the runs list with its filters and totals, a trace's tree and
//! details, and the JSON API, over HTTP on 127.0.0.1.

mod common;

use std::time::{Duration, SystemTime};

use common::{get, start};

use catena_trace::{Cost, FieldValue, Run, RunId, RunKind, RunStatus, TokenUsage, TraceId, TraceStore};

fn run(trace: u128, id: u64, parent: Option<u64>, name: &str, kind: RunKind, offset_ms: u64, ms: u64) -> Run {
    Run {
        attributes: vec![("gen_ai.operation.name".into(), FieldValue::Str(kind.as_str().into()))],
        ..Run::new(
            TraceId(trace),
            RunId(id),
            parent.map(RunId),
            name,
            kind,
            SystemTime::now() - Duration::from_secs(60) + Duration::from_millis(offset_ms),
            Duration::from_millis(ms),
        )
    }
}

#[test]
fn runs_list_trace_tree_and_api() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let mut store = TraceStore::open(&db).unwrap();
    let mut root = run(1, 10, None, "rag <answer>", RunKind::Chain, 0, 900);
    root.tags = vec!["demo".into()];
    let mut call = run(1, 12, Some(10), "chat gpt-4o-mini", RunKind::Llm, 300, 550);
    call.model = Some("gpt-4o-mini".into());
    call.usage = Some(TokenUsage { input: 1200, output: 80, cached_input: None });
    call.cost = Cost::Usd(0.000228);
    call.time_to_first_chunk = Some(Duration::from_millis(120));
    call.input = Some(serde_json::json!([{"role": "user", "content": "What is a <Box>?"}]));
    call.output = Some(serde_json::json!([{"role": "assistant", "content": "A pointer to the heap."}]));
    let mut failed_root = run(2, 20, None, "summarise", RunKind::Chain, 2000, 40);
    let mut failed_call = run(2, 21, Some(20), "chat claude-sonnet-4", RunKind::Llm, 2001, 30);
    failed_call.model = Some("claude-sonnet-4".into());
    failed_call.status = RunStatus::Error { kind: Some("429".into()), message: Some("rate limited: wait".into()) };
    failed_root.status = RunStatus::Ok;
    // A trace from two days ago, for the time filters.
    let mut old = run(3, 30, None, "yesterday's batch", RunKind::Chain, 0, 50);
    old.start = SystemTime::now() - Duration::from_secs(2 * 86_400);
    store
        .insert(&[
            run(1, 11, Some(10), "retrieval", RunKind::Retrieval, 10, 280),
            call,
            root,
            failed_call,
            failed_root,
            old,
        ])
        .unwrap();
    drop(store);
    let studio = start(&db, &[]);

    let (status, page) = get(&format!("{}/", studio.base));
    assert_eq!(status, 200);
    assert!(page.contains("rag &lt;answer&gt;"), "names are escaped: {page}");
    assert!(page.contains("summarise") && page.contains(r#"data-testid="total-traces">3<"#), "{page}");
    assert!(page.contains("1200 / 80") && page.contains("$0.00023"), "{page}");
    assert!(page.contains("/style.css") && !page.contains("https://"), "no network at run time");

    // Filters.
    let (_, errors) = get(&format!("{}/?status=error", studio.base));
    assert!(errors.contains("summarise") && !errors.contains("rag &lt;answer&gt;"));
    let (_, by_model) = get(&format!("{}/?model=gpt-4o-mini", studio.base));
    assert!(by_model.contains("rag &lt;answer&gt;") && !by_model.contains("summarise"));
    let (_, by_tag) = get(&format!("{}/?tag=demo&name=RAG", studio.base));
    assert!(by_tag.contains(r#"data-testid="total-traces">1<"#), "{by_tag}");
    let (_, none) = get(&format!("{}/?name=nothing-like-this", studio.base));
    assert!(none.contains("No runs yet"));
    // Time: the last 24 hours leave the old trace out; a range around it keeps only it.
    let (_, recent) = get(&format!("{}/?since=24h", studio.base));
    assert!(recent.contains(r#"data-testid="total-traces">2<"#) && !recent.contains("yesterday"), "{recent}");
    let (_, all) = get(&format!("{}/?since=", studio.base));
    assert!(all.contains("yesterday&#39;s batch") || all.contains("yesterday's batch"), "{all}");
    // A range from three days ago to one day ago, written as the form's `datetime-local` inputs send it (UTC).
    let ago = |days: u64| {
        (SystemTime::now() - Duration::from_secs(days * 86_400))
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let (from, until) = (ago(3), ago(1));
    let iso = |secs: u64| {
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = (secs / 86_400) as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}", secs % 86_400 / 3600, secs % 3600 / 60)
    };
    let (_, range) = get(&format!("{}/?from={}&until={}", studio.base, iso(from), iso(until)));
    assert!(range.contains(r#"data-testid="total-traces">1<"#) && range.contains("batch"), "{range}");
    let (status, _) = get(&format!("{}/?from=yesterday", studio.base));
    assert_eq!(status, 400, "a time that does not parse is refused");

    // The trace: tree order, waterfall, details.
    let trace = format!("{:032x}", 1u128);
    let (status, page) = get(&format!("{}/traces/{trace}", studio.base));
    assert_eq!(status, 200);
    let order: Vec<usize> = ["run-000000000000000a", "run-000000000000000b", "run-000000000000000c"]
        .iter()
        .map(|id| page.find(id).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "parent, then children by start");
    assert!(page.contains("What is a &lt;Box&gt;?") && page.contains("A pointer to the heap."));
    assert!(page.contains("120 ms"), "time to first chunk shown");
    let (_, failed) = get(&format!("{}/traces/{:032x}", studio.base, 2u128));
    assert!(failed.contains("rate limited: wait") && failed.contains("(429)"));

    // Unknown or malformed ids are 404s with a message, not crashes.
    assert_eq!(get(&format!("{}/traces/{:032x}", studio.base, 9u128)).0, 404);
    assert_eq!(get(&format!("{}/traces/not-an-id", studio.base)).0, 404);

    // JSON.
    let listed: serde_json::Value =
        reqwest::blocking::get(format!("{}/api/traces", studio.base)).unwrap().json().unwrap();
    assert_eq!(listed["totals"]["traces"], 3);
    assert_eq!(listed["traces"][1]["input_tokens"], 1200);
    let one: serde_json::Value =
        reqwest::blocking::get(format!("{}/api/traces/{trace}", studio.base)).unwrap().json().unwrap();
    assert_eq!(one["runs"].as_array().unwrap().len(), 3);
}
