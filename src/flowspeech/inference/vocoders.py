"""Vocoders behind one interface: mel spectrograms in, waveforms out.

``load_vocoder("griffin-lim", mel_config)`` needs no training; a checkpoint path loads a
mel-to-waveform model (:class:`~flowspeech.models.roles.MelToWaveform`: WaveGlow,
FloWaveNet) trained or imported with flowspeech. Every vocoder knows the feature settings it
expects, and the synthesizer refuses a mismatched pair.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from flowspeech.audio import MelConfig
from flowspeech.audio.griffin_lim import INIT as GRIFFIN_LIM_INIT
from flowspeech.audio.griffin_lim import MEL_ITER as GRIFFIN_LIM_MEL_ITERATIONS
from flowspeech.audio.griffin_lim import N_ITER as GRIFFIN_LIM_ITERATIONS
from flowspeech.audio.griffin_lim import describe as describe_griffin_lim
from flowspeech.audio.griffin_lim import griffin_lim, griffin_lim_stream
from flowspeech.config import mel_config as config_mel_config
from flowspeech.errors import ConfigError
from flowspeech.inference.loading import load_model
from flowspeech.models.registry import Role
from flowspeech.models.roles import MelToWaveform, Vocoded
from flowspeech.models.waveglow import Denoiser, WaveGlow
from flowspeech.utils.noise import Generators, per_utterance

__all__ = ["GriffinLimVocoder", "NeuralVocoder", "PRECISIONS", "Vocoded", "Vocoder", "load_vocoder",
           "precision_dtype"]

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def precision_dtype(name: str) -> torch.dtype:
    """The dtype of a waveform generator's precision name (a key of :data:`PRECISIONS`).

    Raises:
        ConfigError: an unknown name.
    """
    if name not in PRECISIONS:
        raise ConfigError(f"unknown vocoder precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


class Vocoder(ABC):
    """Mels to waveforms: ``vocode(mels [B, n_mels, F], lengths [B])`` returns
    :class:`~flowspeech.models.roles.Vocoded` float32 waveforms ``[B, F * hop]`` on the CPU,
    zero past each length, and their lengths in samples."""

    name: str = "vocoder"
    mel_config: MelConfig

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    @abstractmethod
    def vocode(self, mels: torch.Tensor, lengths: torch.Tensor, generator: Generators = None) -> Vocoded:
        """``generator``: one for the batch, or one per utterance (then an utterance's audio
        does not depend on its batch)."""

    @abstractmethod
    def stream(self, mel: torch.Tensor, generator: Generators = None, chunk_frames: int = 32,
               max_chunk_frames: int | None = None, sigma: float | None = None) -> Iterator[np.ndarray]:
        """One utterance's mel ``[1, n_mels, F]`` as float32 audio pieces, the first ready
        after ``chunk_frames`` frames' work; they join to :meth:`vocode`'s waveform of the
        same mel and generator (see each vocoder for how closely). ``sigma`` overrides the
        vocoder's own for this call (neural vocoders)."""

    def describe(self) -> str:
        return self.name


def _padded(waves: list[torch.Tensor], hop: int, n_frames: int) -> torch.Tensor:
    out = torch.zeros(len(waves), n_frames * hop)
    for i, w in enumerate(waves):
        out[i, :w.numel()] = w[:n_frames * hop]
    return out


