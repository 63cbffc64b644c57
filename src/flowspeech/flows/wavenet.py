"""The non-causal gated WaveNet that computes the affine-coupling parameters.

WaveGlow (Prenger et al. 2019, section 2.2, the authors' ``glow.WN``), Glow-TTS (Kim et al.
2020, section 3.3 / appendix, ``modules.WN``) and VITS-style prior flows (Kim et al. 2021,
``modules.WN``) share this network; it is WaveNet (van den Oord et al. 2016, section 2.3)
without causality, with "same" padding and skip connections summed into the output.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from flowspeech.errors import ConfigError
from flowspeech.flows.base import remove_weight_norm, weight_norm

__all__ = ["WaveNet", "gated_activation"]


def gated_activation(x: torch.Tensor, hidden_channels: int) -> torch.Tensor:
    """WaveNet's gated unit ``tanh(x[:, :H]) * sigmoid(x[:, H:])`` (van den Oord et al. 2016, eq. 2).

    Args:
        x: ``[B, 2H, T]`` pre-activation (dilated conv output plus conditioning).
        hidden_channels: ``H``.

    Returns:
        ``[B, H, T]``.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.tanh(x[:, :hidden_channels]) * torch.sigmoid(x[:, hidden_channels:])
    # Inference: reuse the tanh result's memory for the product - one fewer [B, H, T]
    # allocation per layer; the halves are views, so no copy is made either.
    acts = torch.tanh(x[:, :hidden_channels])
    return acts.mul_(torch.sigmoid(x[:, hidden_channels:]))


class WaveNet(nn.Module):
    """Non-causal gated WaveNet with optional conditioning; returns the sum of the skips.

    Per layer ``i`` (dilation ``d = dilation_rate ** i``)::

        a    = in_layers[i](h) + g_i                    weight-normed conv H -> 2H, kernel k
        acts = tanh(a[:H]) * sigmoid(a[H:])             dropout after (or before, see below)
        r, s = res_skip_layers[i](acts)                 weight-normed 1x1 conv H -> 2H
        h    = (h + r) * mask;  out += s                last layer: H -> H, skip only

    and the output is ``out * mask``. ``g_i`` is the ``i``-th block of ``2H`` channels of
    ``cond_layer(cond)``, one weight-normed 1x1 conv ``C_cond -> 2H * n_layers`` shared by
    all layers (the authors' newer code). ``cond`` is per frame ``[B, C_cond, T]`` (WaveGlow's
    upsampled mel) or global ``[B, C_cond, 1]`` (a speaker embedding, broadcast over time).

    Args:
        hidden_channels: ``H``.
        kernel_size: odd kernel of the dilated convs.
        dilation_rate: dilation base (WaveGlow 2, Glow-TTS 1 or 5).
        n_layers: number of layers.
        cond_channels: ``C_cond``; 0 for none.
        dropout: dropout probability.
        dropout_position: ``"post_gate"`` (on ``acts``, VITS) or ``"pre_gate"`` (on the dilated
            conv output, before the conditioning is added - Glow-TTS's ``modules.WN``).

    Shapes: ``x`` ``[B, H, T]``, ``mask`` ``[B, 1, T]``, output ``[B, H, T]``.
    """

    def __init__(
        self,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        cond_channels: int = 0,
        dropout: float = 0.0,
        dropout_position: Literal["post_gate", "pre_gate"] = "post_gate",
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"WaveNet: kernel_size must be odd for 'same' padding, got {kernel_size}")
        if hidden_channels < 1 or n_layers < 1 or dilation_rate < 1 or cond_channels < 0:
            raise ConfigError(
                "WaveNet: hidden_channels, n_layers and dilation_rate must be positive and "
                f"cond_channels >= 0, got {hidden_channels}, {n_layers}, {dilation_rate}, {cond_channels}"
            )
        if dropout_position not in ("post_gate", "pre_gate"):
            raise ConfigError(f"WaveNet: dropout_position must be 'post_gate' or 'pre_gate', got {dropout_position!r}")
        self.hidden_channels = hidden_channels
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate
        self.n_layers = n_layers
        self.cond_channels = cond_channels
        self.dropout_position = dropout_position

        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        self.drop = nn.Dropout(dropout)
        if cond_channels > 0:
            self.cond_layer = weight_norm(nn.Conv1d(cond_channels, 2 * hidden_channels * n_layers, 1))
        for i in range(n_layers):
            dilation = dilation_rate**i
            padding = (kernel_size * dilation - dilation) // 2
            self.in_layers.append(
                weight_norm(
                    nn.Conv1d(hidden_channels, 2 * hidden_channels, kernel_size, dilation=dilation, padding=padding)
                )
            )
            # The last layer's residual output would never be used.
            res_skip_channels = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(weight_norm(nn.Conv1d(hidden_channels, res_skip_channels, 1)))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h_ch = self.hidden_channels
        if x.dim() != 3 or x.size(1) != h_ch:
            raise ValueError(f"WaveNet: expected x of shape [B, {h_ch}, T], got {tuple(x.shape)}")
        g = None
        if cond is not None:
            if self.cond_channels == 0:
                raise ValueError("WaveNet: cond was given but the network was built with cond_channels=0")
            if cond.dim() != 3 or cond.size(1) != self.cond_channels or cond.size(2) not in (1, x.size(2)):
                raise ValueError(
                    f"WaveNet: cond must be [B, {self.cond_channels}, T={x.size(2)}] or "
                    f"[B, {self.cond_channels}, 1], got {tuple(cond.shape)}"
                )
            g = self.cond_layer(cond)  # [B, 2H * n_layers, T or 1], computed once for all layers
        elif self.cond_channels > 0:
            raise ValueError(f"WaveNet: built with cond_channels={self.cond_channels} but no cond was given")

        # Outputs of the convs below are fresh tensors, so in-place updates are safe for
        # autograd (conv backward does not need its output) and spare allocations.
        post_gate = self.dropout_position == "post_gate"
        output = None
        last = self.n_layers - 1
        for i in range(self.n_layers):
            x_in = self.in_layers[i](x)
            if not post_gate:
                x_in = self.drop(x_in)
            if g is not None:
                x_in = x_in.add_(g[:, 2 * h_ch * i : 2 * h_ch * (i + 1)])  # a view: no copy
            acts = gated_activation(x_in, h_ch)
            if post_gate:
                acts = self.drop(acts)
            res_skip = self.res_skip_layers[i](acts)
            if i < last:
                x = x + res_skip[:, :h_ch]
                if mask is not None:
                    x = x * mask
                skip = res_skip[:, h_ch:]
            else:
                skip = res_skip
            output = skip if output is None else output + skip
        if mask is not None:
            output = output * mask
        return output

    def remove_weight_norm(self) -> None:
        """Fold the weight norms into plain weights (outputs unchanged, inference faster)."""
        remove_weight_norm(self)

    def extra_repr(self) -> str:
        return (
            f"hidden_channels={self.hidden_channels}, kernel_size={self.kernel_size}, "
            f"dilation_rate={self.dilation_rate}, n_layers={self.n_layers}, "
            f"cond_channels={self.cond_channels}, dropout_position={self.dropout_position!r}"
        )
