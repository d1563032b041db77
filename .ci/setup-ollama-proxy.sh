#!/usr/bin/env bash
# Installs ollama-proxy-plus, a server of Ollama's native API (/api/chat plain and NDJSON-streamed, /api/embed)
# that forwards to OpenAI-compatible providers. The Ollama provider's peer tests run it in front of llm-katan's
# OpenAI endpoint (echo backend; .ci/setup-katan.sh installs it), since Ollama's own binary cannot be installed
# here. Idempotent; offline once cached. Own virtualenv ${CATENA_CACHE_DIR:-$HOME/.cache/catena}/ollama-proxy/venv
# (its pinned dependencies stay apart from the other Python test servers); wheels cached in $CATENA_CACHE_DIR/pip.
# Prints where the executable is. The tests find it there by themselves (catena_test_support::ollama_proxy).
#
#   bash .ci/setup-ollama-proxy.sh
set -euo pipefail
PYTHON="${CATENA_PYTHON:-python3}"
CACHE="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
ROOT="$CACHE/ollama-proxy"
PROXY_VERSION=0.1.0
VENV="$ROOT/venv"
mkdir -p "$ROOT"

if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('ollama-proxy-plus') != '$PROXY_VERSION')" 2>/dev/null; then
    echo "[setup-ollama-proxy] installing ollama-proxy-plus $PROXY_VERSION into $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --cache-dir "$CACHE/pip" \
        "ollama-proxy-plus==$PROXY_VERSION"
fi

[ -x "$VENV/bin/ollama-proxy" ] || { echo "[setup-ollama-proxy] $VENV/bin/ollama-proxy is missing after the install" >&2; exit 1; }
echo "[setup-ollama-proxy] ollama-proxy-plus $PROXY_VERSION: $VENV/bin/ollama-proxy"
