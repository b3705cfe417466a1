"""No plan can poison the history: plans at the edge of every bound are stored on both
backends, and every analysis and refresh after them keeps working.

The store is append-only, so a plan some layer cannot read (a priority DuckDB's INTEGER
cannot hold, a timestamp pandas' nanoseconds overflow on) would break every later refresh
for good. These plans hold the extremes Plan() accepts: the lowest and highest priority,
the earliest and latest timestamps (with offsets), the largest finite doubles and the
smallest subnormal one, 200-character names of astral characters, missing optionals,
long error texts and a plan of many steps. They are written by ``record_plan`` and by
``import_frames``; the analyses, the background snapshot job and a second refresh after
more plans then run and count them right.
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from metalearn import HistoryStore, MetaLearningService, Plan
from metalearn._interchange import PLAN_COLUMNS, STEP_COLUMNS
from metalearn._types import (
    MAX_NAME_LENGTH,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
)
from tests.test_interchange import read_back, stored_form

BIG = sys.float_info.max
TINY = 5e-324  # the smallest subnormal double
ASTRAL = "\U0001f600"
AGENTS = (ASTRAL * MAX_NAME_LENGTH, "agent-é-" + "x" * (MAX_NAME_LENGTH - 8))
TOOLS = (ASTRAL * MAX_NAME_LENGTH, "t" * MAX_NAME_LENGTH, "search", "\u00a0nbsp tool")
MANY_STEPS = 300


def _id(prefix: str, n: int) -> str:
    """A plan id of exactly MAX_NAME_LENGTH characters, astral ones included."""
    head = f"{prefix}-{n}-"
    return head + ASTRAL * (MAX_NAME_LENGTH - len(head))


def edge_plans(prefix: str) -> list[Plan]:
    """Plans holding the extremes of every field (each plan id starts with ``prefix``)."""
    half_hour = timezone(timedelta(minutes=30))
    plans = [
        Plan(  # the whole range, the highest priority, the largest doubles
            _id(prefix, 0), AGENTS[0], "succeeded", TIMESTAMP_MIN, TIMESTAMP_MAX,
            goal_type="g" * MAX_NAME_LENGTH, reward=BIG, priority=PRIORITY_MAX,
            steps=[{"tool": TOOLS[0], "duration_ms": BIG}, {"tool": TOOLS[1], "duration_ms": BIG}],
        ),
        Plan(  # the lowest priority, the smallest doubles, offsets at both ends
            _id(prefix, 1), AGENTS[0], "failed",
            TIMESTAMP_MIN.astimezone(half_hour), "2200-01-01T01:00:00+01:00",
            reward=-BIG, priority=PRIORITY_MIN, error=ASTRAL + " é " * 5_000,
            steps=[
                {"tool": TOOLS[2], "status": "error", "duration_ms": TINY, "error": ASTRAL * 50},
                {"tool": TOOLS[3], "status": "skipped", "duration_ms": -0.0},
            ],
        ),
        Plan(  # every optional missing, no steps, a zero-length plan
            _id(prefix, 2), AGENTS[1], "succeeded", TIMESTAMP_MAX, TIMESTAMP_MAX,
            goal_type=None, reward=None, error=None, priority=None,
        ),
        Plan(  # many steps, every status, unicode everywhere
            _id(prefix, 3), AGENTS[1], "failed",
            "1969-12-31T23:59:59.999999Z", "1970-01-01T00:00:00.000001Z",
            goal_type=ASTRAL, reward=TINY, error=" \t",
            steps=[
                {
                    "tool": TOOLS[i % len(TOOLS)],
                    "status": ("ok", "error", "skipped")[i % 3],
                    "duration_ms": (None, 0.0, TINY, 1e300)[i % 4],
                    "error": None if i % 3 != 1 else f"{ASTRAL} failed at 'step {i}'",
                }
                for i in range(MANY_STEPS)
            ],
        ),
    ]  # fmt: skip
    return plans


def as_typed_frames(plans: list[Plan]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plans as interchange frames with typed columns (tz-aware datetimes, numbers, str)."""
    rows = [stored_form(plan) for plan in plans]
    plan_frame = pd.DataFrame([row for row, _ in rows], columns=list(PLAN_COLUMNS))
    for name in ("started_at", "finished_at"):
        plan_frame[name] = pd.to_datetime(plan_frame[name], utc=True)
    steps = [{"plan_id": row["plan_id"], **step} for row, plan_steps in rows for step in plan_steps]
    return plan_frame, pd.DataFrame(steps, columns=list(STEP_COLUMNS))


