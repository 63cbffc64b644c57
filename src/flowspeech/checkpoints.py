"""Checkpoint files: atomic writes, loads that explain what is wrong, and export.

A flowspeech checkpoint is a ``torch.save`` dict::

    {"format": "flowspeech", "version": 1,
     "model_type": "glow-tts", "config": {...},     # the full resolved config
     "model": state_dict, "step": int,
     # training checkpoints also hold
     "optimizers": {...}, "schedulers": {...}, "scaler": {...},
     "trainer": {"epoch": int, "batch_in_epoch": int, "rng": [per-rank states]}}

Everything in it loads with ``torch.load(weights_only=True)``: no pickled code runs when a
user opens a checkpoint they were sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowspeech.errors import CheckpointError
from flowspeech.utils.files import atomic_write

FORMAT = "flowspeech"
VERSION = 1

# Plain numbers that other projects' checkpoints store as numpy scalars (the Glow-TTS authors'
# learning rate is a numpy.float64 from np.power): the weights-only loader may rebuild these,
# and nothing else that is not a tensor or a container. Files pickled under numpy 1 name the
# scalar constructor numpy.core.*, under numpy 2 numpy._core.*.
_SCALAR = np.array(0.0)[()].__reduce__()[0]
_NUMPY_GLOBALS = [np.dtype, (_SCALAR, "numpy.core.multiarray.scalar"),
                  (_SCALAR, "numpy._core.multiarray.scalar"),
                  *{type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64,
                                                np.uint8, np.uint16, np.uint32, np.uint64,
                                                np.float16, np.float32, np.float64)}]
# What PyTorch's weights-only loader names when it meets an object it may not rebuild.
_FOREIGN_OBJECT = re.compile(r"Unsupported global: GLOBAL ([\w.]+)|but got <class '([\w.]+)'>")


class ForeignObjectsError(CheckpointError):
    """The file holds pickled Python objects besides tensors, numbers and containers."""


def read_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load`` of ``path`` with PyTorch's weights-only loader (no code in the file runs;
    numpy scalars and dtypes are allowed), on the CPU, with one clear error for every way
    the file can be wrong.

    Raises:
        CheckpointError: missing, empty, truncated or corrupt.
        ForeignObjectsError: holding Python objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes): a copy or a write was "
                              f"interrupted; use another file")
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/garbage files
        kind = ForeignObjectsError if _FOREIGN_OBJECT.search(str(err)) else CheckpointError
        raise kind(f"{what} {path} cannot be read: {load_error_reason(err)}") from None


def load_error_reason(err: Exception) -> str:
    """The reason in a torch.load error, without its advice to load with weights_only=False
    (which would run code from the file)."""
    text = str(err)
    found = _FOREIGN_OBJECT.search(text)
    if found:
        return (f"it holds a Python object ({found.group(1) or found.group(2)}), not only "
                f"tensors, numbers and containers; flowspeech never unpickles objects from a "
                f"file, since that can run code")
    if "weights_only" in text:  # PyTorch's advice to unpickle anyway: never pass it on
        reason = re.search(r"WeightsUnpickler error: *\n*\s*([^\n]+)", text)
        return ("the file is corrupt, truncated, or not a PyTorch file (its pickled data is "
                "not a plain checkpoint" + (f": {reason.group(1).strip()[:160]}" if reason else "")
                + ")")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return (f"the file is corrupt, truncated, or not a PyTorch file ({type(err).__name__}"
            + (f": {first[:200]}" if first else "") + ")")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (temp file in the same folder, fsync, rename)."""
    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, model_type: str | None = None) -> dict[str, Any]:
    """Read a flowspeech checkpoint onto the CPU, checking that it is one (and of ``model_type``).

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, not a flowspeech checkpoint
            (e.g. an authors' original checkpoint, which ``flowspeech import`` converts), or of
            another model type.
    """
    path = Path(path)
    payload = read_torch_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        keys = ", ".join(sorted(map(str, payload))[:8]) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not a flowspeech checkpoint (it holds: {keys}). Weights published with "
            f"the original Glow-TTS/WaveGlow/FloWaveNet code are converted with "
            f"`flowspeech import MODEL {path} --out converted.pt`."
        )
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {payload['version']}; this flowspeech reads "
            f"up to {VERSION}: upgrade flowspeech")
    if model_type is not None and payload.get("model_type") != model_type:
        raise CheckpointError(
            f"checkpoint {path} holds a {payload.get('model_type')!r} model, not {model_type!r}")
    return payload


