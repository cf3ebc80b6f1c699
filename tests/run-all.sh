#!/usr/bin/env bash
# Sets up and runs every test: installs what is missing (toolchains, libtorch
# through pip, redis-server, PostgreSQL, moto), starts the real servers on
# loopback (tests/env/up.sh), runs the whole workspace's tests against them,
# schemathesis against `serve` (tests/schemathesis/run.sh), the playground's
# browser tests (tests/browser/run.sh), the lints, and the deployment files'
# linters (tests/lint-deploy.sh: terraform fmt, checkov, hadolint,
# docker-compose), then tears the servers down.
#
#   bash tests/run-all.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
step() { echo; echo "=== $*"; }
disk() { df -h "$ROOT" | awk 'NR==2 {print "disk: " $4 " free of " $2}'; }

# A one-shot build gains nothing from incremental caches, which would take
# gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step "setup"
disk
eval "$(bash scripts/setup.sh)"

step "starting redis-server, PostgreSQL and moto on loopback"
bash tests/env/up.sh
trap 'bash tests/env/down.sh >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
source .data/test-env/env.sh

step "format"
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all -- --check; else echo "rustfmt not installed; skipping"; fi

step "tests"
disk
cargo test --workspace --no-fail-fast
disk

step "schema-driven fuzzing (schemathesis against serve)"
bash tests/schemathesis/run.sh

step "browser tests (the playground in headless Chromium)"
# The cargo tests built target/debug/sound-creator (the contract tests run it).
SOUND_CREATOR=target/debug/sound-creator bash tests/browser/run.sh

# The test executables are the bulk of the build and clippy does not use them.
find target/debug/deps -maxdepth 1 -type f -executable -delete 2>/dev/null || true

step "lints"
cargo clippy --workspace --all-targets -- -D warnings

step "deployment files"
bash tests/lint-deploy.sh
echo
echo "all checks passed"
