"""Vocoders behind one interface: mel spectrograms in, waveforms out.

``load_vocoder("griffin-lim", mel_config)`` needs no training; a checkpoint path loads a
neural vocoder (WaveGlow, FloWaveNet) trained or imported with flowspeech. Every vocoder
knows the feature settings it expects, and the synthesizer refuses a mismatched pair.

:func:`log_spectral_distance` measures how close a copy-synthesis is to the original audio.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from flowspeech.errors import ConfigError

__all__ = ["GriffinLimVocoder", "NeuralVocoder", "PRECISIONS", "VOCODER_TYPES", "Vocoder",
           "load_vocoder", "log_spectral_distance", "precision_dtype"]

VOCODER_TYPES = ("waveglow", "flowavenet")
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def precision_dtype(name: str) -> torch.dtype:
    """The dtype of a waveform generator's precision name (a key of :data:`PRECISIONS`).

    Raises:
        ConfigError: an unknown name.
    """
    if name not in PRECISIONS:
        raise ConfigError(f"unknown vocoder precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


class Vocoder:
    """Base class: ``vocode(mels [B, n_mels, F], lengths [B]) -> list of float32 arrays``."""

    name = "vocoder"
    mel_config = None

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    def vocode(self, mels: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None) -> list[np.ndarray]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class GriffinLimVocoder(Vocoder):
    """Griffin-Lim phase reconstruction (no model): for listening before a neural vocoder
    is trained. Intelligible but buzzy."""

    name = "griffin-lim"

    def __init__(self, mel_config, n_iter: int = 60):
        self.mel_config = mel_config
        self.n_iter = n_iter

    def vocode(self, mels, lengths, generator=None):
        from flowspeech.audio import griffin_lim

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) if generator is not None else 0
        out = []
        for mel, n in zip(mels, lengths.tolist()):
            out.append(griffin_lim(mel[:, :n].float().cpu().numpy(), self.mel_config, n_iter=self.n_iter, seed=seed))
        return out


class NeuralVocoder(Vocoder):
    """A flowspeech vocoder checkpoint; the model provides ``infer(mel, sigma, generator)``
    returning ``[B, samples]`` and, optionally, ``infer_chunked(mel, chunk_frames, ...)``.

    Each utterance is synthesised on its own, at its own length: WaveGlow's output depends on
    about 96 mel frames on each side (``WaveGlow.receptive_field_frames``), so the padding of
    a batch would otherwise leak into the end of its shorter utterances.

    Args:
        model, config, mel_config, model_type: the loaded checkpoint.
        sigma: standard deviation of the latent (None: the model's default, 0.6 for WaveGlow).
        denoise: strength of WaveGlow's bias removal (the authors' ``Denoiser``: the STFT
            magnitude of the audio the model makes from a silent mel, times ``denoise``, is
            subtracted from the output's). 0 is off, the authors' ``inference.py`` default;
            they suggest starting at 0.1.
        chunk_frames: mels longer than this are synthesised in chunks of this many frames with
            ``infer_chunked`` (exact with its default overlap), so memory stays bounded by the
            chunk size; None never chunks.
        precision: arithmetic of the coupling networks, ``"float32"`` (default),
            ``"bfloat16"`` (CPUs with AVX512-BF16 or AMX, recent GPUs) or ``"float16"`` (GPUs);
            the audio and the invertible layers stay in float32 (``set_coupling_dtype`` of
            the model). Measured speed and error: ``docs/benchmarks.md``.
    """

    def __init__(self, model, config: dict, mel_config, model_type: str, sigma: float | None = None,
                 denoise: float = 0.0, chunk_frames: int | None = 1024, precision: str = "float32"):
        if sigma is not None and not sigma >= 0:
            raise ConfigError(f"sigma must be >= 0, got {sigma}")
        if not 0.0 <= denoise <= 1.0:
            raise ConfigError(f"denoiser strength must be in [0, 1] (0: off; try 0.1), "
                              f"got {denoise}")
        if denoise > 0 and model_type != "waveglow":
            raise ConfigError(f"the denoiser removes WaveGlow's bias; it is not available for "
                              f"{model_type}")
        if chunk_frames is not None and chunk_frames < 1:
            raise ConfigError(f"chunk_frames must be >= 1 (or None), got {chunk_frames}")
        if precision_dtype(precision) != torch.float32:
            model.set_coupling_dtype(precision_dtype(precision))
        self.model = model
        self.config = config
        self.mel_config = mel_config
        self.name = model_type
        self.sigma = sigma
        self.denoise = float(denoise)
        self.chunk_frames = chunk_frames
        self.precision = precision
        self._denoiser = None

    @property
    def denoiser(self):
        """The model's :class:`~flowspeech.models.waveglow.Denoiser`, built on first use (one
        synthesis of 88 silent frames)."""
        if self._denoiser is None:
            from flowspeech.models.waveglow import Denoiser

            self._denoiser = Denoiser(self.model)
        return self._denoiser

    def _infer(self, mel: torch.Tensor, kwargs: dict) -> torch.Tensor:
        if (self.chunk_frames is not None and mel.size(2) > self.chunk_frames
                and hasattr(self.model, "infer_chunked")):
            return self.model.infer_chunked(mel, chunk_frames=self.chunk_frames, **kwargs)
        return self.model.infer(mel, **kwargs)

    def vocode(self, mels, lengths, generator=None):
        kwargs = {"generator": generator}
        if self.sigma is not None:
            kwargs["sigma"] = self.sigma
        hop = self.mel_config.hop_length
        out = []
        with torch.inference_mode():
            for mel, n in zip(mels, lengths.tolist()):
                audio = self._infer(mel[None, :, :int(n)], kwargs)[:, :int(n) * hop].float()
                # The denoiser's STFT needs more than half a window of audio.
                if self.denoise > 0 and audio.size(1) > self.denoiser.filter_length // 2:
                    audio = self.denoiser(audio, strength=self.denoise)
                out.append(audio[0].cpu().numpy())
        return out

    def describe(self) -> str:
        sigma = f"sigma {self.sigma}" if self.sigma is not None else "default sigma"
        denoise = f", denoiser {self.denoise:g}" if self.denoise else ""
        precision = f", {self.precision} couplings" if self.precision != "float32" else ""
        return (f"{self.name} ({self.config.get('description', 'checkpoint')}; {sigma}{denoise}"
                f"{precision})")


def load_vocoder(spec: str | Path, mel_config, device: str | torch.device = "cpu",
                 sigma: float | None = None, denoise: float = 0.0,
                 chunk_frames: int | None = 1024, precision: str = "float32") -> Vocoder:
    """``"griffin-lim"`` (with ``mel_config``) or the path of a vocoder checkpoint (which
    carries its own feature settings); ``sigma``, ``denoise``, ``chunk_frames`` and
    ``precision`` as in :class:`NeuralVocoder`.

    Raises:
        CheckpointError: the checkpoint cannot be read.
        ConfigError: the checkpoint is not a vocoder, or an option does not apply.
    """
    if str(spec) in ("griffin-lim", "griffinlim", "gl"):
        if denoise:
            raise ConfigError("the denoiser removes a neural vocoder's bias; griffin-lim has none")
        if precision != "float32":
            raise ConfigError("precision applies to neural vocoders; griffin-lim runs in float32")
        return GriffinLimVocoder(mel_config)
    from flowspeech.inference.loading import load_model

    model, payload = load_model(spec, device=device)
    if not hasattr(model, "infer") or payload["model_type"] not in VOCODER_TYPES:
        raise ConfigError(f"{spec} holds a {payload['model_type']!r} model, not a vocoder "
                          f"({', '.join(VOCODER_TYPES)}); pass it as the acoustic model instead")
    from flowspeech.config import mel_config as config_mel

    config = payload["config"]
    return NeuralVocoder(model, config, config_mel(config), payload["model_type"], sigma,
                         denoise=denoise, chunk_frames=chunk_frames, precision=precision)


def log_spectral_distance(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor,
                          n_fft: int = 1024, hop_length: int = 256, top_db: float = 80.0) -> float:
    """Log-spectral distance in dB between two waveforms (Gray and Markel, 1976, "Distance
    measures for speech processing"; the usual copy-synthesis and bandwidth-extension form)::

        LSD = mean_t sqrt( mean_f ( L(t, f) - L'(t, f) )^2 ),   L = max(10 log10 |STFT|^2, m - top_db)

    (Hann window of ``n_fft``, hop ``hop_length``, reflect-padded centred frames), where
    ``m`` is the reference's loudest bin: both spectra are floored ``top_db`` below it, as
    ``librosa.power_to_db(ref=np.max, top_db=80)`` does. Without a relative floor the
    number is dominated by near-silent frames, where it measures 16-bit rounding rather than
    the vocoder (a copy-synthesis saved as 16-bit scored 10 dB lower than the same audio in
    float). The waveforms are cut to the shorter of the two: a vocoder's output may be up to
    a hop longer than the clip its mel came from. 0 for identical signals; a gain of ``g`` dB
    gives ``|g|`` where no bin reaches the floor.

    Args:
        reference, estimate: ``[T]`` float waveforms at the same sample rate.

    Returns:
        the distance in dB (float).
    """
    x = torch.as_tensor(reference, dtype=torch.float64).flatten().cpu()
    y = torch.as_tensor(estimate, dtype=torch.float64).flatten().cpu()
    n = min(x.numel(), y.numel())
    if n <= n_fft // 2:
        raise ValueError(f"log_spectral_distance: need more than {n_fft // 2} samples in both "
                         f"signals, got {x.numel()} and {y.numel()}")
    window = torch.hann_window(n_fft, dtype=torch.float64)

    def log_power(w: torch.Tensor) -> torch.Tensor:  # [n_fft / 2 + 1, frames]
        spec = torch.stft(w[:n], n_fft, hop_length, window=window, center=True, pad_mode="reflect",
                          return_complex=True)
        return 10.0 * torch.log10(spec.abs().square().clamp_min(1e-30))

    ref, est = log_power(x), log_power(y)
    floor = float(ref.max()) - top_db
    diff = ref.clamp_min(floor) - est.clamp_min(floor)
    value = float(diff.square().mean(dim=0).sqrt().mean())
    return value if math.isfinite(value) else float("nan")
