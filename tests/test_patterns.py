"""extract_successful_patterns: supports, tests and planted truth, sync and async."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control, fisher_exact

from metalearn import InvalidArgumentError, MetaLearningService, PatternReport
from metalearn._patterns import count_patterns
from metalearn.synthetic import PLANTED_PATTERNS, is_planted_related, planted_truth
from tests.conftest import END, TAU_BENCH

COLUMNS = [
    "pattern", "pattern_text", "length", "plans", "successes", "success_rate", "ci_low",
    "ci_high", "lift", "p_value", "mh_odds_ratio", "mh_ci_low", "mh_ci_high", "cmh_p_value",
    "homogeneity_p_value", "strata", "simpson", "q_value", "significant", "direction",
    "plans_needed", "explained_by", "finding",
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
    """Pooled (``stratify_by=None``): Fisher p-values and BH over them, as before."""
    report = tau.extract_successful_patterns_sync(
        time_range_days=None, max_length=3, min_support=3, stratify_by=None
    )
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
    assert (report.patterns["strata"] <= 1).all() and not report.patterns["simpson"].any()


def test_stratified_q_values_come_from_cmh(tau: MetaLearningService) -> None:
    report = tau.extract_successful_patterns_sync(time_range_days=None, max_length=3, min_support=3)
    rows = report.patterns
    q = false_discovery_control(rows["cmh_p_value"].fillna(1.0).to_numpy(), method="bh")
    np.testing.assert_allclose(rows["q_value"], q, rtol=1e-12)
    assert (rows["significant"] == (rows["q_value"] <= 0.05)).all()
    assert rows["cmh_p_value"].fillna(1.0).is_monotonic_increasing  # most significant first
    odds = rows["mh_odds_ratio"].fillna(rows["lift"])
    assert (rows["direction"] == np.where(odds > 1, "success", "failure")).all()
    pooled = np.where(rows["lift"] > 1, "success", "failure")
    assert (rows["simpson"] == (rows["significant"] & (pooled != rows["direction"]))).all()
    assert (rows.loc[rows["significant"], "plans_needed"] == 0).all()
    assert (rows["finding"] <= rows["significant"]).all()
    assert (rows.loc[rows["finding"], "explained_by"] == "").all()


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
    assert report.successful["mh_odds_ratio"].is_monotonic_decreasing
    assert report.failing["mh_odds_ratio"].is_monotonic_increasing
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


# -- stratified effects and findings ------------------------------------------------------


def _stratum_tables(tool: str) -> pd.DataFrame:
    """τ-bench by hand: per goal type, plans and successes with and without ``tool``."""
    plans = pd.read_csv(TAU_BENCH / "plans.csv")
    steps = pd.read_csv(TAU_BENCH / "steps.csv")
    using = set(steps.loc[steps["tool"] == tool, "plan_id"])
    frame = pd.DataFrame({
        "goal": plans["goal_type"].fillna("(none)"),
        "used": plans["plan_id"].isin(using),
        "won": plans["status"] == "succeeded",
    })  # fmt: skip
    return frame.groupby("goal").agg(
        n=("won", "size"), x=("used", "sum"), s=("won", "sum"),
        a=("won", lambda w: int((w & frame.loc[w.index, "used"]).sum())),
    )  # fmt: skip


def _by_hand(tables: pd.DataFrame) -> dict[str, float]:
    """Mantel-Haenszel, RBG, CMH and Breslow-Day/Tarone written out from their definitions."""
    from scipy.optimize import brentq
    from scipy.stats import chi2, norm

    rows = [r for r in tables.itertuples() if 0 < r.x < r.n and 0 < r.s < r.n]
    cells = [(r.a, r.x - r.a, r.s - r.a, r.n - r.x - r.s + r.a, r.n) for r in rows]
    big_r = sum(a * d / n for a, b, c, d, n in cells)
    big_s = sum(b * c / n for a, b, c, d, n in cells)
    odds = big_r / big_s
    pr = sum((a + d) / n * a * d / n for a, b, c, d, n in cells)
    ps_qr = sum(((a + d) * b * c + (b + c) * a * d) / n**2 for a, b, c, d, n in cells)
    qs = sum((b + c) / n * b * c / n for a, b, c, d, n in cells)
    figures = {"odds": odds, "strata": len(rows)}
    if 0 < odds < np.inf:
        se = np.sqrt(pr / (2 * big_r**2) + ps_qr / (2 * big_r * big_s) + qs / (2 * big_s**2))
        figures |= {"low": odds * np.exp(-norm.ppf(0.975) * se),
                    "high": odds * np.exp(norm.ppf(0.975) * se)}  # fmt: skip
        gaps, variances = [], []
        for r in rows:  # the expected cell under the common odds ratio, by root finding
            low, high = max(0, r.x + r.s - r.n), min(r.x, r.s)
            e = brentq(lambda t, r=r: t * (r.n - r.x - r.s + t) - odds * (r.x - t) * (r.s - t),
                       low, high)  # fmt: skip
            gaps.append(r.a - e)
            variances.append(
                1 / (1 / e + 1 / (r.x - e) + 1 / (r.s - e) + 1 / (r.n - r.x - r.s + e))
            )
        bd = sum(g * g / v for g, v in zip(gaps, variances, strict=True))
        bd -= sum(gaps) ** 2 / sum(variances)
        figures["homogeneity"] = chi2.sf(bd, len(rows) - 1)
    deviation = sum(r.a - r.x * r.s / r.n for r in rows)
    variance = sum(r.x * (r.n - r.x) * r.s * (r.n - r.s) / (r.n**2 * (r.n - 1)) for r in rows)
    figures["cmh"] = chi2.sf(deviation**2 / variance, 1)
    return figures


@pytest.mark.parametrize("tool", ["transfer_to_human_agents", "book_reservation"])
def test_tau_bench_stratified_figures_by_hand(tau: MetaLearningService, tool: str) -> None:
    report = tau.extract_successful_patterns_sync(time_range_days=None)
    row = report.patterns.set_index("pattern_text").loc[tool]
    expected = _by_hand(_stratum_tables(tool))
    assert row["strata"] == expected["strata"]
    assert row["mh_odds_ratio"] == pytest.approx(expected["odds"], rel=1e-10)
    assert row["cmh_p_value"] == pytest.approx(expected["cmh"], rel=1e-9)
    if "low" in expected:
        assert (row["mh_ci_low"], row["mh_ci_high"]) == pytest.approx(
            (expected["low"], expected["high"]), rel=1e-9)  # fmt: skip
        assert row["homogeneity_p_value"] == pytest.approx(expected["homogeneity"], rel=1e-7)
    else:  # an odds ratio of 0: no interval and no homogeneity test
        assert np.isnan(row["mh_ci_low"]) and np.isnan(row["homogeneity_p_value"])


def test_tau_bench_stratified_story(tau: MetaLearningService) -> None:
    """Pooled, transferring goes with success and booking with failure, both very clearly;
    within goal types the transfer effect shrinks and varies, and booking's is not
    significant."""
    report = tau.extract_successful_patterns_sync(time_range_days=None)
    rows = report.patterns.set_index("pattern_text")
    transfer, book = rows.loc["transfer_to_human_agents"], rows.loc["book_reservation"]
    assert transfer["p_value"] < 1e-5 and transfer["cmh_p_value"] > 1e-3
    assert transfer["homogeneity_p_value"] < 0.01  # the effect differs between goal types
    assert book["p_value"] < 1e-4 and not book["significant"] and book["q_value"] > 0.1
    assert report.findings["pattern_text"].tolist() == [
        "respond → respond → transfer_to_human_agents"
    ]
    assert transfer["explained_by"] == "respond → respond → transfer_to_human_agents"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetaLearningService]:
    """The history ``metalearn demo`` builds: 20,000 plans, seed 0."""
    from metalearn import HistoryStore
    from metalearn.synthetic import make_history

    path = tmp_path_factory.mktemp("demo") / "demo.db"
    with HistoryStore(f"sqlite:///{path}") as store:
        store.import_frames(*make_history(20_000, seed=0, end=END))
        with MetaLearningService(store, max_workers=1) as service:
            yield service


@pytest.mark.parametrize("history", ["demo", "synthetic"])
def test_findings_hold_the_planted_truth(history: str, request: pytest.FixtureRequest) -> None:
    service = request.getfixturevalue(history)
    report = service.extract_successful_patterns_sync(time_range_days=None)
    findings = report.findings.set_index("pattern")
    truth = planted_truth()
    for planted in truth[truth["finding"]].itertuples():
        assert planted.pattern in findings.index, planted.pattern_text
        assert findings.loc[[planted.pattern], "direction"].iloc[0] == planted.direction
    simpson = findings.loc[[("quick_answer",)]].iloc[0]
    assert simpson["simpson"] and simpson["lift"] > 1 and simpson["mh_odds_ratio"] < 1
    assert findings["simpson"].sum() == 1
    assert ("read_faq",) not in findings.index
    assert len(findings) <= 10, findings["pattern_text"].tolist()
    # (a) pooled it is very significant; within goal types it is not
    faq = report.patterns.set_index("pattern_text").loc["read_faq"]
    assert faq["p_value"] < 1e-10 and not faq["significant"] and faq["lift"] > 1.1
    pooled = service.extract_successful_patterns_sync(time_range_days=None, stratify_by=None)
    assert ("read_faq",) in set(pooled.findings["pattern"])


def test_findings_explain_the_ride_alongs(synthetic: MetaLearningService) -> None:
    report = synthetic.extract_successful_patterns_sync(time_range_days=None)
    rows = report.patterns
    planted_text = {" → ".join(p.pattern) for p in PLANTED_PATTERNS}
    explained = rows[rows["explained_by"] != ""]
    assert len(explained) > 100
    assert explained["explained_by"].isin(rows.loc[rows["finding"], "pattern_text"]).mean() > 0.9
    # every planted pattern's sub-sequences are explained by it
    for planted in PLANTED_PATTERNS:
        for size in range(1, len(planted.pattern)):
            part = rows[rows["pattern"] == planted.pattern[:size]]
            assert part["explained_by"].iloc[0] in planted_text


def test_stratify_by_agent(synthetic: MetaLearningService) -> None:
    report = synthetic.extract_successful_patterns_sync(time_range_days=None,
                                                        stratify_by="agent_id")  # fmt: skip
    assert report.stratify_by == "agent_id" and report.patterns["strata"].max() == 6
    assert {p.pattern for p in PLANTED_PATTERNS} <= set(report.findings["pattern"])


def test_pooled_figures_are_the_single_table(tau: MetaLearningService) -> None:
    report = tau.extract_successful_patterns_sync(time_range_days=None, stratify_by=None)
    row = report.patterns.set_index("pattern_text").loc["transfer_to_human_agents"]
    a, b, c, d = 35, 48 - 35, 84 - 35, 116 - 13
    assert row["mh_odds_ratio"] == pytest.approx(a * d / (b * c), rel=1e-12)
    assert row["strata"] == 1 and np.isnan(row["homogeneity_p_value"])


def test_plans_needed_for_rows_that_are_not_significant(tau: MetaLearningService) -> None:
    rows = tau.extract_successful_patterns_sync(time_range_days=None).patterns
    open_rows = rows[~rows["significant"]]
    known = open_rows["plans_needed"].dropna()
    assert len(known) > 20 and (known > 0).all()
    # the weaker the evidence at the same support, the more plans it needs
    odds = open_rows["mh_odds_ratio"]
    assert open_rows.loc[(odds == 0) | np.isinf(odds), "plans_needed"].isna().all()


def test_stratify_by_nonsense_is_a_typed_error(
    tau: MetaLearningService, call: Callable[..., Any]
) -> None:
    with pytest.raises(InvalidArgumentError, match='"goal_type", "agent_id" or None'):
        call(tau, "extract_successful_patterns", stratify_by="nonsense")


def test_plan_strata_are_put_in_seq_order_when_they_come_unordered() -> None:
    import pyarrow as pa

    from metalearn._patterns import _PlanStrata

    table = pa.table({"group_key": [None, None, None], "seq": [3, 1, 2],
                      "succeeded": [True, False, True], "stratum": ["b", None, "a"]})  # fmt: skip
    strata = _PlanStrata.read(table)
    assert strata.seq.tolist() == [1, 2, 3] and strata.succeeded.tolist() == [False, True, True]
    assert strata.n_strata == 3 and len(set(strata.stratum.tolist())) == 3  # None is a stratum
