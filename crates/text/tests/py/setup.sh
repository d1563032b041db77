#!/usr/bin/env bash
# Installs the Python peers of catena-text's splitter tests and benchmark (idempotent, offline once cached).
#
#   bash crates/text/tests/py/setup.sh
#
# - langchain-text-splitters: the reference RecursiveCharacterTextSplitter / TokenTextSplitter /
#   MarkdownHeaderTextSplitter (tests/splitter_langchain.rs, benches/splitter.rs).
# - tiktoken: the reference tokenizer of TokenTextSplitter. Its vocabularies are not downloaded: the test hands
#   the peer the files embedded in the tiktoken-rs crate, which tiktoken checks against the official SHA-256.
#
# Wheels are cached in ${CATENA_CACHE_DIR:-$HOME/.cache/catena}/pip.
set -euo pipefail
PYTHON="${CATENA_PYTHON:-python3}"
CACHE="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
if "$PYTHON" -c 'import langchain_text_splitters, tiktoken' 2>/dev/null; then
    exit 0
fi
"$PYTHON" -m pip install --quiet --cache-dir "$CACHE/pip" 'langchain-text-splitters>=1.1,<2' 'tiktoken>=0.7'
"$PYTHON" -c 'import langchain_text_splitters, tiktoken'
