"""Gaussian noise from a generator that may live on another device than the model."""

from __future__ import annotations

import torch


def randn(*shape: int, generator: torch.Generator | None = None,
          device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.randn(shape)`` on ``device``, drawn from ``generator`` on the generator's own
    device and then moved. So a CPU generator (what ``--seed`` makes) drives a CUDA model, and
    one seed gives the same latent on every device."""
    if generator is None:
        return torch.randn(*shape, device=device, dtype=dtype)
    return torch.randn(*shape, generator=generator, device=generator.device, dtype=dtype).to(device)
