"""Monotonic Alignment Search (Glow-TTS, Kim et al. 2020, Sec. 3.2) and duration helpers.

- :func:`maximum_path`: most likely monotonic hard alignment between text tokens and mel
  frames (numba on CPU, torch on CUDA; both identical to the authors' implementation).
- :func:`durations_from_path`: frames per token of an alignment (duration targets).
- :func:`path_from_durations`: alignment from durations (inference-time expansion).
- :func:`merge_blank_durations`, :func:`fit_durations_to_frames`: durations from one model's
  alignment made to fit another's tokens (no blanks) and framing.
"""

from flowspeech.align.durations import (
    durations_from_path,
    fit_durations_to_frames,
    merge_blank_durations,
    path_from_durations,
)
from flowspeech.align.mas import (
    AlignmentError,
    maximum_path,
    maximum_path_numba,
    maximum_path_torch,
)
from flowspeech.align.soft_dtw import soft_dtw

__all__ = [
    "AlignmentError",
    "durations_from_path",
    "fit_durations_to_frames",
    "maximum_path",
    "maximum_path_numba",
    "maximum_path_torch",
    "merge_blank_durations",
    "path_from_durations",
    "soft_dtw",
]
