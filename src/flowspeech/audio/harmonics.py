"""The harmonics a mel spectrogram does not resolve: where they are, and a comb to restore them.

From about 2 kHz up, a band of an 80-band mel at 22.05 kHz is as wide as a voice's harmonic
spacing or wider (150 Hz at 2.3 kHz, 430 Hz at 5.8 kHz): the mel says how much energy a band
holds, not that it lies on harmonics. Griffin-Lim's output keeps about two thirds of the
recordings' peak-to-valley contrast there, and that costs intelligibility
(``docs/default-voice.md``, "Restoring the harmonics the mel does not resolve"). Where the
harmonics lie is known: at multiples of F0, which the low bands do resolve.
:func:`flowspeech.audio.griffin_lim.griffin_lim`'s harmonic restoration weights the spectrum
of its phase retrieval's output by :func:`harmonic_comb` of :func:`frame_f0` and inverts
again, before the mel matching.

numpy only (and parselmouth), so that the runtime without PyTorch
(:mod:`flowspeech.runtime.griffin_lim`) uses the same functions.
"""

from __future__ import annotations

import functools
import math

import numpy as np

# The comb between harmonics, relative to a harmonic's peak; the frequency it starts from,
# faded in over FADE_HZ (below, the mel's bands resolve the harmonics themselves). Neither
# matters much: on held-out training sentences floors of 0.05, 0.1 and 0.2 give the same
# MCD, starts of 1 and 2.5 kHz within 0.04 dB (docs/default-voice.md).
FLOOR = 0.1
FROM_HZ = 1500.0
FADE_HZ = 500.0
# Praat's default pitch range (Hz); its window is 3 periods of the floor (40 ms).
PITCH_FLOOR = 75.0
PITCH_CEILING = 600.0


def frame_f0(wav: np.ndarray, sample_rate: int, hop_length: int, n_frames: int) -> np.ndarray:
    """F0 of ``wav`` at the centres of its ``n_frames`` STFT frames (frame ``t`` centred on
    sample ``t * hop_length``), by Praat's autocorrelation pitch tracker (Boersma, 1993;
    "To Pitch (ac)" with its defaults and a ``hop_length`` time step, through parselmouth).

    Chosen against WORLD's DIO + StoneMask inside the harmonic step: 0.02 dB lower MCD on
    held-out sentences, and 3.5 times faster (docs/default-voice.md).

    Returns:
        float64 ``[n_frames]``: Hz, 0 where unvoiced (and everywhere in a signal shorter than
        the tracker's 40 ms window).
    """
    f0 = np.zeros(n_frames)
    if len(wav) < math.ceil(3 / PITCH_FLOOR * sample_rate) + 1:
        return f0
    sound = pitch_tracker().Sound(np.asarray(wav, dtype=np.float64), sampling_frequency=sample_rate)
    pitch = sound.to_pitch_ac(time_step=hop_length / sample_rate, pitch_floor=PITCH_FLOOR,
                              pitch_ceiling=PITCH_CEILING)
    values = pitch.selected_array["frequency"]  # 0 where unvoiced
    if len(values) == 0:
        return f0
    centres = np.arange(n_frames) * hop_length / sample_rate
    index = np.round((centres - pitch.x1) / pitch.dt).astype(int)
    inside = (index >= 0) & (index < len(values))
    f0[inside] = values[index[inside]]
    return f0


def pitch_tracker():
    """``parselmouth`` (Praat), imported on first use: only the harmonic restoration tracks
    pitch, and the import takes 0.2 s, which a voice spends while it loads."""
    import parselmouth  # lazy: see above

    return parselmouth


def harmonic_comb(f0: np.ndarray, sample_rate: int, n_fft: int, win_length: int,
                  floor: float = FLOOR, from_hz: float = FROM_HZ,
                  fade_hz: float = FADE_HZ) -> np.ndarray:
    """Factors ``[n_fft // 2 + 1, F]`` (float32) on an STFT's bins: in each voiced frame
    (``f0 > 0``), the analysis window's main lobe centred on every multiple of F0, plus
    ``floor``, raised to a power that fades from 0 at ``from_hz`` to 1 at
    ``from_hz + fade_hz``; 1 below ``from_hz`` and in unvoiced frames.

    The lobe is the magnitude response of the periodic Hann window of ``win_length`` samples,
    scaled to 1 at its centre: the shape a steady harmonic has in the STFT.
    """
    lobe, oversample = _main_lobe(n_fft, win_length)
    bin_hz = sample_rate / n_fft
    freqs = np.arange(n_fft // 2 + 1) * bin_hz
    fade = np.clip((freqs - from_hz) / fade_hz, 0.0, 1.0)
    gain = np.ones((len(freqs), len(f0)), dtype=np.float32)
    voiced = np.flatnonzero(np.asarray(f0) > 0)
    if len(voiced) == 0:
        return gain
    f0_voiced = np.asarray(f0, dtype=np.float64)[voiced]
    harmonic = freqs[:, None] / f0_voiced  # [bins, voiced frames], in multiples of F0
    offset = np.abs(harmonic - np.round(harmonic)) * f0_voiced / bin_hz  # bins to the nearest
    index = np.round(offset * oversample).astype(int)
    comb = np.where(index < len(lobe), lobe[np.minimum(index, len(lobe) - 1)], 0.0) + floor
    gain[:, voiced] = comb ** fade[:, None]
    return gain


@functools.lru_cache(maxsize=4)
def _main_lobe(n_fft: int, win_length: int) -> tuple[np.ndarray, int]:
    """The window's magnitude response from 0 to 2 bins (its main lobe), sampled
    ``oversample`` times per bin and scaled to 1 at 0; and ``oversample``."""
    oversample = 64
    n = np.arange(win_length)
    window = 0.5 - 0.5 * np.cos(2 * math.pi * n / win_length)  # periodic Hann, as torch's
    response = np.abs(np.fft.rfft(window, n=n_fft * oversample))
    lobe = response[: 2 * oversample] / response[0]
    lobe.flags.writeable = False
    return lobe, oversample
