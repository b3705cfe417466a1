"""The shared pattern aggregations (metalearn._pattern_sql) run on DuckDB give exactly the
report of the numpy fast path: the parity that lets the DuckDB default keep its fast path
while Spark runs the aggregations (issue 16, point 2).

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
from metalearn._pattern_sql import extract_on_engine
from metalearn._patterns import extract
from metalearn._queries import PatternOptions, Window
from tests.conftest import END

OPTIONS = [
    pytest.param({}, id="defaults"),
    pytest.param({"stratify_by": None}, id="pooled"),
    pytest.param({"stratify_by": "agent_id"}, id="by-agent"),
    pytest.param({"max_gap": 2}, id="gaps"),
    pytest.param({"min_length": 2, "max_length": 5, "min_support": 40}, id="long"),
]
WINDOWS = [
    pytest.param((None, None, None), id="whole-history"),
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
