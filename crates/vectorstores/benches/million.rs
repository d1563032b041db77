//! The embedded store at a million vectors: build time, file size, open time, query latency (p50/p99), recall@10
//! against the exact scan, and peak RSS, for `SqliteStore` with the exact `f32` scan and the int8 scan with exact
//! rescoring, and `InMemoryStore`; faiss (flat and HNSW) on the same vectors in the same run
//! (`million_peer.py`).
//!
//! ```text
//! pip install faiss-cpu numpy
//! cargo bench -p catena-vectorstores --features sqlite --bench million
//! ```
//!
//! Data: `CATENA_BENCH_N` (1,000,000) unit vectors of 384 dimensions from a seeded Gaussian (isotropic: the worst
//! case for graph indexes, neutral for scans), `CATENA_BENCH_QUERIES` (300) query vectors from the same
//! distribution, k = 10, cosine. The vectors are written once to `target/catena-bench/` and read by every phase
//! and by the faiss peer. Each phase runs in a child process of its own, so that its peak RSS (`VmHWM`) is its
//! own: the build streams the vectors into a store opened with the int8 scan in batches of 10,000 (the file is
//! the same whatever the precision) and is measured without the data generation; a query phase opens the built file, runs 5 warm-up queries, then times each query.
//! Queries run one at a time with every core available to each (`search_threads` = the machine's parallelism).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use catena_core::{Document, EmbeddedDocument, Metadata, SearchRequest, VectorStore};
use catena_vectorstores::{Durability, InMemoryStore, Metric, ScanPrecision, SqliteOptions, SqliteStore};

const DIM: usize = 384;
const K: usize = 10;
const BATCH: usize = 10_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn work_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("catena-bench")
}

