"""The interchange format: validating plan/step tables in bulk, reporting an import's
rejections, and spelling timestamps for the files written back.

Plans: ``plan_id, agent_id, goal_type, status, started_at, finished_at`` and the optional
``reward, error, priority``. Steps: ``plan_id, step_index, tool, status`` and the optional
``duration_ms, error``. Timestamps are ISO-8601 with ``Z`` or an offset (or tz-aware
datetime columns). The same rules as :class:`~metalearn.Plan` apply, checked column-wise
so that a million plans validate in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from metalearn._errors import InvalidRecordError
from metalearn._types import _STEP_FIELDS, ISO_UTC_FORMAT, MAX_NAME_LENGTH, PlanStatus, StepStatus

__all__ = [
    "PLAN_COLUMNS",
    "STEP_COLUMNS",
    "ImportReport",
    "Problem",
    "ValidatedFrames",
    "duplicate_problems",
    "format_timestamps",
    "import_report",
    "validate_frames",
]

PLAN_COLUMNS = (
    "plan_id",
    "agent_id",
    "goal_type",
    "status",
    "started_at",
    "finished_at",
    "reward",
    "error",
    "priority",
)
STEP_COLUMNS = ("plan_id", *_STEP_FIELDS)  # a Step's fields, and whose step it is
_REQUIRED = {
    "plans": ("plan_id", "agent_id", "status", "started_at", "finished_at"),
    "steps": ("plan_id", "step_index", "tool", "status"),
}
_HAS_OFFSET = r"(?:Z|z|[+-]\d{2}(?::?\d{2})?)$"

RowLabel = Callable[[str, int], str]


def default_row_label(table: str, row: int) -> str:
    return f"{table} row {row}"


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with one row."""

    table: str
    row: int
    plan_id: str
    field: str
    reason: str


@dataclass(frozen=True)
class ValidatedFrames:
    """Valid rows in storage form, and one problem per rejected plan.

    ``plans``: plan_id, agent_id, goal_type, status, started_at_us, finished_at_us, reward,
    error, priority, indexed by the row's position in the input. ``steps``: plan_id,
    step_index, tool, status, duration_ms, error,
    ordered by plan (as in ``plans``) then step_index.
    """

    plans: pd.DataFrame
    steps: pd.DataFrame
    problems: list[Problem]


class _Checker:
    """Collects per-row problems of one table, keeping the first per row."""

    def __init__(self, table: str, frame: pd.DataFrame) -> None:
        self.table = table
        self.plan_ids = _text(frame["plan_id"]).fillna("")
        self.bad = pd.Series(False, index=frame.index)
        self.problems: list[Problem] = []

    def flag(self, mask: pd.Series, field: str, reason: Callable[[pd.Index], pd.Series]) -> None:
        new = mask.fillna(False).astype(bool) & ~self.bad
        if not new.any():
            return
        rows = np.flatnonzero(new.to_numpy())
        messages = reason(new.index[new.to_numpy()])
        for row, message in zip(rows.tolist(), messages.tolist(), strict=True):
            self.problems.append(
                Problem(self.table, row, str(self.plan_ids.iloc[row]), field, message)
            )
        self.bad |= new


def _text(column: pd.Series) -> pd.Series:
    """Strings with missing or blank cells as NA."""
    text = column.astype("str")
    return text.where(column.notna() & (text.str.strip() != ""))


def _member(values: pd.Series, allowed: pd.Series) -> pd.Series:
    """``values.isin(allowed)`` by hashing (pandas' isin walks big str lists in Python)."""
    positions = pd.Index(allowed.dropna().unique()).get_indexer(values)
    return pd.Series(positions >= 0, index=values.index)


