//! Chain overhead, bare and with telemetry recorded: a 3-step chain of trivial async closures (`x + 1`, `* 2`,
//! `- 3`), `invoke`d and awaited on a current-thread tokio runtime, versus LangChain LCEL
//! (`RunnableLambda | RunnableLambda | RunnableLambda`, benches/lcel_peer.py) and a LangGraph 3-node
//! `StateGraph` (benches/langgraph_peer.py), all measured in the same run.
//!
//! Run: `cargo bench --bench chain` (needs `pip install langchain-core langgraph`).
//!
//! catena is measured three ways, in this order, in one process:
//! - **bare**: no `tracing` subscriber (the `chain` spans every step opens are disabled callsites);
//! - **registry**: `tracing_subscriber::registry()` installed as the global default with the recording layer
//!   switched off: the cost of span bookkeeping alone (slab slot, enter/exit stack, close);
//! - **recording**: the same registry with [`Recorder`] on. For every span it copies all fields (given at creation
//!   and `record`ed later; strings and `Debug`/`Display` values are copied into owned `String`s) into a
//!   `Vec<(field name, value)>` kept in the span's registry extensions; when the span closes, the record moves
//!   into a shared batch (`Mutex<Vec<_>>`), which is "exported" every 512 spans by tallying spans, fields and
//!   string bytes and freeing the records, as an exporter's batch processor would. Events are recorded the same
//!   way. The run asserts that every step's span arrived with its three fields.
//!
//! The peers run without callbacks, then with a callback handler that records every run's start (name, inputs)
//! and end (outputs) into a list (`--record`), LangChain's counterpart of the recording subscriber. Each figure is
//! the median (and best) of 5 rounds; a counting allocator gives heap allocations per invoke; ratios are peer
//! time over catena's median in this run.

mod support;

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;
use support::{allocations, Recorder};

use catena::{chain_fn, Chain};
use tracing_subscriber::layer::SubscriberExt;

const ROUNDS: usize = 5;

/// One catena measurement: the median and the best of the rounds, and heap allocations per invoke.
#[derive(Debug, Clone, Copy)]
struct Measured {
    median: f64,
    best: f64,
    allocs: f64,
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime");
    let chain = chain_fn(|x: i64| async move { Ok(x + 1) })
        .then(chain_fn(|x: i64| async move { Ok(x * 2) }))
        .then(chain_fn(|x: i64| async move { Ok(x - 3) }));
    let iterations: i64 = 2_000_000;
    let invoke_chain = |n: i64| {
        rt.block_on(async {
            let allocs = allocations();
            let start = Instant::now();
            let mut total = 0i64;
            for i in 0..n {
                total = total.wrapping_add(chain.invoke(black_box(i)).await.expect("invoke"));
            }
            let ns = start.elapsed().as_nanos() as f64 / n as f64;
            (ns, (allocations() - allocs) as f64 / n as f64, total)
        })
    };
    let measure = |what: &str| {
        invoke_chain(10_000);
        let per_round = iterations / ROUNDS as i64;
        let expected: i64 = (0..per_round).map(|i| (i + 1) * 2 - 3).sum();
        let mut rounds: Vec<(f64, f64)> = (0..ROUNDS)
            .map(|_| {
                let (ns, allocs, total) = invoke_chain(per_round);
                assert_eq!(total, expected, "{what}: the chain computed a wrong result");
                (ns, allocs)
            })
            .collect();
        rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (median, allocs) = rounds[ROUNDS / 2];
        Measured { median, best: rounds[0].0, allocs }
    };

    let bare = measure("bare");

