"""Summary statistics across seeds: mean ± sample std, paired t-test, relative improvement.

The papers (MMSSL Table 2, SLMRec Table 3) report the improvement of the best model over the strongest baseline
and a p-value of a t-test over repeated runs. Here runs are paired by seed (same split, same sampling seed), so the
test is the paired one, :func:`scipy.stats.ttest_rel`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value) of the finite ``values``.

    Returns (nan, nan) when no value is finite.
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, 0.0
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var)


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test of ``a`` vs ``b`` (equal length, paired by position).

    nan when fewer than two pairs, or when every difference is identical (the statistic is undefined: e.g. two
    deterministic models that tie on every seed,
    or a constant gap up to float rounding).
    """
    if len(a) != len(b):
        raise ValueError(f"paired t-test needs equal lengths, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return math.nan
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    scale = max(abs(float(x)) for x in [*a, *b]) or 1.0
    if max(diffs) - min(diffs) <= 1e-12 * scale:  # equal up to float rounding: the statistic is undefined
        return math.nan
    from scipy.stats import ttest_rel

    return float(ttest_rel(list(map(float, a)), list(map(float, b))).pvalue)


def relative_improvement(best: float, other: float) -> float:
    """(best - other) / other, e.g. 0.05 for a 5% improvement; nan when ``other`` is 0 or not finite."""
    if not math.isfinite(other) or other == 0.0 or not math.isfinite(best):
        return math.nan
    return (best - other) / other
