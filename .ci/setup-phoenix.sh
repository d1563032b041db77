#!/usr/bin/env bash
# Installs Arize Phoenix, the OpenTelemetry (OTLP) trace backend that catena-trace's `otlp` export is tested
# against (crates/trace/tests/otlp_phoenix.rs: catena_test_support::phoenix runs `phoenix serve` offline), in its
# own virtualenv ${CATENA_CACHE_DIR:-$HOME/.cache/catena}/phoenix-venv (idempotent: a venv that already has the
# pinned version is kept; offline once cached); wheels cached in $CATENA_CACHE_DIR/pip. About 860 MB; a cold
# install takes one to two minutes. Prints where the executable is and how long this took.
#
#   bash .ci/setup-phoenix.sh
set -euo pipefail
PYTHON="${CATENA_PYTHON:-python3}"
CACHE="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
PHOENIX_VERSION=20.26.1
VENV="$CACHE/phoenix-venv"
started=$(date +%s%N)
mkdir -p "$CACHE"

if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('arize-phoenix') != '$PHOENIX_VERSION')" 2>/dev/null; then
    echo "[setup-phoenix] installing arize-phoenix $PHOENIX_VERSION into $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --cache-dir "$CACHE/pip" \
        "arize-phoenix==$PHOENIX_VERSION"
fi

[ -x "$VENV/bin/phoenix" ] || { echo "[setup-phoenix] $VENV/bin/phoenix is missing after the install" >&2; exit 1; }
echo "[setup-phoenix] arize-phoenix $PHOENIX_VERSION: $VENV/bin/phoenix ($(( ($(date +%s%N) - started) / 1000000 )) ms)"
