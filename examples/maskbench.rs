//! MaskBench conformance and speed of catena's JSON Schema constraints (llguidance, o200k vocabulary).
//!
//! For each schema file of MaskBench (guidance-ai/jsonschemabench `maskbench/data`): compile the schema, then feed
//! every test instance — serialised compactly with `serde_json::to_string`, keys in file order, tokenized with
//! o200k — token by token. Before each token the allowed-token mask is computed (and timed) and must contain the
//! token. A valid instance must pass every mask and end in an accepting state; an invalid instance must hit a
//! token outside a mask or end in a non-accepting state.
//!
//! ```text
//! cargo run --release --example maskbench --features constrain -- ../shared/maskbench/data
//! cargo run --release --example maskbench --features constrain -- --every 40 --threads 2 ../shared/maskbench
//! ```
//!
//! Options: `--every N` checks every N-th file of the sorted list (default 1, all); `--threads N` spreads files
//! over N threads (default 1: timings are single-threaded like the published table); `--verbose` prints every
//! failure. The last line is
//! `maskbench: schemas=N passing=N compile_errors=N wrongly_rejected=N wrongly_accepted=N`.
//!
//! This file is also compiled into `crates/core/tests/maskbench.rs`, which runs a small subset as a test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use catena::constraint::{ConstraintCompiler, ConstraintMatcher};
use catena::Constraint;
use serde_json::Value;

/// One test instance of a schema file.
#[derive(Debug, serde::Deserialize)]
pub struct Instance {
    /// Whether the data is valid against the schema.
    pub valid: bool,
    /// The JSON value.
    pub data: Value,
}

/// One MaskBench file.
#[derive(Debug, serde::Deserialize)]
pub struct SchemaFile {
    /// The JSON Schema.
    pub schema: Value,
    /// Labelled instances (may be empty).
    #[serde(default)]
    pub tests: Vec<Instance>,
}

/// What happened to one schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Compiled, every valid instance accepted, every invalid one rejected.
    Pass,
    /// The schema was rejected by the compiler.
    CompileError(String),
    /// At least one instance was judged wrongly.
    Fail {
        /// The first valid instance that was rejected, with the reason.
        wrongly_rejected: Option<String>,
        /// The first invalid instance that was accepted.
        wrongly_accepted: Option<String>,
    },
}

/// The result for one file.
#[derive(Debug, Clone)]
pub struct FileResult {
    /// The file's name.
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
    /// Time to compile the schema into a matcher.
    pub compile_time: Duration,
    /// Time of every mask computation, in nanoseconds.
    pub mask_ns: Vec<u64>,
    /// Instances checked (valid, invalid).
    pub instances: (usize, usize),
    /// Tokens fed.
    pub tokens: usize,
}

enum Verdict {
    Accepted,
    Rejected(String),
}

/// Feeds `text` to a fresh deep clone of `matcher` (no lexer caches shared with earlier instances, as in the
/// published harness), one mask per token.
fn run_instance(
    compiler: &ConstraintCompiler,
    matcher: &ConstraintMatcher,
    text: &str,
    mask_ns: &mut Vec<u64>,
    tokens_fed: &mut usize,
) -> Verdict {
    let mut m = matcher.deep_clone();
    let tokens = compiler.tokenize(text);
    for (i, &t) in tokens.iter().enumerate() {
        let t0 = Instant::now();
        let mask = match m.compute_mask() {
            Ok(mask) => mask,
            Err(e) => return Verdict::Rejected(format!("token {i}: no mask: {e}")),
        };
        mask_ns.push(t0.elapsed().as_nanos() as u64);
        *tokens_fed += 1;
        if !mask.is_allowed(t) {
            let before = String::from_utf8_lossy(&compiler.decode(&tokens[..i])).into_owned();
            let tok = String::from_utf8_lossy(&compiler.decode(&[t])).into_owned();
            let tail: String = before.chars().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
            return Verdict::Rejected(format!("token {i} {tok:?} not allowed after …{tail:?}"));
        }
        if let Err(e) = m.consume_tokens(&[t]) {
            return Verdict::Rejected(format!("token {i}: {e}"));
        }
    }
    match m.is_accepting() {
        Ok(true) => Verdict::Accepted,
        Ok(false) => Verdict::Rejected("not accepting at the end".into()),
        Err(e) => Verdict::Rejected(format!("at the end: {e}")),
    }
}

