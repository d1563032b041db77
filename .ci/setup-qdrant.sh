#!/usr/bin/env bash
# Installs what the Qdrant store's tests run behind Qdrant's real gRPC protocol: the PyPI package qdrant-client,
# whose gRPC stubs, converters and local-mode engine (QdrantLocal) crates/test-support/qdrant_server.py serves
# (grpcio comes as its dependency; idempotent, offline once cached). No Qdrant server binary can be installed here.
# Wheels are cached in ${CATENA_CACHE_DIR:-$HOME/.cache/catena}/pip.
#
#   bash .ci/setup-qdrant.sh
set -euo pipefail
PYTHON="${CATENA_PYTHON:-python3}"
CACHE="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
VERSION=1.20.0
if "$PYTHON" -c "import grpc, importlib.metadata as m, sys; sys.exit(m.version('qdrant-client') != '$VERSION')" 2>/dev/null; then
    exit 0
fi
echo "[setup-qdrant] installing qdrant-client $VERSION"
"$PYTHON" -m pip install --quiet --cache-dir "$CACHE/pip" "qdrant-client==$VERSION"
"$PYTHON" -c "import qdrant_client, grpc" || { echo "[setup-qdrant] pip installed qdrant-client but \`import qdrant_client, grpc\` fails" >&2; exit 1; }
