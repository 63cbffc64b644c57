"""Import WaveGlow weights published by its authors into flowspeech's layout.

WaveGlow weights circulate in two formats:

(a) **Whole-model pickles** of github NVIDIA/waveglow (``waveglow_256channels*.pt``): a dict
    ``{"model": <glow.WaveGlow object>, "iteration": ..., ...}`` saved with ``torch.save`` of
    the module object itself, so plain ``torch.load`` needs the authors' ``glow.py`` on the
    path and runs whatever the pickle names. We read them with a *restricted unpickler*: the
    authors' classes (``WaveGlow``, ``WN``, ``Invertible1x1Conv``, ``WaveGlowLoss``) and the
    torch modules they hold (``Conv1d``, ``ConvTranspose1d``, ``ModuleList``, the old
    weight-norm hook ``WeightNorm``) become inert stand-ins that only keep their pickled
    attributes; tensors are rebuilt by torch; any other class makes the load fail with
    :class:`~flowspeech.errors.CheckpointError` before it is called. Older checkpoints hold
    one conditioning conv per WaveNet layer (``cond_layers.{i}``) instead of one shared
    ``cond_layer``; weight-normed convs hold ``weight_g`` / ``weight_v``.
(b) **State-dict checkpoints** of NVIDIA DeepLearningExamples (``{"state_dict": {...}}``,
    keys possibly prefixed ``module.`` by DistributedDataParallel, per-layer
    ``cond_layers``). These load with ``torch.load(weights_only=True)``.

Hyper-parameters are read from the tensors' shapes: ``n_flows`` (number of 1x1 convs),
``n_group`` (channels of the first), ``n_early_every`` / ``n_early_size`` (where and by how
much the channel count drops), ``n_layers`` / ``n_channels`` / ``kernel_size`` (the WaveNet's
dilated convs) and ``n_mel_channels`` / upsampler kernel (the transposed conv). The
upsampler's stride is not a tensor: it comes from the pickled module when there is one, else
it is the authors' fixed ``kernel / 4`` (1024 / 256).

Key mapping (``docs/flows.md``): ``convinv.{k}.conv.weight [C, C, 1]`` ->
``convinv.{k}.weight [C, C]``; ``WN.{k}.{start,end}`` -> ``coupling.{k}.net.{start,end}``;
``WN.{k}.{in_layers,res_skip_layers,cond_layer}`` -> ``coupling.{k}.net.wn.*``;
``cond_layers.{i}`` concatenated along the output channels (weight norm is per output
channel, so this is exact); ``weight_g`` / ``weight_v`` -> ``parametrizations.weight.original0``
/ ``original1``; an already folded ``weight`` becomes ``g = |w|`` per output channel, ``v = w``.
"""

from __future__ import annotations

import collections
import pickle
import re
import types
import warnings
from pathlib import Path
from typing import Any

import torch

from flowspeech.checkpoints import ForeignObjectsError, load_error_reason, read_torch_file
from flowspeech.errors import CheckpointError
from flowspeech.models.import_utils import save_imported_vocoder
from flowspeech.models.waveglow import WaveGlow

__all__ = ["import_waveglow", "load_authors_waveglow"]

# --- restricted unpickling ------------------------------------------------------------------
_AUTHOR_MODULES = frozenset({"glow", "waveglow.glow", "model", "waveglow.model", "__main__"})
_AUTHOR_CLASSES = frozenset({"WaveGlow", "WN", "Invertible1x1Conv", "WaveGlowLoss"})
_TORCH_CLASSES = frozenset({
    ("torch.nn.modules.conv", "Conv1d"),
    ("torch.nn.modules.conv", "ConvTranspose1d"),
    ("torch.nn.modules.container", "ModuleList"),
    ("torch.nn.utils.weight_norm", "WeightNorm"),
})
# Callables the pickle may invoke: containers and torch's own tensor rebuilders.
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "frozenset"): frozenset,
    ("torch", "Size"): torch.Size,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
}


class _Stub:
    """Inert stand-in for a pickled object of the authors' code: keeps its attributes, runs
    nothing (no ``__init__``, no methods of theirs)."""

    pickled_name = "?"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<stand-in for {self.pickled_name}>"


_stub_classes: dict[str, type] = {}


def _stub_class(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _stub_classes:
        _stub_classes[key] = type(name, (_Stub,), {"pickled_name": key})
    return _stub_classes[key]


class _Refused(pickle.UnpicklingError):
    """A pickle named a class or function outside the allowed set."""

    def __init__(self, qualified_name: str):
        super().__init__(qualified_name)
        self.qualified_name = qualified_name


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module in _AUTHOR_MODULES and name in _AUTHOR_CLASSES) or (module, name) in _TORCH_CLASSES:
            return _stub_class(module, name)
        raise _Refused(f"{module}.{name}")