/// Checks one parsed schema file.
pub fn check_schema(compiler: &ConstraintCompiler, name: &str, file: &SchemaFile) -> FileResult {
    let mut result = FileResult {
        name: name.to_string(),
        outcome: Outcome::Pass,
        compile_time: Duration::ZERO,
        mask_ns: Vec::new(),
        instances: (0, 0),
        tokens: 0,
    };
    let t0 = Instant::now();
    let compiled = compiler.compile(&Constraint::JsonSchema(file.schema.clone()));
    result.compile_time = t0.elapsed();
    let matcher = match compiled {
        Ok(m) => m,
        Err(e) => {
            result.outcome = Outcome::CompileError(e.to_string());
            return result;
        }
    };
    let mut wrongly_rejected = None;
    let mut wrongly_accepted = None;
    for (idx, instance) in file.tests.iter().enumerate() {
        let text = match serde_json::to_string(&instance.data) {
            Ok(t) => t,
            Err(e) => {
                result.outcome = Outcome::CompileError(format!("instance #{idx} cannot be serialised: {e}"));
                return result;
            }
        };
        let verdict = run_instance(compiler, &matcher, &text, &mut result.mask_ns, &mut result.tokens);
        if instance.valid {
            result.instances.0 += 1;
            if let Verdict::Rejected(reason) = verdict {
                wrongly_rejected.get_or_insert_with(|| format!("valid instance #{idx} rejected: {reason}"));
            }
        } else {
            result.instances.1 += 1;
            if let Verdict::Accepted = verdict {
                wrongly_accepted.get_or_insert_with(|| format!("invalid instance #{idx} accepted: {text}"));
            }
        }
    }
    if wrongly_rejected.is_some() || wrongly_accepted.is_some() {
        result.outcome = Outcome::Fail { wrongly_rejected, wrongly_accepted };
    }
    result
}

/// Reads and checks one file; an unreadable file counts as a compile error naming the problem.
pub fn check_file(compiler: &ConstraintCompiler, path: &Path) -> FileResult {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str::<SchemaFile>(&s).map_err(|e| e.to_string()));
    match parsed {
        Ok(file) => check_schema(compiler, &name, &file),
        Err(e) => FileResult {
            name,
            outcome: Outcome::CompileError(format!("cannot read {}: {e}", path.display())),
            compile_time: Duration::ZERO,
            mask_ns: Vec::new(),
            instances: (0, 0),
            tokens: 0,
        },
    }
}

/// The `.json` files of `dir` (or of `dir/data` when that exists), sorted by name, every `every`-th one.
pub fn list_files(dir: &Path, every: usize) -> std::io::Result<Vec<PathBuf>> {
    let data = dir.join("data");
    let dir = if data.is_dir() { data } else { dir.to_path_buf() };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files.into_iter().step_by(every.max(1)).collect())
}

/// Checks `files` on `threads` threads, returning results in file order.
pub fn check_files(compiler: &ConstraintCompiler, files: &[PathBuf], threads: usize) -> Vec<FileResult> {
    let threads = threads.max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<FileResult>> = vec![None; files.len()];
    let collected = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= files.len() {
                    break;
                }
                let r = check_file(compiler, &files[i]);
                collected.lock().unwrap_or_else(|p| p.into_inner()).push((i, r));
            });
        }
    });
    for (i, r) in collected.into_inner().unwrap_or_else(|p| p.into_inner()) {
        results[i] = Some(r);
    }
    results.into_iter().flatten().collect()
}

/// Totals over all files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Schema files checked.
    pub schemas: usize,
    /// Schemas that compiled and judged every instance right.
    pub passing: usize,
    /// Schemas the compiler rejected.
    pub compile_errors: usize,
    /// Schemas with a valid instance rejected.
    pub wrongly_rejected: usize,
    /// Schemas with an invalid instance accepted.
    pub wrongly_accepted: usize,
}

