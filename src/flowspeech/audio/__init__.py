"""Audio front end: wav I/O, resampling, level normalisation, spectrograms, Griffin-Lim.

The mel features reproduce the authors' code of Glow-TTS / WaveGlow (``MelConfig.glow_tts()``),
of VITS / NaturalSpeech (``MelConfig.vits()``) and of FloWaveNet (``MelConfig.flowavenet()``);
see ``docs/audio.md``.
"""

from __future__ import annotations

import importlib
import sys
import types

# Names resolve on first use (PEP 562), so that the torch-free parts (``config``, ``io``) can
# be imported without the spectrogram and Griffin-Lim modules, which need torch: the ONNX
# runtime (flowspeech.runtime) reads and writes audio without PyTorch.
_HOMES = {
    "MelConfig": "config",
    "LinearSpectrogram": "features", "MelSpectrogram": "features", "compress_mel": "features",
    "decompress_mel": "features", "mel_basis": "features", "mel_spectrogram": "features",
    "griffin_lim": "griffin_lim", "phase_retrieval": "griffin_lim",
    "load_wav": "io", "pcm16": "io", "resample": "io", "save_wav": "io", "wav_stream_header": "io",
    "normalize_loudness": "levels", "normalize_peak": "levels",
    "log_spectral_distance": "metrics",
}


def __getattr__(name: str):
    if name in _HOMES:
        value = getattr(importlib.import_module(f"flowspeech.audio.{_HOMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flowspeech.audio' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_HOMES))


class _Package(types.ModuleType):
    """Importing a submodule sets the package's attribute of that name to the submodule; for
    ``griffin_lim``, module and function alike, that would make ``from flowspeech.audio import
    griffin_lim`` give the module or the function depending on which import ran first."""

    def __setattr__(self, name: str, value) -> None:
        if name in _HOMES and isinstance(value, types.ModuleType) and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


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
