"""The interchange format: validating plan/step tables in bulk, reporting an import's
rejections, and spelling timestamps for the files written back.

Plans: ``plan_id, agent_id, goal_type, status, started_at, finished_at`` and the optional
``reward, error, priority``. Steps: ``plan_id, step_index, tool, status`` and the optional
``duration_ms, error``. The rules and bounds are :class:`~metalearn.Plan`'s, from
:mod:`metalearn._types`, checked column-wise so that a million plans validate in seconds:

- a cell is missing when it is None, NaN, NA or blank text; text fields take strings only
  (a column of numbers is refused, not stringified: ``.astype(str)`` it if that is meant);
- numbers and integers come from numeric columns or decimal text (CSV cells are text);
  booleans are not numbers;
- timestamps come from tz-aware datetime columns, ISO-8601 text with ``Z`` or an offset,
  or aware ``datetime`` objects.

Typed columns (numbers, ``str``, tz-aware datetimes) and object columns holding only
strings are checked with vectorised kernels. Object columns that mix types are read cell
by cell with Plan's own ``read_*`` rule: their cells are Python objects one by one anyway.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from metalearn._errors import InvalidArgumentError, InvalidRecordError
from metalearn._types import (
    _STEP_FIELDS,
    BLANK,
    ISO_UTC_FORMAT,
    MAX_NAME_LENGTH,
    MAX_STEP_INDEX,
    NAIVE_TIMESTAMP,
    NAIVE_TIMESTAMP_PATTERN,
    NOT_A_DATE,
    NOT_A_NUMBER,
    NOT_A_STRING,
    NOT_A_TIMESTAMP,
    NOT_FINITE,
    NUL_TEXT,
    NUMBER_PATTERN,
    PRIORITY_MAX,
    PRIORITY_MIN,
    PRIORITY_RULE,
    STEP_INDEX_RULE,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    TIMESTAMP_PATTERN,
    TIMESTAMP_RANGE,
    TIMESTAMP_REQUIRED,
    PlanStatus,
    Refusal,
    StepStatus,
    read_number,
    read_text,
    read_timestamp,
)

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
_COLUMNS = {"plans": PLAN_COLUMNS, "steps": STEP_COLUMNS}
_REQUIRED = {
    "plans": ("plan_id", "agent_id", "status", "started_at", "finished_at"),
    "steps": ("plan_id", "step_index", "tool", "status"),
}
_EARLIEST, _LATEST = pd.Timestamp(TIMESTAMP_MIN), pd.Timestamp(TIMESTAMP_MAX)

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


Refusals = tuple[tuple[pd.Series, str], ...]


@dataclass(frozen=True)
class _Column:
    """A column read as one type: ``values`` (NA where missing or refused), which cells
    are ``missing``, and the ``refusals``: a mask of refused cells per rule broken."""

    values: pd.Series
    missing: pd.Series
    refusals: Refusals = ()


class _Checker:
    """Collects per-row problems of one table, keeping the first per row."""

    def __init__(self, table: str, plan_ids: pd.Series) -> None:
        self.table = table
        self.plan_ids = plan_ids.fillna("")
        self.bad = pd.Series(False, index=plan_ids.index)
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

    def refuse(self, raw: pd.Series, name: str, mask: pd.Series, rule: str) -> None:
        """Flag ``mask``'s rows with ``field <name> = <cell>; <rule>``."""
        self.flag(
            mask, name, lambda idx: f"field {name!r} = " + _shown_cells(raw, idx) + f"; {rule}"
        )

    def refuse_column(self, raw: pd.Series, name: str, column: _Column, rule: str = "") -> None:
        """Flag a column's refused cells, each with its rule (or ``rule`` for all)."""
        for mask, broken in column.refusals:
            self.refuse(raw, name, mask, rule or broken)

    def empty(self, name: str, mask: pd.Series, rule: str) -> None:
        self.flag(mask, name, lambda idx: pd.Series(f"field {name!r} is empty; {rule}", index=idx))


