"""A chain of flow layers, itself a flow."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from flowspeech.flows.base import Flow, check_input, logdet_dtype

__all__ = ["FlowSequence"]


class FlowSequence(nn.ModuleList, Flow):
    """Composition ``f_n o ... o f_1`` of flow layers (Rezende & Mohamed 2015, eq. 6).

    ``forward`` runs the layers in order and sums their log-determinants (the chain rule);
    ``inverse`` runs their inverses in reverse order. Every layer receives the same ``mask``
    and ``cond``. It is an ``nn.ModuleList``: index it, iterate over it, ``append`` to it; its
    state-dict keys are ``"{i}.{param}"``, the layout of the authors' ``nn.ModuleList`` of
    flows (Glow-TTS ``decoder.flows``).

    Args:
        layers: flow layers (``forward(x, mask, cond) -> (y, logdet)``,
            ``inverse(y, mask, cond) -> x``).

    Shapes: ``x``, ``y`` ``[B, C, T]``; ``mask`` ``[B, 1, T]``; ``logdet`` ``[B]``.
    """

    def __init__(self, layers: Iterable[nn.Module] = ()) -> None:
        super().__init__(layers)

    def forward(self, x, mask=None, cond=None):
        check_input(x, mask, None, "FlowSequence")
        logdet = x.new_zeros(x.size(0), dtype=logdet_dtype(x))
        for layer in self:
            x, layer_logdet = layer(x, mask, cond)
            logdet = logdet + layer_logdet
        return x, logdet

    def inverse(self, y, mask=None, cond=None):
        check_input(y, mask, None, "FlowSequence")
        for layer in reversed(self):
            y = layer.inverse(y, mask, cond)
        return y
