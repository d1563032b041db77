#!/usr/bin/env python3
"""faiss-cpu peer for crates/vectorstores/benches/search.rs.

Loads the base and query vectors the Rust bench wrote (raw little-endian float32, row-major), builds a
faiss.IndexFlatIP on one OpenMP thread, then serves commands read line by line from stdin so the bench can
interleave faiss rounds with its own (both sides see the same machine load):

  round            time every query, one `index.search` call per query;
                   prints {"qps": ..., "seconds": ..., "cpu_seconds": ...} (wall clock and this thread's CPU time)
  batch            time one `index.search` call with all queries;    prints {"qps": ..., "seconds": ...}
  ids PATH         write the one-at-a-time top-k ids (int64 little endian, nq x k) to PATH; prints {"ok": true}
  quit             exit

Every answer is one JSON line on stdout. Setup: `pip install faiss-cpu numpy`.
"""

import argparse
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="raw float32 file, n x dim")
    ap.add_argument("--queries", required=True, help="raw float32 file, nq x dim")
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--k", type=int, required=True)
    args = ap.parse_args()

    try:
        import faiss
        import numpy as np
    except ImportError as e:  # reported to the bench, which prints it
        print(json.dumps({"error": f"{e}; run `pip install faiss-cpu numpy`"}), flush=True)
        return 2

    faiss.omp_set_num_threads(1)
    base = np.fromfile(args.base, dtype="<f4").reshape(-1, args.dim)
    queries = np.fromfile(args.queries, dtype="<f4").reshape(-1, args.dim)
    index = faiss.IndexFlatIP(args.dim)
    index.add(base)
    # Warm up: one pass touches every page of the index.
    index.search(queries[:1], args.k)
    print(json.dumps({
        "ready": True,
        "faiss": faiss.__version__,
        "simd": faiss.get_compile_options().strip(),
        "n": int(index.ntotal),
        "nq": int(queries.shape[0]),
        "omp_threads": faiss.omp_get_max_threads(),
    }), flush=True)

    last_ids = None
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "round":
            rows = [queries[i:i + 1] for i in range(queries.shape[0])]
            ids = np.empty((queries.shape[0], args.k), dtype="<i8")
            c0 = time.thread_time()
            t0 = time.perf_counter()
            for i, q in enumerate(rows):
                _, ids[i] = index.search(q, args.k)
            dt = time.perf_counter() - t0
            cpu = time.thread_time() - c0
            last_ids = ids
            print(json.dumps({"qps": queries.shape[0] / dt, "seconds": dt, "cpu_seconds": cpu}), flush=True)
        elif cmd[0] == "batch":
            t0 = time.perf_counter()
            index.search(queries, args.k)
            dt = time.perf_counter() - t0
            print(json.dumps({"qps": queries.shape[0] / dt, "seconds": dt}), flush=True)
        elif cmd[0] == "ids":
            if last_ids is None:
                print(json.dumps({"error": "run a round first"}), flush=True)
                continue
            last_ids.astype("<i8").tofile(cmd[1])
            print(json.dumps({"ok": True}), flush=True)
        elif cmd[0] == "quit":
            return 0
        else:
            print(json.dumps({"error": f"unknown command {cmd[0]!r}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
