#!/usr/bin/env bash
# Fuzzes the melody upload decoder (audio/fuzz, target `decode_upload`) with
# libFuzzer through cargo-fuzz, starting from the committed seed corpus
# (audio/fuzz/seeds/decode_upload: every container and codec the decoder
# reads). New corpus entries go to audio/fuzz/corpus/ (ignored by git);
# a crash is saved under audio/fuzz/artifacts/ and should become a
# regression test in audio/tests/decode.rs.
#
#   bash bench/fuzz-audio.sh [SECONDS] [JOBS]      (default 300 s, 1 job)
#
# Needs only the stable toolchain: cargo-fuzz passes nightly-only flags
# (-Zsanitizer, -Cpasses=sancov), which RUSTC_BOOTSTRAP=1 allows. cargo-fuzz
# is installed into .tools/cargo-fuzz when missing. FUZZ_SANITIZER=address
# adds AddressSanitizer (the decoder is safe Rust, so the default is none:
# faster, and panics, aborts, timeouts and memory blow-ups are still caught).
# FUZZ_DEBUG_ASSERTIONS=1 turns on overflow checks as in debug builds; off
# by default, as in the release build the worker runs, because libFuzzer
# stops at the first panic and symphonia 0.6.1 has a known debug-only
# overflow (tests/fixtures/fuzz-regressions/wav-28162-channels.wav).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_TO_RUN="${1:-300}"
JOBS="${2:-1}"
SANITIZER="${FUZZ_SANITIZER:-none}"
TOOLS="$ROOT/.tools/cargo-fuzz"
export PATH="$TOOLS/bin:$PATH"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "[fuzz] installing cargo-fuzz into $TOOLS" >&2
    cargo install cargo-fuzz --locked --root "$TOOLS" >&2
fi

cd "$ROOT/audio/fuzz"
mkdir -p corpus/decode_upload artifacts/decode_upload
parallel=()
# libFuzzer's -jobs mode writes each job's log to fuzz-N.log instead.
[ "$JOBS" -gt 1 ] && parallel=(-jobs="$JOBS" -workers="$JOBS")
# cargo-fuzz builds with overflow checks unless told -O (release, as shipped).
checks=(-O)
[ "${FUZZ_DEBUG_ASSERTIONS:-0}" = 1 ] && checks=(--debug-assertions)
exec cargo fuzz run decode_upload --sanitizer "$SANITIZER" "${checks[@]}" \
    corpus/decode_upload seeds/decode_upload -- \
    -max_total_time="$SECONDS_TO_RUN" "${parallel[@]}" \
    -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
