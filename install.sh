#!/usr/bin/env bash
# Set up flowspeech in ./.venv on a fresh machine.
#   ./install.sh          runtime (CPU PyTorch)
#   ./install.sh --dev    runtime + test tools
# Environment: PYTHON (default python3), TORCH_SPEC (default torch==2.13.0, the CPU build;
# GPU users can set e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124").
set -euo pipefail
cd "$(dirname "$0")"

extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

# System packages: espeak-ng (IPA phonemes, optional) and libsndfile (soundfile's backend;
# the PyPI wheel bundles one, this is a fallback). Only attempted as root with apt-get.
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  packages=""
  command -v espeak-ng >/dev/null 2>&1 || packages="espeak-ng libsndfile1"
  # The dev install tests the server's web page in a real browser: Debian's Chromium and its driver.
  if [ -n "$extras" ] && ! command -v chromedriver >/dev/null 2>&1; then
    packages="$packages chromium chromium-driver"
  fi
  if [ -n "$packages" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null 2>&1 \
      || echo "note: could not apt-get install $packages (IPA phonemes or the browser test stay unavailable)"
  fi
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Install torch first and on its own, so that the package's loose `torch>=2.2` is already
# satisfied and pip never pulls a multi-GB CUDA build by accident.
python -m pip install -q ${TORCH_SPEC:-torch==2.13.0}
python -m pip install -q -e ".${extras}"
# The shipped voice in ONNX form as well, for `flowspeech synthesize --backend onnx` and the
# runtime without PyTorch (docs/onnx.md): exported here, once, into the cache.
flowspeech export --onnx slt-glow-tts-small >/dev/null || echo "note: the ONNX export of the shipped voice failed; --backend onnx will try again"
echo "flowspeech installed in $(pwd)/.venv ($(python -c 'import torch; print("torch", torch.__version__)'))"
