"""Reading, writing and resampling waveforms.

Samples are float32 in [-1, 1]. 16-bit PCM maps to floats as ``int16 / 32768``, the
convention of WaveGlow's loader (Prenger et al., 2019) and of ``soundfile``.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from flowspeech.errors import AudioConvertedWarning, AudioError
from flowspeech.utils.files import atomic_write

PathLike = str | os.PathLike



def load_wav(
    path: PathLike, sample_rate: int | None = None, mono: bool = True, announce: bool = False
) -> tuple[np.ndarray, int]:
    """Reads an audio file (any format libsndfile reads: wav, flac, ogg, ...) or a ``.npy``
    array written by :func:`save_wav`.

    Args:
        path: file to read.
        sample_rate: resample to this rate (Hz) when given and different from the file's.
            A ``.npy`` file stores no rate, so it needs ``sample_rate`` and is taken to be
            at that rate already.
        mono: average the channels.
        announce: say (an :class:`~flowspeech.errors.AudioConvertedWarning`) when the file
            was resampled or mixed down, for files a user hands in one at a time.

    Returns:
        ``(samples, rate)``: float32 ``[T]`` (``[C, T]`` when ``mono=False``) and its rate.

    Raises:
        AudioError: the file is missing, empty, not audio, corrupt, has no samples, or
            holds non-finite values; the message names the path and the cause.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes); re-export or remove it")

    if path.suffix.lower() == ".npy":
        samples, rate = _load_npy(path, sample_rate)
    else:
        try:
            data, rate = sf.read(path, dtype="float32", always_2d=True)  # [T, C]
        except (sf.SoundFileError, RuntimeError, OSError, ValueError) as err:
            raise AudioError(f"{path}: cannot be read as audio ({err})") from err
        samples = data.mean(axis=1, dtype=np.float32) if mono else np.ascontiguousarray(data.T)
        channels = data.shape[1]

    if samples.shape[-1] == 0:
        raise AudioError(f"{path}: contains no samples")
    if not np.isfinite(samples).all():
        raise AudioError(f"{path}: contains NaN or infinite samples (corrupt float file?)")
    changes = []
    if mono and path.suffix.lower() != ".npy" and channels > 1:
        changes.append(f"{channels} channels mixed down to mono")
    if sample_rate is not None and sample_rate != rate:
        changes.append(f"resampled from {rate} Hz to {sample_rate} Hz")
        samples, rate = resample(samples, rate, sample_rate), sample_rate
    if announce and changes:
        warnings.warn(f"{path}: {' and '.join(changes)}", AudioConvertedWarning, stacklevel=2)
    return samples, rate


def _load_npy(path: Path, sample_rate: int | None) -> tuple[np.ndarray, int]:
    if sample_rate is None:
        raise AudioError(f"{path}: .npy files store no sample rate; pass sample_rate=")
    try:
        samples = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise AudioError(f"{path}: cannot be read as a .npy array ({err})") from err
    if samples.ndim == 2 and samples.shape[0] == 1:
        samples = samples[0]
    if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
        raise AudioError(
            f"{path}: expected a float array of shape [T], got {samples.dtype} {samples.shape}"
        )
    return samples.astype(np.float32, copy=False), sample_rate


def save_wav(path: PathLike, samples, sample_rate: int) -> None:
    """Writes samples atomically: to a temporary file in the same folder, then
    ``os.replace``, so an interrupted write never leaves a truncated file behind.

    ``.wav``: 16-bit PCM, ``round(x * 32768)`` clipped to the int16 range (so ``load_wav``
    gives the samples back within half a quantisation step). ``.npy``: the float32 samples
    exactly. Missing parent folders are created.

    Args:
        path: destination ending in ``.wav`` or ``.npy``.
        samples: ``[T]`` or ``[1, T]`` floats in [-1, 1], numpy or torch (any device).
        sample_rate: Hz (stored in the wav header; not stored in ``.npy``).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".wav", ".npy"):
        raise AudioError(f"{path}: cannot save as {suffix or 'no extension'!r}; use .wav or .npy")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or (
        sample_rate <= 0
    ):
        raise AudioError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    array = _to_mono_float32(samples)
    if not np.isfinite(array).all():
        raise AudioError(f"{path}: refusing to save NaN or infinite samples")

    def write(tmp: str) -> None:
        # Encoded in memory first: libsndfile's callbacks swallow the OSError of a full disk.
        data = io.BytesIO()
        if suffix == ".wav":
            pcm = np.clip(np.round(array * 32768.0), -32768, 32767).astype(np.int16)
            sf.write(data, pcm, int(sample_rate), subtype="PCM_16", format="WAV")
        else:
            np.save(data, array, allow_pickle=False)
        with open(tmp, "wb") as f:
            f.write(data.getbuffer())

    atomic_write(path, write)


def _to_mono_float32(samples) -> np.ndarray:
    """``[T]`` or ``[1, T]`` numpy/torch -> contiguous float32 numpy ``[T]``."""
    # This module does not import torch (the ONNX runtime uses it); a tensor exists only
    # where torch has been imported.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(samples, torch.Tensor):
        samples = samples.detach().to("cpu", torch.float32).numpy()
    array = np.asarray(samples)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1:
        raise AudioError(f"expected samples of shape [T] or [1, T], got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise AudioError(
            f"expected float samples in [-1, 1], got dtype {array.dtype} "
            "(divide 16-bit PCM by 32768 first)"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def resample(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling with soxr's high-quality mode (``librosa.resample``,
    ``res_type="soxr_hq"``).

    Args:
        samples: ``[..., T]`` float array.
        orig_sr, target_sr: rates in Hz.

    Returns:
        float32 ``[..., ceil(T * target_sr / orig_sr)]``.
    """
    for name, rate in (("orig_sr", orig_sr), ("target_sr", target_sr)):
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise AudioError(f"{name} must be a positive integer, got {rate!r}")
    samples = np.asarray(samples, dtype=np.float32)
    if orig_sr == target_sr:
        return samples.copy()
    import librosa  # lazy: a second to import; only resampling needs it

    out = librosa.resample(
        samples, orig_sr=int(orig_sr), target_sr=int(target_sr), res_type="soxr_hq", axis=-1
    )
    return np.ascontiguousarray(out, dtype=np.float32)


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as 16-bit little-endian PCM bytes, ``round(x * 32768)``
    clipped (as :func:`save_wav` writes them)."""
    return np.clip(np.round(np.asarray(samples) * 32768.0), -32768, 32767).astype("<i2").tobytes()


def wav_stream_header(sample_rate: int) -> bytes:
    """The 44-byte header of a mono 16-bit WAV whose length is not known yet: its RIFF and
    data sizes are 0xFFFFFFFF, as streaming WAV writers (and readers) use."""
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))
