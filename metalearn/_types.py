"""Records of execution history: a :class:`Plan` and its :class:`Step` s.

Both are frozen dataclasses validated on construction, so a record that exists is a
record the store accepts. The rules for one field value (``read_*``, returning the value
or a :class:`Refusal`) and the bounds below are shared with the bulk validation of
interchange tables in :mod:`metalearn._interchange`: one set of rules, two entry points.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NoReturn, TypeVar

import numpy as np

from metalearn._errors import InvalidRecordError

__all__ = [
    "BLANK",
    "ISO_UTC_FORMAT",
    "MAX_NAME_LENGTH",
    "MAX_STEP_INDEX",
    "NAIVE_TIMESTAMP_PATTERN",
    "NUMBER_PATTERN",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "PRIORITY_RULE",
    "STEP_INDEX_RULE",
    "TIMESTAMP_MAX",
    "TIMESTAMP_MIN",
    "TIMESTAMP_PATTERN",
    "Plan",
    "PlanStatus",
    "Refusal",
    "Step",
    "StepStatus",
    "epoch_micros",
    "from_epoch_micros",
    "is_missing",
    "read_integer",
    "read_number",
    "read_text",
    "read_timestamp",
]

MAX_NAME_LENGTH = 200
"""Longest plan id, agent id, goal type or tool name accepted (characters)."""

PRIORITY_MIN = -(2**31)
"""Lowest ``priority``: the store's ``Integer`` column and DuckDB's INTEGER are signed 32-bit."""
PRIORITY_MAX = 2**31 - 1
"""Highest ``priority`` (2,147,483,647)."""
PRIORITY_RULE = f"it must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX} (32-bit)"

MAX_STEP_INDEX = 2**31 - 1
"""Highest ``step_index``: a 32-bit integer in the store, Arrow and DuckDB alike."""
STEP_INDEX_RULE = f"it must be an integer >= 0 (at most {MAX_STEP_INDEX})"

TIMESTAMP_MIN = datetime(1900, 1, 1, tzinfo=UTC)
"""Earliest ``started_at``/``finished_at`` accepted (inclusive)."""
TIMESTAMP_MAX = datetime(2200, 1, 1, tzinfo=UTC)
"""Latest ``started_at``/``finished_at`` accepted (inclusive). Between the two, every layer
(Python, pandas' nanoseconds, Arrow, DuckDB, both stores) holds a timestamp exactly."""
_TIMESTAMP_RANGE = (
    f"it must be between {TIMESTAMP_MIN:%Y-%m-%d} and {TIMESTAMP_MAX:%Y-%m-%d} (UTC, inclusive)"
)
# An offset moves a local time by less than a day: local times a day outside the range are
# out of it for sure, and only those inside are converted (year 1 or 9999 would overflow).
_LOCAL_MIN = (TIMESTAMP_MIN - timedelta(days=1)).replace(tzinfo=None)
_LOCAL_MAX = (TIMESTAMP_MAX + timedelta(days=1)).replace(tzinfo=None)

BLANK = " \t\n\r\f\v"
"""The characters a blank cell may hold: text of only these means "no value"."""

# The text forms of numbers and timestamps, as regexes both Python's re and RE2 (pyarrow,
# under pandas' str methods) read alike: explicit ASCII classes, no \d, \s or lookarounds.
NUMBER_PATTERN = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
"""Decimal text of a number (``12``, ``-0.5``, ``.5``, ``1e-3``); no ``inf``, ``nan`` or ``_``."""
_DATE = r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,9})?)?"
_OFFSET = r"(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)"
NAIVE_TIMESTAMP_PATTERN = f"{_DATE}[T ]{_TIME}"
"""An ISO-8601 date and time without an offset (refused: it is ambiguous)."""
TIMESTAMP_PATTERN = f"{_DATE}[T ]{_TIME}{_OFFSET}"
"""ISO-8601 text of a timestamp: ``YYYY-MM-DD``, ``T`` or a space, ``HH:MM[:SS[.f]]`` (up to
nine fraction digits, truncated to microseconds), then ``Z`` or ``±HH[:MM]``."""
_NUMBER_RE = re.compile(NUMBER_PATTERN)
_TIMESTAMP_RE = re.compile(TIMESTAMP_PATTERN)
_NAIVE_TIMESTAMP_RE = re.compile(NAIVE_TIMESTAMP_PATTERN)

