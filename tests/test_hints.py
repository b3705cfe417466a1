"""Next-step hints and hint tables: counts against brute force, planted truth, storage."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats
from sqlalchemy import text

from metalearn import (
    ExecutionService,
    HintTable,
    HistoryStore,
    InvalidArgumentError,
    MetaLearningService,
    Plan,
)
from metalearn._results import HINT_COLUMNS, HINT_FILES, HINT_TABLE_COLUMNS
from metalearn._snapshots import snapshot_rows
from metalearn.plots import plot_hints, save_plots
from metalearn.synthetic import make_history
from tests.conftest import END, TAU_BENCH

PrefixCounts = dict[tuple[str, ...], dict[str | None, tuple[int, int]]]

# -- an independent count ---------------------------------------------------------------


def plan_sequences(plans: pd.DataFrame, steps: pd.DataFrame) -> list[tuple[tuple[str, ...], bool]]:
    """Each plan's tools in step order and whether it succeeded (plain Python)."""
    tools: dict[str, list[tuple[int, str]]] = {}
    for plan_id, index, tool in zip(steps["plan_id"], steps["step_index"], steps["tool"],
                                    strict=True):  # fmt: skip
        tools.setdefault(plan_id, []).append((int(index), str(tool)))
    return [
        (tuple(tool for _, tool in sorted(tools.get(plan_id, []))), status == "succeeded")
        for plan_id, status in zip(plans["plan_id"], plans["status"], strict=True)
    ]


def brute_force(sequences: list[tuple[tuple[str, ...], bool]], max_prefix: int) -> PrefixCounts:
    """(plans, successes) of every (prefix, next tool) pair, None for plans that ended."""
    counts: dict[tuple[str, ...], Counter[str | None]] = {}
    wins: dict[tuple[str, ...], Counter[str | None]] = {}
    for tools, succeeded in sequences:
        for depth in range(min(len(tools), max_prefix) + 1):
            prefix = tools[:depth]
            following = tools[depth] if depth < len(tools) else None
            counts.setdefault(prefix, Counter())[following] += 1
            wins.setdefault(prefix, Counter())[following] += succeeded
    return {
        prefix: {tool: (n, wins[prefix][tool]) for tool, n in counter.items()}
        for prefix, counter in counts.items()
    }


def expected_rows(rows: dict[str | None, tuple[int, int]], min_support: int) -> pd.DataFrame:
    """The hint rows of one prefix, computed with scipy from the brute-force counts."""
    n = sum(plans for plans, _ in rows.values())
    won = sum(successes for _, successes in rows.values())
    kept = [(tool, plans, wins) for tool, (plans, wins) in rows.items() if plans >= min_support]
    frame = pd.DataFrame(kept, columns=["next_tool", "plans", "successes"])
    frame["p_value"] = [
        stats.fisher_exact([[k, m - k], [won - k, n - m - (won - k)]]).pvalue
        for _, m, k in kept
    ]  # fmt: skip
    frame["q_value"] = stats.false_discovery_control(frame["p_value"]) if kept else []
    frame["lift"] = (frame["successes"] / frame["plans"]) / (won / n) if kept else []
    z = stats.norm.ppf(0.975)
    p, m = frame["successes"] / frame["plans"], frame["plans"]
    center = (p + z * z / (2 * m)) / (1 + z * z / m)
    frame["ci_low"] = center - z * np.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / (1 + z * z / m)
    return frame


Rows = dict[str | None, tuple[int, int]]