impl Summary {
    /// Adds up `results`.
    pub fn of(results: &[FileResult]) -> Self {
        let mut s = Summary { schemas: results.len(), ..Summary::default() };
        for r in results {
            match &r.outcome {
                Outcome::Pass => s.passing += 1,
                Outcome::CompileError(_) => s.compile_errors += 1,
                Outcome::Fail { wrongly_rejected, wrongly_accepted } => {
                    s.wrongly_rejected += usize::from(wrongly_rejected.is_some());
                    s.wrongly_accepted += usize::from(wrongly_accepted.is_some());
                }
            }
        }
        s
    }

    /// The closing line: `maskbench: schemas=N passing=N compile_errors=N wrongly_rejected=N wrongly_accepted=N`.
    pub fn line(&self) -> String {
        format!(
            "maskbench: schemas={} passing={} compile_errors={} wrongly_rejected={} wrongly_accepted={}",
            self.schemas, self.passing, self.compile_errors, self.wrongly_rejected, self.wrongly_accepted
        )
    }
}

/// The `q` quantile (0..=1) of `values` (sorted in place), nearest-rank.
pub fn quantile(values: &mut [u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn main() {
    let mut every = 1usize;
    let mut threads = 1usize;
    let mut verbose = false;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--every" | "--threads" => {
                let Some(n) = args.next().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0) else {
                    eprintln!("{a} needs a positive number");
                    std::process::exit(2);
                };
                if a == "--every" {
                    every = n;
                } else {
                    threads = n;
                }
            }
            "--verbose" => verbose = true,
            "-h" | "--help" => {
                println!("usage: maskbench [--every N] [--threads N] [--verbose] <MASKBENCH_DIR>");
                return;
            }
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    let dir = dir.unwrap_or_else(|| {
        std::env::var_os("CATENA_SHARED_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
            .join("maskbench")
    });
    let files = match list_files(&dir, every) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("no .json files in {}; pass the MaskBench data directory", dir.display());
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("cannot read {}: {e}; pass the MaskBench data directory", dir.display());
            std::process::exit(2);
        }
    };
    let t0 = Instant::now();
    let compiler = match ConstraintCompiler::o200k() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot build the o200k compiler: {e}");
            std::process::exit(1);
        }
    };
    eprintln!(
        "maskbench: o200k compiler built in {:.2}s; checking {} files on {threads} thread(s)",
        t0.elapsed().as_secs_f64(),
        files.len()
    );
    let t1 = Instant::now();
    let results = check_files(&compiler, &files, threads);
    let elapsed = t1.elapsed();

    let mut shown = 0;
    for r in &results {
        if let Outcome::Fail { wrongly_rejected, wrongly_accepted } = &r.outcome {
            for msg in [wrongly_accepted, wrongly_rejected].into_iter().flatten() {
                if verbose || shown < 40 {
                    let short: String = msg.chars().take(300).collect();
                    eprintln!("{}: {short}", r.name);
                    shown += 1;
                }
            }
        }
        if verbose {
            if let Outcome::CompileError(e) = &r.outcome {
                let short: String = e.chars().take(200).collect();
                eprintln!("{}: compile error: {short}", r.name);
            }
        }
    }

    let mut masks: Vec<u64> = results.iter().flat_map(|r| r.mask_ns.iter().copied()).collect();
    let mut compiles: Vec<u64> = results
        .iter()
        .filter(|r| !matches!(&r.outcome, Outcome::CompileError(e) if e.starts_with("cannot read")))
        .map(|r| r.compile_time.as_nanos() as u64)
        .collect();
    let valid: usize = results.iter().map(|r| r.instances.0).sum();
    let invalid: usize = results.iter().map(|r| r.instances.1).sum();
    println!(
        "maskbench: instances valid={valid} invalid={invalid} masks={} in {:.1}s on {threads} thread(s)",
        masks.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "maskbench: mask time per token p50={:.0}us p99={:.0}us; compile time p50={:.2}ms p99={:.1}ms",
        quantile(&mut masks, 0.50) as f64 / 1e3,
        quantile(&mut masks, 0.99) as f64 / 1e3,
        quantile(&mut compiles, 0.50) as f64 / 1e6,
        quantile(&mut compiles, 0.99) as f64 / 1e6,
    );
    println!("{}", Summary::of(&results).line());
}
