//! MaskBench conformance on a deterministic subset: every 100th schema file of the sorted MaskBench data
//! (../shared/maskbench, or `$CATENA_SHARED_DIR/maskbench`), checked with the same code as
//! `examples/maskbench.rs` against the real llguidance engine and o200k vocabulary.
//!
//! The full run (all 11,305 files, timed) is the example: `cargo run --release --example maskbench --features
//! constrain -- ../shared/maskbench`.
#![cfg(feature = "constrain")]

#[path = "../examples/maskbench.rs"]
mod maskbench;

use std::path::PathBuf;

use catena::constraint::ConstraintCompiler;
use maskbench::{check_files, list_files, Outcome, Summary};

fn maskbench_dir() -> PathBuf {
    std::env::var_os("CATENA_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join("maskbench")
}

/// Published llguidance figures on all 11,306 schemas: 8,909 passing (78.8 %), 2,377 compile errors (21.0 %),
/// 20 wrongly rejected, 0 wrongly accepted. The subset must accept no invalid instance and land near those rates.
#[test]
fn maskbench_subset_matches_published_llguidance_conformance() {
    let dir = maskbench_dir();
    let files = list_files(&dir, 100).unwrap_or_else(|e| panic!("MaskBench data at {}: {e}", dir.display()));
    assert!(files.len() >= 100, "expected ~113 files in {}, found {}", dir.display(), files.len());
    let compiler = ConstraintCompiler::o200k().expect("o200k compiler");
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let results = check_files(&compiler, &files, threads);
    let summary = Summary::of(&results);
    for r in &results {
        if let Outcome::Fail { wrongly_rejected, wrongly_accepted } = &r.outcome {
            eprintln!("{}: {:?} {:?}", r.name, wrongly_rejected, wrongly_accepted);
        }
    }
    eprintln!("{}", summary.line());
    let instances: usize = results.iter().map(|r| r.instances.0 + r.instances.1).sum();
    assert!(instances > 150, "the subset must exercise instances, got {instances}");

    assert_eq!(summary.wrongly_accepted, 0, "an invalid instance got through the constraint: {summary:?}");
    let rate = |n: usize| n as f64 / summary.schemas as f64;
    assert!(
        rate(summary.passing) >= 0.65,
        "pass rate {:.3} far below llguidance's 0.788: {summary:?}",
        rate(summary.passing)
    );
    assert!(
        rate(summary.compile_errors) <= 0.32,
        "compile-error rate {:.3} far above 0.21: {summary:?}",
        rate(summary.compile_errors)
    );
    assert!(summary.wrongly_rejected <= 2, "too many valid instances rejected: {summary:?}");
}
