"""The flow-layer interface and helpers every layer shares.

A flow layer is an invertible map ``y = f(x; cond)`` applied independently to every sample
of a padded batch. Its ``forward`` also returns ``log |det df/dx|`` per sample, summed over
the valid (unpadded) positions only, which is the change-of-variables term of the
likelihood (Dinh et al. 2017, "Density estimation using Real NVP", eq. 3).

Shapes (CONTRIBUTING.md): ``x`` and ``y`` are ``[B, C, T]``, ``mask`` is ``[B, 1, T]`` float
(1 = valid, 0 = padding; ``None`` means every frame is valid), ``logdet`` is ``[B]``.
Padded positions of every output are zero.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm as _torch_weight_norm

from flowspeech.errors import NumericalError

__all__ = ["Flow", "call_in_own_dtype", "ensure_finite", "remove_weight_norm", "weight_norm"]


class Flow(nn.Module):
    """Base class of the flow layers: ``forward`` gives ``(y, logdet)``, ``inverse`` gives ``x``.

    Subclasses implement both directions with the signatures below; ``cond`` is an optional
    conditioning tensor ``[B, C_cond, T]`` (per frame) or ``[B, C_cond, 1]`` (global), which
    layers that are not conditional ignore.
    """

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(
        self,
        y: torch.Tensor,
        mask: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def remove_weight_norm(self) -> None:
        """Fold every weight-normalised convolution inside this layer into a plain weight.

        Outputs are unchanged; inference gets faster because ``g * v / ||v||`` is no longer
        recomputed on every call. Training afterwards would optimise the plain weight.
        """
        remove_weight_norm(self)


def weight_norm(module: nn.Module) -> nn.Module:
    """Weight normalisation of ``module.weight`` (Salimans & Kingma 2016), norm per output channel.

    Uses the parametrisation API; checkpoints saved with the older hook-based API
    (``weight_g`` / ``weight_v`` keys) load into it unchanged, as PyTorch renames the keys.
    """
    return _torch_weight_norm(module, name="weight", dim=0)


def remove_weight_norm(module: nn.Module) -> nn.Module:
    """Remove weight normalisation from ``module`` and every submodule, in place.

    Each weight-normalised ``weight`` becomes a plain parameter holding ``g * v / ||v||``,
    so outputs stay the same. Other parametrisations are left alone.

    Returns:
        ``module``, for chaining.
    """
    # Collect first: removing a parametrisation deletes a submodule while we would iterate.
    targets = []
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight") and any(
            type(p).__name__ == "_WeightNorm" for p in m.parametrizations["weight"]
        ):
            targets.append(m)
    for m in targets:
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return module


def call_in_own_dtype(module: nn.Module, x: torch.Tensor, *args):
    """``module(x, *args)`` computed in the dtype of ``module``'s parameters and returned in
    ``x``'s: floating-point tensor arguments are cast on the way in (``None`` and integer
    tensors pass as they are). No casts when the dtypes already agree. This is how a network
    held in reduced precision (:func:`~flowspeech.flows.set_coupling_dtype`, NaturalSpeech's
    decoder) serves a model whose data stay float32. A reduced-precision result is checked
    with :func:`ensure_finite`: a faulty kernel must fail loudly, not produce noise."""
    dtype = next(module.parameters(), x).dtype
    if dtype == x.dtype:
        return module(x, *args)

    def cast(t):
        return t.to(dtype) if torch.is_tensor(t) and t.is_floating_point() else t

    y = module(cast(x), *map(cast, args))
    ensure_finite(y, f"{type(module).__name__} in {dtype}".replace("torch.", ""))
    return y.to(x.dtype)


def ensure_finite(y: torch.Tensor, what: str) -> torch.Tensor:
    """``y``, or a :class:`~flowspeech.errors.NumericalError` naming ``what`` when ``y`` holds
    NaN or infinity.

    Used after every reduced-precision network: trained weights never overflow bfloat16 or
    float16 there, so a non-finite value means a faulty kernel. One was seen: oneDNN's AMX
    bfloat16 matrix products (oneDNN issue 5717) read past the end of each row when K is
    not a multiple of 32, so garbage next to the operands leaks into the result."""
    if not bool(torch.isfinite(y).all()):
        raise NumericalError(
            f"{what} gave NaN or infinite values: reduced precision is unreliable with this "
            f"PyTorch build on this processor; run in float32 (the default precision)")
    return y


def valid_frames(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Number of valid frames per sample, ``[B]``, in the dtype logdets are accumulated in."""
    dtype = logdet_dtype(x)
    if mask is None:
        return torch.full((x.size(0),), x.size(2), dtype=dtype, device=x.device)
    return mask.sum(dim=(1, 2), dtype=dtype)


def logdet_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 at least: a half-precision sum over ``C * T`` terms would lose precision."""
    return torch.promote_types(x.dtype, torch.float32)


def check_input(x: torch.Tensor, mask: torch.Tensor | None, channels: int | None, name: str) -> None:
    """Raise a ``ValueError`` that names the layer when ``x`` or ``mask`` has the wrong shape."""
    if x.dim() != 3:
        raise ValueError(f"{name}: expected x of shape [B, C, T], got {tuple(x.shape)}")
    if channels is not None and x.size(1) != channels:
        raise ValueError(
            f"{name}: built for {channels} channels but x has {x.size(1)} "
            f"(x shape {tuple(x.shape)}); check the model configuration"
        )
    if mask is not None and (
        mask.dim() != 3 or mask.size(0) != x.size(0) or mask.size(1) != 1 or mask.size(2) != x.size(2)
    ):
        raise ValueError(
            f"{name}: mask must be [B, 1, T] = [{x.size(0)}, 1, {x.size(2)}], "
            f"got {tuple(mask.shape)}"
        )
