"""Level normalisation: peak and loudness (RMS, dBFS).

dBFS here is ``20 log10(level)`` with full scale 1.0, so a full-scale sine has an RMS of
-3.01 dBFS. Both functions take numpy or torch ``[..., T]`` and return the same type; the
whole array is scaled by one gain. Silence (all zeros) is returned unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from flowspeech.errors import ConfigError

Samples = np.ndarray | torch.Tensor


def _db_to_amplitude(db: float) -> float:
    return 10.0 ** (db / 20.0)


def _peak(samples: Samples) -> float:
    if isinstance(samples, torch.Tensor):
        return float(samples.detach().abs().max()) if samples.numel() else 0.0
    return float(np.max(np.abs(samples))) if samples.size else 0.0


def _rms(samples: Samples) -> float:
    if isinstance(samples, torch.Tensor):
        x = samples.detach().double()
        return float(x.square().mean().sqrt()) if x.numel() else 0.0
    x = np.asarray(samples, dtype=np.float64)
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _scale(samples: Samples, gain: float) -> Samples:
    if isinstance(samples, torch.Tensor):
        return samples * gain
    return (np.asarray(samples, dtype=np.float32) * np.float32(gain)).astype(np.float32)


def _check_peak_db(peak_db: float) -> None:
    if not peak_db <= 0:
        raise ConfigError(f"peak_db must be <= 0 dBFS (above full scale clips), got {peak_db!r}")


def normalize_peak(samples: Samples, peak_db: float = -1.0) -> Samples:
    """Scales so that ``max |x| = 10 ** (peak_db / 20)`` (-1 dBFS: 0.891).

    Shapes: ``[..., T]`` -> same shape and type (numpy results are float32).
    """
    _check_peak_db(peak_db)
    peak = _peak(samples)
    if peak == 0.0:
        return _scale(samples, 1.0)
    return _scale(samples, _db_to_amplitude(peak_db) / peak)


def normalize_loudness(
    samples: Samples, target_db: float = -20.0, peak_db: float = -1.0
) -> Samples:
    """Scales the RMS level to ``target_db`` dBFS, unless that would push the peak above
    ``peak_db`` dBFS, in which case the peak is set to ``peak_db`` (and the RMS ends lower).

    Shapes: ``[..., T]`` -> same shape and type (numpy results are float32).
    """
    _check_peak_db(peak_db)
    if not target_db <= 0:
        raise ConfigError(f"target_db must be <= 0 dBFS, got {target_db!r}")
    rms = _rms(samples)
    if rms == 0.0:
        return _scale(samples, 1.0)
    gain = _db_to_amplitude(target_db) / rms
    gain = min(gain, _db_to_amplitude(peak_db) / _peak(samples))
    return _scale(samples, gain)
