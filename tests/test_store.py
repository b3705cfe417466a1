"""HistoryStore on SQLite and PostgreSQL: writing, importing, reading, exporting."""

from __future__ import annotations

import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import inspect, text

from metalearn import (
    DuplicatePlanError,
    HistoryStore,
    InvalidArgumentError,
    InvalidRecordError,
    Plan,
)
from metalearn._readers import AdbcReader, SqlAlchemyReader, SqliteHelperReader
from metalearn.synthetic import make_history
from tests.conftest import T0, TAU_BENCH, make_plan


def read_all(store: HistoryStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    return store.plans_after(0, limit=None).to_pandas()


def tau_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The τ-bench CSVs parsed independently of metalearn."""
    plans = pd.read_csv(TAU_BENCH / "plans.csv", dtype="str", keep_default_na=False)
    steps = pd.read_csv(TAU_BENCH / "steps.csv", dtype="str", keep_default_na=False)
    return plans, steps


# -- recording single plans --------------------------------------------------------------


def test_record_plan_round_trips_every_field(store: HistoryStore) -> None:
    plan = Plan(
        "p-1",
        "agent-a",
        "failed",
        "2026-03-01T12:00:00.123456Z",
        "2026-03-01T12:00:09Z",
        goal_type="refund",
        reward=0.25,
        error="gave up",
        priority=3,
        steps=[
            {"tool": "search", "duration_ms": 12.5},
            {"tool": "fetch", "status": "error", "error": "HTTP 500 from 'api'"},
            {"tool": "respond", "status": "skipped"},
        ],
    )
    assert store.record_plan(plan) == 1
    plans, steps = read_all(store)
    row = plans.iloc[0]
    assert (row["seq"], row["plan_id"], row["agent_id"], row["goal_type"]) == (
        1,
        "p-1",
        "agent-a",
        "refund",
    )
    assert (row["status"], row["reward"], row["error"], row["priority"]) == (
        "failed",
        0.25,
        "gave up",
        3,
    )
    assert row["started_at"] == pd.Timestamp("2026-03-01T12:00:00.123456Z")
    assert row["finished_at"] == pd.Timestamp("2026-03-01T12:00:09Z")
    assert steps["tool"].tolist() == ["search", "fetch", "respond"]
    assert steps["status"].tolist() == ["ok", "error", "skipped"]
    assert steps["duration_ms"].iloc[0] == 12.5 and steps["duration_ms"].iloc[1:].isna().all()
    assert steps["error"].iloc[1] == "HTTP 500 from 'api'" and pd.isna(steps["error"].iloc[0])
    assert steps["seq"].tolist() == [1, 1, 1] and steps["step_index"].tolist() == [0, 1, 2]


def test_seq_increases_and_len_counts(store: HistoryStore) -> None:
    seqs = [store.record_plan(make_plan(f"p-{i}")) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert len(store) == store.count() == 5 and store.last_seq() == 5


def test_duplicate_plan_raises_and_changes_nothing(store: HistoryStore) -> None:
    store.record_plan(make_plan("p-1", tools=("a", "b")))
    with pytest.raises(DuplicatePlanError, match=r"plan 'p-1' is already recorded") as caught:
        store.record_plan(make_plan("p-1", tools=("c", "d", "e"), status="failed"))
    assert caught.value.plan_id == "p-1"
    plans, steps = read_all(store)
    assert plans["status"].tolist() == ["succeeded"] and steps["tool"].tolist() == ["a", "b"]
    assert store.record_plan(make_plan("p-2")) == 2  # the failed attempt's seq was rolled back


def test_record_plan_rejects_other_types(store: HistoryStore) -> None:
    with pytest.raises(TypeError, match=r"takes a metalearn\.Plan, not dict"):
        store.record_plan({"plan_id": "p"})  # type: ignore[arg-type]


# -- bulk import -------------------------------------------------------------------------


def small_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    plans = pd.DataFrame(
        {
            "plan_id": ["a", "b", "c"],
            "agent_id": ["x", "x", "y"],
            "goal_type": ["g", "", "g"],
            "status": ["succeeded", "failed", "succeeded"],
            "started_at": [
                "2026-01-01T00:00:00Z",
                "2026-01-01T01:00:00+01:00",
                "2026-01-02T00:00:00Z",
            ],
            "finished_at": ["2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z", "2026-01-02T00:00:03Z"],
        }
    )
    steps = pd.DataFrame(
        {
            "plan_id": ["a", "a", "b", "c"],
            "step_index": [0, 1, 0, 0],
            "tool": ["search", "respond", "search", "respond"],
            "status": ["ok", "ok", "error", "ok"],
            "duration_ms": [1.5, None, 2.0, 0.0],
            "error": [None, None, "boom", None],
        }
    )
    return plans, steps


BAD_ROWS = [  # table, row, column, new value, message, plan ids a skip import rejects
    pytest.param(
        "plans",
        1,
        "status",
        "finished",
        r"plans row 1 \(plan 'b'\): field 'status' = 'finished'",
        {"b"},
        id="plan-status",
    ),
    pytest.param(
        "plans",
        2,
        "started_at",
        "2026-01-02T00:00:00",
        r"plans row 2 \(plan 'c'\): field "
        r"'started_at' = '2026-01-02T00:00:00'; naive timestamps are ambiguous",
        {"c"},
        id="naive-time",
    ),
    pytest.param(
        "plans",
        0,
        "finished_at",
        "2025-12-31T00:00:00Z",
        r"plans row 0 \(plan 'a'\): field 'finished_at' is earlier than started_at",
        {"a"},
        id="finished-before-started",
    ),
    pytest.param(
        "plans",
        1,
        "agent_id",
        "",
        r"plans row 1 \(plan 'b'\): field 'agent_id' is empty",
        {"b"},
        id="empty-agent",
    ),
    pytest.param(
        "plans",
        1,
        "plan_id",
        "a",
        r"plans row 0 \(plan 'a'\): plan_id appears 2 times",
        {"a", "b"},
        id="duplicate-in-frame",
    ),  # b's steps lose their plan row
    pytest.param(
        "steps",
        3,
        "duration_ms",
        -1.0,
        r"steps row 3 \(plan 'c'\): field 'duration_ms' = "
        r"'-1.0'; it must be >= 0 or empty",
        {"c"},
        id="negative-duration",
    ),
    pytest.param(
        "steps",
        2,
        "duration_ms",
        np.inf,
        r"steps row 2 \(plan 'b'\): field 'duration_ms' = "
        r"'inf'; it must be finite",
        {"b"},
        id="infinite-duration",
    ),
    pytest.param(
        "steps",
        1,
        "step_index",
        2,
        r"steps row 0 \(plan 'a'\): steps are numbered 0..2 with 2 "
        r"distinct indexes for 2 steps",
        {"a"},
        id="index-gap",
    ),
    pytest.param(
        "steps",
        3,
        "tool",
        "t" * 201,
        r"steps row 3 \(plan 'c'\): field 'tool' has 201 "
        r"characters",
        {"c"},
        id="long-tool",
    ),
    pytest.param(
        "steps",
        0,
        "status",
        "fine",
        r"steps row 0 \(plan 'a'\): field 'status' = 'fine'; "
        r"allowed values are 'ok', 'error', 'skipped'",
        {"a"},
        id="step-status",
    ),
    pytest.param(
        "steps",
        3,
        "plan_id",
        "zzz",
        r"steps row 3 \(plan 'zzz'\): no row of the plans table",
        {"zzz"},
        id="orphan-step",
    ),
]


def spoil(table: str, row: int, column: str, value: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    plans, steps = small_frames()
    frame = plans if table == "plans" else steps
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return plans, steps


@pytest.mark.parametrize(("table", "row", "column", "value", "message", "rejected"), BAD_ROWS)
def test_import_raise_is_all_or_nothing(
    sqlite_store: HistoryStore,
    table: str,
    row: int,
    column: str,
    value: object,
    message: str,
    rejected: set[str],
) -> None:
    with pytest.raises(InvalidRecordError, match=message) as caught:
        sqlite_store.import_frames(*spoil(table, row, column, value))
    assert caught.value.table == message.split()[0]
    assert len(sqlite_store) == 0


@pytest.mark.parametrize(("table", "row", "column", "value", "message", "rejected"), BAD_ROWS)
def test_import_skip_keeps_valid_plans(
    sqlite_store: HistoryStore,
    table: str,
    row: int,
    column: str,
    value: object,
    message: str,
    rejected: set[str],
) -> None:
    plans_in, steps_in = spoil(table, row, column, value)
    report = sqlite_store.import_frames(plans_in, steps_in, on_error="skip")
    kept = {"a", "b", "c"} - rejected
    plans, steps = read_all(sqlite_store)
    assert set(report.rejections["plan_id"]) == rejected and report.rejected == len(rejected)
    assert set(plans["plan_id"]) == kept and report.imported == len(kept)
    expected_steps = steps_in[steps_in["plan_id"].isin(kept)]
    assert steps["tool"].tolist() == expected_steps["tool"].tolist() and report.steps == len(steps)
    assert re.search(message.split(": ", 1)[1], " ".join(report.rejections["reason"]))


def test_import_normalises_timestamps_and_blanks(store: HistoryStore) -> None:
    report = store.import_frames(*small_frames())
    assert (report.imported, report.rejected, report.steps) == (3, 0, 4)
    plans, steps = read_all(store)
    assert plans["seq"].tolist() == [1, 2, 3]
    assert plans.loc[1, "started_at"] == pd.Timestamp("2026-01-01T00:00:00Z")
    assert pd.isna(plans.loc[1, "goal_type"])
    assert steps["duration_ms"].isna().tolist() == [False, True, False, False]


def test_import_missing_column_is_a_typed_error(sqlite_store: HistoryStore) -> None:
    plans, steps = small_frames()
    with pytest.raises(InvalidRecordError, match=r"the steps table has no column 'tool'"):
        sqlite_store.import_frames(plans, steps.drop(columns="tool"), on_error="skip")


def test_import_duplicate_of_stored_plan(store: HistoryStore) -> None:
    store.record_plan(make_plan("b"))
    with pytest.raises(DuplicatePlanError, match="plan 'b'"):
        store.import_frames(*small_frames())
    assert len(store) == 1
    report = store.import_frames(*small_frames(), on_error="skip")
    assert (report.imported, report.rejected) == (2, 1)
    assert report.rejections.to_dict("records") == [
        {
            "plan_id": "b",
            "table": "plans",
            "row": 1,
            "field": "plan_id",
            "reason": "plan_id is already in the store",
        }
    ]
    assert sorted(read_all(store)[0]["plan_id"]) == ["a", "b", "c"]


def test_import_rejects_naive_datetime_columns(sqlite_store: HistoryStore) -> None:
    plans, steps = small_frames()
    plans["started_at"] = pd.to_datetime(plans["started_at"], utc=True).dt.tz_localize(None)
    with pytest.raises(InvalidRecordError, match=r"plans row 0 .*naive datetimes are ambiguous"):
        sqlite_store.import_frames(plans, steps)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        pytest.param("error", "boom\x00", id="nul-in-step-error"),
        pytest.param("tool", "se\ud800arch", id="lone-surrogate-in-tool"),
    ],
)
def test_import_rejects_text_a_database_cannot_store(
    store: HistoryStore, column: str, value: str
) -> None:
    plans, steps = small_frames()
    steps[column] = steps[column].astype(object)
    steps.loc[2, column] = value  # a step of plan b
    with pytest.raises(InvalidRecordError, match=rf"steps row 2 \(plan 'b'\): field '{column}'"):
        store.import_frames(plans, steps)
    assert len(store) == 0
    report = store.import_frames(plans, steps, on_error="skip")
    assert report.rejections[["plan_id", "field"]].values.tolist() == [["b", column]]
    assert sorted(read_all(store)[0]["plan_id"]) == ["a", "c"] and report.steps == 3


def test_import_seqs_follow_the_rows_and_skip_the_rejected(store: HistoryStore) -> None:
    plans, steps = small_frames()
    plans.loc[1, "status"] = "finished"
    store.import_frames(plans, steps, on_error="skip")
    assert read_all(store)[0]["seq"].tolist() == [1, 3]
    store.import_frames(*make_history(2, seed=3))
    assert read_all(store)[0]["seq"].tolist() == [1, 3, 4, 5]


@pytest.mark.parametrize("batch_size", [0, -1, 1.5])
def test_import_csv_batch_size_must_be_positive(
    sqlite_store: HistoryStore, batch_size: object
) -> None:
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        sqlite_store.import_csv(
            TAU_BENCH / "plans.csv",
            TAU_BENCH / "steps.csv",
            batch_size=batch_size,  # type: ignore[arg-type]
        )


def test_on_error_must_be_known(sqlite_store: HistoryStore) -> None:
    with pytest.raises(InvalidArgumentError, match="on_error must be 'raise' or 'skip', not 'ig"):
        sqlite_store.import_frames(*small_frames(), on_error="ignore")  # type: ignore[arg-type]


# -- τ-bench: real trajectories ----------------------------------------------------------


def test_tau_bench_imports_without_rejections(store: HistoryStore) -> None:
    report = store.import_csv(TAU_BENCH / "plans.csv", TAU_BENCH / "steps.csv")
    assert (report.imported, report.rejected, report.steps) == (200, 0, 2454)
    plans, steps = read_all(store)
    source_plans, source_steps = tau_frames()
    assert plans["plan_id"].tolist() == source_plans["plan_id"].tolist()
    assert (plans["status"] == "succeeded").sum() == 84
    assert steps["tool"].tolist() == source_steps["tool"].tolist()
    assert (steps["status"] == "error").sum() == 73
    expected_start = pd.to_datetime(source_plans["started_at"], utc=True)
    assert (plans["started_at"] == expected_start).all()


def test_tau_bench_csv_round_trip(store: HistoryStore, tmp_path: Path) -> None:
    store.import_csv(TAU_BENCH / "plans.csv", TAU_BENCH / "steps.csv")
    first = store.export_csv(tmp_path / "first")
    with HistoryStore(f"sqlite:///{tmp_path / 'copy.db'}") as copy:
        report = copy.import_csv(*first)
        assert (report.imported, report.rejected) == (200, 0)
        second = copy.export_csv(tmp_path / "second")
        pd.testing.assert_frame_equal(
            read_all(copy)[0].drop(columns="seq"), read_all(store)[0].drop(columns="seq")
        )
        pd.testing.assert_frame_equal(
            read_all(copy)[1].drop(columns="seq"), read_all(store)[1].drop(columns="seq")
        )
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    exported = pd.read_csv(first[0], dtype="str", keep_default_na=False)
    assert exported.columns.tolist() == [
        "plan_id",
        "agent_id",
        "goal_type",
        "status",
        "started_at",
        "finished_at",
        "reward",
        "error",
        "priority",
    ]
    assert exported.loc[0, "started_at"] == "2024-11-22T00:00:00.000000Z"


def test_export_round_trips_awkward_text(sqlite_store: HistoryStore, tmp_path: Path) -> None:
    awkward = 'line one\nline "two", with comma; NA null =1+1\rcarriage'
    sqlite_store.record_plan(
        Plan(
            "p",
            "a",
            "failed",
            T0,
            T0,
            error=awkward,
            steps=[{"tool": "x", "status": "error", "error": "NA"}],
        )
    )
    paths = sqlite_store.export_csv(tmp_path)
    with HistoryStore(f"sqlite:///{tmp_path / 'copy.db'}") as copy:
        copy.import_csv(*paths)
        plans, steps = read_all(copy)
    assert plans.loc[0, "error"] == awkward and steps.loc[0, "error"] == "NA"


def test_import_csv_names_file_and_line(sqlite_store: HistoryStore, tmp_path: Path) -> None:
    shutil.copy(TAU_BENCH / "steps.csv", tmp_path / "steps.csv")
    lines = (TAU_BENCH / "plans.csv").read_text().splitlines()
    lines[5] = lines[5].replace(",failed,", ",broken,")
    (tmp_path / "plans.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        InvalidRecordError,
        match=r"plans.csv line 6 \(plan 'tau-gpt-4o-airline-task04-"
        r"trial0'\): field 'status' = 'broken'",
    ) as caught:
        sqlite_store.import_csv(tmp_path / "plans.csv", tmp_path / "steps.csv")
    assert (caught.value.row, caught.value.table, caught.value.field) == (4, "plans", "status")
    report = sqlite_store.import_csv(
        tmp_path / "plans.csv", tmp_path / "steps.csv", on_error="skip"
    )
    assert (report.imported, report.rejected) == (199, 1)


def test_export_of_empty_store_writes_headers(sqlite_store: HistoryStore, tmp_path: Path) -> None:
    plans_path, steps_path = sqlite_store.export_csv(tmp_path)
    assert plans_path.read_text().startswith("plan_id,agent_id,goal_type,status,started_at")
    assert steps_path.read_text() == "plan_id,step_index,tool,status,duration_ms,error\n"


# -- incremental reading -----------------------------------------------------------------


def test_plans_after_pages_by_watermark(store: HistoryStore) -> None:
    plans, steps = make_history(250, seed=3)
    store.import_frames(plans, steps)
    seen, watermark = [], 0
    while len(batch := store.plans_after(watermark, limit=60)):
        assert batch.plans.num_rows <= 60
        assert set(batch.steps.column("seq").to_pylist()) == set(
            batch.plans.column("seq").to_pylist()
        )
        seen += batch.plans.column("plan_id").to_pylist()
        watermark = batch.last_seq
    assert seen == plans["plan_id"].tolist() and watermark == 250
    assert store.plans_after(watermark).last_seq == watermark
    all_steps = pd.concat([b.steps.to_pandas() for b in store.iter_batches(batch_size=100)])
    assert len(all_steps) == len(steps)
    with pytest.raises(InvalidArgumentError, match=r"limit must be an integer >= 1 \(plans, or"):
        store.plans_after(0, limit=0)
    with pytest.raises(InvalidArgumentError, match="chunk_size must be an integer >= 1"):
        store.batches_between(0, 250, chunk_size=0)


def test_synthetic_history_survives_the_store(sqlite_store: HistoryStore) -> None:
    plans, steps = make_history(500, seed=11)
    sqlite_store.import_frames(plans, steps)
    stored_plans, stored_steps = read_all(sqlite_store)
    pd.testing.assert_frame_equal(stored_plans[plans.columns.tolist()], plans, check_dtype=False)
    pd.testing.assert_series_equal(stored_steps["duration_ms"], steps["duration_ms"])
    pd.testing.assert_series_equal(stored_steps["error"], steps["error"], check_dtype=False)


def test_concurrent_writers_and_watermark_reader(store: HistoryStore) -> None:
    """seq order is commit order: a reader advancing its watermark sees every plan once."""
    writers, per_writer = 8, 30
    done = threading.Event()
    seen: list[tuple[int, str, int]] = []

    def write(worker: int) -> None:
        for i in range(per_writer):
            store.record_plan(make_plan(f"w{worker}-{i}", tools=("a", "b", "c")))

    def read() -> None:
        watermark = 0
        while True:
            finished = done.is_set()
            batch = store.plans_after(watermark, limit=25)
            counts = pd.Series(batch.steps.column("seq").to_pylist()).value_counts()
            for seq, plan_id in zip(
                batch.plans.column("seq").to_pylist(),
                batch.plans.column("plan_id").to_pylist(),
                strict=True,
            ):
                seen.append((seq, plan_id, int(counts.get(seq, 0))))
            watermark = batch.last_seq
            if finished and not len(batch):
                return

    with ThreadPoolExecutor(max_workers=writers + 1) as pool:
        reader = pool.submit(read)
        for future in [pool.submit(write, w) for w in range(writers)]:
            future.result()
        done.set()
        reader.result()
    seqs = [s for s, _, _ in seen]
    ids = [p for _, p, _ in seen]
    assert len(ids) == len(set(ids)) == writers * per_writer
    assert set(ids) == {f"w{w}-{i}" for w in range(writers) for i in range(per_writer)}
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(n == 3 for _, _, n in seen)  # a plan is never visible without its steps


# -- configuration -----------------------------------------------------------------------


def test_default_url_and_environment_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("METALEARN_DB_URL", raising=False)
    with HistoryStore() as store:
        store.record_plan(make_plan("p"))
        assert repr(store) == "<HistoryStore sqlite:///data/metalearn.db plans=1>"
    assert (tmp_path / "data" / "metalearn.db").exists()
    monkeypatch.setenv("METALEARN_DB_URL", f"sqlite:///{tmp_path / 'other' / 'h.db'}")
    with HistoryStore() as store:
        assert len(store) == 0 and store.url.endswith("other/h.db")


def test_repr_never_shows_a_password() -> None:
    store = HistoryStore("postgresql+psycopg://user:s3cret@127.0.0.1:1/nowhere")
    shown = repr(store)
    assert "s3cret" not in shown
    assert shown == "<HistoryStore postgresql+psycopg://user:***@127.0.0.1:1/nowhere plans=?>"


def test_sqlite_settings_and_schema(sqlite_store: HistoryStore) -> None:
    assert len(sqlite_store) == 0  # creates the tables
    with sqlite_store.engine.connect() as conn:
        pragma = {
            name: conn.execute(text(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout")
        }
    assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 30000}
    schema = inspect(sqlite_store.engine)
    assert {"metalearn_plans", "metalearn_steps"} <= set(schema.get_table_names())
    indexed = {tuple(ix["column_names"]) for ix in schema.get_indexes("metalearn_plans")}
    assert {("agent_id", "seq"), ("agent_id", "finished_at_us"), ("finished_at_us",)} <= indexed


def test_in_memory_store_is_shared_across_threads() -> None:
    with HistoryStore("sqlite://") as store, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: store.record_plan(make_plan(f"p-{i}")), range(20)))
        assert len(store) == 20


def test_store_accepts_an_engine(tmp_path: Path) -> None:
    with HistoryStore(f"sqlite:///{tmp_path / 'h.db'}") as first:
        first.record_plan(make_plan("p"))
        shared = HistoryStore(first.engine)
        assert len(shared) == 1
        shared.close()  # does not dispose an engine it was given
        assert len(first) == 1


def test_record_plans_is_one_group_commit(store: HistoryStore) -> None:
    store.record_plan(make_plan("old"))
    outcomes = store.record_plans(
        [make_plan("a"), make_plan("old"), make_plan("b"), make_plan("a")]
    )
    assert outcomes[0] == 2 and outcomes[2] == 4  # the duplicates' seqs are skipped
    assert [type(o).__name__ for o in outcomes] == [
        "int",
        "DuplicatePlanError",
        "int",
        "DuplicatePlanError",
    ]
    assert sorted(read_all(store)[0]["plan_id"]) == ["a", "b", "old"]
    assert store.record_plans([make_plan("a")])[0].plan_id == "a"  # type: ignore[union-attr]
    # the batch of four reserved seqs 2-5; the all-duplicate batch reserved nothing
    assert store.record_plan(make_plan("c")) == 6


class CountingReader(SqlAlchemyReader):
    """Counts the queries it runs, and whether the store closed it."""

    queries = 0
    closed = False

    def table(self, query: Any, schema: pa.Schema) -> pa.Table:
        self.queries += 1
        return super().table(query, schema)

    def close(self) -> None:
        self.closed = True


def test_every_read_goes_through_the_reader_given(tmp_path: Path) -> None:
    readers: list[CountingReader] = []

    def counting(database: Any) -> CountingReader:
        readers.append(CountingReader(database))
        return readers[-1]

    with HistoryStore(f"sqlite:///{tmp_path / 'h.db'}", reader=counting) as store:
        store.record_plan(make_plan("p"))
        (reader,) = readers
        assert store.reader is reader
        assert len(store.plans_after(0)) == 1 and reader.queries == 2  # plans, then steps
        assert len(list(store.batches_between(0, 1))) == 1 and reader.queries == 4
    assert reader.closed


def test_each_backend_gets_its_fastest_reader_and_reads_what_sqlalchemy_reads(
    store: HistoryStore, store_url: str
) -> None:
    fastest = {"sqlite": SqliteHelperReader, "postgresql": AdbcReader}
    assert type(store.reader) is fastest[store.engine.url.get_backend_name()]
    store.import_frames(*make_history(200, seed=5))
    with HistoryStore(store_url, reader=SqlAlchemyReader) as plain:
        for a, b in [
            (store.plans_after(0, limit=None), plain.plans_after(0, limit=None)),
            (store.plans_after(20, limit=50), plain.plans_after(20, limit=50)),
            (store.plans_between(50, 150, step_plan_ids=False),
             plain.plans_between(50, 150, step_plan_ids=False)),
        ]:  # fmt: skip
            assert a.plans.equals(b.plans) and a.steps.equals(b.steps)
            assert a.last_seq == b.last_seq


def test_plans_between_reads_a_seq_range(store: HistoryStore) -> None:
    for i in range(6):
        store.record_plan(make_plan(f"p-{i}", tools=("a", "b")))
    batch = store.plans_between(2, 5)
    assert batch.plans.column("plan_id").to_pylist() == ["p-2", "p-3", "p-4"]
    assert batch.last_seq == 5 and batch.steps.num_rows == 6
    lean = store.plans_between(2, 5, step_plan_ids=False)
    assert "plan_id" not in lean.steps.column_names
    assert lean.steps.column("seq").to_pylist() == [3, 3, 4, 4, 5, 5]
    assert len(store.plans_between(6, 9)) == 0


# -- analysis snapshots ------------------------------------------------------------------


def snapshot_item(agent_id: str, through_seq: int) -> tuple[dict[str, object], pd.DataFrame]:
    """A snapshot row and one pattern row, in the columns of the snapshot tables."""
    header = {
        "agent_id": agent_id, "through_seq": through_seq, "computed_at_us": 0,
        "duration_ms": 1.0, "time_range_days": None, "as_of_us": 0, "plans": 10,
        "successes": 6, "patterns_tested": 1, "patterns_significant": 0, "min_length": 2,
        "max_length": 4, "min_support": 5, "fdr": 0.05, "analysis": "{}",
    }  # fmt: skip
    pattern = pd.DataFrame(
        {
            "rank": [0], "pattern": ["search → respond"], "length": [2], "plans": [10],
            "successes": [6], "success_rate": [0.6], "ci_low": [0.3], "ci_high": [0.85],
            "lift": [1.1], "p_value": [0.5], "q_value": [0.5], "significant": [False],
            "direction": ["success"],
        }
    )  # fmt: skip
    return header, pattern


def test_snapshots_keep_the_newest_per_agent(store: HistoryStore) -> None:
    store.record_plan(make_plan("p", agent_id="a"))
    assert store.agents_behind() == {"a": 1}
    ids = [store.save_snapshots([snapshot_item("a", 1)], keep_snapshots=2)[0] for _ in range(3)]
    found = store.latest_snapshot("a")
    assert found is not None
    header, patterns = found
    assert header["snapshot_id"] == ids[-1] and patterns["pattern"].tolist() == ["search → respond"]
    assert store.agents_behind() == {} and store.latest_snapshot("b") is None
    with store.engine.connect() as conn:
        kept = conn.execute(text("SELECT snapshot_id FROM metalearn_snapshots")).scalars().all()
    assert sorted(kept) == ids[1:]
    store.save_snapshots([snapshot_item("a", 1)], keep=1)  # the old name of keep_snapshots
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM metalearn_snapshots")).scalar_one() == 1
    with pytest.raises(InvalidArgumentError, match="keep_snapshots must be an integer >= 1"):
        store.save_snapshots([snapshot_item("a", 1)], keep_snapshots=0)