ISO_UTC_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""How every file metalearn writes spells a UTC timestamp (``2026-03-01T12:00:00.000000Z``)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch of a timezone-aware datetime (the stored form)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_epoch_micros(micros: int) -> datetime:
    """The UTC datetime of a number of microseconds since the Unix epoch."""
    return _EPOCH + timedelta(microseconds=int(micros))


# -- the rules for one value, shared with the bulk checks of _interchange ---------------------

NOT_A_STRING = "it must be a string"
NUL_TEXT = "it contains a NUL character (\\x00), which PostgreSQL cannot store"
SURROGATE_TEXT = "it contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode"
NOT_A_NUMBER = "it must be a number or its decimal text (None, NaN or blank when unknown)"
NOT_FINITE = "it must be finite and fit a double (None, NaN or blank when unknown)"
TIMESTAMP_REQUIRED = "a timestamp is required"
NAIVE_TIMESTAMP = "naive timestamps are ambiguous: end it with 'Z' (UTC) or an offset like +02:00"
NOT_A_TIMESTAMP = "it must be an ISO-8601 timestamp with an offset, like 2026-03-01T12:00:00Z"
NOT_A_DATE = "it is not a valid date and time"
TIMESTAMP_RANGE = _TIMESTAMP_RANGE


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a value is refused: the rule it breaks, as a message ends (``"it must be ..."``)."""

    rule: str


def is_missing(value: object) -> bool:
    """Whether a value means "no value": None, a NaN, or pandas' NA or NaT (as in frames)."""
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(value != value)
    if isinstance(value, np.datetime64 | np.timedelta64):
        return bool(np.isnat(value))
    # pandas' NA and NaT, named rather than imported: records need no dataframe library
    return type(value).__name__ in ("NAType", "NaTType")


def read_text(value: object) -> str | Refusal | None:
    """A text value: a string both stores hold, or None when missing or blank."""
    if is_missing(value):
        return None
    if not isinstance(value, str):
        return Refusal(f"{NOT_A_STRING}, not {type(value).__name__}")
    if not value.strip(BLANK):
        return None
    if "\x00" in value:
        return Refusal(NUL_TEXT)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return Refusal(SURROGATE_TEXT)
    return value


def read_number(value: object) -> float | Refusal | None:
    """A finite double, from a real number or its decimal text; None when missing or blank."""
    if is_missing(value):
        return None
    if isinstance(value, str):
        text = value.strip(BLANK)
        if not text:
            return None
        if not _NUMBER_RE.fullmatch(text):
            return Refusal(NOT_A_NUMBER)
        number = float(text)
    elif isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return Refusal(NOT_A_NUMBER)
    else:
        try:
            number = float(value)
        except OverflowError:  # an int such as 10**400: no double holds it
            return Refusal(NOT_FINITE)
    return number if math.isfinite(number) else Refusal(NOT_FINITE)


def read_integer(value: object, low: int, high: int, rule: str) -> int | Refusal | None:
    """A whole number in ``[low, high]`` (``3``, ``3.0`` or ``"3"``); None when missing."""
    number = read_number(value)
    if number is None:
        return None
    if isinstance(number, Refusal) or not number.is_integer() or not low <= number <= high:
        return Refusal(rule)
    return int(number)


def read_timestamp(value: object) -> datetime | Refusal:
    """A UTC datetime in whole microseconds, from an aware datetime or ISO-8601 text."""
    if isinstance(value, str):
        parsed = _parse_timestamp(value)
        if isinstance(parsed, Refusal):
            return parsed
        value = parsed
    if is_missing(value):
        return Refusal(TIMESTAMP_REQUIRED)
    if not isinstance(value, datetime):
        return Refusal("it must be a timezone-aware datetime or ISO-8601 text with an offset")
    try:
        offset = value.utcoffset()
    except ValueError:  # a tzinfo whose offset is a day or more
        offset = None
    if offset is None:
        return Refusal(
            "naive datetimes are ambiguous; pass a timezone-aware one "
            "(e.g. datetime.now(timezone.utc))"
        )
    if not _LOCAL_MIN <= value.replace(tzinfo=None) <= _LOCAL_MAX:
        return Refusal(TIMESTAMP_RANGE)
    utc = value.astimezone(UTC)
    if not TIMESTAMP_MIN <= utc <= TIMESTAMP_MAX:
        return Refusal(TIMESTAMP_RANGE)
    return from_epoch_micros(epoch_micros(utc))  # a plain datetime, as stored


