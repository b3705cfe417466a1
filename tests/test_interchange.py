"""One set of rules, two entry points: a bad record is refused alike by Plan() and by an
import (of frames, and of CSV files), and a good one is stored as Plan() holds it."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from metalearn import HistoryStore, InvalidArgumentError, InvalidRecordError, Plan
from metalearn._interchange import PLAN_COLUMNS, STEP_COLUMNS
from metalearn._readers import PLANS_SCHEMA, STEPS_SCHEMA
from metalearn._types import PRIORITY_MAX, PRIORITY_MIN, TIMESTAMP_MAX, TIMESTAMP_MIN

GOOD: dict[str, Any] = {
    "plan_id": "p-1",
    "agent_id": "agent-a",
    "status": "succeeded",
    "started_at": "2026-03-01T12:00:00Z",
    "finished_at": "2026-03-01T12:00:05Z",
    "goal_type": "lookup",
    "reward": 1.0,
    "priority": 0,
    "steps": [
        {"step_index": 0, "tool": "search", "status": "ok", "duration_ms": 10.0},
        {"step_index": 1, "tool": "respond", "status": "ok", "duration_ms": 5.0},
    ],
}


def spoiled(plan: Mapping[str, Any] | None = None, step: Mapping[str, Any] | None = None) -> Any:
    """The good record with some plan fields, or fields of its second step, replaced."""
    record = {**GOOD, **(plan or {})}
    record["steps"] = [dict(s) for s in GOOD["steps"]]
    record["steps"][1].update(step or {})
    return record


def as_plan(record: Mapping[str, Any]) -> Plan:
    options = {k: record.get(k) for k in ("goal_type", "reward", "error", "priority")}
    fields = ("plan_id", "agent_id", "status", "started_at", "finished_at")
    return Plan(*(record.get(k) for k in fields), steps=record["steps"], **options)


def as_frames(record: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The record as a one-plan pair of object frames, every cell the record's own value."""
    plan_row = {k: record.get(k) for k in PLAN_COLUMNS}
    step_rows = [
        {k: s.get(k) for k in STEP_COLUMNS} | {"plan_id": record["plan_id"]}
        for s in record["steps"]
    ]
    plans = pd.DataFrame([plan_row], columns=list(PLAN_COLUMNS), dtype=object)
    return plans, pd.DataFrame(step_rows, columns=list(STEP_COLUMNS), dtype=object)


def as_csv(record: Mapping[str, Any], directory: Path) -> tuple[Path, Path]:
    """The record as plans.csv and steps.csv: each cell the text of its value (None: empty)."""
    paths = directory / "plans.csv", directory / "steps.csv"
    for frame, path in zip(as_frames(record), paths, strict=True):
        text = frame.map(lambda v: "" if v is None else str(v))
        text.to_csv(path, index=False, lineterminator="\r\n")
    return paths


def csv_spells(record: Mapping[str, Any]) -> bool:
    """Whether CSV files can spell the record: every text cell is valid UTF-8 without NUL.

    A number in a text field has no CSV spelling either: a CSV cell is always text, and
    the text "5" is a fine error message.
    """
    texts = [record.get(k) for k in ("plan_id", "agent_id", "goal_type", "error")]
    texts += [s.get(k) for s in record["steps"] for k in ("tool", "error")]
    return all(t is None or (isinstance(t, str) and "\x00" not in t and _encodes(t)) for t in texts)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def stored_form(plan: Plan) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What the store should read back for a plan: its plan row and step rows."""
    row = {k: getattr(plan, k) for k in PLAN_COLUMNS}
    row["status"] = plan.status.value
    steps = [
        {k: getattr(s, k) for k in STEP_COLUMNS if k != "plan_id"} | {"status": s.status.value}
        for s in plan.steps
    ]
    return row, steps


def read_back(store: HistoryStore) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Every stored plan in stored_form's shape, by seq."""
    batch = store.plans_after(0, None)
    steps: dict[int, list[dict[str, Any]]] = {}
    for step in batch.steps.to_pylist():
        seq = step.pop("seq")
        step.pop("plan_id")
        steps.setdefault(seq, []).append(step)
    plans = []
    for row in batch.plans.to_pylist():
        seq = row.pop("seq")
        plans.append((row, steps.get(seq, [])))
    return plans


