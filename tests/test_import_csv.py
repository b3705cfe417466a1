"""HistoryStore.import_csv: typed errors for every bad file, streaming in partitions by plan,
the same verdicts as import_frames, and plans the database refuses (both backends)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text

from metalearn import HistoryStore, InvalidRecordError
from metalearn._interchange_csv import stage_csv
from tests.conftest import TAU_BENCH

FIRST = "tau-gpt-4o-airline-task00-trial0"


def tau_pair(n_plans: int = 20) -> tuple[bytes, bytes]:
    """The first plans of the τ-bench files and their steps, as the files' bytes."""
    plan_lines = (TAU_BENCH / "plans.csv").read_bytes().splitlines(keepends=True)
    ids = {line.split(b",", 1)[0] for line in plan_lines[1 : n_plans + 1]}
    step_lines = (TAU_BENCH / "steps.csv").read_bytes().splitlines(keepends=True)
    steps = [step_lines[0], *(s for s in step_lines[1:] if s.split(b",", 1)[0] in ids)]
    return b"".join(plan_lines[: n_plans + 1]), b"".join(steps)


def edit(data: bytes, line: int, old: bytes, new: bytes) -> bytes:
    """``data`` with ``old`` replaced by ``new`` in its ``line`` (1-based)."""
    lines = data.splitlines(keepends=True)
    assert old in lines[line - 1], (old, lines[line - 1])
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    return b"".join(lines)


def write(directory: Path, plans: bytes, steps: bytes) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "plans.csv").write_bytes(plans)
    (directory / "steps.csv").write_bytes(steps)
    return directory / "plans.csv", directory / "steps.csv"


