"""Winograd's minimal filtering for the ONNX export of Glow-TTS's decoder and text encoder.

Nearly all of the decoder's time is its couplings' WaveNet input convolutions (kernel 5,
dilation 1: 81 % of its arithmetic in Glow-TTS base), and onnxruntime already runs a plain
``Conv`` near the CPU's float32 peak, so only less arithmetic makes them faster. Winograd's
F(m, r) (Lavin and Gray, 2016, "Fast Algorithms for Convolutional Neural Networks") computes
``m`` outputs of an ``r``-tap correlation with ``m + r - 1`` multiplications instead of
``m r``:

    y = A^T [ (G w) * (B^T x) ]      x: a tile of m + r - 1 inputs, y: its m outputs

Over channels, the element-wise product becomes ``m + r - 1`` matrix products of the
transformed weights ``G w [O, I]`` with the transformed tiles, so F(4, 5) does 8 products
where a direct convolution does 20 (40 % of the multiplications), and F(6, 5) 10 where it does
30 (a third). The transforms come from Toom-Cook interpolation at 0, +-1, +-2, +-1/2 (+-3/2
for F(6, 5)) and infinity, computed exactly in rationals and rounded to float32 once; the
result differs from the plain convolution by float rounding (F(4, 5): about 1e-5 on outputs of
magnitude 7, against 2e-6 for the plain one; the exported decoder's mel moves by about 3e-6, by
5e-6 with F(6, 5)). Measured in ``docs/onnx.md`` (``benchmarks/winograd_conv.py``).

The text encoder's feed-forward convolutions (kernel 3, 192 -> 768 -> 192 in Glow-TTS base:
80 % of its arithmetic) take F(4, 3) in frame order (:class:`WinogradConv1d`); the decoder's
convolutions take F(6, r) on frames in phase order (:mod:`flowspeech.inference.phase_order`).

Only the export uses it: the PyTorch path keeps PyTorch's own convolutions.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flowspeech.flows.wavenet import WaveNet
from flowspeech.inference.folding import FoldedWaveNetCouplingNet

# Interpolation points, in the order that keeps the transforms best conditioned.
POINTS = (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2), Fraction(-1, 2),
          Fraction(3, 2), Fraction(-3, 2))


class _ConstantReshape(torch.autograd.Function):
    """``Reshape`` to a shape written with ONNX's conventions (``0`` keeps that dimension of
    the input, ``-1`` is inferred), exported with the shape as a constant: the graph then has
    no shape arithmetic for it, which onnxruntime runs node by node on one thread."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return x.reshape([x.size(i) if s == 0 else s for i, s in enumerate(shape)])

    @staticmethod
    def symbolic(g, x, shape):
        return g.op("Reshape", x, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.int64)))


def constant_reshape(x: torch.Tensor, *shape: int) -> torch.Tensor:
    """``x`` reshaped to ``shape`` in ONNX's conventions (``0``: this dimension of ``x``, ``-1``:
    inferred), traced as one ``Reshape`` with a constant shape."""
    return _ConstantReshape.apply(x, shape)


