"""Objective evaluation of synthesised speech (see ``docs/evaluation.md``).

* intelligibility: PocketSphinx word/character error rates (:mod:`.asr`, :mod:`.wer`);
* closeness to a recording: MCD, log-F0 RMSE, voicing errors, duration ratio
  (:mod:`.spectral`);
* vocoder copy-synthesis: PESQ, STOI (:mod:`.intrusive`), multi-resolution STFT distance;
* flow likelihood (``flowspeech align``'s ``nll_per_dim``) and real-time factor;
* paired comparison of two systems: Wilcoxon signed-rank test (:mod:`.stats`);
* reports: JSON, Markdown, plots (:mod:`.report`).

The metric libraries are optional: ``pip install 'flowspeech[eval]'``. Importing this
package loads none of them.
"""

from __future__ import annotations

from flowspeech.evaluation.deps import MissingDependencyError
from flowspeech.evaluation.evaluate import (
    METRICS,
    EvalOptions,
    EvaluationReport,
    compare_reports,
    evaluate,
    evaluate_utterance,
)
from flowspeech.evaluation.intrusive import pesq_wb, stoi
from flowspeech.evaluation.spectral import (
    cepstral_offset,
    compare_to_reference,
    f0_errors,
    mel_cepstral_distortion,
    multi_resolution_stft_distance,
    world_features,
)
from flowspeech.evaluation.stats import PairedComparison, paired_wilcoxon
from flowspeech.evaluation.wer import ErrorCounts, error_counts, normalize_for_scoring

__all__ = [
    "METRICS",
    "ErrorCounts",
    "EvalOptions",
    "EvaluationReport",
    "MissingDependencyError",
    "PairedComparison",
    "cepstral_offset",
    "compare_reports",
    "compare_to_reference",
    "error_counts",
    "evaluate",
    "evaluate_utterance",
    "f0_errors",
    "mel_cepstral_distortion",
    "multi_resolution_stft_distance",
    "normalize_for_scoring",
    "paired_wilcoxon",
    "pesq_wb",
    "stoi",
    "world_features",
]
