"""Glow-TTS's decoder inverse on phase-ordered frames (flowspeech.inference.phase_order): the
same mel as the decoder's inverse at every length, kernel 3 and 5, with padding, and in an
ONNX graph at lengths other than the traced one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowspeech.inference.onnx_export import _trace
from flowspeech.inference.phase_order import (
    PhaseOrderDecoder,
    PhaseWinogradConv,
    phase_order_applies,
)


def _z(frames: int, short: int = 6):
    z = torch.randn(2, 6, frames)
    mask = torch.ones(2, 1, frames)
    mask[1, :, frames - short:] = 0
    return z * mask, mask


@pytest.mark.parametrize("kernel_size, sigmoid_scale", [(5, False), (3, False), (5, True)])
@pytest.mark.parametrize("frames", [2, 8, 30, 46])
def test_the_phase_order_inverse_is_the_decoders_at_every_length(kernel_size, sigmoid_scale, frames,
                                                                 trained_looking_flow_decoder):
    decoder = trained_looking_flow_decoder(kernel_size=kernel_size, sigmoid_scale=sigmoid_scale)
    phased = PhaseOrderDecoder(decoder)
    assert sum(isinstance(m, PhaseWinogradConv) for m in phased.modules()) == 9
    z, mask = _z(frames, short=0 if frames == 2 else 6)
    with torch.no_grad():
        expected = decoder.inverse(z, mask)
        got = phased.inverse(z, mask)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-4
    assert (got * (1 - mask)).abs().max() == 0


def test_decoders_it_does_not_compute_are_refused(trained_looking_flow_decoder):
    assert not phase_order_applies(trained_looking_flow_decoder(dilation_rate=2))
    assert not phase_order_applies(trained_looking_flow_decoder(gin_channels=4))
    with pytest.raises(ValueError, match="one-speaker Glow-TTS decoder"):
        PhaseOrderDecoder(trained_looking_flow_decoder(dilation_rate=2))


def test_its_onnx_graph_keeps_the_length_dynamic(tmp_path, trained_looking_flow_decoder):
    ort = pytest.importorskip("onnxruntime")
    decoder = trained_looking_flow_decoder()

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = PhaseOrderDecoder(decoder)

        def forward(self, z, mask):
            return self.decoder.inverse(z, mask)

    _trace(Graph().eval(), _z(40), tmp_path / "decoder.onnx", 17, ["z", "mask"], ["mel"],
           {"z": {0: "batch", 2: "frames"}, "mask": {0: "batch", 2: "frames"}})
    session = ort.InferenceSession(str(tmp_path / "decoder.onnx"))
    for frames in (40, 30, 24, 2, 58):
        z, mask = _z(frames, short=0 if frames == 2 else 6)
        (mel,) = session.run(None, {"z": z.numpy(), "mask": mask.numpy()})
        with torch.no_grad():
            expected = decoder.inverse(z, mask).numpy()
        assert np.abs(mel - expected).max() < 1e-4
