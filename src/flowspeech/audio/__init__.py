"""Audio front end: wav I/O, resampling, level normalisation, spectrograms, Griffin-Lim.

The mel features reproduce the authors' code of Glow-TTS / WaveGlow (``MelConfig.glow_tts()``),
of VITS / NaturalSpeech (``MelConfig.vits()``) and of FloWaveNet (``MelConfig.flowavenet()``);
see ``docs/audio.md``.
"""

from __future__ import annotations

from flowspeech.audio.config import MelConfig
from flowspeech.audio.features import (
    LinearSpectrogram,
    MelSpectrogram,
    compress_mel,
    decompress_mel,
    mel_basis,
    mel_spectrogram,
)
from flowspeech.audio.griffin_lim import griffin_lim
from flowspeech.audio.io import load_wav, pcm16, resample, save_wav, wav_stream_header
from flowspeech.audio.levels import normalize_loudness, normalize_peak
from flowspeech.audio.metrics import log_spectral_distance

__all__ = [
    "LinearSpectrogram",
    "MelConfig",
    "MelSpectrogram",
    "compress_mel",
    "decompress_mel",
    "griffin_lim",
    "load_wav",
    "log_spectral_distance",
    "mel_basis",
    "mel_spectrogram",
    "normalize_loudness",
    "normalize_peak",
    "pcm16",
    "resample",
    "save_wav",
    "wav_stream_header",
]
