"""One set of rules, two entry points: a bad record is refused alike by Plan() and by an import."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
import pytest

from metalearn import HistoryStore, InvalidRecordError, Plan
from metalearn._interchange import PLAN_COLUMNS, STEP_COLUMNS
from metalearn._readers import PLANS_SCHEMA, STEPS_SCHEMA

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
    options = {k: record[k] for k in ("goal_type", "reward", "priority", "steps")}
    fields = ("plan_id", "agent_id", "status", "started_at", "finished_at")
    return Plan(*(record[k] for k in fields), **options)


def as_frames(record: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    plan_row = {k: v for k, v in record.items() if k != "steps"}
    step_rows = [{"plan_id": record["plan_id"], **s} for s in record["steps"]]
    return pd.DataFrame([plan_row], dtype=object), pd.DataFrame(step_rows, dtype=object)


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


def test_the_stored_tables_are_the_interchange_columns_after_seq() -> None:
    assert PLANS_SCHEMA.names == ["seq", *PLAN_COLUMNS]
    assert STEPS_SCHEMA.names == ["seq", *STEP_COLUMNS]
