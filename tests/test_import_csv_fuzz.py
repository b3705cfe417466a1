"""Property tests of HistoryStore.import_csv on spoiled copies of 20 τ-bench plans.

- Spoiled cells, written back as proper CSV: import_csv, in partitions of any size, gives
  exactly what import_frames gives for the same cells (reports, rejections, stored rows),
  so every valid plan is written and every invalid one is rejected the same way.
- Spoiled bytes (flips, insertions, deletions, truncation, re-encodings, NUL, quotes,
  commas): only MetalearnError escapes; a file-level error writes nothing in either mode;
  "raise" fails exactly when "skip" rejects something; and when the spoiled lines cannot
  have changed how the others are framed, every plan none of them touches is written as
  it was.

``METALEARN_FUZZ_SCALE=10`` runs ten times as many examples (not derandomized).
"""

from __future__ import annotations

import csv
import difflib
import io
import os
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from metalearn import HistoryStore, ImportReport, MetalearnError
from tests.test_import_csv import tau_pair

SCALE = float(os.environ.get("METALEARN_FUZZ_SCALE", "1"))
PLANS, STEPS = tau_pair(20)


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        database=None,
        derandomize=SCALE == 1,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )


Outcome = tuple[ImportReport | None, MetalearnError | None, pd.DataFrame, pd.DataFrame]


def imported(load: Callable[[HistoryStore], ImportReport]) -> Outcome:
    """What ``load`` reports or raises, and what it leaves in a fresh store."""
    with HistoryStore("sqlite://") as store:
        report = error = None
        try:
            report = load(store)
        except MetalearnError as err:
            error = err
        plans, steps = store.plans_after(0, limit=None).to_pandas()
    return report, error, plans.drop(columns="seq"), steps.drop(columns="seq")


def from_files(plans: bytes, steps: bytes, on_error: str, batch_size: int = 20_000) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp:
        paths = Path(tmp) / "plans.csv", Path(tmp) / "steps.csv"
        paths[0].write_bytes(plans)
        paths[1].write_bytes(steps)
        return imported(
            lambda store: store.import_csv(*paths, on_error=on_error, batch_size=batch_size)  # type: ignore[arg-type]
        )


# -- spoiled cells -----------------------------------------------------------------------


def _cells(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


def _csv(rows: list[list[str]], *, quote_all: bool, line_end: str) -> bytes:
    """RFC 4180, written here rather than by the csv module (which leaves a lone CR bare)."""

    def cell(value: str) -> str:
        if quote_all or any(c in value for c in ',"\r\n'):
            return '"' + value.replace('"', '""') + '"'
        return value

    return "".join(",".join(map(cell, row)) + line_end for row in rows).encode()


SAMPLES = [
    "", " ", "succeeded", "failed", "ok", "error", "skipped", "-1", "2", "1e400", "nan", "NA",
    "2024-11-22T00:00:00Z", "2024-11-22T00:00:00", "tau-gpt-4o-airline-task03-trial0", "x" * 201,
]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(SAMPLES),
    st.text(st.sampled_from(list('ab1,"\r\n\x00 \t\u00e9\u2192\ufeff')), max_size=6),
    # any text but lone surrogates, which no UTF-8 file holds (the frame tests have them)
    st.text(st.characters(exclude_categories=["Cs"]), max_size=6),
)


@st.composite
def spoiled_cells(draw: st.DrawFn) -> tuple[list[list[str]], list[list[str]]]:
    tables = [_cells(PLANS), _cells(STEPS)]
    for _ in range(draw(st.integers(0, 4))):
        rows = tables[draw(st.integers(0, 1))]
        row = draw(st.integers(1, len(rows) - 1))
        action = draw(st.sampled_from(["cell", "cell", "cell", "copy", "drop", "move"]))
        if action == "cell":
            rows[row][draw(st.integers(0, len(rows[row]) - 1))] = draw(VALUES)
        elif action == "copy":
            rows.insert(draw(st.integers(1, len(rows))), list(rows[row]))
        elif action == "drop" and len(rows) > 2:
            del rows[row]
        else:
            rows.insert(draw(st.integers(1, len(rows) - 1)), rows.pop(row))
    return tables[0], tables[1]


