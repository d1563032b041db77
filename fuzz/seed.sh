#!/usr/bin/env bash
# Writes the seed corpus of the `streams` target: each format's sample stream, at chunk sizes 1, 7 and 64.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fuzz/corpus/streams
cargo run -q -p catena-providers --features fuzzing --example fuzz_seed -- fuzz/corpus/streams
