"""The synthesis controls' limits, shared by the PyTorch path and the ONNX runtime (torch-free)."""

from __future__ import annotations

import math

from flowspeech.errors import ConfigError

SCALE_LIMITS = {"noise_scale": (0.0, 10.0), "length_scale": (0.1, 10.0), "sigma": (0.0, 10.0)}


def check_scale(name: str, value) -> float:
    """``value`` as a float within :data:`SCALE_LIMITS`, else a ConfigError naming it."""
    low, high = SCALE_LIMITS[name]
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(value) and low <= value <= high):
        usual = {"length_scale": "1.0, the model's own pace", "noise_scale": "0.667, the usual",
                 "sigma": "0.6 for WaveGlow, 0.8 for FloWaveNet"}[name]
        raise ConfigError(f"{name} must lie in [{low:g}, {high:g}] ({usual}), got {value:g}")
    return value
