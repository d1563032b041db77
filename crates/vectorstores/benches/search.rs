//! Exact top-k search throughput of `InMemoryStore` against faiss-cpu `IndexFlatIP`, measured in the same run.
//!
//! `cargo bench -p catena-vectorstores --bench search`
//!
//! 100,000 seeded random unit vectors of 384 dimensions, k = 10, one thread, one query per call on both sides
//! (faiss through its Python API with `omp_set_num_threads(1)`; the per-call Python overhead is a few
//! microseconds against milliseconds of scanning). Rounds alternate between the two so both see the same machine
//! load; the headline ratio is the median of the per-round ratios (each round pairs the two sides under the same
//! load), and the median throughputs are printed too. The top-10 ids of every query are compared with faiss's.
//!
//! Needs `python3` with `faiss-cpu` and `numpy` (`pip install faiss-cpu numpy`). Knobs (environment):
//! `CATENA_BENCH_N` (100000), `CATENA_BENCH_DIM` (384), `CATENA_BENCH_QUERIES` (200), `CATENA_BENCH_ROUNDS` (9),
//! `CATENA_BENCH_K` (10), `PYTHON` (python3).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use catena_core::{Document, EmbeddedDocument, Metadata, SearchRequest, VectorStore};
use catena_vectorstores::{InMemoryStore, Metric};

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Seeded standard-normal vectors (Box-Muller), normalised to unit length: uniformly random directions.
fn unit_vectors(rng: &mut fastrand::Rng, n: usize, dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let start = out.len();
        while out.len() < start + dim {
            let u1 = 1.0 - rng.f64();
            let u2 = rng.f64();
            let r = (-2.0 * u1.ln()).sqrt();
            let t = 2.0 * std::f64::consts::PI * u2;
            out.push((r * t.cos()) as f32);
            if out.len() < start + dim {
                out.push((r * t.sin()) as f32);
            }
        }
        let row = &mut out[start..];
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    out
}

fn write_f32(path: &Path, data: &[f32]) {
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("write bench data");
}

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn ask(&mut self, cmd: &str) -> serde_json::Value {
        writeln!(self.stdin, "{cmd}").expect("write to faiss peer");
        self.stdin.flush().expect("flush faiss peer");
        self.read()
    }
    fn read(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read faiss peer");
        if line.is_empty() {
            eprintln!("faiss peer exited early; is faiss-cpu installed? run `pip install faiss-cpu numpy`");
            std::process::exit(2);
        }
        let v: serde_json::Value = serde_json::from_str(&line).expect("faiss peer speaks JSON lines");
        if let Some(e) = v.get("error") {
            eprintln!("faiss peer: {e}");
            std::process::exit(2);
        }
        v
    }
}

/// CPU time consumed so far by the calling thread, from `/proc/thread-self/stat` (Linux; `None` elsewhere).
/// The machine this runs on may be shared, so besides wall-clock throughput the bench reports throughput per
/// CPU-second, which does not count time the scheduler gave to other processes.
fn thread_cpu_seconds(ticks_per_second: Option<f64>) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second?)
}

