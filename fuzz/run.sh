#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time and prints a table of
# executions and crashes: a benchmark-like job, not part of CI. The targets
# are this crate's (checkpoint parsers; the API's request bodies, queries
# and path ids, signed links, webhook signer, config.json) and the audio
# crate's upload decoder (audio/fuzz).
#
#   bash fuzz/run.sh                       # every target, 120 s each
#   FUZZ_SECONDS=600 bash fuzz/run.sh torch_archive request_body
#
# Needs cargo-fuzz; it is installed into .tools/cargo-fuzz when missing. On
# a stable toolchain, RUSTC_BOOTSTRAP=1 lets it pass its nightly-only flags
# (-Zsanitizer, ...). The committed seeds in <crate>/corpus/<target> (audio:
# audio/fuzz/seeds/<target>) are read, never written: new inputs go to
# .work/corpus/<target>, crashes to artifacts/<target>. A crash found
# becomes a regression test next to the code it broke.
#
# FUZZ_SANITIZER: none (default; the parsers are safe Rust, so this only
# trades ASan's checks of dependencies' unsafe code for ~2x the executions)
# or address. Debug assertions (integer overflow checks) are always on.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-120}"
SANITIZER="${FUZZ_SANITIZER:-none}"
TOOLS="$ROOT/.tools/cargo-fuzz"
export PATH="$TOOLS/bin:$PATH"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "[fuzz] installing cargo-fuzz into $TOOLS" >&2
    cargo install cargo-fuzz --locked --root "$TOOLS" >&2
fi

# (crate directory, target, seed directory) for every target.
plan=()
for t in $(cd "$HERE" && cargo fuzz list); do plan+=("$HERE $t corpus/$t"); done
for t in $(cd "$ROOT/audio/fuzz" && cargo fuzz list); do plan+=("$ROOT/audio/fuzz $t seeds/$t"); done
if [ $# -gt 0 ]; then
    wanted=" $* "
    kept=()
    for entry in "${plan[@]}"; do
        read -r _ t _ <<<"$entry"
        [[ "$wanted" == *" $t "* ]] && kept+=("$entry")
    done
    plan=("${kept[@]}")
fi

rows=()
for entry in "${plan[@]}"; do
    read -r dir t seeds <<<"$entry"
    cd "$dir"
    mkdir -p ".work/corpus/$t" "artifacts/$t" "$seeds"
    before=$(find "artifacts/$t" -type f | wc -l)
    log=".work/$t.log"
    # -fork would use more cores; the machines this runs on have two.
    set +e
    cargo fuzz run -O -a -s "$SANITIZER" "$t" ".work/corpus/$t" "$seeds" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    per_s=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    after=$(find "artifacts/$t" -type f | wc -l)
    rows+=("$(printf '%-16s %8ss %12s %10s %6s %8s %4s' "$t" "$SECONDS_PER_TARGET" "${execs:-?}" "${per_s:-?}" "${cov:-?}" "$((after - before))" "$rc")")
done

printf '\n%-16s %9s %12s %10s %6s %8s %4s\n' target time executions exec/s cov crashes rc
printf '%s\n' "${rows[@]}"
echo "(logs in <crate>/.work/<target>.log, crashing inputs in <crate>/artifacts/<target>/)"