def _parse_timestamp(text: str) -> datetime | Refusal:
    text = text.strip(BLANK)
    if not text:
        return Refusal(TIMESTAMP_REQUIRED)
    if not _TIMESTAMP_RE.fullmatch(text):
        return Refusal(NAIVE_TIMESTAMP if _NAIVE_TIMESTAMP_RE.fullmatch(text) else NOT_A_TIMESTAMP)
    if not TIMESTAMP_MIN.year - 1 <= int(text[:4]) <= TIMESTAMP_MAX.year:
        return Refusal(TIMESTAMP_RANGE)
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # a day the month does not have
        return Refusal(NOT_A_DATE)


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
        f"{_where(plan_id, step_index)}: field {name!r} = {_shown(value)}; {rule}",
        plan_id=plan_id,
        step_index=step_index,
        field=name,
    )


def _shown(value: Any) -> str:
    """A short repr: a value can be a 10**400 or a million characters long."""
    try:
        text = repr(value)
    except Exception:  # a value whose repr fails still gets its error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


_T = TypeVar("_T")


def _kept(
    plan_id: str | None, step_index: int | None, name: str, value: Any, read: _T | Refusal
) -> _T:
    if isinstance(read, Refusal):
        _fail(plan_id, step_index, name, value, read.rule)
    return read


def _name(plan_id: str | None, step_index: int | None, name: str, value: Any) -> str:
    text = _optional_name(plan_id, step_index, name, value)
    if text is None:
        _fail(plan_id, step_index, name, value, "it must be a non-empty string")
    return text


def _optional_name(
    plan_id: str | None, step_index: int | None, name: str, value: Any
) -> str | None:
    text = _kept(plan_id, step_index, name, value, read_text(value))
    if text is not None and len(text) > MAX_NAME_LENGTH:
        _fail(
            plan_id,
            step_index,
            name,
            f"{text[:20]}...",
            f"it has {len(text)} characters; at most {MAX_NAME_LENGTH} are allowed",
        )
    return text


_E = TypeVar("_E", bound=StrEnum)


def _enum(plan_id: str | None, step_index: int | None, name: str, value: Any, kind: type[_E]) -> _E:
    try:
        return kind(value)
    except (ValueError, TypeError):
        allowed = ", ".join(repr(m.value) for m in kind)
        _fail(plan_id, step_index, name, value, f"allowed values are {allowed}")


def _index(plan_id: str | None, value: Any) -> int:
    index = read_integer(value, 0, MAX_STEP_INDEX, STEP_INDEX_RULE)
    if index is None:
        _fail(plan_id, None, "step_index", value, STEP_INDEX_RULE)
    return _kept(plan_id, None, "step_index", value, index)


def _number(
    plan_id: str | None, step_index: int | None, name: str, value: Any, *, minimum: float | None
) -> float | None:
    number = _kept(plan_id, step_index, name, value, read_number(value))
    if number is not None and minimum is not None and number < minimum:
        _fail(plan_id, step_index, name, value, f"it must be >= {minimum:g} or None")
    return number


def _timestamp(plan_id: str, name: str, value: Any) -> datetime:
    return _kept(plan_id, None, name, value, read_timestamp(value))


