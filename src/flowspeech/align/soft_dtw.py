"""Soft dynamic time warping (Cuturi & Blondel 2017, "Soft-DTW: a Differentiable Loss Function
for Time-Series", ICML, Sec. 2, eqs. 1-2, Algorithms 1 and 2) with the warp penalty of
Parallel Tacotron 2 (Elias et al. 2021, Sec. 3.4).

NaturalSpeech (Tan et al. 2022, Sec. 3.3) compares the prior, expanded with *predicted*
durations, with the posterior of the *true* number of frames: the two sequences differ in
length, so the frame-level loss (a KL divergence per frame pair) is summed along a soft
alignment instead of frame by frame. Given a pairwise cost ``cost[i, j]`` between frame ``i``
of one sequence (``N`` frames) and frame ``j`` of the other (``M`` frames), the value is the
dynamic programme (indices of ``R`` start at 1; ``cost`` is 0-indexed)::

    R[0, 0] = 0,   R[i, 0] = R[0, j] = +inf   (i, j >= 1)
    R[i, j] = cost[i - 1, j - 1] + softmin_g(R[i - 1, j - 1],
                                             R[i - 1, j] + warp_penalty,
                                             R[i, j - 1] + warp_penalty)
    soft_dtw = R[N, M]

with ``softmin_g(a) = -g * log(sum_k exp(-a_k / g))`` for ``g = gamma > 0`` and the plain
minimum for ``gamma = 0`` (hard DTW). Unrolled, ``R[N, M] = softmin_g`` over all monotonic
paths from (0, 0) to (N - 1, M - 1) with moves (1, 1), (1, 0), (0, 1) of the path's cost: its
cells' costs plus ``warp_penalty`` per non-diagonal move (Parallel Tacotron 2 discourages
stretching or skipping frames that way).

The gradient with respect to ``cost`` is the expected alignment ``E[i, j]`` (Cuturi & Blondel,
Sec. 2): the probability that cell ``(i, j)`` lies on the path under the Gibbs distribution
``p(path) ~ exp(-path_cost / gamma)``, in [0, 1], and the indicator of the best path in the
limit ``gamma -> 0``. It is computed by the backward recursion of Algorithm 2 instead of by
autograd through the forward recursion, which would store a graph node per cell.

Two implementations of the same arithmetic (float64 inside, agreeing to rounding):

- a numba kernel on the CPU, one item per thread (``prange`` over the batch), rows in pairs;
- torch operations on any device (CUDA included), a wavefront over the anti-diagonals
  ``i + j = const`` vectorised over batch and diagonal: ``N + M - 1`` steps of about 11
  small kernels forward and 10 backward. On a GPU that is bound by launch latency (5 to
  10 us each), an estimated 0.1 to 0.2 ms per diagonal forward and backward together, nearly
  independent of the batch size: some 0.2 to 0.3 s for ``N = M = 800`` (not measured
  here). Memory: the skewed ``R`` and its gradient, ``(N + M + 1) x (min(N, M) + 1)``
  float64 per item, plus one float64 copy of the cost.

:func:`soft_dtw` uses numba for CPU tensors when numba is importable, torch otherwise.
Numba's threads are those of :func:`flowspeech.align.maximum_path_numba`, with the same
caveat: on a machine busy with other processes, OpenMP threads that spin while they wait can
make a call several times slower than its work (``OMP_WAIT_POLICY=PASSIVE`` avoids that).
Batches under ``_PARALLEL_MIN_CELLS`` cells run on the calling thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.autograd.function import once_differentiable

try:
    import numba
    from numba import prange
except ImportError:  # pragma: no cover - numba is a dependency; the torch path still works
    numba = None
    prange = range

if numba is not None:
    from flowspeech.align import _numba_kernels
    from flowspeech.align._numba_kernels import _jit
else:  # pragma: no cover
    def _jit(**options):
        """Leaves the kernels as plain Python; they are never called without numba."""
        return lambda function: function

__all__ = ["soft_dtw"]

_INF = math.inf
_FLOAT64_MAX = float(np.finfo(np.float64).max)


def soft_dtw(
    cost: torch.Tensor,
    lengths_x: torch.Tensor | Sequence[int] | None = None,
    lengths_y: torch.Tensor | Sequence[int] | None = None,
    gamma: float = 0.01,
    warp_penalty: float = 0.0,
    normalize: bool = False,
) -> torch.Tensor:
    """Soft-DTW value of each item of a batch of pairwise cost matrices.

    Cuturi & Blondel 2017, eqs. 1-2 and Algorithm 1 (value), Algorithm 2 (gradient), with the
    warp penalty of Parallel Tacotron 2 (Elias et al. 2021, Sec. 3.4); the recursion is in the
    module docstring. Differentiable with respect to ``cost``: the gradient is the expected
    alignment (entries in [0, 1]) times the incoming gradient. ``gamma`` and ``warp_penalty``
    are constants (no gradient).

    Args:
        cost: ``[B, N, M]`` floating point, ``cost[b, i, j]`` the cost of aligning frame ``i``
            of the first sequence with frame ``j`` of the second (e.g. the KL divergence
            between the posterior and prior distributions of those frames). Must be finite, or
            ``+inf`` to forbid a cell, inside ``[:lengths_x[b], :lengths_y[b]]``; padding
            beyond is never used (NaN there is fine) and gets a zero gradient.
        lengths_x: ``[B]`` integers in ``[1, N]``, valid rows of each item; ``None``: all ``N``.
        lengths_y: ``[B]`` integers in ``[1, M]``, valid columns of each item; ``None``: all
            ``M``. Tensors may be on any device; lists of ints are accepted.
        gamma: smoothing ``>= 0``; ``0`` gives hard DTW (the minimum over paths, whose
            gradient is the best path's indicator; where predecessors of a cell tie, they
            share its gradient equally, one valid choice of subgradient). Small values
            (NaturalSpeech's soft-DTW loss is near-hard) stay accurate because the recursion
            runs in float64.
        warp_penalty: finite extra cost of every non-diagonal move ((1, 0) or (0, 1)).
        normalize: divide each value by ``lengths_x[b] + lengths_y[b]``. A path has between
            ``max(N, M)`` and ``N + M - 1`` cells, so the sum grows with the lengths; the
            quotient is a per-frame cost, comparable across items of different lengths, and
            keeps the longest items from dominating a batch mean.

    Returns:
        ``[B]``, dtype and device of ``cost``: ``R[lengths_x[b], lengths_y[b]]`` of each item
        (divided by ``lengths_x[b] + lengths_y[b]`` when ``normalize``).

    Raises:
        TypeError: ``cost`` is not a floating-point tensor, or lengths are not integers.
        ValueError: ``cost`` is not 3-D or has an empty sequence dimension, lengths are not
            ``[B]`` or out of range, ``gamma`` is negative or not finite, or ``warp_penalty``
            is not finite.
    """
    return _soft_dtw(cost, lengths_x, lengths_y, gamma, warp_penalty, normalize, backend=None)


def _soft_dtw(cost, lengths_x, lengths_y, gamma, warp_penalty, normalize, backend):
    """:func:`soft_dtw` with a choice of implementation: ``backend`` is ``"numba"`` (CPU; other
    devices are copied to the CPU and back), ``"torch"`` (the device of ``cost``), or ``None``
    (numba for CPU tensors when numba is importable, torch otherwise). Tests use it to check
    both paths."""
    lengths_x, lengths_y, gamma, warp_penalty = _check(cost, lengths_x, lengths_y, gamma,
                                                       warp_penalty)
    if backend is None:
        backend = "numba" if cost.device.type == "cpu" and numba is not None else "torch"
    elif backend not in ("numba", "torch"):
        raise ValueError(f"backend must be 'numba', 'torch' or None, got {backend!r}")
    elif backend == "numba" and numba is None:
        raise ValueError("backend 'numba' needs numba installed (pip install numba)")
    if cost.size(0) == 0:
        value = cost.sum(dim=(1, 2))  # [0], still attached to the graph
    else:
        value = _SoftDTW.apply(cost, lengths_x, lengths_y, gamma, warp_penalty, backend)
    if normalize:
        value = value / (lengths_x + lengths_y).to(device=value.device, dtype=value.dtype)
    return value


def _check(cost, lengths_x, lengths_y, gamma, warp_penalty):
    """Validates the arguments of :func:`soft_dtw`. Returns the lengths as ``[B]`` int64 CPU
    tensors (one host sync: the batch is cropped to the longest item anyway) and gamma and
    warp_penalty as floats."""
    if not isinstance(cost, torch.Tensor) or not cost.is_floating_point():
        raise TypeError(f"cost must be a floating-point tensor, got "
                        f"{getattr(cost, 'dtype', type(cost).__name__)}")
    if cost.dim() != 3:
        raise ValueError(f"cost must be [B, N, M] (a pairwise cost matrix per item), got shape "
                         f"{tuple(cost.shape)}")
    batch, n, m = cost.shape
    if n == 0 or m == 0:
        raise ValueError(f"cost must have N >= 1 and M >= 1 (no alignment of an empty "
                         f"sequence), got shape {tuple(cost.shape)}")
    lengths = []
    for name, given, size in (("lengths_x", lengths_x, n), ("lengths_y", lengths_y, m)):
        if given is None:
            lengths.append(torch.full((batch,), size, dtype=torch.long))
            continue
        given = torch.as_tensor(given)
        if given.is_floating_point() or given.is_complex() or given.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got dtype {given.dtype}")
        if given.shape != (batch,):
            raise ValueError(f"{name} must have shape [B] = [{batch}], got "
                             f"{tuple(given.shape)}")
        given = given.to(device="cpu", dtype=torch.long)
        bad = (given < 1) | (given > size)
        if bool(bad.any()):
            item = int(bad.nonzero()[0, 0])
            raise ValueError(f"{name} must be between 1 and {size} "
                             f"(cost.shape[{len(lengths) + 1}]), got {int(given[item])} for "
                             f"item {item}")
        lengths.append(given)
    try:
        gamma, warp_penalty = float(gamma), float(warp_penalty)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"gamma and warp_penalty must be real numbers: {error}") from None
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number >= 0 (0 for hard DTW), got {gamma}")
    if not math.isfinite(warp_penalty):
        raise ValueError(f"warp_penalty must be finite, got {warp_penalty}")
    return lengths[0], lengths[1], gamma, warp_penalty


class _SoftDTW(torch.autograd.Function):
    """``cost [B, N, M] -> R[lengths_x, lengths_y] [B]``; backward: Algorithm 2 (the expected
    alignment). Arguments are validated by :func:`_check`; lengths are ``[B]`` int64 on the
    CPU."""

    @staticmethod
    def forward(ctx, cost, lengths_x, lengths_y, gamma, warp_penalty, backend):
        n_max, m_max = int(lengths_x.max()), int(lengths_y.max())
        cropped = cost.detach()[:, :n_max, :m_max].to(torch.float64)
        if backend == "numba":
            value, saved = _forward_numba(cropped, lengths_x, lengths_y, gamma, warp_penalty)
        else:
            value, saved = _forward_torch(cropped, lengths_x, lengths_y, gamma, warp_penalty)
        ctx.save_for_backward(saved, lengths_x, lengths_y)
        ctx.settings = (gamma, warp_penalty, backend, cost.shape, cost.dtype, cost.device)
        return value.to(device=cost.device, dtype=cost.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_value):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        saved, lengths_x, lengths_y = ctx.saved_tensors
        gamma, warp_penalty, backend, shape, dtype, device = ctx.settings
        scale = grad_value.detach().to(torch.float64)
        if backend == "numba":
            grad = _backward_numba(saved, lengths_x, lengths_y, gamma, warp_penalty, scale.cpu())
        else:
            grad = _backward_torch(saved, lengths_x, lengths_y, gamma, warp_penalty,
                                   scale.to(saved.device))
        full = torch.zeros(shape, dtype=dtype, device=device)
        full[:, :grad.size(1), :grad.size(2)] = grad
        return full, None, None, None, None, None


# --- torch: wavefront over anti-diagonals -------------------------------------------------------
#
# R lives in a skewed buffer ``D[d, b, i] = R_b[i, d - i]``, ``[N + M + 1, B, N + 1]``: the cells
# of anti-diagonal ``d = i + j`` are one contiguous row per item, and their three predecessors
# are slices of the two previous diagonals:
#
#     R[i - 1, j - 1] = D[d - 2, :, i - 1],  R[i - 1, j] = D[d - 1, :, i - 1],
#     R[i, j - 1] = D[d - 1, :, i]
#
# so each step costs a handful of kernels over ``[B, min(N, M)]`` cells whatever the batch.


def _softmin_torch(args: torch.Tensor, gamma: float) -> torch.Tensor:
    """``softmin_gamma`` over dim 0 of ``args [3, B, L]``, as ``low - gamma * log(sum(exp((low -
    args) / gamma)))`` around the minimum ``low`` (the arithmetic of the numba kernel, and
    fewer kernels than ``torch.logsumexp``, which matters where launches dominate). ``+inf``
    entries are allowed; an all-``+inf`` column gives ``+inf``."""
    low = args.amin(0)
    if gamma == 0:
        return low
    # A finite stand-in for an all-inf column's minimum avoids inf - inf = NaN: its terms
    # become exp(-inf) = 0, the log -inf, and the result +inf as it should be.
    low.clamp_max_(_FLOAT64_MAX)
    total = (low - args).mul_(1.0 / gamma).exp_().sum(0)
    return low.sub_(total.log_(), alpha=gamma)


def _softmin_weights_torch(args: torch.Tensor, gamma: float) -> torch.Tensor:
    """Derivatives ``[3, B, L]`` of ``softmin_gamma(args)`` with respect to each argument: the
    softmax of ``-args / gamma``, or for ``gamma = 0`` the indicator of the minimum shared
    equally among exact ties (what the softmax gives tied arguments at any gamma). Columns
    whose arguments are all ``+inf`` (unreachable cells) get zeros rather than NaN."""
    if gamma == 0:
        low = args.amin(0, keepdim=True)
        ties = ((args == low) & torch.isfinite(low)).to(args.dtype)  # bool / int is float32
        return ties / ties.sum(0, keepdim=True).clamp_min(1)
    return torch.softmax(args * (-1.0 / gamma), dim=0).nan_to_num_(nan=0.0)


def _diagonal_args(D: torch.Tensor, d: int, lo: int, hi: int, warp_penalty: float):
    """Arguments ``[3, B, hi - lo + 1]`` of the soft minimum of the cells ``i = lo..hi`` of
    diagonal ``d``: diagonal, vertical and horizontal predecessor (the last two penalised)."""
    side = D[d - 1, :, lo - 1:hi + 1]
    if warp_penalty != 0:
        side = side + warp_penalty
    return torch.stack((D[d - 2, :, lo - 1:hi], side[:, :-1], side[:, 1:]))


def _diagonal_range(d: int, n: int, m: int) -> tuple[int, int]:
    """Rows ``i`` of the cells ``(i, d - i)`` with ``1 <= i <= n`` and ``1 <= d - i <= m``."""
    return max(1, d - m), min(n, d - 1)


def _forward_torch(cost, lengths_x, lengths_y, gamma, warp_penalty):
    """Algorithm 1 as a wavefront. ``cost``: ``[B, N, M]`` float64. Returns the values ``[B]``
    and the skewed ``D`` for the backward (``R`` of the transposed problem when ``N > M``)."""
    if cost.size(1) > cost.size(2):
        # Soft-DTW is symmetric under swapping the sequences; with the shorter one on rows the
        # buffer is (N + M + 1) x (min(N, M) + 1) per item instead of (max + 1).
        cost, lengths_x, lengths_y = cost.transpose(1, 2), lengths_y, lengths_x
    batch, n, m = cost.shape
    device = cost.device
    lengths_x, lengths_y = lengths_x.to(device), lengths_y.to(device)
    # Padding must be finite: the backward multiplies the zero occupancy of padded cells by
    # their weights, which would be NaN for NaN or inf costs there.
    valid = ((torch.arange(n, device=device) < lengths_x[:, None])[:, :, None]
             & (torch.arange(m, device=device) < lengths_y[:, None])[:, None, :])
    skewed_cost = _skew(torch.where(valid, cost, 0.0))
    D = torch.full((n + m + 1, batch, n + 1), _INF, dtype=torch.float64, device=device)
    D[0, :, 0] = 0.0
    for d in range(2, n + m + 1):
        lo, hi = _diagonal_range(d, n, m)
        soft = _softmin_torch(_diagonal_args(D, d, lo, hi, warp_penalty), gamma)
        torch.add(soft, skewed_cost[d - 2, :, lo - 1:hi], out=D[d, :, lo:hi + 1])
    value = D[lengths_x + lengths_y, torch.arange(batch, device=device), lengths_x]
    return value, D


def _backward_torch(D, lengths_x, lengths_y, gamma, warp_penalty, scale):
    """Algorithm 2 as a wavefront over the diagonals of ``D`` from :func:`_forward_torch`,
    last to first. ``scale``: ``[B]`` float64, the incoming gradient. Returns the gradient
    ``[B, N, M]`` float64 in the orientation of the cost given to the forward.

    ``E[i, j] = dR[N_b, M_b] / dR[i, j]`` is pushed rather than pulled: when diagonal ``d`` is
    reached every cell on it has received its share from its three successors, and each cell
    then hands ``E * weight`` to its three predecessors. Cells past an item's lengths start at
    0 and only receive from each other, so they stay 0.
    """
    # The forward put the shorter sequence on the rows (transposing when N > M).
    transposed = int(lengths_x.max()) > int(lengths_y.max())
    if transposed:
        lengths_x, lengths_y = lengths_y, lengths_x
    n = D.size(2) - 1
    m = D.size(0) - 1 - n
    batch, device = D.size(1), D.device
    lengths_x, lengths_y = lengths_x.to(device), lengths_y.to(device)
    E = torch.zeros_like(D)
    E[lengths_x + lengths_y, torch.arange(batch, device=device), lengths_x] = 1.0
    for d in range(n + m, 1, -1):
        lo, hi = _diagonal_range(d, n, m)
        weights = _softmin_weights_torch(_diagonal_args(D, d, lo, hi, warp_penalty), gamma)
        shares = weights.mul_(E[d, :, lo:hi + 1])
        E[d - 2, :, lo - 1:hi] += shares[0]
        side = E[d - 1, :, lo - 1:hi + 1]
        side[:, :-1] += shares[1]
        side[:, 1:] += shares[2]
    grad = _unskew(E) * scale[:, None, None]
    return grad.transpose(1, 2) if transposed else grad


def _skew(cost: torch.Tensor) -> torch.Tensor:
    """``[B, N, M] -> [N + M - 1, B, N]``, ``out[d, b, i] = cost[b, i, d - i]`` (0 where
    ``d - i`` is outside ``[0, M)``).

    One copy: in ``cost`` padded with ``N`` zero columns (width ``W = M + N``), element
    ``[b, i, d - i]`` is at ``b N W + i (W - 1) + d``, a strided view; out-of-range ``d - i``
    land on the zero columns (of row ``i - 1`` when ``d < i``).
    """
    batch, n, m = cost.shape
    width = n + m
    padded = cost.new_zeros(batch, n, width)
    padded[:, :, :m] = cost
    return padded.as_strided((n + m - 1, batch, n), (1, n * width, width - 1)).contiguous()


def _unskew(E: torch.Tensor) -> torch.Tensor:
    """``E [N + M + 1, B, N + 1]`` skewed over R's indices -> ``[B, N, M]`` over cost's:
    ``out[b, i, j] = E[i + j + 2, b, i + 1]``, a strided view of the contiguous ``E``."""
    diagonals, batch, rows = E.shape
    n, m = rows - 1, diagonals - rows
    step = batch * rows  # one diagonal
    return E.as_strided((batch, n, m), (rows, step + 1, step), 2 * step + 1)


# --- numba: one item per thread, rows in pairs --------------------------------------------------


@_jit(nogil=True)
def _softmin3(a, b, c, gamma, inv_gamma):
    """``softmin_gamma(a, b, c)`` computed around the minimum (no overflow); ``+inf`` when all
    three are ``+inf`` (checked first: ``inf - inf`` would be NaN)."""
    low = min(a, min(b, c))
    if gamma == 0.0 or low == _INF:
        return low
    total = math.exp((low - a) * inv_gamma) + math.exp((low - b) * inv_gamma) \
        + math.exp((low - c) * inv_gamma)
    return low - gamma * math.log(total)


@_jit(nogil=True)
def _softmin3_weights(a, b, c, gamma, inv_gamma):
    """Derivatives of :func:`_softmin3` with respect to ``a, b, c`` (they sum to 1, or are all
    0 when all three are ``+inf``); for ``gamma = 0`` ties share equally."""
    low = min(a, min(b, c))
    if low == _INF:
        return 0.0, 0.0, 0.0
    if gamma == 0.0:
        wa = 1.0 if a == low else 0.0
        wb = 1.0 if b == low else 0.0
        wc = 1.0 if c == low else 0.0
    else:
        wa = math.exp((low - a) * inv_gamma)
        wb = math.exp((low - b) * inv_gamma)
        wc = math.exp((low - c) * inv_gamma)
    total = wa + wb + wc
    return wa / total, wb / total, wc / total


@_jit(nogil=True)
def _cell(R, cost, i, j, gamma, inv_gamma, warp_penalty):
    """``R[i, j]`` from its three predecessors (the recursion of Algorithm 1)."""
    R[i, j] = cost[i - 1, j - 1] + _softmin3(
        R[i - 1, j - 1], R[i - 1, j] + warp_penalty, R[i, j - 1] + warp_penalty,
        gamma, inv_gamma)


@_jit(nogil=True)
def _forward_one(R, cost, n, m, gamma, inv_gamma, warp_penalty):
    """Algorithm 1 for one item: fills ``R[:n + 1, :m + 1]`` (``R``: ``[N + 1, M + 1]``
    float64) from ``cost[:n, :m]`` (``[N, M]`` float64).

    Along a row every cell waits for its left neighbour's exp and log (a chain of latencies),
    so rows are computed in pairs with the second one a column behind: ``(i, j)`` and
    ``(i + 1, j - 1)`` do not depend on each other and the core overlaps them (about 1.3 times
    faster than one row at a time; the arithmetic of each cell is unchanged).
    """
    R[0, 0] = 0.0
    for j in range(1, m + 1):
        R[0, j] = _INF
    for i in range(1, n + 1):
        R[i, 0] = _INF
    for i in range(1, n + 1, 2):
        if i == n:
            for j in range(1, m + 1):
                _cell(R, cost, i, j, gamma, inv_gamma, warp_penalty)
            break
        _cell(R, cost, i, 1, gamma, inv_gamma, warp_penalty)
        for j in range(2, m + 1):
            _cell(R, cost, i, j, gamma, inv_gamma, warp_penalty)
            _cell(R, cost, i + 1, j - 1, gamma, inv_gamma, warp_penalty)
        _cell(R, cost, i + 1, m, gamma, inv_gamma, warp_penalty)


@_jit(nogil=True)
def _backward_one(grad, R, n, m, gamma, inv_gamma, warp_penalty, scale):
    """Algorithm 2 for one item: writes ``scale * E`` into ``grad[:n, :m]`` (``[N, M]``
    float64, zero elsewhere on entry), pushing each cell's ``E`` to its predecessors in
    reverse row-major order (all successors of a cell come before it)."""
    E = np.zeros((n + 1, m + 1))
    E[n, m] = 1.0
    for i in range(n, 0, -1):
        for j in range(m, 0, -1):
            e = E[i, j]
            if e == 0.0:
                continue  # nothing to pass on (and no 0 * NaN from an unreachable cell)
            grad[i - 1, j - 1] = scale * e
            wa, wb, wc = _softmin3_weights(R[i - 1, j - 1], R[i - 1, j] + warp_penalty,
                                           R[i, j - 1] + warp_penalty, gamma, inv_gamma)
            E[i - 1, j - 1] += e * wa
            E[i - 1, j] += e * wb
            E[i, j - 1] += e * wc


@_jit(nogil=True, parallel=True)
def _forward_batch(value, R, cost, lengths_x, lengths_y, gamma, warp_penalty, order):
    """Soft-DTW of each item, in parallel over the batch.

    Args:
        value: ``[B]`` float64, written.
        R: ``[B, N + 1, M + 1]`` float64, written inside each item's lengths.
        cost: ``[B, N, M]`` float64, C-contiguous; read inside each item's lengths only.
        lengths_x, lengths_y: ``[B]`` int64 in ``[1, N]`` and ``[1, M]``.
        gamma, warp_penalty: floats, ``gamma >= 0``.
        order: ``[B]`` int64 permutation: items are handed to threads in this order.
    """
    inv_gamma = 1.0 / gamma if gamma > 0.0 else 0.0
    for k in prange(order.shape[0]):
        b = order[k]
        n, m = lengths_x[b], lengths_y[b]
        _forward_one(R[b], cost[b], n, m, gamma, inv_gamma, warp_penalty)
        value[b] = R[b, n, m]


@_jit(nogil=True, parallel=True)
def _backward_batch(grad, R, lengths_x, lengths_y, gamma, warp_penalty, scale, order):
    """Expected alignment times ``scale[b]`` of each item into ``grad`` (``[B, N, M]`` float64,
    written in full), in parallel over the batch; other arguments as in
    :func:`_forward_batch`."""
    inv_gamma = 1.0 / gamma if gamma > 0.0 else 0.0
    for k in prange(order.shape[0]):
        b = order[k]
        grad[b] = 0.0
        _backward_one(grad[b], R[b], lengths_x[b], lengths_y[b], gamma, inv_gamma,
                      warp_penalty, scale[b])


# Below this many cells in a batch (about 2 ms of work on one core) the items are run one
# after the other from Python instead of in a parallel region: starting one costs tens of
# microseconds on an idle machine, and milliseconds when other processes keep the cores busy
# and OpenMP's threads spin while they wait.
_PARALLEL_MIN_CELLS = 1 << 16


def _work_order(lengths_x: torch.Tensor, lengths_y: torch.Tensor) -> np.ndarray:
    """Largest items first, one at a time per thread: balances the threads' loads."""
    return torch.argsort(lengths_x * lengths_y, descending=True).numpy()


def _parallel(lengths_x: torch.Tensor, lengths_y: torch.Tensor) -> bool:
    """Whether the batch is worth a parallel region (see ``_PARALLEL_MIN_CELLS``)."""
    return len(lengths_x) > 1 and int((lengths_x * lengths_y).sum()) >= _PARALLEL_MIN_CELLS


def _forward_numba(cost, lengths_x, lengths_y, gamma, warp_penalty):
    """Algorithm 1 with :func:`_forward_batch`. ``cost``: ``[B, N, M]`` float64 on any device.
    Returns the values ``[B]`` (CPU) and ``R`` ``[B, N + 1, M + 1]`` (CPU) for the backward."""
    cost = cost.cpu().contiguous()
    batch, n, m = cost.shape
    R = torch.empty(batch, n + 1, m + 1, dtype=torch.float64)
    value = torch.empty(batch, dtype=torch.float64)
    if _parallel(lengths_x, lengths_y):
        with _numba_kernels.parallel_region():
            _forward_batch(value.numpy(), R.numpy(), cost.numpy(), lengths_x.numpy(),
                           lengths_y.numpy(), gamma, warp_penalty,
                           _work_order(lengths_x, lengths_y))
        return value, R
    inv_gamma = 1.0 / gamma if gamma > 0 else 0.0
    R_items, cost_items = R.numpy(), cost.numpy()
    for b, (n, m) in enumerate(zip(lengths_x.tolist(), lengths_y.tolist())):
        _forward_one(R_items[b], cost_items[b], n, m, gamma, inv_gamma, warp_penalty)
        value[b] = R_items[b, n, m]
    return value, R


def _backward_numba(R, lengths_x, lengths_y, gamma, warp_penalty, scale):
    """Algorithm 2 with :func:`_backward_batch`; returns ``[B, N, M]`` float64 on the CPU."""
    batch = R.size(0)
    grad = torch.empty(batch, R.size(1) - 1, R.size(2) - 1, dtype=torch.float64)
    if _parallel(lengths_x, lengths_y):
        with _numba_kernels.parallel_region():
            _backward_batch(grad.numpy(), R.numpy(), lengths_x.numpy(), lengths_y.numpy(),
                            gamma, warp_penalty, scale.contiguous().numpy(),
                            _work_order(lengths_x, lengths_y))
        return grad
    inv_gamma = 1.0 / gamma if gamma > 0 else 0.0
    grad.zero_()
    grad_items, R_items = grad.numpy(), R.numpy()
    for b, (n, m, g) in enumerate(zip(lengths_x.tolist(), lengths_y.tolist(), scale.tolist())):
        _backward_one(grad_items[b], R_items[b], n, m, gamma, inv_gamma, warp_penalty, g)
    return grad