def _optional_text(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame:
        return pd.Series(pd.NA, index=frame.index, dtype="str")
    return _text(frame[name])


def _quoted(values: pd.Series) -> pd.Series:
    return "'" + values.astype("str").str.slice(0, 40) + "'"


def _check_name(check: _Checker, frame: pd.DataFrame, name: str, *, required: bool) -> pd.Series:
    text = _optional_text(frame, name)
    if required:
        check.flag(
            text.isna(),
            name,
            lambda idx: pd.Series(
                f"field {name!r} is empty; it must be a non-empty string", index=idx
            ),
        )
    lengths = text.str.len()
    check.flag(
        lengths > MAX_NAME_LENGTH,
        name,
        lambda idx: (
            f"field {name!r} has "
            + lengths.loc[idx].astype("int64").astype("str")
            + f" characters; at most {MAX_NAME_LENGTH} are allowed"
        ),
    )
    return text


def _check_status(check: _Checker, frame: pd.DataFrame, allowed: tuple[str, ...]) -> pd.Series:
    status = _text(frame["status"])
    values = ", ".join(repr(v) for v in allowed)
    check.flag(
        ~status.isin(allowed),
        "status",
        lambda idx: (
            "field 'status' = "
            + _quoted(status.loc[idx].fillna(""))
            + f"; allowed values are {values}"
        ),
    )
    return status


def _check_number(
    check: _Checker, frame: pd.DataFrame, name: str, *, minimum: float | None
) -> pd.Series:
    if name not in frame:
        return pd.Series(np.nan, index=frame.index)
    raw = frame[name]
    missing = _text(raw).isna()
    number = pd.to_numeric(raw.where(~missing), errors="coerce").astype("float64")
    check.flag(
        number.isna() & ~missing,
        name,
        lambda idx: f"field {name!r} = " + _quoted(raw.loc[idx]) + "; it must be a number or empty",
    )
    check.flag(
        number.isin([np.inf, -np.inf]),
        name,
        lambda idx: (
            f"field {name!r} = "
            + _quoted(raw.loc[idx])
            + "; it must be finite (or empty when unknown)"
        ),
    )
    if minimum is not None:
        check.flag(
            number < minimum,
            name,
            lambda idx: (
                f"field {name!r} = "
                + _quoted(raw.loc[idx])
                + f"; it must be >= {minimum:g} or empty"
            ),
        )
    return number


def _check_integer(
    check: _Checker, frame: pd.DataFrame, name: str, *, default: int | None
) -> pd.Series:
    if name not in frame:
        return pd.Series(default, index=frame.index, dtype="int64")
    raw = frame[name]
    number = pd.to_numeric(raw, errors="coerce")
    integral = number.notna() & np.isfinite(number) & (number == np.floor(number))
    if default is not None:
        missing = _text(raw).isna()
        number, integral = number.where(~missing, default), integral | missing
    else:
        integral &= number >= 0
    rule = "an integer" if default is not None else "an integer >= 0"
    check.flag(
        ~integral,
        name,
        lambda idx: f"field {name!r} = " + _quoted(raw.loc[idx]) + f"; it must be {rule}",
    )
    return number.where(integral, 0).astype("int64")


def _check_timestamp(check: _Checker, frame: pd.DataFrame, name: str) -> pd.Series:
    """Microseconds since the epoch (UTC); naive or unparsable values are flagged."""
    raw = frame[name]
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        parsed = raw.dt.tz_convert("UTC")
        check.flag(
            parsed.isna(),
            name,
            lambda idx: pd.Series(f"field {name!r} is empty; a timestamp is required", index=idx),
        )
    elif pd.api.types.is_datetime64_dtype(raw.dtype):
        check.flag(
            pd.Series(True, index=frame.index),
            name,
            lambda idx: (
                f"field {name!r} = "
                + _quoted(raw.loc[idx])
                + "; naive datetimes are ambiguous: give an offset or 'Z' (UTC)"
            ),
        )
        return pd.Series(0, index=frame.index, dtype="int64")
    else:
        text = _text(raw)
        check.flag(
            text.isna(),
            name,
            lambda idx: pd.Series(f"field {name!r} is empty; a timestamp is required", index=idx),
        )
        naive = ~text.str.strip().str.contains(_HAS_OFFSET, regex=True)
        check.flag(
            naive,
            name,
            lambda idx: (
                f"field {name!r} = "
                + _quoted(text.loc[idx])
                + "; naive timestamps are ambiguous: end it with 'Z' (UTC) or an offset like +02:00"
            ),
        )
        parsed = pd.to_datetime(text.where(~check.bad), format="ISO8601", utc=True, errors="coerce")
        check.flag(
            parsed.isna(),
            name,
            lambda idx: (
                f"field {name!r} = " + _quoted(text.loc[idx]) + "; it is not an ISO-8601 timestamp"
            ),
        )
    # NaT turns into int64's minimum here; those rows are already flagged.
    naive_utc = parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    return pd.Series(naive_utc.view("int64"), index=frame.index)


def _require_columns(table: str, frame: pd.DataFrame) -> None:
    missing = [c for c in _REQUIRED[table] if c not in frame.columns]
    if missing:
        raise InvalidRecordError(
            f"the {table} table has no column {missing[0]!r}; required columns are "
            f"{', '.join(_REQUIRED[table])}",
            field=missing[0],
            table=table,
        )


def _validate_plans(plans: pd.DataFrame) -> tuple[pd.DataFrame, _Checker]:
    check = _Checker("plans", plans)
    plan_id = _check_name(check, plans, "plan_id", required=True)
    counts = plan_id.map(plan_id.value_counts())
    check.flag(
        counts > 1,
        "plan_id",
        lambda idx: (
            "plan_id appears "
            + counts.loc[idx].astype("int64").astype("str")
            + " times in the plans table; plan ids must be unique"
        ),
    )
    columns = {
        "plan_id": plan_id,
        "agent_id": _check_name(check, plans, "agent_id", required=True),
        "goal_type": _check_name(check, plans, "goal_type", required=False),
        "status": _check_status(check, plans, tuple(s.value for s in PlanStatus)),
        "started_at_us": _check_timestamp(check, plans, "started_at"),
        "finished_at_us": _check_timestamp(check, plans, "finished_at"),
        "reward": _check_number(check, plans, "reward", minimum=None),
    }
    backwards = columns["finished_at_us"] < columns["started_at_us"]
    check.flag(
        backwards,
        "finished_at",
        lambda idx: pd.Series("field 'finished_at' is earlier than started_at", index=idx),
    )
    columns["error"] = _optional_text(plans, "error")
    columns["priority"] = _check_integer(check, plans, "priority", default=0)
    return pd.DataFrame(columns, index=plans.index), check


def _validate_steps(steps: pd.DataFrame) -> tuple[pd.DataFrame, _Checker]:
    check = _Checker("steps", steps)
    columns = {
        "plan_id": _check_name(check, steps, "plan_id", required=True),
        "step_index": _check_integer(check, steps, "step_index", default=None),
        "tool": _check_name(check, steps, "tool", required=True),
        "status": _check_status(check, steps, tuple(s.value for s in StepStatus)),
        "duration_ms": _check_number(check, steps, "duration_ms", minimum=0),
        "error": _optional_text(steps, "error"),
    }
    return pd.DataFrame(columns, index=steps.index), check


def _check_numbering(steps: pd.DataFrame, check: _Checker) -> None:
    """Flag every step of a plan whose indexes are not exactly 0..n-1."""
    grouped = steps[~check.bad].groupby("plan_id", sort=False)["step_index"]
    n, low, high, unique = (grouped.transform(f) for f in ("size", "min", "max", "nunique"))
    broken = ((low != 0) | (high != n - 1) | (unique != n)).reindex(steps.index, fill_value=False)
    check.flag(
        broken,
        "step_index",
        lambda idx: (
            "steps are numbered "
            + low.loc[idx].astype("str")
            + ".."
            + high.loc[idx].astype("str")
            + " with "
            + unique.loc[idx].astype("str")
            + " distinct indexes for "
            + n.loc[idx].astype("str")
            + " steps; they must be numbered exactly 0..n-1"
        ),
    )


def validate_frames(plans: pd.DataFrame, steps: pd.DataFrame) -> ValidatedFrames:
    """Check both tables; invalid rows reject their whole plan (and its steps)."""
    _require_columns("plans", plans)
    _require_columns("steps", steps)
    plans = plans.reset_index(drop=True)
    steps = steps.reset_index(drop=True)
    plan_rows, plan_check = _validate_plans(plans)
    step_rows, step_check = _validate_steps(steps)
    orphan = ~_member(step_rows["plan_id"], plan_rows["plan_id"])
    step_check.flag(
        orphan,
        "plan_id",
        lambda idx: pd.Series("no row of the plans table has this plan_id", index=idx),
    )
    _check_numbering(step_rows, step_check)
    problems = plan_check.problems + step_check.problems
    rejected = pd.Series(sorted({p.plan_id for p in problems}), dtype="str")
    plan_rows = plan_rows[~plan_check.bad & ~_member(plan_rows["plan_id"], rejected)]
    step_rows = step_rows[_member(step_rows["plan_id"], plan_rows["plan_id"])]
    order = pd.Series(np.arange(len(plan_rows)), index=plan_rows["plan_id"].to_numpy())
    step_rows = (
        step_rows.assign(_order=step_rows["plan_id"].map(order))
        .sort_values(["_order", "step_index"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )
    return ValidatedFrames(plan_rows, step_rows, _first_per_plan(problems))


def _first_per_plan(problems: list[Problem]) -> list[Problem]:
    """One problem per rejected plan: plan rows first, then step rows, by row."""
    seen: set[str] = set()
    first = []
    for problem in sorted(problems, key=lambda p: (p.table != "plans", p.row)):
        key = problem.plan_id or f"{problem.table}:{problem.row}"
        if key not in seen:
            seen.add(key)
            first.append(problem)
    return first


def problem_error(problem: Problem, row_label: RowLabel = default_row_label) -> InvalidRecordError:
    """The typed error for one problem, naming row, plan and field."""
    where = row_label(problem.table, problem.row)
    plan = f" (plan {problem.plan_id!r})" if problem.plan_id else ""
    return InvalidRecordError(
        f"{where}{plan}: {problem.reason}",
        plan_id=problem.plan_id or None,
        field=problem.field,
        row=problem.row,
        table=problem.table,
    )


def format_timestamps(stamps: pd.Series) -> pd.Series:
    """ISO-8601 UTC text with microseconds and a ``Z``, e.g. ``2024-11-22T00:00:00.000000Z``.

    >>> format_timestamps(pd.Series(pd.to_datetime(["2024-11-22T01:00:00+01:00"]))).tolist()
    ['2024-11-22T00:00:00.000000Z']
    """
    text: pd.Series = stamps.dt.tz_convert("UTC").dt.strftime(ISO_UTC_FORMAT)
    return text


@dataclass(frozen=True)
class ImportReport:
    """What a bulk import wrote and what it rejected.

    ``rejections`` has one row per rejected plan: plan_id, table (``plans`` or ``steps``),
    row (0-based position in that table), field and reason.

    >>> report = import_report(2, 5, [Problem("plans", 1, "p-2", "status", "bad status")])
    >>> report
    <ImportReport imported=2 rejected=1 steps=5>
    >>> report.rejections.columns.tolist()
    ['plan_id', 'table', 'row', 'field', 'reason']
    """

    imported: int
    rejected: int
    steps: int
    rejections: pd.DataFrame = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"<ImportReport imported={self.imported} rejected={self.rejected} steps={self.steps}>"
        )


def import_report(imported: int, steps: int, problems: list[Problem]) -> ImportReport:
    """The report of an import that wrote ``imported`` plans (``steps`` steps) and
    rejected one plan per problem."""
    rejections = pd.DataFrame(
        {
            "plan_id": pd.Series([p.plan_id for p in problems], dtype="str"),
            "table": pd.Series([p.table for p in problems], dtype="str"),
            "row": pd.Series([p.row for p in problems], dtype="int64"),
            "field": pd.Series([p.field for p in problems], dtype="str"),
            "reason": pd.Series([p.reason for p in problems], dtype="str"),
        }
    )
    return ImportReport(imported, len(problems), steps, rejections)


def duplicate_problems(plan_ids: pd.Series, duplicates: set[str]) -> list[Problem]:
    """One problem per plan row whose ``plan_id`` is already in the store."""
    rows = plan_ids[plan_ids.isin(duplicates)]
    return [
        Problem("plans", int(row), pid, "plan_id", "plan_id is already in the store")
        for row, pid in zip(rows.index, rows, strict=True)
    ]
