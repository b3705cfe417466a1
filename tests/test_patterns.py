"""extract_successful_patterns: supports, tests and planted truth, sync and async."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control, fisher_exact

from metalearn import InvalidArgumentError, MetaLearningService, PatternReport
from metalearn._patterns import count_patterns
from metalearn.synthetic import PLANTED_PATTERNS, is_planted_related
from tests.conftest import TAU_BENCH

COLUMNS = [
    "pattern", "pattern_text", "length", "plans", "successes", "success_rate", "ci_low",
    "ci_high", "lift", "p_value", "q_value", "significant", "direction",
]  # fmt: skip


def plain_ngrams(max_length: int) -> dict[tuple[str, ...], tuple[int, int]]:
    """Supports of every contiguous n-gram in τ-bench, counted with plain Python/pandas."""
    plans = pd.read_csv(TAU_BENCH / "plans.csv")
    steps = pd.read_csv(TAU_BENCH / "steps.csv").sort_values(["plan_id", "step_index"])
    succeeded = dict(zip(plans["plan_id"], plans["status"] == "succeeded", strict=True))
    support: Counter[tuple[str, ...]] = Counter()
    wins: Counter[tuple[str, ...]] = Counter()
    for plan_id, tools in steps.groupby("plan_id")["tool"]:
        seq = tools.tolist()
        grams = {
            tuple(seq[i : i + n]) for n in range(1, max_length + 1) for i in range(len(seq) - n + 1)
        }
        support.update(grams)
        wins.update(grams if succeeded[plan_id] else ())
    return {gram: (support[gram], wins[gram]) for gram in support}


def test_tau_bench_bigrams(tau: MetaLearningService, call: Callable[..., Any]) -> None:
    report = call(tau, "extract_successful_patterns", time_range_days=None,
                  min_length=2, max_length=2, min_support=1)  # fmt: skip
    assert isinstance(report, PatternReport) and report.patterns.columns.tolist() == COLUMNS
    rows = report.patterns.set_index("pattern_text")
    first = rows.loc["get_reservation_details → respond"]
    assert first["plans"] == 139 and round(first["success_rate"], 4) == 0.4748
    second = rows.loc["respond → get_user_details"]
    assert second["plans"] == 111 and round(second["success_rate"], 4) == 0.3063
    assert (report.patterns["length"] == 2).all()
    assert (report.baseline_rate, report.n_plans) == (0.42, 200)


def test_every_row_matches_an_independent_count_and_scipy(tau: MetaLearningService) -> None:
    report = tau.extract_successful_patterns_sync(time_range_days=None, max_length=3, min_support=3)
    rows = report.patterns.set_index("pattern")
    expected = {g: v for g, v in plain_ngrams(3).items() if v[0] >= 3}
    assert set(rows.index) == set(expected)
    for pattern, row in rows.iterrows():
        plans, successes = expected[pattern]
        assert (row["plans"], row["successes"]) == (plans, successes), pattern
        table = [[successes, plans - successes], [84 - successes, 116 - plans + successes]]
        assert row["p_value"] == pytest.approx(fisher_exact(table).pvalue, rel=1e-9), pattern
        assert row["lift"] == pytest.approx((successes / plans) / 0.42, rel=1e-12)
        assert row["direction"] == ("success" if row["lift"] > 1 else "failure")
        assert row["length"] == len(pattern) and row["pattern_text"] == " → ".join(pattern)
    q = false_discovery_control(report.patterns["p_value"].to_numpy(), method="bh")
    np.testing.assert_allclose(report.patterns["q_value"], q, rtol=1e-12)
    assert (report.patterns["significant"] == (report.patterns["q_value"] <= 0.05)).all()
    assert report.patterns["p_value"].is_monotonic_increasing


def test_min_support_and_lengths_bound_the_rows(tau: MetaLearningService) -> None:
    report = tau.extract_successful_patterns_sync(
        time_range_days=None, min_length=2, max_length=4, min_support=25
    )
    assert report.patterns["plans"].min() >= 25
    assert set(report.patterns["length"]) <= {2, 3, 4}
    expected = {g for g, (plans, _) in plain_ngrams(4).items() if plans >= 25 and len(g) >= 2}
    assert set(report.patterns["pattern"]) == expected


def test_planted_patterns_are_recovered(
    synthetic: MetaLearningService, call: Callable[..., Any]
) -> None:
    report = call(synthetic, "extract_successful_patterns", time_range_days=None)
    rows = report.patterns.set_index("pattern")
    for planted in PLANTED_PATTERNS:
        row = rows.loc[[planted.pattern]].iloc[0]
        assert row["significant"] and row["direction"] == planted.direction, planted
    successful = set(report.successful["pattern"])
    failing = set(report.failing["pattern"])
    assert {p.pattern for p in PLANTED_PATTERNS if p.direction == "success"} <= successful
    assert {p.pattern for p in PLANTED_PATTERNS if p.direction == "failure"} <= failing
    assert report.successful["lift"].is_monotonic_decreasing
    assert report.failing["lift"].is_monotonic_increasing
    assert is_planted_related(report.successful["pattern"].iloc[0])
    assert is_planted_related(report.failing["pattern"].iloc[0])


def test_unrelated_patterns_are_rarely_significant(synthetic: MetaLearningService) -> None:
    """Sequences sharing no tool with a planted pattern have no effect by construction."""
    report = synthetic.extract_successful_patterns_sync(time_range_days=None, fdr=0.05)
    significant = report.patterns[report.patterns["significant"]]
    unrelated = ~significant["pattern"].map(is_planted_related)
    tested_unrelated = (~report.patterns["pattern"].map(is_planted_related)).sum()
    assert tested_unrelated > 1_000  # plenty of chances to be wrong
    assert len(significant) > 50
    assert unrelated.mean() <= 0.10  # false-discovery share near the 5% FDR


def test_repeated_sequence_counts_a_plan_once() -> None:
    # plan 0: a b a b (ab twice), plan 1: b a, plan 2: a b; tool ids a=0, b=1
    plan = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    tool = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    succeeded = np.array([True, False, True])
    offset = np.array([0, 1, 2, 3, 0, 1, 0, 1])
    counts = count_patterns(
        plan, tool, offset, succeeded, 2, min_length=1, max_length=3, min_support=1
    )
    found = {
        tuple(int(t) for t in grams): (int(n), int(k))
        for c in counts for grams, n, k in zip(c.tools, c.plans, c.successes, strict=True)
    }  # fmt: skip
    assert found == {
        (0,): (3, 2), (1,): (3, 2), (0, 1): (2, 2), (1, 0): (2, 1),
        (0, 1, 0): (1, 1), (1, 0, 1): (1, 1),
    }  # fmt: skip


def test_empty_window(synthetic: MetaLearningService, call: Callable[..., Any]) -> None:
    report = call(synthetic, "extract_successful_patterns", "nobody", time_range_days=None)
    assert report.patterns.columns.tolist() == COLUMNS and len(report.patterns) == 0
    assert report.n_plans == 0 and np.isnan(report.baseline_rate)
    assert len(report.successful) == 0 and len(report.failing) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"min_length": 0}, r"min_length must be an integer >= 1, not 0", id="min-length-0"
        ),
        pytest.param(
            {"min_length": 3, "max_length": 2},
            r"max_length must be an integer >= min_length \(3\), not 2",
            id="min-above-max",
        ),
        pytest.param(
            {"min_support": 0}, r"min_support must be an integer >= 1", id="min-support-0"
        ),
        pytest.param({"fdr": 0}, r"fdr must be a number in \(0, 1\], not 0", id="fdr-0"),
        pytest.param({"fdr": 1.5}, r"fdr must be a number in \(0, 1\], not 1.5", id="fdr-above-1"),
        pytest.param(
            {"time_range_days": -1}, r"time_range_days must be a number > 0", id="negative-days"
        ),
    ],
)
def test_bad_arguments(
    tau: MetaLearningService, call: Callable[..., Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        call(tau, "extract_successful_patterns", **kwargs)
