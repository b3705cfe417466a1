"""Statistics in one place: Wilson intervals, Fisher and Mantel-Haenszel tests, BH, power.

Every function takes and returns numpy arrays, so a report of thousands of patterns is
tested in a handful of vectorised scipy calls, never a Python loop per pattern. The
stratified figures (:func:`stratified_tests`) take a patterns x strata matrix of 2x2
tables and reduce along the strata axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "LOW_N_PLANS",
    "ChangePoint",
    "StratifiedTests",
    "benjamini_hochberg",
    "benjamini_hochberg_by",
    "bh_threshold",
    "change_point_test",
    "cmh_p_values",
    "fisher_exact_two_sided",
    "low_n",
    "plans_needed",
    "stratified_tests",
    "wilson_interval",
]

# scipy.stats is imported where it is used: it is half of `import metalearn` (~0.7 s),
# which every CLI call and notebook start would pay.
_Z95 = NormalDist().inv_cdf(0.975)
# scipy.stats.fisher_exact counts tables whose probability is within this relative
# tolerance of the observed one as "as extreme" (floating-point ties).
_RELATIVE_TIE = 1e-7
_TERMS_PER_STEP = 64  # hypergeometric tail terms summed per vectorised step
_Z80 = NormalDist().inv_cdf(0.80)  # the power plans_needed asks for
MAX_PLANS_NEEDED = 1e12
"""Beyond this many plans ``plans_needed`` says "no finite number" (empty)."""
LOW_N_PLANS = 30
"""A rate of fewer plans than this is marked ``low_n``."""
LOW_N_WIDTH = 0.25
"""A rate whose 95% interval is wider than this (25 percentage points) is marked ``low_n``."""


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


def low_n(plans: ArrayLike, ci_low: ArrayLike, ci_high: ArrayLike) -> NDArray[np.bool_]:
    """Rates nobody should act on: fewer than 30 plans, or a 95% interval wider than 25 points.

    Either alone misleads: 30 plans at 50% still span 33%-67%, and a wide interval can
    come from many plans when the interval is missing (no plans at all). Both thresholds
    are :data:`LOW_N_PLANS` and :data:`LOW_N_WIDTH`.

    >>> low_n([10, 40, 200], [0.2, 0.35, 0.43], [0.8, 0.65, 0.57]).tolist()
    [True, True, False]
    """
    n = np.asarray(plans, dtype="float64")
    width = np.asarray(ci_high, dtype="float64") - np.asarray(ci_low, dtype="float64")
    flagged: NDArray[np.bool_] = (n < LOW_N_PLANS) | ~(width <= LOW_N_WIDTH)
    return flagged


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
    arrays = np.broadcast_arrays(
        *(np.asarray(v, dtype="int64") for v in (a, row_total, column_total, total))
    )
    shape = arrays[0].shape
    x, n, k, m = (np.ravel(v) for v in arrays)
    from scipy import stats

    dist = stats.hypergeom(m, n, k)  # population m, n marked, k drawn
    mode = ((k + 1) * (n + 1)) // (m + 2)
    threshold = dist.logpmf(x) + np.log1p(_RELATIVE_TIE)
    low_end, high_end = np.maximum(0, n + k - m), np.minimum(n, k)
    below = x < mode
    start = _opposite_tail_start(m, n, k, mode, low_end, high_end, threshold, below)
    at_mode = dist.logpmf(mode) <= threshold  # the observed table is as likely as the mode
    degenerate = (n == 0) | (n == m) | (k == 0) | (k == m)
    p = np.ones(len(x))
    # Tails are computed only where needed: each hypergeometric cdf/sf call sums terms,
    # and asking for the far side of every table as well doubled the work or worse.
    todo = ~(at_mode | degenerate)
    lower, upper = todo & below, todo & ~below
    p[lower] = _tail(x, m, n, k, lower, upper_tail=False)
    p[upper] = _tail(x - 1, m, n, k, upper, upper_tail=True)
    far = lower & (start <= high_end)  # below the mode: add the upper tail from start
    p[far] += _tail(start - 1, m, n, k, far, upper_tail=True)
    far = upper & (start >= low_end)  # above the mode: add the lower tail up to start
    p[far] += _tail(start, m, n, k, far, upper_tail=False)
    result: NDArray[np.float64] = np.minimum(p, 1.0).reshape(shape)
    return result


def _tail(
    at: NDArray[np.int64],
    m: NDArray[np.int64],
    n: NDArray[np.int64],
    k: NDArray[np.int64],
    where: NDArray[np.bool_],
    *,
    upper_tail: bool,
) -> NDArray[np.float64]:
    """P(X > at) (upper) or P(X <= at) of the selected tables; both tails lie on the far
    side of the mode, where the pmf shrinks outwards, so they are summed term by term.
    """
    if not where.any():
        return np.empty(0)
    first = at[where] + 1 if upper_tail else at[where]
    return _sum_outwards(first, m[where], n[where], k[where], upward=upper_tail)


def _sum_outwards(
    first: NDArray[np.int64],
    m: NDArray[np.int64],
    n: NDArray[np.int64],
    k: NDArray[np.int64],
    *,
    upward: bool,
) -> NDArray[np.float64]:
    """Sum the hypergeometric pmf from ``first`` outwards to the end of the support.

    Each next term is the last one times the pmf ratio. One vectorised step takes the
    next :data:`_TERMS_PER_STEP` terms of every table still summing (a running product of
    their ratios), and a table stops once the rest cannot change its sum (the ratios only
    shrink outwards, so the rest is below term x r / (1 - r)). Tails near the mode of a
    million-plan table run to thousands of terms; one term per step made that thousands
    of numpy passes. Scipy's hypergeometric cdf/sf evaluate every table separately and
    took ~0.3 ms each.
    """
    j, mf, nf, kf = (v.astype(np.float64) for v in (first, m, n, k))
    end = np.minimum(nf, kf) if upward else np.maximum(0.0, nf + kf - mf)
    term = _hypergeom_pmf(first, m, n, k)
    total = term.copy()
    active = np.flatnonzero((term > 0) & (j != end))
    step = np.arange(_TERMS_PER_STEP, dtype=np.float64) * (1.0 if upward else -1.0)
    while active.size:
        ja = j[active][:, None] + step  # each ratio leads from the term at ja to the next
        na, ka, ma, ea = (v[active][:, None] for v in (nf, kf, mf, end))
        with np.errstate(divide="ignore", invalid="ignore"):
            if upward:
                ratio = (na - ja) * (ka - ja) / ((ja + 1) * (ma - na - ka + ja + 1))
            else:
                ratio = ja * (ma - na - ka + ja) / ((na - ja + 1) * (ka - ja + 1))
        past = (ja >= ea) if upward else (ja <= ea)  # no term beyond the support's end
        ratio[past] = 0.0
        terms = term[active][:, None] * np.cumprod(ratio, axis=1)
        total[active] += terms.sum(axis=1)
        term[active] = terms[:, -1]
        j[active] = ja[:, -1] + (1.0 if upward else -1.0)
        last = ratio[:, -1]
        rest = term[active] * last / np.maximum(1 - last, 1e-300)
        finished = past[:, -1] | (rest <= total[active] * 1e-17)
        active = active[~finished]
    return total


def _hypergeom_pmf(
    x: NDArray[np.int64], m: NDArray[np.int64], n: NDArray[np.int64], k: NDArray[np.int64]
) -> NDArray[np.float64]:
    """The hypergeometric pmf through three binomial pmfs (Loader's method, as R's dhyper).

    Accurate to a few ulps for millions of plans, where exp(logpmf) loses ~1e-8 to
    cancellation and scipy's own hypergeometric pmf costs ~0.3 ms per table.
    """
    from scipy import stats

    p = k / m
    with np.errstate(invalid="ignore", divide="ignore"):
        pmf = stats.binom.pmf(x, n, p) * stats.binom.pmf(k - x, m - n, p) / stats.binom.pmf(k, m, p)
    result: NDArray[np.float64] = np.nan_to_num(np.asarray(pmf, dtype=np.float64), nan=0.0)
    return result


def _opposite_tail_start(
    m: NDArray[np.int64],
    n: NDArray[np.int64],
    k: NDArray[np.int64],
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
    from scipy import stats

    active = np.flatnonzero(np.abs(outside - inside) > 1)
    while active.size:  # only the tables still bisecting are evaluated
        middle = (inside[active] + outside[active]) // 2
        logpmf = stats.hypergeom.logpmf(middle, m[active], n[active], k[active])
        in_tail = logpmf <= threshold[active]
        outside[active[in_tail]] = middle[in_tail]
        inside[active[~in_tail]] = middle[~in_tail]
        active = active[np.abs(outside[active] - inside[active]) > 1]
    return outside


def benjamini_hochberg(p_values: ArrayLike) -> NDArray[np.float64]:
    """Benjamini-Hochberg q-values (FDR-adjusted p-values); empty in, empty out.

    >>> benjamini_hochberg([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.04, 0.04]
    """
    p = np.asarray(p_values, dtype="float64")
    if p.size == 0:
        return p
    from scipy import stats

    q: NDArray[np.float64] = stats.false_discovery_control(p, method="bh")
    return q


def benjamini_hochberg_by(p_values: ArrayLike, groups: ArrayLike) -> NDArray[np.float64]:
    """Benjamini-Hochberg q-values computed separately within each group (one family each).

    ``groups`` holds a non-negative integer code per p-value. The same numbers as
    :func:`benjamini_hochberg` applied to each group alone, in a few vectorised passes.

    >>> benjamini_hochberg_by([0.01, 0.04, 0.03, 0.02], [0, 0, 0, 1]).round(3).tolist()
    [0.03, 0.04, 0.04, 0.02]
    """
    p = np.asarray(p_values, dtype="float64")
    codes = np.asarray(groups, dtype="int64")
    if p.size == 0:
        return p
    order = np.lexsort((p, codes))  # by group, then p ascending
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sizes = np.diff(np.r_[starts, p.size])
    rank = np.arange(p.size) - np.repeat(starts, sizes) + 1
    scaled = np.minimum(p[order] * np.repeat(sizes, sizes) / rank, 1.0)
    # q_(i) = min over j >= i of the scaled p-values, within the group.
    backwards = pd.Series(scaled[::-1]).groupby(sorted_codes[::-1], sort=False).cummin()
    q = np.empty(p.size)
    q[order] = backwards.to_numpy()[::-1]
    return q


@dataclass(frozen=True)
class ChangePoint:
    """The most likely single change in a 0/1 sequence (see :func:`change_point_test`).

    ``split`` is the number of leading bins before the change (None when no split could
    be tested), ``statistic`` the maximum standardized difference, ``p_value`` its
    permutation p-value.
    """

    split: int | None
    statistic: float
    p_value: float


def _split_statistics(
    cumulative: NDArray[np.float64], before: NDArray[np.float64], n: float, total: float
) -> NDArray[np.float64]:
    """|successes before - expected| / sqrt(k (n - k)) at each split (last axis).

    Proportional to the pooled two-proportion z statistic of before vs after; the factor
    sqrt(p (1 - p) / n) is the same under every permutation, so it is left out.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        statistic: NDArray[np.float64] = np.abs(cumulative - before * (total / n)) / np.sqrt(
            before * (n - before)
        )
    return statistic


def change_point_test(
    sizes: ArrayLike,
    successes: ArrayLike,
    *,
    min_segment: int,
    rng: np.random.Generator,
    permutations: int = 999,
    stop_after: int | None = 20,
) -> ChangePoint:
    """The most likely single change in success rate, and a p-value valid for "anywhere".

    The plans come in order as consecutive bins (``sizes`` plans each, ``successes`` of
    them succeeded; bins of one plan each are the plans themselves). Every split between
    bins that leaves at least ``min_segment`` plans on each side is scored with the
    standardized difference of the success rates before and after (the pooled
    two-proportion z statistic, i.e. the standardized CUSUM); the change is the split of
    the largest score. Taking the best of many splits makes that score large even without
    a change, so its naive p-value would be far too small; instead the maximum is compared
    with the maxima of up to ``permutations`` random reorderings of the plans (a Monte
    Carlo permutation test, exact for any sample size: under "no change" every order of
    the outcomes is equally likely). Reordering plans reorders bin contents: the successes
    falling into each bin of a permuted sequence are multivariate hypergeometric, drawn
    directly (``rng.multivariate_hypergeometric``), so a permutation costs bins, not plans;
    permutations are drawn as matrices, in chunks. p = (1 + permutations at least as
    extreme) / (permutations + 1), so it is never below ``1 / (permutations + 1)``; with
    ``stop_after`` the test stops once that many permutations were at least as extreme
    and p = stop_after / permutations drawn (Besag and Clifford's sequential p-value,
    valid as well): a group without a change costs tens of permutations, not hundreds.

    >>> rng = np.random.default_rng(0)
    >>> outcomes = np.r_[rng.random(300) < 0.8, rng.random(300) < 0.5].astype(int)
    >>> found = change_point_test(np.ones(600), outcomes, min_segment=10, rng=rng)
    >>> abs(found.split - 300) < 30, found.p_value
    (True, 0.001)
    >>> flat = (rng.random(600) < 0.6).astype(int)
    >>> change_point_test(np.ones(600), flat, min_segment=10, rng=rng).p_value > 0.05
    True
    """
    m = np.asarray(sizes, dtype="int64")
    s = np.asarray(successes, dtype="int64")
    n, total = int(m.sum()), int(s.sum())
    before = np.cumsum(m)[:-1].astype("float64")
    eligible = (before >= min_segment) & (n - before >= min_segment)
    if not eligible.any() or total in (0, n):
        return ChangePoint(None, 0.0, 1.0)
    observed = _split_statistics(np.cumsum(s)[:-1].astype("float64"), before, n, total)
    observed = np.where(eligible, observed, -np.inf)
    split = int(np.argmax(observed))
    threshold = observed[split] * (1 - 1e-12)  # equal up to rounding counts as extreme
    extreme, drawn, chunk = 0, 0, 50 if stop_after else permutations
    while drawn < permutations:
        size = min(chunk, permutations - drawn)
        drawn_bins = _permuted_bins(m, total, rng, size)
        null = _split_statistics(np.cumsum(drawn_bins, axis=1)[:, :-1], before, n, total)
        hits = np.where(eligible, null, -np.inf).max(axis=1) >= threshold
        if stop_after is not None and extreme + int(hits.sum()) >= stop_after:
            stop = int(np.flatnonzero(extreme + np.cumsum(hits) >= stop_after)[0])
            return ChangePoint(split + 1, float(observed[split]), stop_after / (drawn + stop + 1))
        extreme, drawn, chunk = extreme + int(hits.sum()), drawn + size, chunk * 2
    return ChangePoint(split + 1, float(observed[split]), (1 + extreme) / (permutations + 1))


def _permuted_bins(
    sizes: NDArray[np.int64], total: int, rng: np.random.Generator, permutations: int
) -> NDArray[np.float64]:
    """Successes per bin of ``permutations`` random reorderings, one row each."""
    if np.all(sizes == 1):  # plan by plan: shuffling the rows is cheaper than sampling
        ordered = np.zeros((permutations, len(sizes)), dtype=np.int8)
        ordered[:, :total] = 1
        shuffled: NDArray[np.float64] = rng.permuted(ordered, axis=1).astype("float64")
        return shuffled
    drawn: NDArray[np.float64] = rng.multivariate_hypergeometric(
        sizes, total, size=permutations, method="marginals"
    ).astype("float64")
    return drawn


def bh_threshold(significant: int, tested: int, fdr: float) -> float:
    """The p-value a row needs to be significant under Benjamini-Hochberg, about.

    With ``significant`` of ``tested`` rows rejected, BH rejects exactly the rows with
    ``p <= fdr * significant / tested``; with none rejected, the first step's
    ``fdr / tested``. This one threshold is what "still significant" means when findings
    are tested again within a stronger pattern's strata, and the alpha
    :func:`plans_needed` plans for.

    >>> bh_threshold(5, 100, 0.05), bh_threshold(0, 100, 0.05)
    (0.0025, 0.0005)
    """
    return fdr * max(significant, 1) / max(tested, 1)


@dataclass(frozen=True)
class StratifiedTests:
    """Mantel-Haenszel figures of many stratified 2x2 tables (one entry per table).

    ``odds_ratio`` (MH common odds ratio), ``ci_low``/``ci_high`` (its Robins-Breslow-
    Greenland 95% interval), ``statistic`` (the CMH chi-square, 1 df, no continuity
    correction), ``p_value`` and ``log_p`` (its natural log: finite where ``p_value``
    underflows to 0), ``homogeneity_p_value`` (Breslow-Day with Tarone's adjustment; NaN
    with fewer than two strata) and ``strata`` (how many strata contribute).
    """

    odds_ratio: NDArray[np.float64]
    ci_low: NDArray[np.float64]
    ci_high: NDArray[np.float64]
    statistic: NDArray[np.float64]
    p_value: NDArray[np.float64]
    log_p: NDArray[np.float64]
    homogeneity_p_value: NDArray[np.float64]
    strata: NDArray[np.int64]


Matrix = NDArray[np.float64]


def stratified_tests(
    a: ArrayLike, row_total: ArrayLike, column_total: ArrayLike, total: ArrayLike
) -> StratifiedTests:
    """MH odds ratio and interval, CMH test and Breslow-Day/Tarone test, reduced over axis -1.

    Each entry of the last axis is one stratum's table ``[[a, row_total - a],
    [column_total - a, ...]]`` of ``total`` plans; for a pattern: ``a`` = successful plans
    with it, ``row_total`` = plans with it, ``column_total`` = successful plans, ``total``
    = plans of the stratum. A stratum contributes when both margins vary (the pattern is
    neither absent from nor in every plan of it, and its plans neither all succeed nor all
    fail); the others add exactly nothing to any figure. The same definitions as
    ``statsmodels.stats.contingency_tables.StratifiedTable`` given the contributing
    strata (``oddsratio_pooled``, ``oddsratio_pooled_confint()``,
    ``test_null_odds(correction=False)``, ``test_equal_odds(adjust=True)``).

    >>> t = stratified_tests([[10, 4]], [[20, 15]], [[15, 5]], [[40, 30]])
    >>> round(float(t.odds_ratio[0]), 4), round(float(t.p_value[0]), 4), int(t.strata[0])
    (3.4742, 0.0321, 2)
    """
    arrays = np.broadcast_arrays(
        *(np.asarray(v, dtype="float64") for v in (a, row_total, column_total, total))
    )
    x, r, c, n = arrays
    used = (r > 0) & (r < n) & (c > 0) & (c < n)
    n_safe = np.where(used, n, 2.0)
    b, cc = r - x, c - x
    d = n - r - c + x
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio, low, high = _mantel_haenszel(x, b, cc, d, n_safe, used)
        statistic = _cmh_statistic(x, r, c, n_safe, used)
        homogeneity = _breslow_day_tarone(x, r, c, n, used, ratio)
    log_p, p = _chi2_1_tail(statistic)
    return StratifiedTests(ratio, low, high, statistic, p, log_p, homogeneity,
                           used.sum(axis=-1).astype(np.int64))  # fmt: skip


def cmh_p_values(
    a: ArrayLike, row_total: ArrayLike, column_total: ArrayLike, total: ArrayLike
) -> NDArray[np.float64]:
    """Only the CMH p-values of :func:`stratified_tests` (NaN where no stratum contributes).

    >>> cmh_p_values([[10, 4]], [[20, 15]], [[15, 5]], [[40, 30]]).round(4).tolist()
    [0.0321]
    """
    x, r, c, n = np.broadcast_arrays(
        *(np.asarray(v, dtype="float64") for v in (a, row_total, column_total, total))
    )
    used = (r > 0) & (r < n) & (c > 0) & (c < n)
    with np.errstate(invalid="ignore", divide="ignore"):
        statistic = _cmh_statistic(x, r, c, np.where(used, n, 2.0), used)
    return _chi2_1_tail(statistic)[1]


def _mantel_haenszel(
    a: Matrix, b: Matrix, c: Matrix, d: Matrix, n: Matrix, used: NDArray[np.bool_]
) -> tuple[Matrix, Matrix, Matrix]:
    """The MH odds ratio and the Robins-Breslow-Greenland interval of its log."""
    r, s = np.where(used, a * d / n, 0.0), np.where(used, b * c / n, 0.0)
    p, q = (a + d) / n, (b + c) / n
    sum_r, sum_s = r.sum(axis=-1), s.sum(axis=-1)
    ratio = sum_r / sum_s
    variance = (
        (p * r).sum(axis=-1) / (2 * sum_r**2)
        + (p * s + q * r).sum(axis=-1) / (2 * sum_r * sum_s)
        + (q * s).sum(axis=-1) / (2 * sum_s**2)
    )
    half = _Z95 * np.sqrt(variance)
    log_ratio = np.log(ratio)
    return ratio, np.exp(log_ratio - half), np.exp(log_ratio + half)


def _cmh_statistic(a: Matrix, r: Matrix, c: Matrix, n: Matrix, used: NDArray[np.bool_]) -> Matrix:
    deviation = np.where(used, a - r * c / n, 0.0).sum(axis=-1)
    variance = np.where(used, r * (n - r) * c * (n - c) / (n * n * (n - 1)), 0.0).sum(axis=-1)
    statistic: Matrix = deviation**2 / variance
    return statistic


def _chi2_1_tail(statistic: Matrix) -> tuple[Matrix, Matrix]:
    """log p and p of a 1-df chi-square: P(|Z| >= sqrt(stat)), accurate far into the tail."""
    from scipy import special

    z = -np.sqrt(statistic)
    log_p: Matrix = np.log(2.0) + special.log_ndtr(z)
    p: Matrix = np.minimum(2.0 * special.ndtr(z), 1.0)
    # ndtr flushes to 0 a little before the smallest subnormal; exp(log p) does not
    p = np.where(p < 1e-300, np.exp(log_p), p)
    return log_p, p


def _breslow_day_tarone(
    a: Matrix, r: Matrix, c: Matrix, n: Matrix, used: NDArray[np.bool_], ratio: Matrix
) -> Matrix:
    """Breslow-Day homogeneity p with Tarone's adjustment, over the contributing strata."""
    from scipy import special

    common = ratio[..., None]
    rest = n - r - c  # cell d minus cell a
    linear = common * (r + c) + rest
    root = np.sqrt(linear**2 + 4 * (1 - common) * common * r * c)
    expected = 2 * common * r * c / (linear + root)  # the stable root of the quadratic
    variance = 1 / (1 / expected + 1 / (c - expected) + 1 / (r - expected) + 1 / (rest + expected))
    gap = np.where(used, a - expected, 0.0)
    variance = np.where(used, variance, 0.0)
    statistic = (gap**2 / np.where(used, variance, 1.0)).sum(axis=-1)
    statistic -= gap.sum(axis=-1) ** 2 / variance.sum(axis=-1)
    df = used.sum(axis=-1) - 1
    finite = (df >= 1) & np.isfinite(statistic) & (ratio > 0) & np.isfinite(ratio)
    p: Matrix = np.where(finite, special.chdtrc(np.maximum(df, 1), statistic), np.nan)
    return p


def plans_needed(
    plans: ArrayLike,
    successes: ArrayLike,
    total_plans: ArrayLike,
    total_successes: ArrayLike,
    odds_ratio: ArrayLike,
    alpha: float,
    *,
    power: float = 0.8,
) -> NDArray[np.float64]:
    """About how many more plans a pattern needs for a two-sided test at ``alpha`` to reach
    ``power`` (default 80%), at its observed frequency and effect. NaN: no finite number.

    The classic two-proportion sample size (normal approximation, unequal groups): the
    pattern's share of plans stays ``plans / total_plans``, plans without it succeed at
    their observed rate ``p0``, plans with it at the rate whose odds are ``odds_ratio``
    times ``p0``'s (the stratified effect, or the pooled one). The figure is the total
    sample size minus ``total_plans``, rounded up, and at least 0. No effect (odds ratio
    1), an odds ratio of 0 or infinity, a pattern in no or every plan, or more than
    :data:`MAX_PLANS_NEEDED` (a trillion) plans: NaN.

    >>> plans_needed([50], [35], [1000], [500], [2.3], 0.001).round().tolist()
    [1216.0]
    """
    from scipy import stats

    x, k, n, s, ratio = (
        np.asarray(v, dtype="float64")
        for v in np.broadcast_arrays(plans, successes, total_plans, total_successes, odds_ratio)
    )
    z_alpha = stats.norm.isf(alpha / 2)
    z_power = NormalDist().inv_cdf(power) if power != 0.8 else _Z80
    with np.errstate(invalid="ignore", divide="ignore"):
        share = x / n
        p0 = (s - k) / (n - x)
        odds = p0 / (1 - p0) * ratio
        p1 = odds / (1 + odds)
        mean = share * p1 + (1 - share) * p0
        spread = 1 / share + 1 / (1 - share)
        needed = (
            z_alpha * np.sqrt(mean * (1 - mean) * spread)
            + z_power * np.sqrt(p1 * (1 - p1) / share + p0 * (1 - p0) / (1 - share))
        ) ** 2 / (p1 - p0) ** 2
    finite = np.isfinite(needed) & (ratio > 0) & np.isfinite(ratio) & (ratio != 1)
    finite &= needed <= MAX_PLANS_NEEDED
    finite &= (share > 0) & (share < 1) & (p0 > 0) & (p0 < 1)
    result: NDArray[np.float64] = np.where(finite, np.maximum(np.ceil(needed - n), 0.0), np.nan)
    return result
