#!/usr/bin/env bash
# Installs llm-katan, a test server that speaks the OpenAI, Anthropic, Gemini/Vertex and Azure APIs (with an "echo"
# backend that needs no model, and failure simulation), which the Anthropic provider's tests run against
# (idempotent; offline once cached), in its own virtualenv ${CATENA_CACHE_DIR:-$HOME/.cache/catena}/katan/venv
# (so that its pinned dependencies do not meet those of the other Python test servers); wheels cached in
# $CATENA_CACHE_DIR/pip. Prints where the executable is. The tests find it there by themselves
# (catena_test_support::katan).
#
#   bash .ci/setup-katan.sh
set -euo pipefail
PYTHON="${CATENA_PYTHON:-python3}"
CACHE="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
ROOT="$CACHE/katan"
KATAN_VERSION=0.22.0
VENV="$ROOT/venv"
mkdir -p "$ROOT"

if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('llm-katan') != '$KATAN_VERSION')" 2>/dev/null; then
    echo "[setup-katan] installing llm-katan $KATAN_VERSION into $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --cache-dir "$CACHE/pip" \
        "llm-katan==$KATAN_VERSION"
fi

[ -x "$VENV/bin/llm-katan" ] || { echo "[setup-katan] $VENV/bin/llm-katan is missing after the install" >&2; exit 1; }
echo "[setup-katan] llm-katan $KATAN_VERSION: $VENV/bin/llm-katan"
