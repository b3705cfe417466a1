"""Change points: a planted change is found, the p-value is valid for "anywhere"."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from metalearn import ChangeReport, HistoryStore, InvalidArgumentError, MetaLearningService
from metalearn._changes import min_segment
from metalearn._results import CHANGE_COLUMNS, CHANGE_FILES
from metalearn._stats import change_point_test
from metalearn.plots import plot_change, save_plots
from metalearn.synthetic import PlantedChange, make_history
from tests.conftest import END

# -- the test statistic and its p-value, against exact enumeration --------------------


def split_scores(ordered: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """|pooled two-proportion z| of before/after at each split in ``edges`` (last axis: plans)."""
    n, total = ordered.shape[-1], ordered.sum(axis=-1, keepdims=True)
    before = np.cumsum(ordered, axis=-1)[..., edges - 1]
    rate_before, rate_after = before / edges, (total - before) / (n - edges)
    pooled = total / n
    return np.abs(rate_before - rate_after) / np.sqrt(
        pooled * (1 - pooled) * (1 / edges + 1 / (n - edges))
    )


def exact_p_value(outcomes: np.ndarray, edges: np.ndarray) -> float:
    """P(max score >= observed) over every arrangement of the outcomes (all equally likely)."""
    n, k = len(outcomes), int(outcomes.sum())
    chosen = np.array(list(itertools.combinations(range(n), k)))
    arrangements = np.zeros((len(chosen), n))
    np.put_along_axis(arrangements, chosen, 1.0, axis=1)
    observed = split_scores(outcomes[None, :].astype(float), edges).max()
    return float(np.mean(split_scores(arrangements, edges).max(axis=1) >= observed - 1e-9))


@pytest.mark.parametrize("bin_size", [1, 2], ids=["plan-by-plan", "bins-of-two"])
def test_the_permutation_p_value_matches_exact_enumeration(bin_size: int) -> None:
    outcomes = np.array([1] * 5 + [0] * 7 + [1, 0, 0, 0, 0, 0] + [0] * 6)  # 24 plans, 6 won
    sizes = np.full(24 // bin_size, bin_size)
    edges = np.arange(bin_size, 24, bin_size)
    edges = edges[(edges >= 8) & (24 - edges >= 8)]  # what min_segment=8 allows
    counts = outcomes.reshape(-1, bin_size).sum(axis=1)
    found = change_point_test(sizes, counts, min_segment=8, rng=np.random.default_rng(1),
                              permutations=19_999, stop_after=None)  # fmt: skip
    exact = exact_p_value(outcomes, edges)
    assert 0.01 < exact < 0.5  # a case where the p-value is neither trivial nor 1
    assert abs(found.p_value - exact) < 0.012  # Monte Carlo error ~0.003 at 20,000
    sequential = [  # stopping after 20 as extreme: unbiased for 1/p, so compare 1/p
        change_point_test(sizes, counts, min_segment=8, rng=np.random.default_rng(seed)).p_value
        for seed in range(40)
    ]
    assert abs(np.mean(1 / np.array(sequential)) * exact - 1) < 0.1
    scores = split_scores(outcomes[None, :].astype(float), edges)[0]
    assert found.split is not None and found.split * bin_size == edges[np.argmax(scores)]


def test_the_naive_p_value_of_the_best_split_would_be_far_too_small() -> None:
    from scipy import stats

    rng = np.random.default_rng(7)
    naive, ours = [], []
    for _ in range(200):
        outcomes = (rng.random(300) < 0.6).astype(int)
        edges = np.arange(10, 291)
        best = split_scores(outcomes[None, :].astype(float), edges).max()
        naive.append(2 * stats.norm.sf(best))
        ours.append(change_point_test(np.ones(300), outcomes, min_segment=10, rng=rng,
                                      permutations=199).p_value)  # fmt: skip
    assert np.mean(np.array(naive) < 0.05) > 0.4  # what testing the best split alone reports
    assert np.mean(np.array(ours) < 0.05) <= 0.08


def test_nothing_to_split() -> None:
    rng = np.random.default_rng(0)
    assert change_point_test(np.ones(50), np.ones(50), min_segment=10, rng=rng).p_value == 1.0
    none = change_point_test(np.ones(15), np.arange(15) % 2, min_segment=10, rng=rng)
    assert (none.split, none.p_value) == (None, 1.0)


# -- a planted change in a synthetic history ------------------------------------------

CHANGED_AT = END - timedelta(days=25, hours=7)


@pytest.fixture(scope="module")
def changed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MetaLearningService, Any]]:
    """2,400 plans of 6 agents (about 400 each, so one plan per bin); support-bot drops."""
    drop = PlantedChange("support-bot", CHANGED_AT, log_odds=-2.0)
    plans, steps = make_history(2_400, seed=11, end=END, change=drop)
    path = tmp_path_factory.mktemp("changed") / "history.db"
    with HistoryStore(f"sqlite:///{path}") as store:
        store.import_frames(plans, steps)
        with MetaLearningService(store) as service:
            yield service, (plans, steps)


def test_a_planted_change_is_found_within_a_day_and_only_there(
    changed: tuple[MetaLearningService, Any], call: Callable[..., Any]
) -> None:
    service, _ = changed
    report = call(service, "detect_changes")
    assert isinstance(report, ChangeReport) and list(report.changes.columns) == CHANGE_COLUMNS
    found = report.significant
    assert found["group"].tolist() == ["support-bot"]
    row = found.iloc[0]
    assert abs(row["changed_at"] - pd.Timestamp(CHANGED_AT)) <= pd.Timedelta(days=1)
    assert row["rate_before"] - row["rate_after"] > 0.3 and row["p_value"] == 0.001
    assert len(report.changes) == 6 and (report.changes["by"] == "agent_id").all()
    again = service.detect_changes_sync()
    pd.testing.assert_frame_equal(again.changes, report.changes)  # seeded: reproducible


def brute_force_split(finished: pd.Series, succeeded: pd.Series) -> dict[str, Any]:
    """The best split of one group's plans, computed directly: plans in finish order, cut
    only between the 500 equal slices of the group's time span (as the report counts them)."""
    order = np.argsort(finished.to_numpy(), kind="stable")
    outcomes = succeeded.to_numpy()[order].astype(float)
    micros = (finished.iloc[order] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "us")
    micros = micros.to_numpy().astype(np.int64)
    slices = (micros - micros[0]) * 500 // (micros[-1] - micros[0] + 1)
    n = len(outcomes)
    edges = np.flatnonzero(np.diff(slices)) + 1  # positions where a new slice starts
    edges = edges[(edges >= min_segment(n)) & (n - edges >= min_segment(n))]
    split = int(edges[np.argmax(split_scores(outcomes[None, :], edges)[0])])
    return {"changed_at": finished.iloc[order].iloc[split], "plans_before": split,
            "plans_after": n - split, "rate_before": outcomes[:split].mean(),
            "rate_after": outcomes[split:].mean()}  # fmt: skip