/// The kernel's clock tick rate for `/proc` times (`getconf CLK_TCK`).
fn clock_ticks() -> Option<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn main() {
    let n = env_usize("CATENA_BENCH_N", 100_000);
    let dim = env_usize("CATENA_BENCH_DIM", 384);
    let nq = env_usize("CATENA_BENCH_QUERIES", 200);
    let rounds = env_usize("CATENA_BENCH_ROUNDS", 9).max(1);
    let k = env_usize("CATENA_BENCH_K", 10);
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());

    let mut rng = fastrand::Rng::with_seed(0x5eed_cafe);
    let base = unit_vectors(&mut rng, n, dim);
    let queries = unit_vectors(&mut rng, nq, dim);

    let dir = tempfile::tempdir().expect("temp dir");
    let base_path = dir.path().join("base.f32");
    let query_path = dir.path().join("queries.f32");
    write_f32(&base_path, &base);
    write_f32(&query_path, &queries);

    let store = InMemoryStore::new(dim, Metric::Dot).expect("store");
    for (chunk_index, chunk) in base.chunks(10_000 * dim).enumerate() {
        let docs = chunk
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| EmbeddedDocument {
                document: Document::with_id((chunk_index * 10_000 + i).to_string(), "", Metadata::new()),
                vector: v.to_vec(),
            })
            .collect();
        futures::executor::block_on(store.upsert(docs)).expect("upsert");
    }
    drop(base);

    let peer_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/faiss_peer.py");
    let mut child = Command::new(&python)
        .arg(&peer_script)
        .arg("--base")
        .arg(&base_path)
        .arg("--queries")
        .arg(&query_path)
        .arg("--dim")
        .arg(dim.to_string())
        .arg("--k")
        .arg(k.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!("cannot run {python} {}: {e}", peer_script.display());
            std::process::exit(2)
        });
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut peer = Peer { child, stdin, stdout };
    let info = peer.read();

    println!("vectorstores search bench: n={n} dim={dim} k={k} queries={nq} rounds={rounds}, single thread");
    println!("  catena: {store:?}");
    // The store asks Linux for transparent huge pages for its vector block (see src/block.rs); show what it got.
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let anon_huge = std::fs::read_to_string("/proc/self/smaps_rollup")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".into());
    println!("          transparent_hugepage: {}; this process's AnonHugePages: {anon_huge}", thp.trim());
    println!("  faiss:  {info}");

    // Warm-up: touch every row once.
    futures::executor::block_on(store.search(SearchRequest::new(queries[..dim].to_vec(), k))).expect("search");

    let ticks = clock_ticks();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut ours_cpu = Vec::new();
    let mut theirs_cpu = Vec::new();
    let mut our_ids: Vec<Vec<i64>> = Vec::new();
    for round in 0..rounds {
        let c0 = thread_cpu_seconds(ticks);
        let t0 = Instant::now();
        let mut results = Vec::with_capacity(nq);
        for q in queries.chunks_exact(dim) {
            let hits = futures::executor::block_on(store.search(SearchRequest::new(q.to_vec(), k))).expect("search");
            results.push(hits);
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu = thread_cpu_seconds(ticks).zip(c0).map(|(c1, c0)| c1 - c0);
        ours.push(nq as f64 / secs);
        our_ids = results
            .iter()
            .map(|hits| hits.iter().map(|h| h.document.id.parse::<i64>().expect("numeric id")).collect())
            .collect();
        let faiss = peer.ask("round");
        let faiss_qps = faiss["qps"].as_f64().expect("qps");
        theirs.push(faiss_qps);
        if let (Some(c), Some(fc)) = (cpu, faiss["cpu_seconds"].as_f64()) {
            if c > 0.0 && fc > 0.0 {
                ours_cpu.push(nq as f64 / c);
                theirs_cpu.push(nq as f64 / fc);
            }
        }
        println!(
            "  round {round}: catena {:8.1} qps   faiss {:8.1} qps   ratio {:.2}",
            ours[round],
            faiss_qps,
            ours[round] / faiss_qps
        );
    }
    let batch = peer.ask("batch");

    let ids_path = dir.path().join("faiss_ids.i64");
    peer.ask(&format!("ids {}", ids_path.display()));
    let raw = std::fs::read(&ids_path).expect("faiss ids");
    let faiss_ids: Vec<i64> = raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
    let (mut same_order, mut overlap) = (0usize, 0usize);
    for (qi, ours) in our_ids.iter().enumerate() {
        let theirs = &faiss_ids[qi * k..(qi + 1) * k];
        if ours.as_slice() == theirs {
            same_order += 1;
        }
        overlap += ours.iter().filter(|id| theirs.contains(id)).count();
    }
    writeln!(peer.stdin, "quit").expect("write to faiss peer");
    drop(peer.stdin);
    let _ = peer.child.wait();

    let (ours_med, theirs_med) = (median(ours.clone()), median(theirs.clone()));
    let best = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    println!();
    println!("  catena InMemoryStore::search   median {ours_med:8.1} qps  (best {:.1})", best(&ours));
    println!("  faiss IndexFlatIP, 1 query     median {theirs_med:8.1} qps  (best {:.1})", best(&theirs));
    println!(
        "  faiss IndexFlatIP, batch of {nq}  {:8.1} qps  (for reference; not comparable)",
        batch["qps"].as_f64().unwrap_or(0.0)
    );
    let paired = median(ours.iter().zip(&theirs).map(|(a, b)| a / b).collect());
    println!(
        "  ratio catena / faiss, one query per call: {paired:.2}x (median of per-round ratios; ratio of medians {:.2}x)",
        ours_med / theirs_med
    );
    if ours_cpu.len() == rounds {
        let paired = median(ours_cpu.iter().zip(&theirs_cpu).map(|(a, b)| a / b).collect());
        println!(
            "  per CPU-second: catena median {:.1} qps, faiss median {:.1} qps, ratio {paired:.2}x (median of \
             per-round ratios; excludes time the scheduler gave to other processes)",
            median(ours_cpu.clone()),
            median(theirs_cpu.clone())
        );
    }
    let recall = overlap as f64 / (nq * k) as f64;
    println!("  top-{k} agreement with faiss: {:.4} of ids, {same_order}/{nq} queries in identical order", recall);
    if recall < 0.999 {
        eprintln!("top-{k} ids disagree with faiss beyond float rounding: this is a bug");
        std::process::exit(1);
    }
}
