"""extract_successful_patterns: supports, tests and planted truth, sync and async."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control, fisher_exact

from metalearn import HistoryStore, InvalidArgumentError, MetaLearningService, PatternReport, Plan
from metalearn._patterns import count_gapped_patterns, count_patterns
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


# -- patterns with gaps (max_gap) ---------------------------------------------------------


def _embedded(tools: list[int], max_gap: int, max_length: int) -> set[tuple[int, ...]]:
    """Every sequence a plan holds with at most ``max_gap`` steps between its tools."""
    found: set[tuple[int, ...]] = set()
    stack = [((tools[i],), i) for i in range(len(tools))]
    while stack:
        seq, last = stack.pop()
        found.add(seq)
        if len(seq) < max_length:
            ends = range(last + 1, min(len(tools), last + 2 + max_gap))
            stack += [((*seq, tools[i]), i) for i in ends]
    return found


def gapped_supports(
    plans: list[list[int]], succeeded: list[bool], max_gap: int, max_length: int
) -> dict[tuple[int, ...], tuple[int, int]]:
    """Every sequence with at most ``max_gap`` steps between consecutive tools, by brute
    force: (plans holding it, successful ones)."""
    support: Counter[tuple[int, ...]] = Counter()
    wins: Counter[tuple[int, ...]] = Counter()
    for tools, ok in zip(plans, succeeded, strict=True):
        found = _embedded(tools, max_gap, max_length)
        support.update(found)
        wins.update(found if ok else ())
    return {k: (n, wins[k]) for k, n in support.items()}


def supports(counts: list[Any]) -> dict[tuple[int, ...], tuple[int, int]]:
    return {
        tuple(row): (n, k)
        for c in counts
        for row, n, k in zip(c.tools.tolist(), c.plans.tolist(), c.successes.tolist(), strict=True)
    }


@pytest.mark.parametrize("max_gap", [0, 1, 3])
def test_gapped_counts_equal_a_brute_force_count(max_gap: int) -> None:
    rng = np.random.default_rng(max_gap)
    for _ in range(40):
        plans = [list(rng.integers(0, 4, rng.integers(1, 10))) for _ in range(rng.integers(1, 40))]
        succeeded = list(rng.random(len(plans)) < 0.5)
        plan = np.concatenate([[i] * len(t) for i, t in enumerate(plans)]).astype(np.int64)
        tool = np.concatenate(plans).astype(np.int64)
        counts = count_gapped_patterns(
            plan, tool, np.array(succeeded), 4, min_length=1, max_length=4, min_support=2,
            max_gap=max_gap,
        )  # fmt: skip
        got = supports(counts)
        want = gapped_supports(plans, succeeded, max_gap, 4)
        assert got == {k: v for k, v in want.items() if v[0] >= 2}
        if max_gap == 0:  # the contiguous counter agrees
            offset = np.concatenate([np.arange(len(t)) for t in plans]).astype(np.int64)
            plain = count_patterns(
                plan, tool, offset, np.array(succeeded), 4, min_length=1, max_length=4,
                min_support=2,
            )  # fmt: skip
            assert supports(plain) == got


def gap_history(n: int = 1_200, seed: int = 5) -> HistoryStore:
    """Plans whose success comes from ``validate_input``, any one step, then
    ``apply_change``: no contiguous sequence carries the effect (the middle step is drawn
    from eight tools), the gapped one does."""
    rng = np.random.default_rng(seed)
    fillers = [f"tool_{i}" for i in range(8)]
    store = HistoryStore("sqlite://")
    start = datetime(2026, 5, 1, tzinfo=UTC)
    plans = []
    for i in range(n):
        tools = list(rng.choice(fillers, size=rng.integers(2, 6)))
        planted = rng.random() < 0.4
        if planted:
            at = int(rng.integers(0, len(tools) + 1))
            tools[at:at] = ["validate_input", str(rng.choice(fillers)), "apply_change"]
        ok = rng.random() < (0.8 if planted else 0.4)
        plans.append(Plan(f"p{i}", "agent", "succeeded" if ok else "failed", start,
                          start + timedelta(seconds=len(tools)), goal_type=["a", "b"][i % 2],
                          steps=[{"tool": t} for t in tools]))  # fmt: skip
    store.record_plans(plans)
    return store


def test_a_gapped_pattern_is_found_where_contiguous_ones_are_not() -> None:
    with gap_history() as store, MetaLearningService(store) as service:
        plain = service.extract_successful_patterns_sync(time_range_days=None, max_length=3)
        gapped = service.extract_successful_patterns_sync(
            time_range_days=None, max_length=3, max_gap=1
        )
    assert ("validate_input", "apply_change") not in set(plain.patterns["pattern"])
    assert (plain.max_gap, gapped.max_gap) == (0, 1) and "max_gap=1" in repr(gapped)
    row = gapped.patterns.set_index("pattern_text").loc["validate_input → … → apply_change"]
    assert row["significant"] and row["direction"] == "success" and row["strata"] == 2
    assert "validate_input → … → apply_change" in set(gapped.successful["pattern_text"])
    # The contiguous report attributes the effect to its parts alone, if at all:
    assert not set(plain.successful["pattern_text"]) & {"validate_input → apply_change"}


def test_gapped_supports_in_a_report_equal_a_brute_force_count() -> None:
    with gap_history(300, seed=9) as store, MetaLearningService(store) as service:
        report = service.extract_successful_patterns_sync(
            time_range_days=None, max_length=3, max_gap=2, min_support=5, stratify_by=None
        )
        plans, steps = (frame for frame in store.plans_after(0).to_pandas())
    steps = steps.sort_values(["seq", "step_index"])
    tools = [group.tolist() for _, group in steps.groupby("seq", sort=True)["tool"]]
    ok = (plans.sort_values("seq")["status"] == "succeeded").tolist()
    want = gapped_supports(tools, ok, 2, 3)  # type: ignore[arg-type]
    got = dict(zip(report.patterns["pattern"],
                   zip(report.patterns["plans"], report.patterns["successes"], strict=True),
                   strict=True))  # fmt: skip
    assert got == {k: v for k, v in want.items() if v[0] >= 5}
    n_all, k_all = report.n_plans, report.n_successes
    fisher = [
        fisher_exact([[k, n - k], [k_all - k, n_all - n - k_all + k]])[1]
        for n, k in zip(report.patterns["plans"], report.patterns["successes"], strict=True)
    ]
    assert np.allclose(report.patterns["p_value"], fisher, rtol=1e-9)


def test_max_gap_out_of_range_is_a_typed_error(tau: MetaLearningService) -> None:
    with pytest.raises(InvalidArgumentError, match="max_gap must be an integer from 0"):
        tau.extract_successful_patterns_sync(max_gap=-1)
    with pytest.raises(InvalidArgumentError, match="to 10"):
        tau.extract_successful_patterns_sync(max_gap=11)
