"""Paired comparison of two systems on the same sentences: the Wilcoxon signed-rank test
(Wilcoxon, 1945), as NaturalSpeech (Tan et al., 2022, Section 4.2) used it to show "no
statistically significant difference" from the recordings (p >= 0.05).

For each metric, the per-utterance values of the two systems are paired by id; the test
asks whether the paired differences are symmetric around zero. It makes no normality
assumption, which matters for WER and MCD, whose per-sentence distributions are skewed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import wilcoxon


@dataclass
class PairedComparison:
    """Result of one metric's paired test (differences are ``a - b``).

    Attributes:
        metric: metric name.
        n: utterances with a finite value in both systems.
        median_a, median_b: medians of each system over those utterances.
        median_difference: median of the per-utterance differences ``a - b``.
        mean_difference: mean of the differences.
        statistic: Wilcoxon's W (the smaller of the signed-rank sums).
        p_value: two-sided; 1.0 when every difference is zero; NaN when ``n == 0``.
        significant: ``p_value < alpha``.
    """

    metric: str
    n: int
    median_a: float
    median_b: float
    median_difference: float
    mean_difference: float
    statistic: float
    p_value: float
    significant: bool

    def to_dict(self) -> dict:
        return asdict(self)


def paired_wilcoxon(a: dict[str, float], b: dict[str, float], metric: str = "",
                    alpha: float = 0.05) -> PairedComparison:
    """Wilcoxon signed-rank test of ``a`` against ``b`` on the ids they share.

    Args:
        a, b: id -> value of one metric for two systems; ids in only one, and NaN or
            infinite values, are left out.
        metric: name stored in the result.
        alpha: significance level.

    Returns:
        :class:`PairedComparison`. Zero differences are dropped before ranking (Wilcoxon's
        original treatment, ``zero_method="wilcox"``); scipy uses the exact distribution for
        small samples without ties and the normal approximation otherwise.
    """

    ids = [k for k in a if k in b and math.isfinite(a[k]) and math.isfinite(b[k])]
    x = np.array([a[k] for k in ids], dtype=np.float64)
    y = np.array([b[k] for k in ids], dtype=np.float64)
    nan = float("nan")
    if not ids:
        return PairedComparison(metric, 0, nan, nan, nan, nan, nan, nan, False)
    d = x - y
    if np.all(d == 0):
        statistic, p_value = 0.0, 1.0  # scipy refuses all-zero differences
    else:
        result = wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return PairedComparison(
        metric=metric, n=len(ids), median_a=float(np.median(x)), median_b=float(np.median(y)),
        median_difference=float(np.median(d)), mean_difference=float(d.mean()),
        statistic=statistic, p_value=p_value, significant=bool(p_value < alpha),
    )


def compare_rows(rows_a: list[dict], rows_b: list[dict], metrics: list[str],
                 alpha: float = 0.05) -> list[PairedComparison]:
    """:func:`paired_wilcoxon` for every metric both row lists have, pairing rows by ``id``.

    Args:
        rows_a, rows_b: per-utterance rows (dicts with ``id`` and metric values).
        metrics: the metrics to test, in the order to report them.
    """
    out = []
    for metric in metrics:
        a = {r["id"]: float(r[metric]) for r in rows_a if _is_number(r.get(metric))}
        b = {r["id"]: float(r[metric]) for r in rows_b if _is_number(r.get(metric))}
        if a and b:
            out.append(paired_wilcoxon(a, b, metric, alpha))
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
