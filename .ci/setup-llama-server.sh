#!/usr/bin/env bash
# Installs the real llama.cpp peer used by catena's end-to-end tests:
#   - llama-cpp-python with its OpenAI-compatible server (`python3 -m llama_cpp.server`),
#   - gguf, tokenizers and numpy, which scripts/tiny_gguf.py needs to write the tiny test model.
#
# Idempotent and cache-friendly: the llama-cpp-python wheel (a ~11 minute C++ build on 2 cores) is built once
# into ${CATENA_CACHE_DIR:-$HOME/.cache/catena}/wheels and reused; a second run that finds everything installed
# only checks and prints what is there. Concurrent runs serialise on a lock file so the wheel is built once.
#
# Usage: bash .ci/setup-llama-server.sh
# Environment:
#   CATENA_CACHE_DIR            cache root (default: $HOME/.cache/catena)
#   LLAMA_CPP_PYTHON_VERSION    version to install (default below)
#   PYTHON                      interpreter (default: python3)
set -euo pipefail

PYTHON="${PYTHON:-python3}"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE_DIR="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
WHEEL_DIR="$CACHE_DIR/wheels"
BUILD_LOG="$CACHE_DIR/llama-wheel.log"
LOCK="$CACHE_DIR/llama-wheel.lock"
mkdir -p "$WHEEL_DIR"

say() { echo "[setup-llama-server] $*"; }

# Python packages the tiny model generator needs.
if "$PYTHON" -c 'import gguf, tokenizers, numpy' 2>/dev/null; then
    say "gguf, tokenizers, numpy: already installed"
else
    say "installing gguf, tokenizers, numpy"
    "$PYTHON" -m pip install --quiet gguf tokenizers numpy
fi

installed_version() {
    "$PYTHON" -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null || true
}

server_deps_ok() {
    "$PYTHON" -c 'import uvicorn, fastapi, sse_starlette, starlette_context, pydantic_settings' 2>/dev/null
}

if [[ "$(installed_version)" == "$VERSION" ]] && server_deps_ok; then
    say "llama-cpp-python $VERSION with server extras: already installed"
    exit 0
fi

find_wheel() {
    compgen -G "$WHEEL_DIR/llama_cpp_python-$VERSION-*.whl" | head -n 1 || true
}

# Build the wheel once, under a lock, unless the cache already has it.
exec 9>"$LOCK"
say "waiting for the wheel lock $LOCK (another run may be building)"
flock 9
wheel="$(find_wheel)"
if [[ -z "$wheel" ]]; then
    say "no cached wheel for llama-cpp-python $VERSION in $WHEEL_DIR: building it (about 11 minutes; log: $BUILD_LOG)"
    start=$(date +%s)
    if ! "$PYTHON" -m pip wheel --no-deps "llama-cpp-python==$VERSION" -w "$WHEEL_DIR" >"$BUILD_LOG" 2>&1; then
        tail -n 40 "$BUILD_LOG" >&2
        say "building the llama-cpp-python wheel failed (needs cmake and a C++ compiler); full log: $BUILD_LOG" >&2
        exit 1
    fi
    say "built in $(($(date +%s) - start)) s"
    wheel="$(find_wheel)"
    if [[ -z "$wheel" ]]; then
        say "pip reported success but no llama_cpp_python-$VERSION wheel is in $WHEEL_DIR" >&2
        exit 1
    fi
else
    say "using cached wheel $wheel"
fi
flock -u 9

say "installing $wheel"
"$PYTHON" -m pip install --quiet --no-deps --force-reinstall "$wheel"
say "installing llama-cpp-python[server]==$VERSION dependencies and extras"
"$PYTHON" -m pip install --quiet --find-links "$WHEEL_DIR" "llama-cpp-python[server]==$VERSION"

got="$(installed_version)"
if [[ "$got" != "$VERSION" ]] || ! server_deps_ok; then
    say "installation check failed: llama_cpp version '$got', server deps importable: $(server_deps_ok && echo yes || echo no)" >&2
    exit 1
fi
say "llama-cpp-python $got with server extras installed"
