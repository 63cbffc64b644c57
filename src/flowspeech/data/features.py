"""On-disk feature cache: each clip's spectrograms computed once per feature configuration.

Layout::

    <cache_dir>/                         default <dataset>/.flowspeech_cache/<config hash>/
        config.json                      the MelConfig the features were made with
        <id>.mel.<size>-<mtime>.npy      float32 [n_mels, F]
        <id>.linear.<size>-<mtime>.npy   float32 [n_fft // 2 + 1, F]   (when asked for)
        <id>.audio.<size>-<mtime>.npy    float32 [T]  (only for clips that need resampling)

The folder is named by a hash of ``MelConfig.to_dict()``, so features of different settings
never mix. Each file name carries the wav's size and modification time (hex), so a changed
wav no longer matches its old entry and is recomputed (the old entry is deleted). Files are
written to a temporary name and renamed into place (``os.replace``), so concurrent readers
(``DataLoader`` workers, :func:`precompute_features` processes) never see a partial file; a
file that fails to load anyway (disk full, killed machine) is logged and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import quote

import numpy as np
import soundfile
import torch
from tqdm.auto import tqdm

from flowspeech.audio import LinearSpectrogram, MelConfig, MelSpectrogram, load_wav
from flowspeech.data.manifest import Manifest, Utterance, audio_header
from flowspeech.errors import AudioError, DatasetError
from flowspeech.utils.files import FILE_MODE

logger = logging.getLogger("flowspeech.data")

KINDS = ("mel", "linear", "audio")
CACHE_FOLDER = ".flowspeech_cache"


def config_hash(mel_config: MelConfig) -> str:
    """16 hex digits identifying ``mel_config`` (a hash of its ``to_dict()``)."""
    text = json.dumps(mel_config.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_cache_dir(root: str | Path, mel_config: MelConfig) -> Path:
    """``<root>/.flowspeech_cache/<config hash>``."""
    return Path(root) / CACHE_FOLDER / config_hash(mel_config)


def resampled_length(num_samples: int, orig_sr: int, target_sr: int) -> int:
    """Length after resampling from ``orig_sr`` to ``target_sr`` (librosa's rule, ``ceil``)."""
    return num_samples if orig_sr == target_sr else math.ceil(num_samples * target_sr / orig_sr)


class FeatureCache:
    """Mel (and linear) spectrograms of clips, computed on first use and kept as ``.npy``.

    Args:
        mel_config: the feature settings (:class:`flowspeech.audio.MelConfig`).
        cache_dir: where to keep the files; default ``<root>/.flowspeech_cache/<hash>``.
        root: the dataset folder (``Manifest.root``), needed when ``cache_dir`` is None.

    If the folder cannot be written (read-only dataset), a warning is logged once and
    features are computed on every access; pass a writable ``cache_dir``.

    Attributes:
        hits, misses: entries read from disk / computed, for this process.
    """

    def __init__(
        self,
        mel_config: MelConfig,
        cache_dir: str | Path | None = None,
        root: str | Path | None = None,
    ):
        if cache_dir is None and root is None:
            raise DatasetError("FeatureCache needs a cache_dir or the dataset root")
        self.config = mel_config
        self.dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(root, mel_config)
        self.hits = 0
        self.misses = 0
        self._writable = True
        self._listing: dict[tuple[str, str], set[str]] | None = None
        self._modules: dict[str, torch.nn.Module] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Workers rebuild modules and the folder listing themselves.
        state = self.__dict__.copy()
        state["_modules"], state["_listing"] = {}, None
        return state

    # ------------------------------------------------------------------ public accessors

    def mel(self, utt: Utterance) -> np.ndarray:
        """``[n_mels, F]`` float32 log-mel spectrogram of ``utt``."""
        return self.get(utt, ("mel",))["mel"]

    def linear(self, utt: Utterance) -> np.ndarray:
        """``[n_fft // 2 + 1, F]`` float32 linear (magnitude) spectrogram of ``utt``."""
        return self.get(utt, ("linear",))["linear"]

    def audio(self, utt: Utterance, start: int = 0, length: int | None = None) -> np.ndarray:
        """``[T]`` float32 samples at ``config.sample_rate`` (``samples[start:start + length]``).

        Decoded from the wav each time when its rate already matches (decoding, of only the
        requested span, is cheaper than reading a float32 copy); cached when it must be
        resampled (resampling is not cheap).
        """
        rate = utt.sample_rate
        if rate is None:
            rate = audio_header(utt.audio_path)[1]
        if rate != self.config.sample_rate:
            samples = self.get(utt, ("audio",))["audio"]
            return samples[start:None if length is None else start + length]
        if start == 0 and length is None:
            return self._load_audio(utt)
        try:
            data, _ = soundfile.read(
                str(utt.audio_path), frames=-1 if length is None else length, start=start,
                dtype="float32", always_2d=True,
            )
        except (RuntimeError, OSError, ValueError) as err:
            raise AudioError(f"{utt.audio_path}: cannot be read as audio ({err})") from err
        # Channels averaged exactly as flowspeech.audio.load_wav does.
        return data.mean(axis=1, dtype=np.float32)

    def get(self, utt: Utterance, kinds: Sequence[str] = ("mel",)) -> dict[str, np.ndarray]:
        """The features ``kinds`` (of ``"mel"``, ``"linear"``, ``"audio"``) of ``utt``.

        Entries missing, stale or corrupt are computed together from one decode of the wav.

        Raises:
            AudioError: the wav is missing or cannot be decoded, or is too short to frame.
        """
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise DatasetError(f"unknown feature kind(s) {unknown}; choose from {KINDS}")
        stamp = self._stamp(utt)
        out: dict[str, np.ndarray] = {}
        for kind in kinds:
            array = self._read(self.dir / self._name(utt.id, kind, stamp), kind)
            if array is not None:
                out[kind] = array
                self.hits += 1
        missing = [k for k in kinds if k not in out]
        if missing:
            computed = self._compute(utt, missing)
            self.misses += len(missing)
            for kind in missing:
                self._write(utt.id, kind, stamp, computed[kind])
            out.update(computed)
        return out

    def path(self, utt: Utterance, kind: str = "mel") -> Path:
        """Where the entry of ``utt`` for ``kind`` is (or would be) stored."""
        return self.dir / self._name(utt.id, kind, self._stamp(utt))

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _name(utt_id: str, kind: str, stamp: str) -> str:
        # quote() keeps ids like LJ001-0001 readable and makes any "/" or ".." harmless.
        return f"{quote(utt_id, safe='')}.{kind}.{stamp}.npy"

    @staticmethod
    def _stamp(utt: Utterance) -> str:
        try:
            st = os.stat(utt.audio_path)
        except OSError as err:
            raise AudioError(
                f"audio file {utt.audio_path} is missing or unreadable: {err.strerror}"
            ) from err
        return f"{st.st_size:x}-{st.st_mtime_ns:x}"

    def _channels(self, kind: str) -> int | None:
        return {"mel": self.config.n_mels, "linear": self.config.n_freqs}.get(kind)

    def _read(self, path: Path, kind: str) -> np.ndarray | None:
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as err:
            logger.warning("cache file %s is corrupt (%s); recomputing it", path, err)
            return None
        channels = self._channels(kind)
        ok = (
            array.dtype == np.float32
            and array.ndim == (1 if channels is None else 2)
            and (channels is None or array.shape[0] == channels)
            and array.shape[-1] > 0
            and bool(np.isfinite(array).all())
        )
        if not ok:
            logger.warning(
                "cache file %s holds %s %s, not a %s feature; recomputing it",
                path, array.dtype, array.shape, kind,
            )
            return None
        return array

    def _load_audio(self, utt: Utterance) -> np.ndarray:
        samples, _ = load_wav(utt.audio_path, sample_rate=self.config.sample_rate)
        return np.ascontiguousarray(samples, dtype=np.float32)

    def compute(self, samples: np.ndarray, kind: str = "mel") -> np.ndarray:
        """The ``"mel"`` or ``"linear"`` spectrogram of ``samples [T]``, not cached."""
        if kind not in ("mel", "linear"):
            raise DatasetError(f"cannot compute feature kind {kind!r}; choose 'mel' or 'linear'")
        if kind not in self._modules:
            cls = MelSpectrogram if kind == "mel" else LinearSpectrogram
            self._modules[kind] = cls(self.config)
        with torch.no_grad():
            out = self._modules[kind](torch.from_numpy(np.asarray(samples, dtype=np.float32)))
        return out.numpy().astype(np.float32, copy=False)

    def _compute(self, utt: Utterance, kinds: Iterable[str]) -> dict[str, np.ndarray]:
        samples = self._load_audio(utt)
        if samples.shape[0] < self.config.min_samples:
            raise AudioError(
                f"audio file {utt.audio_path} is too short: {samples.shape[0]} samples, "
                f"framing needs at least {self.config.min_samples}"
            )
        return {kind: samples if kind == "audio" else self.compute(samples, kind) for kind in kinds}

    def _write(self, utt_id: str, kind: str, stamp: str, array: np.ndarray) -> None:
        if not self._writable:
            return
        name = self._name(utt_id, kind, stamp)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            config_file = self.dir / "config.json"
            if not config_file.exists():
                text = json.dumps(self.config.to_dict(), indent=1).encode()
                _atomic_write(config_file, lambda f: f.write(text))
            _atomic_write(self.dir / name, lambda f: np.save(f, array, allow_pickle=False))
        except OSError as err:
            self._writable = False
            logger.warning(
                "cannot write the feature cache %s (%s): features will be computed on every "
                "access; pass a writable cache_dir", self.dir, err.strerror or err,
            )
            return
        # Delete older entries of this clip (a previous version of the wav).
        listing = self._entries()
        key = (quote(utt_id, safe=""), kind)
        for old in listing.get(key, set()) - {name}:
            try:
                (self.dir / old).unlink()
            except OSError:
                pass  # already gone (another worker), or not ours to delete
        listing[key] = {name}

    def _entries(self) -> dict[tuple[str, str], set[str]]:
        # One directory scan per process, then kept up to date: globbing per write would
        # make filling a cache of N clips cost O(N^2).
        if self._listing is None:
            listing: dict[tuple[str, str], set[str]] = defaultdict(set)
            with os.scandir(self.dir) as it:
                for entry in it:
                    parts = entry.name.rsplit(".", 3)  # <quoted id>.<kind>.<stamp>.npy
                    if len(parts) == 4 and parts[-1] == "npy":
                        listing[(parts[0], parts[1])].add(entry.name)
            self._listing = listing
        return self._listing


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(file)`` to a temporary file in ``path``'s folder, then rename.

    No fsync: a cache entry lost or truncated by a crash is detected on read and recomputed.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ---------------------------------------------------------------------- precomputation

_worker_cache: FeatureCache | None = None


def _init_worker(mel_config: dict[str, Any], cache_dir: str) -> None:
    global _worker_cache
    torch.set_num_threads(1)  # one process per core already
    _worker_cache = FeatureCache(MelConfig.from_dict(mel_config), cache_dir)


def _fill(cache: FeatureCache, utt: Utterance, kinds: tuple[str, ...]) -> tuple[str, str, str]:
    """Fill one clip's entries; returns ``(where, "computed" | "cached" | "failed", why)``."""
    misses = cache.misses
    try:
        cache.get(utt, kinds)
    except (AudioError, DatasetError) as err:
        return utt.origin or str(utt.audio_path), "failed", str(err)
    return utt.id, "computed" if cache.misses > misses else "cached", ""


def _fill_in_worker(args: tuple[Utterance, tuple[str, ...]]) -> tuple[str, str, str]:
    assert _worker_cache is not None
    return _fill(_worker_cache, *args)


def precompute_features(
    manifest: Manifest,
    mel_config: MelConfig,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    kinds: Sequence[str] = ("mel",),
    progress: bool = True,
) -> dict[str, Any]:
    """Fill the feature cache of a whole dataset in parallel, so training starts fast.

    Args:
        manifest: the dataset (:func:`~flowspeech.data.load_manifest`).
        mel_config: feature settings.
        cache_dir: cache folder; default ``<manifest.root>/.flowspeech_cache/<hash>``.
        workers: processes (default: all CPU cores); 0 or 1 computes in this process.
            Workers are forked where the platform can (Linux); elsewhere they are spawned,
            and the calling script needs the usual ``if __name__ == "__main__":`` guard.
        kinds: features to store: ``("mel",)``, or ``("mel", "linear")`` for end-to-end
            models.
        progress: show a tqdm progress bar.

    Returns:
        ``{"computed": n, "cached": n, "failed": [(where, why), ...], "cache_dir": path}``.
        Failures (a wav that passes the header check but does not decode) are also logged.
    """
    cache = FeatureCache(mel_config, cache_dir, manifest.root)
    kinds = tuple(kinds)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    tasks = [(utt, kinds) for utt in manifest.utterances]
    counts = {"computed": 0, "cached": 0}
    failed: list[tuple[str, str]] = []

    bar = tqdm(total=len(tasks), desc="features", unit="clip", disable=not progress)
    config_dict = mel_config.to_dict()
    if workers <= 1:
        results: Iterable[tuple[str, str, str]] = (_fill(cache, utt, kinds) for utt, _ in tasks)
        pool = None
    else:
        # "fork" where there is one: workers start at once (no re-import of torch and
        # librosa) and scripts need no `if __name__ == "__main__"` guard. Workers only run
        # CPU torch ops with one thread, as DataLoader workers do after a fork.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        pool = context.Pool(
            workers, initializer=_init_worker, initargs=(config_dict, str(cache.dir))
        )
        chunk = max(1, min(64, len(tasks) // (workers * 8)))
        results = pool.imap_unordered(_fill_in_worker, tasks, chunksize=chunk)
    finished = False
    try:
        for where, status, why in results:
            if status == "failed":
                failed.append((where, why))
                logger.warning("could not compute features for %s: %s", where, why)
            else:
                counts[status] += 1
            bar.update()
        finished = True
    finally:
        bar.close()
        if pool is not None:
            pool.close() if finished else pool.terminate()
            pool.join()
    return {**counts, "failed": failed, "cache_dir": cache.dir}
