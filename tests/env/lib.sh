# shellcheck shell=bash
# Shared by up.sh, down.sh and stop-start.sh: where the throwaway servers of
# the local test environment keep their state, and how each one is started
# and stopped. Everything listens on 127.0.0.1 only; nothing here may touch a
# server it did not start (PIDs and data dirs come from our own state dir).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE_DIR="${SC_TEST_ENV_DIR:-$REPO_ROOT/.data/test-env}"
ENV_FILE="$STATE_DIR/env.sh"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
VENV="$REPO_ROOT/.venv"

log() { printf '[test-env] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Postgres refuses to run as root, so a root caller runs it as `postgres`.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_until SECONDS WHAT CMD...: polls CMD every 0.2 s.
wait_until() {
    local limit=$1 what=$2; shift 2
    local tries=$((limit * 5))
    while ! "$@" >/dev/null 2>&1; do
        tries=$((tries - 1))
        if [ "$tries" -le 0 ]; then log "$what did not come up within ${limit}s"; return 1; fi
        sleep 0.2
    done
}

wait_port_closed() {
    local tries=50
    while port_open "$1"; do
        tries=$((tries - 1)); [ "$tries" -le 0 ] && return 1
        sleep 0.2
    done
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# --- moto (SQS, S3, DynamoDB) ----------------------------------------------

moto_start() {
    local port=$1
    setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >>"$STATE_DIR/moto.log" 2>&1 < /dev/null &
    echo $! >"$STATE_DIR/moto.pid"
    wait_until 30 "moto on port $port" python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)"
}

moto_stop() {
    local port=$1 pid
    pid=$(cat "$STATE_DIR/moto.pid" 2>/dev/null || true)
    if pid_alive "$pid"; then
        kill -CONT "$pid" 2>/dev/null || true  # a paused server cannot act on SIGTERM
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do pid_alive "$pid" || break; sleep 0.1; done
        pid_alive "$pid" && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE_DIR/moto.pid"
    wait_port_closed "$port" || true
}

# --- redis -------------------------------------------------------------------

redis_start() {
    local port=$1
    mkdir -p "$STATE_DIR/redis"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --dir "$STATE_DIR/redis" --pidfile "$STATE_DIR/redis.pid" --logfile "$STATE_DIR/redis.log" >/dev/null
    wait_until 15 "redis on port $port" redis_ping "$port"
}

redis_ping() {
    if command -v redis-cli >/dev/null; then
        [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = "PONG" ]
    else
        port_open "$1"
    fi
}

redis_stop() {
    local port=$1 pid
    pid=$(cat "$STATE_DIR/redis.pid" 2>/dev/null || true)
    if pid_alive "$pid"; then
        kill -CONT "$pid" 2>/dev/null || true  # a paused server cannot act on SIGTERM
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do pid_alive "$pid" || break; sleep 0.1; done
        pid_alive "$pid" && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE_DIR/redis.pid"
    wait_port_closed "$port" || true
}

# --- postgres ----------------------------------------------------------------

pg_start() {
    local dir=$1 port=$2
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/sock" start >/dev/null
    wait_until 30 "postgres on port $port" "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$port"
}

pg_stop() {
    local dir=$1 port=$2
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    fi
    wait_port_closed "$port" || true
}

load_env_file() {
    if [ ! -f "$ENV_FILE" ]; then
        log "no test environment at $ENV_FILE; run tests/env/up.sh first"
        return 1
    fi
    # shellcheck disable=SC1090
    source "$ENV_FILE"
}