class GriffinLimVocoder(Vocoder):
    """Griffin-Lim phase reconstruction (no model): for listening before a neural vocoder
    is trained. Intelligible but buzzy."""

    name = "griffin-lim"

    def __init__(self, mel_config: MelConfig, n_iter: int = GRIFFIN_LIM_ITERATIONS,
                 init: str = GRIFFIN_LIM_INIT, mel_iter: int = GRIFFIN_LIM_MEL_ITERATIONS,
                 harmonic_iter: int | None = None):
        self.mel_config = mel_config
        self.n_iter = n_iter
        self.init = init  # the starting phase: "pghi" or "random" (flowspeech.audio.griffin_lim)
        self.mel_iter = mel_iter  # mel-matching iterations after phase retrieval
        # the harmonic restoration's iterations (0: none; None: the default after mel matching)
        self.harmonic_iter = harmonic_iter

    def _seeds(self, generator: Generators, batch: int) -> list[int]:
        rows = per_utterance(generator, batch)
        if rows is not None:
            return [int(torch.randint(0, 2**31 - 1, (1,), generator=g)) for g in rows]
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) if generator is not None else 0
        return [seed] * batch

    def vocode(self, mels, lengths, generator=None) -> Vocoded:
        hop = self.mel_config.hop_length

        def invert(mel, seed):
            return griffin_lim(mel.float().cpu().numpy(), self.mel_config, n_iter=self.n_iter,
                               seed=seed, init=self.init, mel_iter=self.mel_iter,
                               harmonic_iter=self.harmonic_iter)

        waves = [torch.from_numpy(np.asarray(invert(mel[:, :n], seed), dtype=np.float32))
                 for mel, n, seed in zip(mels, lengths.tolist(), self._seeds(generator, len(mels)))]
        n_samples = torch.tensor([min(w.numel(), n * hop) for w, n in zip(waves, lengths.tolist())])
        return Vocoded(_padded(waves, hop, mels.size(2)), n_samples)

    def stream(self, mel, generator=None, chunk_frames=32, max_chunk_frames=None, sigma=None):
        """Windows of the mel inverted one after the other
        (:func:`~flowspeech.audio.griffin_lim.griffin_lim_stream`): Griffin-Lim has no exact
        local form, so the pieces approximate :meth:`vocode` (0.2 dB log-spectral distance on
        LJSpeech with the defaults; the tests bound it)."""
        yield from griffin_lim_stream(mel[0].float().cpu(), self.mel_config, chunk_frames,
                                      max_chunk_frames, n_iter=self.n_iter,
                                      seed=self._seeds(generator, 1)[0], init=self.init,
                                      mel_iter=self.mel_iter, harmonic_iter=self.harmonic_iter)

    def describe(self) -> str:
        steps = describe_griffin_lim(self.n_iter, self.init, self.mel_iter, self.harmonic_iter)
        return f"griffin-lim ({steps})"