def test_every_groups_split_equals_a_direct_computation(
    changed: tuple[MetaLearningService, Any],
) -> None:
    service, (plans, _) = changed
    succeeded = plans["status"] == "succeeded"
    groups = {
        "agent_id": plans.groupby("agent_id").indices,
        "goal_type": plans.groupby(plans["goal_type"].fillna("(none)")).indices,
    }
    for by, indices in groups.items():
        report = service.detect_changes_sync(by, min_plans=200)
        assert set(report.changes["group"]) == {g for g, i in indices.items() if len(i) >= 200}
        for row in report.changes.itertuples():
            at = indices[row.group]
            want = brute_force_split(plans["finished_at"].iloc[at], succeeded.iloc[at])
            assert row.changed_at == want.pop("changed_at"), (by, row.group)
            assert {k: getattr(row, k) for k in want} == pytest.approx(want), (by, row.group)


def test_tool_groups_are_the_plans_that_call_the_tool(
    changed: tuple[MetaLearningService, Any],
) -> None:
    service, (_, steps) = changed
    report = service.detect_changes_sync("tool", min_plans=300)
    users = steps.groupby("tool")["plan_id"].nunique()
    users = users[users >= 300].to_dict()
    totals = report.changes["plans_before"] + report.changes["plans_after"]
    assert dict(zip(report.changes["group"], totals, strict=True)) == users
    assert report.bins.groupby("group")["plans"].sum().to_dict() == users