def _shown_cells(raw: pd.Series, idx: pd.Index) -> pd.Series:
    shown: pd.Series = raw.loc[idx].map(_shown_cell).astype("str")
    return shown


def _shown_cell(value: Any) -> str:
    """A cell as its text, quoted, cut at 40 characters and with unprintable ones escaped."""
    return "'" + repr(str(value)[:40])[1:-1] + "'"


def _member(values: pd.Series, allowed: pd.Series) -> pd.Series:
    """``values.isin(allowed)`` by hashing (pandas' isin walks big str lists in Python)."""
    positions = pd.Index(allowed.dropna().unique()).get_indexer(values)
    return pd.Series(positions >= 0, index=values.index)


# -- reading a column as one type ------------------------------------------------------------


def _plain(raw: pd.Series) -> pd.Series:
    return raw.astype(object) if isinstance(raw.dtype, pd.CategoricalDtype) else raw


def _held(raw: pd.Series) -> str:
    """What a str or object column holds (pandas' inference: "string", "integer", "mixed"...),
    or "" for a typed column."""
    if isinstance(raw.dtype, pd.StringDtype):
        return "string"
    if pd.api.types.is_object_dtype(raw.dtype):
        return str(pd.api.types.infer_dtype(raw, skipna=True))
    return ""


def _as_text(raw: pd.Series, held: str) -> pd.Series | None:
    """A column of strings as str, or None (other values, or lone surrogates: no Arrow
    string holds one)."""
    if held not in ("string", "empty"):
        return None
    try:
        return raw.astype("str")
    except UnicodeEncodeError:
        return None


def _cellwise(raw: pd.Series, read: Callable[[Any], Any]) -> tuple[pd.Series, Refusals]:
    """Plan's own rule for every cell; the refused cells become None."""
    results = raw.map(read)
    refused = results.map(type) == Refusal
    rules = results[refused].map(lambda refusal: refusal.rule)
    refusals = tuple(
        (refused & (rules == rule).reindex(raw.index, fill_value=False), rule)
        for rule in rules.unique().tolist()
    )
    return results.where(~refused, None), refusals


def _everything_refused(raw: pd.Series, rule: str) -> tuple[pd.Series, Refusals]:
    missing = raw.isna()
    return missing, ((~missing, f"{rule}, not a value of a {raw.dtype} column"),)


def _blank(stripped: pd.Series) -> pd.Series:
    """Missing or empty cells of stripped text (a str comparison with NA gives False)."""
    blank: pd.Series = stripped.isna() | (stripped == "")
    return blank


def _strings(raw: pd.Series) -> _Column:
    """Text as str, blank cells missing; NUL, lone surrogates and non-strings refused."""
    raw = _plain(raw)
    held = _held(raw)
    text = _as_text(raw, held)
    if text is not None:
        blank = _blank(text.str.strip(BLANK))
        nul = text.str.contains("\x00", regex=False).fillna(False).astype(bool) & ~blank
        return _Column(text.where(~blank & ~nul), blank, ((nul, NUL_TEXT),))
    if held:
        values, refusals = _cellwise(raw, read_text)
        return _Column(values.astype("str"), values.isna(), refusals)
    missing = raw.isna()
    rule = (
        f"{NOT_A_STRING}, not a value of a {raw.dtype} column (if the values are meant as "
        "text, convert the column first: frame[name] = frame[name].astype(str))"
    )
    return _Column(pd.Series(pd.NA, index=raw.index, dtype="str"), missing, ((~missing, rule),))


