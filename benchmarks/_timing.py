"""Timing helpers (and one comparison, :func:`snr_db`) shared by the benchmark scripts (and by ``coqui_side.py``, which runs under
another venv's Python: this module imports only the standard library and, lazily, torch)."""

from __future__ import annotations

import math
import os
import time


def sync(device) -> None:
    """Wait for queued GPU work, so a wall-clock interval covers it."""
    if device is not None and device.type == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(fn, device=None):
    """``(seconds, fn())`` for one call."""
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def repeat_timed(fn, repeats: int, warmup: int = 1, device=None) -> list[float]:
    """Seconds of each of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return [timed(fn, device)[0] for _ in range(repeats)]


def time_in_turns(functions: dict, repeats: int, warmup: int, device=None) -> dict[str, list[float]]:
    """Seconds of each call of every ``name -> function``, the functions taking turns (so a
    change in the machine's load hits them all alike), after ``warmup`` untimed calls each."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            times[name].append(timed(function, device)[0])
    return times


def snr_db(reference, estimate) -> float:
    """Signal-to-error ratio of ``estimate`` against ``reference`` (tensors of one shape), dB."""
    error = (estimate.double() - reference.double()).pow(2).sum().item()
    return 10 * math.log10(reference.double().pow(2).sum().item() / max(error, 1e-30))


def load_note() -> str:
    try:
        return "load average " + " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return ""
