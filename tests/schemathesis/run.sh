#!/usr/bin/env bash
# Schema-driven fuzzing of the HTTP API: schemathesis (PyPI) against the
# real `sound-creator serve` on the tiny MusicGen checkpoint, driven by the
# OpenAPI document the server itself serves. Every check is on; the run is
# bounded by examples per operation (SCHEMATHESIS_EXAMPLES, default 25), not
# by time. Two client keys (tests/schemathesis/auth.json, a Web Fuzzing
# Commons auth file) give the authorization checks a second identity: one
# key must never read another's tasks.
#
# Fails on any server error, schema violation or other check failure, and
# prints the counts either way.
#
#   bash tests/schemathesis/run.sh          # needs target/debug/sound-creator
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-25}"
BIN="${SOUND_CREATOR_BIN:-target/debug/sound-creator}"
command -v schemathesis >/dev/null || pip install -q "schemathesis==4.32.5"
[ -x "$BIN" ] || cargo build -q -p sound-creator

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# The two client keys of auth.json. No callback hosts are allowed and no
# default callback is set, so the document (derived from the same settings)
# offers no callback_url; one-second clips keep the tiny model quick.
env -u MARKETPLACE_CALLBACK -u CALLBACK_ALLOWED_HOSTS -u DEPLOYED_TYPES \
    MARKETPLACE_TOKEN=schemathesis-marketplace-token \
    API_KEYS=acme:schemathesis-acme-token \
    MUSIC_GEN_MODEL="$ROOT/tests/fixtures/tiny-musicgen" \
    MODEL_DEVICE=cpu MAX_DURATION=1 RATE_LIMIT_PER_MINUTE=0 MAX_QUEUED_JOBS=0 \
    RUST_LOG=warn NO_COLOR=1 \
    "$BIN" serve --port 0 --host 127.0.0.1 --data-dir "$WORK/data" \
    >"$WORK/stdout" 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 1 600); do
    grep -q "listening on" "$WORK/stdout" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; echo "serve exited" >&2; exit 1; }
    sleep 0.1
done
BASE="$(grep -o 'http://[0-9.:]*' "$WORK/stdout" | head -1)"
[ -n "$BASE" ] || { echo "serve never said where it listens" >&2; exit 1; }

# The contract answers a declared upload size over MAX_UPLOAD_BYTES (the
# document's `maximum`) with 413 upload_too_large, not 400.
cat >"$WORK/schemathesis.toml" <<TOML
[auth.wfc]
path = "$ROOT/tests/schemathesis/auth.json"
peers = ["marketplace", "acme"]

[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]

# A schema cannot say that \`from\` must not be after \`to\`; the contract's
# answer to that is 400 invalid_query.
[[operations]]
include-name = "GET /v1/stats"
checks.positive_data_acceptance.expected-statuses = [200, 400, 401, 403, 404, 429]
TOML

set +e
(cd "$WORK" && schemathesis --config-file "$WORK/schemathesis.toml" run "$BASE/v1/openapi.json" \
    --checks all --max-examples "$EXAMPLES" --seed 1 --workers 2 \
    --request-timeout 90 --suppress-health-check too_slow,filter_too_much \
    --report junit --report-junit-path "$WORK/junit.xml" --warnings off) | tee "$WORK/out.txt"
rc=${PIPESTATUS[0]}
set -e

python3 - "$WORK/junit.xml" "$WORK/server.log" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
cases = root.iter("testcase")
total = failed = errored = skipped = 0
for case in cases:
    total += 1
    failed += len(case.findall("failure"))
    errored += len(case.findall("error"))
    skipped += len(case.findall("skipped"))
log = open(sys.argv[2], errors="replace").read()
panics = log.count("panicked")
print(f"schemathesis: {total} operations, {failed} failing, {errored} errors, {skipped} skipped; server panics: {panics}")
PY
grep -E "test cases|Test cases|generated|passed|failed" "$WORK/out.txt" | tail -5 || true
if grep -q "panicked" "$WORK/server.log"; then
    echo "the server panicked:" >&2; grep -A5 "panicked" "$WORK/server.log" >&2; exit 1
fi
exit "$rc"
