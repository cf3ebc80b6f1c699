#!/usr/bin/env bash
# Starts the real servers the AWS-mode tests run against, on loopback and
# free ports: moto (SQS, S3, DynamoDB), redis-server and a throwaway
# PostgreSQL 15 cluster. Installs whatever is missing, then writes an env
# file to source. Running it again (even after a crash) first tears down
# whatever the previous run left behind.
#
#   bash tests/env/up.sh && source .data/test-env/env.sh
#   bash tests/env/down.sh
set -euo pipefail

# shellcheck source=tests/env/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ -d "$STATE_DIR" ]; then
    log "a previous environment exists at $STATE_DIR; tearing it down first"
    bash "$REPO_ROOT/tests/env/down.sh"
fi

# --- install what is missing --------------------------------------------------
apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

command -v redis-server >/dev/null || { log "installing redis-server"; apt_install redis-server; }
[ -x "$PG_BIN/initdb" ] || { log "installing postgresql-15"; apt_install postgresql-15; }
if [ ! -x "$VENV/bin/moto_server" ]; then
    [ -x "$VENV/bin/python" ] || { log "creating $VENV"; python3 -m venv "$VENV"; }
    log "installing moto[server] into $VENV"
    "$VENV/bin/pip" install -q 'moto[server]'
fi

# --- start -------------------------------------------------------------------
mkdir -p "$STATE_DIR"
MOTO_PORT=$(free_port)
REDIS_PORT=$(free_port)
PG_PORT=$(free_port)
PG_DIR=$(mktemp -d /tmp/sound-creator-pg.XXXXXX)
echo "$PG_DIR" >"$STATE_DIR/pg.dir"

PG_USER="${POSTGRES_USER:-sound_creator}"
PG_PASSWORD="${POSTGRES_PASSWORD:-sound_creator_test}"
PG_DB="${POSTGRES_DB:-sound_creator}"

# Write the env file first, so down.sh can clean up even if a start fails.
cat >"$ENV_FILE" <<ENV
# Written by tests/env/up.sh; remove everything with tests/env/down.sh.
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
export AWS_REGION_NAME=us-east-1
export AWS_ACCESS_KEY=testing
export AWS_SECRET_KEY=testing
export REDIS_HOST=127.0.0.1
export REDIS_PORT=$REDIS_PORT
export REDIS_DB_NAME=0
export POSTGRES_HOST=127.0.0.1
export POSTGRES_PORT=$PG_PORT
export POSTGRES_USER=$PG_USER
export POSTGRES_PASSWORD=$PG_PASSWORD
export POSTGRES_DB=$PG_DB
export SC_TEST_ENV_FILE=$ENV_FILE
export SC_TEST_ENV_DIR=$STATE_DIR
export SC_TEST_ENV_SCRIPTS=$REPO_ROOT/tests/env
export SC_TEST_MOTO_PORT=$MOTO_PORT
export SC_TEST_PG_DIR=$PG_DIR
ENV

log "starting moto on 127.0.0.1:$MOTO_PORT"
moto_start "$MOTO_PORT"

log "starting redis on 127.0.0.1:$REDIS_PORT"
redis_start "$REDIS_PORT"

log "initialising postgres in $PG_DIR"
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PG_DIR"; fi
as_pg mkdir -p "$PG_DIR/sock"
pwfile="$PG_DIR/superuser.pw"
as_pg bash -c "umask 077; echo postgres >'$pwfile'"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$pwfile" -E UTF8 --no-sync >"$STATE_DIR/initdb.log" 2>&1
log "starting postgres on 127.0.0.1:$PG_PORT"
pg_start "$PG_DIR" "$PG_PORT"
as_pg "$PG_BIN/psql" -q -h "$PG_DIR/sock" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -v user="$PG_USER" -v password="$PG_PASSWORD" -v db="$PG_DB" <<'SQL' >/dev/null
CREATE ROLE :"user" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"user";
SQL

log "ready; environment written to $ENV_FILE"
echo "$ENV_FILE"
