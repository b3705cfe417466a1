"""Statistics against scipy's reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, fisher_exact

from metalearn import _stats as stats_module
from metalearn._stats import (
    benjamini_hochberg,
    fisher_exact_two_sided,
    low_n,
    plans_needed,
    stratified_tests,
    wilson_interval,
)


def random_tables(count: int, seed: int, max_total: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tables = []
    for _ in range(count):
        total = int(rng.integers(1, max_total))
        with_pattern = int(rng.integers(0, total + 1))
        successes = int(rng.integers(0, total + 1))
        low, high = max(0, with_pattern + successes - total), min(with_pattern, successes)
        tables.append((int(rng.integers(low, high + 1)), with_pattern, successes, total))
    return np.array(tables)


def realistic_tables(count: int, seed: int) -> np.ndarray:
    """Pattern-like tables of up to two million plans, a few sd from independence."""
    rng = np.random.default_rng(seed)
    tables = []
    for _ in range(count):
        total = int(rng.integers(1_000, 2_000_000))
        with_pattern, successes = (int(v) for v in rng.integers(1, total, size=2))
        mean = with_pattern * successes / total
        var = with_pattern * successes * (total - with_pattern) * (total - successes)
        sd = max(1.0, (var / (total * total * (total - 1))) ** 0.5)
        low, high = max(0, with_pattern + successes - total), min(with_pattern, successes)
        a = round(mean + rng.normal() * sd * rng.choice([0.5, 2, 6]))
        tables.append((int(np.clip(a, low, high)), with_pattern, successes, total))
    return np.array(tables)


def test_fisher_matches_scipy_on_million_plan_tables() -> None:
    tables = realistic_tables(300, seed=5)
    ours = fisher_exact_two_sided(*tables.T)
    theirs = np.array([scipy_p(*row) for row in tables])
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-300)


def scipy_p(a: int, n: int, k: int, m: int) -> float:
    return float(fisher_exact([[a, n - a], [k - a, m - n - k + a]]).pvalue)


@pytest.mark.parametrize(
    ("seed", "max_total"),
    [pytest.param(0, 40, id="small-tables"), pytest.param(1, 2_000, id="large-tables")],
)
def test_fisher_matches_scipy_on_random_tables(seed: int, max_total: int) -> None:
    tables = random_tables(1_500, seed, max_total)
    ours = fisher_exact_two_sided(*tables.T)
    theirs = np.array([scipy_p(*row) for row in tables])
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize(
    "table",
    [
        pytest.param((0, 0, 5, 10), id="pattern-in-no-plan"),
        pytest.param((5, 10, 5, 10), id="pattern-in-every-plan"),
        pytest.param((0, 5, 0, 10), id="no-successes"),
        pytest.param((5, 5, 10, 10), id="all-succeeded"),
        pytest.param((3, 3, 3, 6), id="perfect-association"),
        pytest.param((0, 3, 3, 6), id="perfect-anti-association"),
        pytest.param((2, 4, 4, 8), id="observed-at-the-mode"),
        pytest.param((1, 1, 1, 1), id="single-plan"),
        pytest.param((412_000, 700_000, 600_000, 1_000_000), id="million-plans"),
        pytest.param((60, 100, 600_000, 1_000_000), id="rare-pattern-in-a-million"),
    ],
)
def test_fisher_edge_cases_match_scipy(table: tuple[int, int, int, int]) -> None:
    assert fisher_exact_two_sided(*table) == pytest.approx(scipy_p(*table), rel=1e-9, abs=1e-300)


def test_fisher_returns_one_p_value_per_table() -> None:
    p = fisher_exact_two_sided([1, 2, 3], [4, 5, 6], 10, 20)
    assert p.shape == (3,) and ((p >= 0) & (p <= 1)).all()


@pytest.mark.parametrize(("k", "n"), [(0, 10), (5, 10), (84, 200), (200, 200), (1, 16), (14, 16)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    low, high = wilson_interval([k], [n])
    expected = binomtest(k, n).proportion_ci(method="wilson")
    assert (low[0], high[0]) == pytest.approx((expected.low, expected.high), rel=1e-12, abs=1e-15)


def test_wilson_is_nan_without_trials() -> None:
    low, high = wilson_interval([0, 3], [0, 4])
    assert np.isnan(low[0]) and np.isnan(high[0]) and not np.isnan(low[1])


def test_benjamini_hochberg_by_hand() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.20])
    # sorted: 0.01*4/1=0.04, 0.03*4/2=0.06, 0.04*4/3=0.0533 -> monotone 0.0533, 0.20*4/4=0.2
    expected = [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.20]
    np.testing.assert_allclose(benjamini_hochberg(p), expected)
    assert benjamini_hochberg([]).size == 0


def _random_strata(rng: np.random.Generator) -> np.ndarray:
    """A (strata, 2, 2) stack of tables: small counts (zero cells are common), 1-8 strata."""
    strata = int(rng.integers(1, 9))
    scale = rng.choice([3, 10, 60, 400])
    return rng.integers(0, scale, size=(strata, 2, 2))


def _ours(tables: np.ndarray) -> stats_module.StratifiedTests:
    a, b, c, d = tables[:, 0, 0], tables[:, 0, 1], tables[:, 1, 0], tables[:, 1, 1]
    return stratified_tests(a[None], (a + b)[None], (a + c)[None], (a + b + c + d)[None])


def _contributes(tables: np.ndarray) -> np.ndarray:
    rows, columns = tables.sum(axis=2), tables.sum(axis=1)
    return (rows > 0).all(axis=1) & (columns > 0).all(axis=1)


def test_stratified_tests_match_statsmodels_on_random_tables() -> None:
    """MH odds ratio, RBG interval, CMH and Breslow-Day/Tarone agree with statsmodels."""
    from statsmodels.stats.contingency_tables import StratifiedTable

    rng = np.random.default_rng(14)
    compared = {"odds": 0, "homogeneity": 0, "single": 0, "zero_cells": 0}
    for _ in range(3_000):
        tables = _random_strata(rng)
        used = tables[_contributes(tables)]
        ours = _ours(tables)
        assert int(ours.strata[0]) == len(used)
        if len(used) == 0:
            assert np.isnan(ours.p_value[0]) and np.isnan(ours.homogeneity_p_value[0])
            continue
        theirs = StratifiedTable([t.astype(float) for t in used])  # the contributing strata
        with np.errstate(all="ignore"):
            expected = [theirs.oddsratio_pooled, *theirs.oddsratio_pooled_confint(),
                        theirs.test_null_odds(correction=False).pvalue]  # fmt: skip
        got = [ours.odds_ratio[0], ours.ci_low[0], ours.ci_high[0], ours.p_value[0]]
        np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-12, equal_nan=True)
        compared["odds"] += 1
        compared["single"] += len(used) == 1
        compared["zero_cells"] += bool((used == 0).any())
        if len(used) >= 2 and 0 < theirs.oddsratio_pooled < np.inf:
            with np.errstate(all="ignore"):
                bd = theirs.test_equal_odds(adjust=True).pvalue
            if abs(theirs.oddsratio_pooled - 1) < 1e-9:
                # statsmodels' root (-b + sqrt(D)) / 2(1 - r) loses every digit here
                bd = _breslow_day_tarone(used, theirs.oddsratio_pooled)
            np.testing.assert_allclose(ours.homogeneity_p_value[0], bd, rtol=1e-8, atol=1e-10)
            compared["homogeneity"] += 1
        else:
            assert np.isnan(ours.homogeneity_p_value[0])
    assert min(compared.values()) >= 100 and compared["odds"] >= 1_000, compared


def _breslow_day_tarone(tables: np.ndarray, ratio: float) -> float:
    """Breslow-Day/Tarone by hand: each stratum's quadratic solved by ``np.roots``."""
    from scipy.stats import chi2

    gaps, variances = [], []
    for (a, b), (c, d) in tables.astype(float):
        rows, column, n = a + b, a + c, a + b + c + d
        low, high = max(0.0, rows + column - n), min(rows, column)
        quadratic = [1 - ratio, ratio * (rows + column) + n - rows - column, -ratio * rows * column]
        roots = np.roots(quadratic) if ratio != 1 else [rows * column / n]
        e = next(float(np.real(r)) for r in roots if low - 1e-9 <= np.real(r) <= high + 1e-9)
        gaps.append(a - e)
        variances.append(
            1 / (1 / e + 1 / (column - e) + 1 / (rows - e) + 1 / (n - rows - column + e))
        )
    gap, variance = np.array(gaps), np.array(variances)
    statistic = (gap**2 / variance).sum() - gap.sum() ** 2 / variance.sum()
    return float(chi2.sf(statistic, len(tables) - 1))