def _restricted_pickle_module() -> types.ModuleType:
    """What ``torch.load(pickle_module=...)`` expects: ``Unpickler`` and ``load``."""
    mod = types.ModuleType("flowspeech_restricted_pickle")
    mod.Unpickler = _RestrictedUnpickler
    mod.load = lambda f, **kwargs: _RestrictedUnpickler(f, **kwargs).load()
    return mod


def _load_file(path: Path) -> Any:
    """``torch.load`` with PyTorch's weights-only loader, else with the restricted unpickler."""
    try:
        return read_torch_file(path)
    except ForeignObjectsError:
        pass  # the authors' whole-model pickles: try the stand-ins
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "source code of class ... has changed" etc.
            return torch.load(path, map_location="cpu", weights_only=False,
                              pickle_module=_restricted_pickle_module())
    except _Refused as err:
        raise CheckpointError(
            f"{path} refers to {err.qualified_name}, which is not part of a WaveGlow checkpoint; "
            f"refusing to load it (unpickling could run arbitrary code). Only the authors' "
            f"glow.WaveGlow / WN / Invertible1x1Conv objects, torch convolutions and tensors "
            f"are accepted.") from None
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{path} cannot be read as a WaveGlow checkpoint: "
                              f"{load_error_reason(err)}") from None


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """State dict of a tree of stand-ins, from their ``_parameters`` / ``_modules``."""
    attrs = getattr(obj, "__dict__", {})
    for name, value in (attrs.get("_parameters") or {}).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value.detach()
    for name, value in (attrs.get("_buffers") or {}).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value.detach()
    for name, child in (attrs.get("_modules") or {}).items():
        if child is not None:
            _flatten(child, f"{prefix}{name}.", out)


