"""Checkpoints: atomic writes, keep-last-K rotation, and loads that explain what is wrong.

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
from pathlib import Path
from typing import Any

import torch

from flowspeech.errors import CheckpointError
from flowspeech.utils.files import atomic_write

FORMAT = "flowspeech"
VERSION = 1
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (temp file in the same folder, fsync, rename)."""
    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, model_type: str | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a flowspeech checkpoint, checking that it is one (and of ``model_type``).

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, not a flowspeech checkpoint
            (e.g. an authors' original checkpoint, which ``flowspeech import`` converts), or of
            another model type.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated/garbage files
        raise CheckpointError(
            f"checkpoint {path} cannot be read: the file is corrupt, truncated, or not a "
            f"PyTorch checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from None
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


class CheckpointManager:
    """``run_dir/checkpoints/step_XXXXXXXX.pt``, keeping the newest ``keep`` files."""

    def __init__(self, run_dir: str | Path, keep: int = 5):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = max(1, int(keep))

    def path_for(self, step: int) -> Path:
        return self.dir / f"step_{step:08d}.pt"

    def list(self) -> list[tuple[int, Path]]:
        """(step, path) of every checkpoint, oldest first."""
        if not self.dir.is_dir():
            return []
        found = []
        for p in self.dir.iterdir():
            m = _STEP_FILE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def save(self, step: int, payload: dict[str, Any]) -> Path:
        path = self.path_for(step)
        save_checkpoint(path, payload)
        for _, old in self.list()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self, model_type: str | None = None, log=print) -> dict[str, Any] | None:
        """The newest readable checkpoint; unreadable newer ones are reported and passed over
        (never deleted), so a crash during a write cannot cost more than one interval."""
        errors = []
        for step, path in reversed(self.list()):
            try:
                payload = load_checkpoint(path, model_type=model_type)
            except CheckpointError as err:
                errors.append(str(err))
                log(f"warning: skipping unreadable checkpoint {path}: {err}")
                continue
            payload["_path"] = str(path)
            return payload
        if errors:
            raise CheckpointError("no readable checkpoint to resume from: " + " | ".join(errors))
        return None
