#!/usr/bin/env bash
# Executes every notebook in notebooks/ headless with the evcxr Rust kernel and fails on any cell error.
#
# Installs what it needs (idempotent): evcxr_jupyter (`cargo install`, about 15 minutes the first time), Jupyter
# and nbconvert (pip), the kernel spec; the notebooks run on the tiny GGUF of scripts/tiny_gguf.py unless
# CATENA_LLM_MODEL names another model. evcxr compiles catena inside the kernel, so a run takes several minutes.
# Not part of scripts/test.sh (it would double the CI time); run it when notebooks or the public API change.
#
# Usage: scripts/run-notebooks.sh [notebook.ipynb ...]
set -euo pipefail
cd "$(dirname "$0")/.."
export CATENA_CACHE_DIR="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
PYTHON="${PYTHON:-python3}"

command -v evcxr_jupyter >/dev/null 2>&1 || cargo install evcxr_jupyter --locked
"$PYTHON" -c "import nbconvert, nbclient, jupyter_client" 2>/dev/null || "$PYTHON" -m pip install -q jupyter nbconvert nbclient
jupyter kernelspec list 2>/dev/null | grep -q '^ *rust ' || evcxr_jupyter --install >/dev/null

if [ -z "${CATENA_LLM_MODEL:-}" ]; then
    CATENA_LLM_MODEL="$CATENA_CACHE_DIR/notebook-tiny-seed7.gguf"
    if [ ! -f "$CATENA_LLM_MODEL" ]; then
        bash .ci/setup-llama-server.sh >/dev/null   # installs gguf and tokenizers, which the script needs
        "$PYTHON" scripts/tiny_gguf.py "$CATENA_LLM_MODEL" --seed 7
    fi
fi
if [ -z "${CATENA_LLM_MODEL:-}" ] || [ ! -f "$CATENA_LLM_MODEL" ]; then
    echo "[notebooks] set CATENA_LLM_MODEL to a GGUF file" >&2
    exit 1
fi
export CATENA_LLM_MODEL

notebooks=("$@")
[ ${#notebooks[@]} -gt 0 ] || notebooks=(notebooks/*.ipynb)
out="$(mktemp -d)"
for nb in "${notebooks[@]}"; do
    echo "[notebooks] $nb"
    jupyter nbconvert --to notebook --execute "$nb" --output-dir "$out" --ExecutePreprocessor.timeout=3600
done
echo "[notebooks] all ran without errors (outputs in $out)"
