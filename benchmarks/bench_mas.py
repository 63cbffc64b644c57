"""Speed of Monotonic Alignment Search: flowspeech.align against the authors' Cython code.

The reference is the PyPI package ``monotonic-alignment-search`` (the Glow-TTS authors'
``monotonic_align/core.pyx``, packaged): its fastest entry point ``maximum_path_cython``
(torch in, torch out, like ours) and, for information, its bare kernel ``maximum_path_c``
on ready-made numpy arrays. Every implementation runs on the same batch, in turns (so that
load from other processes hits all of them alike), after warm-up; the table gives the
median and the fastest of the repeats, and the outputs are checked to be identical.

    python benchmarks/bench_mas.py                     # batch 16, 150 tokens x 800 frames
    python benchmarks/bench_mas.py --compile-time      # also cold compile and cached load

Text lengths are drawn from [T_text/2, T_text], frame lengths from [T_frames/2, T_frames]
(at least the text length); the first item has the full size.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile

import numba
import numpy as np
import torch
from _timing import time_in_turns

from flowspeech.align import maximum_path_numba, maximum_path_torch
from flowspeech.align import _numba_kernels


def make_batch(batch: int, n_text: int, n_frames: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    text_lengths = torch.randint(n_text // 2, n_text + 1, (batch,), generator=generator)
    frame_lengths = torch.randint(n_frames // 2, n_frames + 1, (batch,), generator=generator)
    frame_lengths = torch.maximum(frame_lengths, text_lengths)
    text_lengths[0], frame_lengths[0] = n_text, n_frames
    value = torch.randn(batch, n_text, n_frames, generator=generator)
    mask = ((torch.arange(n_text)[None, :, None] < text_lengths[:, None, None])
            & (torch.arange(n_frames)[None, None, :] < frame_lengths[:, None, None])).float()
    return value, mask, text_lengths, frame_lengths


def our_kernel_only(value, text_lengths, frame_lengths):
    """Our numba kernel on ready-made arrays (no input checks or tensor conversions)."""
    values = value.numpy()
    order = torch.argsort(text_lengths * frame_lengths, descending=True).numpy()
    text, frames = text_lengths.numpy(), frame_lengths.numpy()

    def run():
        path = np.empty(values.shape, dtype=np.float32)
        with numba.parallel_chunksize(1):
            _numba_kernels.maximum_path_batch(path, values, text, frames, order)
        return path

    return run


def reference_kernel_only(value, text_lengths, frame_lengths):
    """The authors' Cython kernel on ready-made arrays (it updates ``values`` in place, so
    each run gets a fresh copy, as its own wrapper does)."""
    from monotonic_alignment_search.core import maximum_path_c

    values = value.numpy()
    text = text_lengths.numpy().astype(np.int32)
    frames = frame_lengths.numpy().astype(np.int32)

    def run():
        path = np.zeros(values.shape, dtype=np.int32)
        maximum_path_c(path, values.copy(), text, frames)
        return path

    return run


def compile_times() -> tuple[float, float]:
    """First call in a fresh process with an empty cache (compilation), then in another
    fresh process with that cache (loading); excludes importing torch and numba."""
    code = ("import time, torch; import flowspeech.align as a; v = torch.randn(2, 4, 9); "
            "t = time.perf_counter(); a.maximum_path_numba(v, torch.ones_like(v)); "
            "print(time.perf_counter() - t)")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold, warm = (float(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                           capture_output=True, text=True).stdout)
                      for _ in range(2))
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--text", type=int, default=150, help="T_text (longest text)")
    parser.add_argument("--frames", type=int, default=800, help="T_frames (longest mel)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and numba threads (default: what the machine has)")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch version")
    parser.add_argument("--compile-time", action="store_true",
                        help="also time the first call, cold and from the disk cache")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    from monotonic_alignment_search import maximum_path_cython

    value, mask, text_lengths, frame_lengths = make_batch(args.batch, args.text, args.frames,
                                                          args.seed)
    expected = maximum_path_cython(value, mask)
    checks = {"flowspeech numba": maximum_path_numba(value, mask),
              "flowspeech numba, kernel only": torch.from_numpy(
                  our_kernel_only(value, text_lengths, frame_lengths)()),
              "reference, kernel only": torch.from_numpy(
                  reference_kernel_only(value, text_lengths, frame_lengths)()).float()}
    if not args.no_torch:
        checks["flowspeech torch (CPU)"] = maximum_path_torch(value, mask)
    for name, path in checks.items():
        if not torch.equal(path, expected):
            raise SystemExit(f"{name}: path differs from the reference")

    functions = {
        "reference `maximum_path_cython`": lambda: maximum_path_cython(value, mask),
        "flowspeech `maximum_path_numba`": lambda: maximum_path_numba(value, mask),
        "reference kernel `maximum_path_c`": reference_kernel_only(value, text_lengths,
                                                                   frame_lengths),
        "flowspeech kernel `maximum_path_batch`": our_kernel_only(value, text_lengths,
                                                                  frame_lengths),
    }
    if not args.no_torch:
        functions["flowspeech `maximum_path_torch` (CPU)"] = lambda: maximum_path_torch(value,
                                                                                      mask)
    times = time_in_turns(functions, args.repeats, args.warmup)

    cells = int((text_lengths * frame_lengths).sum())
    print(f"# MAS, batch {args.batch}, T_text {args.text}, T_frames {args.frames}: "
          f"{cells} valid cells, text {text_lengths.min()}..{text_lengths.max()}, "
          f"frames {frame_lengths.min()}..{frame_lengths.max()}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numba {numba.__version__} "
          f"({numba.get_num_threads()} threads, {numba.threading_layer()} layer), "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
          f"{args.repeats} repeats; all paths identical to the reference")
    reference = statistics.median(times["reference `maximum_path_cython`"])
    reference_kernel = statistics.median(times["reference kernel `maximum_path_c`"])
    print("| implementation | median ms | fastest ms | speed-up (median) |")
    print("|---|---:|---:|---:|")
    for name, samples in times.items():
        base = reference_kernel if "kernel" in name else reference
        median = statistics.median(samples)
        print(f"| {name} | {median * 1e3:.2f} | {min(samples) * 1e3:.2f} | "
              f"{base / median:.2f}x |")
    print(f"(speed-ups of the kernel rows are against the reference kernel; load average "
          f"at the end {os.getloadavg()[0]:.2f})")
    if args.compile_time:
        cold, warm = compile_times()
        print(f"first call: {cold:.2f} s compiling, {warm:.2f} s loading from the disk cache")


if __name__ == "__main__":
    main()
