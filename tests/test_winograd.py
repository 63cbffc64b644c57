"""Winograd's minimal filtering (flowspeech.inference.winograd): the transforms compute the
correlation, the module is the convolution it replaces at every length, and the export's
replacement leaves a WaveNet's output as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flowspeech.flows.wavenet import WaveNet
from flowspeech.inference.winograd import (
    WinogradConv1d,
    use_winograd_convolutions,
    use_winograd_input_convolutions,
    winograd_applies,
    winograd_matrices,
)


@pytest.mark.parametrize("m, r", [(2, 3), (4, 3), (6, 3), (2, 5), (4, 5), (6, 5)])
def test_the_transforms_compute_the_correlation_of_a_tile(m, r):
    at, g, bt = winograd_matrices(m, r)
    assert at.shape == (m, m + r - 1) and g.shape == (m + r - 1, r) and bt.shape == (m + r - 1, m + r - 1)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, w = rng.standard_normal(m + r - 1), rng.standard_normal(r)
        expected = [sum(x[i + k] * w[k] for k in range(r)) for i in range(m)]
        np.testing.assert_allclose(at @ ((g @ w) * (bt @ x)), expected, atol=1e-12)


def test_too_large_a_tile_is_refused_with_the_points_it_lacks():
    with pytest.raises(ValueError, match="interpolation points"):
        winograd_matrices(8, 5)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("bias", [True, False])
def test_the_module_is_the_convolution_at_every_length(kernel, bias):
    torch.manual_seed(0)
    conv = nn.Conv1d(6, 10, kernel, padding=kernel // 2, bias=bias)
    winograd = WinogradConv1d(conv, m=4)
    for frames in list(range(1, 14)) + [50, 131]:
        x = torch.randn(2, 6, frames)
        with torch.no_grad():
            expected = F.conv1d(x.double(), conv.weight.double(),
                                conv.bias.double() if bias else None, padding=kernel // 2)
            got = winograd(x)
        assert got.shape == expected.shape
        assert (got.double() - expected).abs().max() < 1e-5 * max(1.0, float(expected.abs().max()))


@pytest.mark.parametrize("conv", [nn.Conv1d(4, 4, 5, padding=4, dilation=2), nn.Conv1d(4, 4, 5, padding=2, stride=2),
                                  nn.Conv1d(4, 4, 5, padding=2, groups=2), nn.Conv1d(4, 4, 7, padding=3),
                                  nn.Conv1d(4, 4, 5, padding=0)])
def test_convolutions_it_does_not_compute_are_refused(conv):
    assert not winograd_applies(conv)
    with pytest.raises(ValueError, match="WinogradConv1d takes"):
        WinogradConv1d(conv)


@pytest.mark.parametrize("dilation_rate, replaced", [(1, 3), (2, 1)])
def test_a_wavenet_gets_winograd_input_convolutions_and_the_same_output(dilation_rate, replaced):
    torch.manual_seed(0)
    net = WaveNet(hidden_channels=8, kernel_size=5, dilation_rate=dilation_rate, n_layers=3).eval()
    x = torch.randn(2, 8, 37)
    mask = torch.ones(2, 1, 37)
    mask[1, :, 30:] = 0
    with torch.no_grad():
        expected = net(x * mask, mask)
        assert use_winograd_input_convolutions(net) == replaced
        got = net(x * mask, mask)
    assert sum(isinstance(layer, WinogradConv1d) for layer in net.in_layers) == replaced
    assert (got - expected).abs().max() < 1e-5


def test_every_applicable_convolution_of_a_module_is_replaced_and_the_output_kept():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(4, 6, 3, padding=1), nn.ReLU(),
                        nn.ModuleList([nn.Conv1d(6, 6, 5, padding=2)])[0],
                        nn.Conv1d(6, 4, 5, padding=4, dilation=2))
    x = torch.randn(1, 4, 23)
    with torch.no_grad():
        expected = net(x)
        assert use_winograd_convolutions(net) == 2
        got = net(x)
    assert isinstance(net[0], WinogradConv1d) and isinstance(net[3], nn.Conv1d)
    assert (got - expected).abs().max() < 1e-5
