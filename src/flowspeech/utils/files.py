"""Atomic writes and validated reads of the small files the CLI handles."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from flowspeech.errors import FlowspeechError

# mkstemp makes private (0600) files; what flowspeech writes gets the usual umask-derived
# mode, so checkpoints, configs and caches next to shared data are readable by the group.
# Reading the umask means setting it (not thread-safe), so it is read once, at import.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


# ".<name>.<pid>.<random><suffix>.tmp": the writer's pid tells a killed write from a running one.
_TEMP_FILE = re.compile(r"^\..+\.(\d+)\.[^.]+(\.[^.]+)*\.tmp$")
_swept: set[Path] = set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` left in ``folder`` when its process
    was killed mid-write (a checkpoint's can be 100 MB); files of live processes stay.
    Returns the files removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_FILE.match(entry.name)
        if m and entry.is_file() and not _alive(int(m.group(1))):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def atomic_write(path: str | Path, write_fn, suffix: str = "") -> None:
    """Call ``write_fn(tmp_path)`` then rename the temp file onto ``path``.

    The temp file lives in the destination folder so the rename is atomic: an interrupted
    write never leaves a truncated ``path``, and an existing ``path`` stays intact. The first
    write into a folder also removes the temp files of writes that were killed there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.resolve()
    if folder not in _swept:
        _swept.add(folder)
        remove_stale_temp_files(folder)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix + ".tmp",
                               dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_save_npy(path: str | Path, array) -> None:
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    atomic_write(path, write)


def load_mel_npy(path: str | Path, n_mels: int | None = None):
    """Read a ``[n_mels, frames]`` float array, with a clear error for anything else."""
    import numpy as np

    try:
        mel = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FlowspeechError(f"mel file {path} does not exist") from None
    except (ValueError, OSError) as err:
        raise FlowspeechError(f"mel file {path} is not a readable .npy array: {err}") from None
    if mel.ndim == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.ndim != 2:
        raise FlowspeechError(f"mel file {path} has shape {mel.shape}; expected [n_mels, frames]")
    if n_mels is not None and mel.shape[0] != n_mels:
        if mel.shape[1] == n_mels:
            raise FlowspeechError(
                f"mel file {path} has shape {mel.shape}: it looks transposed; expected "
                f"[{n_mels}, frames]")
        raise FlowspeechError(f"mel file {path} has {mel.shape[0]} bands; the config expects {n_mels}")
    if not np.isfinite(mel).all():
        raise FlowspeechError(f"mel file {path} contains NaN or infinite values")
    return mel.astype(np.float32)
