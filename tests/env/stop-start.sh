#!/usr/bin/env bash
# Takes one backend of the test environment down, or brings it back on the
# same port, so a test can check that adapters fail fast while it is down
# and recover by themselves once it is back.
#
#   bash tests/env/stop-start.sh <redis|postgres|moto> <stop|start>
#   bash tests/env/stop-start.sh <redis|moto> <pause|resume>
#
# `pause` freezes the server (SIGSTOP): connections are accepted by the
# kernel but never answered, which is how a hung backend looks; `resume`
# thaws it.
#
# moto keeps its state in memory: after a moto restart the queues, bucket and
# table are gone and must be provisioned again. Redis restarts empty too
# (it runs without persistence); Postgres keeps its data.
set -euo pipefail

# shellcheck source=tests/env/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { echo "usage: $0 <redis|postgres|moto> <stop|start> | <redis|moto> <pause|resume>" >&2; exit 2; }
[ $# -eq 2 ] || usage
load_env_file

case "$1:$2" in
    redis:stop) redis_stop "$REDIS_PORT" ;;
    redis:start) redis_start "$REDIS_PORT" ;;
    postgres:stop) pg_stop "$SC_TEST_PG_DIR" "$POSTGRES_PORT" ;;
    postgres:start) pg_start "$SC_TEST_PG_DIR" "$POSTGRES_PORT" ;;
    moto:stop) moto_stop "$SC_TEST_MOTO_PORT" ;;
    moto:start) moto_start "$SC_TEST_MOTO_PORT" ;;
    redis:pause) kill -STOP "$(cat "$STATE_DIR/redis.pid")" ;;
    redis:resume) kill -CONT "$(cat "$STATE_DIR/redis.pid")" ;;
    moto:pause) kill -STOP "$(cat "$STATE_DIR/moto.pid")" ;;
    moto:resume) kill -CONT "$(cat "$STATE_DIR/moto.pid")" ;;
    *) usage ;;
esac
