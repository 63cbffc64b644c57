"""Speed of soft-DTW, forward and backward: flowspeech.align.soft_dtw against tslearn.

NaturalSpeech's forward loss runs soft-DTW over a ``[B, N, M]`` cost between the prior's
``N`` frames (predicted durations) and the posterior's ``M`` frames, and back-propagates
through it every training step. This script times one forward and one backward pass of:

* flowspeech ``soft_dtw``, numba path (the default for CPU tensors);
* flowspeech ``soft_dtw``, torch path (the anti-diagonal wavefront used on GPUs), on the CPU;
* tslearn ``SoftDTWLossPyTorch`` (PyPI ``tslearn``, a benchmark-only dependency), given a
  ``dist_func`` that returns the precomputed cost, so that it runs soft-DTW on the very same
  matrix (its numba kernels, ``prange`` over the batch); this is the reference of the
  speed-up column;
* tslearn ``SoftDTW`` (``compute()`` then ``grad()``), its NumPy/numba class on a distance
  matrix, one item at a time in a Python loop (one thread).

    python benchmarks/bench_soft_dtw.py                          # B=8, N=200, M=800, 2 threads
    python benchmarks/bench_soft_dtw.py --sizes 8x200x800 16x100x400 --repeats 9
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_soft_dtw.py  # on a machine busy with others

The cost is float64 and has NaturalSpeech's scale: the KL divergence per latent dimension
between unit-variance Gaussians with random means, ``0.5 * mean_c (x_ic - y_jc)^2``, about 1
per cell. Lengths are full (tslearn has no per-item lengths) and there is no warp penalty
(tslearn has none).

Before timing, on each size and for gamma 0.01 and 1.0, every implementation must give the
same values (relative difference < 1e-6) and the same gradient with respect to the cost (the
expected alignment, entries in [0, 1]: absolute difference < 1e-6); the script exits with an
error otherwise. One exception, which the script checks precisely: ``SoftDTWLossPyTorch``
keeps its accumulated-cost matrix ``R`` in a float32 tensor (``torch.Tensor(ndarray)``)
between forward and backward, so its gradient is the exact gradient of the float32-rounded
``R``; with values of a few hundred and gamma 0.01 that rounding moves entries of the
gradient by some 1e-3 (5e-3 at the default size). Its gradient is therefore compared with
tslearn's float64 ``SoftDTW.grad()`` run on the same rounded ``R`` (< 1e-6), and its
distance from the float64 gradient is reported.

Implementations run in turns (so load from other processes hits all alike) after warm-up;
the table gives the median and the fastest of ``--repeats`` runs. On a machine busy with
other processes, OpenMP threads that spin while they wait distort the multi-threaded rows,
our torch path most (each of its small per-diagonal ``exp``/``softmax`` kernels enters a
parallel region): run with ``OMP_WAIT_POLICY=PASSIVE`` there, or compare ``--threads 1``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys

import numba
import numpy as np
import torch
from _timing import load_note, time_in_turns

_sdtw = importlib.import_module("flowspeech.align.soft_dtw")  # the module, not the function

GAMMAS_CHECKED = (0.01, 1.0)
VALUE_RTOL = 1e-6
GRAD_ATOL = 1e-6
PEER_LOSS = "tslearn `SoftDTWLossPyTorch`"
PEER_CLASS = "tslearn `SoftDTW` (per item, 1 thread)"
OURS_NUMBA = "flowspeech `soft_dtw`, numba"
OURS_TORCH = "flowspeech `soft_dtw`, torch (CPU)"


def load_peer():
    """tslearn's ``(SoftDTWLossPyTorch, SoftDTW)``, or ``None`` with a message."""
    try:
        from tslearn.metrics import SoftDTW, SoftDTWLossPyTorch
    except ImportError as error:
        print(f"# tslearn is not importable ({error}); skipping the peer rows "
              f"(install it with: pip install tslearn)", file=sys.stderr)
        return None
    return SoftDTWLossPyTorch, SoftDTW


def parse_size(text: str) -> tuple[int, int, int]:
    try:
        batch, n, m = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be BxNxM (e.g. 8x200x800), got {text!r}")
    if min(batch, n, m) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return batch, n, m


