"""A starting phase for Griffin-Lim, from the magnitude alone: phase-gradient heap integration.

Griffin-Lim started from random phases converges to a local optimum in which the harmonics of
voiced speech keep part of their random start: they beat against each other, which a pitch
tracker reads as unvoiced frames and a listener as phasiness. Phase-gradient heap integration
(PGHI; Průša, Balazs & Søndergaard, "A noniterative method for reconstruction of phase from
STFT magnitude", IEEE/ACM TASLP 25(5), 2017) estimates the phase's time and frequency
derivatives from those of the log-magnitude (exact for a Gaussian window, close for a Hann
window with the matching ``gamma``) and integrates them outwards from the loudest bins, so
that every harmonic starts coherent along time and across its bins. Fast Griffin-Lim then
only refines it (Průša et al. report the combination to beat either alone).

The integration is ``pghipy``'s numba kernel, compiled once per installation (numba's cache)
rather than once per process: the uncached compile takes seconds. This module needs numpy and
numba only, so that the runtime without PyTorch (flowspeech.runtime) shares it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import types

import numpy as np

# Griffin-Lim's starting phases: this module's integration, or uniform random phases.
STARTS = ("pghi", "random")

# The Hann window's equivalent Gaussian: gamma = 0.25645 * L^2 (Průša et al., 2017, Table I).
HANN_GAMMA = 0.25645

# Bins quieter than this, relative to the loudest, carry no phase information: the magnitude
# is floored there before its logarithm is differentiated. Non-negative least squares from a
# mel leaves exact zeros, whose log-gradient would otherwise send the integrated phase of
# their neighbours anywhere.
RELATIVE_FLOOR = 1e-5


def pghi_phase(magnitude: np.ndarray, n_fft: int, hop_length: int,
               win_length: int | None = None) -> np.ndarray:
    """Phase of ``magnitude`` by phase-gradient heap integration, in turns (``[0, 1)``
    wraps once), for the Hann-windowed STFT that :func:`torch.stft` computes (phase referred
    to each frame's first sample).

    Args:
        magnitude: ``[n_fft // 2 + 1, F]`` or ``[B, n_fft // 2 + 1, F]`` linear magnitude.
        n_fft, hop_length, win_length: the STFT (``win_length`` defaults to ``n_fft``; a
            shorter Hann window is centred in the frame, as torch pads it).

    Returns:
        float32 array shaped as ``magnitude``.
    """
    magnitude = np.asarray(magnitude)
    if magnitude.ndim == 3:
        return np.stack([pghi_phase(m, n_fft, hop_length, win_length) for m in magnitude])
    if magnitude.ndim != 2 or magnitude.shape[0] != n_fft // 2 + 1:
        raise ValueError(f"expected a magnitude [{n_fft // 2 + 1}, F], got {magnitude.shape}")
    win_length = n_fft if win_length is None else win_length
    frames = np.ascontiguousarray(magnitude.T, dtype=np.float64)  # the kernel's [F, bins]
    loudest = float(frames.max()) if frames.size else 0.0
    if not loudest > 0:  # silence: any phase will do
        return np.zeros(magnitude.shape, np.float32)
    frames += loudest * RELATIVE_FLOOR
    # The kernel's frequency axis is the FFT's (n_fft bins); gamma is the window's own.
    radians = _kernel()(frames, n_fft, hop_length, HANN_GAMMA * win_length**2, RELATIVE_FLOOR)
    return np.mod(radians.T / (2 * np.pi), 1.0).astype(np.float32)


@functools.cache
def _kernel():
    """``pghipy.pghi`` compiled with numba's on-disk cache (the package compiles it in every
    process), or as shipped where no cache directory is writable."""
    import numba  # lazy: numba takes a fifth of a second to import, on first use only

    with _deferred("scipy.signal"):
        from pghipy import pghi  # lazy: as numba, and without its scipy.signal (below)

    function = getattr(pghi, "py_func", pghi)
    try:
        return numba.njit(cache=True)(function)
    except RuntimeError:
        return pghi


@contextlib.contextmanager
def _deferred(name: str):
    """While the block runs, ``import name`` gives a placeholder that imports the real module
    on its first attribute access, so that an import nothing uses costs nothing.

    ``pghipy`` imports ``scipy.signal`` (0.6 s: a third of the time from a process's start to
    its first sentence through the ONNX runtime) for its STFT helpers, which this module does
    not call. The placeholder is registered only within the block: imports elsewhere stay the
    ordinary ones.
    """
    if name in sys.modules:
        yield
        return
    placeholder = types.ModuleType(name, f"{name}, imported on first use")

    def real_attribute(attribute: str):
        if sys.modules.get(name) is placeholder:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attribute)

    placeholder.__getattr__ = real_attribute  # PEP 562: looked up in the module's namespace
    sys.modules[name] = placeholder
    try:
        yield
    finally:
        if sys.modules.get(name) is placeholder:
            del sys.modules[name]
