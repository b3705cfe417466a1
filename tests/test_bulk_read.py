"""Bulk reads of SQLite stores in a helper process: same rows as in-process, safe fallback.

The helper reader is given to each store (``HistoryStore(url, reader=...)``) with what a test
needs: a low ``min_plans``, a ``start`` that records the processes it starts, or another
helper ``command``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import update

from metalearn import AnalysisInterrupted, HistoryStore, InvalidArgumentError, Plan, Warehouse
from metalearn import _sqlite_bulk as sqlite_bulk
from metalearn._interrupt import Interrupt
from metalearn._readers import (
    PACKED_SEQ_LIMIT,
    PLANS_SCHEMA,
    ReaderFactory,
    SqlAlchemyReader,
    SqliteHelperReader,
    default_reader,
)
from metalearn._schema import counters, steps
from metalearn.synthetic import make_history
from tests.conftest import END, T0, make_plan

Started = list[subprocess.Popen[bytes]]


@pytest.fixture
def started() -> Started:
    """The helper processes started through :func:`recording` (to check they are gone)."""
    return []


def recording(started: Started) -> sqlite_bulk.StartProcess:
    def start(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(subprocess.Popen(*args, **kwargs))
        return started[-1]

    return start


@pytest.fixture
def eager(started: Started) -> ReaderFactory:
    """A helper reader for any range, recording the processes it starts."""
    return functools.partial(SqliteHelperReader, min_plans=1, start=recording(started))


def statuses(started: Started) -> list[int | None]:
    """Each helper run's exit status: 0 for a run that delivered all its chunks."""
    return [process.returncode for process in started]


@pytest.fixture(scope="module")
def history_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bulk") / "history.db"
    with HistoryStore(f"sqlite:///{path}") as store:
        store.import_frames(*make_history(3_000, seed=7, end=END))
    return path


def in_process(store: HistoryStore, after: int, upto: int, chunk: int) -> list[Any]:
    bounds = itertools.pairwise([*range(after, upto, chunk), upto])
    return [store.plans_between(a, b, step_plan_ids=False) for a, b in bounds]


def test_helper_reads_exactly_the_in_process_rows(
    history_file: Path, eager: ReaderFactory, started: Started, caplog: pytest.LogCaptureFixture
) -> None:
    with HistoryStore(f"sqlite:///{history_file}", reader=eager) as store:
        helper = list(store.batches_between(100, 2_950, chunk_size=700))
        expected = in_process(store, 100, 2_950, 700)
    assert statuses(started) == [0] and "bulk read failed" not in caplog.text  # all five
    assert [b.last_seq for b in helper] == [800, 1_500, 2_200, 2_900, 2_950]
    for got, want in zip(helper, expected, strict=True):
        assert got.plans.equals(want.plans) and got.steps.equals(want.steps)
    assert sum(len(b) for b in helper) == 2_850


def test_columns_null_in_a_whole_chunk_keep_their_types(
    tmp_path: Path, eager: ReaderFactory, started: Started, caplog: pytest.LogCaptureFixture
) -> None:
    """The driver types an all-NULL column as int64; the store's types must come back."""
    folder = tmp_path / "a folder #1 at 100%"  # characters a file: URI must escape
    with HistoryStore(f"sqlite:///{folder / 'nulls.db'}", reader=eager) as store:
        for i in range(6):
            late = i >= 4  # goal type, reward and errors appear only in the last chunk
            store.record_plan(
                Plan(
                    f"p{i}", "agent", "failed" if late else "succeeded", T0,
                    T0 + timedelta(seconds=2), goal_type="refund" if late else None,
                    reward=0.5 if late else None, error="boom 7" if late else None,
                    steps=[{"tool": "search", "status": "error" if late else "ok",
                            "error": "timeout 30" if late else None, "duration_ms": None}],
                )
            )  # fmt: skip
        batches = list(store.batches_between(0, 6, chunk_size=4))
    assert statuses(started) == [0] and "bulk read failed" not in caplog.text
    first, last = batches
    assert first.plans.schema == last.plans.schema == PLANS_SCHEMA
    assert first.plans.column("goal_type").to_pylist() == [None] * 4
    assert last.plans.column("goal_type").to_pylist() == ["refund"] * 2
    assert last.steps.column("error").to_pylist() == ["timeout 30"] * 2
    assert first.steps.column("duration_ms").type == pa.float64()


