#!/usr/bin/env bash
# Pipeline benchmark: sound-creator `serve` (embedded: SQLite + local files)
# against Celery on a Redis broker + result backend running a no-op task, on
# this machine, loopback only. Prints one markdown table. See bench/PIPELINE.md.
#
#   bench/pipeline_bench.sh                 # N=500 tasks, C=16 clients, 5 ms polling
#   N=1000 C=32 bench/pipeline_bench.sh
#   SKIP_BUILD=1 ONLY=ours bench/pipeline_bench.sh
#
# Settings (environment): N, C, POLL_MS, MODE (poll | generate: how our client
# learns of completion), BATCHES ("1 8": WORKER_MAX_BATCH values),
# GENERATORS ("tiny noop": the tiny MusicGen fixture, and/or the no-op
# generator of cli/benches/noop_pipeline_server.rs, for the pipeline alone),
# BACKEND (embedded | aws: SQS, S3 and DynamoDB on moto, redis-server and
# PostgreSQL, started by tests/env/up.sh and stopped at the end),
# CELERY_CONCURRENCY ("1 2"), ONLY (ours | celery), SKIP_BUILD=1,
# SOUND_CREATOR_BIN (use this binary, no build), RESULTS_JSONL (also keep
# the raw JSON lines there).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
VENV="$BENCH/.venv-celery"
N="${N:-500}"
C="${C:-16}"
POLL_MS="${POLL_MS:-5}"
MODE="${MODE:-poll}"
BATCHES="${BATCHES:-1 8}"
GENERATORS="${GENERATORS:-tiny noop}"
BACKEND="${BACKEND:-embedded}"
CELERY_CONCURRENCY="${CELERY_CONCURRENCY:-1 2}"
ONLY="${ONLY:-}"
RUN_LIMIT_S="${RUN_LIMIT_S:-240}" # per measured run

WORK="$(mktemp -d -t pipeline-bench.XXXXXX)"
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]:-}"; do
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
  if [[ "$BACKEND" == "aws" ]]; then bash "$ROOT/tests/env/down.sh" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[pipeline-bench] $*" >&2; }

stop() { # stop one process we started, by pid
  local pid="$1"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------- setup
if ! command -v redis-server >/dev/null; then
  log "installing redis-server (apt)"
  apt-get install -y redis-server >&2 || { apt-get update >&2 && apt-get install -y redis-server >&2; }
fi
if ! "$VENV/bin/python" -c 'import celery, redis, aiohttp, packaging' 2>/dev/null; then
  log "creating $VENV (celery, redis, aiohttp)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q celery redis aiohttp packaging >&2
fi
PY="$VENV/bin/python"

export LIBTORCH_USE_PYTORCH=1
export PATH="$ROOT/.venv/bin:$PATH"
export LD_LIBRARY_PATH="$ROOT/.venv/lib/python3.11/site-packages/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
BIN="${SOUND_CREATOR_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sound-creator}"
if [[ "$ONLY" != "celery" ]]; then
  if [[ "${SKIP_BUILD:-0}" != "1" && -z "${SOUND_CREATOR_BIN:-}" ]]; then
    log "building sound-creator (release; waits if another build holds the lock)"
    (cd "$ROOT" && cargo build --release -p sound-creator >&2)
  fi
  [[ -x "$BIN" ]] || { log "missing $BIN"; exit 1; }
  if [[ " $GENERATORS " == *" noop "* ]]; then
    log "building the no-op generator's server (cargo bench --no-run)"
    NOOP_BIN="$(cd "$ROOT" && cargo bench --no-run -p sound-creator --bench noop_pipeline_server \
      --message-format=json-render-diagnostics | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "noop_pipeline_server":
        print(m["executable"])')"
    [[ -x "$NOOP_BIN" ]] || { log "could not build the no-op generator's server"; exit 1; }
  fi
fi

if [[ "$BACKEND" == "aws" && "$ONLY" != "celery" ]]; then
  log "starting moto, redis-server and PostgreSQL (tests/env/up.sh)"
  bash "$ROOT/tests/env/up.sh" >&2
  # shellcheck disable=SC1091
  source "$ROOT/.data/test-env/env.sh"
fi

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"

# ---------------------------------------------------------------- ours
run_ours() {
  local batch="$1" generator="$2" dir="$WORK/serve-$1-$2" pid url="" command label
  mkdir -p "$dir"
  if [[ "$generator" == "noop" ]]; then
    command=("$NOOP_BIN" --backend "$BACKEND")
    label="$BACKEND, batch $batch, no-op generator"
  else
    command=("$BIN" serve --backend "$BACKEND")
    label="$BACKEND, batch $batch"
  fi
  if [[ "$BACKEND" == "aws" ]]; then
    # Fresh queues, bucket and table per run, so runs do not see each other.
    local suffix="bench-$batch-$generator-$$"
    export SQS_QUEUE_PREFIX="$suffix-" S3_BUCKET="$suffix" DYNAMODB_TABLE="$suffix"
    "$BIN" provision >&2
  fi
  MARKETPLACE_TOKEN=bench-token MUSIC_GEN_MODEL="$ROOT/tests/fixtures/tiny-musicgen" MODEL_DEVICE=cpu \
    WORKER_MAX_BATCH="$batch" RUST_LOG="${RUST_LOG:-warn}" \
    "${command[@]}" --port 0 --host 127.0.0.1 --data-dir "$dir/data" >"$dir/stdout" 2>"$dir/stderr" &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 600); do
    url="$(head -n1 "$dir/stdout" 2>/dev/null | grep -o 'http://[0-9.:]*' || true)"
    [[ -n "$url" ]] && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/stderr" >&2; log "serve exited"; exit 1; }
    sleep 0.1
  done
  [[ -n "$url" ]] || { log "serve did not start in 60 s"; exit 1; }
  log "sound-creator $label on $url ($MODE)"
  timeout "$RUN_LIMIT_S" "$PY" "$BENCH/pipeline/load.py" ours --url "$url" --token bench-token \
    --mode "$MODE" -n "$N" -c "$C" --poll-ms "$POLL_MS" --config "$label" --pids "$pid" >>"$RESULTS"
  stop "$pid"
}

