"""Records of execution history: a :class:`Plan` and its :class:`Step` s.

Both are frozen dataclasses validated on construction, so a record that exists is a
record the store accepts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NoReturn, TypeVar

from metalearn._errors import InvalidRecordError

__all__ = [
    "ISO_UTC_FORMAT",
    "MAX_NAME_LENGTH",
    "Plan",
    "PlanStatus",
    "Step",
    "StepStatus",
    "epoch_micros",
    "from_epoch_micros",
]

MAX_NAME_LENGTH = 200
"""Longest plan id, agent id, goal type or tool name accepted (characters)."""


ISO_UTC_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""How every file metalearn writes spells a UTC timestamp (``2026-03-01T12:00:00.000000Z``)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch of a timezone-aware datetime (the stored form)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_epoch_micros(micros: int) -> datetime:
    """The UTC datetime of a number of microseconds since the Unix epoch."""
    return _EPOCH + timedelta(microseconds=int(micros))


class PlanStatus(StrEnum):
    """How a plan ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


class StepStatus(StrEnum):
    """How one step (tool call) of a plan ended."""

    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"


def _where(plan_id: str | None, step_index: int | None) -> str:
    parts = []
    if plan_id is not None:
        parts.append(f"plan {plan_id!r}")
    if step_index is not None:
        parts.append(f"step {step_index}")
    return ", ".join(parts) or "record"


def _fail(
    plan_id: str | None, step_index: int | None, name: str, value: Any, rule: str
) -> NoReturn:
    raise InvalidRecordError(
        f"{_where(plan_id, step_index)}: field {name!r} = {value!r}; {rule}",
        plan_id=plan_id,
        step_index=step_index,
        field=name,
    )


def _name(plan_id: str | None, step_index: int | None, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(plan_id, step_index, name, value, "it must be a non-empty string")
    if len(value) > MAX_NAME_LENGTH:
        _fail(
            plan_id,
            step_index,
            name,
            f"{value[:20]}...",
            f"it has {len(value)} characters; at most {MAX_NAME_LENGTH} are allowed",
        )
    return value


def _optional_text(
    plan_id: str | None, step_index: int | None, name: str, value: Any
) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        _fail(plan_id, step_index, name, value, "it must be a string or None")
    return value


_E = TypeVar("_E", bound=StrEnum)


def _enum(plan_id: str | None, step_index: int | None, name: str, value: Any, kind: type[_E]) -> _E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in kind)
        _fail(plan_id, step_index, name, value, f"allowed values are {allowed}")


def _index(plan_id: str | None, step_index: Any) -> int:
    if isinstance(step_index, bool) or not isinstance(step_index, int) or step_index < 0:
        _fail(plan_id, None, "step_index", step_index, "it must be an integer >= 0")
    return step_index


def _number(
    plan_id: str | None, step_index: int | None, name: str, value: Any, *, minimum: float | None
) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(plan_id, step_index, name, value, "it must be a number or None")
    number = float(value)
    if not math.isfinite(number):
        _fail(plan_id, step_index, name, value, "it must be finite (or None when unknown)")
    if minimum is not None and number < minimum:
        _fail(plan_id, step_index, name, value, f"it must be >= {minimum:g} or None")
    return number


def _timestamp(plan_id: str, name: str, value: Any) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            _fail(plan_id, None, name, value, "it must be an ISO-8601 timestamp with an offset")
    if not isinstance(value, datetime):
        _fail(plan_id, None, name, value, "it must be a timezone-aware datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        _fail(
            plan_id,
            None,
            name,
            value,
            "naive datetimes are ambiguous; pass a timezone-aware one "
            "(e.g. datetime.now(timezone.utc))",
        )
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True, init=False)
class Step:
    """One tool call of a plan.

    ``step_index`` counts from 0 within its plan; ``duration_ms`` is ``None`` when unknown.

    >>> Step(0, "search")
    Step(step_index=0, tool='search', status=<StepStatus.OK: 'ok'>, duration_ms=None, error=None)
    >>> Step(1, "fetch", "error", duration_ms=-5)
    Traceback (most recent call last):
    ...
    metalearn._errors.InvalidRecordError: step 1: field 'duration_ms' = -5; it must be >= 0 or None
    """

    step_index: int
    tool: str
    status: StepStatus
    duration_ms: float | None
    error: str | None

    def __init__(
        self,
        step_index: int,
        tool: str,
        status: StepStatus | str = StepStatus.OK,
        duration_ms: float | None = None,
        error: str | None = None,
    ) -> None:
        _init_step(self, None, step_index, tool, status, duration_ms, error)

    @classmethod
    def _from_mapping(cls, plan_id: str, position: int, values: Mapping[str, Any]) -> Step:
        unknown = sorted(set(values) - set(_STEP_FIELDS))
        if unknown:
            _fail(
                plan_id,
                position,
                unknown[0],
                values[unknown[0]],
                f"a step has only the fields {', '.join(_STEP_FIELDS)}",
            )
        step = object.__new__(cls)
        _init_step(
            step,
            plan_id,
            values.get("step_index", position),
            values.get("tool"),
            values.get("status", StepStatus.OK),
            values.get("duration_ms"),
            values.get("error"),
        )
        return step


