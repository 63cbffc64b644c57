"""Intrusive quality and intelligibility scores of a waveform against its original: PESQ and
STOI, for vocoder copy-synthesis (the vocoder re-creates a recording from its own mel, so the
two are time-aligned sample for sample).

* **PESQ**, wide-band mode (ITU-T P.862.2, 2007; Rix et al., 2001), through the ``pesq``
  package (ITU reference C code): MOS-LQO from about 1.04 to 4.64; needs 16 kHz, so both
  signals are resampled to 16 kHz here.
* **STOI** (Taal et al., 2011, "An algorithm for intelligibility prediction of time-frequency
  weighted noisy speech"), through ``pystoi``: correlation of short-time one-third-octave
  envelopes, 0 to 1; ``pystoi`` resamples to 10 kHz itself and drops silent frames.

Neither suits text-to-speech output of a sentence, whose timing differs from the recording's;
use MCD and the F0 errors (:mod:`flowspeech.evaluation.spectral`) there.
"""

from __future__ import annotations

import numpy as np

from flowspeech.audio import resample
from flowspeech.evaluation.deps import require

PESQ_SAMPLE_RATE = 16000
PESQ_MAX = 4.643888  # wide-band MOS-LQO of a clip against itself


def _same_length(reference: np.ndarray, degraded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(reference), len(degraded))
    return (np.ascontiguousarray(reference[:n], dtype=np.float64),
            np.ascontiguousarray(degraded[:n], dtype=np.float64))


def pesq_wb(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ (MOS-LQO) of ``degraded`` against ``reference``.

    Args:
        reference, degraded: float ``[T]`` at ``sample_rate``; cut to the shorter one.
        sample_rate: Hz; resampled to 16 kHz when different.

    Returns:
        MOS-LQO (higher is better, 4.64 for identical signals); NaN when PESQ finds no
        speech in the reference (silence, or a clip under a quarter of a second).
    """
    pesq = require("pesq")
    if sample_rate != PESQ_SAMPLE_RATE:

        reference = resample(reference, sample_rate, PESQ_SAMPLE_RATE)
        degraded = resample(degraded, sample_rate, PESQ_SAMPLE_RATE)
    ref, deg = _same_length(reference, degraded)
    if not np.any(ref) or not np.any(deg):
        return float("nan")  # pesq would divide by a zero peak
    try:
        return float(pesq.pesq(PESQ_SAMPLE_RATE, ref, deg, "wb"))
    except (pesq.NoUtterancesError, pesq.BufferTooShortError):
        return float("nan")


def stoi(reference: np.ndarray, degraded: np.ndarray, sample_rate: int,
         extended: bool = False) -> float:
    """STOI (or extended STOI, Jensen & Taal, 2016) of ``degraded`` against ``reference``.

    Args:
        reference, degraded: float ``[T]`` at ``sample_rate``; cut to the shorter one.
        sample_rate: Hz.
        extended: ESTOI instead of STOI.

    Returns:
        0..1, higher is better; 1 for identical signals.
    """
    pystoi = require("pystoi")
    ref, deg = _same_length(reference, degraded)
    return float(pystoi.stoi(ref, deg, sample_rate, extended=extended))