def read_all(store: HistoryStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    plans, steps = store.plans_after(0, limit=None).to_pandas()
    return plans.drop(columns="seq"), steps.drop(columns="seq")


@pytest.fixture
def tau_files(tmp_path: Path) -> tuple[Path, Path]:
    return write(tmp_path / "tau", *tau_pair())


# -- files that cannot be read as records ------------------------------------------------

Spoil = Callable[[bytes, bytes], tuple[bytes, bytes]]
ASCII_LATIN = "avi\u00f3n:".encode("latin-1")


def _latin1(p: bytes, s: bytes) -> tuple[bytes, bytes]:
    return edit(p, 7, b"airline:", ASCII_LATIN), s


def _utf16(p: bytes, s: bytes) -> tuple[bytes, bytes]:
    return p.decode().encode("utf-16"), s


def _utf16_le(p: bytes, s: bytes) -> tuple[bytes, bytes]:
    return p, s.decode().encode("utf-16-le")


def _unclosed(p: bytes, s: bytes) -> tuple[bytes, bytes]:
    return p, s + f'{FIRST},99,respond,ok,,"no closing quote\n'.encode()


BAD_FILES = [
    pytest.param(
        _latin1,
        r"^plans\.csv line 7: not UTF-8 \(byte 0xf3 in field 'goal_type', byte \d+ of the "
        r"file\); re-save the file as UTF-8",
        ("plans", 5, "goal_type"),
        id="latin-1",
    ),
    pytest.param(
        _utf16,
        r"^plans\.csv is UTF-16 \(it starts with a UTF-16 byte-order mark\); re-save the file "
        "as UTF-8",
        ("plans", None, None),
        id="utf-16",
    ),
    pytest.param(
        _utf16_le,
        r"^steps\.csv line 1: the header holds NUL bytes, as UTF-16 text does; re-save the "
        "file as UTF-8",
        ("steps", None, None),
        id="utf-16-without-bom",
    ),
    pytest.param(
        lambda p, s: (b"", s),
        r"^plans\.csv is empty \(no header line\): the plans table has no column 'plan_id'; "
        "required columns are plan_id, agent_id, status, started_at, finished_at",
        ("plans", None, "plan_id"),
        id="empty",
    ),
    pytest.param(
        lambda p, s: (p, b"\n\r\n\n"),
        r"^steps\.csv is empty \(no header line\)",
        ("steps", None, "plan_id"),
        id="only-blank-lines",
    ),
    pytest.param(
        lambda p, s: (p, edit(s, 1, b"tool", b"tool_name")),
        r"^steps\.csv line 1: the steps table has no column 'tool'; required columns are "
        "plan_id, step_index, tool, status",
        ("steps", None, "tool"),
        id="missing-column",
    ),
    pytest.param(
        lambda p, s: (edit(p, 1, b",reward", b",status"), s),
        r"^plans\.csv line 1: the header names column 'status' 2 times; name each column once",
        ("plans", None, "status"),
        id="column-twice",
    ),
    pytest.param(
        _unclosed,
        r"^steps\.csv line 287: the quoted field 'error' that opens here never closes; add "
        "its closing double quote",
        ("steps", 285, "error"),
        id="unclosed-quote",
    ),
    pytest.param(
        lambda p, s: (p, edit(s, 10, b",ok,", b',o"k,')),
        r"^steps\.csv line 10: a double quote inside the unquoted field 'status'; enclose a "
        r'field that holds quotes in double quotes and double each quote inside it \(""\)',
        ("steps", 8, "status"),
        id="stray-quote",
    ),
    pytest.param(
        lambda p, s: (p, edit(s, 10, b",ok,", b',"o"k,')),
        r"^steps\.csv line 10: the quoted field 'status' \(opened on line 10\) goes on after "
        "its closing quote",
        ("steps", 8, "status"),
        id="text-after-closing-quote",
    ),
    pytest.param(
        lambda p, s: (p, edit(s, 10, b",ok,", b',"ok,')),
        r"^steps\.csv line 11: the quoted field '\w+' \(opened on line 10\) goes on after its "
        "closing quote",
        ("steps", 8, "status"),
        id="quote-swallows-lines",
    ),
    pytest.param(
        lambda p, s: (p, edit(s, 10, b",ok,", b",o\rk,")),
        r"^steps\.csv line 10: a carriage return \(\\r\) outside quotes in field 'status'; end "
        r"lines with \\n or \\r\\n",
        ("steps", 8, "status"),
        id="bare-carriage-return",
    ),
]


@pytest.mark.parametrize("on_error", ["raise", "skip"])
@pytest.mark.parametrize(("spoil", "message", "where"), BAD_FILES)
def test_a_file_that_is_not_records_fails_whole_and_writes_nothing(
    sqlite_store: HistoryStore,
    tmp_path: Path,
    spoil: Spoil,
    message: str,
    where: tuple[str, int | None, str | None],
    on_error: str,
) -> None:
    paths = write(tmp_path, *spoil(*tau_pair()))
    with pytest.raises(InvalidRecordError, match=message) as caught:
        sqlite_store.import_csv(*paths, on_error=on_error)  # type: ignore[arg-type]
    assert (caught.value.table, caught.value.row, caught.value.field) == where
    assert len(sqlite_store) == 0


def test_an_unclosed_quote_stops_at_64_mib(sqlite_store: HistoryStore, tmp_path: Path) -> None:
    plans, steps = tau_pair()
    steps = edit(steps, 3, b",ok,", b',"ok,') + b"x" * (65 << 20)
    message = r"^steps\.csv line 3: the quoted field 'status' that opens here runs on for 64 MiB"
    with pytest.raises(InvalidRecordError, match=message):
        sqlite_store.import_csv(*write(tmp_path, plans, steps))


@pytest.mark.parametrize("missing", ["plans", "steps"])
def test_an_unreadable_path_is_an_os_error(
    sqlite_store: HistoryStore, tau_files: tuple[Path, Path], missing: str
) -> None:
    paths = [p.parent / "nowhere.csv" if p.stem == missing else p for p in tau_files]
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv"):
        sqlite_store.import_csv(*paths)
    with pytest.raises(IsADirectoryError):
        sqlite_store.import_csv(tau_files[0].parent, tau_files[1])


# -- rows that are not records of the header's shape -------------------------------------


@pytest.mark.parametrize(
    ("line", "message", "field"),
    [
        pytest.param(
            f"{FIRST},3,respond,ok,,,surplus\n",
            "7 fields where the header has 6; quote a field that holds a comma",
            None,
            id="more-fields",
        ),
        pytest.param(
            f"{FIRST},3,respond,ok\n",
            "4 fields where the header has 6; a field is missing",
            "duration_ms",
            id="fewer-fields",
        ),
    ],
)
def test_a_row_of_the_wrong_width_rejects_its_plan(
    store: HistoryStore, tmp_path: Path, line: str, message: str, field: str | None
) -> None:
    plans, steps = tau_pair()
    lines = steps.splitlines(keepends=True)
    lines[4] = line.encode()
    paths = write(tmp_path, plans, b"".join(lines))
    where = rf"^steps\.csv line 5 \(plan '{FIRST}'\): "
    with pytest.raises(InvalidRecordError, match=where + re.escape(message) + "$") as caught:
        store.import_csv(*paths)
    assert (caught.value.table, caught.value.row, caught.value.field) == ("steps", 3, field)
    assert len(store) == 0
    report = store.import_csv(*paths, on_error="skip")
    assert (report.imported, report.rejected) == (19, 1)
    assert report.rejections.iloc[0].to_dict() == {
        "plan_id": FIRST, "table": "steps", "row": 3, "field": field or "", "reason": message,
    }  # fmt: skip
    assert FIRST not in set(read_all(store)[0]["plan_id"])


# -- what is accepted --------------------------------------------------------------------


def _bom(p: bytes, s: bytes) -> tuple[bytes, bytes]:
    return b"\xef\xbb\xbf" + p, b"\xef\xbb\xbf" + s


def _crlf(p: bytes, s: bytes) -> tuple[bytes, bytes]:
    return p.replace(b"\n", b"\r\n"), s.replace(b"\n", b"\r\n")


def _blank_lines(p: bytes, s: bytes) -> tuple[bytes, bytes]:
    return b"\n" + edit(p, 4, b"\n", b"\n\n\r\n"), s + b"\n\n"


def _quoted(p: bytes, s: bytes) -> tuple[bytes, bytes]:
    quoted = b"".join(
        b",".join(b'"' + cell.replace(b'"', b'""') + b'"' for cell in line.split(b",")) + b"\n"
        for line in p.splitlines()
    )
    return quoted, s


def _no_final_line_end(p: bytes, s: bytes) -> tuple[bytes, bytes]:
    return p.rstrip(b"\n"), s.rstrip(b"\n")


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(_bom, id="utf-8-bom"),
        pytest.param(_crlf, id="crlf"),
        pytest.param(_blank_lines, id="blank-lines"),
        pytest.param(_quoted, id="every-field-quoted"),
        pytest.param(_no_final_line_end, id="no-final-line-end"),
    ],
)
def test_accepted_spellings_import_the_same_plans(
    sqlite_store: HistoryStore, tmp_path: Path, variant: Spoil
) -> None:
    plain = tau_pair()
    sqlite_store.import_csv(*write(tmp_path / "plain", *plain))
    with HistoryStore(f"sqlite:///{tmp_path / 'variant.db'}") as copy:
        report = copy.import_csv(*write(tmp_path / "variant", *variant(*plain)))
        assert (report.imported, report.rejected) == (20, 0)
        for got, expected in zip(read_all(copy), read_all(sqlite_store), strict=True):
            pd.testing.assert_frame_equal(got, expected)


