#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time and prints a table of
# executions and crashes: a benchmark-like job, not part of CI.
#
#   bash fuzz/run.sh                 # every target, 120 s each
#   FUZZ_SECONDS=600 bash fuzz/run.sh torch_archive
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain,
# RUSTC_BOOTSTRAP=1 lets it pass its nightly-only flags (-Zsanitizer, ...).
# The committed seeds in fuzz/corpus/<target> are read, never written: new
# inputs go to fuzz/.work/corpus/<target>, crashes to fuzz/artifacts/<target>.
# A crash found becomes a regression test next to the code it broke.
#
# FUZZ_SANITIZER: none (default; the parsers are safe Rust, so this only
# trades ASan's checks of dependencies' unsafe code for ~2x the executions)
# or address. Debug assertions (integer overflow checks) are always on.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-120}"
SANITIZER="${FUZZ_SANITIZER:-none}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2; exit 1; }

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)


rows=()
for t in "${targets[@]}"; do
    mkdir -p ".work/corpus/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    log=".work/$t.log"
    # -fork would use more cores; the machines this runs on have two.
    set +e
    cargo fuzz run -O -a -s "$SANITIZER" "$t" ".work/corpus/$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    per_s=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    after=$(find "artifacts/$t" -type f | wc -l)
    rows+=("$(printf '%-14s %8ss %12s %10s %6s %8s %4s' "$t" "$SECONDS_PER_TARGET" "${execs:-?}" "${per_s:-?}" "${cov:-?}" "$((after - before))" "$rc")")
done

printf '\n%-14s %9s %12s %10s %6s %8s %4s\n' target time executions exec/s cov crashes rc
printf '%s\n' "${rows[@]}"
echo "(logs in fuzz/.work/<target>.log, crashing inputs in fuzz/artifacts/<target>/)"
