#!/usr/bin/env bash
# Stops every server tests/env/up.sh started and removes their temp dirs.
# Safe to run twice, and after a crashed up.sh.
set -euo pipefail

# shellcheck source=tests/env/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ ! -d "$STATE_DIR" ]; then
    log "nothing to tear down at $STATE_DIR"
    exit 0
fi

MOTO_PORT=0 REDIS_PORT=0 POSTGRES_PORT=0
if [ -f "$ENV_FILE" ]; then
    # shellcheck disable=SC1090
    source "$ENV_FILE"
    MOTO_PORT=${SC_TEST_MOTO_PORT:-0}
fi

moto_stop "$MOTO_PORT"
redis_stop "$REDIS_PORT"
PG_DIR=$(cat "$STATE_DIR/pg.dir" 2>/dev/null || true)
if [ -n "$PG_DIR" ] && [ -d "$PG_DIR" ]; then
    pg_stop "$PG_DIR" "$POSTGRES_PORT"
    case "$PG_DIR" in
        /tmp/sound-creator-pg.*) rm -rf "$PG_DIR" ;;
    esac
fi
rm -rf "$STATE_DIR"
log "test environment removed"
