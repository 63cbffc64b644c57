"""Speech recognition for intelligibility scores: PocketSphinx with its bundled US English
model (Huggins-Daines et al., 2006, "PocketSphinx: a free, real-time continuous speech
recognition system for hand-held devices"; PyPI ``pocketsphinx`` >= 5, which ships the en-us
acoustic model, a 3-gram language model and the CMU dictionary, so nothing is downloaded).

The decoding follows the project's shared scorer (``asr_eval.py`` next to the corpus) so that
both give the same hypotheses: audio resampled to 16 kHz by SoX (``rate -h``, no dither),
16-bit PCM, 0.3 s of digital silence added at both ends (PocketSphinx needs some leading
silence, and padding keeps systems that trim their output tightly from being penalised),
then one utterance decoded in full (``full_utt``). It decodes at about 0.2x real time per
process on one CPU core. The feature extraction is reset before every clip, so a clip's
hypothesis does not depend on which clips the same process decoded before it.

Where the ``sox`` program is missing, ``soxr`` (the SoX resampler as a library, HQ) resamples
instead. Its samples differ from SoX's by a few least significant bits, which is enough to
flip a marginal word now and then: on the 100 validation clips of the project's corpus, 97
hypotheses are identical and the corpus WER is the same (16.00 %). Reports record which
resampler ran.
"""

from __future__ import annotations

import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from flowspeech.audio import resample
from flowspeech.errors import AudioError, ConfigError
from flowspeech.evaluation.deps import require

ASR_SAMPLE_RATE = 16000
DEFAULT_PAD_SECONDS = 0.3
RESAMPLERS = ("auto", "sox", "soxr")


def resolve_resampler(resampler: str = "auto") -> str:
    """``"sox"`` when asked for or, for ``"auto"``, when the ``sox`` program is on the PATH;
    else ``"soxr"``."""
    if resampler not in RESAMPLERS:

        raise ConfigError(f"unknown resampler {resampler!r}; choose one of {', '.join(RESAMPLERS)}")
    if resampler == "auto":
        return "sox" if shutil.which("sox") else "soxr"
    if resampler == "sox" and not shutil.which("sox"):

        raise ConfigError("the sox program is not installed (apt-get install sox), or use soxr")
    return resampler


def to_pcm16k(samples: np.ndarray, sample_rate: int, pad_seconds: float = DEFAULT_PAD_SECONDS,
              resampler: str = "auto") -> np.ndarray:
    """The recogniser's input: 16 kHz 16-bit PCM with silence padding.

    Args:
        samples: float ``[T]`` in [-1, 1].
        sample_rate: rate of ``samples`` in Hz.
        pad_seconds: digital silence added at both ends.
        resampler: ``"sox"`` (the program, as the shared scorer runs it), ``"soxr"`` (the
            library) or ``"auto"`` (see :func:`resolve_resampler`).

    Returns:
        int16 ``[T' + 2 * round(16000 * pad)]``, ``T'`` about ``T * 16000 / sample_rate``.
    """
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if resolve_resampler(resampler) == "sox":
        # float32 holds 16-bit samples exactly, so piping them gives SoX the same input as
        # reading the 16-bit file. -D: no dither (repeatable).
        cmd = ["sox", "-D", "-V1", "-t", "raw", "-r", str(int(sample_rate)), "-c", "1", "-e",
               "floating-point", "-b", "32", "-L", "-", "-t", "raw", "-r", str(ASR_SAMPLE_RATE),
               "-c", "1", "-e", "signed-integer", "-b", "16", "-L", "-", "rate", "-h"]
        result = subprocess.run(cmd, input=x.astype("<f4").tobytes(), capture_output=True)
        if result.returncode != 0:

            raise AudioError(f"sox failed: {result.stderr.decode(errors='replace').strip()}")
        pcm = np.frombuffer(result.stdout, dtype="<i2").astype(np.int16)
    else:

        y = resample(x, int(sample_rate), ASR_SAMPLE_RATE) if sample_rate != ASR_SAMPLE_RATE else x
        # Rounded, not dithered: decoding the same file twice gives the same words.
        pcm = np.clip(np.round(y.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    pad = np.zeros(int(round(pad_seconds * ASR_SAMPLE_RATE)), dtype=np.int16)
    return np.concatenate([pad, pcm, pad])


class PocketSphinxRecognizer:
    """English speech to text with PocketSphinx.

    Args:
        hmm: acoustic model folder (default: the bundled en-us model).
        lm: language model, ARPA or binary (default: the bundled en-us 3-gram).
        dict: pronunciation dictionary (default: the bundled CMU dictionary).
        pad_seconds: silence added at both ends of every utterance.
        resampler: how audio is brought to 16 kHz (:func:`to_pcm16k`).

    Loading the model takes about half a second: make one recogniser per process and reuse
    it. ``transcribe`` is not thread-safe (one decoder, one utterance at a time).
    """

    def __init__(self, hmm: str | None = None, lm: str | None = None, dict: str | None = None,
                 pad_seconds: float = DEFAULT_PAD_SECONDS, resampler: str = "auto"):
        pocketsphinx = require("pocketsphinx")
        self.options = {k: str(Path(v).resolve()) for k, v in
                        (("hmm", hmm), ("lm", lm), ("dict", dict)) if v}
        for key, path in self.options.items():
            if not Path(path).exists():

                raise ConfigError(f"PocketSphinx {key} {path} does not exist")
        self.pad_seconds = pad_seconds
        self.resampler = resolve_resampler(resampler)
        # loglevel=FATAL: PocketSphinx otherwise logs every utterance to stderr.
        self._decoder = pocketsphinx.Decoder(loglevel="FATAL", **self.options)
        self.version = _version("pocketsphinx")

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> str:
        """Recognised words (lower case, no punctuation; ``""`` when nothing was heard).

        Args:
            samples: float ``[T]`` in [-1, 1], any rate.
            sample_rate: Hz.
        """
        pcm = to_pcm16k(samples, sample_rate, self.pad_seconds, self.resampler)
        decoder = self._decoder
        # A fresh front end for every clip: PocketSphinx otherwise carries its noise estimate
        # over from the previous utterance, and a hypothesis would depend on decoding order.
        decoder.reinit_feat()
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def describe(self) -> dict:
        """Settings for the report (what decoded, with which model, how padded)."""
        return {
            "recognizer": f"pocketsphinx {self.version}",
            "model": self.options or "bundled en-us (acoustic model, 3-gram LM, CMU dictionary)",
            "sample_rate": ASR_SAMPLE_RATE,
            "resampler": "sox rate -h" if self.resampler == "sox" else "soxr HQ",
            "pad_seconds": self.pad_seconds,
        }


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