def winograd_matrices(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A^T [m, a], G [a, r], B^T [a, a])`` of F(m, r), ``a = m + r - 1`` (float64): a
    correlation ``y_i = sum_k x_{i+k} w_k`` of ``a`` inputs is ``A^T ((G w) * (B^T x))``.

    It is the transpose of Toom-Cook multiplication of polynomials of ``m`` and ``r``
    coefficients: evaluate both at ``a - 1`` points and infinity, multiply, interpolate."""
    a = m + r - 1
    if m < 1 or r < 1 or a - 1 > len(POINTS):
        raise ValueError(f"F({m}, {r}) needs {a - 1} interpolation points; {len(POINTS)} are defined")
    points = POINTS[:a - 1]

    def evaluation(n: int) -> np.ndarray:  # [a, n]: a polynomial of n coefficients at the points
        rows = [[p ** j for j in range(n)] for p in points] + [[Fraction(0)] * (n - 1) + [Fraction(1)]]
        return np.array([[float(v) for v in row] for row in rows])

    return evaluation(m).T, evaluation(r), np.linalg.inv(evaluation(a)).T


class WinogradConv1d(nn.Module):
    """``conv`` (``nn.Conv1d``: kernel ``r`` of 3 or 5, stride 1, dilation 1, one group,
    padding ``r // 2``) computed by F(m, r), as a graph of ONNX's plain operators: the input
    transform is a depthwise ``Conv`` with stride ``m``, the ``a`` products one grouped 1x1
    ``Conv`` (faster on onnxruntime than a batched ``MatMul``), the output transform a ``MatMul``.

    Shapes: ``[B, I, T] -> [B, O, T]``, any ``T >= 1`` (the last tile is padded with zeros,
    as the convolution's own padding is)."""

    def __init__(self, conv: nn.Conv1d, m: int = 4):
        super().__init__()
        if not winograd_applies(conv):
            raise ValueError(f"WinogradConv1d takes a kernel of 3 or 5, stride 1, dilation 1, one group "
                             f"and 'same' padding; got {conv}")
        weight = conv.weight.detach().double()                                        # [O, I, r]
        out_ch, in_ch, r = weight.shape
        at, g, bt = winograd_matrices(m, r)
        self.m, self.r, self.a, self.in_ch, self.out_ch = m, r, m + r - 1, in_ch, out_ch
        u = torch.einsum("ar,oir->aoi", torch.from_numpy(g), weight)                  # [a, O, I]
        self.register_buffer("u", u.float().reshape(self.a * out_ch, in_ch, 1).contiguous())
        self.register_buffer("bt", torch.from_numpy(bt).float().unsqueeze(1).repeat(in_ch, 1, 1))
        self.register_buffer("at", torch.from_numpy(at).float())
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(out_ch)
        self.register_buffer("bias", bias.float().view(1, out_ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[2]
        # A constant padding (m - 1 more on the right gives ceil(T / m) tiles) and reshapes to
        # constant shapes: the graph holds no shape arithmetic but the final slice's.
        x = F.pad(x, (self.r // 2, self.r // 2 + self.m - 1))
        v = F.conv1d(x, self.bt, stride=self.m, groups=self.in_ch)                       # [B, I*a, n]
        v = constant_reshape(v, 0, self.in_ch, self.a, -1).transpose(1, 2)               # [B, a, I, n]
        v = constant_reshape(v, 0, self.a * self.in_ch, -1)
        products = F.conv1d(v, self.u, groups=self.a)                                    # [B, a*O, n]
        y = torch.matmul(self.at, constant_reshape(products, 0, self.a, -1))             # [B, m, O*n]
        y = constant_reshape(y, 0, self.m, self.out_ch, -1).permute(0, 2, 3, 1)          # [B, O, n, m]
        y = constant_reshape(y, 0, self.out_ch, -1)
        return y[:, :, :frames] + self.bias


def winograd_applies(conv: nn.Module) -> bool:
    """Whether ``conv`` is a convolution :class:`WinogradConv1d` computes (kernel 3 or 5)."""
    return (isinstance(conv, nn.Conv1d) and conv.kernel_size[0] in (3, 5) and conv.stride == (1,)
            and conv.dilation == (1,) and conv.groups == 1 and conv.padding == (conv.kernel_size[0] // 2,))


def use_winograd_input_convolutions(module: nn.Module, m: int = 4) -> int:
    """Replace, in place, every WaveNet input convolution (``in_layers`` of a :class:`WaveNet`
    or a :class:`~flowspeech.inference.folding.FoldedWaveNetCouplingNet`) under ``module``
    that :func:`winograd_applies` to by its :class:`WinogradConv1d`; returns how many."""
    replaced = 0
    for wavenet in [sub for sub in module.modules() if isinstance(sub, (WaveNet, FoldedWaveNetCouplingNet))]:
        for i, conv in enumerate(wavenet.in_layers):
            if winograd_applies(conv):
                wavenet.in_layers[i] = WinogradConv1d(conv, m)
                replaced += 1
    return replaced


def use_winograd_convolutions(module: nn.Module, m: int = 4) -> int:
    """Replace, in place, every convolution under ``module`` that :func:`winograd_applies` to
    by its :class:`WinogradConv1d`; returns how many."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if winograd_applies(child):
                setattr(parent, name, WinogradConv1d(child, m))
                replaced += 1
    return replaced