def test_a_byte_order_mark_is_dropped_from_the_file_only(
    sqlite_store: HistoryStore, tmp_path: Path
) -> None:
    """U+FEFF starting a data line is part of its first cell (pyarrow would drop it)."""
    renamed = (f.replace(FIRST.encode(), "\ufeffp".encode()) for f in tau_pair())
    report = sqlite_store.import_csv(*write(tmp_path, *(b"\xef\xbb\xbf" + f for f in renamed)))
    assert (report.imported, report.rejected) == (20, 0)
    assert read_all(sqlite_store)[0]["plan_id"].iloc[0] == "\ufeffp"


def test_lines_count_line_breaks_in_quoted_fields_and_blank_lines(
    sqlite_store: HistoryStore, tmp_path: Path
) -> None:
    plans, steps = tau_pair()
    plans = edit(plans, 3, b"airline:cancel", b'"airline:\ncancel"')  # row 1 takes lines 3-4
    plans = edit(plans, 6, b"\n", b"\n\n")  # a blank line after the 5th line
    plans = edit(plans, 10, b",succeeded,", b",broken,")  # row 6, its 8th line before the edits
    paths = write(tmp_path, plans, steps)
    message = r"^plans\.csv line 10 \(plan 'tau-gpt-4o-airline-task06-trial0'\): field 'status'"
    with pytest.raises(InvalidRecordError, match=message) as caught:
        sqlite_store.import_csv(*paths)
    assert caught.value.row == 6
    report = sqlite_store.import_csv(*paths, on_error="skip")
    assert report.rejections[["table", "row", "field"]].values.tolist() == [["plans", 6, "status"]]
    assert read_all(sqlite_store)[0].loc[1, "goal_type"] == "airline:\ncancel"


# -- partitions: each plan's rows wherever they are --------------------------------------


