//! Ingest throughput and query latency per store, against Chroma's own Python client, LangChain's Chroma wrapper
//! (both on the same `chroma run` server) and LangChain's FAISS wrapper, on the same documents and vectors.
//!
//! ```text
//! pip install chromadb langchain-chroma langchain-community faiss-cpu numpy
//! cargo bench -p catena-vectorstores --features sqlite,chroma --bench stores
//! ```
//!
//! Documents: `CATENA_BENCH_N` (10,000) seeded random unit vectors of `CATENA_BENCH_DIM` (384) dimensions, text
//! "document {i}", metadata {"i": i, "group": i % 10}, ingested in batches of `CATENA_BENCH_BATCH` (1,000);
//! embedding time is excluded (vectors are given ready-made). Queries: `CATENA_BENCH_QUERIES` (200) random unit
//! vectors, one at a time, `CATENA_BENCH_K` (10) results with text and metadata; p50 and p99 latency. Cosine
//! everywhere. Chroma's server is started here (`chroma run`, `.ci/setup-chroma.sh`).
//!
//! Not measured: Qdrant. No Qdrant server installs from this machine's registries; the tests' Qdrant is Qdrant's
//! Python local-mode engine behind a test front, whose speed says nothing about a Qdrant deployment.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use catena_core::{Document, EmbeddedDocument, SearchRequest, VectorStore};
use catena_test_support::chroma::ChromaServer;
use catena_vectorstores::{ChromaConfig, ChromaStore, InMemoryStore, Metric, SqliteStore};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn unit_vectors(rng: &mut fastrand::Rng, n: usize, dim: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..dim).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) {
    let bytes: Vec<u8> = rows.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("write vectors");
}

fn percentile(values: &[f64], q: f64) -> f64 {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    s[((q * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)]
}

struct Row {
    name: String,
    ingest_docs_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn measure(
    name: &str,
    store: &dyn VectorStore,
    docs: &[EmbeddedDocument],
    queries: &[Vec<f32>],
    batch: usize,
    k: usize,
) -> Row {
    let started = Instant::now();
    for chunk in docs.chunks(batch) {
        store.upsert(chunk.to_vec()).await.expect("upsert");
    }
    store.flush().await.expect("flush");
    let ingest = started.elapsed().as_secs_f64();
    assert_eq!(store.len().await.expect("len"), docs.len(), "{name}: every document is in");
    let mut times = Vec::with_capacity(queries.len());
    for q in queries {
        let t = Instant::now();
        let hits = store.search(SearchRequest::new(q.clone(), k)).await.expect("search");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(hits.len(), k);
    }
    Row {
        name: name.to_string(),
        ingest_docs_per_s: docs.len() as f64 / ingest,
        p50_ms: percentile(&times, 0.5),
        p99_ms: percentile(&times, 0.99),
    }
}

fn main() {
    let n = env_usize("CATENA_BENCH_N", 10_000);
    let dim = env_usize("CATENA_BENCH_DIM", 384);
    let nq = env_usize("CATENA_BENCH_QUERIES", 200);
    let k = env_usize("CATENA_BENCH_K", 10);
    let batch = env_usize("CATENA_BENCH_BATCH", 1_000);
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());

    let mut rng = fastrand::Rng::with_seed(0x5eed_5709);
    let vectors = unit_vectors(&mut rng, n, dim);
    let queries = unit_vectors(&mut rng, nq, dim);
    let docs: Vec<EmbeddedDocument> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| EmbeddedDocument {
            document: Document::with_id(
                i.to_string(),
                format!("document {i}"),
                serde_json::json!({"i": i, "group": i % 10}).as_object().expect("an object").clone(),
            ),
            vector: v.clone(),
        })
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChromaServer::start();

    println!("vectorstores ingest/query bench: n={n} dim={dim} batch={batch} queries={nq} k={k}, cosine");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mut rows = runtime.block_on(async {
        let memory = InMemoryStore::new(dim, Metric::Cosine).expect("store");
        let sqlite = SqliteStore::open(dir.path().join("bench.sqlite"), dim, Metric::Cosine).await.expect("sqlite");
        let chroma = ChromaStore::connect(ChromaConfig::new(server.url(), "bench-catena"), dim, Metric::Cosine)
            .await
            .expect("chroma");
        vec![
            measure("catena InMemoryStore", &memory, &docs, &queries, batch, k).await,
            measure("catena SqliteStore (WAL, Durability::ProcessCrash)", &sqlite, &docs, &queries, batch, k).await,
            measure("catena ChromaStore (HTTP API v2)", &chroma, &docs, &queries, batch, k).await,
        ]
    });

    let base = dir.path().join("base.f32");
    let query_path = dir.path().join("queries.f32");
    write_f32(&base, &vectors);
    write_f32(&query_path, &queries);
    let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/stores_peer.py");
    let address = server.url().trim_start_matches("http://").to_string();
    let out = Command::new(&python)
        .arg(&peer)
        .args(["--dim", &dim.to_string(), "--k", &k.to_string(), "--batch", &batch.to_string(), "--chroma", &address])
        .arg("--base")
        .arg(&base)
        .arg("--queries")
        .arg(&query_path)
        .output()
        .expect("run the Python peers");
    if !out.status.success() {
        eprintln!("the Python peers failed:\n{}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(2);
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        rows.push(Row {
            name: v["peer"].as_str().unwrap_or("?").to_string(),
            ingest_docs_per_s: v["ingest_docs_per_s"].as_f64().unwrap_or(f64::NAN),
            p50_ms: v["query_p50_ms"].as_f64().unwrap_or(f64::NAN),
            p99_ms: v["query_p99_ms"].as_f64().unwrap_or(f64::NAN),
        });
    }
    println!("| store | ingest docs/s | query p50 ms | query p99 ms |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        println!("| {} | {:.0} | {:.3} | {:.3} |", r.name, r.ingest_docs_per_s, r.p50_ms, r.p99_ms);
    }
    let find = |prefix: &str| rows.iter().find(|r| r.name.starts_with(prefix));
    if let (Some(ours), Some(theirs)) = (find("catena ChromaStore"), find("chromadb")) {
        println!(
            "Chroma, same server: catena ingest {:.2}x chromadb's client; query p50 ratio {:.2} (theirs / ours: above 1, catena is faster)",
            ours.ingest_docs_per_s / theirs.ingest_docs_per_s,
            theirs.p50_ms / ours.p50_ms
        );
    }
    if let (Some(ours), Some(theirs)) = (find("catena ChromaStore"), find("langchain-chroma")) {
        println!(
            "Chroma, same server: catena ingest {:.2}x LangChain's Chroma; query p50 ratio {:.2} (theirs / ours)",
            ours.ingest_docs_per_s / theirs.ingest_docs_per_s,
            theirs.p50_ms / ours.p50_ms
        );
    }
    if let (Some(ours), Some(theirs)) = (find("catena InMemoryStore"), find("langchain-community FAISS")) {
        println!(
            "In process: InMemoryStore ingest {:.2}x LangChain's FAISS; query p50 ratio {:.2} (theirs / ours)",
            ours.ingest_docs_per_s / theirs.ingest_docs_per_s,
            theirs.p50_ms / ours.p50_ms
        );
    }
}
