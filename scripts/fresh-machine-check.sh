#!/usr/bin/env bash
# Runs the README's first command (the main job) the way a new user would: in a fresh clone of this repository,
# with an empty cargo target directory and an empty model cache, and reports its wall time.
#
#   scripts/fresh-machine-check.sh [--purge-apt] [--second]
#
# --purge-apt   first removes the Debian packages the command must install (cmake, clang, libclang-dev), so the
#               check also covers them (root only; they are installed again by the command itself).
# --second      afterwards runs the README's second command (the tests) in the same clone.
# --keep        keeps the working directory (several GB of build output) instead of deleting it.
# Cargo's home (registry, downloaded crates) and pip's cache are new and empty too; only the Rust toolchain
# (rustup) and Python stay, as on a fresh machine of this kind.
# The clone is made from this checkout's HEAD (commit first) into a new temporary directory with `shared`
# linked beside it, as CI lays it out. Fails unless the command exits 0 and prints an answer with sources.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
purge=0 second=0 keep=0
for arg in "$@"; do
    case "$arg" in
        --purge-apt) purge=1 ;;
        --second) second=1 ;;
        --keep) keep=1 ;;
        *) echo "unknown argument $arg" >&2; exit 2 ;;
    esac
done
shared="$(cd "$repo/.." && pwd)/shared"
[ -d "$shared" ] || { echo "no shared/ beside the repository at $shared" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/catena-fresh.XXXXXX")"
echo "[fresh] working in $work"
[ "$keep" = 1 ] || trap 'rm -rf "$work"' EXIT
git clone --quiet "$repo" "$work/catena"
ln -s "$shared" "$work/shared"
export CARGO_TARGET_DIR="$work/target" CATENA_CACHE_DIR="$work/cache" CARGO_HOME="$work/cargo-home" \
    PIP_CACHE_DIR="$work/pip-cache"
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
unset CATENA_LLM_MODEL CATENA_EMBED_MODEL OPENAI_BASE_URL OPENAI_API_KEY CATENA_MODEL
if [ "$purge" = 1 ]; then
    [ "$(id -u)" = 0 ] || { echo "[fresh] --purge-apt needs root" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq cmake clang libclang-dev >/dev/null
    apt-get autoremove -y -qq >/dev/null
fi

# The README's first command: the first ```sh block after the heading "## The two commands".
extract() {
    awk -v want="$1" '
        /^## The two commands/ { section = 1; next }
        section && /^## / { exit }
        section && /^```sh/ { block++; inblock = 1; next }
        inblock && /^```/ { inblock = 0; next }
        inblock && block == want { print }
    ' "$work/catena/README.md"
}
first="$(extract 1)"
[ -n "$first" ] || { echo "[fresh] found no first command in README.md" >&2; exit 1; }
echo "[fresh] first command: $first"
cd "$work/catena"
start=$(date +%s)
bash -c "$first" > "$work/first.out" 2> "$work/first.err" || {
    tail -n 40 "$work/first.err" >&2
    echo "[fresh] the first command failed after $(( $(date +%s) - start )) s" >&2
    exit 1
}
took=$(( $(date +%s) - start ))
cat "$work/first.out"
grep -q "answering with the offline default model" "$work/first.err" || {
    echo "[fresh] the main job did not answer with the default model:" >&2
    tail -n 20 "$work/first.err" >&2
    exit 1
}
grep -q '^Sources:' "$work/first.out" || { echo "[fresh] no sources printed" >&2; exit 1; }
[ "$(sed -n '/^Sources:/q;p' "$work/first.out" | tr -d '[:space:]' | wc -c)" -gt 20 ] || {
    echo "[fresh] no answer text before the sources" >&2
    exit 1
}
echo "[fresh] first command: OK in $took s ($(( (took + 30) / 60 )) min)"

if [ "$second" = 1 ]; then
    second_cmd="$(extract 2)"
    echo "[fresh] second command: $second_cmd"
    start=$(date +%s)
    bash -c "$second_cmd"
    echo "[fresh] second command: OK in $(( $(date +%s) - start )) s"
fi
