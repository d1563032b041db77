#!/usr/bin/env bash
# Installs the LiteLLM proxy (PyPI `litellm[proxy]`, pinned) that the Anthropic provider's end-to-end test puts in
# front of a real llama.cpp server (idempotent; offline once cached), in its own virtualenv
# ${CATENA_CACHE_DIR:-$HOME/.cache/catena}/litellm/venv (about 760 MB: the proxy's dependencies must not meet those
# of the other Python test servers); wheels cached in $CATENA_CACHE_DIR/pip. The test also needs llama-cpp-python's
# server (.ci/setup-llama-server.sh) and SmolLM2 (.ci/fetch-smollm2.sh). Prints where the executable is; the test
# finds it there by itself (catena_test_support::litellm).
#
#   bash .ci/setup-litellm.sh
set -euo pipefail
PYTHON="${CATENA_PYTHON:-python3}"
CACHE="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
ROOT="$CACHE/litellm"
LITELLM_VERSION=1.108.7
VENV="$ROOT/venv"
mkdir -p "$ROOT"

if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION')" 2>/dev/null ||
    ! "$VENV/bin/python" -c "import fastapi, uvicorn, backoff, orjson" 2>/dev/null; then
    echo "[setup-litellm] installing litellm[proxy] $LITELLM_VERSION into $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --cache-dir "$CACHE/pip" \
        "litellm[proxy]==$LITELLM_VERSION"
fi

[ -x "$VENV/bin/litellm" ] || { echo "[setup-litellm] $VENV/bin/litellm is missing after the install" >&2; exit 1; }
echo "[setup-litellm] litellm[proxy] $LITELLM_VERSION: $VENV/bin/litellm"
