"""The shared aggregations (metalearn._pattern_sql, metalearn._hint_sql) run on DuckDB give
exactly the reports of the numpy fast paths: the parity that lets the DuckDB default keep
its fast paths while Spark runs the aggregations (issue 16, point 2).

Equal means equal: every column of the pattern table, bit for bit, in the same row order
(counts, rates, intervals, p- and q-values, MH/CMH figures, findings, explained_by).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from metalearn import HistoryStore, MetaLearningService
from metalearn._errors import InvalidArgumentError
from metalearn._hint_sql import hint_table_on_engine, next_step_hints_on_engine
from metalearn._hints import hint_tables, next_step_hints
from metalearn._pattern_sql import extract_on_engine
from metalearn._patterns import extract
from metalearn._queries import HintOptions, PatternOptions, Window
from tests.conftest import END

OPTIONS = [
    pytest.param({}, id="defaults"),
    pytest.param({"stratify_by": None}, id="pooled"),
    pytest.param({"stratify_by": "agent_id"}, id="by-agent"),
    pytest.param({"max_gap": 2}, id="gaps"),
    pytest.param({"min_length": 2, "max_length": 5, "min_support": 40}, id="long"),
]
WHOLE = (None, None, None)
WINDOWS = [
    pytest.param(WHOLE, id="whole-history"),
    pytest.param(("support-bot", 20, END), id="one-agent-20-days"),
]


def both(service: MetaLearningService, window: Window, **options: Any) -> tuple[Any, Any]:
    built = PatternOptions.build(**{"min_length": 1, "max_length": 4, "min_support": 20,
                                    "fdr": 0.05, **options})  # fmt: skip
    service.warehouse.refresh()
    with service.warehouse.snapshot() as snapshot:
        return extract(snapshot, window, built), extract_on_engine(snapshot, window, built)


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("window", WINDOWS)
def test_engine_counts_equal_the_numpy_path(
    synthetic: MetaLearningService, options: dict[str, Any], window: tuple[Any, Any, Any]
) -> None:
    fast, shared = both(synthetic, Window.build(*window), **options)
    assert len(fast.patterns) > 50 and fast.findings.shape[0] >= 2  # something to compare
    pd.testing.assert_frame_equal(fast.patterns, shared.patterns, check_exact=True)
    assert (fast.n_plans, fast.n_successes) == (shared.n_plans, shared.n_successes)
    assert shared.options == fast.options and shared.through_seq == fast.through_seq


@pytest.mark.parametrize("options", OPTIONS[:4])
def test_engine_counts_equal_the_numpy_path_on_tau_bench(
    tau: MetaLearningService, options: dict[str, Any]
) -> None:
    fast, shared = both(tau, Window.build(None, None, None), min_support=5, **options)
    assert len(fast.patterns) > 50
    pd.testing.assert_frame_equal(fast.patterns, shared.patterns, check_exact=True)


def test_plans_without_steps_and_an_empty_window_count_the_same() -> None:
    """Plans without steps count in the strata (and signature 0) on both paths."""
    from metalearn.synthetic import make_history

    plans, steps = make_history(3_000, seed=9, end=END)
    stepless = set(plans["plan_id"].iloc[::7])  # every 7th plan loses its steps
    steps = steps[~steps["plan_id"].isin(stepless)]
    with HistoryStore("sqlite://") as store, MetaLearningService(store) as service:
        store.import_frames(plans, steps)
        fast, shared = both(service, Window.build(None, None, None), min_support=10)
        pd.testing.assert_frame_equal(fast.patterns, shared.patterns, check_exact=True)
        assert shared.n_plans == 3_000 and shared.findings.shape[0] >= 1
        before = Window.build(None, 1, datetime(2000, 1, 1, tzinfo=UTC))  # no plans at all
        fast, shared = both(service, before)
        assert shared.patterns.empty and fast.patterns.empty and shared.n_plans == 0
        pd.testing.assert_frame_equal(fast.patterns, shared.patterns, check_exact=True)


def test_engine_counting_takes_one_group(synthetic: MetaLearningService) -> None:
    window = Window.build(None, None, None, agents=("support-bot",))
    with (
        synthetic.warehouse.snapshot() as snapshot,
        pytest.raises(InvalidArgumentError, match="takes one group"),
    ):
        extract_on_engine(snapshot, window, PatternOptions.build(
            min_length=1, max_length=2, min_support=20, fdr=0.05))  # fmt: skip


def test_the_engine_tables_are_dropped_after_the_report(synthetic: MetaLearningService) -> None:
    window = Window.build(None, None, None)
    options = PatternOptions.build(min_length=1, max_length=3, min_support=20, fdr=0.05)
    with synthetic.warehouse.snapshot() as snapshot:
        extract_on_engine(snapshot, window, options)
        left = snapshot.arrow("SELECT table_name FROM duckdb_tables() WHERE temporary")
        assert left.num_rows == 0, left.column("table_name").to_pylist()
        hint_table_on_engine(snapshot, window, HintOptions.build(max_prefix=3, min_support=10,
                                                                 fdr=0.05))  # fmt: skip
        left = snapshot.arrow("SELECT table_name FROM duckdb_tables() WHERE temporary")
        assert left.num_rows == 0, left.column("table_name").to_pylist()


HINTS = [
    pytest.param(None, 3, 10, id="all-goals"),
    pytest.param("refund", 2, 5, id="one-goal"),
    pytest.param("(none)", 3, 1, id="no-goal-support-1"),
    pytest.param("no such goal", 3, 10, id="no-plans"),
]


@pytest.mark.parametrize(("goal_type", "max_prefix", "min_support"), HINTS)
@pytest.mark.parametrize("window", WINDOWS)
def test_engine_hint_tables_equal_the_numpy_path(
    synthetic: MetaLearningService,
    goal_type: str | None,
    max_prefix: int,
    min_support: int,
    window: tuple[Any, Any, Any],
) -> None:
    options = HintOptions.build(max_prefix=max_prefix, min_support=min_support, fdr=0.05)
    built = Window.build(*window)
    with synthetic.warehouse.snapshot() as snapshot:
        fast = hint_tables(snapshot, built, options, goal_type)[None]
        shared = hint_table_on_engine(snapshot, built, options, goal_type)
    pd.testing.assert_frame_equal(fast.hints, shared.hints, check_exact=True)
    assert (fast.n_plans, fast.n_successes) == (shared.n_plans, shared.n_successes)
    if goal_type is None or window == WHOLE:
        assert (len(fast.hints) > 10) == (goal_type != "no such goal")


@pytest.mark.parametrize(
    "prefix", [(), ("validate_input",), ("ask_clarification", "confirm_goal"), ("unknown",)]
)
def test_engine_next_step_hints_equal_the_numpy_path(
    synthetic: MetaLearningService, prefix: tuple[str, ...]
) -> None:
    options = HintOptions.build(max_prefix=1, min_support=10, fdr=0.05)
    window = Window.build(None, None, None)
    with synthetic.warehouse.snapshot() as snapshot:
        fast = next_step_hints(snapshot, window, prefix, options)
        shared = next_step_hints_on_engine(snapshot, window, prefix, options)
    pd.testing.assert_frame_equal(fast, shared, check_exact=True)
    assert len(fast) > 0 or prefix == ("unknown",)


def test_hints_count_plans_without_steps() -> None:
    from metalearn.synthetic import make_history

    plans, steps = make_history(3_000, seed=4, end=END)
    steps = steps[~steps["plan_id"].isin(set(plans["plan_id"].iloc[::5]))]
    options = HintOptions.build(max_prefix=2, min_support=10, fdr=0.05)
    with HistoryStore("sqlite://") as store, MetaLearningService(store) as service:
        store.import_frames(plans, steps)
        service.warehouse.refresh()
        window = Window.build(None, None, None)
        with service.warehouse.snapshot() as snapshot:
            fast = hint_tables(snapshot, window, options)[None]
            shared = hint_table_on_engine(snapshot, window, options)
    pd.testing.assert_frame_equal(fast.hints, shared.hints, check_exact=True)
    ended = shared.for_prefix([])
    assert ended["next_tool"].isna().any() and shared.n_plans == 3_000
