//! Throughput of `LocalEmbedder` (all-MiniLM-L6-v2 on the CPU) against sentence-transformers (PyTorch CPU) on the
//! same 512 Rust-book paragraphs, on the same machine, in the same run.
//!
//! ```text
//! cargo bench -p catena-providers --features local-embed --bench embed
//! ```
//!
//! Settings (environment):
//! - `CATENA_EMBED_MODEL`: the model directory (default `${CATENA_CACHE_DIR:-$HOME/.cache/catena}/all-MiniLM-L6-v2`,
//!   installed by `.ci/fetch-minilm.sh`);
//! - `CATENA_SHARED_DIR`: the shared data directory (default `../shared` beside the repository);
//! - `CATENA_BENCH_RUNS`: timed runs per side, alternating between the sides (default 5; medians are reported);
//! - `CATENA_BENCH_PYTHON`: the Python interpreter that has `sentence_transformers` (default `python3`). When it
//!   cannot import it, the peer is reported as unavailable, with the reason, and only the Rust figure is printed.
//!
//! Both sides embed the 512 texts with batches of 32, normalised, truncated at 256 word pieces; the peer's vectors
//! are compared with ours as a sanity check.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use catena_core::Embedder;
use catena_providers::local_embed::{default_model_dir, LocalEmbedder, MODEL_ENV};

const PARAGRAPHS: usize = 512;
const BATCH_SIZE: usize = 32;

/// The peer: loads the same model directory with sentence-transformers, warms up, prints a JSON header line, then
/// for every `run` line on stdin times one `encode` of all texts and prints the seconds; at end of input it writes
/// its vectors to `out_path`. Prints `{"unavailable": ...}` and exits 3 when sentence-transformers cannot be imported.
const PEER_SCRIPT: &str = r#"
import json, sys, time
model_dir, texts_path, out_path, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
try:
    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer
except Exception as e:
    print(json.dumps({"unavailable": f"{type(e).__name__}: {e}"}), flush=True)
    sys.exit(3)
texts = json.load(open(texts_path))
model = SentenceTransformer(model_dir, device="cpu")
encode = lambda xs: model.encode(xs, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
encode(texts[:64])
print(json.dumps({
    "threads": torch.get_num_threads(),
    "versions": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
}), flush=True)
vectors = None
for line in sys.stdin:
    start, cpu = time.perf_counter(), time.process_time()
    vectors = encode(texts)
    print(json.dumps([time.perf_counter() - start, time.process_time() - cpu]), flush=True)
json.dump(vectors.tolist() if vectors is not None else [], open(out_path, "w"))
"#;

fn shared_dir() -> PathBuf {
    match std::env::var_os("CATENA_SHARED_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

/// Prose paragraphs of the Rust book, in file order: blank-line separated blocks outside code fences that are not
/// headings, include directives, HTML or tables, and have at least 200 characters.
fn paragraphs(dir: &Path, n: usize) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} (set CATENA_SHARED_DIR)", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md") && !p.ends_with("SUMMARY.md"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut in_fence = false;
        let mut current: Vec<&str> = Vec::new();
        let flush = |current: &mut Vec<&str>, out: &mut Vec<String>| {
            let p = current.join("\n");
            current.clear();
            let skip = ["#", "{{", "<", "|"].iter().any(|s| p.starts_with(s));
            if !skip && p.chars().count() >= 200 {
                out.push(p);
            }
        };
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
                current.clear();
                continue;
            }
            if in_fence {
                continue;
            }
            if line.trim().is_empty() {
                flush(&mut current, &mut out);
            } else {
                current.push(line.trim_end());
            }
        }
        flush(&mut current, &mut out);
        if out.len() >= n {
            break;
        }
    }
    assert!(out.len() >= n, "only {} paragraphs in {}", out.len(), dir.display());
    out.truncate(n);
    out
}

/// CPU seconds (user + system, all threads) this process has used, from `/proc/self/stat`; `None` off Linux.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of those, in ticks.
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A running sentence-transformers process, ready to time runs.
struct Peer {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    threads: u64,
    versions: String,
    scratch: PathBuf,
}

