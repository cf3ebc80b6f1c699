#!/usr/bin/env bash
# The `serve` profile against `release`: a clean build of what serve.sh
# builds (`-p sound-creator --bin sound-creator`), each profile in a target
# directory of its own, its time and size, then `generate` on the tiny
# checkpoint with each binary (best of 3). Prints a Markdown table for
# bench/SERVE_BUILD.md. Takes about 40 minutes on 2 cores and 10 GB of disk;
# run it on a quiet machine.
#
#   bash bench/serve_build_bench.sh [duration-seconds]
#   PROFILES=serve bash bench/serve_build_bench.sh    # one profile only
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
eval "$(bash scripts/setup.sh)"
export CARGO_INCREMENTAL=0
DURATION="${1:-10}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

rows=()
for profile in ${PROFILES:-release serve}; do
    target="$WORK/target-$profile"
    echo "[bench] clean build, profile $profile" >&2
    start=$(date +%s.%N)
    CARGO_TARGET_DIR="$target" cargo build --profile "$profile" -p sound-creator --bin sound-creator >&2
    build_s=$(echo "$(date +%s.%N) - $start" | bc)
    size=$(du -sh "$target" | cut -f1)
    bin="$target/$profile/sound-creator"
    best=""
    for _ in 1 2 3; do
        start=$(date +%s.%N)
        "$bin" generate --model tests/fixtures/tiny-musicgen --prompt "a benchmark" --duration "$DURATION" \
            --seed 1 --out "$WORK/clip.wav" 2> "$WORK/generate.log"
        s=$(echo "$(date +%s.%N) - $start" | bc)
        if [ -z "$best" ] || [ "$(echo "$s < $best" | bc)" = 1 ]; then best=$s; fi
    done
    rows+=("| $profile | $(printf %.0f "$build_s") | $size | $(printf %.2f "$best") | $(cut -d' ' -f1 /proc/loadavg) |")
done

echo "| profile | clean build (s) | target/ size | generate ${DURATION} s tiny, best of 3 (s) | load after |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