def _numbers(raw: pd.Series) -> _Column:
    """Finite doubles from numeric columns or decimal text; NaN where missing or refused."""
    raw = _plain(raw)
    dtype = raw.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_complex_dtype(dtype):
        missing, refusals = _everything_refused(raw, NOT_A_NUMBER)
        return _Column(pd.Series(np.nan, index=raw.index), missing, refusals)
    if pd.api.types.is_numeric_dtype(dtype):
        return _finite(raw.astype("float64"), raw.isna(), ())
    held = _held(raw)
    text = _as_text(raw, held)
    if text is not None:
        return _number_text(text)
    if held in ("integer", "floating", "mixed-integer-float"):
        try:
            return _finite(pd.to_numeric(raw).astype("float64"), raw.isna(), ())
        except (OverflowError, TypeError, ValueError):
            pass  # e.g. an int such as 10**400: read cell by cell below
    if held:
        values, refusals = _cellwise(raw, read_number)
        return _Column(values.astype("float64"), values.isna(), refusals)
    missing, refusals = _everything_refused(raw, NOT_A_NUMBER)
    return _Column(pd.Series(np.nan, index=raw.index), missing, refusals)


def _number_text(text: pd.Series) -> _Column:
    stripped = text.str.strip(BLANK)
    missing = _blank(stripped)
    number = stripped.str.fullmatch(NUMBER_PATTERN).fillna(False).astype(bool)
    values = stripped.where(number).astype("float64")
    return _finite(values, missing, ((~missing & ~number, NOT_A_NUMBER),))


def _finite(values: pd.Series, missing: pd.Series, refusals: Refusals) -> _Column:
    infinite = pd.Series(np.isinf(values.to_numpy()), index=values.index)
    return _Column(values.where(~infinite), missing, (*refusals, (infinite, NOT_FINITE)))


def _timestamps(raw: pd.Series) -> _Column:
    """Microseconds since the epoch (UTC), 0 where missing or refused."""
    raw = _plain(raw)
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return _bounded(raw.dt.tz_convert("UTC"), raw.isna(), ())
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        naive = "naive datetimes are ambiguous: give an offset or 'Z' (UTC)"
        missing, refusals = _everything_refused(raw, naive)
        return _Column(pd.Series(0, index=raw.index, dtype="int64"), missing, refusals)
    held = _held(raw)
    text = _as_text(raw, held)
    if text is not None:
        return _timestamp_text(text)
    aware = _aware_datetimes(raw) if held == "datetime" else None
    if aware is not None:
        return _bounded(aware.dt.tz_convert("UTC"), raw.isna(), ())
    if held:
        values, refusals = _cellwise(raw, read_timestamp)
        utc = pd.to_datetime(values, utc=True)
        return _bounded(utc, pd.Series(False, index=raw.index), refusals)
    missing, refusals = _everything_refused(raw, NOT_A_TIMESTAMP)
    return _Column(pd.Series(0, index=raw.index, dtype="int64"), missing, refusals)