def make_cost(batch: int, n: int, m: int, channels: int, seed: int) -> torch.Tensor:
    """``[B, N, M]`` float64: ``0.5 * mean_c (x[b, i, c] - y[b, j, c])^2`` for standard normal
    ``x`` and ``y``, the KL divergence per dimension of unit-variance Gaussians."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, channels, generator=generator, dtype=torch.float64)
    y = torch.randn(batch, m, channels, generator=generator, dtype=torch.float64)
    return 0.5 * torch.cdist(x, y).square_() / channels


# --- the implementations: each returns fn() -> (values [B], gradient [B, N, M]) --------------


def ours(cost: torch.Tensor, gamma: float, backend: str):
    leaf = cost.clone().requires_grad_()

    def run():
        leaf.grad = None
        value = _sdtw._soft_dtw(leaf, None, None, gamma, 0.0, False, backend=backend)
        value.sum().backward()
        return value.detach(), leaf.grad

    return run


def peer_loss(cost: torch.Tensor, gamma: float, peer, threads: int):
    """``SoftDTWLossPyTorch`` on the precomputed cost: ``dist_func`` ignores the sequences it
    is given (dummy ``[B, N, 1]`` and ``[B, M, 1]`` tensors) and returns the cost leaf."""
    loss_class, _ = peer
    leaf = cost.clone().requires_grad_()
    loss = loss_class(gamma=gamma, dist_func=lambda x, y: leaf)
    batch, n, m = cost.shape
    x = torch.zeros(batch, n, 1, dtype=cost.dtype)
    y = torch.zeros(batch, m, 1, dtype=cost.dtype)

    def run():
        leaf.grad = None
        value = loss(x, y)
        value.sum().backward()
        keep_torch_threads(threads)
        return value.detach(), leaf.grad

    return run


def peer_class(cost: torch.Tensor, gamma: float, peer, round_r_to_float32: bool = False):
    """tslearn ``SoftDTW(D, gamma)``: ``compute()`` (value) and ``grad()`` (gradient with
    respect to ``D``) per item. ``round_r_to_float32``: round its ``R`` to float32 between the
    two, as ``SoftDTWLossPyTorch`` does (used by the check only)."""
    _, soft_dtw_class = peer
    items = cost.numpy()
    batch, n, m = items.shape

    def run():
        values = np.empty(batch)
        grads = np.empty(items.shape)
        for b in range(batch):
            item = soft_dtw_class(items[b], gamma=gamma)
            values[b] = item.compute()
            if round_r_to_float32:
                inner = item.R_[1:n + 1, 1:m + 1]
                inner[...] = inner.astype(np.float32)
            grads[b] = item.grad()
        return torch.from_numpy(values), torch.from_numpy(grads)

    return run


def keep_torch_threads(threads: int) -> None:
    """tslearn's parallel numba kernels may reset OpenMP's (and so torch's) thread count;
    put it back so that the rows after it run with the same threads."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# --- the check ----------------------------------------------------------------------------------


def max_relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-300)).max())


