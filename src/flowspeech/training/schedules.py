"""Learning-rate schedules, as ``torch.optim.lr_scheduler.LambdaLR`` multipliers."""

from __future__ import annotations

import math

import torch

from flowspeech.errors import ConfigError


def noam_lambda(d_model: int, warmup_steps: int):
    """Noam schedule (Vaswani et al. 2017, Eq. 3), used by Glow-TTS:
    ``lr = base * d_model^-0.5 * min(s^-0.5, s * warmup^-1.5)`` with ``s = step + 1``
    (the authors' optimiser wrapper counts steps from 1)."""

    def factor(step: int) -> float:
        s = step + 1
        return d_model ** -0.5 * min(s ** -0.5, s * warmup_steps ** -1.5)

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, **kwargs):
    """``none``, ``noam`` (d_model, warmup_steps) or ``exponential`` (gamma per step)."""
    if name in (None, "none", "constant"):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if name == "noam":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, noam_lambda(kwargs["d_model"], kwargs["warmup_steps"]))
    if name == "exponential":
        gamma = kwargs["gamma"]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: math.pow(gamma, step))

    raise ConfigError(f"unknown learning-rate schedule {name!r}: use none, noam or exponential")
