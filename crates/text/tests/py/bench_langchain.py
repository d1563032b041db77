"""Python peer of catena's splitter benchmark (crates/core/benches/splitter.rs).

Usage: python3 bench_langchain.py CORPUS_DIR CHUNK_SIZE CHUNK_OVERLAP REPETITIONS > RESULT.json

Splits every file of CORPUS_DIR (sorted by name, read as UTF-8) with langchain's RecursiveCharacterTextSplitter
(default separators), REPETITIONS times after one warm-up pass, and prints JSON:
{"version", "files", "split_text_ms": [per pass], "create_documents_ms": [per pass],
 "chunks": [[[text, start_byte], ...] per file]}.
split_text_ms times split_text alone; create_documents_ms times create_documents with add_start_index=True
(chunks plus start offsets, the same output as catena's split_text).
"""

import importlib.metadata
import json
import os
import sys
import time

try:
    from langchain_text_splitters import RecursiveCharacterTextSplitter
except ImportError as err:
    sys.stderr.write(
        f"missing Python package langchain-text-splitters ({err}); run: pip install langchain-text-splitters\n"
    )
    sys.exit(3)


def main():
    corpus, size, overlap, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    names = sorted(n for n in os.listdir(corpus) if os.path.isfile(os.path.join(corpus, n)))
    texts = []
    for name in names:
        with open(os.path.join(corpus, name), encoding="utf-8", newline="") as f:
            texts.append(f.read())
    plain = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap)
    indexed = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap, add_start_index=True)

    for text in texts:  # warm-up
        plain.split_text(text)
    split_ms = []
    for _ in range(reps):
        t = time.perf_counter()
        for text in texts:
            plain.split_text(text)
        split_ms.append((time.perf_counter() - t) * 1000)
    docs_ms = []
    for _ in range(reps):
        t = time.perf_counter()
        for text in texts:
            indexed.create_documents([text])
        docs_ms.append((time.perf_counter() - t) * 1000)

    chunks = []
    for text in texts:
        per_file = []
        for doc in indexed.create_documents([text]):
            index = doc.metadata["start_index"]
            per_file.append([doc.page_content, None if index < 0 else len(text[:index].encode("utf-8"))])
        chunks.append(per_file)
    sys.stdout.write(
        json.dumps(
            {
                "version": importlib.metadata.version("langchain-text-splitters"),
                "files": names,
                "split_text_ms": split_ms,
                "create_documents_ms": docs_ms,
                "chunks": chunks,
            }
        )
    )


if __name__ == "__main__":
    main()