def max_absolute(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def check(cost: torch.Tensor, peer, threads: int, with_torch: bool) -> dict:
    """Values and gradients of every implementation against our numba path, for each gamma
    of ``GAMMAS_CHECKED``. Exits with an error on a mismatch; returns the largest
    differences (and, for the tslearn loss, its distance from the float64 gradient)."""
    report = {}
    for gamma in GAMMAS_CHECKED:
        value, grad = ours(cost, gamma, "numba")()
        others = {}
        if with_torch:
            others[OURS_TORCH] = ours(cost, gamma, "torch")()
        if peer is not None:
            others[PEER_CLASS] = peer_class(cost, gamma, peer)()
            loss_value, loss_grad = peer_loss(cost, gamma, peer, threads)()
        failures = []
        rows = {}
        for name, (other_value, other_grad) in others.items():
            rows[name] = {"value_rel": max_relative(other_value, value),
                          "grad_abs": max_absolute(other_grad, grad)}
            if not rows[name]["value_rel"] < VALUE_RTOL:
                failures.append(f"{name}: values differ by {rows[name]['value_rel']:.3g} "
                                f"(relative; allowed {VALUE_RTOL:g})")
            if not rows[name]["grad_abs"] < GRAD_ATOL:
                failures.append(f"{name}: gradients differ by {rows[name]['grad_abs']:.3g} "
                                f"(allowed {GRAD_ATOL:g})")
        if peer is not None:
            _, rounded_grad = peer_class(cost, gamma, peer, round_r_to_float32=True)()
            rows[PEER_LOSS] = {"value_rel": max_relative(loss_value, value),
                               "grad_abs": max_absolute(loss_grad, grad),
                               "grad_abs_vs_float32_R": max_absolute(loss_grad, rounded_grad)}
            if not rows[PEER_LOSS]["value_rel"] < VALUE_RTOL:
                failures.append(f"{PEER_LOSS}: values differ by "
                                f"{rows[PEER_LOSS]['value_rel']:.3g} (relative; allowed "
                                f"{VALUE_RTOL:g})")
            if not rows[PEER_LOSS]["grad_abs_vs_float32_R"] < GRAD_ATOL:
                failures.append(f"{PEER_LOSS}: gradient differs by "
                                f"{rows[PEER_LOSS]['grad_abs_vs_float32_R']:.3g} from the "
                                f"gradient of its float32-rounded R (allowed {GRAD_ATOL:g})")
        if failures:
            raise SystemExit(f"soft-DTW mismatch at gamma {gamma}, cost {tuple(cost.shape)}:\n  "
                             + "\n  ".join(failures))
        report[str(gamma)] = rows
    return report


# --- timing -------------------------------------------------------------------------------------


def bench_size(size, args, peer) -> dict:
    batch, n, m = size
    cost = make_cost(batch, n, m, args.channels, args.seed)
    checked = check(cost, peer, args.threads, not args.no_torch)
    functions = {OURS_NUMBA: ours(cost, args.gamma, "numba")}
    if not args.no_torch:
        functions[OURS_TORCH] = ours(cost, args.gamma, "torch")
    if peer is not None:
        functions[PEER_LOSS] = peer_loss(cost, args.gamma, peer, args.threads)
        functions[PEER_CLASS] = peer_class(cost, args.gamma, peer)
    load_before = load_note()
    times = time_in_turns(functions, args.repeats, args.warmup)
    reference = statistics.median(times[PEER_LOSS]) if peer is not None else None
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        rows.append({"implementation": name, "median_ms": median * 1e3,
                     "fastest_ms": min(samples) * 1e3,
                     "speedup_vs_tslearn": reference / median if reference else None,
                     "samples_ms": [s * 1e3 for s in samples]})
    return {"batch": batch, "n": n, "m": m, "cells": batch * n * m, "load_before": load_before,
            "load_after": load_note(), "check": checked, "rows": rows}


def print_size(result: dict, args) -> None:
    print(f"\n## B={result['batch']}, N={result['n']}, M={result['m']} "
          f"({result['cells'] / 1e6:.2f} M cells), gamma {args.gamma}, forward + backward")
    print(f"# {result['load_before']} before timing, {result['load_after']} after")
    for gamma, rows in result["check"].items():
        parts = [f"{name}: value {row['value_rel']:.1e}, grad {row['grad_abs']:.1e}"
                 for name, row in rows.items()]
        print(f"# check gamma {gamma}, max difference from numba path (relative value, "
              f"absolute gradient): " + "; ".join(parts))
        if PEER_LOSS in rows:
            print(f"#   {PEER_LOSS} gradient vs tslearn float64 gradient of its float32-rounded "
                  f"R: {rows[PEER_LOSS]['grad_abs_vs_float32_R']:.1e}")
    print("| implementation | forward+backward ms (median) | fastest ms | speed-up vs tslearn |")
    print("|---|---:|---:|---:|")
    for row in result["rows"]:
        speedup = (f"{row['speedup_vs_tslearn']:.2f}x" if row["speedup_vs_tslearn"] is not None
                   else "n/a")
        print(f"| {row['implementation']} | {row['median_ms']:.1f} | {row['fastest_ms']:.1f} | "
              f"{speedup} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(8, 200, 800)],
                        metavar="BxNxM", help="batch x prior frames x posterior frames "
                                              "(default 8x200x800)")
    parser.add_argument("--gamma", type=float, default=0.01, help="gamma of the timed runs")
    parser.add_argument("--channels", type=int, default=192,
                        help="latent channels of the random cost (default 192)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads")
    parser.add_argument("--no-torch", action="store_true",
                        help="skip our torch path (the slowest row on a CPU)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    peer = load_peer()

    results = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "load": load_note(), "torch": torch.__version__, "numba": numba.__version__,
               "tslearn": None, "threads": args.threads,
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
               "gamma": args.gamma, "repeats": args.repeats, "warmup": args.warmup,
               "channels": args.channels, "sizes": []}
    if peer is not None:
        import tslearn

        results["tslearn"] = tslearn.__version__
    for size in args.sizes:
        results["sizes"].append(bench_size(size, args, peer))
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run
        layer = "none started"
    results["numba_threading_layer"] = layer
    results["torch_threads_at_end"] = torch.get_num_threads()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"# soft-DTW forward+backward, float64 cost, full lengths, no warp penalty; "
          f"{results['machine']}, {results['cpus']} CPUs, {results['load']} at start; "
          f"torch {results['torch']} ({args.threads} threads), numba {results['numba']} "
          f"({numba.get_num_threads()} threads, {layer} layer), tslearn "
          f"{results['tslearn'] or 'not installed'}, OMP_WAIT_POLICY="
          f"{results['omp_wait_policy']}; median of {args.repeats} after {args.warmup} warm-up")
    if peer is not None:
        print(f"# speed-up is against {PEER_LOSS} (its numba kernels, given the same cost)")
    for result in results["sizes"]:
        print_size(result, args)


if __name__ == "__main__":
    main()
