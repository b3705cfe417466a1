"""Statistics in one place: Wilson intervals, a vectorised Fisher exact test, BH q-values.

Every function takes and returns numpy arrays, so a report of thousands of patterns is
tested in a handful of vectorised scipy calls, never a Python loop per pattern.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

__all__ = ["benjamini_hochberg", "fisher_exact_two_sided", "wilson_interval"]

_Z95 = float(stats.norm.ppf(0.975))
# scipy.stats.fisher_exact counts tables whose probability is within this relative
# tolerance of the observed one as "as extreme" (floating-point ties).
_RELATIVE_TIE = 1e-7


def wilson_interval(
    successes: ArrayLike, trials: ArrayLike, *, z: float = _Z95
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """95% Wilson score interval of ``successes / trials`` (NaN where ``trials == 0``).

    >>> low, high = wilson_interval([84], [200])
    >>> round(float(low[0]), 4), round(float(high[0]), 4)
    (0.3537, 0.4893)
    """
    k = np.asarray(successes, dtype="float64")
    n = np.asarray(trials, dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        z2 = z * z
        denominator = 1 + z2 / n
        center = (p + z2 / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    empty = n <= 0
    low = np.where(empty, np.nan, np.clip(center - half, 0.0, 1.0))
    high = np.where(empty, np.nan, np.clip(center + half, 0.0, 1.0))
    return low, high


def fisher_exact_two_sided(
    a: ArrayLike, row_total: ArrayLike, column_total: ArrayLike, total: ArrayLike
) -> NDArray[np.float64]:
    """Two-sided Fisher exact p-values of many 2x2 tables at once.

    Table ``[[a, row_total - a], [column_total - a, ...]]`` with grand ``total``; for a
    pattern: ``a`` = successful plans with it, ``row_total`` = plans with it,
    ``column_total`` = all successful plans, ``total`` = all plans. Same definition as
    :func:`scipy.stats.fisher_exact` (sum of the probabilities of all tables no more likely
    than the observed one), computed with vectorised hypergeometric tails and a vectorised
    bisection for where the opposite tail starts.

    >>> from scipy.stats import fisher_exact
    >>> ours = fisher_exact_two_sided([8, 1], [10, 12], [9, 5], [20, 30])
    >>> theirs = [fisher_exact([[8, 2], [1, 9]]).pvalue, fisher_exact([[1, 11], [4, 14]]).pvalue]
    >>> bool(np.allclose(ours, theirs, rtol=1e-9))
    True
    """
    x, n, k, m = np.broadcast_arrays(
        *(np.asarray(v, dtype="int64") for v in (a, row_total, column_total, total))
    )
    dist = stats.hypergeom(m, n, k)  # population m, n marked, k drawn
    log_observed = dist.logpmf(x)
    mode = ((k + 1) * (n + 1)) // (m + 2)
    threshold = log_observed + np.log1p(_RELATIVE_TIE)
    low_end, high_end = np.maximum(0, n + k - m), np.minimum(n, k)
    below = x < mode
    own_tail = np.where(below, dist.cdf(x), dist.sf(x - 1))
    start = _opposite_tail_start(dist, mode, low_end, high_end, threshold, below)
    opposite = np.where(below, dist.sf(start - 1), dist.cdf(start))
    p = np.where(below & (start > high_end), own_tail, own_tail + opposite)
    p = np.where(~below & (start < low_end), own_tail, p)
    at_mode = dist.logpmf(mode) <= threshold  # the observed table is as likely as the mode
    degenerate = (n == 0) | (n == m) | (k == 0) | (k == m)
    return np.where(at_mode | degenerate, 1.0, np.minimum(p, 1.0))


def _opposite_tail_start(
    dist: stats.rv_discrete,
    mode: NDArray[np.int64],
    low_end: NDArray[np.int64],
    high_end: NDArray[np.int64],
    threshold: NDArray[np.float64],
    below: NDArray[np.bool_],
) -> NDArray[np.int64]:
    """Where the tail opposite the observation starts having probability <= observed.

    Above the mode (observation below it) the pmf falls as values rise: the smallest value
    with ``logpmf <= threshold``, or ``high_end + 1`` when none. Below the mode, mirrored:
    the largest such value, or ``low_end - 1``.
    """
    # Invariant: `inside` is never a tail value, `outside` always is (or is past the end).
    inside = mode.copy()
    outside = np.where(below, high_end + 1, low_end - 1)
    while True:
        gap = np.abs(outside - inside) > 1
        if not gap.any():
            return outside
        middle = (inside + outside) // 2
        in_tail = dist.logpmf(middle) <= threshold
        outside = np.where(gap & in_tail, middle, outside)
        inside = np.where(gap & ~in_tail, middle, inside)


def benjamini_hochberg(p_values: ArrayLike) -> NDArray[np.float64]:
    """Benjamini-Hochberg q-values (FDR-adjusted p-values); empty in, empty out.

    >>> benjamini_hochberg([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.04, 0.04]
    """
    p = np.asarray(p_values, dtype="float64")
    if p.size == 0:
        return p
    q: NDArray[np.float64] = stats.false_discovery_control(p, method="bh")
    return q