class NeuralVocoder(Vocoder):
    """A mel-to-waveform model with the options of synthesis around it.

    Args:
        model: a loaded :class:`~flowspeech.models.roles.MelToWaveform`.
        config: its config.
        sigma: standard deviation of the latent (None: the model's default, 0.6 for WaveGlow
            and 0.8 for FloWaveNet).
        denoise: strength of WaveGlow's bias removal (the authors' ``Denoiser``: the STFT
            magnitude of the audio the model makes from a silent mel, times ``denoise``, is
            subtracted from the output's). 0 is off, the authors' ``inference.py`` default;
            they suggest starting at 0.1.
        chunk_frames: mels longer than this are synthesised in chunks of this many frames
            (``infer_chunked``, exact with its default overlap), so memory stays bounded by
            the chunk size; None never chunks.
        precision: arithmetic of the coupling networks, ``"float32"`` (default),
            ``"bfloat16"`` (CPUs with AVX512-BF16 or AMX, recent GPUs) or ``"float16"`` (GPUs);
            the audio and the invertible layers stay in float32. Measured speed and error:
            ``docs/benchmarks.md``.
    """

    def __init__(self, model: MelToWaveform, config: dict, sigma: float | None = None,
                 denoise: float = 0.0, chunk_frames: int | None = 1024, precision: str = "float32"):
        if sigma is not None and not sigma >= 0:
            raise ConfigError(f"sigma must be >= 0, got {sigma}")
        if not 0.0 <= denoise <= 1.0:
            raise ConfigError(f"denoiser strength must be in [0, 1] (0: off; try 0.1), "
                              f"got {denoise}")
        if denoise > 0 and not isinstance(model, WaveGlow):
            raise ConfigError(f"the denoiser removes WaveGlow's bias; it is not available for "
                              f"{config['model']}")
        if chunk_frames is not None and chunk_frames < 1:
            raise ConfigError(f"chunk_frames must be >= 1 (or None), got {chunk_frames}")
        if precision_dtype(precision) != torch.float32:
            model.set_waveform_dtype(precision_dtype(precision))
        self.model = model
        self.config = config
        self.mel_config = config_mel_config(config)
        self.name = config["model"]
        self.sigma = sigma
        self.denoise = float(denoise)
        self.chunk_frames = chunk_frames
        self.precision = precision
        self._denoiser = None

    @property
    def denoiser(self) -> Denoiser:
        """The model's :class:`~flowspeech.models.waveglow.Denoiser`, built on first use (one
        synthesis of 88 silent frames)."""
        if self._denoiser is None:
            self._denoiser = Denoiser(self.model)
        return self._denoiser

    def vocode(self, mels, lengths, generator=None) -> Vocoded:
        kwargs = {"sigma": self.sigma, "generator": generator}
        with torch.inference_mode():
            if self.chunk_frames is not None and mels.size(2) > self.chunk_frames:
                out = self.model.infer_chunked(mels, lengths, chunk_frames=self.chunk_frames, **kwargs)
            else:
                out = self.model.infer(mels, lengths, **kwargs)
            waves, wave_lengths = out.waveforms.float(), out.waveform_lengths
            # The denoiser's STFT needs more than half a window of audio.
            if self.denoise > 0:
                for i, n in enumerate(wave_lengths.tolist()):
                    if n > self.denoiser.filter_length // 2:
                        waves[i, :n] = self.denoiser(waves[i, :n], strength=self.denoise)[0]
        return Vocoded(waves.cpu(), wave_lengths.cpu())

    def stream(self, mel, generator=None, chunk_frames=32, max_chunk_frames=None, sigma=None):
        """The model's exact streaming (:meth:`MelToWaveform.stream`): the pieces join to
        :meth:`vocode`'s waveform to float rounding. With the denoiser on, each piece is
        denoised on its own (its STFT does not see the next piece), a close approximation."""
        with torch.inference_mode():
            for piece in self.model.stream(mel, chunk_frames=chunk_frames, max_chunk_frames=max_chunk_frames,
                                           sigma=self.sigma if sigma is None else sigma, generator=generator):
                piece = piece.float()
                if self.denoise > 0 and piece.size(1) > self.denoiser.filter_length // 2:
                    piece = self.denoiser(piece, strength=self.denoise)
                yield piece[0].cpu().numpy()

    def describe(self) -> str:
        sigma = f"sigma {self.sigma}" if self.sigma is not None else f"sigma {self.model.default_sigma} (default)"
        denoise = f", denoiser {self.denoise:g}" if self.denoise else ""
        precision = f", {self.precision} couplings" if self.precision != "float32" else ""
        return (f"{self.name} ({self.config.get('description', 'checkpoint')}; {sigma}{denoise}"
                f"{precision})")


def load_vocoder(spec: str | Path, mel_config: MelConfig | None, device: str | torch.device = "cpu",
                 sigma: float | None = None, denoise: float = 0.0,
                 chunk_frames: int | None = 1024, precision: str = "float32") -> Vocoder:
    """``"griffin-lim"`` (with ``mel_config``) or the path of a mel-to-waveform checkpoint
    (which carries its own feature settings); ``sigma``, ``denoise``, ``chunk_frames`` and
    ``precision`` as in :class:`NeuralVocoder`.

    Raises:
        CheckpointError: the checkpoint cannot be read.
        ConfigError: the checkpoint is not a vocoder, or an option does not apply.
    """
    if str(spec) in ("griffin-lim", "griffinlim", "gl"):
        if sigma is not None:
            raise ConfigError("sigma applies to neural vocoders, not Griffin-Lim")
        if denoise:
            raise ConfigError("the denoiser removes a neural vocoder's bias; griffin-lim has none")
        if precision != "float32":
            raise ConfigError("precision applies to neural vocoders; griffin-lim runs in float32")
        return GriffinLimVocoder(mel_config)
    model, payload = load_model(spec, device=device, roles=(Role.MEL_TO_WAVEFORM,))
    return NeuralVocoder(model, payload["config"], sigma, denoise=denoise, chunk_frames=chunk_frames,
                         precision=precision)
