"""Glow-TTS base on onnxruntime and the authors' code, round by round at 2 and at 1 thread.

    python benchmarks/glow_tts_onnx_phases.py --authors /tmp/glow-tts [--rounds 30] [--tokens 100]

``bench_glow_tts_onnx.py`` reports medians over rounds. On a shared machine some stretches of a
few seconds are slow, and a run that falls in many of them gives a lower ratio. This script
shows what those stretches do to each system: every round times the phase-order graphs
(``export --onnx --winograd``, the runtime's session options) and the authors' code
(``store_inverse()``, ``gen=True``), each at 2 threads and at 1 (median of ``--repeats`` runs,
a tenth of a second apart), and prints one row per round: the four times, the ratio at 2
threads, and what the second thread gives each system in that round.

A round in which onnxruntime's second thread gives almost nothing while it still gives the
authors' code a fair share is what the slow stretches look like here (``docs/onnx.md``, "The
machine's slow stretches").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_glow_tts_onnx import authors_model, export_graphs, imported, run_graphs

from flowspeech.runtime.voice import session_options


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        time.sleep(0.1)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, required=True, help="a checkout of jaywalnut310/glow-tts")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5, help="runs per system and thread count in a round")
    parser.add_argument("--tokens", type=int, default=100)
    args = parser.parse_args()
    import onnxruntime as ort

    theirs = authors_model(args.authors)
    tokens = torch.randint(1, 148, (1, args.tokens), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([args.tokens])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours = imported(theirs, tmp)
        theirs.store_inverse()  # after the import (see imported)
        export_graphs(ours, "folded, winograd", tokens, tmp)
        sessions = {threads: [ort.InferenceSession(str(tmp / name), session_options(threads),
                                                   providers=["CPUExecutionProvider"])
                              for name in ("encoder.onnx", "decoder.onnx")] for threads in (1, 2)}

    def graphs(threads: int) -> None:
        run_graphs(*sessions[threads], tokens.numpy())

    def authors(threads: int) -> None:
        torch.set_num_threads(threads)
        with torch.no_grad():
            theirs(tokens, lengths, gen=True, noise_scale=0.667)

    print(f"# Glow-TTS base, one sentence of {args.tokens} tokens; torch {torch.__version__}, onnxruntime "
          f"{ort.__version__}; per round the median of {args.repeats} runs of each\n")
    print("| round | ONNX, 2 threads | ONNX, 1 thread | authors, 2 threads | authors, 1 thread | "
          "ratio at 2 threads | 2nd thread: ONNX | 2nd thread: authors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    ratios = []
    for round_ in range(args.rounds):
        onnx_2, onnx_1 = median_ms(lambda: graphs(2), args.repeats), median_ms(lambda: graphs(1), args.repeats)
        authors_2, authors_1 = median_ms(lambda: authors(2), args.repeats), median_ms(lambda: authors(1), args.repeats)
        ratios.append(authors_2 / onnx_2)
        print(f"| {round_} | {onnx_2:.1f} ms | {onnx_1:.1f} ms | {authors_2:.1f} ms | {authors_1:.1f} ms | "
              f"{ratios[-1]:.2f}x | {onnx_1 / onnx_2:.2f}x | {authors_1 / authors_2:.2f}x |", flush=True)
    quartiles = np.percentile(ratios, [25, 50, 75])
    print(f"\nratio at 2 threads over {args.rounds} rounds: median {quartiles[1]:.2f}x "
          f"(quartiles {quartiles[0]:.2f}x, {quartiles[2]:.2f}x); below 2x in "
          f"{sum(r < 2 for r in ratios)} rounds")


if __name__ == "__main__":
    main()