    let recorder = Recorder::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder.clone()))
        .expect("no other global subscriber");
    let registry = measure("registry");
    assert_eq!(recorder.totals().spans, 0, "the recording layer was off");

    recorder.set_on(true);
    let recording = measure("recording");
    recorder.set_on(false);
    let totals = recorder.totals();
    let invokes = (10_000 + iterations / ROUNDS as i64 * ROUNDS as i64) as u64;
    // Three `chain` spans per invoke; each has `gen_ai.operation.name` and `catena.chain.step` from creation and
    // `catena.latency_ms` recorded when the step finished.
    assert_eq!(totals.spans, 3 * invokes, "one recorded span per chain step");
    assert_eq!(totals.latency_fields, totals.spans, "every span's latency was recorded");
    assert_eq!(totals.fields, 3 * totals.spans, "every span's three fields were recorded");
    assert_eq!(totals.events, 0, "no step failed");

    let peers = [
        ("lcel_peer.py", &[][..], "LangChain LCEL, 3 RunnableLambda", 3000),
        ("lcel_peer.py", &["--record"][..], "LangChain LCEL + recording callback", 3000),
        ("langgraph_peer.py", &[][..], "LangGraph 3-node StateGraph", 1500),
        ("langgraph_peer.py", &["--record"][..], "LangGraph + recording callback", 1500),
    ];
    let peers: Vec<(&str, Option<f64>)> =
        peers.iter().map(|(script, flags, what, n)| (*what, run_peer(script, flags, *n))).collect();

    println!();
    println!(
        "3-step chain invoke: catena median and best of {ROUNDS} rounds of {} invokes",
        iterations / ROUNDS as i64
    );
    println!(
        "| {:<44} | {:>10} | {:>10} | {:>6} | {:>13} | {:>13} |",
        "", "median", "best", "allocs", "/ catena bare", "/ catena rec."
    );
    println!("|{:-<46}|{:->12}|{:->12}|{:->8}|{:->15}|{:->15}|", "", "", "", "", "", "");
    let ratio = |r: f64| if r < 100.0 { format!("{r:.1}x") } else { format!("{r:.0}x") };
    let row = |what: &str, ns: f64, best: Option<f64>, allocs: Option<f64>| {
        println!(
            "| {what:<44} | {:>10} | {:>10} | {:>6} | {:>13} | {:>13} |",
            fmt_ns(ns),
            best.map_or(String::new(), fmt_ns),
            allocs.map_or(String::new(), |a| format!("{a:.1}")),
            ratio(ns / bare.median),
            ratio(ns / recording.median)
        );
    };
    for (what, m) in [
        ("catena, no subscriber (bare)", bare),
        ("catena, registry only (recording layer off)", registry),
        ("catena, registry + recording layer", recording),
    ] {
        row(what, m.median, Some(m.best), Some(m.allocs));
    }
    for (what, ns) in &peers {
        match ns {
            Some(ns) => row(what, *ns, None, None),
            None => println!("| {what:<44} | {:>10} | {:>10} | {:>6} | {:>13} | {:>13} |", "n/a", "", "", "", ""),
        }
    }
    println!();
    println!(
        "recorded: {} spans, {} fields, {} string bytes; telemetry costs {} per invoke ({} per step): \
         registry {}, recording layer {}",
        totals.spans,
        totals.fields,
        totals.string_bytes,
        fmt_ns(recording.median - bare.median),
        fmt_ns((recording.median - bare.median) / 3.0),
        fmt_ns(registry.median - bare.median),
        fmt_ns(recording.median - registry.median),
    );
    let verdict = if recording.median <= 2_000.0 { "met" } else { "MISSED" };
    println!("target: <= 2 us per 3-step invoke with recording on: {verdict} ({})", fmt_ns(recording.median));
    if let Some(lcel) = peers[0].1 {
        println!("ratio: catena (bare) is {:.0}x less overhead than LCEL (target >= 1000x)", lcel / bare.median);
    }
}

/// Runs a Python peer; `None` (after saying why) when it cannot run.
fn run_peer(script: &str, flags: &[&str], iterations: u32) -> Option<f64> {
    let path = format!("{}/benches/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = match Command::new("python3").arg(&path).arg(iterations.to_string()).args(flags).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("{script}: cannot run python3: {e}");
            return None;
        }
    };
    if !out.status.success() {
        eprintln!(
            "{script} {flags:?} failed (pip install langchain-core langgraph): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("peer JSON");
    let n = i64::from(iterations);
    let expected: i64 = (0..n).map(|i| (i + 1) * 2 - 3).sum();
    assert_eq!(v["result"].as_i64(), Some(expected), "{script} computed a wrong result");
    Some(v["per_invoke_ns"].as_f64().expect("per_invoke_ns"))
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}
