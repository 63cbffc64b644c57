"""The export's folding of Glow-TTS's decoder (flowspeech.inference.folding): the folded flows
are the decoder's flows to float rounding, both ways and with padding, and a folded coupling
network takes Winograd's input convolutions like any WaveNet."""

from __future__ import annotations

import pytest
import torch

from flowspeech.flows.actnorm import ActNorm
from flowspeech.flows.coupling import WaveNetCouplingNet
from flowspeech.flows.invconv import GroupedInvertibleConv1x1
from flowspeech.inference.folding import (
    ChannelAffineFlow,
    FoldedWaveNetCouplingNet,
    fold_flow_decoder,
)
from flowspeech.inference.winograd import WinogradConv1d, use_winograd_input_convolutions


def _batch(channels: int = 12, frames: int = 41):
    x = torch.randn(2, channels, frames)
    mask = torch.ones(2, 1, frames)
    mask[1, :, 29:] = 0
    return x * mask, mask


@pytest.mark.parametrize("dilation_rate", [1, 2])
def test_the_folded_decoder_flows_are_the_decoders_both_ways_with_padding(dilation_rate, trained_looking_flow_decoder):
    decoder = trained_looking_flow_decoder(dilation_rate=dilation_rate, n_split=4, n_sqz=2)
    folded = fold_flow_decoder(decoder.flows)
    assert [type(layer).__name__ for layer in folded] == ["ChannelAffineFlow", "AffineCoupling"] * 3
    assert all(isinstance(layer.net, FoldedWaveNetCouplingNet) for layer in folded[1::2])
    x, mask = _batch()
    with torch.no_grad():
        y, logdet = decoder.flows(x, mask)
        y_folded, logdet_folded = folded(x, mask)
        back = folded.inverse(y, mask)
    assert (y_folded - y).abs().max() < 1e-5
    assert (logdet_folded - logdet).abs().max() < 1e-3 * logdet.abs().max()
    assert (back - decoder.flows.inverse(y, mask)).abs().max() < 1e-5
    assert (back - x).abs().max() < 1e-4
    assert back[1, :, 29:].abs().max() == 0


def test_actnorm_and_the_grouped_convolution_become_one_invertible_channel_map():
    torch.manual_seed(1)
    actnorm, invconv = ActNorm(8), GroupedInvertibleConv1x1(8, n_split=4)
    with torch.no_grad():
        actnorm.logs.normal_(0, 0.3)
        actnorm.bias.normal_(0, 0.3)
    actnorm.mark_initialized()
    layer = ChannelAffineFlow.from_actnorm_invconv(actnorm, invconv)
    x, mask = _batch(8)
    with torch.no_grad():
        expected, expected_logdet = invconv(*actnorm(x, mask)[:1], mask)
        expected_logdet = expected_logdet + actnorm(x, mask)[1]
        y, logdet = layer(x, mask)
    assert (y - expected).abs().max() < 1e-5
    assert torch.allclose(logdet, expected_logdet, rtol=1e-5)
    assert (layer.inverse(y, mask) - x).abs().max() < 1e-5


def test_a_folded_coupling_network_takes_winograd_input_convolutions_and_keeps_its_output():
    torch.manual_seed(2)
    net = WaveNetCouplingNet(6, 12, hidden_channels=16, kernel_size=5, dilation_rate=1, n_layers=3).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    folded = FoldedWaveNetCouplingNet(net)
    assert folded.in_layers[0].in_channels == 6  # reads the coupling's half, not the hidden channels
    x, mask = _batch(6)
    with torch.no_grad():
        expected = net(x, mask)
        assert (folded(x, mask) - expected).abs().max() < 1e-5
        assert use_winograd_input_convolutions(folded) == 3
        assert all(isinstance(conv, WinogradConv1d) for conv in folded.in_layers)
        assert (folded(x, mask) - expected).abs().max() < 1e-4
