"""The DuckDB mirror: incremental, exact under concurrent writers, resumable from a file."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from metalearn import HistoryStore, Warehouse
from metalearn.synthetic import make_history
from tests.conftest import END, make_plan

PACKAGE = Path(__file__).resolve().parents[1] / "metalearn"


def mirrored(warehouse: Warehouse) -> tuple[pd.DataFrame, pd.DataFrame]:
    with warehouse.snapshot() as snapshot:
        plans = snapshot.frame("SELECT * FROM plans ORDER BY seq")
        steps = snapshot.frame(
            "SELECT s.seq, s.step_index, t.tool, s.status FROM steps s JOIN tools t USING (tool_id)"
            " ORDER BY s.seq, s.step_index"
        )
    return plans, steps


@pytest.fixture
def warehouse(store: HistoryStore) -> Iterator[Warehouse]:
    mirror = Warehouse(store, chunk_size=40)
    yield mirror
    mirror.close()


def test_refresh_copies_exactly_the_new_plans(store: HistoryStore, warehouse: Warehouse) -> None:
    plans, steps = make_history(150, seed=4, end=END)
    store.import_frames(plans, steps)
    assert warehouse.refresh() == 150 and warehouse.refresh() == 0
    store.record_plan(make_plan("late", tools=("search", "brand_new_tool")))
    assert warehouse.refresh() == 1 and warehouse.watermark == 151
    got_plans, got_steps = mirrored(warehouse)
    assert got_plans["plan_id"].tolist() == [*plans["plan_id"], "late"]
    assert got_plans["succeeded"].sum() == (plans["status"] == "succeeded").sum() + 1
    assert got_steps["tool"].tolist() == [*steps["tool"], "search", "brand_new_tool"]
    assert len(got_steps) == len(steps) + 2


def test_times_and_durations_are_utc(store: HistoryStore, warehouse: Warehouse) -> None:
    store.record_plan(make_plan("p", tools=("a", "b", "c")))  # 12:00:00 to 12:00:03 UTC
    warehouse.refresh()
    plans, _ = mirrored(warehouse)
    assert plans.loc[0, "started_at"] == pd.Timestamp("2026-03-01 12:00:00")
    assert plans.loc[0, "duration_s"] == 3.0


def test_refresh_under_concurrent_writers_loses_and_doubles_nothing(
    store: HistoryStore, warehouse: Warehouse
) -> None:
    writers, per_writer = 6, 25
    done = threading.Event()

    def write(worker: int) -> None:
        for i in range(per_writer):
            store.record_plan(make_plan(f"w{worker}-{i}"))

    def refresh_until_done() -> int:
        rounds = 0
        while not done.is_set():
            warehouse.refresh()
            rounds += 1
        return rounds

    with ThreadPoolExecutor(writers + 2) as pool:
        refreshers = [pool.submit(refresh_until_done) for _ in range(2)]
        for future in [pool.submit(write, w) for w in range(writers)]:
            future.result()
        done.set()
        assert all(f.result() >= 1 for f in refreshers)
    warehouse.refresh()
    plans, steps = mirrored(warehouse)
    assert len(plans) == plans["plan_id"].nunique() == writers * per_writer == len(store)
    assert plans["seq"].is_monotonic_increasing
    assert (steps.groupby("seq").size() == 3).all() and len(steps) == 3 * len(plans)


def test_chunk_size_does_not_change_the_mirror(tau_store: HistoryStore) -> None:
    small, large = Warehouse(tau_store, chunk_size=7), Warehouse(tau_store)
    small.refresh()
    large.refresh()
    for a, b in zip(mirrored(small), mirrored(large), strict=True):
        pd.testing.assert_frame_equal(a, b)
    small.close()
    large.close()


def test_persisted_file_resumes_from_its_watermark(
    sqlite_store: HistoryStore, tmp_path: Path
) -> None:
    path = tmp_path / "mirror" / "warehouse.duckdb"
    sqlite_store.import_frames(*make_history(60, seed=2, end=END))
    first = Warehouse(sqlite_store, path=path)
    assert first.refresh() == 60
    first.close()
    sqlite_store.record_plan(make_plan("after-restart"))
    second = Warehouse(sqlite_store, path=path)
    assert second.watermark == 60 and second.refresh() == 1
    plans, _ = mirrored(second)
    assert len(plans) == 61 and plans["plan_id"].iloc[-1] == "after-restart"
    second.close()


def test_persisted_file_of_another_store_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    with HistoryStore(f"sqlite:///{tmp_path / 'big.db'}") as big:
        big.import_frames(*make_history(30, seed=1, end=END))
        mirror = Warehouse(big, path=path)
        mirror.refresh()
        mirror.close()
    with HistoryStore(f"sqlite:///{tmp_path / 'small.db'}") as small:
        small.record_plan(make_plan("only"))
        mirror = Warehouse(small, path=path)
        assert mirror.watermark == 0 and mirror.refresh() == 1
        assert mirrored(mirror)[0]["plan_id"].tolist() == ["only"]
        mirror.close()


def test_a_recreated_store_with_more_plans_is_not_served_from_the_old_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, path = f"sqlite:///{tmp_path / 'history.db'}", tmp_path / "warehouse.duckdb"
    with HistoryStore(url) as old:
        old.import_frames(*make_history(300, seed=1, end=END))
        mirror = Warehouse(old, path=path)
        assert mirror.refresh() == 300
        mirror.close()
    for stale in tmp_path.glob("history.db*"):  # the store is deleted and created again
        stale.unlink()
    with HistoryStore(url) as new:
        plans, steps = make_history(400, seed=2, end=END)  # more plans: seqs 1..400
        new.import_frames(plans, steps)
        with caplog.at_level("WARNING", logger="metalearn.warehouse"):
            mirror = Warehouse(new, path=path)
        assert "rebuilding warehouse" in caplog.text and new.store_id in caplog.text
        assert mirror.watermark == 0 and mirror.refresh() == 400
        got, _ = mirrored(mirror)
        assert sorted(got["plan_id"]) == sorted(plans["plan_id"])
        assert int(got["succeeded"].sum()) == int((plans["status"] == "succeeded").sum())
        mirror.close()
        caplog.clear()
        again = Warehouse(new, path=path)  # the same store again: resumed, not rebuilt
        assert again.watermark == 400 and again.refresh() == 0 and caplog.text == ""
        again.close()


def test_snapshot_reports_what_it_sees(store: HistoryStore, warehouse: Warehouse) -> None:
    store.import_frames(*make_history(25, seed=3, end=END))
    warehouse.refresh()
    with warehouse.snapshot() as snapshot:
        assert snapshot.through_seq == 25
        assert snapshot.frame("SELECT count(*) AS n FROM plans")["n"].iloc[0] == 25


def test_closed_warehouse_says_so(sqlite_store: HistoryStore) -> None:
    mirror = Warehouse(sqlite_store)
    mirror.close()
    with pytest.raises(RuntimeError, match="this warehouse is closed"):
        mirror.refresh()
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        Warehouse(sqlite_store, chunk_size=0)


def test_results_never_go_through_df() -> None:
    """DuckDB's .df() holds the GIL for seconds on string columns: results use Arrow."""
    for path in PACKAGE.rglob("*.py"):
        calls = re.findall(r"[\w)\]]\.(?:df|fetchdf|fetch_df)\(", path.read_text())
        assert not calls, (path, calls)


