"""Property: Plan() and an import agree on every record, and what both accept is stored
exactly as Plan() holds it.

Hypothesis draws records whose fields are valid or sit on and past the edges of the
documented bounds: huge integers (2**31, 2**63, 10**400), infinities and NaN, decimal
text, lone surrogates, NUL, blank and over-long text, timestamps with offsets at years
1, 1900, 2200 and 9999, and ISO-8601 spellings odd and plain. Each record goes to
``Plan(...)`` and, as a one-plan pair of frames, to ``import_frames``; records made only of
strings also go as ``str`` frames and as CSV files to ``import_csv``. Both refuse with an
``InvalidRecordError`` naming the same field, or both accept and the store reads back
what the Plan holds (the imported plan, and the Plan recorded under another id).

Budget: derandomized (every run checks the same examples), about five seconds on
SQLite; a smaller run on PostgreSQL. ``METALEARN_FUZZ_SCALE=20`` runs twenty times as many,
fresh on every run, for a longer campaign (as the importer fuzzers).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metalearn import HistoryStore, InvalidRecordError, Plan
from metalearn._types import (
    BLANK,
    MAX_NAME_LENGTH,
    PRIORITY_MAX,
    PRIORITY_MIN,
    Refusal,
    is_missing,
    read_number,
    read_text,
)
from tests.conftest import _postgres_url, _reset_postgres
from tests.test_interchange import as_csv, as_frames, as_plan, read_back, stored_form

StoreFactory = Callable[[], AbstractContextManager[HistoryStore]]

# -- field values: valid ones (edges included), then anything ----------------------------------

FIELDS = ("plan_id", "agent_id", "goal_type", "status", "started_at", "finished_at")
FIELDS += ("reward", "error", "priority", "steps")
STEP_FIELDS = ("step_index", "tool", "status", "duration_ms", "error")

NAME_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")  # astral ones included
VALID_NAMES = st.one_of(
    st.text(NAME_CHARS, min_size=1, max_size=12).filter(lambda t: t.strip(BLANK)),
    st.sampled_from(["n" * MAX_NAME_LENGTH, "\U0001f600" * MAX_NAME_LENGTH, " padded ", "é"]),
)
ODD_TEXT = st.sampled_from(
    ["", " ", "\t\n", "\x00", "a\x00b", "\ud800", "x\udfff", "n" * 201, "\x1c", "\u00a0"]
)
NOT_TEXT = st.sampled_from([5, 2.5, True, b"bytes", ("t",), np.int64(3)])
MISSING = st.sampled_from([None, math.nan, "", "  ", "\t"])
VALID_TEXT = st.one_of(MISSING, st.text(NAME_CHARS, max_size=30), st.just("é" * 5000))
ANY_TEXT = st.one_of(VALID_TEXT, ODD_TEXT, NOT_TEXT)

HUGE_INTS = st.sampled_from(
    [2**31, -(2**31) - 1, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**400, -(10**400)]
)
VALID_NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from([" 1.5 ", ".5", "5.", "+3", "1e-400", "1E+3", "-0"]),
)
ODD_NUMBER_TEXT = st.sampled_from(
    ["1e400", "-1e400", "1_0", "0x10", "nan", "inf", "Infinity", "1.5.2", "1e", "\u0663", "x"]
)
VALID_NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(10**6), 10**6),
    VALID_NUMBER_TEXT,
    MISSING,
    st.sampled_from([np.float32(0.5), np.int64(7), -0.0, 5e-324, 1.7976931348623157e308]),
)
ANY_NUMBERS = st.one_of(
    VALID_NUMBERS,
    st.floats(),
    HUGE_INTS,
    ODD_NUMBER_TEXT,
    st.sampled_from([True, np.bool_(False), "True", [1]]),
)
VALID_PRIORITIES = st.one_of(
    st.integers(PRIORITY_MIN, PRIORITY_MAX),
    st.sampled_from([PRIORITY_MIN, PRIORITY_MAX, None, math.nan, 3.0, "7", " -12 ", "1e3", ""]),
    st.sampled_from([np.int64(PRIORITY_MAX), np.float64(-(2**31)), np.uint8(200)]),
)
ANY_PRIORITIES = st.one_of(
    VALID_PRIORITIES,
    HUGE_INTS,
    ODD_NUMBER_TEXT,
    st.sampled_from([2.5, math.inf, True, "2**31", "2147483648", np.uint64(2**63)]),
)
VALID_STATUSES = st.sampled_from(["succeeded", "failed"])
ANY_STATUSES = st.sampled_from(["succeeded", "ok", "done", " failed", "FAILED", None, 1])
VALID_STEP_STATUSES = st.sampled_from(["ok", "error", "skipped"])
ANY_STEP_STATUSES = st.sampled_from(["ok", "paused", "OK", "ok ", None, math.nan, 0])

# -- timestamps: an instant in UTC, then a spelling ------------------------------------------

OFFSETS = st.one_of(
    st.just(timedelta(0)),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timedelta(minutes=m)),
)
VALID_INSTANTS = st.one_of(
    st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1)),
    st.sampled_from([datetime(1900, 1, 1), datetime(2200, 1, 1), datetime(1970, 1, 1)]),
)
EDGE_INSTANTS = st.one_of(
    st.datetimes(datetime(1899, 12, 30), datetime(1900, 1, 2)),
    st.datetimes(datetime(2199, 12, 31), datetime(2200, 1, 2)),
    st.datetimes(datetime(1, 1, 2), datetime(1, 1, 3)),
    st.datetimes(datetime(9999, 12, 29), datetime(9999, 12, 30)),
)


@st.composite
def spelled(draw: st.DrawFn, utc: datetime, *, valid: bool) -> Any:
    """One way of writing a UTC instant: an aware datetime, or ISO-8601 text with an offset
    (when not ``valid``: also naive ones and odd spellings)."""
    offset = draw(OFFSETS)
    kinds = ["datetime", "text", "text", "zone"] + ([] if valid else ["naive", "odd"])
    kind = draw(st.sampled_from(kinds))
    aware = utc.replace(tzinfo=UTC)
    if kind == "zone":
        return aware.astimezone(draw(st.timezones()))
    local = (aware + offset).replace(tzinfo=None)
    if kind == "naive":
        return local
    if kind == "datetime":
        return local.replace(tzinfo=timezone(offset))
    return _iso_text(draw, local, offset, valid=valid)


def _iso_text(draw: st.DrawFn, local: datetime, offset: timedelta, *, valid: bool) -> str:
    odd = not valid and draw(st.booleans())
    sep = draw(st.sampled_from(["T", " "] + (["t", "_", ""] if odd else [])))
    exact = "%H:%M:%S.f" if local.microsecond else "%H:%M:%S"
    clocks = [exact, "%H:%M:%S.f"] + (["%H:%M", "%H", "%H%M%S", "%H:%M:%S"] if odd else [])
    clock = draw(st.sampled_from(clocks))
    text = f"{local.year:04d}-{local:%m-%d}{sep}{local.strftime(clock.replace('.f', ''))}"
    if clock.endswith(".f"):  # six digits or more: exact (digits past six are dropped)
        digits = f"{local.microsecond:06d}{draw(st.integers(0, 999)):03d}"
        text += "." + digits[: draw(st.integers(1 if odd else 6, 10 if odd else 9))]
    minutes = int(offset.total_seconds()) // 60
    sign, minutes = ("-" if minutes < 0 else "+"), abs(minutes)
    hours, rest = f"{sign}{minutes // 60:02d}", f"{minutes % 60:02d}"
    zones = [f"{hours}:{rest}", f"{hours}{rest}"] + ([hours] if not minutes % 60 else [])
    zones += ["Z"] if not minutes else []
    zones += ["z", "", f"{hours}:{rest}:00"] if odd else []
    text += draw(st.sampled_from(zones))
    pad = st.sampled_from(["", "", " ", "\t", "\n"])
    return draw(pad) + text + draw(pad)


ODD_TIMESTAMPS = st.sampled_from(
    [
        "2026-03-01T09:00:0.000Z",
        "2026-W09-7T12:00:00Z",
        "2026-060T12:00:00Z",
        "20260301T120000Z",
        "2026-03-01T24:00:00Z",
        "2026-02-29T12:00:00Z",
        "2026-03-01T12:00:00+24:00",
        "2026-03-01T12:00:00+01:30:15",
        "2026-03-01T12:00:00,5Z",
        "2026-03-01",
        "yesterday",
        "",
        None,
        math.nan,
        1_700_000_000,
    ]
)


@st.composite
def timestamps(draw: st.DrawFn, *, valid: bool) -> tuple[Any, Any]:
    """started_at and finished_at: in order when valid; else either may be anything."""
    start = draw(VALID_INSTANTS if valid else st.one_of(VALID_INSTANTS, EDGE_INSTANTS))
    step = draw(st.sampled_from([timedelta(0), timedelta(seconds=5), timedelta(days=400)]))
    end = start + (step if start.year < 9999 else timedelta(0))  # in datetime's range
    end = min(end, datetime(2200, 1, 1)) if valid else end
    first, second = draw(spelled(start, valid=valid)), draw(spelled(end, valid=valid))
    if not valid and draw(st.booleans()):
        first, second = draw(st.sampled_from([(first, second), (second, first)]))
        if draw(st.booleans()):
            first = draw(ODD_TIMESTAMPS)
    return first, second


# -- records -------------------------------------------------------------------------------


@st.composite
def valid_steps(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(0, 4))
    order = list(range(count))
    if draw(st.booleans()):
        order = draw(st.permutations(order))  # rows of a table have no order: step_index has
    return [
        {
            "step_index": index,
            "tool": draw(VALID_NAMES),
            "status": draw(VALID_STEP_STATUSES),
            "duration_ms": draw(VALID_NUMBERS.filter(_not_negative)),
            "error": draw(VALID_TEXT),
        }
        for index in order
    ]


def _not_negative(value: Any) -> bool:
    number = read_number(value)
    return not isinstance(number, float) or number >= 0


ANY_STEP_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "step_index": st.one_of(
        st.integers(-2, 5), HUGE_INTS, st.sampled_from([1.0, 0.5, "1", None, True])
    ),
    "tool": st.one_of(VALID_NAMES, ODD_TEXT, NOT_TEXT, MISSING),
    "status": ANY_STEP_STATUSES,
    "duration_ms": ANY_NUMBERS,
    "error": ANY_TEXT,
}
ANY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "plan_id": st.one_of(VALID_NAMES, ODD_TEXT, NOT_TEXT, MISSING),
    "agent_id": st.one_of(VALID_NAMES, ODD_TEXT, NOT_TEXT, MISSING),
    "goal_type": st.one_of(VALID_NAMES, ODD_TEXT, NOT_TEXT, MISSING),
    "status": ANY_STATUSES,
    "reward": ANY_NUMBERS,
    "error": ANY_TEXT,
    "priority": ANY_PRIORITIES,
}


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """A valid record (edges included) with up to three of its fields spoiled."""
    started_at, finished_at = draw(timestamps(valid=True))
    record = {
        "plan_id": draw(VALID_NAMES),
        "agent_id": draw(VALID_NAMES),
        "goal_type": draw(st.one_of(VALID_NAMES, MISSING)),
        "status": draw(VALID_STATUSES),
        "started_at": started_at,
        "finished_at": finished_at,
        "reward": draw(VALID_NUMBERS),
        "error": draw(VALID_TEXT),
        "priority": draw(VALID_PRIORITIES),
        "steps": draw(valid_steps()),
    }
    for _ in range(draw(st.sampled_from([0, 1, 2, 3]))):
        _spoil(draw, record, draw(st.sampled_from(FIELDS)))
    return record


def _spoil(draw: st.DrawFn, record: dict[str, Any], name: str) -> None:
    if name in ANY_VALUES:
        record[name] = draw(ANY_VALUES[name])
    elif name.endswith("_at"):
        record["started_at"], record["finished_at"] = draw(timestamps(valid=False))
    elif record["steps"]:
        step = draw(st.sampled_from(record["steps"]))
        key = draw(st.sampled_from(STEP_FIELDS))
        step[key] = draw(ANY_STEP_VALUES[key])


@st.composite
def text_records(draw: st.DrawFn) -> dict[str, Any]:
    """Records made only of strings, as CSV cells and str columns hold them."""
    record = draw(records())
    for key in ("started_at", "finished_at"):
        if not isinstance(record[key], str):
            record[key] = _iso_text(draw, _utc_naive(record[key]), timedelta(0), valid=True)
    for key in (*ANY_VALUES, "started_at", "finished_at"):
        record[key] = _cell(draw, record[key])
    for step in record["steps"]:
        for key in STEP_FIELDS:
            step[key] = _cell(draw, step[key])
    return record


def _utc_naive(value: Any) -> datetime:
    if isinstance(value, datetime) and value.utcoffset() is not None:
        try:
            return value.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            return datetime(1, 1, 1)
    return datetime(2026, 3, 1)


def _cell(draw: st.DrawFn, value: Any) -> str:
    """The text a CSV cell would hold for a value; text no UTF-8 file holds is replaced."""
    if isinstance(value, str):
        if "\x00" in value or isinstance(read_text(value), Refusal):
            return draw(st.sampled_from(["", "t", "\x1c"]))
        return value
    return "" if is_missing(value) else draw(st.sampled_from([str(value)] * 4 + ["", "x"]))


# -- the property ----------------------------------------------------------------------------


def refusal_field(action: Callable[[], object]) -> tuple[str | None, object]:
    """The field an InvalidRecordError names (None when accepted), and the result."""
    try:
        return None, action()
    except InvalidRecordError as error:
        return error.field or f"no field in: {error}", None


Import = Callable[[HistoryStore], object]


def check_agreement(fresh: StoreFactory, record: dict[str, Any], *imports: Import) -> str:
    """Assert that Plan() and each import (into an empty store) agree on the record, and
    that an accepted one reads back as the Plan holds it, imported and recorded alike.
    Says whether the record was "accepted" or "refused"."""
    built, plan = refusal_field(lambda: as_plan(record))
    for run in imports:
        with fresh() as store:
            imported, _ = refusal_field(partial(run, store))
            assert imported == built, f"Plan(): {built!r}, import: {imported!r}"
            if plan is None:
                assert len(store) == 0
                continue
            assert isinstance(plan, Plan)
            store.record_plan(_copy(plan))
            expected = stored_form(plan)
            copy = (expected[0] | {"plan_id": _copy(plan).plan_id}, expected[1])
            assert read_back(store) == [expected, copy]
    return "refused" if plan is None else "accepted"


def _copy(plan: Plan) -> Plan:
    return Plan(
        "copy:" + plan.plan_id[:190],
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


SCALE = float(os.environ.get("METALEARN_FUZZ_SCALE", "1"))  # as the importer fuzzers
BUDGET = {"sqlite": (60, 20), "postgres": (15, 6)}  # examples: mixed values, text cells


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, StoreFactory]]:
    """A factory of empty stores: SQLite in memory, or the test PostgreSQL database."""
    if request.param == "sqlite":
        yield "sqlite", lambda: HistoryStore("sqlite://")
        return
    url = _postgres_url()

    @contextmanager
    def fresh() -> Iterator[HistoryStore]:
        _reset_postgres(url)
        with HistoryStore(url) as store:
            yield store

    yield "postgres", fresh
    _reset_postgres(url)


def run_property(test: Callable[..., None], examples: int) -> None:
    budget = settings(
        max_examples=int(examples * SCALE),
        deadline=None,
        derandomize=SCALE == 1,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    budget(test)()


def test_plan_and_import_frames_agree(backend: tuple[str, StoreFactory]) -> None:
    name, fresh = backend

    outcomes: Counter[str] = Counter()

    @given(records())
    def agree(record: dict[str, Any]) -> None:
        frames = as_frames(record)
        outcomes[check_agreement(fresh, record, lambda store: store.import_frames(*frames))] += 1

    run_property(agree, BUDGET[name][0])
    assert min(outcomes["accepted"], outcomes["refused"]) >= BUDGET[name][0] // 5, outcomes


def test_plan_and_text_cells_agree(backend: tuple[str, StoreFactory], tmp_path: Path) -> None:
    name, fresh = backend

    outcomes: Counter[str] = Counter()

    @given(text_records())
    def agree(record: dict[str, Any]) -> None:
        plans, steps = as_frames(record)
        outcome = check_agreement(
            fresh,
            record,
            lambda store: store.import_frames(plans.astype("str"), steps.astype("str")),
            lambda store: store.import_csv(*as_csv(record, tmp_path)),
        )
        outcomes[outcome] += 1

    run_property(agree, BUDGET[name][1])
    assert min(outcomes["accepted"], outcomes["refused"]) >= BUDGET[name][1] // 5, outcomes
