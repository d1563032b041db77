#!/usr/bin/env bash
# Executes the notebooks in notebooks/ headless with the evcxr Rust kernel (`nbconvert --execute`; a cell error,
# such as a failed assert!, fails the run), then checks what their cells printed with
# scripts/check_notebook_outputs.py. The executed notebooks are kept in target/notebooks/.
#
# Installs what it needs (idempotent): evcxr_jupyter (`cargo install --locked`, about 15 minutes the first time),
# nbconvert (pip), the evcxr kernel spec, the MiniLM embedding model (.ci/fetch-minilm.sh) and the SmolLM2 answer
# model (.ci/fetch-smollm2.sh; CATENA_LLM_MODEL picks another GGUF file). The rag notebook reads the rust-book
# corpus from CATENA_DOCS (default: ../shared/corpora/rust-book from the repository root).
#
# Build cache: evcxr compiles each cell in a crate directory of its own, by default a fresh temporary one, which
# would rebuild catena and every dependency (llama.cpp, candle, llguidance, ...) on each run. EVCXR_TMPDIR pins
# that directory to $CATENA_NOTEBOOK_BUILD_DIR (default $CATENA_CACHE_DIR/evcxr-build, about 2 GB once built), so
# cargo's target directory there survives between runs, and the notebooks, which have the same :dep lines, share
# one build of catena. The first run compiles everything (evcxr's default opt-level 2, for deps and cells alike);
# later runs recompile only what changed in catena, plus the cells. Runs on one build directory are serialised
# with a lock file. Known gap: evcxr compiles a dependency-free cell when its kernel starts, which prunes the build
# directory's Cargo.lock, so each run resolves the :dep lines afresh against crates.io (latest compatible versions,
# not the workspace's Cargo.lock); a new release of a dependency rebuilds it and what depends on it.
#
# Usage: scripts/run-notebooks.sh [notebook.ipynb ...]
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
export CATENA_CACHE_DIR="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
PYTHON="${PYTHON:-python3}"
started=$SECONDS

command -v evcxr_jupyter >/dev/null 2>&1 || cargo install evcxr_jupyter --locked
"$PYTHON" -c "import nbconvert, nbclient, jupyter_client" 2>/dev/null || "$PYTHON" -m pip install -q nbconvert nbclient
"$PYTHON" -c "import sys; from jupyter_client.kernelspec import find_kernel_specs; sys.exit('rust' not in find_kernel_specs())" \
    || evcxr_jupyter --install >/dev/null

CATENA_EMBED_MODEL="${CATENA_EMBED_MODEL:-$(bash .ci/fetch-minilm.sh)}"
CATENA_LLM_MODEL="${CATENA_LLM_MODEL:-$(bash .ci/fetch-smollm2.sh)}"
CATENA_DOCS="${CATENA_DOCS:-$(cd "$root/.." && pwd)/shared/corpora/rust-book}"
[ -f "$CATENA_LLM_MODEL" ] || { echo "[notebooks] CATENA_LLM_MODEL=$CATENA_LLM_MODEL is not a file" >&2; exit 1; }
[ -d "$CATENA_DOCS" ] || { echo "[notebooks] CATENA_DOCS=$CATENA_DOCS is not a folder (the rust-book corpus)" >&2; exit 1; }
export CATENA_EMBED_MODEL CATENA_LLM_MODEL CATENA_DOCS

EVCXR_TMPDIR="${CATENA_NOTEBOOK_BUILD_DIR:-$CATENA_CACHE_DIR/evcxr-build}"
export EVCXR_TMPDIR
mkdir -p "$EVCXR_TMPDIR"
exec 9>"$EVCXR_TMPDIR.lock"
flock 9
# evcxr links each cell against the toolchain's libstd .so through a relative rpath that misses it when the build
# directory shares a parent with the toolchain (both under $HOME): "dlopen failed". Name the directory outright.
LD_LIBRARY_PATH="$(rustc --print target-libdir)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH

notebooks=("$@")
[ ${#notebooks[@]} -gt 0 ] || notebooks=(notebooks/*.ipynb)
out="$root/target/notebooks"
mkdir -p "$out"
executed=()
echo "[notebooks] setup took $((SECONDS - started)) s; building in $EVCXR_TMPDIR"
for nb in "${notebooks[@]}"; do
    t=$SECONDS
    rm -f "$out/$(basename "$nb")"
    "$PYTHON" -m nbconvert --to notebook --execute "$nb" --output-dir "$out" \
        --ExecutePreprocessor.timeout=3600 --ExecutePreprocessor.kernel_name=rust
    executed+=("$out/$(basename "$nb")")
    echo "[notebooks] $nb ran in $((SECONDS - t)) s"
done
"$PYTHON" scripts/check_notebook_outputs.py "${executed[@]}"
echo "[notebooks] all ran and passed their checks in $((SECONDS - started)) s (executed notebooks in $out)"
