"""Import FloWaveNet checkpoints of the authors' code (github ksw0306/FloWaveNet) into flowspeech.

Their ``train.py`` saves ``{"state_dict": model.state_dict(), "optimizer": ..., "scheduler":
..., "global_step": ..., "global_epoch": ...}``; a model trained with ``DataParallel`` has its
keys prefixed ``module.``. Everything in it loads with ``torch.load(weights_only=True)``.

Hyper-parameters come from the tensors: ``n_blocks`` / ``n_flows`` / ``n_layers`` (how many
``blocks.{i}``, ``flows.{j}``, ``res_blocks.{n}``), ``channels`` (the front conv's outputs),
the mel bands (inputs of block 0's conditioning convs: half of its squeezed ``2 * n_mels``),
``affine`` (the coupling outputs all of the channels or half), ``block_per_split`` (the first
block with a ``prior``), ``n_prior_layers`` and the upsampler's strides (kernel ``2s``). Their
audio front end is fixed (``preprocessing.py``): ``MelConfig.flowavenet()``.

Key mapping, for every WaveNet (``blocks.{i}.flows.{j}.coupling.net.`` and ``blocks.{i}.prior.``,
the same prefix on both sides); flowspeech stores convolutions that read the same input as one
(weight norm is per output channel, so concatenating ``g``, ``v`` and the bias is exact):

==============================================================  =====================================
theirs                                                          flowspeech
==============================================================  =====================================
``front_conv.0.conv.*``                                         ``front_conv.*``
``res_blocks.{n}.filter_conv.conv.*`` + ``gate_conv.conv.*``    ``res_blocks.{n}.in_conv.*``
``res_blocks.{n}.filter_conv_c.*`` + ``gate_conv_c.*``          ``res_blocks.{n}.cond_conv.*``
``res_blocks.{n}.res_conv.*`` + ``skip_conv.*``                 ``res_blocks.{n}.res_skip_conv.*``
``final_conv.1.conv.*``                                         ``final_conv.*``
``final_conv.3.conv.*``, ``final_conv.3.scale``                 ``end.conv.*``, ``end.scale``
==============================================================  =====================================

and ``blocks.{i}.flows.{j}.actnorm.{loc,scale}`` -> the same names, ``upsample_conv.{2k}`` ->
``upsample.{k}``; weight norm ``weight_g`` / ``weight_v`` -> ``parametrizations.weight.original0``
/ ``original1`` (an already folded ``weight`` becomes ``g = |w|`` per output channel, ``v = w``).

Their ActNorm keeps its "initialised" flag outside the state dict (a Python attribute set
from ``pretrained``), so a model built from their weights alone would run data-dependent
initialisation again on its first training forward and overwrite the trained ``loc`` and
``scale``. The converted state dict sets every ``initialized`` buffer to True.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from flowspeech.audio.config import MelConfig
from flowspeech.checkpoints import read_torch_file
from flowspeech.errors import CheckpointError
from flowspeech.models.flowavenet import FloWaveNet
from flowspeech.models.import_utils import save_imported_vocoder

__all__ = ["import_flowavenet", "load_authors_flowavenet"]


def _count(keys, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := regex.match(k))})


def _infer_args(flat: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """Model arguments from the shapes of the authors' tensors."""
    net = "blocks.0.flows.0.coupling.net."
    try:
        front = flat.get(net + "front_conv.0.conv.weight_v", flat.get(net + "front_conv.0.conv.weight"))
        cond = flat.get(net + "res_blocks.0.filter_conv_c.weight_v", flat.get(net + "res_blocks.0.filter_conv_c.weight"))
        end = flat[net + "final_conv.3.conv.weight"]
        if front is None or cond is None:
            raise KeyError(net + "front_conv / filter_conv_c")
    except KeyError as err:
        shown = ", ".join(sorted(flat)[:6])
        raise CheckpointError(f"{source} does not hold FloWaveNet weights (no {err}; keys: {shown}, ...)") from None
    keys = list(flat)
    n_blocks = _count(keys, r"blocks\.(\d+)\.")
    split_blocks = sorted({int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.prior\.", k))})
    n_scales = _count(keys, r"upsample_conv\.(\d+)\.")
    scales = []
    for k in range(n_scales):
        w = flat.get(f"upsample_conv.{2 * k}.weight_v", flat.get(f"upsample_conv.{2 * k}.weight"))
        if w is None or w.dim() != 4:
            raise CheckpointError(f"{source}: upsampler layer {2 * k} is missing or not a 2-D transposed conv")
        scales.append(w.shape[-1] // 2)
    in_flow = 2  # channels of block 0's flows: the squeezed mono audio
    args = dict(
        n_blocks=n_blocks,
        n_flows=_count(keys, r"blocks\.0\.flows\.(\d+)\."),
        n_layers=_count(keys, re.escape(net) + r"res_blocks\.(\d+)\."),
        channels=front.shape[0],
        block_per_split=split_blocks[0] + 1 if split_blocks else n_blocks,
        upsample_scales=scales,
        affine=end.shape[0] == in_flow,
        n_prior_layers=_count(keys, rf"blocks\.{split_blocks[0]}\.prior\.res_blocks\.(\d+)\.") if split_blocks else 2,
    )
    args["n_mels"] = cond.shape[1]
    return args


class _ReadTracker(dict):
    """A dict that remembers which keys were read, to report tensors no layer took."""

    def __init__(self, data):
        super().__init__(data)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def _weight_norm(flat: dict[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(g, v, bias)`` of the authors' weight-normed conv at ``prefix``."""
    if prefix + "weight_v" in flat:
        g, v = flat[prefix + "weight_g"], flat[prefix + "weight_v"]
    else:
        v = flat[prefix + "weight"]
        g = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return g, v, flat[prefix + "bias"]


def _put(state: dict, dst: str, *parts: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    """Store one weight-normed conv, concatenating ``parts`` along the output channels."""
    state[dst + "parametrizations.weight.original0"] = torch.cat([p[0] for p in parts])
    state[dst + "parametrizations.weight.original1"] = torch.cat([p[1] for p in parts])
    state[dst + "bias"] = torch.cat([p[2] for p in parts])


def _convert_wavenet(flat: dict, state: dict, src: str, dst: str, n_layers: int) -> None:
    _put(state, dst + "front_conv.", _weight_norm(flat, src + "front_conv.0.conv."))
    for n in range(n_layers):
        s, d = f"{src}res_blocks.{n}.", f"{dst}res_blocks.{n}."
        _put(state, d + "in_conv.", _weight_norm(flat, s + "filter_conv.conv."), _weight_norm(flat, s + "gate_conv.conv."))
        _put(state, d + "cond_conv.", _weight_norm(flat, s + "filter_conv_c."), _weight_norm(flat, s + "gate_conv_c."))
        _put(state, d + "res_skip_conv.", _weight_norm(flat, s + "res_conv."), _weight_norm(flat, s + "skip_conv."))
    _put(state, dst + "final_conv.", _weight_norm(flat, src + "final_conv.1.conv."))
    state[dst + "end.conv.weight"] = flat[src + "final_conv.3.conv.weight"]
    state[dst + "end.conv.bias"] = flat[src + "final_conv.3.conv.bias"]
    state[dst + "end.scale"] = flat[src + "final_conv.3.scale"]


def _convert(flat: dict[str, torch.Tensor], args: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The authors' flat state dict -> flowspeech's, checked key by key and shape by shape
    against the model built (on the meta device) from ``args``."""

    model_args = {k: v for k, v in args.items() if k != "n_mels"}
    mel = MelConfig.from_dict({**MelConfig.flowavenet().to_dict(), "n_mels": args["n_mels"],
                               "hop_length": math.prod(args["upsample_scales"])})
    try:
        with torch.device("meta"):
            model = FloWaveNet(mel, **model_args)
    except Exception as err:
        raise CheckpointError(f"{source}: inferred hyper-parameters {args} are not a valid FloWaveNet "
                              f"({err})") from None
    flat = _ReadTracker(flat)
    state: dict[str, torch.Tensor] = {}
    try:
        for k in range(len(args["upsample_scales"])):
            _put(state, f"upsample.{k}.", _weight_norm(flat, f"upsample_conv.{2 * k}."))
        for i, block in enumerate(model.blocks):
            for j in range(len(block.flows)):
                p = f"blocks.{i}.flows.{j}."
                state[p + "actnorm.loc"] = flat[p + "actnorm.loc"]
                state[p + "actnorm.scale"] = flat[p + "actnorm.scale"]
                # Their flag lives outside the state dict: the weights are trained, never re-run DDI.
                state[p + "actnorm.initialized"] = torch.tensor(True)
                _convert_wavenet(flat, state, p + "coupling.net.", p + "coupling.net.", args["n_layers"])
            if block.split:
                p = f"blocks.{i}.prior."
                _convert_wavenet(flat, state, p, p, args["n_prior_layers"])
    except KeyError as err:
        raise CheckpointError(f"{source} lacks {err} for a FloWaveNet with {args}; is it complete?") from None
    own = model.state_dict()
    problems = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                for k in own if k in state and state[k].shape != own[k].shape]
    problems += [f"missing {k}" for k in own if k not in state]
    problems += [f"unused {k}" for k in flat if k not in flat.read]
    if problems:
        more = f"; ... ({len(problems)} in all)" if len(problems) > 5 else ""
        raise CheckpointError(f"{source} does not convert to a consistent FloWaveNet ({args}): "
                              + "; ".join(problems[:5]) + more)
    return state


def load_authors_flowavenet(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint of the authors' FloWaveNet code.

    Returns:
        ``(state_dict, args)``: flowspeech's state dict (float32, CPU) and the hyper-parameters
        (the model arguments plus ``n_mels``).

    Raises:
        CheckpointError: missing or unreadable file, not FloWaveNet weights, or shapes that no
            FloWaveNet configuration explains.
    """
    path = Path(path)
    obj = read_torch_file(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a FloWaveNet checkpoint")
    if obj.get("format") == "flowspeech":
        raise CheckpointError(f"{path} is already a flowspeech checkpoint; load it directly")
    flat = obj.get("state_dict", obj)
    if not isinstance(flat, dict) or not flat or not all(isinstance(v, torch.Tensor) for v in flat.values()):
        shown = ", ".join(sorted(map(str, obj))[:8])
        raise CheckpointError(f"{path} holds no state dict of tensors (keys: {shown})")
    flat = {k.removeprefix("module."): v.float() if v.is_floating_point() else v for k, v in flat.items()}
    args = _infer_args(flat, str(path))
    return _convert(flat, args, str(path)), args


def import_flowavenet(src: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Convert the authors' checkpoint ``src`` into a flowspeech checkpoint at ``out_path``.

    The config is ``flowavenet-base`` with the ``model_args`` read from the weights (and the
    audio section's ``n_mels`` / ``hop_length`` if they are not 80 / 256).

    Returns:
        The config written into the checkpoint.
    """
    src = Path(src)
    state, args = load_authors_flowavenet(src)
    args = dict(args)
    n_mels = args.pop("n_mels")
    return save_imported_vocoder(out_path, src, "flowavenet", "FloWaveNet", state, args, "flowavenet",
                                 n_mels, math.prod(args["upsample_scales"]))