/// Seeded unit vectors, written as little-endian `f32` rows.
fn write_vectors(path: &Path, n: usize, seed: u64) {
    if path.exists() && std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == (n * DIM * 4) as u64 {
        return;
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create the vector file"));
    let mut row = vec![0f32; DIM];
    for _ in 0..n {
        for x in row.iter_mut() {
            let (u, v) = (rng.f32().max(f32::MIN_POSITIVE), rng.f32());
            *x = (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos();
        }
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        for x in &row {
            std::io::Write::write_all(&mut out, &(x / norm).to_le_bytes()).expect("write vectors");
        }
    }
    std::io::Write::flush(&mut out).expect("write vectors");
}

/// Rows `start..start + count` of a vector file.
fn read_rows(path: &Path, start: usize, count: usize) -> Vec<Vec<f32>> {
    let mut f = std::fs::File::open(path).expect("open the vector file");
    f.seek(SeekFrom::Start((start * DIM * 4) as u64)).expect("seek");
    let mut bytes = vec![0u8; count * DIM * 4];
    f.read_exact(&mut bytes).expect("read vectors");
    bytes
        .chunks_exact(DIM * 4)
        .map(|row| row.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        .collect()
}

fn docs(path: &Path, start: usize, count: usize) -> Vec<EmbeddedDocument> {
    read_rows(path, start, count)
        .into_iter()
        .enumerate()
        .map(|(j, vector)| EmbeddedDocument {
            document: Document::with_id(format!("{}", start + j), format!("document {}", start + j), Metadata::new()),
            vector,
        })
        .collect()
}

/// Peak resident memory of this process so far, in MiB (`VmHWM`; Linux only).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn percentile(values: &[f64], q: f64) -> f64 {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    s[((q * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)]
}

fn precision_of(name: &str) -> ScanPrecision {
    match name.strip_prefix("int8x") {
        Some(n) => ScanPrecision::Int8 { oversample: n.parse().expect("int8x<oversample>") },
        None => ScanPrecision::F32,
    }
}

/// One phase, in this (child) process; prints one line of `key=value` results.
async fn phase(args: &[String]) {
    let dir = work_dir();
    let n = env_usize("CATENA_BENCH_N", 1_000_000);
    let queries = env_usize("CATENA_BENCH_QUERIES", 300);
    let base = dir.join(format!("million-base-{n}x{DIM}.f32"));
    let query_file = dir.join(format!("million-queries-{queries}x{DIM}.f32"));
    let db = dir.join(format!("million-{n}.sqlite"));
    match args[0].as_str() {
        "build" => {
            for f in [db.clone(), db.with_extension("sqlite-wal"), db.with_extension("sqlite-shm")] {
                let _ = std::fs::remove_file(f);
            }
            let start = Instant::now();
            // Built with the int8 scan, the lean setting: the file is the same for both precisions.
            let options = SqliteOptions::new(Durability::ProcessCrash).with_precision(precision_of("int8x10"));
            let store = SqliteStore::open_with(&db, DIM, Metric::Cosine, options).await.expect("open");
            for at in (0..n).step_by(BATCH) {
                store.upsert(docs(&base, at, BATCH.min(n - at))).await.expect("upsert");
            }
            store.flush().await.expect("flush");
            let secs = start.elapsed().as_secs_f64();
            drop(store);
            let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64;
            println!(
                "build_s={secs:.1} docs_per_s={:.0} file_mib={size:.0} peak_rss_mib={:.0}",
                n as f64 / secs,
                peak_rss_mib().unwrap_or(f64::NAN)
            );
        }
        "query" => {
            let name = args[1].as_str();
            let qs = read_rows(&query_file, 0, queries);
            let start = Instant::now();
            let store: Box<dyn VectorStore> = if name == "memory" {
                let store = InMemoryStore::new(DIM, Metric::Cosine).expect("store");
                for at in (0..n).step_by(BATCH) {
                    store.upsert(docs(&base, at, BATCH.min(n - at))).await.expect("upsert");
                }
                Box::new(store)
            } else {
                let options = SqliteOptions::new(Durability::ProcessCrash).with_precision(precision_of(name));
                Box::new(SqliteStore::open_with(&db, DIM, Metric::Cosine, options).await.expect("open"))
            };
            let open_s = start.elapsed().as_secs_f64();
            for q in qs.iter().take(5) {
                store.search(SearchRequest::new(q.clone(), K)).await.expect("search");
            }
            let mut times = Vec::with_capacity(queries);
            let mut ids = Vec::with_capacity(queries);
            for q in &qs {
                let t = Instant::now();
                let hits = store.search(SearchRequest::new(q.clone(), K)).await.expect("search");
                times.push(t.elapsed().as_secs_f64() * 1e3);
                ids.push(hits.iter().map(|h| h.document.id.clone()).collect::<Vec<_>>().join(","));
            }
            std::fs::write(dir.join(format!("million-ids-{name}.txt")), ids.join("\n")).expect("write ids");
            println!(
                "open_s={open_s:.1} p50_ms={:.2} p99_ms={:.2} peak_rss_mib={:.0}",
                percentile(&times, 0.5),
                percentile(&times, 0.99),
                peak_rss_mib().unwrap_or(f64::NAN)
            );
        }
        other => panic!("unknown phase {other}"),
    }
}

/// Runs a phase in a child process and returns its result line.
fn child(args: &[&str]) -> String {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe).arg("--phase").args(args).output().expect("run a phase");
    assert!(out.status.success(), "phase {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string()
}

/// Recall@10 of the ids in `got` against `want` (one line per query).
fn recall(dir: &Path, got: &str, want: &str) -> f64 {
    let read = |name: &str| std::fs::read_to_string(dir.join(format!("million-ids-{name}.txt"))).expect("ids");
    let (got, want) = (read(got), read(want));
    let (mut hit, mut total) = (0usize, 0usize);
    for (g, w) in got.lines().zip(want.lines()) {
        let w: Vec<&str> = w.split(',').collect();
        total += w.len();
        hit += g.split(',').filter(|id| w.contains(id)).count();
    }
    hit as f64 / total.max(1) as f64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--phase") {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(phase(&args[1..]));
        return;
    }
    // `cargo bench` passes `--bench`; nothing else is taken.
    let dir = work_dir();
    std::fs::create_dir_all(&dir).expect("create the bench folder");
    let n = env_usize("CATENA_BENCH_N", 1_000_000);
    let queries = env_usize("CATENA_BENCH_QUERIES", 300);
    let base = dir.join(format!("million-base-{n}x{DIM}.f32"));
    let query_file = dir.join(format!("million-queries-{queries}x{DIM}.f32"));
    write_vectors(&base, n, 1);
    write_vectors(&query_file, queries, 2);
    println!("{n} x {DIM} unit vectors (seeded Gaussian), {queries} queries, k = {K}, cosine");
    println!("SqliteStore build: {}", child(&["build"]));
    for name in ["f32", "int8x10", "int8x4", "memory"] {
        let line = child(&["query", name]);
        let r = recall(&dir, name, "f32");
        println!("{name:>8}: {line} recall@10={r:.3}");
    }
    let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/million_peer.py");
    let status = Command::new("python3")
        .arg(&peer)
        .arg(&base)
        .arg(&query_file)
        .arg(n.to_string())
        .arg(dir.join("million-ids-f32.txt"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => println!("faiss peer did not run ({other:?}); pip install faiss-cpu numpy"),
    }
}