def test_cold_build_through_the_helper_equals_the_in_process_build(
    history_file: Path, eager: ReaderFactory, started: Started
) -> None:
    url = f"sqlite:///{history_file}"
    with (
        HistoryStore(url, reader=eager) as store,
        HistoryStore(url, reader=SqlAlchemyReader) as lean,
    ):
        helper = Warehouse(store, chunk_size=450)
        assert helper.refresh() == 3_000 and statuses(started) == [0]
        plain = Warehouse(lean, chunk_size=450)
        assert plain.refresh() == 3_000 and statuses(started) == [0]
        for table in ("plans", "steps", "tools"):
            query = f"SELECT * FROM {table} ORDER BY ALL"
            with helper.snapshot() as a, plain.snapshot() as b:
                pd.testing.assert_frame_equal(a.frame(query), b.frame(query))
        with helper.snapshot() as snapshot:
            errors = snapshot.frame("SELECT count(error_norm) AS n FROM steps")["n"].iloc[0]
        assert errors > 0
        helper.close()
        plain.close()


# Runs the real helper on the first two queries only, then dies as if killed (status -9).
DIES_AFTER_TWO = """
import io, json, os, runpy, signal, sys
request = json.load(sys.stdin)
request["queries"] = request["queries"][:2]
sys.stdin = io.StringIO(json.dumps(request))
runpy.run_path(sys.argv[1])["main"]()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_helper_failure_falls_back_to_in_process_reads(
    history_file: Path, tmp_path: Path, started: Started, caplog: pytest.LogCaptureFixture
) -> None:
    """The helper dies after two chunks: the rest is read in-process, nothing lost or doubled."""
    script = tmp_path / "dies_after_two.py"
    script.write_text(DIES_AFTER_TWO)
    command = (sys.executable, "-P", str(script), str(sqlite_bulk.WORKER))
    reader = functools.partial(
        SqliteHelperReader, min_plans=1, command=command, start=recording(started)
    )
    with (
        HistoryStore(f"sqlite:///{history_file}", reader=reader) as store,
        caplog.at_level(logging.WARNING),
    ):
        batches = list(store.batches_between(0, 3_000, chunk_size=1_000))
        expected = in_process(store, 0, 3_000, 1_000)
    for got, want in zip(batches, expected, strict=True):
        assert got.plans.equals(want.plans) and got.steps.equals(want.steps)
    assert statuses(started) == [-9]
    assert "bulk read failed, reading in-process instead" in caplog.text
    assert "status -9" in caplog.text


def test_a_failing_helper_reports_its_status_and_output(history_file: Path, tmp_path: Path) -> None:
    script = tmp_path / "broken_worker.py"
    script.write_text("import sys\nsys.stderr.write('cannot open the store')\nsys.exit(3)\n")
    chunks = sqlite_bulk.read_chunks(
        str(history_file), [("SELECT 1", "SELECT 1")], command=[sys.executable, "-P", str(script)]
    )
    with pytest.raises(sqlite_bulk.BulkReadError, match=r"status 3 .*cannot open the store"):
        next(chunks)


def test_a_bad_query_ends_the_helper_with_the_driver_error(history_file: Path) -> None:
    chunks = sqlite_bulk.read_chunks(str(history_file), [("SELECT * FROM nowhere", "SELECT 1")])
    with pytest.raises(sqlite_bulk.BulkReadError, match="no such table: nowhere"):
        next(chunks)


def test_closing_early_stops_the_helper(history_file: Path, started: Started) -> None:
    query = ("SELECT * FROM metalearn_plans", "SELECT * FROM metalearn_steps")
    chunks = sqlite_bulk.read_chunks(str(history_file), [query] * 50, start=recording(started))
    plans, steps = next(chunks)
    assert plans.num_rows == 3_000 and steps.num_rows > 3_000
    chunks.close()
    (process,) = started
    assert process.poll() is not None  # killed, not left reading 49 more copies


def test_helper_is_used_only_where_it_pays(history_file: Path, started: Started) -> None:
    reader = functools.partial(SqliteHelperReader, min_plans=1_000, start=recording(started))
    with HistoryStore(f"sqlite:///{history_file}", reader=reader) as store:
        assert len(list(store.batches_between(0, 1_000))) == 1
        assert statuses(started) == [0]
        list(store.batches_between(1, 1_000))  # too few plans to pay for a process
        assert statuses(started) == [0]


def test_the_helper_is_chosen_only_where_it_can_run(history_file: Path) -> None:
    url = f"sqlite:///{history_file}"
    with HistoryStore(url) as store:
        assert type(store.reader) is SqliteHelperReader
    with HistoryStore("sqlite://") as memory:
        assert type(memory.reader) is SqlAlchemyReader  # nothing another process could open
    uwsgi = functools.partial(default_reader, python="/usr/bin/uwsgi")
    with HistoryStore(url, reader=uwsgi) as store:
        assert type(store.reader) is SqlAlchemyReader  # not a Python to start the helper with
    with pytest.raises(InvalidArgumentError, match="reads a SQLite file, not sqlite://"):
        HistoryStore("sqlite://", reader=SqliteHelperReader)


def test_warehouse_through_the_helper_under_concurrent_writers(
    tmp_path: Path, eager: ReaderFactory, started: Started
) -> None:
    with HistoryStore(f"sqlite:///{tmp_path / 'busy.db'}", reader=eager) as store:
        store.import_frames(*make_history(500, seed=3, end=END))
        warehouse = Warehouse(store, chunk_size=60)
        done = threading.Event()

        def write(worker: int) -> None:
            for i in range(20):
                store.record_plan(make_plan(f"w{worker}-{i}", offset_s=i))

        def refresh_until_done() -> None:
            while not done.is_set():
                warehouse.refresh()

        with ThreadPoolExecutor(5) as pool:
            refresher = pool.submit(refresh_until_done)
            for future in [pool.submit(write, w) for w in range(4)]:
                future.result()
            done.set()
            refresher.result()
        warehouse.refresh()
        with warehouse.snapshot() as snapshot:
            plans = snapshot.frame("SELECT seq, plan_id FROM plans ORDER BY seq")
            steps = snapshot.frame("SELECT count(*) AS n FROM steps")["n"].iloc[0]
        stored = store.plans_between(0, store.last_seq())
        assert plans["plan_id"].tolist() == stored.plans.column("plan_id").to_pylist()
        assert plans["seq"].tolist() == list(range(1, 581))
        assert steps == stored.steps.num_rows
        assert 0 in statuses(started)  # the helper delivered chunks
        warehouse.close()


def test_a_step_status_outside_the_enum_falls_back_to_exact_rows(
    tmp_path: Path, eager: ReaderFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Statuses travel as 2-bit codes; a status written around validation must not be lost."""
    with HistoryStore(f"sqlite:///{tmp_path / 'odd.db'}", reader=eager) as store:
        for i in range(3):
            store.record_plan(make_plan(f"p{i}"))
        with store.engine.begin() as conn:
            conn.execute(update(steps).where(steps.c.plan_seq == 2).values(status="paused"))
        with caplog.at_level(logging.WARNING):
            (batch,) = list(store.batches_between(0, 3))
    assert "packed step keys out of range or order" in caplog.text
    assert batch.steps.column("status").to_pylist() == ["ok"] * 3 + ["paused"] * 3 + ["ok"] * 3


