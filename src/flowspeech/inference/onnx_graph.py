"""Rewrites of exported ONNX graphs that make onnxruntime run them faster, the same arithmetic.

onnxruntime's CPU provider runs a 2-D ``Conv`` on x86 in its blocked "NCHWc" layout (its
``NchwcTransformer``, at the default optimisation level ``ORT_ENABLE_ALL``): direct kernels
that read the input in place, with the activation fused. A 1-D ``Conv``, which is what every
``nn.Conv1d`` of the models exports as, is left to im2col and a matrix product, which copies
the input ``kernel`` times first. So every 1-D convolution is written as a 2-D one of height
1 between an ``Unsqueeze`` and a ``Squeeze``: on Glow-TTS base's text encoder 17 % faster, on
its decoder more (numbers in ``docs/onnx.md``). Where the blocked kernels do not apply (other
CPUs, channel counts they do not take) onnxruntime runs the 2-D ``Conv`` as it ran the 1-D one.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["convolutions_as_2d"]

_AXES = "flowspeech_conv_height_axis"


def convolutions_as_2d(path: str | Path) -> int:
    """Rewrite, in place, every 1-D ``Conv`` of the ONNX model at ``path`` as a 2-D ``Conv``
    of height 1 (kernel ``[1, k]``, the same strides, pads, dilations and groups) on its
    input unsqueezed at axis 2, squeezed back after. Returns how many were rewritten."""
    model = onnx.load(str(path))
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}

    def conv_weight(node) -> str | None:  # the name of a 1-D Conv's constant weight
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in initializers:
            return node.input[1] if len(initializers[node.input[1]].dims) == 3 else None
        return None

    names = [conv_weight(node) for node in graph.node]  # before any weight is reshaped
    readers = Counter(name for node in graph.node for name in node.input)
    conv_readers = Counter(names)
    weights_2d: dict[str, str] = {}  # a 1-D weight's name -> its 2-D form's, made once
    nodes, rewritten = [], 0
    for node, name in zip(graph.node, names):
        if name is None:
            nodes.append(node)
            continue
        if name not in weights_2d:
            weight = initializers[name]
            weight_2d = numpy_helper.to_array(weight)[:, :, None, :]
            if readers[name] == conv_readers[name]:  # read by 1-D convolutions alone: reshaped in place
                weight.CopyFrom(numpy_helper.from_array(weight_2d, name))
                weights_2d[name] = name
            else:  # other nodes read it too: the convolutions get a 2-D copy
                weights_2d[name] = f"{name}_2d"
                graph.initializer.append(numpy_helper.from_array(weight_2d, weights_2d[name]))
        attributes = {}
        for attribute in node.attribute:
            value = helper.get_attribute_value(attribute)
            if attribute.name in ("kernel_shape", "strides", "dilations"):
                value = [1, value[0]]
            elif attribute.name == "pads":
                value = [0, value[0], 0, value[1]]
            attributes[attribute.name] = value
        x, y = f"{node.output[0]}_2d_input", f"{node.output[0]}_2d"
        nodes.append(helper.make_node("Unsqueeze", [node.input[0], _AXES], [x]))
        nodes.append(helper.make_node("Conv", [x, weights_2d[name], *node.input[2:]], [y], name=node.name,
                                      **attributes))
        nodes.append(helper.make_node("Squeeze", [y, _AXES], [node.output[0]]))
        rewritten += 1
    if rewritten:
        graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), _AXES))
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save(model, str(path))
    return rewritten