@dataclass(frozen=True, slots=True, init=False)
class Step:
    """One tool call of a plan.

    ``step_index`` counts from 0 within its plan; ``duration_ms`` is ``None`` when unknown.
    Every field follows the rules of :class:`Plan`.

    >>> Step(0, "search")
    Step(step_index=0, tool='search', status=<StepStatus.OK: 'ok'>, duration_ms=None, error=None)
    >>> Step(1, "fetch", "error", duration_ms=-5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    metalearn._errors.InvalidRecordError: step 1: field 'duration_ms' = -5; it must be >= 0 ...
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
    def _from_mapping(cls, plan_id: str, position: int, values: Mapping[Any, Any]) -> Step:
        for key in values:
            if key not in _STEP_FIELDS:
                _fail(
                    plan_id,
                    position,
                    key if isinstance(key, str) else repr(key),
                    values[key],
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
    set_(step, "error", _kept(plan_id, index, "error", error, read_text(error)))


def _steps(plan_id: str, steps: Any) -> tuple[Step, ...]:
    if isinstance(steps, str | bytes | Mapping) or not isinstance(steps, Iterable):
        _fail(
            plan_id,
            None,
            "steps",
            steps,
            "it must be a sequence of Step objects or mappings (an empty list for none)",
        )
    built = []
    for position, step in enumerate(steps):
        if isinstance(step, Mapping):
            step = Step._from_mapping(plan_id, position, step)
        elif not isinstance(step, Step):
            _fail(plan_id, position, "steps", step, "each step must be a Step or a mapping")
        built.append(step)
    return _numbered(plan_id, built)


def _numbered(plan_id: str, steps: list[Step]) -> tuple[Step, ...]:
    """The steps in step_index order, which must be exactly 0..n-1 (as rows of a table)."""
    ordered = sorted(steps, key=lambda step: step.step_index)
    for expected, step in enumerate(ordered):
        if step.step_index != expected:
            if step.step_index > expected:
                detail = f"index {expected} is missing"
            else:
                detail = f"index {step.step_index} repeats"
            _fail(
                plan_id,
                step.step_index,
                "step_index",
                step.step_index,
                f"the {len(steps)} steps must be numbered 0..{len(steps) - 1}, each index "
                f"once; {detail}",
            )
    return tuple(ordered)


@dataclass(frozen=True, slots=True, init=False)
class Plan:
    """A finalized plan: the agent, the goal, the ordered steps and how it ended.

    Every field has the bounds the stores (SQLite and PostgreSQL), Arrow and the DuckDB
    warehouse all hold, and an import of interchange tables applies the same rules:

    - ``plan_id``, ``agent_id``, ``goal_type`` and a step's ``tool``: non-empty strings of
      at most ``MAX_NAME_LENGTH`` (200) characters (``goal_type`` may be missing).
    - Text (those and ``error``): no NUL character (PostgreSQL cannot store one) and no lone
      surrogate (not valid Unicode). Missing is ``None``, NaN, ``""`` or blank
      (only spaces, tabs and line breaks), and a missing optional text reads back ``None``.
    - ``started_at``, ``finished_at``: timezone-aware datetimes, or ISO-8601 text with ``Z``
      or an offset (``2026-01-05T10:00:00Z``, ``2026-01-05 11:00:00.5+01:00``), between
      ``TIMESTAMP_MIN`` (1900-01-01) and ``TIMESTAMP_MAX`` (2200-01-01) in UTC; stored in
      UTC to the microsecond. ``finished_at`` is not before ``started_at``.
    - ``reward`` and a step's ``duration_ms`` (>= 0): finite numbers that fit a double, or
      their decimal text; ``None``/NaN/blank when unknown. Booleans are not numbers.
    - ``priority``: an integer from ``PRIORITY_MIN`` to ``PRIORITY_MAX`` (signed 32-bit,
      -2147483648..2147483647); missing means 0. It only orders background analysis;
      higher runs first.
    - ``steps``: :class:`Step` objects or mappings with the same fields (``step_index``
      defaults to the position), numbered exactly 0..n-1 and kept in that order.

    Whole-valued numbers and their text count as integers (``3.0``, ``"3"``) for
    ``priority`` and ``step_index``. A refused value raises :class:`InvalidRecordError`
    naming the plan, the step and the field.

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
    >>> Plan("p-3", "support-bot", "failed", "2026-01-05T10:00:00Z", "2026-01-05T10:00:01Z",
    ...      priority=2**31)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    metalearn._errors.InvalidRecordError: plan 'p-3': field 'priority' = 2147483648; it must be ...
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
        priority: int | None = 0,
    ) -> None:
        # Fields are checked in the order of the interchange columns, steps last, so that
        # a record with several faults is refused for the same one by an import.
        set_ = object.__setattr__
        plan_id = _name(None, None, "plan_id", plan_id)
        set_(self, "plan_id", plan_id)
        set_(self, "agent_id", _name(plan_id, None, "agent_id", agent_id))
        set_(self, "goal_type", _optional_name(plan_id, None, "goal_type", goal_type))
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
        set_(self, "reward", _number(plan_id, None, "reward", reward, minimum=None))
        set_(self, "error", _kept(plan_id, None, "error", error, read_text(error)))
        level = _kept(
            plan_id,
            None,
            "priority",
            priority,
            read_integer(priority, PRIORITY_MIN, PRIORITY_MAX, PRIORITY_RULE),
        )
        set_(self, "priority", 0 if level is None else level)
        set_(self, "steps", _steps(plan_id, steps))

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
