#!/usr/bin/env bash
# Installs the Chroma server that the Chroma store's tests start (`chroma run`, PyPI package chromadb; idempotent,
# offline once cached). Wheels are cached in ${CATENA_CACHE_DIR:-$HOME/.cache/catena}/pip.
#
#   bash .ci/setup-chroma.sh
set -euo pipefail
PYTHON="${CATENA_PYTHON:-python3}"
CACHE="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
VERSION=1.5.9
if command -v chroma >/dev/null 2>&1 && "$PYTHON" -c "import chromadb, sys; sys.exit(chromadb.__version__ != '$VERSION')" 2>/dev/null; then
    exit 0
fi
echo "[setup-chroma] installing chromadb $VERSION"
"$PYTHON" -m pip install --quiet --cache-dir "$CACHE/pip" "chromadb==$VERSION"
command -v chroma >/dev/null 2>&1 || { echo "[setup-chroma] pip installed chromadb but no \`chroma\` command is on the PATH" >&2; exit 1; }