@pytest.fixture
def memory_store() -> Iterator[HistoryStore]:
    with HistoryStore("sqlite://") as store:
        yield store


def test_the_good_record_passes_both(memory_store: HistoryStore) -> None:
    assert as_plan(GOOD).tools == ("search", "respond")
    assert memory_store.import_frames(*as_frames(GOOD)).imported == 1


BAD_RECORDS = [
    pytest.param(spoiled({"plan_id": ""}), "plan_id", id="empty-plan-id"),
    pytest.param(spoiled({"plan_id": "p" * 201}), "plan_id", id="long-plan-id"),
    pytest.param(spoiled({"agent_id": "  "}), "agent_id", id="blank-agent"),
    pytest.param(spoiled({"goal_type": "g" * 201}), "goal_type", id="long-goal-type"),
    pytest.param(spoiled(step={"tool": "t" * 201}), "tool", id="long-tool"),
    pytest.param(spoiled(step={"tool": ""}), "tool", id="empty-tool"),
    pytest.param(spoiled({"started_at": "2026-03-01T12:00:00"}), "started_at", id="naive-time"),
    pytest.param(spoiled({"started_at": "yesterday"}), "started_at", id="not-a-timestamp"),
    pytest.param(spoiled({"started_at": "2026-13-01T12:00:00Z"}), "started_at", id="month-13"),
    pytest.param(
        spoiled({"finished_at": "2026-03-01T11:00:00Z"}), "finished_at", id="finished-first"
    ),
    pytest.param(spoiled({"status": "finished"}), "status", id="plan-status"),
    pytest.param(spoiled({"reward": "lots"}), "reward", id="reward-not-a-number"),
    pytest.param(spoiled({"reward": math.inf}), "reward", id="infinite-reward"),
    pytest.param(spoiled({"priority": 1.5}), "priority", id="fractional-priority"),
    pytest.param(spoiled(step={"duration_ms": -5.0}), "duration_ms", id="negative-duration"),
    pytest.param(spoiled(step={"duration_ms": math.inf}), "duration_ms", id="infinite-duration"),
    pytest.param(spoiled(step={"duration_ms": "fast"}), "duration_ms", id="duration-text"),
    pytest.param(spoiled(step={"step_index": 2}), "step_index", id="index-gap"),
    pytest.param(spoiled(step={"step_index": 0}), "step_index", id="index-repeated"),
    pytest.param(spoiled(step={"step_index": -1}), "step_index", id="negative-index"),
    pytest.param(spoiled(step={"status": "paused"}), "status", id="step-status"),
    # the bounded fields: priority, numbers, timestamps, text
    pytest.param(spoiled({"priority": 2**31}), "priority", id="priority-2**31"),
    pytest.param(spoiled({"priority": PRIORITY_MIN - 1}), "priority", id="priority-below-int32"),
    pytest.param(spoiled({"priority": 2**63}), "priority", id="priority-2**63"),
    pytest.param(
        spoiled({"priority": "9223372036854775808"}), "priority", id="priority-wraps-in-int64"
    ),
    pytest.param(spoiled({"priority": True}), "priority", id="bool-priority"),
    pytest.param(spoiled({"reward": 10**400}), "reward", id="reward-10**400"),
    pytest.param(spoiled({"reward": "1e400"}), "reward", id="reward-1e400-text"),
    pytest.param(spoiled({"reward": True}), "reward", id="bool-reward"),
    pytest.param(spoiled(step={"duration_ms": 10**400}), "duration_ms", id="duration-10**400"),
    pytest.param(
        spoiled({"started_at": "0001-01-01T00:00:00+01:00"}), "started_at", id="year-1-offset"
    ),
    pytest.param(
        spoiled({"finished_at": "9999-12-31T23:59:59-01:00"}), "finished_at", id="year-9999"
    ),
    pytest.param(spoiled({"started_at": "1899-12-31T23:59:59Z"}), "started_at", id="before-1900"),
    pytest.param(spoiled({"finished_at": "2200-01-01T00:00:01Z"}), "finished_at", id="after-2200"),
    pytest.param(
        spoiled({"started_at": datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))}),
        "started_at",
        id="year-1-datetime",
    ),
    pytest.param(spoiled({"started_at": "2026-W09-7T12:00:00Z"}), "started_at", id="iso-week"),
    pytest.param(
        spoiled({"started_at": "2026-03-01T09:00:0.000Z"}), "started_at", id="one-digit-second"
    ),
    pytest.param(spoiled({"started_at": "2026-02-30T09:00:00Z"}), "started_at", id="feb-30"),
    pytest.param(spoiled({"started_at": None}), "started_at", id="no-start"),
    pytest.param(spoiled({"agent_id": "a\x00b"}), "agent_id", id="nul-agent"),
    pytest.param(spoiled({"error": "boom\x00"}), "error", id="nul-error"),
    pytest.param(spoiled(step={"error": "\x00"}), "error", id="nul-step-error"),
    pytest.param(spoiled({"plan_id": "p\ud800"}), "plan_id", id="surrogate-plan-id"),
    pytest.param(spoiled({"goal_type": "\udfff"}), "goal_type", id="surrogate-goal-type"),
    pytest.param(spoiled(step={"tool": "t\ud83d"}), "tool", id="surrogate-tool"),
    pytest.param(spoiled({"error": "\ud800"}), "error", id="surrogate-error"),
    pytest.param(spoiled({"error": 5}), "error", id="int-error"),
    pytest.param(spoiled({"goal_type": 5}), "goal_type", id="int-goal-type"),
    pytest.param(spoiled(step={"tool": 7}), "tool", id="int-tool"),
    pytest.param(spoiled({"status": None}), "status", id="no-status"),
    pytest.param(
        spoiled({"goal_type": "g" * 201}, step={"tool": ""}), "goal_type", id="two-faults"
    ),
]


