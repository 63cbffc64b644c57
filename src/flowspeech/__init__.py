"""flowspeech: likelihood-trained, flow-based text-to-speech.

Models: Glow-TTS (text to mel), WaveGlow and FloWaveNet (mel to waveform) and
NaturalSpeech (text to waveform), built on one flow library (:mod:`flowspeech.flows`).

The package imports nothing heavy at start-up; submodules are loaded when used, so that
``import flowspeech`` and ``flowspeech --help`` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "Synthesizer"]


def __getattr__(name: str):
    # Lazy attribute access keeps `import flowspeech` free of torch.
    if name == "Synthesizer":
        from flowspeech.inference.synthesizer import Synthesizer

        return Synthesizer
    raise AttributeError(f"module 'flowspeech' has no attribute {name!r}")