def _aware_datetimes(raw: pd.Series) -> pd.Series | None:
    """Datetime objects of one time zone, converted by pandas in one go; None for any
    other mix (naive ones, several zones), which is read cell by cell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            converted = pd.to_datetime(raw)
    except (ValueError, TypeError, OverflowError, Warning):
        return None
    return converted if isinstance(converted.dtype, pd.DatetimeTZDtype) else None


def _timestamp_text(text: pd.Series) -> _Column:
    stripped = text.str.strip(BLANK)
    missing = _blank(stripped)
    aware = stripped.str.fullmatch(TIMESTAMP_PATTERN).fillna(False).astype(bool)
    naive = ~aware & stripped.str.fullmatch(NAIVE_TIMESTAMP_PATTERN).fillna(False).astype(bool)
    # Only plausible years are parsed: pandas overflows on year 1 or 9999 with an offset.
    year = pd.to_numeric(stripped.str.slice(0, 4).where(aware))
    plausible = aware & year.between(TIMESTAMP_MIN.year - 1, TIMESTAMP_MAX.year)
    parsed = pd.to_datetime(stripped.where(plausible), format="ISO8601", utc=True, errors="coerce")
    refusals = (
        (naive, NAIVE_TIMESTAMP),
        (~missing & ~aware & ~naive, NOT_A_TIMESTAMP),
        (aware & ~plausible, TIMESTAMP_RANGE),
        (plausible & parsed.isna(), NOT_A_DATE),
    )
    return _bounded(parsed, missing, refusals)


def _bounded(utc: pd.Series, missing: pd.Series, refusals: Refusals) -> _Column:
    """UTC datetimes as whole microseconds (as Plan() holds them: digits past six are
    dropped), those outside the documented range refused."""
    utc = utc.dt.floor("us")
    outside = ((utc < _EARLIEST) | (utc > _LATEST)).fillna(False).astype(bool)
    kept = utc.where(~outside).dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    micros = pd.Series(kept.view("int64"), index=utc.index)
    valid = ~np.isnat(kept)
    return _Column(
        micros.where(valid, 0), missing & ~valid, (*refusals, (outside, TIMESTAMP_RANGE))
    )


# -- the checks of each field ------------------------------------------------------------------


def _absent(frame: pd.DataFrame, dtype: str) -> pd.Series:
    return pd.Series(pd.NA if dtype == "str" else np.nan, index=frame.index, dtype=dtype)


def _check_name(
    check: _Checker,
    frame: pd.DataFrame,
    name: str,
    *,
    required: bool,
    column: _Column | None = None,
) -> pd.Series:
    if name not in frame:
        return _absent(frame, "str")
    column = column or _strings(frame[name])
    check.refuse_column(frame[name], name, column)
    if required:
        check.empty(name, column.missing, "it must be a non-empty string")
    lengths = column.values.str.len()
    check.flag(
        lengths > MAX_NAME_LENGTH,
        name,
        lambda idx: (
            f"field {name!r} has "
            + lengths.loc[idx].astype("int64").astype("str")
            + f" characters; at most {MAX_NAME_LENGTH} are allowed"
        ),
    )
    return column.values


def _check_text(check: _Checker, frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame:
        return _absent(frame, "str")
    column = _strings(frame[name])
    check.refuse_column(frame[name], name, column)
    return column.values


def _check_status(check: _Checker, frame: pd.DataFrame, allowed: tuple[str, ...]) -> pd.Series:
    raw = frame["status"]
    column = _strings(raw)
    check.refuse_column(raw, "status", column)
    values = ", ".join(repr(v) for v in allowed)
    check.refuse(raw, "status", ~column.values.isin(allowed), f"allowed values are {values}")
    return column.values


def _check_number(
    check: _Checker, frame: pd.DataFrame, name: str, *, minimum: float | None
) -> pd.Series:
    if name not in frame:
        return _absent(frame, "float64")
    raw = frame[name]
    column = _numbers(raw)
    check.refuse_column(raw, name, column)
    if minimum is not None:
        below = column.values < minimum
        check.refuse(raw, name, below, f"it must be >= {minimum:g} or empty")
    return column.values


def _check_integer(
    check: _Checker,
    frame: pd.DataFrame,
    name: str,
    bounds: tuple[int, int, str],
    *,
    default: int | None,
) -> pd.Series:
    if name not in frame:
        return pd.Series(default, index=frame.index, dtype="int64")
    raw = frame[name]
    low, high, rule = bounds
    column = _numbers(raw)
    check.refuse_column(raw, name, column, rule)
    values = column.values
    whole = (values == np.floor(values)) & (values >= low) & (values <= high)
    if default is None:
        check.empty(name, column.missing, rule)
    check.refuse(raw, name, ~column.missing & ~whole, rule)
    return values.where(whole, 0 if default is None else default).astype("int64")


def _check_timestamp(check: _Checker, frame: pd.DataFrame, name: str) -> pd.Series:
    raw = frame[name]
    column = _timestamps(raw)
    check.empty(name, column.missing, TIMESTAMP_REQUIRED)
    check.refuse_column(raw, name, column)
    return column.values


# -- the tables --------------------------------------------------------------------------------


def _check_table(table: str, frame: Any) -> None:
    """A table the column checks can read: a DataFrame with the required, single columns."""
    if not isinstance(frame, pd.DataFrame):
        raise InvalidArgumentError(
            f"the {table} table must be a pandas DataFrame, not {type(frame).__name__}"
        )
    names = ", ".join(_COLUMNS[table])
    if isinstance(frame.columns, pd.MultiIndex):
        raise InvalidArgumentError(
            f"the {table} table has MultiIndex columns; flatten them to the interchange "
            f"columns ({names}), e.g. frame.columns = frame.columns.get_level_values(-1)"
        )
    labels = frame.columns.tolist()
    for name in _COLUMNS[table]:
        if labels.count(name) > 1:
            raise InvalidArgumentError(
                f"the {table} table has {labels.count(name)} columns named {name!r}; keep one"
            )
    missing = [c for c in _REQUIRED[table] if c not in labels]
    if missing:
        odd = [label for label in labels if not isinstance(label, str)][:3]
        hint = f" (its column labels include {odd!r}: name the columns {names})" if odd else ""
        raise InvalidRecordError(
            f"the {table} table has no column {missing[0]!r}; required columns are "
            f"{', '.join(_REQUIRED[table])}{hint}",
            field=missing[0],
            table=table,
        )


def _validate_plans(plans: pd.DataFrame) -> tuple[pd.DataFrame, _Checker]:
    # Fields are checked in column order, as Plan() checks them, so that a plan with
    # several faults is refused for the same one by both.
    ids = _strings(plans["plan_id"])
    check = _Checker("plans", ids.values)
    plan_id = _check_name(check, plans, "plan_id", required=True, column=ids)
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
    }
    backwards = columns["finished_at_us"] < columns["started_at_us"]
    check.flag(
        backwards,
        "finished_at",
        lambda idx: pd.Series("field 'finished_at' is earlier than started_at", index=idx),
    )
    columns["reward"] = _check_number(check, plans, "reward", minimum=None)
    columns["error"] = _check_text(check, plans, "error")
    priority = (PRIORITY_MIN, PRIORITY_MAX, PRIORITY_RULE)
    columns["priority"] = _check_integer(check, plans, "priority", priority, default=0)
    return pd.DataFrame(columns, index=plans.index), check


def _validate_steps(steps: pd.DataFrame) -> tuple[pd.DataFrame, _Checker]:
    ids = _strings(steps["plan_id"])
    check = _Checker("steps", ids.values)
    index = (0, MAX_STEP_INDEX, STEP_INDEX_RULE)
    columns = {
        "plan_id": _check_name(check, steps, "plan_id", required=True, column=ids),
        "step_index": _check_integer(check, steps, "step_index", index, default=None),
        "tool": _check_name(check, steps, "tool", required=True),
        "status": _check_status(check, steps, tuple(s.value for s in StepStatus)),
        "duration_ms": _check_number(check, steps, "duration_ms", minimum=0),
        "error": _check_text(check, steps, "error"),
    }
    return pd.DataFrame(columns, index=steps.index), check


def _check_numbering(steps: pd.DataFrame, check: _Checker) -> None:
    """Flag every step of a plan whose indexes are not exactly 0..n-1.

    Plans with a faulty step are left out: their fault is reported, as Plan() reports a
    step's fields before its numbering.
    """
    faulty = steps.loc[check.bad.to_numpy(), "plan_id"]
    grouped = steps[~_member(steps["plan_id"], faulty)].groupby("plan_id", sort=False)
    n, low, high, unique = (
        grouped["step_index"].transform(f) for f in ("size", "min", "max", "nunique")
    )
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
    _check_table("plans", plans)
    _check_table("steps", steps)
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