def test_file_from_an_older_layout_is_rebuilt(sqlite_store: HistoryStore, tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    old.execute("CREATE TABLE sync_state (key VARCHAR PRIMARY KEY, value BIGINT)")
    old.execute("INSERT INTO sync_state VALUES ('watermark', 0)")
    old.execute("CREATE TABLE steps (seq BIGINT, tool_id INTEGER)")  # no denormalised columns
    old.close()
    sqlite_store.record_plan(make_plan("p", tools=("a", "b", "a")))
    mirror = Warehouse(sqlite_store, path=path)
    assert mirror.refresh() == 1
    with mirror.snapshot() as snapshot:
        steps = snapshot.frame("SELECT first_in_plan, agent_id FROM steps ORDER BY step_index")
    assert steps["first_in_plan"].tolist() == [True, True, False]
    assert set(steps["agent_id"]) == {"agent-a"}
    mirror.close()


def test_steps_are_stored_in_plan_order_with_first_calls_marked(
    store: HistoryStore, warehouse: Warehouse
) -> None:
    plans, steps = make_history(120, seed=9, end=END)
    store.import_frames(plans, steps)
    warehouse.refresh()
    with warehouse.snapshot() as snapshot:
        stored = snapshot.frame("SELECT seq, step_index, first_in_plan, succeeded FROM steps")
    assert stored[["seq", "step_index"]].equals(
        stored[["seq", "step_index"]].sort_values(["seq", "step_index"]).reset_index(drop=True)
    )
    expected_first = ~steps.duplicated(["plan_id", "tool"]).to_numpy()
    assert stored["first_in_plan"].tolist() == expected_first.tolist()
    succeeded = steps["plan_id"].map(plans.set_index("plan_id")["status"].eq("succeeded"))
    assert stored["succeeded"].tolist() == succeeded.tolist()
