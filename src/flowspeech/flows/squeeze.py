"""Squeeze over time: fold ``factor`` consecutive frames into the channel axis and back.

Glow (Kingma & Dhariwal 2018, section 3; after Real NVP, Dinh et al. 2017, section 3.6)
squeezes space; Glow-TTS (Kim et al. 2020, section 3.3) and FloWaveNet (Kim et al. 2019,
section 3.1) squeeze time, so that 1x1 convolutions and couplings also mix neighbouring
frames. The two papers' code orders the new channels differently; both are available.
"""

from __future__ import annotations

from typing import Literal

import torch

from flowspeech.errors import ConfigError

__all__ = ["squeeze", "unsqueeze"]

Order = Literal["glow_tts", "flowavenet"]


def _check(x: torch.Tensor, mask: torch.Tensor | None, factor: int, order: str, name: str) -> None:
    if factor < 1:
        raise ConfigError(f"{name}: factor must be a positive integer, got {factor}")
    if order not in ("glow_tts", "flowavenet"):
        raise ConfigError(f"{name}: order must be 'glow_tts' or 'flowavenet', got {order!r}")
    if x.dim() != 3:
        raise ValueError(f"{name}: expected x of shape [B, C, T], got {tuple(x.shape)}")
    if mask is not None and (mask.dim() != 3 or mask.size(1) != 1 or mask.shape[::2] != x.shape[::2]):
        raise ValueError(f"{name}: mask must be [B, 1, T] matching x {tuple(x.shape)}, got {tuple(mask.shape)}")


def squeeze(
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    factor: int = 2,
    order: Order = "glow_tts",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fold groups of ``factor`` frames into channels: ``[B, C, T] -> [B, C * f, T // f]``.

    ``T`` is first truncated to a multiple of ``f``. With ``t`` the new frame index and
    ``k = 0 .. f-1`` the position inside the group (input frame ``t * f + k``):

    * ``order="glow_tts"`` (Glow-TTS ``commons.squeeze``): output channel ``k * C + c``;
    * ``order="flowavenet"`` (FloWaveNet ``model.Block``; also how WaveGlow groups the
      upsampled mel): output channel ``c * f + k``.

    The mask keeps the last frame of every group (``mask[..., f-1::f]``, as Glow-TTS), so a
    group counts as valid only if all its frames are; with lengths that are multiples of
    ``f`` (Glow-TTS trims them so) no valid frame is lost. Padded outputs are zero.

    Args:
        x: ``[B, C, T]``.
        mask: ``[B, 1, T]`` or ``None``.
        factor: ``f``.
        order: channel ordering, see above.

    Returns:
        ``(x_sq [B, C * f, T // f], mask_sq [B, 1, T // f] or None)``.
    """
    _check(x, mask, factor, order, "squeeze")
    b, c, t = x.shape
    t_sq = t // factor
    x = x[:, :, : t_sq * factor].reshape(b, c, t_sq, factor)
    if order == "glow_tts":
        x = x.permute(0, 3, 1, 2)  # [B, f, C, T/f]
    else:
        x = x.permute(0, 1, 3, 2)  # [B, C, f, T/f]
    x = x.reshape(b, c * factor, t_sq)
    if mask is not None:
        mask = mask[:, :, factor - 1 :: factor][:, :, :t_sq]
        x = x * mask
    return x, mask


def unsqueeze(
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    factor: int = 2,
    order: Order = "glow_tts",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inverse of :func:`squeeze`: ``[B, C * f, T] -> [B, C, T * f]``.

    The mask is repeated ``f`` times along time (Glow-TTS ``commons.unsqueeze``).

    Args:
        x: ``[B, C * f, T]``.
        mask: ``[B, 1, T]`` or ``None``.
        factor: ``f``.
        order: the ordering :func:`squeeze` used.

    Returns:
        ``(x [B, C, T * f], mask [B, 1, T * f] or None)``.
    """
    _check(x, mask, factor, order, "unsqueeze")
    b, cf, t = x.shape
    if cf % factor != 0:
        raise ValueError(f"unsqueeze: channels ({cf}) must be a multiple of factor ({factor})")
    c = cf // factor
    if order == "glow_tts":
        x = x.reshape(b, factor, c, t).permute(0, 2, 3, 1)  # [B, C, T, f]
    else:
        x = x.reshape(b, c, factor, t).permute(0, 1, 3, 2)  # [B, C, T, f]
    x = x.reshape(b, c, t * factor)
    if mask is not None:
        mask = mask.repeat_interleave(factor, dim=2)
        x = x * mask
    return x, mask