def test_uninformative_strata_contribute_nothing() -> None:
    informative = np.array([[[10, 5], [4, 12]], [[3, 9], [8, 2]]])
    empty = np.array([[[0, 0], [7, 9]], [[6, 4], [0, 0]], [[5, 0], [6, 0]]])  # never/always
    alone, padded = _ours(informative), _ours(np.concatenate([informative, empty]))
    for field in ("odds_ratio", "ci_low", "ci_high", "statistic", "homogeneity_p_value"):
        np.testing.assert_array_equal(getattr(alone, field), getattr(padded, field))
    assert alone.strata.tolist() == padded.strata.tolist() == [2]


def test_cmh_p_values_that_underflow_still_rank() -> None:
    """Two overwhelming effects both give p = 0.0; the statistic and log p still order them."""
    t = stratified_tests([[9_000], [9_500]], [[10_000], [10_000]], [[10_000], [10_000]],
                         [[20_000], [20_000]])  # fmt: skip
    assert t.p_value.tolist() == [0.0, 0.0]
    assert t.statistic[1] > t.statistic[0] and t.log_p[1] < t.log_p[0] < -700
    assert np.isfinite(t.log_p).all()


def test_plans_needed_reaches_the_asked_power() -> None:
    """Simulate the two-proportion z-test at the planned size: about 80% power."""
    from scipy import stats

    alpha, share, p0, ratio, n = 0.001, 0.05, 0.5, 2.3, 1_000
    odds = p0 / (1 - p0) * ratio
    p1 = odds / (1 + odds)
    more = plans_needed([share * n], [share * n * p1], [n], [share * n * p1 + (1 - share) * n * p0],
                        [ratio], alpha)[0]  # fmt: skip
    total = int(n + more)
    rng = np.random.default_rng(3)
    with_it = rng.binomial(round(share * total), p1, size=4_000)
    without = rng.binomial(total - round(share * total), p0, size=4_000)
    n1, n0 = round(share * total), total - round(share * total)
    pooled = (with_it + without) / total
    z = (with_it / n1 - without / n0) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    power = np.mean(2 * stats.norm.sf(np.abs(z)) <= alpha)
    assert 0.76 <= power <= 0.84, (more, power)


@pytest.mark.parametrize(
    "ratio", [pytest.param(1.0, id="no-effect"), pytest.param(0.0, id="zero"),
              pytest.param(np.inf, id="infinite"), pytest.param(np.nan, id="unknown")],
)  # fmt: skip
def test_plans_needed_is_nan_without_a_finite_answer(ratio: float) -> None:
    assert np.isnan(plans_needed([50], [30], [1_000], [500], [ratio], 0.01)[0])


def test_low_n_rule() -> None:
    # 29 plans: too few; 50 plans at 50%: interval 37%-64% (27 points) too wide; 0 plans.
    low, high = wilson_interval([20, 25, 30, 0], [29, 50, 200, 0])
    assert (high - low)[1] > 0.25 and (high - low)[2] < 0.25
    assert low_n([29, 50, 200, 0], low, high).tolist() == [True, True, False, True]
