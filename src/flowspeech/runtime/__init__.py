"""Speech from an ONNX voice with onnxruntime, numpy and the text front end: no PyTorch.

    from flowspeech.runtime import OnnxVoice
    voice = OnnxVoice("voices/slt-onnx")          # a folder from `flowspeech export --onnx`
    samples, sample_rate = voice.synthesize("Hello there.", seed=1)

Nothing here imports torch (a test runs it where importing torch fails); the minimal install
is ``pip install flowspeech-runtime-deps`` of docs/onnx.md: onnxruntime, numpy, scipy,
soundfile and the text front end's packages.
"""

from __future__ import annotations

from flowspeech.runtime.voice import OnnxVoice, is_onnx_voice

__all__ = ["OnnxVoice", "is_onnx_voice"]
