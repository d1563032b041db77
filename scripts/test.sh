#!/usr/bin/env bash
# Installs everything catena's tests need on a fresh Debian machine, then runs the whole test suite.
#
# Installs (idempotent; cached under ${CATENA_CACHE_DIR:-$HOME/.cache/catena}):
#   - scripts/setup.sh: apt cmake, clang, libclang-dev (llama.cpp builds for the llama-cpp feature), the
#     all-MiniLM-L6-v2 and SmolLM2-135M-Instruct model files
#   - PyPI: langchain-text-splitters and tiktoken (splitter differential tests), llama-cpp-python[server] + gguf + tokenizers
#     (the real OpenAI-compatible server and the tiny test model), chromadb (the Chroma server)
#   - .ci/setup-mcp.sh: the MCP peers (mcp-server-time, npm server-everything and the conformance suite 0.1.13)
#   - .ci/setup-katan.sh, .ci/setup-litellm.sh: llm-katan (OpenAI-, Anthropic-, Gemini- and Azure-format servers) and LiteLLM's proxy
#   - .ci/setup-ollama-proxy.sh: ollama-proxy-plus (an Ollama-API server, in front of llm-katan)
# Then runs: cargo test --workspace --features local,constrain,chroma,qdrant,mcp,anthropic,gemini,ollama (unit, integration, end-to-end and doc tests),
# then the notebooks (scripts/run-notebooks.sh: evcxr + nbconvert, outputs checked).
#
# CATENA_NOTEBOOKS chooses what happens to the notebooks:
#   always (default)  run them, installing evcxr_jupyter first if needed (about 16 minutes once) and compiling
#                     their dependencies into the cached evcxr build directory (about 20 minutes once);
#   budget            what .ci/run uses: run them when that costs little (evcxr installed and its build
#                     directory warm), or when everything before took under 20 minutes (so a cold notebook build
#                     still fits CI's time limit); otherwise say so and skip them (a cold machine's first CI run);
#   never             skip them.
#
# Usage: scripts/test.sh [extra cargo test args]   (with arguments, the notebooks are skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
export CATENA_CACHE_DIR="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
mkdir -p "$CATENA_CACHE_DIR"

scripts/setup.sh   # apt packages of the llama.cpp build, the MiniLM and SmolLM2 model files
bash crates/text/tests/py/setup.sh
bash .ci/setup-llama-server.sh
bash .ci/setup-chroma.sh   # the Chroma server of the Chroma store's tests
bash .ci/setup-qdrant.sh   # Qdrant's engine behind its gRPC protocol, for the Qdrant store's tests
python3 crates/test-support/qdrant_server_check.py >/dev/null   # the gRPC test server itself (42 scenarios, 5 s)
bash .ci/setup-mcp.sh   # real MCP peers: mcp-server-time (PyPI), server-everything and the conformance suite (npm)
bash .ci/setup-katan.sh   # llm-katan (PyPI, own venv): real Anthropic- and Gemini-format servers for those providers' tests
bash .ci/setup-litellm.sh   # LiteLLM's proxy (PyPI, own venv): Anthropic-format /v1/messages in front of llama.cpp
bash .ci/setup-ollama-proxy.sh   # ollama-proxy-plus (PyPI, own venv): Ollama's /api/chat in front of llm-katan
bash .ci/setup-phoenix.sh   # Arize Phoenix (PyPI, own venv): the OTLP trace backend of catena-trace's otlp export tests
bash .ci/setup-browser.sh   # chromium + playwright-core (npm): the studio's browser test
CATENA_EMBED_MODEL="$(bash .ci/fetch-minilm.sh)"
export CATENA_EMBED_MODEL
unset CATENA_LLM_MODEL   # the SmolLM2 tests use the default model that scripts/setup.sh installed

cargo test --workspace --features local,constrain,chroma,qdrant,mcp,anthropic,gemini,ollama,otlp "$@"

notebook_build="${CATENA_NOTEBOOK_BUILD_DIR:-$CATENA_CACHE_DIR/evcxr-build}"
# Extra arguments select tests (a filter, a package): then only those run, not the notebooks.
notebooks_mode="${CATENA_NOTEBOOKS:-always}"
[ $# -eq 0 ] || notebooks_mode=never
case "$notebooks_mode" in
    always) scripts/run-notebooks.sh ;;
    never) echo "[test] notebooks skipped (CATENA_NOTEBOOKS=never)" ;;
    budget)
        if command -v evcxr_jupyter >/dev/null 2>&1 && [ -d "$notebook_build/target" ]; then
            scripts/run-notebooks.sh
        elif [ "$SECONDS" -lt 1200 ]; then
            echo "[test] notebooks: evcxr or its build cache is missing, and the tests took ${SECONDS} s: installing and building now"
            scripts/run-notebooks.sh
        else
            echo "[test] NOTEBOOKS SKIPPED: evcxr or its build cache is missing and the tests already took ${SECONDS} s; a cold"
            echo "[test] notebook build (about 35 minutes) would not fit CI's limit. The next CI run on this machine, or"
            echo "[test] scripts/test.sh (CATENA_NOTEBOOKS=always), runs them."
        fi
        ;;
    *) echo "[test] CATENA_NOTEBOOKS must be always, budget or never" >&2; exit 2 ;;
esac
