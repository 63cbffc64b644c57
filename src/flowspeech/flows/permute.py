"""Fixed channel permutations between couplings (log-determinant 0).

A coupling leaves its first half unchanged, so consecutive couplings need the halves
exchanged. Glow-TTS and WaveGlow learn the exchange (invertible 1x1 convs); FloWaveNet
swaps the halves (``model.change_order``) and VITS / NaturalSpeech prior flows reverse the
channel order (``modules.Flip``), as Real NVP (Dinh et al. 2017, section 3.5) alternates masks.
"""

from __future__ import annotations

import torch

from flowspeech.flows.base import Flow, check_input, logdet_dtype

__all__ = ["ChannelFlip", "ChannelSwap"]


class ChannelFlip(Flow):
    """Reverse the channel order (VITS ``Flip``): ``y[:, c] = x[:, C - 1 - c]``; logdet 0.

    Shapes: ``x``, ``y`` ``[B, C, T]``; ``mask`` ``[B, 1, T]``; ``logdet`` ``[B]``.
    """

    def forward(self, x, mask=None, cond=None):
        check_input(x, mask, None, "ChannelFlip")
        y = torch.flip(x, [1])
        if mask is not None:
            y = y * mask
        return y, x.new_zeros(x.size(0), dtype=logdet_dtype(x))

    def inverse(self, y, mask=None, cond=None):
        return self.forward(y, mask)[0]


class ChannelSwap(Flow):
    """Exchange the two halves (FloWaveNet ``change_order``): ``y = [x_b, x_a]``; logdet 0.

    ``x_a`` is the first ``C // 2`` channels, as in :class:`~flowspeech.flows.AffineCoupling`.
    FloWaveNet swaps the halves of its conditioning too; that is the model's business, as
    ``cond`` is an input of the flow and not transformed by it.

    Shapes: ``x``, ``y`` ``[B, C, T]``; ``mask`` ``[B, 1, T]``; ``logdet`` ``[B]``.
    """

    def forward(self, x, mask=None, cond=None):
        check_input(x, mask, None, "ChannelSwap")
        c_a = x.size(1) // 2
        y = torch.cat([x[:, c_a:], x[:, :c_a]], dim=1)
        if mask is not None:
            y = y * mask
        return y, x.new_zeros(x.size(0), dtype=logdet_dtype(x))

    def inverse(self, y, mask=None, cond=None):
        check_input(y, mask, None, "ChannelSwap")
        c_b = y.size(1) - y.size(1) // 2  # the swapped-in second half comes first
        x = torch.cat([y[:, c_b:], y[:, :c_b]], dim=1)
        if mask is not None:
            x = x * mask
        return x
