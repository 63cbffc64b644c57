"""Atomic writes and validated reads of the small files the CLI handles."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from flowspeech.errors import FlowspeechError, OutputError

# mkstemp makes private (0600) files; what flowspeech writes gets the usual umask-derived
# mode, so checkpoints, configs and caches next to shared data are readable by the group.
# Reading the umask means setting it (not thread-safe), so it is read once, at import.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


# ".<name>.<pid>.<random><suffix>.tmp": the writer's pid tells a killed write from a running one.
_TEMP_FILE = re.compile(r"^\..+\.(\d+)\.[^.]+(\.[^.]+)*\.tmp$")
_swept: set[Path] = set()


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read a megabyte at a time (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where flowspeech keeps files it can recompute: ``$FLOWSPEECH_CACHE``, else
    ``$XDG_CACHE_HOME/flowspeech``, else ``~/.cache/flowspeech``."""
    if os.environ.get("FLOWSPEECH_CACHE"):
        return Path(os.environ["FLOWSPEECH_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flowspeech"


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = path.parent.resolve()
        if folder not in _swept:
            _swept.add(folder)
            remove_stale_temp_files(folder)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix + ".tmp",
                                   dir=path.parent)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {_reason(err, path)}") from err
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        # torch.save reports a full disk as RuntimeError("... unexpected pos ...").
        if isinstance(err, OSError) or (isinstance(err, RuntimeError) and
                                        ("unexpected pos" in str(err) or "PytorchStreamWriter" in str(err))):
            raise OutputError(f"cannot write {path}: {_reason(err, path)}") from err
        raise


def _reason(err: BaseException, path: Path) -> str:
    """Why a write failed, in words, with what to do."""
    code = getattr(err, "errno", None)
    full = False
    if code is None:  # torch.save's RuntimeError: look at the disk
        try:
            full = shutil.disk_usage(path.parent).free < 16 * 2**20
        except OSError:
            pass
    if code in (errno.ENOSPC, errno.EDQUOT) or full:
        return "the disk is full; free some space or write elsewhere"
    if code == errno.EROFS:
        return "the file system is read-only; write elsewhere"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied; choose a folder you can write to"
    text = getattr(err, "strerror", None) or str(err)
    return text.splitlines()[0] if text.strip() else type(err).__name__


def atomic_save_npy(path: str | Path, array) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    atomic_write(path, write)


def load_mel_npy(path: str | Path, n_mels: int | None = None):
    """Read a ``[n_mels, frames]`` float array, with a clear error for anything else."""

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
    if mel.shape[1] == 0:
        raise FlowspeechError(f"mel file {path} has no frames (shape {mel.shape})")
    if not np.isfinite(mel).all():
        raise FlowspeechError(f"mel file {path} contains NaN or infinite values")
    return mel.astype(np.float32)


class LockedError(FlowspeechError):
    """Another process holds the lock of a folder flowspeech writes into."""


class FolderLock:
    """An exclusive lock on ``folder`` for one process (``folder/.lock``, ``flock``), as a
    context manager. The lock file records who holds it, so a second process fails with a
    message that names the holder; the kernel releases the lock when its process dies, so a
    lock left by a killed process is simply taken over.

    Raises (on enter):
        LockedError: another live process holds it.
    """

    def __init__(self, folder: str | Path, purpose: str):
        self.path = Path(folder) / ".lock"
        self.purpose = purpose
        self._fd: int | None = None

    def __enter__(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 4096).decode("utf-8", "replace")
            os.close(fd)
            try:
                info = json.loads(holder)
                who = (f"process {info['pid']} on {info['host']} ({info['purpose']}, since "
                       f"{info['since']})")
            except (ValueError, KeyError, TypeError):
                who = "another process"
            raise LockedError(f"{self.path.parent} is in use by {who}; wait for it to finish or "
                              f"stop it, or use another folder") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock; the file stays, harmless
            self._fd = None
