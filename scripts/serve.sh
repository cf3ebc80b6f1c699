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
#
# The first run installs PyTorch into .venv (about 5 GB, a minute or two)
# and builds the binary in the `serve` profile (up to 17 minutes on 2 cores,
# about 5 GB in target/); both show their progress. Later runs start in
# seconds. When the service is ready, one line says where the playground
# is and where the token is.
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
    TOKEN_FILE=.data/marketplace-token
fi
export CACHE_MODEL_DIR="${CACHE_MODEL_DIR:-$ROOT/.data/model_hub}"

if [ -n "${TOKEN_FILE:-}" ]; then token_hint="the token is in $TOKEN_FILE"; else token_hint='the token is $MARKETPLACE_TOKEN'; fi

BIN=target/serve/sound-creator
if [ ! -x "$BIN" ]; then
    echo "[serve] building sound-creator (first time: about 17 minutes on 2 cores, about 2 GB in target/)" >&2
fi
# Only what `serve` needs, in the profile that keeps run speed and halves
# the disk (Cargo.toml says how; bench/SERVE_BUILD.md has the figures).
cargo build --profile serve -p sound-creator --bin sound-creator >&2

# The binary's first stdout line says where it listens; it becomes the one
# ready line. exec keeps the binary in this process, so Ctrl-C and SIGTERM
# reach it directly.
announce() {
    while IFS= read -r line; do
        case "$line" in
            "sound-creator listening on http://"*)
                port="$(printf '%s\n' "$line" | sed -E 's|^sound-creator listening on http://[^ ]*:([0-9]+).*|\1|')"
                echo "[serve] ready: open http://127.0.0.1:$port/ (the playground; the API is under /v1); $token_hint"
                ;;
            *) printf '%s\n' "$line" ;;
        esac
    done
}
exec "$BIN" serve --data-dir "${DATA_DIR:-$ROOT/.data/sound-creator}" "${args[@]}" > >(announce)
