"""analyze_execution_patterns: exact figures on real and synthetic data, sync and async."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import binomtest

from metalearn import (
    ExecutionAnalysis,
    HistoryStore,
    InvalidArgumentError,
    MetalearnError,
    MetaLearningService,
    Plan,
)
from metalearn._warehouse import normalised_errors
from metalearn.synthetic import make_history
from tests.conftest import END, T0

AS_OF = END - timedelta(days=5)
RATES = ["plans", "successes", "success_rate", "ci_low", "ci_high", "low_n"]


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same synthetic history as the store holds, regenerated for pandas to check."""
    return make_history(20_000, seed=1, end=END)


def wilson(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return ci.low, ci.high


# -- τ-bench ---------------------------------------------------------------------------


def test_tau_bench_overall_and_goal_types(
    tau: MetaLearningService, call: Callable[..., Any]
) -> None:
    analysis = call(tau, "analyze_execution_patterns", time_range_days=None)
    assert isinstance(analysis, ExecutionAnalysis)
    overall = analysis.overall.iloc[0]
    assert (overall["plans"], overall["successes"], overall["success_rate"]) == (200, 84, 0.42)
    assert (overall["ci_low"], overall["ci_high"]) == pytest.approx(wilson(84, 200), rel=1e-12)
    goals = analysis.by_goal_type.set_index("goal_type")
    expected = {"airline:transfer": (16, 14), "airline:book": (16, 1), "airline:no_write": (64, 43)}
    for goal, (plans, successes) in expected.items():
        assert (goals.loc[goal, "plans"], goals.loc[goal, "successes"]) == (plans, successes)
        assert goals.loc[goal, "success_rate"] == successes / plans
        assert (goals.loc[goal, "ci_low"], goals.loc[goal, "ci_high"]) == pytest.approx(
            wilson(successes, plans), rel=1e-12
        )
    assert goals["plans"].sum() == 200 and analysis.by_agent["agent_id"].tolist() == [
        "gpt-4o-airline"
    ]


def test_tau_bench_tools_and_failures(tau: MetaLearningService) -> None:
    analysis = tau.analyze_execution_patterns_sync(time_range_days=None)
    tools = analysis.by_tool.set_index("tool")
    assert tools.loc["respond", "plans"] == 200 and tools.loc["respond", "calls"] == 1290
    flights = tools.loc["update_reservation_flights"]
    assert (flights["errors"], flights["calls"]) == (42, 104)
    assert flights["error_rate"] == 42 / 104
    assert tools["errors"].sum() == 73
    reasons = analysis.failure_reasons
    assert reasons["count"].sum() == 73
    assert set(reasons["tool"]) == {"book_reservation", "update_reservation_flights",
                                    "update_reservation_baggages"}  # fmt: skip
    assert reasons["count"].is_monotonic_decreasing
    assert analysis.by_day["day"].is_monotonic_increasing and analysis.by_day["plans"].sum() == 200


# -- independent pandas computation on synthetic history --------------------------------


def window_frames(
    frames: tuple[pd.DataFrame, pd.DataFrame], agent_id: str | None, days: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    plans, steps = frames
    finished = plans["finished_at"]
    keep = (finished > pd.Timestamp(AS_OF) - pd.Timedelta(days=days)) & (
        finished <= pd.Timestamp(AS_OF)
    )
    if agent_id is not None:
        keep &= plans["agent_id"] == agent_id
    chosen = plans[keep].assign(
        succeeded=lambda f: f["status"] == "succeeded",
        duration_s=lambda f: (f["finished_at"] - f["started_at"]).dt.total_seconds(),
    )
    chosen_steps = steps.merge(chosen[["plan_id", "succeeded"]], on="plan_id")
    return chosen, chosen_steps


def expected_groups(plans: pd.DataFrame, key: pd.Series) -> pd.DataFrame:
    grouped = plans.groupby(key)
    table = pd.DataFrame(
        {
            "plans": grouped.size(),
            "successes": grouped["succeeded"].sum(),
            "median_duration_s": grouped["duration_s"].median(),
            "p95_duration_s": grouped["duration_s"].quantile(0.95),
        }
    )
    table["success_rate"] = table["successes"] / table["plans"]
    bounds = [
        wilson(int(k), int(n)) for k, n in zip(table["successes"], table["plans"], strict=True)
    ]
    table["ci_low"], table["ci_high"] = zip(*bounds, strict=True)
    # the documented rule: under 30 plans, or an interval wider than 25 points
    table["low_n"] = (table["plans"] < 30) | (table["ci_high"] - table["ci_low"] > 0.25)
    return table


@pytest.mark.parametrize("agent_id", [None, "support-bot"])
def test_matches_pandas_on_synthetic_history(
    synthetic: MetaLearningService,
    frames: tuple[pd.DataFrame, pd.DataFrame],
    call: Callable[..., Any],
    agent_id: str | None,
) -> None:
    analysis = call(
        synthetic, "analyze_execution_patterns", agent_id, time_range_days=20, as_of=AS_OF
    )
    plans, steps = window_frames(frames, agent_id, 20)
    assert 1_000 < len(plans) < 8_000

    overall = expected_groups(plans, pd.Series("all", index=plans.index)).iloc[0]
    got = analysis.overall.iloc[0]
    for column in analysis.overall.columns:
        assert got[column] == pytest.approx(overall[column], rel=1e-9), column

    for name, key in [("by_agent", plans["agent_id"]),
                      ("by_goal_type", plans["goal_type"].fillna("(none)"))]:  # fmt: skip
        table = getattr(analysis, name).set_index(
            name.removeprefix("by_").replace("agent", "agent_id")
        )
        want = expected_groups(plans, key).loc[table.index, table.columns]
        pd.testing.assert_frame_equal(table, want, check_dtype=False, check_names=False, rtol=1e-9)
        assert table["plans"].is_monotonic_decreasing

    tools = analysis.by_tool.set_index("tool")
    grouped = steps.groupby("tool")
    assert dict(tools["calls"]) == dict(grouped.size())
    assert dict(tools["errors"]) == dict(grouped["status"].apply(lambda s: (s == "error").sum()))
    assert dict(tools["plans"]) == dict(grouped["plan_id"].nunique())
    successes = steps[steps["succeeded"]].groupby("tool")["plan_id"].nunique()
    assert dict(tools["successes"]) == dict(successes)
    np.testing.assert_allclose(
        tools["median_duration_ms"], grouped["duration_ms"].median()[tools.index]
    )
    np.testing.assert_allclose(
        tools["p95_duration_ms"], grouped["duration_ms"].quantile(0.95)[tools.index]
    )

    days = plans.groupby(plans["finished_at"].dt.date)["succeeded"].agg(["size", "sum"])
    assert analysis.by_day["day"].tolist() == days.index.tolist()
    assert analysis.by_day["plans"].tolist() == days["size"].tolist()
    assert analysis.by_day["successes"].tolist() == days["sum"].tolist()


def test_whole_history_and_default_window(synthetic: MetaLearningService) -> None:
    everything = synthetic.analyze_execution_patterns_sync(time_range_days=None)
    assert everything.n_plans == 20_000 and everything.through_seq == 20_000
    recent = synthetic.analyze_execution_patterns_sync(as_of=END)  # default: 30 days
    assert 8_000 < recent.n_plans < 12_000


def test_columns_are_exactly_as_documented(synthetic: MetaLearningService) -> None:
    analysis = synthetic.analyze_execution_patterns_sync(time_range_days=None)
    plan_columns = [*RATES, "median_duration_s", "p95_duration_s"]
    assert analysis.overall.columns.tolist() == plan_columns
    assert analysis.by_agent.columns.tolist() == ["agent_id", *plan_columns]
    assert analysis.by_goal_type.columns.tolist() == ["goal_type", *plan_columns]
    assert analysis.by_tool.columns.tolist() == [
        "tool", "calls", "errors", "error_rate", *RATES, "median_duration_ms", "p95_duration_ms"
    ]  # fmt: skip
    assert analysis.by_day.columns.tolist() == ["day", *RATES]
    assert analysis.failure_reasons.columns.tolist() == ["tool", "error", "count", "plans"]
    assert "(none)" in set(analysis.by_goal_type["goal_type"])


def test_low_n_marks_the_rates_nobody_should_act_on(tau: MetaLearningService) -> None:
    """τ-bench goal types: 12 to 64 plans; only the two largest have intervals <= 25 points."""
    goals = tau.analyze_execution_patterns_sync(time_range_days=None).by_goal_type
    width = goals["ci_high"] - goals["ci_low"]
    assert (goals["low_n"] == ((goals["plans"] < 30) | (width > 0.25))).all()
    assert goals.loc[~goals["low_n"], "goal_type"].tolist() == [
        "airline:no_write",
        "airline:modify",
    ]
    days = tau.analyze_execution_patterns_sync(time_range_days=None).by_day
    assert days["low_n"].all()  # a handful of synthetic-time runs a day


# -- failure reasons -------------------------------------------------------------------


def failing_plan(plan_id: str, tool: str, error: str | None) -> Plan:
    return Plan(plan_id, "agent", "failed", T0, T0 + timedelta(seconds=1),
                steps=[{"tool": tool, "status": "error", "error": error}])  # fmt: skip


@pytest.fixture
def error_service(sqlite_store: HistoryStore) -> Iterator[MetaLearningService]:
    errors = [
        ("fetch", "TimeoutError: fetch did not answer within 812 ms"),
        ("fetch", "TimeoutError: fetch did not answer within 90 ms"),
        ("fetch", "TimeoutError: fetch did not answer within 3.5 ms"),
        ("api", "HTTPError 503: upstream 'svc-52' is unavailable"),
        ("api", 'HTTPError 503: upstream "billing" is unavailable'),
        ("api", "order 6f1c2a9e-0b7d-4c1e-9a3f-2d5e8b7c6a10 not found"),
        ("api", "order 0d3e4f5a-1b2c-4d5e-8f90-a1b2c3d4e5f6 not found"),
        ("db", "user u-48213 has no row (request req_33080)"),
        ("db", "user u-7 has no row (request req_1)"),
        ("queue", "  queue\tfull:\n\n  retry   later "),
        ("queue", "queue full: retry later"),
        ("queue", None),
    ]
    for i, (tool, text) in enumerate(errors):
        sqlite_store.record_plan(failing_plan(f"p{i}", tool, text))
    with MetaLearningService(sqlite_store, max_workers=1) as service:
        yield service


def test_failure_reasons_group_normalised_errors(error_service: MetaLearningService) -> None:
    reasons = error_service.analyze_execution_patterns_sync(
        time_range_days=None, as_of=END
    ).failure_reasons
    assert reasons.to_dict("records") == [
        {
            "tool": "fetch",
            "error": "TimeoutError: fetch did not answer within <n> ms",
            "count": 3,
            "plans": 3,
        },
        {
            "tool": "api",
            "error": "HTTPError <n>: upstream <str> is unavailable",
            "count": 2,
            "plans": 2,
        },
        {"tool": "api", "error": "order <id> not found", "count": 2, "plans": 2},
        {"tool": "db", "error": "user <id> has no row (request <id>)", "count": 2, "plans": 2},
        {"tool": "queue", "error": "queue full: retry later", "count": 2, "plans": 2},
        {"tool": "queue", "error": "(no message)", "count": 1, "plans": 1},
    ]


@pytest.mark.parametrize(
    "text",
    [
        "a  b",
        "a\tb",
        " a \r\n b ",
        "a\fb\n",
        "\t\t",
        "x  'q  1'  y",
        "id-9   \n\t 4.5 done",
        "plain",
    ],
)
def test_normalised_errors_agree_with_python_regexes(text: str) -> None:
    """Independent computation: Python's re, with the masks applied in the same order."""
    expected = text
    for pattern, mask in [
        (r"'[^']*'|\"[^\"]*\"", "<str>"),
        (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<id>"),
        (r"\b(?:[A-Za-z_]+[-_]?[0-9]|[0-9]+[A-Za-z_])[A-Za-z0-9_-]*", "<id>"),
        (r"[0-9]+(?:\.[0-9]+)?", "<n>"),
        (r"\s+", " "),
    ]:
        expected = re.sub(pattern, mask, expected)
    got = normalised_errors(pa.array([text, None], pa.string())).to_pylist()
    assert got == [expected.strip(" "), "(no message)"]


# -- empty windows and bad arguments -----------------------------------------------------


def test_empty_window_has_columns_and_no_rows(
    synthetic: MetaLearningService, call: Callable[..., Any]
) -> None:
    analysis = call(synthetic, "analyze_execution_patterns", "no-such-agent", time_range_days=None)
    assert analysis.n_plans == 0 and np.isnan(analysis.success_rate)
    assert analysis.overall[["plans", "successes"]].iloc[0].tolist() == [0, 0]
    assert (
        analysis.overall[["success_rate", "ci_low", "ci_high", "median_duration_s"]]
        .isna()
        .all(axis=None)
    )
    for name in ("by_agent", "by_goal_type", "by_tool", "by_day", "failure_reasons"):
        assert len(getattr(analysis, name)) == 0, name
    before = synthetic.analyze_execution_patterns_sync(
        as_of=datetime(2020, 1, 1, tzinfo=END.tzinfo)
    )
    assert before.n_plans == 0 and len(before.by_day) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"time_range_days": 0}, r"time_range_days must be a number > 0, or None", id="zero-days"
        ),
        pytest.param(
            {"time_range_days": -3}, r"time_range_days must be a number > 0", id="negative-days"
        ),
        pytest.param(
            {"time_range_days": float("nan")},
            r"time_range_days must be a number > 0",
            id="nan-days",
        ),
        pytest.param(
            {"time_range_days": True}, r"time_range_days must be a number > 0", id="bool-days"
        ),
        pytest.param(
            {"agent_id": ""}, r"agent_id must be a non-empty string or None", id="empty-agent"
        ),
        pytest.param(
            {"as_of": datetime(2026, 1, 1)},
            r"as_of must be a timezone-aware datetime",
            id="naive-as-of",
        ),
        pytest.param(
            {"time_range_days": 1e12}, r"does not fit in the calendar", id="days-past-year-1"
        ),
        pytest.param(
            {"as_of": datetime(1, 1, 2, tzinfo=timezone(timedelta(hours=3)))},
            r"does not fit in the calendar",
            id="as-of-near-year-1",
        ),
    ],
)
def test_bad_arguments_are_typed_errors(
    synthetic: MetaLearningService, call: Callable[..., Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as caught:
        call(synthetic, "analyze_execution_patterns", **kwargs)
    assert isinstance(caught.value, MetalearnError) and isinstance(caught.value, ValueError)
