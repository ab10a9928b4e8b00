"""The statistics MLPerf uses for a cell of several seeds (framework-free)."""

from __future__ import annotations

import math
import statistics


def olympic_mean(values: list[float]) -> float | None:
    """MLPerf's result: drop the fastest and the slowest run (with 3 or more), average the rest."""
    if not values:
        return None
    v = sorted(values)
    return statistics.fmean(v[1:-1] if len(v) >= 3 else v)


def spread(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def one_sided_welch_p(new: list[float], base: list[float]) -> float:
    """p-value of H1: mean(new) > mean(base) (Welch's t-test), as MLPerf's RCP check does for
    epochs to converge."""
    from scipy import stats

    if statistics.pvariance(new) == 0 and statistics.pvariance(base) == 0:
        return 0.0 if statistics.fmean(new) > statistics.fmean(base) else 1.0
    _, p = stats.ttest_ind(new, base, equal_var=False, alternative="greater")
    return float(p) if not math.isnan(p) else 1.0