@pytest.fixture
def poisoned(store: HistoryStore) -> HistoryStore:
    """A store (each backend) holding the edge plans recorded one by one and imported."""
    for plan in edge_plans("rec"):
        store.record_plan(plan)
    report = store.import_frames(*as_typed_frames(edge_plans("imp")))
    assert report.imported == len(edge_plans("imp")) and report.rejected == 0
    return store


def test_the_edge_plans_are_stored_as_plan_holds_them(poisoned: HistoryStore) -> None:
    expected = [stored_form(p) for p in edge_plans("rec") + edge_plans("imp")]
    assert read_back(poisoned) == expected


def test_every_analysis_and_a_second_refresh_survive_the_edge_plans(
    poisoned: HistoryStore,
) -> None:
    written = edge_plans("rec") + edge_plans("imp")
    with MetaLearningService(poisoned, max_workers=1) as service:
        check_analyses(service, written)
        more = [p for p in edge_plans("more") if p.agent_id == AGENTS[1]]
        for plan in more:
            poisoned.record_plan(plan)
        poisoned.import_frames(*as_typed_frames(edge_plans("more-imp")))
        assert service.refresh_sync() == len(more) + 4
        check_analyses(service, written + more + edge_plans("more-imp"))


def check_analyses(service: MetaLearningService, written: list[Plan]) -> None:
    """The analyses, the pattern report and the background job count every plan: by
    default the window ends now, which leaves out the plans that end in 2200."""
    ending_now = [p for p in written if p.finished_at <= datetime.now(UTC)]
    assert 0 < len(ending_now) < len(written)
    check_window(service, ending_now, {})
    check_window(service, written, {"as_of": TIMESTAMP_MAX})


def check_window(service: MetaLearningService, plans: list[Plan], options: dict[str, Any]) -> None:
    per_agent = Counter(p.agent_id for p in plans)
    analysis = service.analyze_execution_patterns_sync(time_range_days=None, **options)
    assert analysis.n_plans == len(plans)
    assert (
        dict(zip(*analysis.by_agent[["agent_id", "plans"]].T.to_numpy(), strict=True)) == per_agent
    )
    assert analysis.by_tool["calls"].sum() == sum(len(p.steps) for p in plans)
    assert set(analysis.by_tool["tool"]) == {t for p in plans for t in p.tools}
    report = service.extract_successful_patterns_sync(
        time_range_days=None, min_support=1, **options
    )
    assert report.n_plans == len(plans) and len(report.patterns) > 0
    saved = service.snapshot_agents_sync(
        list(per_agent), time_range_days=None, min_support=1, **options
    )
    assert set(saved) == set(per_agent)
    for agent, count in per_agent.items():
        latest, patterns = service.latest_analysis_sync(agent), service.latest_patterns_sync(agent)
        assert latest is not None and latest.n_plans == count
        assert patterns is not None and patterns.n_plans == count


def test_an_edge_history_moves_between_stores_as_csv(
    poisoned: HistoryStore, tmp_path: Path
) -> None:
    """SQLite and PostgreSQL hold the same texts (no NUL, no lone surrogates), so an
    exported history imports into any store as it was."""
    poisoned.export_csv(tmp_path)
    with HistoryStore("sqlite://") as other:
        report = other.import_csv(tmp_path / "plans.csv", tmp_path / "steps.csv")
        assert report.rejected == 0
        assert read_back(other) == read_back(poisoned)


POISON = [  # values the layers below could not hold: refused, the history stays readable
    pytest.param({"priority": 2**31}, "priority", id="priority-2**31"),
    pytest.param({"priority": "9223372036854775808"}, "priority", id="priority-2**63-text"),
    pytest.param({"started_at": "0001-01-01T00:00:00+01:00"}, "started_at", id="year-1"),
    pytest.param({"finished_at": "2262-04-12T00:00:00Z"}, "finished_at", id="past-nanoseconds"),
    pytest.param({"error": "\x00"}, "error", id="nul"),
    pytest.param({"agent_id": "\ud800"}, "agent_id", id="lone-surrogate"),
]


@pytest.mark.parametrize(("changes", "field"), POISON)
def test_a_refused_plan_leaves_the_history_readable(
    poisoned: HistoryStore, changes: dict[str, Any], field: str
) -> None:
    plans, steps = as_typed_frames(edge_plans("bad")[:1])
    plans = plans.astype(object).assign(
        **{k: pd.Series([v], dtype=object) for k, v in changes.items()}
    )
    report = poisoned.import_frames(plans, steps, on_error="skip")
    assert report.imported == 0 and report.rejections["field"].tolist() == [field]
    with MetaLearningService(poisoned, max_workers=1) as service:
        analysis = service.analyze_execution_patterns_sync(
            time_range_days=None, as_of=TIMESTAMP_MAX
        )
        assert analysis.n_plans == 2 * len(edge_plans("x"))
