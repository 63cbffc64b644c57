"""Affine coupling (Dinh et al. 2017, "Real NVP", section 3.3; Glow, section 3.3).

The first half of the channels passes through unchanged and parameterises an elementwise
affine map of the second half, so the Jacobian is triangular and its log-determinant is the
sum of the log-scales. The network that computes the parameters is pluggable.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import nn

from flowspeech.errors import ConfigError
from flowspeech.flows.base import (
    Flow,
    call_in_own_dtype,
    check_input,
    logdet_dtype,
    remove_weight_norm,
    weight_norm,
)
from flowspeech.flows.wavenet import WaveNet

__all__ = ["AffineCoupling", "CouplingNet", "WaveNetCouplingNet", "set_coupling_dtype", "sigmoid_log_scale"]


def sigmoid_log_scale(raw: torch.Tensor) -> torch.Tensor:
    """Glow-TTS's bounded coupling log-scale ``log(1e-6 + sigmoid(raw + 2))`` (its
    ``sigmoid_scale`` option): the scale stays below 1 and starts near ``sigmoid(2) = 0.88``."""
    return torch.log(1e-6 + torch.sigmoid(raw + 2))


class CouplingNet(Protocol):
    """What :class:`AffineCoupling` needs of its network.

    ``net(x_a, mask, cond) -> out`` with ``x_a`` ``[B, C_a, T]``, ``mask`` ``[B, 1, T]`` or
    ``None``, ``cond`` as given to the flow (or ``None``), and ``out`` ``[B, 2 * C_b, T]``
    (``[B, C_b, T]`` for mean-only coupling). Valid positions of ``out`` must not depend on
    padded positions of ``x_a``.
    """

    def __call__(self, x_a: torch.Tensor, mask: torch.Tensor | None, cond: torch.Tensor | None) -> torch.Tensor: ...


class AffineCoupling(Flow):
    """Affine coupling layer ``y = [x_a, f(x_b; net(x_a, cond))]``.

    ``x_a`` is the first ``C_a = C // 2`` channels, ``x_b`` the other ``C_b = C - C_a``.

    ``parameterization="glow"`` (WaveGlow ``glow.WaveGlow``, Glow-TTS
    ``attentions.CouplingBlock``, VITS ``modules.ResidualCouplingLayer``): the network output
    is ``[shift, log_s]`` (shift first)::

        forward:  y_b = shift + exp(log_s) * x_b
        inverse:  x_b = (y_b - shift) * exp(-log_s)
        logdet:   sum of log_s over channels and valid frames

    With ``sigmoid_scale=True`` (Glow-TTS option) ``log_s = log(1e-6 + sigmoid(raw + 2))``,
    which bounds the scale by 1 and starts it near ``sigmoid(2) = 0.88``.

    ``parameterization="flowavenet"`` (FloWaveNet ``model.AffineCoupling``): the network output
    is ``[log_s, t]`` (log-scale first)::

        forward:  y_b = (x_b - t) * exp(-log_s)
        inverse:  x_b = y_b * exp(log_s) + t
        logdet:   -sum of log_s over channels and valid frames

    ``mean_only=True`` (additive coupling, Dinh et al. 2015 "NICE"; VITS ``mean_only``,
    FloWaveNet ``affine=False``): the network outputs only ``shift`` ``[B, C_b, T]``,
    ``y_b = x_b + shift`` and ``logdet = 0``.

    Args:
        net: module computing the coupling parameters, see :class:`CouplingNet`.
        mean_only: additive coupling.
        sigmoid_scale: Glow-TTS's bounded scale (``"glow"`` parameterisation only).
        parameterization: ``"glow"`` or ``"flowavenet"``.

    Shapes: ``x``, ``y`` ``[B, C, T]``; ``mask`` ``[B, 1, T]``; ``cond`` whatever ``net``
    takes; ``logdet`` ``[B]``.

    The network may hold its weights in a lower precision than the flow's data (see
    :func:`set_coupling_dtype`): its inputs are cast to its dtype and its output back, so the
    affine map itself, and everything outside the coupling, keep the data's precision.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        mean_only: bool = False,
        sigmoid_scale: bool = False,
        parameterization: Literal["glow", "flowavenet"] = "glow",
    ) -> None:
        super().__init__()
        if parameterization not in ("glow", "flowavenet"):
            raise ConfigError(
                f"AffineCoupling: parameterization must be 'glow' or 'flowavenet', got {parameterization!r}"
            )
        if sigmoid_scale and (mean_only or parameterization != "glow"):
            raise ConfigError(
                "AffineCoupling: sigmoid_scale applies to the 'glow' parameterisation with a "
                "learnt scale; do not combine it with mean_only or 'flowavenet'"
            )
        self.net = net
        self.mean_only = mean_only
        self.sigmoid_scale = sigmoid_scale
        self.parameterization = parameterization

    def _params(self, x_a, mask, cond, c_b):
        """Run the network; return ``(shift, log_s)`` (``log_s`` None for mean-only)."""
        out = call_in_own_dtype(self.net, x_a, mask, cond)  # see set_coupling_dtype
        expected = c_b if self.mean_only else 2 * c_b
        if out.dim() != 3 or out.size(1) != expected or out.size(2) != x_a.size(2):
            raise ValueError(
                f"AffineCoupling: the network must return [B, {expected}, {x_a.size(2)}] "
                f"({'C_b' if self.mean_only else '2 * C_b'} channels for C_b = {c_b}), "
                f"got {tuple(out.shape)}"
            )
        if self.mean_only:
            return out, None
        if self.parameterization == "glow":
            shift, log_s = out[:, :c_b], out[:, c_b:]
            if self.sigmoid_scale:
                log_s = sigmoid_log_scale(log_s)
        else:
            log_s, shift = out[:, :c_b], out[:, c_b:]
        return shift, log_s

    def forward(self, x, mask=None, cond=None):
        check_input(x, mask, None, "AffineCoupling")
        c_a = x.size(1) // 2
        x_a, x_b = x[:, :c_a], x[:, c_a:]
        shift, log_s = self._params(x_a, mask, cond, x.size(1) - c_a)
        if log_s is None:
            y_b = x_b + shift
            logdet = x.new_zeros(x.size(0), dtype=logdet_dtype(x))
        else:
            if self.parameterization == "glow":
                y_b = shift + torch.exp(log_s) * x_b
            else:
                y_b = (x_b - shift) * torch.exp(-log_s)
            masked = log_s if mask is None else log_s * mask
            logdet = masked.sum(dim=(1, 2), dtype=logdet_dtype(x))
            if self.parameterization == "flowavenet":
                logdet = -logdet
        y = torch.cat([x_a, y_b], dim=1)
        if mask is not None:
            y = y * mask
        return y, logdet

    def inverse(self, y, mask=None, cond=None):
        check_input(y, mask, None, "AffineCoupling")
        c_a = y.size(1) // 2
        y_a, y_b = y[:, :c_a], y[:, c_a:]
        shift, log_s = self._params(y_a, mask, cond, y.size(1) - c_a)
        if log_s is None:
            x_b = y_b - shift
        elif self.parameterization == "glow":
            x_b = (y_b - shift) * torch.exp(-log_s)
        else:
            x_b = y_b * torch.exp(log_s) + shift
        x = torch.cat([y_a, x_b], dim=1)
        if mask is not None:
            x = x * mask
        return x

    def extra_repr(self) -> str:
        return (
            f"parameterization={self.parameterization!r}, mean_only={self.mean_only}, "
            f"sigmoid_scale={self.sigmoid_scale}"
        )


