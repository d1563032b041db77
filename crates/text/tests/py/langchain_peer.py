"""Python peer of catena's splitter tests: runs langchain-text-splitters on a batch of jobs.

Usage: python3 langchain_peer.py REQUEST.json > RESPONSE.json

The request holds the texts once ("docs") and a list of jobs; each job names the texts it runs on (indices into
"docs", or all of them). Job kinds:

- "recursive": RecursiveCharacterTextSplitter(chunk_size, chunk_overlap, separators, keep_separator,
  is_separator_regex, strip_whitespace, add_start_index=True).create_documents([text]) -> per text a list of
  [chunk, langchain_start, reference_start, occurs]: langchain_start is LangChain's start_index (found by
  str.find from an estimated offset, so wrong in repetitive text; null when not found), reference_start is where
  the chunk is when that can be told without knowing the algorithm (see Locator; null otherwise), occurs says
  whether the chunk occurs in the text at all. Offsets are converted from code points to UTF-8 bytes.
- "token": TokenTextSplitter(encoding_name, chunk_size, chunk_overlap).split_text(text) -> per text a list of
  [chunk, start] where start is the byte offset of the window's first token, moved back to a character boundary.
  Needs "tiktoken_assets": a directory holding cl100k_base.tiktoken / o200k_base.tiktoken (the files embedded in
  the tiktoken-rs crate); they are placed in tiktoken's cache so nothing is downloaded, and tiktoken checks them
  against the official SHA-256.
- "markdown_headers": MarkdownHeaderTextSplitter(all six levels, strip_headers=True).split_text(text) -> per text
  a list of [content, [header titles...]].
- "isspace": the code points for which str.isspace() holds.

Exits with status 3 and a message naming the pip command when a package is missing.
"""

import collections
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys

try:
    from langchain_text_splitters import (
        MarkdownHeaderTextSplitter,
        RecursiveCharacterTextSplitter,
        TokenTextSplitter,
    )
except ImportError as err:
    sys.stderr.write(
        f"missing Python package langchain-text-splitters ({err}); run: pip install langchain-text-splitters\n"
    )
    sys.exit(3)

TIKTOKEN_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


def byte_offsets(text):
    """Maps a code-point offset to a byte offset: a list of len(text) + 1 entries (None for ASCII texts)."""
    if text.isascii():
        return None
    table = [0] * (len(text) + 1)
    total = 0
    for i, ch in enumerate(text):
        table[i] = total
        total += len(ch.encode("utf-8"))
    table[len(text)] = total
    return table


class Locator:
    """Finds where a chunk is in a text without knowing how it was made: the offset of the chunk's only
    occurrence, or else of its first character's only occurrence (None when neither is unique)."""

    def __init__(self, text):
        self.text = text
        self.counts = collections.Counter(text)
        self.first = {}
        for i, ch in enumerate(text):
            self.first.setdefault(ch, i)

    def locate(self, chunk):
        i = self.text.find(chunk)
        occurs = i >= 0
        if occurs and self.text.find(chunk, i + 1) < 0:
            return i, occurs
        if chunk and self.counts[chunk[0]] == 1:
            return self.first[chunk[0]], occurs
        return None, occurs


_ANALYSED = {}


def analysed(text):
    """The byte-offset table and the Locator of a text, computed once per text."""
    key = id(text)
    if key not in _ANALYSED:
        _ANALYSED[key] = (byte_offsets(text), Locator(text))
    return _ANALYSED[key]


def recursive(job, text):
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=job["chunk_size"],
        chunk_overlap=job["chunk_overlap"],
        separators=job.get("separators"),
        keep_separator=job.get("keep_separator", True),
        is_separator_regex=job.get("is_separator_regex", False),
        strip_whitespace=job.get("strip_whitespace", True),
        add_start_index=True,
    )
    table, locator = analysed(text)

    def to_bytes(index):
        if index is None or index < 0:
            return None
        return index if table is None else table[index]

    out = []
    for doc in splitter.create_documents([text]):
        reference, occurs = locator.locate(doc.page_content)
        out.append([doc.page_content, to_bytes(doc.metadata["start_index"]), to_bytes(reference), occurs])
    return out


def prepare_tiktoken(assets):
    """Puts the vocabulary files where tiktoken looks for its download cache."""
    cache = os.path.join(os.environ.get("CATENA_CACHE_DIR", os.path.expanduser("~/.cache/catena")), "tiktoken")
    os.makedirs(cache, exist_ok=True)
    for name, url in TIKTOKEN_URLS.items():
        target = os.path.join(cache, hashlib.sha1(url.encode()).hexdigest())
        if not os.path.exists(target):
            shutil.copyfile(os.path.join(assets, f"{name}.tiktoken"), target)
    os.environ["TIKTOKEN_CACHE_DIR"] = cache


def token(job, text):
    try:
        import tiktoken
    except ImportError as err:
        sys.stderr.write(f"missing Python package tiktoken ({err}); run: pip install tiktoken\n")
        sys.exit(3)
    name, size, overlap = job["encoding"], job["chunk_size"], job["chunk_overlap"]
    chunks = TokenTextSplitter(encoding_name=name, chunk_size=size, chunk_overlap=overlap).split_text(text)
    # The byte offset of each window, walking the windows the way langchain's split_text_on_tokens does.
    enc = tiktoken.get_encoding(name)
    ids = enc.encode(text, allowed_special=set(), disallowed_special="all")
    raw = text.encode("utf-8")
    starts, decoded = [], []
    start_idx = 0
    while start_idx < len(ids):
        cur = min(start_idx + size, len(ids))
        piece = enc.decode(ids[start_idx:cur])
        if piece:
            offset = len(enc.decode_bytes(ids[:start_idx]))
            while offset > 0 and offset < len(raw) and (raw[offset] & 0xC0) == 0x80:
                offset -= 1
            starts.append(offset)
            decoded.append(piece)
        if cur == len(ids):
            break
        start_idx += size - overlap
    if decoded != chunks:
        raise AssertionError("window walk disagrees with TokenTextSplitter")
    return [[c, s] for c, s in zip(chunks, starts)]


def markdown_headers(job, text):
    levels = [("#" * n, f"h{n}") for n in range(1, 7)]
    splitter = MarkdownHeaderTextSplitter(headers_to_split_on=levels, strip_headers=True)
    out = []
    for doc in splitter.split_text(text):
        path = [doc.metadata[f"h{n}"] for n in range(1, 7) if f"h{n}" in doc.metadata]
        out.append([doc.page_content, path])
    return out


KINDS = {"recursive": recursive, "token": token, "markdown_headers": markdown_headers}


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        request = json.load(f)
    docs = request.get("docs", [])
    if request.get("tiktoken_assets"):
        prepare_tiktoken(request["tiktoken_assets"])
    results = []
    for job in request["jobs"]:
        kind = job["kind"]
        if kind == "isspace":
            results.append([c for c in range(0x110000) if chr(c).isspace()])
            continue
        indices = job.get("docs")
        if indices is None:
            indices = range(len(docs))
        results.append([KINDS[kind](job, docs[i]) for i in indices])
    version = importlib.metadata.version("langchain-text-splitters")
    # json.dumps (C encoder) is several times faster than json.dump on large outputs.
    sys.stdout.write(json.dumps({"langchain_text_splitters": version, "results": results}))


if __name__ == "__main__":
    main()
