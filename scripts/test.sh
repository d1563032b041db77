#!/usr/bin/env bash
# Installs everything catena's tests need on a fresh Debian machine, then runs the whole test suite.
#
# Installs (idempotent; cached under ${CATENA_CACHE_DIR:-$HOME/.cache/catena}):
#   - scripts/setup.sh: apt cmake, clang, libclang-dev (llama.cpp builds for the llama-cpp feature), the
#     all-MiniLM-L6-v2 and SmolLM2-135M-Instruct model files
#   - PyPI: langchain-text-splitters and tiktoken (splitter differential tests), llama-cpp-python[server] + gguf + tokenizers
#     (the real OpenAI-compatible server and the tiny test model)
# Then runs: cargo test --workspace --features local,constrain (unit, integration, end-to-end and doc tests).
#
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
export CATENA_CACHE_DIR="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
mkdir -p "$CATENA_CACHE_DIR"

scripts/setup.sh   # apt packages of the llama.cpp build, the MiniLM and SmolLM2 model files
bash crates/core/tests/py/setup.sh
bash .ci/setup-llama-server.sh
CATENA_EMBED_MODEL="$(bash .ci/fetch-minilm.sh)"
export CATENA_EMBED_MODEL
unset CATENA_LLM_MODEL   # the SmolLM2 tests use the default model that scripts/setup.sh installed

cargo test --workspace --features local,constrain "$@"
