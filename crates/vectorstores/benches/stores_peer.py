#!/usr/bin/env python3
"""Python peers for crates/vectorstores/benches/stores.rs: the same documents and vectors through Chroma's own
Python client (against the same `chroma run` server), LangChain's Chroma wrapper (langchain-chroma, same server)
and LangChain's FAISS wrapper (langchain-community + faiss-cpu, in process).

Reads the raw little-endian float32 files the Rust bench wrote (n x dim documents, nq x dim queries), ingests the
documents in batches of `--batch` (ids "0".."n-1", text "document {i}", metadata {"i": i, "group": i % 10}) and
times each query one at a time (k results). Embedding time is excluded everywhere: vectors are given ready-made
(LangChain wrappers get an Embeddings object that looks the precomputed vectors up by text). Prints one JSON line
per peer: {"peer", "ingest_docs_per_s", "query_p50_ms", "query_p99_ms"}.

Setup: `pip install chromadb langchain-chroma langchain-community faiss-cpu numpy`.
"""

import argparse
import json
import time


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def timed_queries(run, queries):
    times = []
    for q in queries:
        t = time.perf_counter()
        run(q)
        times.append((time.perf_counter() - t) * 1e3)
    return percentile(times, 0.5), percentile(times, 0.99)


def report(peer, n, seconds, p50, p99):
    print(json.dumps({"peer": peer, "ingest_docs_per_s": n / seconds, "query_p50_ms": p50, "query_p99_ms": p99}),
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--chroma", required=True, help="host:port of the chroma server")
    args = ap.parse_args()

    import numpy as np
    base = np.fromfile(args.base, dtype="<f4").reshape(-1, args.dim)
    queries = [q.tolist() for q in np.fromfile(args.queries, dtype="<f4").reshape(-1, args.dim)]
    n = base.shape[0]
    ids = [str(i) for i in range(n)]
    texts = [f"document {i}" for i in range(n)]
    metas = [{"i": i, "group": i % 10} for i in range(n)]
    vectors = base.tolist()
    host, port = args.chroma.rsplit(":", 1)

    import chromadb
    client = chromadb.HttpClient(host=host, port=int(port))
    col = client.create_collection("peer-chroma", metadata={"hnsw:space": "cosine"})
    t = time.perf_counter()
    for s in range(0, n, args.batch):
        col.add(ids=ids[s:s + args.batch], embeddings=vectors[s:s + args.batch], documents=texts[s:s + args.batch],
                metadatas=metas[s:s + args.batch])
    ingest = time.perf_counter() - t
    p50, p99 = timed_queries(lambda q: col.query(query_embeddings=[q], n_results=args.k,
                                                 include=["documents", "metadatas", "distances"]), queries)
    report(f"chromadb {chromadb.__version__} HttpClient", n, ingest, p50, p99)

    from langchain_core.embeddings import Embeddings

    class Precomputed(Embeddings):
        def __init__(self):
            self.by_text = dict(zip(texts, vectors))

        def embed_documents(self, docs):
            return [self.by_text[d] for d in docs]

        def embed_query(self, text):
            raise RuntimeError("queries go by vector")

    from langchain_chroma import Chroma
    lc = Chroma(collection_name="peer-langchain", embedding_function=Precomputed(), client=client,
                collection_metadata={"hnsw:space": "cosine"})
    t = time.perf_counter()
    for s in range(0, n, args.batch):
        lc.add_texts(texts[s:s + args.batch], metadatas=metas[s:s + args.batch], ids=ids[s:s + args.batch])
    ingest = time.perf_counter() - t
    p50, p99 = timed_queries(lambda q: lc.similarity_search_by_vector(q, k=args.k), queries)
    report("langchain-chroma Chroma", n, ingest, p50, p99)

    import faiss
    faiss.omp_set_num_threads(1)
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy
    t = time.perf_counter()
    store = None
    for s in range(0, n, args.batch):
        pairs = list(zip(texts[s:s + args.batch], vectors[s:s + args.batch]))
        if store is None:
            store = FAISS.from_embeddings(pairs, Precomputed(), metadatas=metas[s:s + args.batch],
                                          ids=ids[s:s + args.batch],
                                          distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
        else:
            store.add_embeddings(pairs, metadatas=metas[s:s + args.batch], ids=ids[s:s + args.batch])
    ingest = time.perf_counter() - t
    p50, p99 = timed_queries(lambda q: store.similarity_search_by_vector(q, k=args.k), queries)
    report(f"langchain-community FAISS (faiss {faiss.__version__}, flat IP, 1 thread)", n, ingest, p50, p99)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
