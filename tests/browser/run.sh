#!/usr/bin/env bash
# The playground's browser tests: real headless Chromium (Debian's
# `chromium`, driven by Playwright for Python) against `sound-creator serve`
# on the tiny MusicGen checkpoint. Installs what is missing, starts serve on
# a free port with a fresh data directory and a one-off token, runs
# tests/browser/test_*.py, leaves a screenshot of each state in
# target/browser-tests/, and stops serve.
#
#   bash tests/browser/run.sh            # builds target/debug/sound-creator if needed
#   SOUND_CREATOR=path/to/binary bash tests/browser/run.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
say() { echo "[browser] $*" >&2; }

if ! command -v python >/dev/null 2>&1 || ! python -c "import torch" >/dev/null 2>&1; then
    eval "$(bash scripts/setup.sh)"
fi
if [ ! -x /usr/bin/chromium ]; then
    say "installing Debian's chromium"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if ! python -c "import playwright, pytest" >/dev/null 2>&1; then
    # Only the Python driver: the browser is Debian's, so no
    # `playwright install` download.
    say "installing playwright and pytest into $(python -c 'import sys; print(sys.prefix)')"
    python -m pip install --progress-bar on "playwright>=1.40,<2" "pytest>=8"
fi

BIN="${SOUND_CREATOR:-target/debug/sound-creator}"
if [ -z "${SOUND_CREATOR:-}" ]; then
    say "building $BIN"
    cargo build -p sound-creator >&2
fi

WORK="$ROOT/target/browser-tests"
rm -rf "$WORK"
mkdir -p "$WORK/data"
TOKEN="browser-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

MARKETPLACE_TOKEN="$TOKEN" \
MUSIC_GEN_MODEL="$ROOT/tests/fixtures/tiny-musicgen" \
MODEL_DEVICE=cpu \
DEPLOYED_TYPES=music \
RUST_LOG="${RUST_LOG:-info}" \
    "$BIN" serve --port 0 --host 127.0.0.1 --data-dir "$WORK/data" \
    >"$WORK/serve.stdout" 2>"$WORK/serve.log" &
SERVE_PID=$!
trap 'kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true' EXIT

URL=""
for _ in $(seq 1 600); do
    URL="$(grep -o 'http://[0-9.:]*' "$WORK/serve.stdout" 2>/dev/null | head -n1 || true)"
    [ -n "$URL" ] && break
    kill -0 "$SERVE_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; say "serve exited"; exit 1; }
    sleep 0.2
done
[ -n "$URL" ] || { say "serve did not start"; exit 1; }
say "serve on $URL; screenshots go to $WORK"

PLAYGROUND_URL="$URL" PLAYGROUND_TOKEN="$TOKEN" PLAYGROUND_ARTEFACTS="$WORK" \
    python -m pytest -q -p no:cacheprovider tests/browser "$@"
say "screenshots: $(cd "$WORK" && ls ./*.png | tr '\n' ' ')"
