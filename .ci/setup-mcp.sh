#!/usr/bin/env bash
# Installs the real MCP peers that catena-mcp's tests and scripts/mcp-conformance.sh run against (idempotent;
# offline once cached), under ${CATENA_CACHE_DIR:-$HOME/.cache/catena}/mcp:
#   - PyPI mcp-server-time (a stdio server), in its own virtualenv mcp/venv (so that its pinned dependencies do
#     not meet those of the other Python test servers); wheels cached in $CATENA_CACHE_DIR/pip
#   - npm @modelcontextprotocol/server-everything (stdio and streamable HTTP) and @modelcontextprotocol/conformance
#     (the official conformance suite; 0.1.13 is the last release that runs on Node 20), in the npm prefix mcp/npm;
#     tarballs cached in $CATENA_CACHE_DIR/npm
# Prints where each one is. The tests find them there by themselves (catena_test_support::mcp).
#
#   bash .ci/setup-mcp.sh
set -euo pipefail
PYTHON="${CATENA_PYTHON:-python3}"
CACHE="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
ROOT="$CACHE/mcp"
TIME_VERSION=2026.10.19
EVERYTHING_VERSION=2026.8.31
CONFORMANCE_VERSION=0.1.13
VENV="$ROOT/venv"
PREFIX="$ROOT/npm"
mkdir -p "$ROOT"

command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
    { echo "[setup-mcp] node and npm are needed (Debian: apt-get install nodejs npm)" >&2; exit 1; }

if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp-server-time') != '$TIME_VERSION')" 2>/dev/null; then
    echo "[setup-mcp] installing mcp-server-time $TIME_VERSION into $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --cache-dir "$CACHE/pip" \
        "mcp-server-time==$TIME_VERSION"
fi

npm_version() { # the installed version of an npm package in the prefix, or nothing
    node -e "try { console.log(require('$PREFIX/node_modules/$1/package.json').version) } catch (e) {}" 2>/dev/null
}
if [ "$(npm_version @modelcontextprotocol/server-everything)" != "$EVERYTHING_VERSION" ] ||
    [ "$(npm_version @modelcontextprotocol/conformance)" != "$CONFORMANCE_VERSION" ]; then
    echo "[setup-mcp] installing server-everything $EVERYTHING_VERSION and conformance $CONFORMANCE_VERSION into $PREFIX"
    mkdir -p "$PREFIX"
    [ -f "$PREFIX/package.json" ] || echo '{"name": "catena-mcp-peers", "private": true}' >"$PREFIX/package.json"
    npm install --prefix "$PREFIX" --cache "$CACHE/npm" --no-audit --no-fund --loglevel=error \
        "@modelcontextprotocol/server-everything@$EVERYTHING_VERSION" \
        "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION"
fi

for bin in "$VENV/bin/mcp-server-time" "$PREFIX/node_modules/.bin/mcp-server-everything" \
    "$PREFIX/node_modules/.bin/conformance"; do
    [ -x "$bin" ] || { echo "[setup-mcp] $bin is missing after the install" >&2; exit 1; }
done
echo "[setup-mcp] mcp-server-time $TIME_VERSION: $VENV/bin/mcp-server-time"
echo "[setup-mcp] server-everything $EVERYTHING_VERSION: $PREFIX/node_modules/.bin/mcp-server-everything"
echo "[setup-mcp] conformance $CONFORMANCE_VERSION: $PREFIX/node_modules/.bin/conformance"