def test_seqs_too_large_to_pack_are_read_in_process(
    tmp_path: Path, eager: ReaderFactory, started: Started
) -> None:
    with HistoryStore(f"sqlite:///{tmp_path / 'late.db'}", reader=eager) as store:
        store.record_plan(make_plan("first"))
        assert isinstance(store.reader, SqliteHelperReader) and store.reader.pays(0, 1)
        with store.engine.begin() as conn:
            conn.execute(update(counters).values(value=PACKED_SEQ_LIMIT))
        store.record_plan(make_plan("late"))
        assert store.last_seq() == PACKED_SEQ_LIMIT + 1
        assert not store.reader.pays(0, store.last_seq())
        batches = list(store.batches_between(0, store.last_seq(), chunk_size=2**28))
    assert started == []  # no helper run
    assert [p for b in batches for p in b.plans.column("plan_id").to_pylist()] == ["first", "late"]


class StopAfterFirstChunk(Interrupt):
    """Asks to stop while the first chunk loads, as AnalysisQueue.close(drain=False) would
    from another thread: the warehouse checks before each chunk it loads."""

    def check(self) -> None:
        super().check()
        self.request()


def test_an_interrupted_cold_build_keeps_its_chunks_and_stops_the_helper(
    history_file: Path, eager: ReaderFactory, started: Started
) -> None:
    with HistoryStore(f"sqlite:///{history_file}", reader=eager) as store:
        warehouse = Warehouse(store, chunk_size=300)
        with pytest.raises(AnalysisInterrupted):
            warehouse.refresh(StopAfterFirstChunk())
        assert warehouse.watermark == 300  # the first chunk is in, consistent
        (process,) = started
        assert process.poll() is not None
        warehouse.close()
