#!/usr/bin/env bash
# Make a venv with Coqui TTS (the idiap fork, `coqui-tts` on PyPI) for the speed suite's peer
# rows: python -m benchmarks --coqui-python VENV/bin/python
# Coqui TTS needs torchaudio, so this venv has its own PyTorch (2.9.1 with torchaudio 2.9.1;
# on x86_64 PyPI's build is the CUDA one, several GB). Nothing here touches flowspeech's venv.
set -euo pipefail
venv="${1:-.venv-coqui}"
python3 -m venv "$venv"
"$venv/bin/pip" install --upgrade pip
"$venv/bin/pip" install torch==2.9.1 torchaudio==2.9.1 "coqui-tts[codec]"   # torchcodec: audio IO from torch 2.9
"$venv/bin/pip" install six   # imported by TTS.tts.utils.text.punctuation, not declared
"$venv/bin/python" -c "import TTS, torch; print('coqui-tts ready in $venv with torch', torch.__version__)"