@pytest.mark.parametrize(("record", "field"), BAD_RECORDS)
def test_plan_and_import_refuse_the_same_record_for_the_same_field(
    memory_store: HistoryStore, record: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRecordError) as built:
        as_plan(record)
    with pytest.raises(InvalidRecordError) as imported:
        memory_store.import_frames(*as_frames(record))
    assert built.value.field == imported.value.field == field
    assert len(memory_store) == 0


CSV_RECORDS = [case for case in BAD_RECORDS if csv_spells(case.values[0])]


@pytest.mark.parametrize(("record", "field"), CSV_RECORDS)
def test_plan_and_csv_import_refuse_the_same_record_for_the_same_field(
    memory_store: HistoryStore, tmp_path: Path, record: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRecordError) as built:
        as_plan(record)
    with pytest.raises(InvalidRecordError) as imported:
        memory_store.import_csv(*as_csv(record, tmp_path))
    assert built.value.field == imported.value.field == field
    assert len(memory_store) == 0


GOOD_EDGES = [
    pytest.param(spoiled({"priority": PRIORITY_MAX}), id="max-priority"),
    pytest.param(spoiled({"priority": PRIORITY_MIN}), id="min-priority"),
    pytest.param(spoiled({"priority": None}), id="missing-priority"),
    pytest.param(spoiled({"priority": "7"}), id="priority-text"),
    pytest.param(spoiled({"priority": 3.0}), id="whole-float-priority"),
    pytest.param(spoiled({"reward": math.nan}), id="nan-reward"),
    pytest.param(spoiled({"reward": "0.25"}), id="reward-text"),
    pytest.param(spoiled({"reward": -1.7976931348623157e308}), id="min-double"),
    pytest.param(spoiled(step={"duration_ms": math.nan}), id="nan-duration"),
    pytest.param(spoiled(step={"duration_ms": 5e-324}), id="tiny-duration"),
    pytest.param(spoiled({"goal_type": "  "}), id="blank-goal-type"),
    pytest.param(spoiled({"error": " \t "}), id="blank-error"),
    pytest.param(spoiled({"error": "\U0001f600 " + "é" * 5000}), id="long-astral-error"),
    pytest.param(spoiled({"agent_id": "\U0001f600" * 200}), id="200-astral-characters"),
    pytest.param(spoiled({"started_at": " 2026-03-01T12:00:00Z"}), id="padded-timestamp"),
    pytest.param(
        spoiled({"started_at": "2026-03-01 13:00:00.1234567+01:00"}), id="seven-digit-fraction"
    ),
    pytest.param(
        spoiled({"started_at": TIMESTAMP_MIN, "finished_at": TIMESTAMP_MAX}), id="whole-range"
    ),
    pytest.param(spoiled({"started_at": "1900-01-01T00:30:00+00:30"}), id="earliest-with-offset"),
    pytest.param(
        spoiled(
            {"finished_at": datetime(2026, 3, 1, 21, 0, 5, tzinfo=timezone(timedelta(hours=9)))}
        ),
        id="offset-datetime",
    ),
    pytest.param(
        spoiled(step={"step_index": 0})
        | {
            "steps": [
                {"step_index": 1, "tool": "respond", "status": "ok"},
                {"step_index": 0, "tool": "search", "status": "ok"},
            ]
        },
        id="steps-out-of-order",
    ),
]