def assert_matches(got: pd.DataFrame, rows: Rows, support: int) -> None:
    want = expected_rows(rows, support)
    key = got["next_tool"].astype(object).fillna("<ended>")
    merged = want.assign(next_tool=want["next_tool"].astype(object).fillna("<ended>"))
    merged = merged.set_index("next_tool")
    assert sorted(key) == sorted(merged.index)
    aligned = merged.loc[list(key)]
    for column in ("plans", "successes"):
        assert got[column].tolist() == aligned[column].tolist(), column
    for column in ("p_value", "q_value", "lift", "ci_low"):
        ours, theirs = got[column].to_numpy(float), aligned[column].to_numpy(float)
        assert np.allclose(ours, theirs, rtol=1e-9, atol=1e-12), column
    assert got["success_rate"].tolist() == (got["successes"] / got["plans"]).tolist()
    # The one low_n rule of every rate table: under 30 plans, or an interval over 25 points.
    wide = (got["ci_high"] - got["ci_low"]) > 0.25
    assert got["low_n"].tolist() == ((got["plans"] < 30) | wide).tolist()
    assert got["ci_low"].is_monotonic_decreasing  # ranked by the lower bound


# -- τ-bench and a 20,000-plan synthetic history -----------------------------------------


@pytest.fixture(scope="module")
def tau_sequences() -> list[tuple[tuple[str, ...], bool]]:
    plans = pd.read_csv(TAU_BENCH / "plans.csv")
    steps = pd.read_csv(TAU_BENCH / "steps.csv")
    return plan_sequences(plans, steps)


@pytest.fixture(scope="module")
def synthetic_sequences() -> list[tuple[tuple[str, ...], bool]]:
    return plan_sequences(*make_history(20_000, seed=1, end=END))  # the synthetic_store's


@pytest.mark.parametrize(
    "prefix",
    [(), ("respond",), ("respond", "get_user_details"),
     ("respond", "get_user_details", "get_reservation_details"), ("no_such_tool",)],
)  # fmt: skip
def test_tau_bench_hints_equal_a_brute_force_count(
    tau: MetaLearningService, tau_sequences: Any, prefix: tuple[str, ...]
) -> None:
    got = tau.next_step_hints_sync(prefix, time_range_days=None, min_support=3)
    assert list(got.columns) == HINT_COLUMNS
    counts = brute_force(tau_sequences, len(prefix)).get(prefix, {})
    assert_matches(got, counts, 3)


@pytest.mark.parametrize(
    "prefix",
    [(), ("validate_input",), ("search_web",), ("call_api", "write_file"),
     ("call_api", "parse_document", "run_code"), ("retry", "retry", "retry")],
)  # fmt: skip
def test_synthetic_hints_equal_a_brute_force_count(
    synthetic: MetaLearningService, synthetic_sequences: Any, prefix: tuple[str, ...]
) -> None:
    got = synthetic.next_step_hints_sync(list(prefix), time_range_days=None)
    assert len(got) > 0
    assert_matches(got, brute_force(synthetic_sequences, len(prefix))[prefix], 10)