_STEP_FIELDS = ("step_index", "tool", "status", "duration_ms", "error")


def _init_step(
    step: Step,
    plan_id: str | None,
    step_index: Any,
    tool: Any,
    status: Any,
    duration_ms: Any,
    error: Any,
) -> None:
    index = _index(plan_id, step_index)
    set_ = object.__setattr__
    set_(step, "step_index", index)
    set_(step, "tool", _name(plan_id, index, "tool", tool))
    set_(step, "status", _enum(plan_id, index, "status", status, StepStatus))
    set_(step, "duration_ms", _number(plan_id, index, "duration_ms", duration_ms, minimum=0))
    set_(step, "error", _optional_text(plan_id, index, "error", error))


@dataclass(frozen=True, slots=True, init=False)
class Plan:
    """A finalized plan: the agent, the goal, the ordered steps and how it ended.

    Timestamps must be timezone-aware (ISO-8601 strings with an offset are accepted) and
    are stored in UTC. ``steps`` accepts :class:`Step` objects or mappings with the same
    fields (``step_index`` defaults to the position). ``priority`` only orders background
    analysis; higher runs first.

    >>> plan = Plan(
    ...     "p-1", "support-bot", "succeeded",
    ...     "2026-01-05T10:00:00Z", "2026-01-05T10:00:04Z",
    ...     goal_type="refund",
    ...     steps=[{"tool": "lookup_order"}, {"tool": "refund", "duration_ms": 812.5}],
    ... )
    >>> plan.status, [s.tool for s in plan.steps], plan.duration_s
    (<PlanStatus.SUCCEEDED: 'succeeded'>, ['lookup_order', 'refund'], 4.0)
    >>> Plan("p-2", "support-bot", "failed", "2026-01-05T10:00:00Z", "2026-01-05T09:00:00Z")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    metalearn._errors.InvalidRecordError: plan 'p-2': field 'finished_at' = '2026-01-05T09:00:00...
    """

    plan_id: str
    agent_id: str
    status: PlanStatus
    started_at: datetime
    finished_at: datetime
    goal_type: str | None
    steps: tuple[Step, ...]
    reward: float | None
    error: str | None
    priority: int

    def __init__(
        self,
        plan_id: str,
        agent_id: str,
        status: PlanStatus | str,
        started_at: datetime | str,
        finished_at: datetime | str,
        *,
        goal_type: str | None = None,
        steps: Iterable[Step | Mapping[str, Any]] = (),
        reward: float | None = None,
        error: str | None = None,
        priority: int = 0,
    ) -> None:
        set_ = object.__setattr__
        plan_id = _name(None, None, "plan_id", plan_id)
        set_(self, "plan_id", plan_id)
        set_(self, "agent_id", _name(plan_id, None, "agent_id", agent_id))
        if goal_type not in (None, ""):
            _name(plan_id, None, "goal_type", goal_type)
        set_(self, "goal_type", goal_type or None)
        set_(self, "status", _enum(plan_id, None, "status", status, PlanStatus))
        started = _timestamp(plan_id, "started_at", started_at)
        finished = _timestamp(plan_id, "finished_at", finished_at)
        if finished < started:
            _fail(
                plan_id,
                None,
                "finished_at",
                finished.isoformat(),
                f"it must not be earlier than started_at ({started.isoformat()})",
            )
        set_(self, "started_at", started)
        set_(self, "finished_at", finished)
        set_(self, "steps", self._steps(plan_id, steps))
        set_(self, "reward", _number(plan_id, None, "reward", reward, minimum=None))
        set_(self, "error", _optional_text(plan_id, None, "error", error))
        if isinstance(priority, bool) or not isinstance(priority, int):
            _fail(plan_id, None, "priority", priority, "it must be an integer")
        set_(self, "priority", priority)

    @staticmethod
    def _steps(plan_id: str, steps: Iterable[Step | Mapping[str, Any]]) -> tuple[Step, ...]:
        if isinstance(steps, str | bytes | Mapping):
            _fail(plan_id, None, "steps", steps, "it must be a sequence of Step objects")
        built = []
        for position, step in enumerate(steps):
            if isinstance(step, Mapping):
                step = Step._from_mapping(plan_id, position, step)
            elif not isinstance(step, Step):
                _fail(plan_id, position, "steps", step, "each step must be a Step or a mapping")
            if step.step_index != position:
                _fail(
                    plan_id,
                    step.step_index,
                    "step_index",
                    step.step_index,
                    f"steps must be numbered 0..n-1 in order (expected {position})",
                )
            built.append(step)
        return tuple(built)

    @property
    def succeeded(self) -> bool:
        """Whether the plan ended ``succeeded``."""
        return self.status is PlanStatus.SUCCEEDED

    @property
    def duration_s(self) -> float:
        """Wall-clock time from start to finish, in seconds."""
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def tools(self) -> tuple[str, ...]:
        """The tool names of the steps, in order."""
        return tuple(step.tool for step in self.steps)
