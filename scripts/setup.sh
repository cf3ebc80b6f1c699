#!/usr/bin/env bash
# Installs what building and running sound-creator needs, when missing:
#  - a Rust toolchain (rustup),
#  - a C toolchain and pkg-config (apt),
#  - the Python venv `.venv` with PyTorch 2.11 (the libtorch that `tch` links
#    against), the CUDA headers the CUDA-graph shim needs, plus
#    `transformers` for the fixture and benchmark scripts and `soundfile`
#    (libsndfile) for the audio format tests.
# Then prints the environment to build and run with; source it:
#   eval "$(bash scripts/setup.sh)"
# Progress goes to stderr so that stdout stays eval-able.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
TORCH_VERSION="${TORCH_VERSION:-2.11.0}"
log() { echo "[setup] $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq >&2; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >&2
}

# make: LAME (the MP3 encoder, built from source by mp3lame-sys) uses autotools.
command -v cc >/dev/null && command -v make >/dev/null && command -v pkg-config >/dev/null || { log "installing build tools"; apt_install build-essential pkg-config; }
command -v python3 >/dev/null || { log "installing python3"; apt_install python3 python3-venv python3-pip; }
if ! command -v cargo >/dev/null && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    log "installing Rust with rustup"
    command -v curl >/dev/null || apt_install curl ca-certificates
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy -c rustfmt >&2
fi

if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$TORCH_VERSION') else 1)" 2>/dev/null; then
    [ -x "$VENV/bin/python" ] || { log "creating $VENV"; python3 -m venv "$VENV" >&2 || { apt_install python3-venv; python3 -m venv "$VENV" >&2; }; }
    log "installing torch==$TORCH_VERSION into $VENV (about 5 GB to download and unpack; a minute or two on a fast link)"
    "$VENV/bin/pip" install --no-cache-dir "torch==$TORCH_VERSION" >&2
fi
# The CUDA runtime headers that the CUDA-graph shim (audiocraft/csrc) is
# compiled against when libtorch has CUDA: torch's wheel brings the runtime
# and its main headers, but not crt/host_defines.h (about 1 MB).
CUDA_VERSION="$("$VENV/bin/python" -c 'import torch; print(torch.version.cuda or "")')"
case "$CUDA_VERSION" in
    13.*)
        "$VENV/bin/python" -c "import importlib.metadata as m; m.version('nvidia-cuda-crt')" 2>/dev/null || {
            log "installing nvidia-cuda-crt==$CUDA_VERSION.* (CUDA headers for the graph shim)"
            "$VENV/bin/pip" install --no-cache-dir --no-deps "nvidia-cuda-crt==$CUDA_VERSION.*" >&2
        } ;;
esac
"$VENV/bin/python" -c "import transformers, tokenizers, safetensors" 2>/dev/null || {
    log "installing transformers into $VENV"
    "$VENV/bin/pip" install --no-cache-dir transformers tokenizers safetensors >&2
}
"$VENV/bin/python" -c "import soundfile" 2>/dev/null || {
    log "installing soundfile into $VENV (the independent decoder of the audio format tests)"
    "$VENV/bin/pip" install --no-cache-dir soundfile >&2
}
"$VENV/bin/python" -c "import schemathesis" 2>/dev/null || {
    log "installing schemathesis into $VENV (schema-driven fuzzing of the API: tests/schemathesis/run.sh)"
    "$VENV/bin/pip" install -q --no-cache-dir "schemathesis==4.32.5" >&2
}

TORCH_LIB="$("$VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
cat <<ENV
export PATH="$VENV/bin:\$HOME/.cargo/bin:\$PATH"
export LIBTORCH_USE_PYTORCH=1
export LD_LIBRARY_PATH="$TORCH_LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
