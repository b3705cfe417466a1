"""The benchmark suite's correctness side: its pandas baseline and its agreement check.

No timings here (speed is measured by ``python -m benchmarks``): these tests keep the
suite's claim "metalearn and pandas give the same numbers" honest, on a 2,000-plan history.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from benchmarks import agreement, baselines, histories
from metalearn import HistoryStore

Results = tuple[agreement.Rates, pd.DataFrame, agreement.Rates, pd.DataFrame]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    path = tmp_path_factory.mktemp("benchmarks") / "history.db"
    with HistoryStore(f"sqlite:///{path}") as store:
        store.import_frames(*histories.make(2_000))
    return agreement.results(f"sqlite:///{path}")


def test_metalearn_agrees_with_the_pandas_baseline(results: Results) -> None:
    ml_rates, ml_patterns, pd_rates, _ = results
    assert agreement.compare(*results) == []
    assert int(pd_rates["all"]["plans"].iloc[0]) == 2_000
    assert len(ml_rates["agent_id"]) == histories.N_AGENTS
    assert len(ml_patterns) > 100


def _bump(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    changed = frame.copy()
    changed.iloc[0, changed.columns.get_loc(column)] += 1
    return changed


def _agent_count(r: Results) -> Results:
    return r[0], r[1], {**r[2], "agent_id": _bump(r[2]["agent_id"], "plans")}, r[3]


def _missing_day(r: Results) -> Results:
    return r[0], r[1], {**r[2], "day": r[2]["day"].iloc[1:]}, r[3]


def _pattern_support(r: Results) -> Results:
    return r[0], r[1], r[2], _bump(r[3], "plans")


def _missing_pattern(r: Results) -> Results:
    return r[0], r[1].iloc[1:], r[2], r[3]


@pytest.mark.parametrize(
    ("perturb", "expected"),
    [
        pytest.param(_agent_count, "success rates by agent_id", id="agent-count"),
        pytest.param(_missing_day, "missing from pandas", id="missing-day"),
        pytest.param(_pattern_support, "plans = ", id="pattern-support"),
        pytest.param(_missing_pattern, "missing from metalearn", id="missing-pattern"),
    ],
)
def test_a_disagreement_is_reported(
    results: Results, perturb: Callable[[Results], Results], expected: str
) -> None:
    problems = agreement.compare(*perturb(results))
    assert problems and any(expected in p for p in problems), problems


def test_ngrams_count_plans_containing_a_sequence_at_least_once(tmp_path: Path) -> None:
    plans = pd.DataFrame({"seq": [1, 2], "status": ["succeeded", "failed"]})
    steps = pd.DataFrame(
        {
            "plan_seq": [1, 1, 1, 1, 2, 2],
            "step_index": [3, 2, 1, 0, 0, 1],
            "tool": ["b", "a", "b", "a", "b", "a"],  # plan 1: a b a b; plan 2: b a
        }
    )
    table = baselines.ngrams(plans, steps, max_length=2, min_support=1)
    counts = table.set_index("pattern_text")[["plans", "successes"]]
    assert counts.to_dict("index") == {
        "a": {"plans": 2, "successes": 1},
        "b": {"plans": 2, "successes": 1},
        "a → b": {"plans": 1, "successes": 1},
        "b → a": {"plans": 2, "successes": 1},
    }
    assert table.set_index("pattern_text").at["a → b", "lift"] == 2.0


@pytest.fixture(scope="module")
def stratified(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    path = tmp_path_factory.mktemp("benchmarks") / "history.db"
    with HistoryStore(f"sqlite:///{path}") as store:
        store.import_frames(*histories.make(3_000))
    return agreement.stratified_results(f"sqlite:///{path}")


def test_stratified_figures_agree_with_the_pandas_baseline(
    stratified: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    ours, theirs = stratified
    assert agreement.compare_stratified(ours, theirs) == []
    assert len(ours) > 100 and ours["cmh_p_value"].notna().mean() > 0.9


def test_a_stratified_disagreement_is_reported(
    stratified: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    ours, theirs = stratified
    changed = theirs.copy()
    changed.loc[0, "mh_odds_ratio"] *= 1 + 1e-6
    problems = agreement.compare_stratified(ours, changed)
    assert len(problems) == 1 and "mh_odds_ratio" in problems[0], problems
