#!/usr/bin/env python3
"""faiss-cpu peer for crates/vectorstores/benches/million.rs, on the same vector files.

usage: million_peer.py BASE QUERIES N EXACT_IDS

Indexes, each built and queried in a child process of its own so that its peak RSS (ru_maxrss) is its own:
  flat          IndexFlatIP (exact)
  sq8+refine    IndexRefineFlat over IndexScalarQuantizer(QT_8bit), k_factor 10: int8 scan, exact rescoring,
                the same method as SqliteStore's ScanPrecision::Int8 { oversample: 10 }
  hnsw          IndexHNSWFlat(M=32, efConstruction=40, faiss's default), queried at efSearch 16, 64, 256
Vectors are added in batches of 10,000 read from the file (the whole base is never loaded twice). Queries run one
at a time with faiss's OpenMP threads set to the machine's cores. Recall@10 is against the exact ids the Rust
bench wrote (its f32 scan; faiss flat is checked against them too). Setup: `pip install faiss-cpu numpy`.
"""

import os
import resource
import subprocess
import sys
import tempfile
import time

DIM = 384
K = 10
BATCH = 10_000


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def phase(kind, base, queries_path, n, exact_ids):
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    queries = np.fromfile(queries_path, dtype="<f4").reshape(-1, DIM)
    start = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexFlatIP(DIM)
    elif kind == "sq8+refine":
        sq = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        index = faiss.IndexRefineFlat(sq)
        index.k_factor = 10
        first = np.fromfile(base, dtype="<f4", count=min(n, 100_000) * DIM).reshape(-1, DIM)
        index.train(first)
        del first
    else:
        index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
    for at in range(0, n, BATCH):
        count = min(BATCH, n - at)
        rows = np.fromfile(base, dtype="<f4", count=count * DIM, offset=at * DIM * 4).reshape(-1, DIM)
        index.add(rows)
    build_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "index.faiss")
        faiss.write_index(index, path)
        file_mib = os.path.getsize(path) / (1 << 20)
    with open(exact_ids) as f:
        exact = [set(line.split(",")) for line in f.read().splitlines()]
    settings = [16, 64, 256] if kind == "hnsw" else [None]
    for ef in settings:
        if ef is not None:
            index.hnsw.efSearch = ef
        for q in queries[:5]:
            index.search(q.reshape(1, -1), K)
        times, hit = [], 0
        for qi, q in enumerate(queries):
            t = time.perf_counter()
            _, ids = index.search(q.reshape(1, -1), K)
            times.append((time.perf_counter() - t) * 1e3)
            hit += sum(1 for i in ids[0] if str(int(i)) in exact[qi])
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        name = kind if ef is None else f"{kind} ef={ef}"
        print(
            f"{name:>16}: build_s={build_s:.1f} file_mib={file_mib:.0f} p50_ms={percentile(times, 0.5):.2f} "
            f"p99_ms={percentile(times, 0.99):.2f} peak_rss_mib={rss:.0f} "
            f"recall@10={hit / (K * len(queries)):.3f}",
            flush=True,
        )


def main():
    if sys.argv[1] == "--phase":
        kind, base, queries, n, exact = sys.argv[2:7]
        phase(kind, base, queries, int(n), exact)
        return 0
    base, queries, n, exact = sys.argv[1:5]
    try:
        import faiss
    except ImportError as e:
        print(f"faiss peer skipped: {e}; pip install faiss-cpu numpy")
        return 2
    print(f"faiss {faiss.__version__} ({faiss.get_compile_options().strip()}), {os.cpu_count()} threads", flush=True)
    for kind in ["flat", "sq8+refine", "hnsw"]:
        r = subprocess.run([sys.executable, __file__, "--phase", kind, base, queries, n, exact])
        if r.returncode != 0:
            print(f"{kind}: failed with exit code {r.returncode}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
