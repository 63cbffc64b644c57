"""Tests of soft-DTW (flowspeech.align.soft_dtw): values and expected alignments against a
brute-force enumeration of all monotonic paths, per-item lengths against unpadded items,
gradients against finite differences, the numba and torch implementations against each
other, and argument checks."""

from __future__ import annotations

import functools
import importlib
import math

import numpy as np
import pytest
import torch

from flowspeech.align import soft_dtw
from flowspeech.align.soft_dtw import _soft_dtw

torch.set_num_threads(1)

BACKENDS = ["numba", "torch"]
# The module itself: the package's attribute ``soft_dtw`` is the function of the same name.
soft_dtw_module = importlib.import_module("flowspeech.align.soft_dtw")


def run(cost, lengths_x=None, lengths_y=None, gamma=0.01, warp_penalty=0.0, normalize=False,
        backend=None):
    return _soft_dtw(cost, lengths_x, lengths_y, gamma, warp_penalty, normalize, backend)


@functools.lru_cache(maxsize=None)
def all_paths(n, m):
    """Every monotonic path from (0, 0) to (n - 1, m - 1) with moves (1, 1), (1, 0), (0, 1), as
    ``(cells [P, n, m] 0/1, non-diagonal move counts [P])``."""
    paths = []

    def extend(path, warps):
        i, j = path[-1]
        if (i, j) == (n - 1, m - 1):
            paths.append((path, warps))
            return
        for di, dj in ((1, 1), (1, 0), (0, 1)):
            if i + di < n and j + dj < m:
                extend(path + [(i + di, j + dj)], warps + (di + dj == 1))

    extend([(0, 0)], 0)
    cells = np.zeros((len(paths), n, m))
    for k, (path, _) in enumerate(paths):
        for i, j in path:
            cells[k, i, j] = 1.0
    return cells, np.array([warps for _, warps in paths], dtype=np.float64)


