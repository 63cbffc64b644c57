"""Linear and mel spectrograms in torch, batched, on any device.

The numbers match the authors' feature code exactly (see ``docs/audio.md``):

* Glow-TTS / WaveGlow (``MelConfig.glow_tts()``): NVIDIA's Tacotron 2 ``TacotronSTFT``
  (Shen et al., 2018), i.e. ``librosa.stft(center=True, pad_mode="reflect")`` magnitude,
  Slaney mel basis, ``log(clamp(mel, 1e-5))``.
* VITS / NaturalSpeech (``MelConfig.vits()``): VITS ``mel_processing.py`` (Kim et al., 2021),
  reflect padding of ``(n_fft - hop) / 2``, uncentred frames, ``sqrt(|X|^2 + 1e-6)``.
* FloWaveNet (``MelConfig.flowavenet()``): the authors' ``preprocessing.py`` (Kim et al.,
  2019), ``librosa.feature.melspectrogram`` (power, 125-7600 Hz), dB scaled into [0, 1].

Neither module has parameters: with an input that does not require grad, autograd records
nothing, so they cost no more than under ``torch.no_grad()``.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowspeech.audio.config import DB_MIN, DB_REFERENCE, MelConfig
from flowspeech.errors import AudioError
from flowspeech.utils.files import cache_dir


@functools.lru_cache(maxsize=16)
def mel_basis(config: MelConfig) -> np.ndarray:
    """librosa's Slaney mel filter bank for ``config``, float32 ``[n_mels, n_fft // 2 + 1]``.

    Read-only and cached: the same array is returned for equal configs. It is also kept on
    disk (:func:`~flowspeech.utils.files.cache_dir`, keyed by the settings and librosa's version): computing it
    imports ``scipy.signal`` through ``librosa.filters``, about a second that a one-sentence
    ``flowspeech synthesize`` would otherwise pay on every run.
    """
    from importlib.metadata import version  # lazy: with librosa, for the cache key

    shape = (config.n_mels, config.n_fft // 2 + 1)
    key = (f"sr{config.sample_rate}-fft{config.n_fft}-mels{config.n_mels}-fmin{config.fmin:g}-"
           f"fmax{config.fmax_hz:g}-slaney-librosa{version('librosa')}")
    path = cache_dir() / "mel_basis" / f"{key}.npy"
    try:
        basis = np.load(path, allow_pickle=False)
        if basis.shape != shape or basis.dtype != np.float32 or not np.isfinite(basis).all():
            raise ValueError("unexpected cached mel basis")
    except (OSError, ValueError):
        import librosa  # lazy: a second to import; filterbanks are built once and cached

        basis = librosa.filters.mel(
            sr=config.sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            fmin=config.fmin,
            fmax=config.fmax_hz,
            htk=False,
            norm="slaney",
            dtype=np.float32,
        )
        try:  # best effort: a read-only home only costs the second next time
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as f:
                    np.save(f, basis, allow_pickle=False)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError:
            pass
    basis.setflags(write=False)
    return basis


def _as_batch(wav: Tensor, config: MelConfig) -> tuple[Tensor, bool]:
    """Checks a waveform ``[T]`` or ``[B, T]`` and returns it as ``[B, T]`` float."""
    if not isinstance(wav, Tensor):
        raise AudioError(f"expected a torch.Tensor waveform, got {type(wav).__name__}")
    if wav.dim() not in (1, 2):
        raise AudioError(
            f"expected a waveform of shape [T] or [B, T], got shape {tuple(wav.shape)}"
        )
    if not wav.is_floating_point():
        raise AudioError(
            f"expected float samples in [-1, 1], got dtype {wav.dtype} "
            "(divide 16-bit PCM by 32768 first)"
        )
    if wav.shape[-1] < config.min_samples:
        raise AudioError(
            f"waveform of {wav.shape[-1]} samples is too short: framing with n_fft="
            f"{config.n_fft} and {config.padding!r} padding needs at least "
            f"{config.min_samples} samples"
        )
    if wav.dtype in (torch.float16, torch.bfloat16):
        wav = wav.float()  # torch.stft has no half kernels on CPU, and loses precision on GPU
    squeeze = wav.dim() == 1
    return (wav.unsqueeze(0) if squeeze else wav), squeeze


def _spectrogram(wav: Tensor, window: Tensor, config: MelConfig) -> Tensor:
    """``(|STFT|^2 + eps) ** (power / 2)`` of ``wav [B, T]`` -> ``[B, n_fft // 2 + 1, F]``."""
    if config.padding == "vits":
        # VITS pads by hand, then frames without centring; F.pad's reflect wants [B, C, T].
        wav = F.pad(wav.unsqueeze(1), (config.pad, config.pad), mode="reflect").squeeze(1)
    if window.dtype != wav.dtype:
        # A float32 window cast up leaks ~1e-7 relative side lobes; build it in float64.
        window = torch.hann_window(
            config.win_length, periodic=True, dtype=wav.dtype, device=wav.device
        )
    spec = torch.stft(
        wav,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window=window,
        center=config.padding == "center",
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    if config.magnitude_eps == 0 and config.power == 1.0:
        return spec.abs()
    power = spec.real.square() + spec.imag.square()
    if config.magnitude_eps:
        power = power + config.magnitude_eps
    return power if config.power == 2.0 else power.sqrt()


def compress_mel(mel: Tensor, config: MelConfig) -> Tensor:
    """Amplitude scaling of a linear mel spectrogram, as ``config.compression`` says.

    ``"log"``: ``log(clamp(mel, log_clamp))``. ``"db_normalized"`` (FloWaveNet):
    ``clip((20 log10(max(mel, log_clamp)) - 20 + 100) / 100, 0, 1)``.

    Shapes: any; returns the same shape and dtype.
    """
    if config.compression == "log":
        return torch.log(torch.clamp(mel, min=config.log_clamp))
    db = 20.0 * torch.log10(torch.clamp(mel, min=config.log_clamp)) - DB_REFERENCE
    return torch.clamp((db - DB_MIN) / -DB_MIN, 0.0, 1.0)


def decompress_mel(features: Tensor, config: MelConfig) -> Tensor:
    """Inverse of :func:`compress_mel`: the linear mel spectrogram (exact above the floors;
    clamped or clipped values come back as the floor, and 1.0 of ``"db_normalized"`` as
    0 dB re the 20 dB reference, i.e. ``mel = 10``)."""
    if config.compression == "log":
        return torch.exp(features)
    db = features * -DB_MIN + DB_MIN + DB_REFERENCE
    return torch.pow(10.0, db / 20.0)


class LinearSpectrogram(nn.Module):
    """Linear-frequency spectrogram, as the VITS / NaturalSpeech posterior encoder reads it.

    ``(|STFT(x)|^2 + magnitude_eps) ** (power / 2)``, no log (the posterior-encoder input
    of VITS, Kim et al., 2021, ``spectrogram_torch``; kept by NaturalSpeech, Tan et al.,
    2022). With
    ``MelConfig.vits()`` this is ``sqrt(|X|^2 + 1e-6)``.

    Args:
        config: STFT settings (only the STFT fields are used); default ``MelConfig.vits()``.

    Shapes:
        wav ``[T]`` or ``[B, T]`` float in [-1, 1] -> ``[n_fft // 2 + 1, F]`` or
        ``[B, n_fft // 2 + 1, F]`` with ``F = config.n_frames(T)``.
    """

    window: Tensor

    def __init__(self, config: MelConfig | None = None) -> None:
        super().__init__()
        self.config = MelConfig.vits() if config is None else config
        # Non-persistent: follows .to(device), stays out of state_dict (derived from config).
        self.register_buffer(
            "window", torch.hann_window(self.config.win_length, periodic=True), persistent=False
        )

    def forward(self, wav: Tensor) -> Tensor:
        batch, squeeze = _as_batch(wav, self.config)
        spec = _spectrogram(batch, self.window, self.config)
        return spec.squeeze(0) if squeeze else spec


class MelSpectrogram(nn.Module):
    """Mel spectrogram exactly as the Glow-TTS / WaveGlow / VITS / FloWaveNet authors compute it.

    ``log(clamp(M @ S, min=log_clamp))`` with ``S`` the STFT magnitude (see
    :class:`MelConfig`) and ``M`` librosa's Slaney mel basis. Tacotron 2 (Shen et al., 2018,
    Sec. 2.1) introduced these features; Glow-TTS (Kim et al., 2020, Sec. 4) and WaveGlow
    (Prenger et al., 2019, Sec. 3) reuse its code. With ``MelConfig.flowavenet()`` ``S`` is
    the power spectrogram and the scaling FloWaveNet's dB into [0, 1] (:func:`compress_mel`).

    Args:
        config: feature settings; default ``MelConfig.glow_tts()``.

    Shapes:
        wav ``[T]`` or ``[B, T]`` float in [-1, 1] -> ``[n_mels, F]`` or ``[B, n_mels, F]``
        with ``F = config.n_frames(T)``. float64 input gives float64 output; half precision
        input is computed in float32.
    """

    window: Tensor
    mel_basis: Tensor

    def __init__(self, config: MelConfig | None = None) -> None:
        super().__init__()
        self.config = MelConfig.glow_tts() if config is None else config
        self.register_buffer(
            "window", torch.hann_window(self.config.win_length, periodic=True), persistent=False
        )
        self.register_buffer(
            "mel_basis", torch.tensor(mel_basis(self.config)), persistent=False
        )

    def forward(self, wav: Tensor) -> Tensor:
        batch, squeeze = _as_batch(wav, self.config)
        spec = _spectrogram(batch, self.window, self.config)
        mel = torch.matmul(self.mel_basis.to(spec.dtype), spec)
        mel = compress_mel(mel, self.config)
        return mel.squeeze(0) if squeeze else mel


@functools.lru_cache(maxsize=8)
def _cached_module(config: MelConfig, device: torch.device) -> MelSpectrogram:
    return MelSpectrogram(config).to(device)


def mel_spectrogram(wav: Tensor | np.ndarray, config: MelConfig | None = None) -> Tensor:
    """Functional form of :class:`MelSpectrogram` (window and mel basis cached per config
    and device).

    Args:
        wav: ``[T]`` or ``[B, T]`` float samples in [-1, 1], torch (any device) or numpy.
        config: feature settings; default ``MelConfig.glow_tts()``.

    Returns:
        ``[n_mels, F]`` or ``[B, n_mels, F]`` tensor on ``wav``'s device (CPU for numpy).
    """
    if isinstance(wav, np.ndarray):
        wav = torch.from_numpy(np.ascontiguousarray(wav))
    config = MelConfig.glow_tts() if config is None else config
    device = wav.device if isinstance(wav, Tensor) else torch.device("cpu")
    return _cached_module(config, device)(wav)
