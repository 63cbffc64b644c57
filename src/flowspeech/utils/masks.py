"""Sequence masks: the one place lengths become masks."""

from __future__ import annotations

import torch


def sequence_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """Boolean mask of valid positions.

    Args:
        lengths: ``[B]`` integer lengths.
        max_length: size of the time axis; defaults to ``lengths.max()``.

    Returns:
        ``[B, max_length]`` bool, True where ``t < lengths[b]``.
    """
    if max_length is None:
        max_length = int(lengths.max()) if lengths.numel() else 0
    positions = torch.arange(max_length, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def length_mask(lengths: torch.Tensor, max_length: int | None = None, dtype=torch.float32) -> torch.Tensor:
    """Float mask ``[B, 1, T]`` in the layout every flow and model takes."""
    return sequence_mask(lengths, max_length).unsqueeze(1).to(dtype)
