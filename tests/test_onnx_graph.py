"""Rewrites of exported ONNX graphs (flowspeech.inference.onnx_graph): 1-D convolutions written
as 2-D ones compute the same numbers, with every attribute carried over, at lengths other than
the traced one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from flowspeech.inference.onnx_export import _trace
from flowspeech.inference.onnx_graph import convolutions_as_2d

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


class _Convolutions(nn.Module):
    """1-D convolutions with padding, stride, dilation, groups, no bias, a shared weight, a
    transposed one (left 1-D: onnxruntime has no blocked kernel for it), between other ops."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv1d(8, 16, 5, padding=2)
        self.strided = nn.Conv1d(16, 16, 3, stride=2, padding=1, groups=4)
        self.dilated = nn.Conv1d(16, 16, 3, dilation=3, padding=3, bias=False)
        self.up = nn.ConvTranspose1d(16, 8, 4, stride=2, padding=1)

    def forward(self, x):
        h = torch.tanh(self.first(x))
        h = self.strided(h)
        h = self.dilated(h) + self.dilated(torch.sigmoid(h))  # one weight, two nodes
        return self.up(h)


def test_convolutions_written_as_2d_compute_the_same_numbers(tmp_path):
    torch.manual_seed(0)
    module = _Convolutions().eval()
    paths = {}
    for conv_2d in (False, True):
        paths[conv_2d] = tmp_path / f"graph_{conv_2d}.onnx"
        _trace(module, (torch.randn(2, 8, 40),), paths[conv_2d], 17, ["x"], ["y"],
               {"x": {0: "b", 2: "t"}, "y": {0: "b", 2: "t"}}, conv_2d=conv_2d)
    model = onnx.load(str(paths[True]))
    onnx.checker.check_model(model)
    graph = model.graph
    weights = {t.name: len(t.dims) for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 4 and all(weights[n.input[1]] == 4 for n in convs)
    # The shared weight is reshaped once, in place: three 2-D weights, none left unread.
    assert sorted(weights.values()).count(4) == 3
    read = {name for n in graph.node for name in n.input}
    assert all(t.name in read for t in graph.initializer)
    assert any(n.op_type == "ConvTranspose" for n in graph.node)
    assert convolutions_as_2d(paths[True]) == 0  # nothing left to rewrite

    sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    for frames in (17, 64, 301):
        x = torch.randn(3, 8, frames)
        with torch.no_grad():
            expected = module(x).numpy()
        got = {k: s.run(None, {"x": x.numpy()})[0] for k, s in sessions.items()}
        assert got[True].shape == expected.shape
        assert np.abs(got[True] - expected).max() < 1e-5
        assert np.abs(got[True] - got[False]).max() < 1e-5