class WaveNetCouplingNet(nn.Module):
    """Coupling network of WaveGlow and Glow-TTS: ``end(WaveNet(start(x_a) * mask)) * mask``.

    ``start`` is a 1x1 conv ``C_a -> H`` (weight-normed as in WaveGlow and Glow-TTS; plain
    for VITS's ``pre``), ``wn`` a :class:`WaveNet`, and ``end`` a 1x1 conv ``H -> out_channels``
    initialised to zero so that a fresh coupling is the identity (WaveGlow, section 2.2;
    Glow, section 3.3).

    Args:
        in_channels: ``C_a``.
        out_channels: ``2 * C_b`` (``C_b`` for mean-only coupling).
        hidden_channels, kernel_size, dilation_rate, n_layers, cond_channels, dropout,
            dropout_position: of the :class:`WaveNet`.
        weight_norm_start: weight-normalise ``start``.

    Shapes: ``x_a`` ``[B, C_a, T]``, ``mask`` ``[B, 1, T]``, ``cond`` ``[B, C_cond, T or 1]``,
    output ``[B, out_channels, T]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        cond_channels: int = 0,
        dropout: float = 0.0,
        dropout_position: Literal["post_gate", "pre_gate"] = "post_gate",
        weight_norm_start: bool = True,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ConfigError(
                f"WaveNetCouplingNet: in_channels and out_channels must be positive, got {in_channels}, {out_channels}"
            )
        start = nn.Conv1d(in_channels, hidden_channels, 1)
        self.start = weight_norm(start) if weight_norm_start else start
        self.wn = WaveNet(
            hidden_channels, kernel_size, dilation_rate, n_layers, cond_channels, dropout, dropout_position
        )
        self.end = nn.Conv1d(hidden_channels, out_channels, 1)
        nn.init.zeros_(self.end.weight)
        nn.init.zeros_(self.end.bias)

    def forward(
        self,
        x_a: torch.Tensor,
        mask: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.start(x_a)
        if mask is not None:
            h = h * mask
        out = self.end(self.wn(h, mask, cond))
        if mask is not None:
            out = out * mask
        return out

    def remove_weight_norm(self) -> None:
        """Fold the weight norms into plain weights (outputs unchanged, inference faster)."""
        remove_weight_norm(self)


def set_coupling_dtype(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Hold the networks of every :class:`AffineCoupling` in ``module`` in ``dtype``.

    For inference in reduced precision: the coupling networks hold nearly all of a flow's
    multiply-adds, so running them in ``torch.bfloat16`` (or ``float16`` on a GPU) gives most
    of the speed of a fully reduced model, while the flow's state, the affine maps, invertible
    1x1 convolutions and ActNorms stay in the data's precision and add no rounding of their
    own. Weight norm is folded first. The weights are rounded in place: reload the model to
    get the float32 weights back. Returns ``module``.
    """
    if not dtype.is_floating_point:
        raise ConfigError(f"set_coupling_dtype: {dtype} is not a floating-point dtype")
    remove_weight_norm(module)
    for m in module.modules():
        if isinstance(m, AffineCoupling):
            m.net.to(dtype)
    return module
