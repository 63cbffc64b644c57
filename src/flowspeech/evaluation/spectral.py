"""Closeness of synthesised speech to a reference recording of the same sentence.

* **Mel-cepstral distortion** (Kubichek, 1993, "Mel-cepstral distance measure for objective
  speech quality assessment"): ``MCD = 10 / ln 10 * sqrt(2 * sum_{d=1}^{24} (c_d - c'_d)^2)``
  in dB, averaged over the frames of a dynamic-time-warping path between the two clips.
  Mel-cepstra c0..c24 come from the WORLD spectral envelope (Morise et al., 2016; CheapTrick,
  F0 from Harvest) through SPTK's ``sp2mc`` with the frequency-warping ``alpha`` that
  approximates the mel scale at the sample rate (0.42 at 16 kHz, 0.455 at 22.05 kHz;
  ``pysptk.util.mcepalpha``), 5 ms frames. c0 (energy) is left out, as is usual since
  Toda et al. (2007). Leading and trailing frames 40 dB below the loudest are cut before
  the alignment, so silence padding does not dilute the score. The DTW (steps (1,1), (1,0),
  (0,1), Euclidean frame distance on c1..c24) is the one ESPnet's ``evaluate_mcd.py`` uses.
  ``max_hz`` limits the comparison to a band: above it both envelopes are held at their
  value at ``max_hz``. A mel front end with ``fmax`` 8 kHz at 22.05 kHz leaves nothing above
  8 kHz for a vocoder to reproduce; the recording has speech there about 40 dB louder, and on
  the full band that one gap makes a Griffin-Lim copy score ~13 dB instead of ~4 dB, for every
  mel-based system alike. Hold at the centre of the top mel filter (7.7 kHz there), not at
  ``fmax``: the mel's top filter fades out between the two.
* **MCD, mean removed** (``mcd_cmn``): the same after subtracting the sentence's mean
  c1..c24 difference along the path (cepstral mean normalisation), and **cepstral offset**:
  the size of that mean on MCD's scale. A constant cepstral difference is a fixed linear
  filter, one colouring of every frame; ``mcd_cmn`` scores what is left, the spectral shapes
  and their movement. Where a colouring is shared by every system of a kind (a vocoder's, or
  a band limit's: a mel vocoder's envelope is 25 dB down at the front end's ``fmax``, so
  ``max_hz`` should be the centre of the top mel filter, ``MelConfig.top_filter_hz``, not
  ``fmax``), MCD can reward an error that cancels part of it; ``mcd_cmn`` cannot
  (docs/default-voice.md).
* **log-F0 RMSE**: ``sqrt(mean (ln F0 - ln F0')^2)`` over the aligned frames voiced in both,
  also in cents (x 1200 / ln 2). F0 by WORLD Harvest (Morise, 2017), or DIO + StoneMask.
* **Voicing decision error** (VDE; Nakatani et al., 2008): fraction of aligned frames whose
  voiced/unvoiced decisions differ; **F0 frame error** (FFE; Chu & Alwan, 2009): fraction
  with a voicing error or a gross pitch error (more than 20 % off).
* **Duration ratio**: speech span of the synthesis over that of the reference (silence at
  the ends excluded), a check on speaking rate.
* **Multi-resolution STFT distance** (Yamamoto et al., 2020, Parallel WaveGAN, eqs. 4-6):
  spectral convergence ``|| |S| - |S'| ||_F / || |S| ||_F`` plus the mean absolute log
  magnitude difference, averaged over three STFTs (FFT 1024/2048/512, hop 120/240/50,
  window 600/1200/240, Hann). It compares waveforms sample by sample, so it only suits
  copy-synthesis (vocoder output for the reference's own mel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import librosa
import numpy as np
import torch
from scipy.spatial.distance import cdist

from flowspeech.errors import ConfigError
from flowspeech.evaluation.deps import require

MCD_ORDER = 24
FRAME_PERIOD_MS = 5.0
TRIM_DB = 40.0
F0_METHODS = ("harvest", "dio")
_MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)
_CENTS_PER_NEPER = 1200.0 / math.log(2.0)

# (n_fft, hop, window) of Parallel WaveGAN's multi-resolution STFT loss
MRSTFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


@dataclass
class WorldFeatures:
    """WORLD analysis of one clip on a 5 ms frame grid (frame ``k`` centred at ``k * 5`` ms).

    Attributes:
        f0: ``[F]`` Hz, 0 where unvoiced.
        mcep: ``[F, order + 1]`` mel-cepstrum c0..c_order.
        energy_db: ``[F]`` frame level in dB (:func:`frame_energy_db`), for silence trimming.
        sample_rate: Hz of the analysed audio.
        frame_period_ms: frame hop.
    """

    f0: np.ndarray
    mcep: np.ndarray
    energy_db: np.ndarray
    sample_rate: int
    frame_period_ms: float = FRAME_PERIOD_MS

    def speech_frames(self, below_peak_db: float = TRIM_DB) -> slice:
        """From the first to the last frame within ``below_peak_db`` of the loudest one."""
        return speech_span(self.energy_db, below_peak_db)


def world_features(samples: np.ndarray, sample_rate: int, order: int = MCD_ORDER,
                   f0_method: str = "harvest", frame_period_ms: float = FRAME_PERIOD_MS,
                   f0_floor: float = 71.0, f0_ceil: float = 800.0,
                   max_hz: float | None = None) -> WorldFeatures:
    """F0, mel-cepstrum and frame energy of a clip (pyworld + pysptk).

    Args:
        samples: float ``[T]`` in [-1, 1].
        sample_rate: Hz.
        order: mel-cepstral order (c0..c_order are returned).
        f0_method: ``"harvest"`` (accurate, ~0.2x real time) or ``"dio"`` (DIO + StoneMask,
            ~15x faster, more voicing errors).
        frame_period_ms: frame hop.
        f0_floor, f0_ceil: F0 search range in Hz (WORLD's defaults).
        max_hz: if given, the envelope above this frequency is replaced by its value at it
            before the mel-cepstral analysis (see the module notes); ``None``: full band.

    Returns:
        :class:`WorldFeatures` with ``F = int(1000 * T / sample_rate / frame_period_ms) + 1``
        frames.
    """
    pw, sptk = require("pyworld"), require("pysptk")
    if f0_method not in F0_METHODS:

        raise ConfigError(f"unknown F0 method {f0_method!r}; choose one of {', '.join(F0_METHODS)}")
    x = np.ascontiguousarray(samples, dtype=np.float64)
    if f0_method == "harvest":
        f0, t = pw.harvest(x, sample_rate, f0_floor=f0_floor, f0_ceil=f0_ceil,
                           frame_period=frame_period_ms)
    else:
        f0, t = pw.dio(x, sample_rate, f0_floor=f0_floor, f0_ceil=f0_ceil,
                       frame_period=frame_period_ms)
        f0 = pw.stonemask(x, f0, t, sample_rate)
    sp = pw.cheaptrick(x, f0, t, sample_rate, f0_floor=f0_floor)  # [F, n_fft/2 + 1] power
    if max_hz is not None and max_hz < sample_rate / 2:
        if max_hz <= 0:
            raise ValueError(f"max_hz must be positive, got {max_hz}")
        last = int(max_hz / (sample_rate / 2) * (sp.shape[1] - 1))
        sp[:, last + 1:] = sp[:, last:last + 1]
    alpha = sptk.util.mcepalpha(sample_rate)
    mcep = sptk.sp2mc(sp, order, alpha)
    energy_db = frame_energy_db(x, sample_rate, frame_period_ms, n_frames=len(f0))
    return WorldFeatures(f0=f0, mcep=mcep, energy_db=energy_db, sample_rate=sample_rate,
                         frame_period_ms=frame_period_ms)


def frame_energy_db(samples: np.ndarray, sample_rate: int, frame_period_ms: float = FRAME_PERIOD_MS,
                    window_ms: float = 25.0, n_frames: int | None = None) -> np.ndarray:
    """Mean-square level (dB) of ``window_ms`` frames centred every ``frame_period_ms``
    (frame ``k`` at ``k * frame_period_ms``, the WORLD grid; zeros outside the clip).

    Returns:
        ``[n_frames]`` float, default ``int(1000 * T / sample_rate / frame_period_ms) + 1``.
    """
    x = np.asarray(samples, dtype=np.float64)
    hop = sample_rate * frame_period_ms / 1000.0
    if n_frames is None:
        n_frames = int(1000.0 * len(x) / sample_rate / frame_period_ms) + 1
    half = int(round(sample_rate * window_ms / 2000.0))
    padded = np.pad(x, (half, half + int(hop) + 1))
    # cumulative sum of squares: each frame's energy in O(1), no [F, window] matrix
    cum = np.concatenate([[0.0], np.cumsum(padded**2)])
    centres = np.round(np.arange(n_frames) * hop).astype(np.int64) + half
    lo, hi = centres - half, np.minimum(centres + half + 1, len(padded))
    power = (cum[hi] - cum[lo]) / (2 * half + 1)
    return 10.0 * np.log10(np.maximum(power, 1e-12))


def speech_seconds(samples: np.ndarray, sample_rate: int, below_peak_db: float = TRIM_DB) -> float:
    """Length of the span from the first to the last 5 ms frame within ``below_peak_db`` of
    the loudest frame: the clip's duration without leading and trailing silence."""
    span = speech_span(frame_energy_db(samples, sample_rate), below_peak_db)
    return (span.stop - span.start) * FRAME_PERIOD_MS / 1000.0


def speech_span(energy_db: np.ndarray, below_peak_db: float = TRIM_DB) -> slice:
    """Slice from the first to the last frame whose energy is within ``below_peak_db`` of
    the maximum (all frames when none is)."""
    active = np.flatnonzero(energy_db > energy_db.max() - below_peak_db)
    return slice(int(active[0]), int(active[-1]) + 1) if len(active) else slice(0, len(energy_db))


def dtw_path(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minimum-cost monotonic alignment of two feature sequences.

    Args:
        a: ``[N, D]`` features; b: ``[M, D]``.

    Returns:
        ``[L, 2]`` int array of (index in ``a``, index in ``b``) pairs from (0, 0) to
        (N - 1, M - 1); steps (1, 1), (1, 0), (0, 1), Euclidean frame distance.
    """

    cost = cdist(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), "euclidean")
    _, path = librosa.sequence.dtw(C=cost, backtrack=True)
    return np.ascontiguousarray(path[::-1])


def mel_cepstral_distortion(ref_mcep: np.ndarray, syn_mcep: np.ndarray,
                            path: np.ndarray | None = None, remove_mean: bool = False) -> float:
    """MCD in dB over c1..c_order, averaged over the alignment ``path``.

    Args:
        ref_mcep: ``[N, order + 1]`` (c0 is ignored); syn_mcep: ``[M, order + 1]``.
        path: ``[L, 2]`` frame pairs; ``None`` aligns with :func:`dtw_path` on c1..c_order.
        remove_mean: subtract the mean difference over the path first (cepstral mean
            normalisation, see :func:`cepstral_offset`).
    """
    if path is None:
        path = dtw_path(ref_mcep[:, 1:], syn_mcep[:, 1:])
    diff = _path_difference(ref_mcep, syn_mcep, path)
    return _distortion(diff - diff.mean(axis=0) if remove_mean else diff)


def cepstral_offset(ref_mcep: np.ndarray, syn_mcep: np.ndarray, path: np.ndarray) -> float:
    """Size in dB (MCD's scale) of the mean c1..c_order difference along ``path``.

    A constant difference of mel-cepstra is a fixed linear filter: one spectral colouring
    (tilt, a broad boost or cut) applied to every frame, as a vocoder's systematic error or a
    recording channel gives. ``mcd_cmn`` (:func:`mel_cepstral_distortion` with
    ``remove_mean``) is the distortion left without it.
    """
    return _distortion(_path_difference(ref_mcep, syn_mcep, path).mean(axis=0, keepdims=True))


def _path_difference(ref_mcep: np.ndarray, syn_mcep: np.ndarray, path: np.ndarray) -> np.ndarray:
    """``[L, order]`` c1..c_order differences of the frame pairs of ``path``."""
    return ref_mcep[path[:, 0], 1:] - syn_mcep[path[:, 1], 1:]


def _distortion(diff: np.ndarray) -> float:
    """MCD's scale applied to ``[L, order]`` differences, averaged over the frames."""
    return float(_MCD_SCALE * np.sqrt((diff**2).sum(axis=1)).mean())


def f0_errors(ref_f0: np.ndarray, syn_f0: np.ndarray, path: np.ndarray | None = None) -> dict:
    """log-F0 RMSE, VDE and FFE of aligned F0 tracks.

    Args:
        ref_f0: ``[N]`` Hz, 0 = unvoiced; syn_f0: ``[M]``.
        path: ``[L, 2]`` frame pairs; ``None`` pairs frames by index (equal lengths needed).

    Returns:
        ``log_f0_rmse`` (natural log units), ``f0_rmse_cents``, ``vde``, ``ffe``,
        ``vde_missed`` (voiced in the reference, unvoiced in the synthesis) and
        ``vde_spurious`` (the other way; the two sum to ``vde``), all fractions of aligned
        frames, and ``voiced_frames`` (frames voiced in both). The RMSEs are NaN
        when no frame is voiced in both.
    """
    if path is None:
        if len(ref_f0) != len(syn_f0):
            raise ValueError(f"F0 tracks of {len(ref_f0)} and {len(syn_f0)} frames need a path")
        path = np.stack([np.arange(len(ref_f0))] * 2, axis=1)
    r, s = ref_f0[path[:, 0]], syn_f0[path[:, 1]]
    rv, sv = r > 0, s > 0
    both = rv & sv
    missed, spurious = int((rv & ~sv).sum()), int((~rv & sv).sum())
    voicing_errors = missed + spurious
    if both.any():
        log_diff = np.log(s[both]) - np.log(r[both])
        rmse = float(np.sqrt(np.mean(log_diff**2)))
        gross = int((np.abs(s[both] / r[both] - 1.0) > 0.2).sum())
    else:
        rmse, gross = float("nan"), 0
    n = len(path)
    return {"log_f0_rmse": rmse, "f0_rmse_cents": rmse * _CENTS_PER_NEPER,
            "vde": voicing_errors / n, "ffe": (voicing_errors + gross) / n,
            "vde_missed": missed / n, "vde_spurious": spurious / n,
            "voiced_frames": int(both.sum())}


def compare_to_reference(ref: WorldFeatures, syn: WorldFeatures,
                         below_peak_db: float = TRIM_DB) -> dict:
    """MCD, F0 errors and duration ratio of a synthesis against its reference.

    Both clips are trimmed to their speech span, aligned once by DTW on c1..c24, and the
    F0 errors use the same path.

    Returns:
        ``mcd`` (dB), ``mcd_cmn`` (dB, the sentence's mean cepstral difference removed),
        ``cepstral_offset`` (dB, the size of that mean), ``log_f0_rmse``, ``f0_rmse_cents``,
        ``vde``, ``vde_missed``, ``vde_spurious``, ``ffe``, ``duration_ratio`` (synthesis
        speech span / reference speech span),
        ``ref_speech_s``, ``syn_speech_s``.
    """
    if ref.sample_rate != syn.sample_rate or ref.frame_period_ms != syn.frame_period_ms:
        raise ValueError("analyse both clips at the same sample rate and frame period")
    rs, ss = ref.speech_frames(below_peak_db), syn.speech_frames(below_peak_db)
    ref_mcep, syn_mcep = ref.mcep[rs], syn.mcep[ss]
    path = dtw_path(ref_mcep[:, 1:], syn_mcep[:, 1:])
    diff = _path_difference(ref_mcep, syn_mcep, path)
    offset = diff.mean(axis=0, keepdims=True)
    out = {"mcd": _distortion(diff), "mcd_cmn": _distortion(diff - offset),
           "cepstral_offset": _distortion(offset)}
    f0 = f0_errors(ref.f0[rs], syn.f0[ss], path)
    del f0["voiced_frames"]
    out.update(f0)
    seconds = ref.frame_period_ms / 1000.0
    out["ref_speech_s"] = len(ref_mcep) * seconds
    out["syn_speech_s"] = len(syn_mcep) * seconds
    out["duration_ratio"] = out["syn_speech_s"] / out["ref_speech_s"]
    return out


def multi_resolution_stft_distance(reference, synthesis, resolutions=MRSTFT_RESOLUTIONS) -> dict:
    """Parallel WaveGAN's multi-resolution STFT distance between two waveforms.

    Args:
        reference: ``[T]`` or ``[B, T]`` float samples (numpy or torch, any device).
        synthesis: same shape and rate; both are cut to the shorter length.
        resolutions: ``(n_fft, hop, window)`` triples.

    Returns:
        ``mrstft_sc`` (spectral convergence) and ``mrstft_mag`` (mean |log magnitude
        difference|), each averaged over the resolutions, and their sum ``mrstft``
        (PWG's ``L_aux``). All 0 for identical inputs.
    """

    def as_tensor(x):
        x = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
        return (x.unsqueeze(0) if x.dim() == 1 else x).to(torch.float32)

    y, x = as_tensor(reference), as_tensor(synthesis).to(as_tensor(reference).device)
    n = min(x.shape[-1], y.shape[-1])
    x, y = x[..., :n], y[..., :n]
    sc = mag = 0.0
    for n_fft, hop, win in resolutions:
        window = torch.hann_window(win, device=y.device)
        # PWG clamps |STFT|^2 at 1e-7 before the square root, so log() stays finite.
        specs = [torch.stft(s, n_fft, hop, win, window, return_complex=True).abs().pow(2)
                 .clamp(min=1e-7).sqrt() for s in (y, x)]
        ref_mag, syn_mag = specs
        sc += float(torch.linalg.norm(ref_mag - syn_mag) / torch.linalg.norm(ref_mag))
        mag += float((ref_mag.log() - syn_mag.log()).abs().mean())
    sc, mag = sc / len(resolutions), mag / len(resolutions)
    return {"mrstft_sc": sc, "mrstft_mag": mag, "mrstft": sc + mag}