def test_steps_anywhere_and_small_batches_import_as_one_batch(
    store: HistoryStore, tmp_path: Path
) -> None:
    plans, steps = tau_pair()
    header, *rows = steps.splitlines(keepends=True)
    random.Random(7).shuffle(rows)
    report = store.import_csv(*write(tmp_path, plans, header + b"".join(rows)), batch_size=3)
    assert (report.imported, report.rejected, report.steps) == (20, 0, 285)
    with HistoryStore(f"sqlite:///{tmp_path / 'whole.db'}") as whole:
        whole.import_csv(*write(tmp_path / "whole", *tau_pair()))
        for got, expected in zip(read_all(store), read_all(whole), strict=True):
            pd.testing.assert_frame_equal(got, expected)
    stored = store.plans_after(0, limit=None).to_pandas()[0]
    assert stored["seq"].tolist() == list(range(1, 21))  # seqs follow plans.csv
    file_order = [line.split(b",")[0].decode() for line in plans.splitlines()[1:]]
    assert stored["plan_id"].tolist() == file_order


def test_partitions_hold_every_row_of_their_plans(tmp_path: Path) -> None:
    plans = (TAU_BENCH / "plans.csv").read_bytes()
    header, *rows = (TAU_BENCH / "steps.csv").read_bytes().splitlines(keepends=True)
    random.Random(3).shuffle(rows)
    paths = write(tmp_path, plans, header + b"".join(rows))
    with stage_csv(*paths, batch_size=50) as staged:
        batches = list(staged.batches())
    assert staged.plan_rows == 200 and len(batches) >= 4  # more: plans of 12 steps
    assert max(len(b.plans) for b in batches) <= 50  # a hash spreads plans evenly
    owner = {pid: i for i, b in enumerate(batches) for pid in b.plans["plan_id"]}
    assert len(owner) == 200
    assert all(owner[pid] == i for i, b in enumerate(batches) for pid in b.steps["plan_id"])
    assert sum(len(b.steps) for b in batches) == 2454
    assert sorted(r for b in batches for r in b.step_rows.tolist()) == list(range(2454))


def test_duplicates_and_orphans_across_partitions(store: HistoryStore, tmp_path: Path) -> None:
    plans, steps = tau_pair()
    plans += plans.splitlines(keepends=True)[1]  # plan 00 again, as the last row
    steps += b"ghost,0,respond,ok,,\n"
    report = store.import_csv(*write(tmp_path, plans, steps), on_error="skip", batch_size=1)
    assert report.rejections.to_dict("records") == [
        {"plan_id": FIRST, "table": "plans", "row": 0, "field": "plan_id",
         "reason": "plan_id appears 2 times in the plans table; plan ids must be unique"},
        {"plan_id": "ghost", "table": "steps", "row": 285, "field": "plan_id",
         "reason": "no row of the plans table has this plan_id"},
    ]  # fmt: skip
    assert (report.imported, len(store)) == (19, 19)


def test_rows_without_a_plan_id_are_rejected_one_by_one(
    store: HistoryStore, tmp_path: Path
) -> None:
    plans, steps = tau_pair(3)
    _, *rows = steps.splitlines(keepends=True)
    moved = [b",".join([*r.rstrip(b"\n").split(b",")[1:], r.split(b",")[0]]) + b"\n" for r in rows]
    steps = b"step_index,tool,status,duration_ms,error,plan_id\n" + b"".join(moved)
    steps += b"0,respond\n" + b",0,respond,ok,,\n"  # too short for a plan_id; a blank one
    report = store.import_csv(*write(tmp_path, plans, steps), on_error="skip", batch_size=1)
    assert report.rejections[["plan_id", "table", "field"]].values.tolist() == [
        ["", "steps", "status"],
        ["", "steps", "plan_id"],
    ]
    assert (report.imported, report.steps) == (3, len(rows))


def test_raise_names_the_first_bad_record_of_the_files_whatever_the_batches(
    sqlite_store: HistoryStore, tmp_path: Path
) -> None:
    plans, steps = tau_pair()
    steps = edit(steps, 3, b",ok,", b",fine,")
    plans = edit(plans, 19, b",failed,", b",broken,")
    plans = edit(plans, 12, b",failed,", b",broken,")
    for batch_size in (1, 4, 20_000):
        with pytest.raises(InvalidRecordError, match=r"^plans\.csv line 12 ") as caught:
            sqlite_store.import_csv(*write(tmp_path, plans, steps), batch_size=batch_size)
        assert (caught.value.table, caught.value.row) == ("plans", 10)
        assert len(sqlite_store) == 0


