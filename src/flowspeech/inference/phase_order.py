"""Glow-TTS's decoder inverse with its frames in phase order, for the Winograd export.

Winograd's F(m, r) (:mod:`flowspeech.inference.winograd`) computes a convolution on tiles of
``m`` output frames. On frames in their natural order, each layer transposes its input into
tiles and its output back, and onnxruntime spends on these transposes, and on the shape
arithmetic of the reshapes around them, about a third of what the convolutions take.

Every operator of the flow decoder except the couplings' kernel-``r`` convolutions works frame
by frame: the 1x1 convolutions, the gates, the affine maps, the masks. So the frames can be put
in *phase order* once, at the decoder's input, and back once at its output. With tiles of
six frames (F(6, r)), frame ``t = 6 q + p`` goes to ``[:, p, :, q]`` of a ``[B, 6, C, T / 6]``
tensor, and it stays there through all the flows. In that order a tile's inputs are phases of
three neighbouring tiles, and a tile's six outputs land where they belong with no transpose:

    tile q reads frames 6q - r//2 ... 6q - r//2 + 9     (phases 4, 5 of tile q - 1, all six of
                                                          tile q, phases 0, 1 of tile q + 1: r = 5)
    V = B^T [X_0 ... X_9]        one Conv, 6 -> 10 channels, kernel 3 over the tiles  [B, 10, I, T/6]
    P = (G w) * V                one grouped 1x1 Conv (10 groups)                     [B, 10, O, T/6]
    Y = A^T P                    one MatMul                                           [B, 6, O, T/6]

The 1x1 convolutions run on the six phases as a batch (``[6 B, C, 1, T/6]``). Each
convolution's bias rides in the products' bias (a vector ``c`` with ``A^T c = 1`` puts it on
all six outputs). The squeeze by two and the phase order are one transpose at the input and
one at the output.

Six phases rather than F(4, r)'s four: F(6, 5) does 10 products per 6 frames where F(4, 5)
does 8 per 4, 17 % fewer. Glow-TTS base's decoder graph takes 6 % less time on one thread and
2-3 % less on two; its mel moves by 5e-6 instead of 2.4e-6, and its transformed weights are
twice the kernels instead of 8/5 of them (``docs/onnx.md``).

Every convolution is 2-D (height 1 where the model's is 1-D), which onnxruntime runs with its
blocked kernels, and every reshape has a constant shape (ONNX's ``0`` for a dimension kept,
``-1`` for the one inferred), so the graph holds no shape arithmetic: onnxruntime runs such
small nodes one at a time, and they took as long as a third of the convolutions.

The decoder is first folded (:func:`~flowspeech.inference.folding.fold_flow_decoder`). The
result is the decoder's inverse to float rounding (Glow-TTS base: about 2e-6 on a mel of
magnitude 3). Export only; the numbers are in ``docs/onnx.md``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flowspeech.flows.coupling import AffineCoupling, sigmoid_log_scale
from flowspeech.inference.folding import (
    ChannelAffineFlow,
    FoldedWaveNetCouplingNet,
    fold_flow_decoder,
)
from flowspeech.inference.winograd import constant_reshape, winograd_matrices
from flowspeech.models.glow_tts import FlowDecoder

__all__ = ["PHASES", "PhaseOrderDecoder", "phase_order_applies"]

PHASES = 6  # F(6, r): the tile's output frames, and the number of phases


def phase_order_applies(decoder: nn.Module) -> bool:
    """Whether :class:`PhaseOrderDecoder` computes this Glow-TTS ``FlowDecoder``: every coupling
    unconditioned (one speaker), affine in Glow's parameterisation, with WaveNet layers of
    kernel 3 or 5 and dilation 1."""
    if not isinstance(decoder, FlowDecoder):
        return False
    for layer in decoder.flows:
        if isinstance(layer, AffineCoupling):
            net = getattr(layer, "net", None)
            wn = getattr(net, "wn", None)
            if (wn is None or wn.cond_channels or layer.mean_only or layer.parameterization != "glow"
                    or wn.kernel_size not in (3, 5) or wn.dilation_rate != 1):
                return False
    return True


class _PhaseConv1x1(nn.Module):
    """A 1x1 convolution on phase-ordered ``[B, P, I, n] -> [B, P, O, n]`` (``P`` phases): a
    2-D one on the phases as a batch, ``[P B, I, 1, n]``, a view whose shape needs no
    arithmetic."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().reshape(weight.size(0), -1, 1, 1).clone())
        self.register_buffer("bias", bias.detach().clone())
        self.out_ch, self.in_ch = self.weight.shape[:2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(constant_reshape(x, -1, self.in_ch, 1, 0), self.weight, self.bias)
        return constant_reshape(y, -1, PHASES, self.out_ch, 0)


class PhaseWinogradConv(nn.Module):
    """A kernel-``r`` convolution (dilation 1, "same" padding, ``r`` of 3 or 5) on
    phase-ordered frames by F(P, r), ``P`` the phases. ``[B, P, I, n] -> [B, P, O, n]``;
    frames beyond the sequence must be zero (they are masked)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        weight = weight.detach().double()
        out_ch, in_ch, r = weight.shape
        at, g, bt = winograd_matrices(PHASES, r)
        a = PHASES + r - 1
        self.a, self.in_ch, self.out_ch = a, in_ch, out_ch
        u = torch.einsum("ar,oir->aoi", torch.from_numpy(g), weight)                      # [a, O, I]
        self.register_buffer("u", u.float().reshape(a * out_ch, in_ch, 1, 1).contiguous())
        # A^T c = 1: the bias added to every product group j as c_j b reaches every output once.
        c = np.linalg.lstsq(at, np.ones(PHASES), rcond=None)[0]                            # [a]
        products_bias = torch.from_numpy(c).view(a, 1) * bias.detach().double().view(1, out_ch)
        self.register_buffer("products_bias", products_bias.reshape(-1).float())
        # The input transform B^T as a convolution over the tiles, the phases its channels:
        # tile q reads frames P q - r // 2 + k, k = 0 .. a - 1, and frame P (q + d - 1) + p is
        # phase p of tile q + d - 1, kernel tap d (0, 1, 2: r // 2 <= P reaches one tile each way).
        transform = torch.zeros(a, PHASES, 1, 3, dtype=torch.float64)
        for p in range(PHASES):
            for d in range(3):
                k = PHASES * (d - 1) + p + r // 2
                if 0 <= k < a:
                    transform[:, p, 0, d] = torch.from_numpy(bt[:, k])
        self.register_buffer("input_transform", transform.float())                      # [a, P, 1, 3]
        self.register_buffer("at", torch.from_numpy(at).float())                         # [P, a]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = F.conv2d(x, self.input_transform, padding=(0, 1))                            # [B, a, I, n]
        products = F.conv2d(constant_reshape(v, 0, self.a * self.in_ch, 1, -1), self.u, self.products_bias,
                            groups=self.a)                                                # [B, a*O, 1, n]
        y = torch.matmul(self.at, constant_reshape(products, 0, self.a, -1))             # [B, P, O*n]
        return constant_reshape(y, 0, PHASES, self.out_ch, -1)


class PhaseOrderCoupling(nn.Module):
    """The inverse of an :class:`AffineCoupling` whose network is a
    :class:`FoldedWaveNetCouplingNet`, on phase-ordered frames ``[B, P, C, n]``."""

    def __init__(self, coupling: AffineCoupling) -> None:
        super().__init__()
        net: FoldedWaveNetCouplingNet = coupling.net
        self.sigmoid_scale = coupling.sigmoid_scale
        self.hidden_channels, self.n_layers = net.hidden_channels, net.n_layers
        self.c_a = net.start.weight.size(1)  # the channels that condition the others
        self.start = _PhaseConv1x1(net.start.weight, net.start.bias)
        first = net.in_layers[0]
        # The first layer reads the coupling channels and the mask (its start bias's term).
        self.in_layers = nn.ModuleList(
            [PhaseWinogradConv(torch.cat([first.weight, net.mask_layer.weight], dim=1), first.bias)]
            + [PhaseWinogradConv(conv.weight, conv.bias) for conv in list(net.in_layers)[1:]])
        self.res_skip_layers = nn.ModuleList([_PhaseConv1x1(conv.weight, conv.bias) for conv in net.res_skip_layers])
        self.c_b = self.res_skip_layers[-1].out_ch // 2  # the channels transformed: shift and log-scale each

    def forward(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        c_a = self.c_a
        y_a, y_b = y[:, :, :c_a], y[:, :, c_a:]
        hidden, last = self.hidden_channels, self.n_layers - 1
        h = self.start(y_a) * mask
        output = None
        for i in range(self.n_layers):
            a = self.in_layers[i](torch.cat([y_a, mask], dim=2) if i == 0 else h)
            acts = torch.tanh(a[:, :, :hidden]) * torch.sigmoid(a[:, :, hidden:])
            res_skip = self.res_skip_layers[i](acts)
            if i < last:
                h = (h + res_skip[:, :, :hidden]) * mask
                skip = res_skip[:, :, hidden:]
            else:
                skip = res_skip
            output = skip if output is None else output + skip
        c_b = self.c_b
        shift, log_s = output[:, :, :c_b], output[:, :, c_b:]
        if self.sigmoid_scale:
            log_s = sigmoid_log_scale(log_s)
        x_b = (y_b - shift) * torch.exp(-log_s)
        return torch.cat([y_a, x_b], dim=2) * mask


class PhaseOrderChannelAffine(nn.Module):
    """The inverse of a :class:`ChannelAffineFlow` on phase-ordered frames."""

    def __init__(self, layer: ChannelAffineFlow) -> None:
        super().__init__()
        self.conv = _PhaseConv1x1(layer.inverse_weight, layer.inverse_bias)

    def forward(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.conv(y) * mask


class PhaseOrderDecoder(nn.Module):
    """A Glow-TTS ``FlowDecoder``'s inverse (``z -> mel``), folded, its kernel-``r``
    convolutions by F(6, r) and its frames in phase order between the input and the output
    (see the module's docstring). Export only: it has no forward direction.

    Shapes: ``inverse(z [B, C, T], mask [B, 1, T]) -> [B, C, T]``, ``T`` a multiple of
    ``n_sqz`` (Glow-TTS trims lengths so).
    """

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        if not phase_order_applies(decoder):
            raise ValueError("PhaseOrderDecoder takes a one-speaker Glow-TTS decoder whose couplings' "
                             "WaveNets have kernel 3 or 5 and dilation 1")
        self.n_sqz = decoder.n_sqz
        layers: list[nn.Module] = []
        for layer in reversed(list(fold_flow_decoder(decoder.flows))):
            if isinstance(layer, AffineCoupling):
                layers.append(PhaseOrderCoupling(layer))
            elif isinstance(layer, ChannelAffineFlow):
                layers.append(PhaseOrderChannelAffine(layer))
            else:
                raise TypeError(f"PhaseOrderDecoder: no phase-order inverse for {type(layer).__name__}")
        self.layers = nn.ModuleList(layers)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("PhaseOrderDecoder computes the inverse only (mel from z)")

    def inverse(self, z: torch.Tensor, mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        if g is not None:
            raise ValueError("PhaseOrderDecoder: built for one speaker")
        b, channels, frames = z.shape
        f = self.n_sqz
        n = (frames + f * PHASES - 1) // (f * PHASES)                # tiles of P squeezed frames
        # Constant pads, then a slice: the traced graph keeps the length dynamic.
        z = F.pad(z * mask, (0, f * PHASES - 1))[:, :, :n * f * PHASES]
        # The squeeze keeps the mask of each group's last frame (flowspeech.flows.squeeze).
        squeezed_mask = F.pad(mask[:, :, f - 1::f], (0, PHASES))[:, :, :n * PHASES]
        # Input frame 2Pq + 2p + k (f = 2) is squeezed frame Pq + p, channel k C + c: phase p, tile q.
        x = z.reshape(b, channels, n, PHASES, f).permute(0, 3, 4, 1, 2).reshape(b, PHASES, f * channels, n)
        phase_mask = squeezed_mask.reshape(b, 1, n, PHASES).permute(0, 3, 1, 2)        # [B, P, 1, n]
        x = x * phase_mask
        for layer in self.layers:
            x = layer(x, phase_mask)
        y = x.reshape(b, PHASES, f, channels, n).permute(0, 3, 4, 1, 2).reshape(b, channels, n * f * PHASES)
        return y[:, :, :frames] * mask
