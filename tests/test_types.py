"""Plan and Step: construction, normalisation and every validation rule."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest

from metalearn import InvalidRecordError, MetalearnError, Plan, PlanStatus, Step, StepStatus
from metalearn._types import PRIORITY_MAX, PRIORITY_MIN, TIMESTAMP_MAX, TIMESTAMP_MIN

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
        r"the 1 steps must be numbered 0..0, each index once; index 0 is missing",
        id="steps-start-at-1",
    ),
    pytest.param(
        {"steps": [Step(0, "a"), Step(2, "b")]},
        "step_index",
        r"plan 'p-1', step 2: .*index 1 is missing",
        id="step-index-gap",
    ),
    pytest.param(
        {"steps": [Step(0, "a"), Step(0, "b")]},
        "step_index",
        r"plan 'p-1', step 0: .*index 0 repeats",
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
        {"steps": [{"tool": "a", "duration_ms": -math.inf}]},
        "duration_ms",
        r"plan 'p-1', step 0: field 'duration_ms' = -inf; it must be finite",
        id="minus-infinite-duration",
    ),
    pytest.param(
        {"steps": [{"tool": "a", "duration_ms": math.inf}]},
        "duration_ms",
        r"plan 'p-1', step 0: field 'duration_ms' = inf; it must be finite",
        id="infinite-duration",
    ),
    pytest.param(
        {"steps": [{"tool": "a", "duration_ms": "twelve"}]},
        "duration_ms",
        r"plan 'p-1', step 0: field 'duration_ms' = 'twelve'; it must be a number",
        id="string-duration",
    ),
    pytest.param(
        {"steps": [{"tool": "a", "cost": 3}]},
        "cost",
        r"plan 'p-1', step 0: field 'cost' = 3; a step has only the fields",
        id="unknown-step-field",
    ),
    pytest.param({"priority": 2**31}, "priority", r"from -2147483648 to 2147483647", id="2**31"),
    pytest.param({"priority": -(2**31) - 1}, "priority", r"an integer from", id="below-int32"),
    pytest.param({"priority": 2**63}, "priority", r"an integer from", id="2**63"),
    pytest.param({"priority": "9223372036854775808"}, "priority", r"an integer", id="big-text"),
    pytest.param({"priority": 1.5}, "priority", r"an integer", id="fractional-priority"),
    pytest.param({"priority": math.inf}, "priority", r"an integer", id="infinite-priority"),
    pytest.param({"reward": 10**400}, "reward", r"finite and fit a double", id="reward-10**400"),
    pytest.param({"reward": "1e400"}, "reward", r"finite and fit a double", id="reward-1e400-text"),
    pytest.param({"reward": True}, "reward", r"it must be a number", id="bool-reward"),
    pytest.param({"reward": "nan"}, "reward", r"it must be a number", id="nan-text-reward"),
    pytest.param(
        {"steps": [{"tool": "a", "duration_ms": 10**400}]},
        "duration_ms",
        r"step 0: field 'duration_ms' = 1000.*\(401 characters\); it must be finite",
        id="duration-10**400",
    ),
    pytest.param(
        {"started_at": "0001-01-01T00:00:00+01:00"},
        "started_at",
        r"it must be between 1900-01-01 and 2200-01-01",
        id="year-1-with-offset",
    ),
    pytest.param(
        {"finished_at": datetime(9999, 12, 31, 23, 0, tzinfo=timezone(-timedelta(hours=5)))},
        "finished_at",
        r"it must be between 1900-01-01 and 2200-01-01",
        id="year-9999-with-offset",
    ),
    pytest.param(
        {"started_at": "1899-12-31T23:59:59.999999Z"}, "started_at", r"between", id="before-1900"
    ),
    pytest.param(
        {"finished_at": "2200-01-01T00:00:00.000001Z"}, "finished_at", r"between", id="after-2200"
    ),
    pytest.param(
        {"started_at": "2026-W09-7T12:00:00Z"}, "started_at", r"ISO-8601", id="iso-week-date"
    ),
    pytest.param(
        {"started_at": "2026-03-01T09:00:0.000Z"}, "started_at", r"ISO-8601", id="one-digit-second"
    ),
    pytest.param(
        {"started_at": "2026-02-30T09:00:00Z"}, "started_at", r"not a valid date", id="feb-30"
    ),
    pytest.param({"started_at": None}, "started_at", r"a timestamp is required", id="no-start"),
    pytest.param({"started_at": 1_700_000_000}, "started_at", r"timezone-aware", id="epoch-int"),
    pytest.param({"steps": None}, "steps", r"sequence of Step objects", id="steps-none"),
    pytest.param({"steps": 3}, "steps", r"sequence of Step objects", id="steps-int"),
    pytest.param(
        {"steps": [{"tool": "a", 1: "x"}]}, "1", r"a step has only the fields", id="int-step-key"
    ),
    pytest.param({"agent_id": "a\x00b"}, "agent_id", r"NUL character", id="nul-agent"),
    pytest.param({"error": "boom\x00"}, "error", r"NUL character", id="nul-error"),
    pytest.param({"plan_id": "p\ud800"}, "plan_id", r"lone surrogate", id="surrogate-plan-id"),
    pytest.param({"goal_type": "\udfff"}, "goal_type", r"lone surrogate", id="surrogate-goal"),
    pytest.param(
        {"steps": [{"tool": "a", "error": "\ud83d"}]},
        "error",
        r"lone surrogate",
        id="surrogate-err",
    ),
    pytest.param({"error": 5}, "error", r"it must be a string, not int", id="int-error"),
    pytest.param({"goal_type": 5}, "goal_type", r"it must be a string", id="int-goal-type"),
    pytest.param({"steps": [{"tool": 7}]}, "tool", r"it must be a string", id="int-tool"),
    pytest.param({"status": None}, "status", r"allowed values", id="no-status"),
    pytest.param({"status": ["succeeded"]}, "status", r"allowed values", id="list-status"),
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
        {"step_index": 1.5},
        "step_index",
        r"field 'step_index' = 1.5; it must be an integer",
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


ACCEPTED = [  # a field value, and what the plan holds for it
    pytest.param("priority", PRIORITY_MAX, PRIORITY_MAX, id="max-priority"),
    pytest.param("priority", PRIORITY_MIN, PRIORITY_MIN, id="min-priority"),
    pytest.param("priority", None, 0, id="missing-priority"),
    pytest.param("priority", math.nan, 0, id="nan-priority"),
    pytest.param("priority", 3.0, 3, id="whole-float-priority"),
    pytest.param("priority", " 7 ", 7, id="priority-text"),
    pytest.param("priority", np.int64(-4), -4, id="numpy-priority"),
    pytest.param("reward", math.nan, None, id="nan-reward-is-missing"),
    pytest.param("reward", np.float32(0.5), 0.5, id="numpy-reward"),
    pytest.param("reward", "-1.5e3", -1500.0, id="reward-text"),
    pytest.param("reward", "  ", None, id="blank-reward"),
    pytest.param("reward", 1.7976931348623157e308, 1.7976931348623157e308, id="max-double"),
    pytest.param("goal_type", " \t", None, id="blank-goal-type-is-missing"),
    pytest.param("goal_type", math.nan, None, id="nan-goal-type-is-missing"),
    pytest.param("error", "  \n", None, id="blank-error-is-missing"),
    pytest.param("error", "\U0001f600 astral", "\U0001f600 astral", id="astral-error"),
    pytest.param("started_at", TIMESTAMP_MIN, TIMESTAMP_MIN, id="earliest"),
    pytest.param("started_at", " 2026-03-01T12:00:00Z ", START, id="padded-text"),
    pytest.param("started_at", "2026-03-01 13:00+01", START, id="space-minutes-hour-offset"),
    pytest.param(
        "started_at",
        "1969-12-31T23:59:59.9999999Z",
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        id="seven-digits-truncated",
    ),
    pytest.param(
        "started_at",
        pd.Timestamp("2026-03-01T12:00:00.000000999Z"),
        START,
        id="nanoseconds-floored",
    ),
    pytest.param(
        "finished_at", "2200-01-01T01:00:00+01:00", TIMESTAMP_MAX, id="latest-with-offset"
    ),
]


@pytest.mark.parametrize(("name", "value", "held"), ACCEPTED)
def test_edge_values_are_accepted_and_normalised(name: str, value: Any, held: Any) -> None:
    plan = Plan(**plan_kwargs(**{name: value}))
    assert getattr(plan, name) == held and type(getattr(plan, name)) is type(held)


def test_timestamps_are_plain_utc_datetimes() -> None:
    plan = Plan(**plan_kwargs(started_at=pd.Timestamp("2026-03-01T13:00:00+01:00")))
    assert type(plan.started_at) is datetime and plan.started_at.tzinfo is UTC


def test_steps_are_ordered_by_step_index() -> None:
    plan = Plan(**plan_kwargs(steps=[Step(1, "b"), {"step_index": 0, "tool": "a"}]))
    assert plan.tools == ("a", "b") and [s.step_index for s in plan.steps] == [0, 1]