# ---------------------------------------------------------------- Celery
run_celery() {
  local conc="$1" durable="$2" work_ms="${3:-0}" dir="$WORK/celery-$1-$2-${3:-0}" port rpid wpid label redis_args
  mkdir -p "$dir"
  port="$(free_port)"
  if [[ "$durable" == "1" ]]; then
    redis_args=(--appendonly yes --appendfsync everysec)
    label="concurrency $conc, acks_late + AOF everysec"
  else
    redis_args=() # redis-server's defaults: RDB snapshots, no AOF
    label="concurrency $conc, defaults"
  fi
  if [[ "$work_ms" != "0" ]]; then
    label="$label, $work_ms ms CPU work per task (= our generation)"
  fi
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" "${redis_args[@]}" >"$dir/redis.log" 2>&1 &
  rpid=$!
  PIDS+=("$rpid")
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  export BENCH_REDIS_URL="redis://127.0.0.1:$port/0" BENCH_ACKS_LATE="$durable"
  (cd "$BENCH/pipeline" && exec "$VENV/bin/celery" -A celery_app worker --concurrency "$conc" -l WARNING) >"$dir/worker.log" 2>&1 &
  wpid=$!
  PIDS+=("$wpid")
  log "celery $label on redis :$port"
  # load.py's warm-up tasks wait for the worker to be up.
  (cd "$BENCH/pipeline" && timeout "$RUN_LIMIT_S" "$PY" load.py celery -n "$N" -c "$C" --poll-ms "$POLL_MS" \
    --work-ms "$work_ms" --config "$label" --pids "$wpid,$rpid") >>"$RESULTS"
  stop "$wpid"
  stop "$rpid"
}

if [[ "$ONLY" != "celery" ]]; then
  for g in $GENERATORS; do
    for b in $BATCHES; do run_ours "$b" "$g"; done
  done
fi
if [[ "$ONLY" != "ours" ]]; then
  for c in $CELERY_CONCURRENCY; do run_celery "$c" 0; done
  for c in $CELERY_CONCURRENCY; do run_celery "$c" 1; done
  # The same no-op plus the CPU time our batch-1 generation took (its own
  # p50), so both sides do the same per-task work.
  own="$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["config"] in ("embedded, batch 1", "aws, batch 1"): print(round(r["own_p50_ms"]))' "$RESULTS")"
  if [[ -n "$own" && "$own" != "0" ]]; then run_celery 1 1 "$own"; fi
fi

[[ -n "${RESULTS_JSONL:-}" ]] && cp "$RESULTS" "$RESULTS_JSONL"

# ---------------------------------------------------------------- table
"$PY" - "$RESULTS" "$N" "$C" "$POLL_MS" "$MODE" <<'EOF'
import json, sys
path, n, c, poll, mode = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
def durability(r):
    if r["system"] == "sound-creator" and r["config"].startswith("aws"):
        return ("SQS + DynamoDB + S3 (moto, in memory here), Postgres stats; "
                "at-least-once (message deleted after the result is stored)")
    if r["system"] == "sound-creator":
        return ("SQLite WAL (synchronous=NORMAL): survives kill -9 of the service; "
                "at-least-once (message deleted after the result is stored)")
    if "acks_late" in r["config"]:
        return "at-least-once (ack after run); Redis AOF: survives Redis restart, power loss drops <= 1 s"
    return "at-most-once (ack before run: a worker crash loses the task); Redis RDB: a Redis crash loses minutes"
print(f"N={n} tasks, {c} concurrent clients, completion polled every {poll} ms "
      f"(sound-creator: {'POST /v1/call + GET /v1/result' if mode == 'poll' else 'POST /v1/generate'})\n")
def cpu(r, key):
    return f"{r[key]:.2f}" if key in r else "-"
print("| system | config | tasks/s | added p50 ms | added p99 ms | system CPU ms/task | client CPU ms/task | durability |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    bad = f" ({r['errors']} errors)" if r.get("errors") else ""
    print(f"| {r['system']} | {r['config']}{bad} | {r['tasks_per_s']:.0f} | {r['added_p50_ms']:.1f} | "
          f"{r['added_p99_ms']:.1f} | {cpu(r, 'system_cpu_ms_per_task')} | {cpu(r, 'client_cpu_ms_per_task')} | "
          f"{durability(r)} |")
print()
print("client-observed submit->seen-done p50/p99 ms (includes the polling interval); own time p50 ms:")
for r in rows:
    extra = ""
    if "queued_p50_ms" in r:
        extra = (f"; waiting in the queue p50 {r['queued_p50_ms']:.1f}, pipeline after start "
                 f"(minus generation) p50/p99 {r['after_start_p50_ms']:.1f} / {r['after_start_p99_ms']:.1f}")
    print(f"- {r['system']}, {r['config']}: {r['client_p50_ms']:.1f} / {r['client_p99_ms']:.1f}; own {r['own_p50_ms']:.2f}{extra}")
EOF