# --- conversion -----------------------------------------------------------------------------
def _weight_norm_pair(flat: dict[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g, v)`` of the weight-normed conv at ``prefix`` (``weight_g/weight_v`` or folded)."""
    if prefix + "weight_v" in flat:
        return flat[prefix + "weight_g"], flat[prefix + "weight_v"]
    w = flat[prefix + "weight"]
    return w.flatten(1).norm(dim=1).view(-1, *([1] * (w.dim() - 1))), w


def _count(flat: dict[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in flat if (m := regex.match(k))})


def _convert(flat: dict[str, torch.Tensor], hints: dict[str, Any], source: str):
    """Authors' flat state dict -> (our state dict, model_args)."""
    if "upsample.weight" not in flat or "convinv.0.conv.weight" not in flat:
        shown = ", ".join(sorted(flat)[:6])
        raise CheckpointError(f"{source} does not hold WaveGlow weights (keys: {shown}, ...)")
    if any(".res_layers." in k or ".skip_layers." in k for k in flat):
        raise CheckpointError(
            f"{source} is in the authors' first layout (glow_old.py: separate res/skip layers and "
            f"alternating coupling halves), which flowspeech does not reproduce; use one of their "
            f"later checkpoints (waveglow_256channels_universal_v5.pt or the DeepLearningExamples ones)")
    n_flows = _count(flat, r"convinv\.(\d+)\.conv\.weight$")
    channels = [flat[f"convinv.{k}.conv.weight"].shape[0] for k in range(n_flows)]
    n_group = channels[0]
    drops = [k for k in range(1, n_flows) if channels[k] != channels[k - 1]]
    if drops:
        every, size = drops[0], channels[drops[0] - 1] - channels[drops[0]]
    else:  # no early output: any period >= n_flows is equivalent
        every, size = max(int(hints.get("n_early_every") or n_flows), n_flows), 2
    expected, remaining = [], n_group
    for k in range(n_flows):
        if k > 0 and k % every == 0:
            remaining -= size
        expected.append(remaining)
    if expected != channels:
        raise CheckpointError(f"{source}: the 1x1 convolutions have {channels} channels, which no "
                              f"(n_early_every, n_early_size) explains")
    w_in0 = _weight_norm_pair(flat, "WN.0.in_layers.0.")[1]
    n_channels, kernel_size = w_in0.shape[1], w_in0.shape[2]
    n_layers = _count(flat, r"WN\.0\.in_layers\.(\d+)\.")
    up = flat["upsample.weight"]
    n_mels, up_kernel = up.shape[0], up.shape[2]
    hop = int(hints.get("stride") or up_kernel // 4)
    args = dict(n_mel_channels=n_mels, n_flows=n_flows, n_group=n_group, n_early_every=every,
                n_early_size=size, n_layers=n_layers, n_channels=n_channels,
                kernel_size=kernel_size, hop_length=hop, upsample_kernel_size=up_kernel)

    state = {"upsample.weight": up, "upsample.bias": flat["upsample.bias"]}

    def put_wn(dst: str, g: torch.Tensor, v: torch.Tensor, b: torch.Tensor) -> None:
        state[dst + "parametrizations.weight.original0"] = g
        state[dst + "parametrizations.weight.original1"] = v
        state[dst + "bias"] = b

    for k in range(n_flows):
        state[f"convinv.{k}.weight"] = flat[f"convinv.{k}.conv.weight"].reshape(channels[k], channels[k])
        src, dst = f"WN.{k}.", f"coupling.{k}.net."
        put_wn(dst + "start.", *_weight_norm_pair(flat, src + "start."), flat[src + "start.bias"])
        state[dst + "end.weight"] = flat[src + "end.weight"]
        state[dst + "end.bias"] = flat[src + "end.bias"]
        for i in range(n_layers):
            for name in ("in_layers", "res_skip_layers"):
                p = f"{src}{name}.{i}."
                put_wn(f"{dst}wn.{name}.{i}.", *_weight_norm_pair(flat, p), flat[p + "bias"])
        if src + "cond_layer.bias" in flat:
            put_wn(dst + "wn.cond_layer.", *_weight_norm_pair(flat, src + "cond_layer."),
                   flat[src + "cond_layer.bias"])
        else:  # older layout: one conditioning conv per layer, stacked in layer order
            pairs = [_weight_norm_pair(flat, f"{src}cond_layers.{i}.") for i in range(n_layers)]
            put_wn(dst + "wn.cond_layer.", torch.cat([p[0] for p in pairs]),
                   torch.cat([p[1] for p in pairs]),
                   torch.cat([flat[f"{src}cond_layers.{i}.bias"] for i in range(n_layers)]))
    _check_against_model(state, args, source)
    return state, args


def _check_against_model(state: dict[str, torch.Tensor], args: dict[str, Any], source: str) -> None:
    """Keys and shapes must be exactly those of ``WaveGlow(**args)`` (built on the meta device)."""

    try:
        with torch.device("meta"):
            own = WaveGlow(**args).state_dict()
    except Exception as err:
        raise CheckpointError(f"{source}: inferred hyper-parameters {args} are not a valid "
                              f"WaveGlow ({err})") from None
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                 for k in own if k in state and state[k].shape != own[k].shape]
    if problems:
        more = f"; ... ({len(problems)} in all)" if len(problems) > 5 else ""
        raise CheckpointError(f"{source} does not convert to a consistent WaveGlow: "
                              + "; ".join(problems[:5]) + more)


def load_authors_waveglow(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a WaveGlow checkpoint of the authors (either format above).

    Returns:
        ``(state_dict, model_args)``: ``WaveGlow(**model_args).load_state_dict(state_dict)``
        gives their model; tensors are float32 on the CPU.

    Raises:
        CheckpointError: missing or unreadable file, not WaveGlow weights, a pickle naming
            anything outside the allowed classes, or inconsistent shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    obj = _load_file(path)
    hints: dict[str, Any] = {}
    if isinstance(obj, dict) and obj.get("format") == "flowspeech":
        raise CheckpointError(f"{path} is already a flowspeech checkpoint; load it directly")
    if isinstance(obj, dict) and isinstance(obj.get("model"), _Stub):
        model = obj["model"]
        flat: dict[str, torch.Tensor] = {}
        _flatten(model, "", flat)
        attrs = model.__dict__
        hints["n_early_every"] = attrs.get("n_early_every")
        upsample = (attrs.get("_modules") or {}).get("upsample")
        stride = getattr(upsample, "__dict__", {}).get("stride")
        if isinstance(stride, (tuple, list)) and stride:
            hints["stride"] = int(stride[0])
    elif isinstance(obj, dict):
        flat = obj.get("state_dict", obj.get("model", obj))
        if not isinstance(flat, dict) or not all(isinstance(v, torch.Tensor) for v in flat.values()):
            shown = ", ".join(sorted(map(str, obj))[:8])
            raise CheckpointError(
                f"{path} holds neither a WaveGlow model nor a state dict (keys: {shown})")
        flat = {k.removeprefix("module."): v for k, v in flat.items()}
        config = obj.get("config")
        if isinstance(config, dict):
            hints["n_early_every"] = config.get("n_early_every")
    else:
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a WaveGlow checkpoint")
    flat = {k: v.float() if v.is_floating_point() else v for k, v in flat.items()}
    return _convert(flat, hints, str(path))


def import_waveglow(src: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Convert the authors' checkpoint ``src`` into a flowspeech checkpoint at ``out_path``.

    The config is the ``waveglow-base`` preset with the ``model_args`` read from the weights
    (and the audio section's ``n_mels`` / ``hop_length`` if they differ from 80 / 256).

    Returns:
        The config written into the checkpoint.
    """
    src = Path(src)
    state, args = load_authors_waveglow(src)
    n_mels, hop = args.pop("n_mel_channels"), args.pop("hop_length")
    return save_imported_vocoder(out_path, src, "waveglow", "WaveGlow", state, args, "glow-tts", n_mels, hop)