def load_state_dict_checked(module: torch.nn.Module, state_dict: dict[str, torch.Tensor],
                            source: str) -> None:
    """``module.load_state_dict`` with an error that lists what does not match.

    A submodule may name entries that older checkpoints lack, with the value that keeps their
    behaviour, in a ``state_defaults()`` method (e.g. a flag added after they were written)."""
    own = module.state_dict()
    defaults = {f"{name}.{key}" if name else key: value
                for name, sub in module.named_modules() if hasattr(sub, "state_defaults")
                for key, value in sub.state_defaults().items()}
    if any(k not in state_dict for k in defaults):
        state_dict = {**{k: v for k, v in defaults.items() if k in own}, **state_dict}
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong_shape)):
            if items:
                shown = "; ".join(items[:5]) + (f"; ... ({len(items)} in all)" if len(items) > 5 else "")
                parts.append(f"{title}: {shown}")
        raise CheckpointError(
            f"{source} does not match this model (was it trained with another config?): "
            + " | ".join(parts))
    module.load_state_dict(state_dict, strict=True)


def load_state_dict_partial(module: torch.nn.Module, state_dict: dict[str, torch.Tensor],
                            source: str) -> tuple[list[str], list[str]]:
    """Copy into ``module`` every entry of ``state_dict`` whose name and shape match; the
    rest of the module keeps its values (e.g. a token embedding for another symbol set).

    Returns ``(kept, ignored)``: the module's entries left as they were, and the checkpoint's
    entries not used (unknown name or other shape).

    Raises:
        CheckpointError: nothing in ``state_dict`` fits the module.
    """
    own = module.state_dict()
    fits = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    if not fits:
        raise CheckpointError(f"{source}: none of its {len(state_dict)} tensors fits this model "
                              "(another model type?)")
    module.load_state_dict(fits, strict=False)
    kept = [k for k in own if k not in fits]
    ignored = [k for k in state_dict if k not in fits]
    return kept, ignored


def export_checkpoint(src: str | Path | Sequence[str | Path], out: str | Path, half: bool = False,
                      inference_state=None, parameter_names=None,
                      weight_average: bool = False) -> dict[str, Any]:
    """Write ``src``'s model weights, config and inference extras to ``out`` without optimiser
    state (what a voice or a deployment needs), optionally with floating-point weights in
    float16 (loaders convert back to float32). ``inference_state(model_type, state)`` maps the
    stored weights to those synthesis uses, e.g. a GAN checkpoint's generator
    (:func:`flowspeech.models.registry.inference_state`).

    Several sources write the mean of their weights (:func:`average_checkpoints`; it needs
    ``parameter_names``). ``weight_average``: take each source's moving average of the
    weights (``train.weight_average_decay``) instead of its weights.

    Returns ``{"parameters": values written, "step": training step, "averaged": sources}``.
    """
    sources = [src] if isinstance(src, (str, Path)) else list(src)
    if len(sources) > 1:
        if parameter_names is None:
            raise TypeError("averaging checkpoints needs parameter_names(config)")
        exported = average_checkpoints(sources, parameter_names, inference_state, weight_average)
        state = exported["model"]
    else:
        state, exported = _inference_weights(load_checkpoint(sources[0]), inference_state, weight_average,
                                             sources[0])
        exported["exported_from"] = str(sources[0])
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    exported["model"] = state
    save_checkpoint(out, exported)
    n = sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor))
    return {"parameters": n, "step": exported.get("step"), "averaged": len(sources)}


def _inference_weights(payload: dict[str, Any], inference_state=None, weight_average: bool = False,
                       source: str | Path = "the checkpoint") -> tuple[dict, dict[str, Any]]:
    """A checkpoint's weights that synthesis uses (with ``weight_average``, its moving
    average of them), and the entries an exported checkpoint keeps beside them (model type,
    config, step, inference settings); no optimiser state."""
    state = payload["model"]
    kept = {key: payload[key] for key in ("model_type", "config", "step", "inference") if key in payload}
    if weight_average:
        average = payload.get("weight_average")
        if average is None:
            raise CheckpointError(
                f"{source} holds no moving average of its weights: only training checkpoints of "
                f"a run with train.weight_average_decay set do")
        state = average["model"]
        kept["averaged_weights"] = {"decay": average["decay"], "updates": average["updates"]}
    if inference_state is not None:
        state = inference_state(payload["model_type"], state)
    return state, kept


