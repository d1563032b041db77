#!/usr/bin/env bash
# Installs what the studio's browser test (crates/studio/tests/browser.rs) drives the studio with (idempotent,
# quiet, offline once installed):
#   - Debian's `chromium` (apt), when /usr/bin/chromium is missing; `apt-get update` runs first only when the
#     package lists are missing or the install fails without it
#   - npm playwright-core (pinned; 1.65.2 runs on Node 20), without any browser download
#     (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1: the test launches /usr/bin/chromium), into
#     ${CATENA_CACHE_DIR:-$HOME/.cache/catena}/browser/node_modules; tarballs cached in $CATENA_CACHE_DIR/npm
# Prints the Chromium version and where playwright-core is, with the time the install took.
#
#   bash .ci/setup-browser.sh
set -euo pipefail
CACHE="${CATENA_CACHE_DIR:-$HOME/.cache/catena}"
PREFIX="$CACHE/browser"
PLAYWRIGHT_VERSION=1.65.2
CHROMIUM=/usr/bin/chromium
start=$SECONDS
say() { echo "[setup-browser] $*"; }

command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
    { say "node and npm are needed (Debian: apt-get install nodejs npm)" >&2; exit 1; }

if [ ! -x "$CHROMIUM" ]; then
    say "installing chromium (apt)"
    export DEBIAN_FRONTEND=noninteractive
    sudo_cmd=()
    [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
    apt_install() { "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
    if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null || ! apt_install 2>/dev/null; then
        "${sudo_cmd[@]}" apt-get update -qq >/dev/null
        apt_install
    fi
    [ -x "$CHROMIUM" ] || { say "apt installed chromium but $CHROMIUM is missing" >&2; exit 1; }
fi

installed="$(node -e "try { console.log(require('$PREFIX/node_modules/playwright-core/package.json').version) } catch (e) {}" 2>/dev/null)"
if [ "$installed" != "$PLAYWRIGHT_VERSION" ]; then
    say "installing playwright-core $PLAYWRIGHT_VERSION into $PREFIX"
    mkdir -p "$PREFIX"
    [ -f "$PREFIX/package.json" ] || echo '{"name": "catena-studio-browser-test", "private": true}' >"$PREFIX/package.json"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$PREFIX" --cache "$CACHE/npm" --no-audit --no-fund \
        --loglevel=error --save-exact "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null
    [ -f "$PREFIX/node_modules/playwright-core/package.json" ] ||
        { say "npm installed playwright-core but $PREFIX/node_modules/playwright-core is missing" >&2; exit 1; }
fi

say "$("$CHROMIUM" --version 2>/dev/null | head -n1) ($CHROMIUM)"
say "playwright-core $PLAYWRIGHT_VERSION: $PREFIX/node_modules ($((SECONDS - start)) s)"
