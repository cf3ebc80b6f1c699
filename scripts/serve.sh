#!/usr/bin/env bash
# Sets up and runs the whole service in one process (API + worker +
# completion) on the embedded backends: SQLite and local files under .data/.
#
#   bash scripts/serve.sh            # MusicGen small from the hub (needs network once)
#   bash scripts/serve.sh --tiny     # the tiny test checkpoint: no download, noise-like audio
#   bash scripts/serve.sh --port 9000
#
# The client token is MARKETPLACE_TOKEN; when unset, one is generated once
# into .data/marketplace-token (readable only by you).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
eval "$(bash scripts/setup.sh)"

args=()
for arg in "$@"; do
    if [ "$arg" = "--tiny" ]; then
        export MUSIC_GEN_MODEL="$ROOT/tests/fixtures/tiny-musicgen"
        export AUDIO_GEN_MODEL="$ROOT/tests/fixtures/tiny-audiogen"
    else
        args+=("$arg")
    fi
done

if [ -z "${MARKETPLACE_TOKEN:-}" ]; then
    mkdir -p .data
    if [ ! -s .data/marketplace-token ]; then
        (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > .data/marketplace-token)
        echo "[serve] generated a client token in .data/marketplace-token" >&2
    fi
    MARKETPLACE_TOKEN="$(cat .data/marketplace-token)"
    export MARKETPLACE_TOKEN
fi
export CACHE_MODEL_DIR="${CACHE_MODEL_DIR:-$ROOT/.data/model_hub}"

cargo build --release -p sound-creator >&2
exec target/release/sound-creator serve --data-dir "${DATA_DIR:-$ROOT/.data/sound-creator}" "${args[@]}"
