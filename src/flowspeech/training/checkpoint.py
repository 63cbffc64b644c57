"""Training checkpoints: ``run/checkpoints/step_*.pt``, keep-last-K rotation, and resume
past unreadable files. The file format itself is :mod:`flowspeech.checkpoints`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flowspeech.checkpoints import load_checkpoint, save_checkpoint
from flowspeech.errors import CheckpointError

_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


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