def test_a_plan_already_stored(store: HistoryStore, tau_files: tuple[Path, Path]) -> None:
    store.import_csv(*tau_files, batch_size=5)
    with pytest.raises(Exception, match=f"plan '{FIRST}' is already recorded"):
        store.import_csv(*tau_files, batch_size=5)
    report = store.import_csv(*tau_files, on_error="skip", batch_size=5)
    assert (report.imported, report.rejected, len(store)) == (0, 20, 20)
    assert report.rejections["row"].tolist() == list(range(20))


# -- text the database cannot store, and plans it refuses --------------------------------


def test_a_nul_is_rejected_as_a_problem_on_every_backend(
    store: HistoryStore, tmp_path: Path
) -> None:
    plans, steps = tau_pair()
    steps = edit(steps, 10, b",ok,,", b",ok,,NUL\x00here")
    paths = write(tmp_path, plans, steps)
    with pytest.raises(InvalidRecordError, match=r"^steps\.csv line 10 ") as caught:
        store.import_csv(*paths)
    assert (caught.value.plan_id, caught.value.field) == (FIRST, "error")
    report = store.import_csv(*paths, on_error="skip")
    assert (report.imported, report.rejected) == (19, 1)
    assert report.rejections[["plan_id", "field"]].values.tolist() == [[FIRST, "error"]]
    assert FIRST not in set(read_all(store)[0]["plan_id"])


REFUSED = "tau-gpt-4o-airline-task07-trial0"


@pytest.fixture
def refusing(store: HistoryStore) -> Iterator[HistoryStore]:
    """A store whose database refuses one plan (a trigger), as it may refuse a value."""
    store.count()  # creates the tables
    with store.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text(
                "CREATE TRIGGER refuse BEFORE INSERT ON metalearn_steps "
                "WHEN NEW.tool = 'refuse' BEGIN SELECT RAISE(ABORT, 'no such tool'); END"
            ))  # fmt: skip
        else:
            conn.execute(text(
                "CREATE OR REPLACE FUNCTION metalearn_refuse() RETURNS trigger AS $$ BEGIN "
                "IF NEW.tool = 'refuse' THEN RAISE EXCEPTION 'no such tool' USING ERRCODE = "
                "'22000'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            ))  # fmt: skip
            conn.execute(text(
                "CREATE TRIGGER refuse BEFORE INSERT ON metalearn_steps FOR EACH ROW "
                "EXECUTE FUNCTION metalearn_refuse()"
            ))  # fmt: skip
    yield store
    if store.engine.dialect.name == "postgresql":
        with store.engine.begin() as conn:
            conn.execute(text("DROP FUNCTION metalearn_refuse CASCADE"))


@pytest.mark.parametrize("source", ["csv", "frames"])
def test_a_plan_the_database_refuses_is_a_rejection_not_a_failed_batch(
    refusing: HistoryStore, tmp_path: Path, source: str
) -> None:
    plans, steps = tau_pair()
    header, *rows = steps.splitlines(keepends=True)
    at = next(i for i, r in enumerate(rows) if r.startswith(REFUSED.encode()))
    cells = rows[at].split(b",")
    rows[at] = b",".join([*cells[:2], b"refuse", *cells[3:]])
    paths = write(tmp_path, plans, header + b"".join(rows))

    def load(on_error: str) -> object:
        if source == "csv":
            return refusing.import_csv(*paths, on_error=on_error, batch_size=20)  # type: ignore[arg-type]
        frames = [pd.read_csv(p, dtype="str", keep_default_na=False) for p in paths]
        return refusing.import_frames(*frames, on_error=on_error)  # type: ignore[arg-type]

    with pytest.raises(InvalidRecordError, match=f"plan '{REFUSED}'.*the database refused the "
                       "plan: .*no such tool") as caught:  # fmt: skip
        load("raise")
    assert (caught.value.table, caught.value.row) == ("plans", 7)
    assert str(caught.value).startswith("plans.csv line 9 " if source == "csv" else "plans row 7 ")
    assert len(refusing) == 0
    report = load("skip")
    assert (report.imported, report.rejected) == (19, 1)  # type: ignore[attr-defined]
    stored_plans, stored_steps = read_all(refusing)
    assert REFUSED not in set(stored_plans["plan_id"]) and len(stored_plans) == 19
    assert len(stored_steps) == report.steps  # type: ignore[attr-defined]