def brute_force(cost, gamma, warp_penalty):
    """Soft-DTW of one ``[n, m]`` float64 array by enumeration, and the expected alignment
    (the best path for ``gamma = 0``, assumed unique)."""
    cells, warps = all_paths(*cost.shape)
    # where, not cells * cost: 0 * inf would be NaN for forbidden cells off a path.
    path_costs = np.where(cells > 0, cost[None], 0.0).sum((1, 2)) + warp_penalty * warps
    if gamma == 0:
        best = int(np.argmin(path_costs))
        return path_costs[best], cells[best]
    scaled = -path_costs / gamma
    top = scaled.max()
    weights = np.exp(scaled - top)
    value = -gamma * (top + np.log(weights.sum()))
    return value, np.tensordot(weights / weights.sum(), cells, axes=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma", [0.0, 0.05, 0.5, 2.0])
@pytest.mark.parametrize("warp_penalty", [0.0, 0.7])
def test_matches_brute_force(backend, gamma, warp_penalty):
    rng = np.random.default_rng(int(gamma * 100) + int(warp_penalty * 10))
    for n in range(1, 6):
        for m in range(1, 6):
            cost = torch.from_numpy(rng.uniform(0.0, 2.0, size=(1, n, m))).requires_grad_()
            value = run(cost, gamma=gamma, warp_penalty=warp_penalty, backend=backend)
            grad, = torch.autograd.grad(value.sum(), cost)
            expected, alignment = brute_force(cost.detach()[0].numpy(), gamma, warp_penalty)
            assert value.item() == pytest.approx(expected, rel=1e-12, abs=1e-12), (n, m)
            # The gradient is the expected alignment (the best path's indicator for gamma 0).
            np.testing.assert_allclose(grad[0].numpy(), alignment, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma", [0.0, 0.3])
def test_forbidden_cells(backend, gamma):
    # +inf costs forbid cells; the unreachable cells they create must not turn into NaNs.
    cost = torch.rand(1, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cost[0, 0, 1:] = math.inf  # no horizontal move out of (0, 0)
    cost[0, 1:3, 0] = math.inf  # ... nor vertical: the path starts with (1, 1)
    cost[0, 4, :2] = math.inf
    cost.requires_grad_()
    value = run(cost, gamma=gamma, warp_penalty=0.2, backend=backend)
    grad, = torch.autograd.grad(value.sum(), cost)
    expected, alignment = brute_force(cost.detach()[0].numpy(), gamma, 0.2)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    assert torch.isfinite(grad).all()
    np.testing.assert_allclose(grad[0].numpy(), alignment, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hard_dtw_ties_share_the_gradient(backend):
    # In a 2 x 2 zero matrix without warp penalty the three paths all cost 0: cell (1, 1) has
    # three tied predecessors, which share its gradient equally.
    cost = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64, requires_grad=True)
    value = run(cost, gamma=0.0, warp_penalty=0.0, backend=backend)
    grad, = torch.autograd.grad(value.sum(), cost)
    assert value.item() == 0.0
    # Here that is also the gamma -> 0 limit: the fraction of the optimal paths through a cell.
    _, alignment = brute_force(np.zeros((2, 2)), 1e-9, 0.0)
    np.testing.assert_allclose(grad[0].numpy(), alignment, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lengths_equal_unpadded_items(backend):
    gen = torch.Generator().manual_seed(2)
    lengths_x, lengths_y = torch.tensor([7, 1, 4, 7, 2]), torch.tensor([3, 6, 6, 1, 5])
    cost = torch.rand(5, 8, 6, dtype=torch.float64, generator=gen)
    valid = ((torch.arange(8) < lengths_x[:, None])[:, :, None]
             & (torch.arange(6) < lengths_y[:, None])[:, None, :])
    cost = cost.masked_fill(~valid, math.nan).requires_grad_()  # padding must never be used
    value = run(cost, lengths_x, lengths_y, gamma=0.1, warp_penalty=0.4, backend=backend)
    grad, = torch.autograd.grad((value * torch.arange(1.0, 6.0, dtype=value.dtype)).sum(), cost)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    assert (grad[~valid] == 0).all()
    for b in range(5):
        alone = cost.detach()[b:b + 1, :lengths_x[b], :lengths_y[b]].clone().requires_grad_()
        value_alone = run(alone, gamma=0.1, warp_penalty=0.4, backend=backend)
        grad_alone, = torch.autograd.grad(value_alone.sum(), alone)
        assert value[b].item() == pytest.approx(value_alone.item(), rel=1e-13)
        torch.testing.assert_close(grad[b, :lengths_x[b], :lengths_y[b]],
                                   (b + 1) * grad_alone[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma", [0.0, 0.1, 1.0])
def test_gradcheck(backend, gamma):
    gen = torch.Generator().manual_seed(3)
    cost = torch.rand(3, 4, 5, dtype=torch.float64, generator=gen).requires_grad_()
    lengths_x, lengths_y = torch.tensor([4, 2, 3]), torch.tensor([5, 5, 1])
    for warp_penalty in (0.0, 0.3):
        assert torch.autograd.gradcheck(
            lambda c: run(c, lengths_x, lengths_y, gamma=gamma, warp_penalty=warp_penalty,
                          backend=backend),
            (cost,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_is_an_alignment(backend):
    gen = torch.Generator().manual_seed(4)
    cost = torch.rand(4, 12, 9, dtype=torch.float64, generator=gen).requires_grad_()
    hard = run(cost, gamma=0.0, backend=backend)
    hard_path, = torch.autograd.grad(hard.sum(), cost)
    assert set(hard_path.unique().tolist()) <= {0.0, 1.0}
    assert (hard_path[:, 0, 0] == 1).all() and (hard_path[:, -1, -1] == 1).all()
    previous_error = math.inf
    for gamma in (0.3, 0.03, 1e-3, 1e-5):
        soft = run(cost, gamma=gamma, backend=backend)
        alignment, = torch.autograd.grad(soft.sum(), cost)
        assert ((alignment >= 0) & (alignment <= 1 + 1e-12)).all()
        # Every path starts and ends at the corners and visits every row and every column.
        assert (alignment.sum(2) >= 1 - 1e-12).all() and (alignment.sum(1) >= 1 - 1e-12).all()
        ones = torch.ones(4, dtype=torch.float64)
        torch.testing.assert_close(alignment[:, 0, 0], ones, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(alignment[:, -1, -1], ones, rtol=1e-12, atol=1e-12)
        error = (alignment - hard_path).abs().max().item()
        assert error <= previous_error + 1e-12
        previous_error = error
        # The soft value is below the hard one and approaches it.
        assert (soft <= hard + 1e-12).all()
    assert previous_error < 1e-6


@pytest.mark.parametrize("parallel", [False, True])
def test_backends_agree_on_a_random_batch(parallel, monkeypatch):
    # Small batches run item by item; a zero threshold sends this one to the parallel kernels.
    if parallel:
        monkeypatch.setattr(soft_dtw_module, "_PARALLEL_MIN_CELLS", 0)
    gen = torch.Generator().manual_seed(5)
    cost = (3 * torch.rand(6, 23, 17, dtype=torch.float64, generator=gen)).requires_grad_()
    lengths_x = torch.tensor([23, 1, 10, 23, 5, 17])
    lengths_y = torch.tensor([17, 17, 2, 1, 16, 17])
    scale = torch.rand(6, dtype=torch.float64, generator=gen)
    for gamma, warp_penalty in ((0.0, 0.0), (0.01, 0.0), (0.01, 1.0), (1.0, 0.5)):
        results = {}
        for backend in BACKENDS:
            value = run(cost, lengths_x, lengths_y, gamma, warp_penalty, backend=backend)
            grad, = torch.autograd.grad((value * scale).sum(), cost)
            results[backend] = value, grad
        torch.testing.assert_close(results["numba"][0], results["torch"][0],
                                   rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(results["numba"][1], results["torch"][1],
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_in_float32_out(backend):
    cost = torch.rand(2, 6, 5).requires_grad_()
    value = run(cost, gamma=0.05, backend=backend)
    grad, = torch.autograd.grad(value.sum(), cost)
    assert value.dtype == torch.float32 and grad.dtype == torch.float32
    reference = run(cost.detach().double(), gamma=0.05, backend=backend)
    torch.testing.assert_close(value.double(), reference, rtol=1e-6, atol=1e-6)


def test_default_backend_and_normalize(monkeypatch):
    gen = torch.Generator().manual_seed(6)
    cost = torch.rand(3, 6, 8, dtype=torch.float64, generator=gen)
    lengths_x, lengths_y = [6, 3, 1], torch.tensor([8, 2, 5])
    value = soft_dtw(cost, lengths_x, lengths_y, gamma=0.2, warp_penalty=0.1)
    torch.testing.assert_close(value, run(cost, lengths_x, lengths_y, 0.2, 0.1, backend="torch"),
                               rtol=1e-12, atol=1e-12)
    normalized = soft_dtw(cost, lengths_x, lengths_y, gamma=0.2, warp_penalty=0.1,
                          normalize=True)
    torch.testing.assert_close(normalized, value / torch.tensor([14.0, 5.0, 6.0],
                                                                dtype=torch.float64),
                               rtol=1e-15, atol=0.0)
    assert soft_dtw(cost[:0]).shape == (0,)
    # Without numba the torch implementation takes over.
    monkeypatch.setattr(soft_dtw_module, "numba", None)
    torch.testing.assert_close(soft_dtw(cost, lengths_x, lengths_y, gamma=0.2, warp_penalty=0.1),
                               value, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="needs numba"):
        run(cost, backend="numba")


def test_bad_arguments():
    cost = torch.rand(2, 3, 4)
    with pytest.raises(ValueError, match=r"\[B, N, M\]"):
        soft_dtw(cost[0])
    with pytest.raises(ValueError, match="N >= 1"):
        soft_dtw(cost[:, :0])
    with pytest.raises(TypeError, match="floating-point"):
        soft_dtw(cost.long())
    with pytest.raises(ValueError, match=r"lengths_x must have shape \[B\]"):
        soft_dtw(cost, lengths_x=torch.tensor([3, 3, 3]))
    with pytest.raises(ValueError, match="lengths_x must be between 1 and 3"):
        soft_dtw(cost, lengths_x=torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="lengths_y must be between 1 and 4"):
        soft_dtw(cost, lengths_y=[0, 4])
    with pytest.raises(TypeError, match="integers"):
        soft_dtw(cost, lengths_y=torch.tensor([2.0, 4.0]))
    with pytest.raises(ValueError, match="gamma must be"):
        soft_dtw(cost, gamma=-0.1)
    with pytest.raises(ValueError, match="gamma must be"):
        soft_dtw(cost, gamma=math.nan)
    with pytest.raises(ValueError, match="warp_penalty must be finite"):
        soft_dtw(cost, warp_penalty=math.inf)
    with pytest.raises(ValueError, match="backend"):
        run(cost, backend="cuda")
