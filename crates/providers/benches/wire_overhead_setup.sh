#!/usr/bin/env bash
# Installs the official Python SDKs that benches/wire_overhead.rs measures against (openai, anthropic,
# google-genai) in their own virtualenv, ${CATENA_CACHE_DIR:-$HOME/.cache/catena}/bench-sdk/venv (idempotent).
set -euo pipefail
CACHE="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
VENV="$CACHE/bench-sdk/venv"
if ! "$VENV/bin/python" -c "import openai, anthropic, google.genai" 2>/dev/null; then
    "${CATENA_PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --cache-dir "$CACHE/pip" openai anthropic google-genai
fi
"$VENV/bin/python" -c "import openai, anthropic; from google import genai; print('openai', openai.__version__, 'anthropic', anthropic.__version__, 'google-genai', getattr(genai, '__version__', '?'))"
