"""Flow layers shared by every model: Glow-TTS, WaveGlow, FloWaveNet and NaturalSpeech.

Every layer maps ``x [B, C, T]`` (with ``mask [B, 1, T]`` and optional ``cond``) to
``(y, logdet [B])`` and back with ``inverse``; see ``docs/flows.md`` for the equations and
for how the authors' checkpoints map onto these modules.
"""

from flowspeech.flows.actnorm import ActNorm
from flowspeech.flows.base import (
    Flow,
    call_in_own_dtype,
    ensure_finite,
    remove_weight_norm,
    weight_norm,
)
from flowspeech.flows.coupling import (
    AffineCoupling,
    CouplingNet,
    WaveNetCouplingNet,
    set_coupling_dtype,
)
from flowspeech.flows.invconv import GroupedInvertibleConv1x1, InvertibleConv1x1
from flowspeech.flows.permute import ChannelFlip, ChannelSwap
from flowspeech.flows.sequential import FlowSequence
from flowspeech.flows.squeeze import squeeze, unsqueeze
from flowspeech.flows.wavenet import WaveNet, gated_activation

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "ChannelFlip",
    "ChannelSwap",
    "CouplingNet",
    "Flow",
    "FlowSequence",
    "GroupedInvertibleConv1x1",
    "InvertibleConv1x1",
    "WaveNet",
    "WaveNetCouplingNet",
    "call_in_own_dtype",
    "ensure_finite",
    "gated_activation",
    "remove_weight_norm",
    "set_coupling_dtype",
    "squeeze",
    "unsqueeze",
    "weight_norm",
]