impl Peer {
    fn start(model_dir: &Path, texts: &[String]) -> Result<Peer, String> {
        let python = std::env::var("CATENA_BENCH_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let scratch = std::env::temp_dir().join(format!("catena-embed-bench-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
        let texts_path = scratch.join("texts.json");
        std::fs::write(&texts_path, serde_json::to_vec(texts).unwrap()).map_err(|e| e.to_string())?;
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(PEER_SCRIPT)
            .arg(model_dir)
            .arg(&texts_path)
            .arg(scratch.join("vectors.json"))
            .arg(BATCH_SIZE.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(scratch.join("stderr.txt")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("could not run {python}: {e}"))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let header = stdout.next().and_then(|l| l.ok()).unwrap_or_default();
        let header: serde_json::Value = serde_json::from_str(&header).map_err(|_| {
            let status = child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
            let stderr = std::fs::read_to_string(scratch.join("stderr.txt")).unwrap_or_default();
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            format!(
                "{python} exited without reporting ({status}): {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        })?;
        if let Some(reason) = header.get("unavailable").and_then(|v| v.as_str()) {
            let _ = child.wait();
            return Err(format!("{python} cannot import sentence_transformers: {reason}"));
        }
        Ok(Peer {
            child,
            stdin,
            stdout,
            threads: header["threads"].as_u64().unwrap_or(0),
            versions: header["versions"].as_str().unwrap_or("?").to_string(),
            scratch,
        })
    }

    /// Times one `encode` of all texts: wall-clock and CPU seconds.
    fn run(&mut self) -> Result<(f64, f64), String> {
        let stdin = self.stdin.as_mut().ok_or("peer input closed")?;
        writeln!(stdin, "run").map_err(|e| e.to_string())?;
        let line = self.stdout.next().ok_or("the peer exited")?.map_err(|e| e.to_string())?;
        serde_json::from_str(&line).map_err(|_| format!("unexpected peer output {line:?}"))
    }

    /// Ends the peer and returns the vectors of its last run.
    fn finish(mut self) -> Result<Vec<Vec<f32>>, String> {
        drop(self.stdin.take());
        self.child.wait().map_err(|e| e.to_string())?;
        let bytes = std::fs::read(self.scratch.join("vectors.json")).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&self.scratch);
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

fn main() {
    let model_dir = std::env::var_os(MODEL_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(default_model_dir)
        .expect("set CATENA_EMBED_MODEL");
    if !model_dir.join("model.safetensors").is_file() {
        eprintln!(
            "no model at {}: run `bash .ci/fetch-minilm.sh` or set {MODEL_ENV} to an all-MiniLM-L6-v2 directory",
            model_dir.display()
        );
        std::process::exit(1);
    }
    let runs: usize = std::env::var("CATENA_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let texts = paragraphs(&shared_dir().join("corpora/rust-book"), PARAGRAPHS);
    let chars: usize = texts.iter().map(|t| t.chars().count()).sum();

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let load_start = Instant::now();
    let embedder = LocalEmbedder::from_dir(&model_dir).unwrap().with_batch_size(BATCH_SIZE);
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    runtime.block_on(embedder.embed_documents(&texts[..64])).unwrap();
    let mut peer = Peer::start(&model_dir, &texts);

    // Rounds alternate between the two sides, so that load from other processes hits both alike.
    let (mut ours_s, mut theirs_s) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let (mut ours_cpu, mut theirs_cpu) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let mut ours = Vec::new();
    for _ in 0..runs {
        let (start, cpu) = (Instant::now(), cpu_seconds());
        ours = runtime.block_on(embedder.embed_documents(&texts)).unwrap();
        ours_s.push(start.elapsed().as_secs_f64());
        if let (Some(before), Some(after)) = (cpu, cpu_seconds()) {
            ours_cpu.push(after - before);
        }
        if let Ok(p) = peer.as_mut() {
            match p.run() {
                Ok((wall, cpu)) => {
                    theirs_s.push(wall);
                    theirs_cpu.push(cpu);
                }
                Err(e) => peer = Err(e),
            }
        }
    }
    let rust_s = median(ours_s.clone());
    let cpu_text = |cpu: &[f64]| {
        if cpu.is_empty() {
            String::new()
        } else {
            let c = median(cpu.to_vec());
            format!("; {c:.1} CPU-s = {:.1} sentences per CPU-second", PARAGRAPHS as f64 / c)
        }
    };
    let rust_rate = PARAGRAPHS as f64 / rust_s;
    let rounded = |xs: &[f64]| xs.iter().map(|t| (t * 1000.0).round() / 1000.0).collect::<Vec<_>>();

    println!(
        "embed: {PARAGRAPHS} Rust-book paragraphs (mean {} chars), batch {BATCH_SIZE}, median of {runs} alternating runs",
        chars / PARAGRAPHS
    );
    println!(
        "  catena LocalEmbedder (candle, {} threads): {rust_rate:7.1} sentences/s  ({rust_s:.3} s; runs {:?}{}; model load {load_ms:.0} ms)",
        candle_core::utils::get_num_threads(),
        rounded(&ours_s),
        cpu_text(&ours_cpu)
    );
    match peer {
        Ok(p) => {
            let peer_s = median(theirs_s.clone());
            let peer_rate = PARAGRAPHS as f64 / peer_s;
            println!(
                "  sentence-transformers ({}, {} threads): {peer_rate:7.1} sentences/s  ({peer_s:.3} s; runs {:?}{})",
                p.versions,
                p.threads,
                rounded(&theirs_s),
                cpu_text(&theirs_cpu)
            );
            // Each round runs both sides back to back, under about the same load: the per-round ratios are the
            // fairer comparison on a busy machine.
            let paired: Vec<f64> = ours_s.iter().zip(&theirs_s).map(|(o, t)| t / o).collect();
            println!(
                "  ratio catena / sentence-transformers: {:.2}x (median of per-round ratios {:.2}x, rounds {:?})",
                rust_rate / peer_rate,
                median(paired.clone()),
                paired.iter().map(|r| (r * 100.0).round() / 100.0).collect::<Vec<_>>()
            );
            match p.finish() {
                Ok(theirs) => {
                    let diff = ours
                        .iter()
                        .zip(&theirs)
                        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
                        .fold(0.0f32, f32::max);
                    println!("  vectors agree with the peer's: max abs diff {diff:e}");
                }
                Err(e) => println!("  could not read the peer's vectors: {e}"),
            }
        }
        Err(reason) => println!("  sentence-transformers peer unavailable: {reason}"),
    }
}