# What must agree for two checkpoints to hold one model: its type, architecture and front ends.
_SAME_MODEL = ("model", "model_args", "audio", "text")


def average_checkpoints(sources: Sequence[str | Path], parameter_names,
                        inference_state=None, weight_average: bool = False) -> dict[str, Any]:
    """The mean of several checkpoints' weights: checkpoint averaging, as ESPnet's and
    fairseq's averaging scripts do for the last N checkpoints of a run, which evens out the
    noise that the last updates leave in the weights.

    Every trained parameter (``parameter_names(config)`` names them) is averaged in float64
    and stored in its own dtype. Buffers are not trained (permutations, signs, "initialised"
    flags, a memory bank's switch), so they must be equal in every checkpoint: checkpoints
    that differ in one are not of one run, or straddle a change in the model's state (e.g.
    one from before the memory bank was switched on), and their mean would be no model.

    The result is an inference checkpoint (no optimiser state) with the last source's config,
    step and ``inference`` entry (give the newest last; settings fitted to one checkpoint,
    such as a NaturalSpeech ``duration_scale``, should be fitted again), and
    ``averaged_from`` listing the sources and their steps.

    Raises:
        CheckpointError: a source is unreadable, named twice, or holds another model
            (type, architecture, audio or text settings), other tensors, or other buffers.
    """
    paths = [Path(p) for p in sources]
    if len({p.resolve() for p in paths}) < len(paths):
        raise CheckpointError("a checkpoint is named twice: each source counts once in the mean")
    # One checkpoint in memory at a time (training checkpoints carry the optimiser's state):
    # the first sets what the others must match, and float64 sums gather the parameters.
    first_path, first_config, shapes, buffers, trained = paths[0], None, {}, {}, set()
    sums: dict[str, torch.Tensor] = {}
    averaged_from = []
    for path in paths:
        state, exported = _inference_weights(load_checkpoint(path), inference_state, weight_average, path)
        if first_config is None:
            first_config, trained = exported["config"], parameter_names(exported["config"])
            shapes = {name: value.shape for name, value in state.items()}
            buffers = {name: value for name, value in state.items()
                       if name not in trained or not value.is_floating_point()}
        else:
            _check_same_model(path, exported["config"], state, first_path, first_config, shapes)
        for name, value in state.items():
            if name in buffers:
                if not torch.equal(value, buffers[name]):
                    raise CheckpointError(
                        f"{path} and {first_path} differ in {name}, which is not trained: they "
                        f"are not checkpoints of one run, or one was written before a change in "
                        f"the model's state (e.g. a flag set during training); average "
                        f"checkpoints from after it")
            elif name in sums:
                sums[name] += value.double()
            else:
                sums[name] = value.double()
        dtypes = {name: value.dtype for name, value in state.items()}
        averaged_from.append({"checkpoint": str(path), "step": exported.get("step")})
        del state
    exported["model"] = {name: buffers[name] if name in buffers else (sums[name] / len(paths)).to(dtypes[name])
                         for name in shapes}
    exported["exported_from"] = str(paths[-1])
    exported["averaged_from"] = averaged_from
    return exported


def _check_same_model(path: Path, config: dict, state: dict, first_path: Path, first_config: dict,
                      shapes: dict) -> None:
    """Refuse a checkpoint that holds another model than the first of an average."""
    for key in _SAME_MODEL:
        if config.get(key) != first_config.get(key):
            raise CheckpointError(
                f"{path} and {first_path} hold different models (their configs' {key!r} "
                f"differ): only checkpoints of one model can be averaged")
    if state.keys() != shapes.keys():
        odd = sorted(state.keys() ^ shapes.keys())
        raise CheckpointError(f"{path} and {first_path} hold different tensors ({', '.join(odd[:5])})")
    for name, value in state.items():
        if value.shape != shapes[name]:
            raise CheckpointError(f"{path} and {first_path} differ in {name}'s shape: "
                                  f"{tuple(value.shape)} against {tuple(shapes[name])}")