def _frame(rows: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame(rows[1:], columns=rows[0], dtype="str")


@fuzz(10)
@given(
    tables=spoiled_cells(),
    batch_size=st.sampled_from([7, 20_000]),
    quote_all=st.booleans(),
    line_end=st.sampled_from(["\r\n", "\n"]),
)
def test_files_give_what_frames_of_the_same_cells_give(
    tables: tuple[list[list[str]], list[list[str]]],
    batch_size: int,
    quote_all: bool,
    line_end: str,
) -> None:
    files = [_csv(rows, quote_all=quote_all, line_end=line_end) for rows in tables]
    frames = [_frame(rows) for rows in tables]
    for on_error in ("skip", "raise"):
        got = from_files(*files, on_error, batch_size)
        want = imported(lambda store: store.import_frames(*frames, on_error=on_error))  # type: ignore[arg-type]  # noqa: B023
        if on_error == "skip":
            assert got[0] is not None and want[0] is not None, got[1]
            assert (got[0].imported, got[0].steps) == (want[0].imported, want[0].steps)
            pd.testing.assert_frame_equal(got[0].rejections, want[0].rejections)
        else:
            assert type(got[1]) is type(want[1])
            if got[1] is not None:
                where = ("table", "row", "field", "plan_id")
                assert [getattr(got[1], a, None) for a in where] == [
                    getattr(want[1], a, None) for a in where
                ]
        for stored, expected in zip(got[2:], want[2:], strict=True):
            pd.testing.assert_frame_equal(stored, expected)


# -- spoiled bytes -----------------------------------------------------------------------


@st.composite
def spoiled_bytes(draw: st.DrawFn) -> tuple[bytes, bytes, str]:
    """One file spoiled by a few byte-level edits, and which file it is."""
    which = draw(st.sampled_from(["plans", "steps"]))
    data = bytearray(PLANS if which == "plans" else STEPS)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        edit = draw(
            st.sampled_from(["flip", "insert", "delete", "truncate", "encode", "drop-field"])
        )
        if edit == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif edit == "insert":
            special = st.sampled_from([b'"', b",", b"\r", b"\n", b"\x00", b"\xe9", b"\xff", b'""'])
            data[at:at] = draw(special | st.binary(min_size=1, max_size=3))
        elif edit == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif edit == "truncate":
            del data[at:]
        elif edit == "encode":
            text = bytes(data).decode(errors="replace")
            text = text[:at] + draw(st.sampled_from(["\u00e9", "\u2192", "\u00fc"])) + text[at:]
            codec = draw(st.sampled_from(["latin-1", "utf-16", "utf-16-le", "utf-8-sig"]))
            data = bytearray(text.encode(codec, errors="replace"))
        else:
            comma = bytes(data).find(b",", at)
            if comma >= 0:
                end = bytes(data).find(b",", comma + 1)
                del data[comma : end if end >= 0 else comma + 1]
    spoiled = bytes(data)
    return (spoiled, STEPS, which) if which == "plans" else (PLANS, spoiled, which)


@cache
def _whole() -> Outcome:
    return from_files(PLANS, STEPS, "skip")


def _untouched(original: bytes, spoiled: bytes) -> tuple[set[int], list[bytes]] | None:
    """Lines of ``original`` left as they were, and the spoiled lines; None when a spoiled
    line could reframe the lines after it (an odd number of quotes) or the header changed."""
    old, new = original.splitlines(keepends=True), spoiled.splitlines(keepends=True)
    same: set[int] = set()
    changed: list[bytes] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
        None, old, new, autojunk=False
    ).get_opcodes():
        if tag == "equal":
            same.update(range(i1, i2))
        else:
            changed += new[j1:j2]
    if 0 not in same or any(line.count(b'"') % 2 for line in changed):
        return None
    return same, changed


def _plans_left_whole(plans: bytes, steps: bytes, which: str) -> set[str] | None:
    """Plans whose rows are untouched and that no spoiled line names, or None (unknowable)."""
    spoiled, original = (plans, PLANS) if which == "plans" else (steps, STEPS)
    found = _untouched(original, spoiled)
    if found is None:
        return None
    same, changed = found
    lines = {"plans": PLANS.splitlines(), "steps": STEPS.splitlines()}
    rows: dict[str, list[int]] = {}
    for table in ("plans", "steps"):
        for number, line in enumerate(lines[table][1:], start=1):
            if table == which:
                rows.setdefault(line.split(b",", 1)[0].decode(), []).append(number)
    return {
        plan_id
        for plan_id in (line.split(b",", 1)[0].decode() for line in lines["plans"][1:])
        if all(n in same for n in rows.get(plan_id, []))
        and not any(plan_id.encode() in line for line in changed)
    }


def _rows_of(frame: pd.DataFrame, plan_ids: set[str]) -> pd.DataFrame:
    rows = frame[frame["plan_id"].isin(plan_ids)]
    return rows.sort_values(list(rows.columns[:2])).reset_index(drop=True)


@fuzz(30)
@given(spoiled=spoiled_bytes(), batch_size=st.sampled_from([7, 20_000]))
def test_spoiled_bytes_fail_typed_or_keep_every_untouched_plan(
    spoiled: tuple[bytes, bytes, str], batch_size: int
) -> None:
    plans, steps, which = spoiled
    skip = from_files(plans, steps, "skip", batch_size)  # anything but MetalearnError fails
    strict = from_files(plans, steps, "raise", batch_size)
    report, error, stored_plans, stored_steps = skip
    if error is not None:  # the file is not records: nothing is written in either mode
        assert report is None and stored_plans.empty and stored_steps.empty
        assert str(strict[1]) == str(error) and strict[2].empty
        return
    assert report is not None and report.imported == len(stored_plans)
    assert (strict[1] is not None) == (report.rejected > 0)
    if strict[1] is None:
        pd.testing.assert_frame_equal(strict[2], stored_plans)
    else:
        assert strict[2].empty and strict[3].empty
    whole = _plans_left_whole(plans, steps, which)
    if whole is None:
        return
    _, _, all_plans, all_steps = _whole()
    pd.testing.assert_frame_equal(_rows_of(stored_plans, whole), _rows_of(all_plans, whole))
    pd.testing.assert_frame_equal(_rows_of(stored_steps, whole), _rows_of(all_steps, whole))


def test_the_properties_start_from_valid_files() -> None:
    report, error, plans, steps = _whole()
    assert error is None and report is not None
    assert (report.imported, report.rejected, len(steps)) == (20, 0, 285)
    assert _plans_left_whole(PLANS, STEPS, "steps") == set(plans["plan_id"])