@pytest.mark.parametrize("record", GOOD_EDGES)
def test_plan_and_import_store_an_edge_record_as_plan_holds_it(
    memory_store: HistoryStore, record: dict[str, Any]
) -> None:
    plan = as_plan(record)
    memory_store.import_frames(*as_frames(record))
    memory_store.record_plan(_renamed(plan))
    (imported, recorded) = read_back(memory_store)
    expected = stored_form(plan)
    assert imported == expected
    assert recorded == (expected[0] | {"plan_id": "copy"}, expected[1])


def _renamed(plan: Plan) -> Plan:
    return Plan(
        "copy",
        plan.agent_id,
        plan.status,
        plan.started_at,
        plan.finished_at,
        goal_type=plan.goal_type,
        steps=plan.steps,
        reward=plan.reward,
        error=plan.error,
        priority=plan.priority,
    )


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        pytest.param(
            pd.MultiIndex.from_product([["x"], PLAN_COLUMNS]), "MultiIndex columns", id="multi"
        ),
        pytest.param([*PLAN_COLUMNS[:-1], "plan_id"], "2 columns named 'plan_id'", id="repeated"),
    ],
)
def test_a_plans_table_of_the_wrong_shape_says_what_to_do(
    memory_store: HistoryStore, columns: Any, message: str
) -> None:
    plans, steps = as_frames(GOOD)
    plans = pd.DataFrame(plans.to_numpy(), columns=columns)
    with pytest.raises(InvalidArgumentError, match=message):
        memory_store.import_frames(plans, steps)


def test_unnamed_columns_are_reported_as_missing_with_a_hint(memory_store: HistoryStore) -> None:
    plans, steps = as_frames(GOOD)
    with pytest.raises(
        InvalidRecordError, match=r"no column 'plan_id'.*labels include \[0, 1, 2\]"
    ):
        memory_store.import_frames(pd.DataFrame(plans.to_numpy()), steps)
    with pytest.raises(InvalidArgumentError, match="must be a pandas DataFrame, not list"):
        memory_store.import_frames([GOOD], steps)  # type: ignore[arg-type]


def test_the_stored_tables_are_the_interchange_columns_after_seq() -> None:
    assert PLANS_SCHEMA.names == ["seq", *PLAN_COLUMNS]
    assert STEPS_SCHEMA.names == ["seq", *STEP_COLUMNS]
