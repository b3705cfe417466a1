"""Plan and Step: construction, normalisation and every validation rule."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from metalearn import InvalidRecordError, MetalearnError, Plan, PlanStatus, Step, StepStatus

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
END = START + timedelta(seconds=5)


def plan_kwargs(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "plan_id": "p-1",
        "agent_id": "agent-a",
        "status": "succeeded",
        "started_at": START,
        "finished_at": END,
        "steps": [Step(0, "search"), Step(1, "fetch", "error", 12.5, "HTTP 500")],
    }
    values.update(changes)
    return values


def test_valid_plan_is_normalised() -> None:
    plan = Plan(
        **plan_kwargs(
            status="failed",
            started_at="2026-03-01T14:00:00+02:00",
            finished_at="2026-03-01T12:00:05Z",
            steps=[{"tool": "search"}, {"tool": "fetch", "status": "skipped"}],
            goal_type="",
            error="",
            reward=1,
        )
    )
    assert plan.status is PlanStatus.FAILED
    assert plan.started_at == START and plan.started_at.tzinfo is UTC
    assert plan.finished_at == END
    assert plan.steps == (Step(0, "search"), Step(1, "fetch", StepStatus.SKIPPED))
    assert plan.goal_type is None and plan.error is None
    assert plan.reward == 1.0 and isinstance(plan.reward, float)
    assert plan.duration_s == 5.0
    assert plan.tools == ("search", "fetch")
    assert not plan.succeeded


def test_records_are_frozen() -> None:
    plan = Plan(**plan_kwargs())
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.status = PlanStatus.FAILED  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.steps[0].tool = "other"  # type: ignore[misc]


def test_statuses_are_str_enums() -> None:
    assert [s.value for s in PlanStatus] == ["succeeded", "failed"]
    assert [s.value for s in StepStatus] == ["ok", "error", "skipped"]
    assert PlanStatus.SUCCEEDED == "succeeded" and isinstance(StepStatus.OK, str)


NAIVE = datetime(2026, 3, 1, 12, 0)
LONG = "x" * 201

PLAN_CASES = [
    pytest.param(
        {"plan_id": ""},
        "plan_id",
        r"record: field 'plan_id' = ''; it must be a non-empty",
        id="empty-plan-id",
    ),
    pytest.param(
        {"plan_id": LONG},
        "plan_id",
        r"field 'plan_id' .*201 characters; at most 200",
        id="plan-id-too-long",
    ),
    pytest.param(
        {"agent_id": "  "},
        "agent_id",
        r"plan 'p-1': field 'agent_id' = '  '; it must",
        id="blank-agent-id",
    ),
    pytest.param(
        {"agent_id": LONG},
        "agent_id",
        r"plan 'p-1': field 'agent_id' .*at most 200",
        id="agent-id-too-long",
    ),
    pytest.param(
        {"goal_type": LONG},
        "goal_type",
        r"plan 'p-1': field 'goal_type' .*at most 200",
        id="goal-type-too-long",
    ),
    pytest.param(
        {"status": "done"},
        "status",
        r"plan 'p-1': field 'status' = 'done'; allowed values are 'succeeded', 'failed'",
        id="unknown-plan-status",
    ),
    pytest.param(
        {"started_at": NAIVE},
        "started_at",
        r"plan 'p-1': field 'started_at' = .*naive datetimes are ambiguous",
        id="naive-started-at",
    ),
    pytest.param(
        {"finished_at": "2026-03-01T12:00:05"},
        "finished_at",
        r"plan 'p-1': field 'finished_at' = .*naive",
        id="naive-finished-at-string",
    ),
    pytest.param(
        {"finished_at": "yesterday"},
        "finished_at",
        r"plan 'p-1': field 'finished_at' = 'yesterday'; it must be an ISO-8601",
        id="unparsable-timestamp",
    ),
    pytest.param(
        {"finished_at": START - timedelta(seconds=1)},
        "finished_at",
        r"plan 'p-1': field 'finished_at' = .*earlier than started_at",
        id="finished-before-started",
    ),
    pytest.param(
        {"reward": math.inf},
        "reward",
        r"plan 'p-1': field 'reward' = inf; it must be finite",
        id="infinite-reward",
    ),
    pytest.param(
        {"priority": True},
        "priority",
        r"plan 'p-1': field 'priority' = True; it must be an integer",
        id="bool-priority",
    ),
    pytest.param(
        {"steps": "search"}, "steps", r"plan 'p-1': field 'steps'", id="steps-not-a-sequence"
    ),
    pytest.param(
        {"steps": [Step(1, "search")]},
        "step_index",
        r"plan 'p-1', step 1: field 'step_index' = 1; "
        r"steps must be numbered 0..n-1 in order \(expected 0\)",
        id="steps-start-at-1",
    ),
    pytest.param(
        {"steps": [Step(0, "a"), Step(2, "b")]},
        "step_index",
        r"plan 'p-1', step 2: .*expected 1",
        id="step-index-gap",
    ),
    pytest.param(
        {"steps": [Step(0, "a"), Step(0, "b")]},
        "step_index",
        r"plan 'p-1', step 0: .*expected 1",
        id="duplicate-step-index",
    ),
    pytest.param(
        {"steps": [{"tool": "a"}, {"tool": ""}]},
        "tool",
        r"plan 'p-1', step 1: field 'tool' = ''; it must be a non-empty string",
        id="empty-tool",
    ),
    pytest.param(
        {"steps": [{"tool": LONG}]},
        "tool",
        r"plan 'p-1', step 0: field 'tool' .*201 characters",
        id="tool-too-long",
    ),
    pytest.param(
        {"steps": [{"tool": "a", "status": "crashed"}]},
        "status",
        r"plan 'p-1', step 0: field 'status' = 'crashed'; "
        r"allowed values are 'ok', 'error', 'skipped'",
        id="unknown-step-status",
    ),
    pytest.param(
        {"steps": [{"tool": "a"}, {"tool": "b", "duration_ms": -5.0}]},
        "duration_ms",
        r"plan 'p-1', step 1: field 'duration_ms' = -5.0; it must be >= 0 or None",
        id="negative-duration",
    ),
    pytest.param(
        {"steps": [{"tool": "a", "duration_ms": math.nan}]},
        "duration_ms",
        r"plan 'p-1', step 0: field 'duration_ms' = nan; it must be finite",
        id="nan-duration",
    ),
    pytest.param(
        {"steps": [{"tool": "a", "duration_ms": math.inf}]},
        "duration_ms",
        r"plan 'p-1', step 0: field 'duration_ms' = inf; it must be finite",
        id="infinite-duration",
    ),
    pytest.param(
        {"steps": [{"tool": "a", "duration_ms": "12"}]},
        "duration_ms",
        r"plan 'p-1', step 0: field 'duration_ms' = '12'; it must be a number",
        id="string-duration",
    ),
    pytest.param(
        {"steps": [{"tool": "a", "cost": 3}]},
        "cost",
        r"plan 'p-1', step 0: field 'cost' = 3; a step has only the fields",
        id="unknown-step-field",
    ),
]


@pytest.mark.parametrize(("changes", "field", "message"), PLAN_CASES)
def test_invalid_plan_raises_typed_error(changes: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(InvalidRecordError, match=message) as caught:
        Plan(**plan_kwargs(**changes))
    error = caught.value
    assert isinstance(error, MetalearnError) and isinstance(error, ValueError)
    assert error.field == field
    if changes.get("plan_id", "p-1") == "p-1":
        assert error.plan_id == "p-1"


STEP_CASES = [
    pytest.param(
        {"step_index": -1},
        "step_index",
        r"record: field 'step_index' = -1; it must be an integer >= 0",
        id="negative-index",
    ),
    pytest.param(
        {"step_index": 1.0},
        "step_index",
        r"field 'step_index' = 1.0; it must be an integer",
        id="float-index",
    ),
    pytest.param(
        {"duration_ms": -0.5},
        "duration_ms",
        r"step 3: field 'duration_ms' = -0.5; it must be >= 0",
        id="negative-duration",
    ),
    pytest.param(
        {"status": "fine"},
        "status",
        r"step 3: field 'status' = 'fine'; allowed values",
        id="status",
    ),
    pytest.param(
        {"tool": None},
        "tool",
        r"step 3: field 'tool' = None; it must be a non-empty string",
        id="missing-tool",
    ),
]


@pytest.mark.parametrize(("changes", "field", "message"), STEP_CASES)
def test_invalid_step_raises_typed_error(changes: dict[str, Any], field: str, message: str) -> None:
    values: dict[str, Any] = {"step_index": 3, "tool": "search"} | changes
    with pytest.raises(InvalidRecordError, match=message) as caught:
        Step(**values)
    assert caught.value.field == field and caught.value.step_index in (3, None)


def test_offset_timestamps_compare_in_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    plan = Plan(**plan_kwargs(started_at=datetime(2026, 3, 1, 21, 0, tzinfo=tokyo)))
    assert plan.started_at == START
    assert plan.started_at.utcoffset() == timedelta(0)
