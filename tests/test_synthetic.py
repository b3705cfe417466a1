"""make_history: shape, determinism, realism and the planted ground truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from metalearn._interchange import validate_frames
from metalearn.synthetic import (
    BACKGROUND_TOOLS,
    PLANTED_PATTERNS,
    PLANTED_TOOLS,
    is_planted_related,
    make_history,
    planted_patterns,
)

END = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def history() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_history(40_000, seed=5, end=END)


def contains(sequences: pd.Series, pattern: tuple[str, ...]) -> pd.Series:
    """Plain-pandas containment: the pattern as a contiguous run of whole tool names."""
    return ("|" + sequences + "|").str.contains("|" + "|".join(pattern) + "|", regex=False)


def tool_sequences(steps: pd.DataFrame) -> pd.Series:
    return steps.groupby("plan_id", sort=False)["tool"].agg("|".join)


def test_same_seed_and_end_give_the_same_history() -> None:
    first = make_history(2_000, seed=1, end=END)
    second = make_history(2_000, seed=1, end=END)
    other = make_history(2_000, seed=2, end=END)
    for a, b in zip(first, second, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert not first[1]["tool"].equals(other[1]["tool"])
    assert not first[0]["plan_id"].isin(other[0]["plan_id"]).any()  # ids carry the seed


def test_interchange_columns_and_validity(history: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    plans, steps = history
    assert plans.columns.tolist() == [
        "plan_id",
        "agent_id",
        "goal_type",
        "status",
        "started_at",
        "finished_at",
        "reward",
        "error",
    ]
    assert steps.columns.tolist() == [
        "plan_id",
        "step_index",
        "tool",
        "status",
        "duration_ms",
        "error",
    ]
    assert validate_frames(plans, steps).problems == []
    assert plans["plan_id"].is_unique


def test_realistic_ranges(history: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    plans, steps = history
    sizes = steps.groupby("plan_id").size()
    assert sizes.min() == 3 and sizes.max() == 17  # 3-12 background + 3 planted + 2 cases
    assert plans["finished_at"].is_monotonic_increasing
    assert plans["finished_at"].max() <= pd.Timestamp(END)
    assert plans["finished_at"].min() >= pd.Timestamp(END - timedelta(days=60))
    assert (plans["started_at"] <= plans["finished_at"]).all()
    assert 0.5 < (plans["status"] == "succeeded").mean() < 0.7
    assert plans["goal_type"].isna().mean() == pytest.approx(0.02, abs=0.005)
    status_share = steps["status"].value_counts(normalize=True)
    assert 0.02 < status_share["error"] < 0.1 and 0.01 < status_share["skipped"] < 0.1
    assert steps.loc[steps["status"] == "error", "error"].notna().all()
    assert steps.loc[steps["status"] != "error", "error"].isna().all()
    assert steps.loc[steps["status"] == "skipped", "duration_ms"].isna().all()
    assert (steps["duration_ms"].dropna() >= 0).all()
    failed = plans["status"] == "failed"
    assert plans.loc[failed, "error"].notna().all() and plans.loc[~failed, "error"].isna().all()


def test_agents_and_goal_types_differ(history: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    plans, _ = history
    success = plans["status"] == "succeeded"
    by_agent = success.groupby(plans["agent_id"]).mean()
    by_goal = success.groupby(plans["goal_type"]).mean()
    assert len(by_agent) == 6 and by_agent.max() - by_agent.min() > 0.2
    assert by_goal["lookup"] > by_goal["booking"] > by_goal["debugging"]


def test_planted_patterns_move_success_as_documented(
    history: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    plans, steps = history
    sequences = tool_sequences(steps).reindex(plans["plan_id"])
    success = (plans["status"] == "succeeded").to_numpy()
    for planted in PLANTED_PATTERNS:
        has = contains(sequences, planted.pattern).to_numpy()
        assert has.mean() == pytest.approx(planted.share, abs=0.01)
        gap = success[has].mean() - success[~has].mean()
        assert (gap > 0.1) if planted.direction == "success" else (gap < -0.1), planted


def test_background_sequences_carry_no_signal(
    history: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    plans, steps = history
    assert set(steps["tool"]) == set(BACKGROUND_TOOLS) | PLANTED_TOOLS
    sequences = tool_sequences(steps).reindex(plans["plan_id"])
    success = (plans["status"] == "succeeded").to_numpy()
    gaps = []
    for first in BACKGROUND_TOOLS[:6]:
        for second in BACKGROUND_TOOLS[:6]:
            has = contains(sequences, (first, second)).to_numpy()
            if has.sum() > 500:
                gaps.append(success[has].mean() - success[~has].mean())
    assert len(gaps) > 10
    assert np.abs(gaps).max() < 0.04  # vs gaps > 0.1 for planted patterns


def test_ground_truth_helpers() -> None:
    table = planted_patterns()
    assert table["pattern"].tolist() == [p.pattern for p in PLANTED_PATTERNS]
    assert set(table["direction"]) == {"success", "failure"}
    assert is_planted_related(("query_db", "dry_run")) and not is_planted_related(("query_db",))
    assert PLANTED_TOOLS.isdisjoint(BACKGROUND_TOOLS)


def test_default_end_is_todays_midnight() -> None:
    plans, _ = make_history(300, seed=0)
    midnight = pd.Timestamp.now(tz="UTC").normalize()
    assert plans["finished_at"].max() <= midnight
    assert plans["finished_at"].min() >= midnight - pd.Timedelta(days=60)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"n_plans": 0}, "n_plans must be >= 1, not 0", id="no-plans"),
        pytest.param({"n_agents": 0}, "n_agents must be >= 1, not 0", id="no-agents"),
        pytest.param({"end": datetime(2026, 1, 1)}, "end must be timezone-aware", id="naive-end"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_history(**kwargs)  # type: ignore[arg-type]


def test_many_agents_get_generated_names() -> None:
    plans, _ = make_history(2_000, n_agents=10, seed=0, end=END)
    assert plans["agent_id"].nunique() == 10 and "agent-09" in set(plans["agent_id"])
