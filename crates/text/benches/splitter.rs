//! Benchmark: RecursiveCharacterTextSplitter on the whole rust-book corpus, against Python langchain in the same
//! run.
//!
//! `cargo bench -p catena-text --bench splitter`
//!
//! Splits every file of `../shared/corpora/rust-book` with chunk size 1000 and overlap 200 (default separators),
//! `CATENA_BENCH_REPS` times (default 100) after a warm-up pass, then runs `tests/py/bench_langchain.py` (same
//! files, parameters and repetitions), checks that both produced the same chunks and start offsets, and prints
//! the time per pass on each side and the speedup. The Python figure is `split_text` alone (no start offsets),
//! so the comparison favours Python; `create_documents(add_start_index=True)`, which produces what catena's
//! `split_text` produces, is printed too.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use catena_text::splitter::{Chunk, RecursiveCharacterTextSplitter, TextSplitter};
use serde_json::Value;

const CHUNK_SIZE: usize = 1000;
const CHUNK_OVERLAP: usize = 200;

fn corpus_dir() -> PathBuf {
    let shared = match std::env::var_os("CATENA_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    shared.join("corpora/rust-book")
}

/// Median and minimum of per-pass times, in milliseconds (the median resists other load on the machine).
fn summary(ms: &[f64]) -> (f64, f64) {
    let mut sorted = ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    (sorted[sorted.len() / 2], sorted[0])
}

fn main() -> ExitCode {
    let reps: usize =
        std::env::var("CATENA_BENCH_REPS").ok().and_then(|s| s.parse().ok()).filter(|&n| n > 0).unwrap_or(100);
    let dir = corpus_dir();
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect(),
        Err(e) => {
            eprintln!("cannot read {} ({e}); set CATENA_SHARED_DIR", dir.display());
            return ExitCode::FAILURE;
        }
    };
    paths.sort();
    let texts: Vec<String> = paths.iter().map(|p| std::fs::read_to_string(p).expect("UTF-8 corpus file")).collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    let splitter = RecursiveCharacterTextSplitter::new(CHUNK_SIZE, CHUNK_OVERLAP).expect("valid sizes");

    // Rust.
    let split_all = || -> Vec<Vec<Chunk>> { texts.iter().map(|t| splitter.split_text(t)).collect() };
    let ours = split_all();
    let mut rust_ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        for text in &texts {
            black_box(splitter.split_text(black_box(text)));
        }
        rust_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    // Python, same files, parameters and repetitions.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/bench_langchain.py");
    let python = std::env::var("CATENA_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = match Command::new(&python)
        .arg(&script)
        .arg(&dir)
        .arg(CHUNK_SIZE.to_string())
        .arg(CHUNK_OVERLAP.to_string())
        .arg(reps.to_string())
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            eprintln!("cannot run {python} ({e}); install Python 3 and pip install langchain-text-splitters");
            return ExitCode::FAILURE;
        }
    };
    if !output.status.success() {
        eprintln!(
            "the Python peer failed: {}\npip install langchain-text-splitters (or run crates/text/tests/py/setup.sh)",
            String::from_utf8_lossy(&output.stderr)
        );
        return ExitCode::FAILURE;
    }
    let peer: Value = serde_json::from_slice(&output.stdout).expect("the Python peer printed invalid JSON");

    // Same output?
    let theirs = peer["chunks"].as_array().expect("chunks");
    assert_eq!(theirs.len(), texts.len(), "file count differs");
    let (mut chunks, mut same_start) = (0, 0);
    for ((path, ours), theirs) in paths.iter().zip(&ours).zip(theirs) {
        let theirs = theirs.as_array().expect("chunk list");
        let ours_text: Vec<&str> = ours.iter().map(|c| c.content.as_str()).collect();
        let theirs_text: Vec<&str> = theirs.iter().map(|c| c[0].as_str().expect("text")).collect();
        if ours_text != theirs_text {
            eprintln!("{}: chunks differ from langchain", path.display());
            return ExitCode::FAILURE;
        }
        chunks += ours.len();
        same_start += ours.iter().zip(theirs).filter(|(c, t)| t[1].as_u64() == Some(c.start as u64)).count();
    }

    let num = |key: &str| -> Vec<f64> { peer[key].as_array().expect(key).iter().filter_map(Value::as_f64).collect() };
    let (rust_median, rust_min) = summary(&rust_ms);
    let (py_median, py_min) = summary(&num("split_text_ms"));
    let (docs_median, docs_min) = summary(&num("create_documents_ms"));
    println!(
        "splitter benchmark: rust-book, {} files, {:.2} MB, chunk_size {CHUNK_SIZE}, overlap {CHUNK_OVERLAP}, {reps} passes",
        texts.len(),
        bytes as f64 / 1e6
    );
    println!(
        "output: {chunks} chunks, texts identical to langchain-text-splitters {}; start offsets equal to langchain's \
         start_index for {same_start}/{chunks}",
        peer["version"]
    );
    println!("rust   split_text                          median {rust_median:8.3} ms/pass  min {rust_min:8.3} ms");
    println!("python split_text                          median {py_median:8.3} ms/pass  min {py_min:8.3} ms");
    println!("python create_documents(add_start_index)   median {docs_median:8.3} ms/pass  min {docs_min:8.3} ms");
    println!(
        "speedup vs python split_text: {:.1}x (median), {:.1}x (min); vs create_documents: {:.1}x (median)",
        py_median / rust_median,
        py_min / rust_min,
        docs_median / rust_median
    );
    ExitCode::SUCCESS
}
