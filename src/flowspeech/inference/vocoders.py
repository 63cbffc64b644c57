"""Vocoders behind one interface: mel spectrograms in, waveforms out.

``load_vocoder("griffin-lim", mel_config)`` needs no training; a checkpoint path loads a
neural vocoder (WaveGlow, FloWaveNet) trained or imported with flowspeech. Every vocoder
knows the feature settings it expects, and the synthesizer refuses a mismatched pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flowspeech.errors import ConfigError


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
    returning ``[B, samples]`` and an optional ``denoise`` step."""

    def __init__(self, model, config: dict, mel_config, model_type: str, sigma: float | None = None):
        self.model = model
        self.config = config
        self.mel_config = mel_config
        self.name = model_type
        self.sigma = sigma

    def vocode(self, mels, lengths, generator=None):
        kwargs = {"generator": generator}
        if self.sigma is not None:
            kwargs["sigma"] = self.sigma
        with torch.inference_mode():
            audio = self.model.infer(mels, **kwargs)
        hop = self.mel_config.hop_length
        return [a[: int(n) * hop].float().cpu().numpy() for a, n in zip(audio, lengths)]

    def describe(self) -> str:
        return f"{self.name} ({self.config.get('name', 'checkpoint')})"


def load_vocoder(spec: str | Path, mel_config, device: str | torch.device = "cpu",
                 sigma: float | None = None) -> Vocoder:
    """``"griffin-lim"`` or the path of a vocoder checkpoint."""
    if str(spec) in ("griffin-lim", "griffinlim", "gl"):
        return GriffinLimVocoder(mel_config)
    from flowspeech.inference.loading import load_model

    model, payload = load_model(spec, device=device)
    if not hasattr(model, "infer") or payload["model_type"] not in VOCODER_TYPES:
        raise ConfigError(f"{spec} holds a {payload['model_type']!r} model, not a vocoder "
                          f"({', '.join(VOCODER_TYPES)}); pass it as the acoustic model instead")
    from flowspeech.config import mel_config as config_mel

    return NeuralVocoder(model, payload["config"], config_mel(payload["config"]), payload["model_type"], sigma)


VOCODER_TYPES = ("waveglow", "flowavenet")
