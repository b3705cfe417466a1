"""Statistics against scipy's reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, fisher_exact

from metalearn._stats import benjamini_hochberg, fisher_exact_two_sided, wilson_interval


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