def test_without_a_change_at_most_the_fdr_of_groups_is_significant(tmp_path: Path) -> None:
    """203 groups of a history without change: 176 agents of ~250 plans, goal types, tools."""
    plans, steps = make_history(44_000, n_agents=176, seed=12, end=END)
    with HistoryStore(f"sqlite:///{tmp_path / 'null.db'}") as store:
        store.import_frames(plans, steps)
        with MetaLearningService(store) as service:
            reports = [service.detect_changes_sync(by, permutations=199)
                       for by in ("agent_id", "goal_type", "tool")]  # fmt: skip
    changes = pd.concat([r.changes for r in reports])
    assert len(changes) >= 200
    assert changes["significant"].mean() <= 0.08
    assert 0.01 <= (changes["p_value"] < 0.05).mean() <= 0.08  # valid, and not blind


def test_a_change_report_writes_csv_and_html(
    changed: tuple[MetaLearningService, Any], tmp_path: Path
) -> None:
    report = changed[0].detect_changes_sync("goal_type")
    paths = report.to_csv(tmp_path)
    assert [p.name for p in paths] == list(CHANGE_FILES)
    back = pd.read_csv(paths[0])
    assert list(back.columns) == CHANGE_COLUMNS and len(back) == len(report.changes)
    assert back["changed_at"].str.endswith("Z").all()
    assert repr(report).startswith("<ChangeReport by=goal_type window=all groups=")
    assert "change points by goal_type" in report._repr_html_()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"by": "day"}, r"\['agent_id', 'goal_type', 'tool'\], not 'day'", id="by"),
        pytest.param({"min_plans": 1}, "min_plans", id="min-plans"),
        pytest.param({"fdr": 0}, "fdr", id="fdr"),
        pytest.param({"permutations": 0}, "permutations", id="permutations"),
        pytest.param({"time_range_days": 0}, "time_range_days", id="window"),
    ],
)
def test_bad_arguments_raise_invalid_argument_error(
    changed: tuple[MetaLearningService, Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        changed[0].detect_changes_sync(**kwargs)


def test_groups_below_min_plans_and_empty_windows(changed: tuple[MetaLearningService, Any]) -> None:
    service, _ = changed
    assert service.detect_changes_sync(min_plans=10_000).changes.empty
    report = service.detect_changes_sync(time_range_days=1, as_of=END - timedelta(days=90))
    assert report.changes.empty and list(report.changes.columns) == CHANGE_COLUMNS


def test_the_change_plot_draws_the_rate_over_time_and_the_change(
    changed: tuple[MetaLearningService, Any], tmp_path: Path
) -> None:
    report = changed[0].detect_changes_sync()
    ax = report.plot(ax=Figure().subplots())
    assert ax.get_title().startswith("Success rate of support-bot over time\n")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[-1].startswith("change: 2026-") and "q=0.006" in legend[-1]
    assert 40 <= len(ax.lines[0].get_xdata()) <= 60  # bins merged into about 60 points
    flat = plot_change(report, "booking-agent", ax=Figure().subplots())
    assert "not significant" in [t.get_text() for t in flat.get_legend().get_texts()][-1]
    missing = plot_change(report, "nobody", ax=Figure().subplots())
    assert "no agent_id 'nobody' with >= 200 plans" in missing.texts[0].get_text()
    assert [p.name for p in save_plots(report, tmp_path)] == ["change_by_agent_id.png"]