@pytest.mark.parametrize(("max_prefix", "min_support"), [(3, 10), (2, 40)])
def test_the_hint_table_is_every_frequent_prefix_as_next_step_hints_gives_it(
    synthetic: MetaLearningService, synthetic_sequences: Any, max_prefix: int, min_support: int
) -> None:
    table = synthetic.hint_table_sync(max_prefix, time_range_days=None, min_support=min_support)
    assert list(table.hints.columns) == HINT_TABLE_COLUMNS
    counts = brute_force(synthetic_sequences, max_prefix)
    frequent = {
        prefix: rows for prefix, rows in counts.items()
        if sum(n for n, _ in rows.values()) >= min_support
        and any(n >= min_support for n, _ in rows.values())
    }  # fmt: skip
    assert set(table.hints["prefix"]) == set(frequent)
    assert table.n_plans == 20_000 and table.prefixes == len(frequent)
    for prefix in list(frequent)[:: max(1, len(frequent) // 12)]:  # a dozen, deeper ones too
        rows = table.for_prefix(prefix)
        assert_matches(rows, frequent[prefix], min_support)
        alone = synthetic.next_step_hints_sync(prefix, time_range_days=None,
                                               min_support=min_support)  # fmt: skip
        pd.testing.assert_frame_equal(rows, alone)
    depth = table.hints["prefix"].map(len)
    assert depth.is_monotonic_increasing and depth.max() <= max_prefix
    assert (
        (table.hints["prefix_text"] == table.hints["prefix"].map(" → ".join))
        .where(depth > 0, table.hints["prefix_text"] == "(start)")
        .all()
    )


def test_planted_first_steps_lead_the_first_step_hints(synthetic: MetaLearningService) -> None:
    first = synthetic.next_step_hints_sync([], time_range_days=None)
    # The planted success patterns start some plans; the planted failures are not first.
    assert set(first["next_tool"].head(2)) == {"validate_input", "ask_clarification"}
    assert first["significant"].head(2).all() and (first["lift"].head(2) > 1.3).all()
    after = synthetic.next_step_hints_sync(["validate_input"], time_range_days=None)
    assert after["next_tool"].tolist() == ["dry_run"]  # the pattern always goes on


# -- a history built for one question ---------------------------------------------------

T0 = datetime(2026, 5, 1, tzinfo=UTC)
# After "plan": verify succeeds 85%, act 50%, guess 45%, lucky 3 of 3; 15 plans stop there.
PLANTED = {"verify": (200, 170), "act": (200, 100), "guess": (200, 90), "lucky": (3, 3),
           None: (15, 5)}  # fmt: skip


def planted_plans() -> list[Plan]:
    plans = []
    for next_tool, (n, won) in PLANTED.items():
        for i in range(n):
            tools = ["plan"] + ([next_tool, "finish"] if next_tool else [])
            start = T0 + timedelta(minutes=len(plans))
            plans.append(Plan(f"{next_tool}-{i}", "planner", "succeeded" if i < won else "failed",
                              start, start + timedelta(seconds=5),
                              goal_type="refund" if i % 2 else "booking",
                              steps=[{"tool": t} for t in tools]))  # fmt: skip
    for i in range(12):  # plans that never ran a step
        start = T0 + timedelta(minutes=len(plans))
        plans.append(Plan(f"empty-{i}", "planner", "failed", start, start, goal_type="booking"))
    return plans


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetaLearningService]:
    path = tmp_path_factory.mktemp("planted") / "history.db"
    with HistoryStore(f"sqlite:///{path}") as store:
        store.record_plans(planted_plans())
        with MetaLearningService(store) as service:
            yield service


def test_the_planted_continuation_ranks_first_and_a_lucky_rare_one_does_not(
    planted: MetaLearningService, call: Callable[..., Any]
) -> None:
    hints = call(planted, "next_step_hints", ["plan"], time_range_days=None, min_support=3)
    assert hints["next_tool"].iloc[0] == "verify" and hints["significant"].iloc[0]
    lucky = hints[hints["next_tool"] == "lucky"].iloc[0]
    assert lucky["success_rate"] == 1.0 and lucky["low_n"] and not lucky["significant"]
    ended = hints[hints["next_tool"].isna()].iloc[0]
    assert (ended["plans"], ended["successes"]) == (15, 5)
    assert hints["plans"].sum() == 618 and math.isclose(
        hints["lift"].iloc[0], 0.85 / (368 / 618), rel_tol=1e-12
    )


def test_first_step_hints_count_plans_without_steps_as_ended(
    planted: MetaLearningService,
) -> None:
    hints = planted.next_step_hints_sync([], time_range_days=None)
    assert hints["next_tool"].iloc[0] == "plan" and pd.isna(hints["next_tool"].iloc[1])
    assert hints["plans"].tolist() == [618, 12] and hints["successes"].tolist() == [368, 0]
    table = planted.hint_table_sync(2, time_range_days=None)
    pd.testing.assert_frame_equal(table.for_prefix(()), hints)


def test_goal_type_and_agent_filters(planted: MetaLearningService) -> None:
    refund = planted.next_step_hints_sync(["plan"], goal_type="refund", time_range_days=None,
                                          min_support=1)  # fmt: skip
    tools = refund["next_tool"].astype(object).where(refund["next_tool"].notna(), None)
    got = dict(zip(tools, refund["plans"], strict=True))
    assert got == {tool: n // 2 for tool, (n, _) in PLANTED.items()}  # odd plans are refunds
    none = planted.next_step_hints_sync(["plan"], agent_id="someone-else", time_range_days=None)
    assert none.empty and list(none.columns) == HINT_COLUMNS
    assert planted.hint_table_sync(goal_type="(none)", time_range_days=None).hints.empty


def test_an_unknown_tool_gives_an_empty_frame(planted: MetaLearningService) -> None:
    for prefix in (["nope"], ["plan", "nope"]):
        hints = planted.next_step_hints_sync(prefix, time_range_days=None)
        assert hints.empty and list(hints.columns) == HINT_COLUMNS
    assert planted.hint_table_sync(time_range_days=None).for_prefix(["nope"]).empty


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        pytest.param("next_step_hints", {"prefix": "plan"}, "list of tool names", id="string"),
        pytest.param("next_step_hints", {"prefix": ["plan", ""]}, r"prefix\[1\]", id="empty-tool"),
        pytest.param("next_step_hints", {"prefix": [3]}, r"prefix\[0\]", id="not-a-name"),
        pytest.param(
            "next_step_hints", {"prefix": [], "min_support": 0}, "min_support", id="min-support"
        ),
        pytest.param("next_step_hints", {"prefix": [], "fdr": 1.5}, "fdr", id="fdr"),
        pytest.param("next_step_hints", {"prefix": [], "goal_type": ""}, "goal_type", id="goal"),
        pytest.param(
            "hint_table", {"max_prefix": 0}, "max_prefix must be an integer >= 1", id="max-prefix"
        ),
        pytest.param("hint_table", {"time_range_days": -1}, "time_range_days", id="window"),
    ],
)
def test_bad_arguments_raise_invalid_argument_error(
    planted: MetaLearningService, name: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        getattr(planted, f"{name}_sync")(**kwargs)


def test_a_hint_table_writes_csv_and_html(planted: MetaLearningService, tmp_path: Path) -> None:
    table = planted.hint_table_sync(2, time_range_days=None, min_support=3)
    paths = table.to_csv(tmp_path)
    assert [p.name for p in paths] == list(HINT_FILES)
    summary = pd.read_csv(paths[0])
    assert summary[["plans", "max_prefix", "min_support", "hints"]].iloc[0].tolist() == [
        630,
        2,
        3,
        len(table.hints),
    ]
    rows = pd.read_csv(paths[1], keep_default_na=False)
    assert list(rows.columns) == ["prefix", *HINT_COLUMNS]
    assert rows["prefix"].tolist() == table.hints["prefix_text"].tolist()
    assert rows["plans"].tolist() == table.hints["plans"].tolist()
    page = table._repr_html_()
    assert "&lt;HintTable agent=all window=all plans=630" in page and "<table" in page
    assert repr(table).startswith("<HintTable agent=all window=all plans=630 prefixes=")


# -- stored with the background snapshots -----------------------------------------------


def test_background_snapshots_store_the_hint_table_for_any_process(
    store_url: str, call: Callable[..., Any]
) -> None:
    as_of = T0 + timedelta(days=2)
    with HistoryStore(store_url) as store, MetaLearningService(store) as service:
        store.record_plans(planted_plans())
        service.snapshot_agents_sync(["planner", "nobody"], as_of=as_of, min_support=3,
                                     max_prefix=2)  # fmt: skip
        direct = service.hint_table_sync(2, agent_id="planner", as_of=as_of, min_support=3,
                                         fdr=0.05)  # fmt: skip
    with HistoryStore(store_url) as other, MetaLearningService(other) as reader:
        stored = call(reader, "latest_hints", "planner")
        empty = call(reader, "latest_hints", "nobody")
        assert call(reader, "latest_hints", "never-seen") is None
    assert isinstance(stored, HintTable) and len(stored.hints) > 0
    pd.testing.assert_frame_equal(stored.hints, direct.hints, check_exact=False, rtol=1e-12)
    assert (stored.options, stored.n_plans, stored.agent_id) == (direct.options, 630, "planner")
    assert stored.as_of == as_of and stored.through_seq == direct.through_seq
    assert empty is not None and empty.hints.empty and empty.n_plans == 0


def test_snapshots_from_before_hints_read_back_as_empty_hint_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with HistoryStore(url) as store, MetaLearningService(store) as service:
        store.record_plans(planted_plans())
        analysis = service.analyze_execution_patterns_sync("planner", time_range_days=None)
        report = service.extract_successful_patterns_sync("planner", time_range_days=None)
        store.save_snapshots([snapshot_rows(analysis, report, duration_ms=1.0)])  # no hints
        with store.engine.begin() as conn:  # as a store made before hints existed
            conn.execute(text("DROP TABLE metalearn_snapshot_hints"))
            conn.execute(text("DROP TABLE metalearn_snapshot_hint_sets"))
    with HistoryStore(url) as reopened, MetaLearningService(reopened) as reader:
        old = reader.latest_hints_sync("planner")  # the reopened store creates the tables
        assert old is not None and old.hints.empty and old.options.max_prefix == 0
        assert list(old.hints.columns) == HINT_TABLE_COLUMNS and old.n_plans == 630
        assert reader.latest_patterns_sync("planner") is not None
        reader.snapshot_agents_sync(["planner"], time_range_days=None, min_support=3)
        new = reader.latest_hints_sync("planner")
    assert new is not None and new.options.max_prefix == 3 and len(new.hints) > 0


def test_finalizing_a_plan_without_a_loop_stores_its_agents_hints(
    sqlite_store: HistoryStore,
) -> None:
    sqlite_store.record_plans(planted_plans()[:-1])
    with MetaLearningService(sqlite_store) as meta:
        service = ExecutionService(
            meta_learning=meta, worker="thread", min_support=3, time_range_days=None
        )
        service.finalize_plan_sync(planted_plans()[-1])
        asyncio.run(service.close())
        table = meta.latest_hints_sync("planner")
    assert table is not None and table.options.min_support == 3
    assert table.for_prefix(["plan"])["next_tool"].iloc[0] == "verify"


def test_old_snapshots_are_pruned_with_their_hints(sqlite_store: HistoryStore) -> None:
    sqlite_store.record_plans(planted_plans())
    with MetaLearningService(sqlite_store) as service:
        for _ in range(3):
            service.snapshot_agents_sync(["planner"], time_range_days=None, keep_snapshots=2)
    with sqlite_store.engine.connect() as conn:
        sets = conn.execute(text("SELECT count(*) FROM metalearn_snapshot_hint_sets")).scalar()
        orphans = conn.execute(text(
            "SELECT count(*) FROM metalearn_snapshot_hints WHERE snapshot_id NOT IN "
            "(SELECT snapshot_id FROM metalearn_snapshots)")).scalar()  # fmt: skip
    assert (sets, orphans) == (2, 0)


def test_the_hints_plot_ranks_next_tools_by_their_lower_bound(
    planted: MetaLearningService, tmp_path: Path
) -> None:
    table = planted.hint_table_sync(2, time_range_days=None, min_support=3)
    ax = table.plot("hints", prefix=["plan"], ax=Figure().subplots())
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == "verify" and "(plan ended)" in labels and len(labels) == 5
    assert ax.get_title().startswith("Next step after plan\n")
    empty = plot_hints(table, ["nope"], ax=Figure().subplots())
    assert "no next tool seen often enough" in empty.texts[0].get_text()
    alone = planted.next_step_hints_sync([], time_range_days=None)
    assert [t.get_text() for t in plot_hints(alone, ax=Figure().subplots()).get_yticklabels()] == [
        "(plan ended)", "plan"
    ]  # fmt: skip
    assert [p.name for p in save_plots(table, tmp_path)] == ["first_step_hints.png"]
