"""``HistoryStore.export_parquet`` and ``metalearn export``: Parquet datasets a lake can read."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pytest

from metalearn import HistoryStore, InvalidArgumentError, Plan
from metalearn._interchange import PLAN_COLUMNS, STEP_COLUMNS
from metalearn.cli import main
from metalearn.synthetic import make_history

END = datetime(2026, 6, 1, tzinfo=UTC)


def read(directory: Path, name: str) -> pd.DataFrame:
    """A dataset read back with pyarrow, the partition column from the paths."""
    table = ds.dataset(directory / name, format="parquet", partitioning="hive").to_table()
    frame = table.to_pandas()
    keys = ["plan_id"] if name == "plans" else ["plan_id", "step_index"]
    return frame.sort_values(keys).reset_index(drop=True)


def expected(store: HistoryStore, tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The store's history in the interchange format, independently: its CSV export."""
    plans_csv, steps_csv = store.export_csv(tmp_path / "csv")
    plans = pd.read_csv(plans_csv, keep_default_na=False, na_values=[""])
    steps = pd.read_csv(steps_csv, keep_default_na=False, na_values=[""])
    return plans.sort_values("plan_id").reset_index(drop=True), steps.sort_values(
        ["plan_id", "step_index"]
    ).reset_index(drop=True)


@pytest.fixture
def history(sqlite_store: HistoryStore) -> HistoryStore:
    sqlite_store.import_frames(*make_history(600, n_agents=3, seed=4, end=END, days=10))
    return sqlite_store


def test_the_datasets_hold_the_interchange_columns_by_finish_day(
    history: HistoryStore, tmp_path: Path
) -> None:
    done = history.export_parquet(tmp_path / "lake")
    assert (done.plans, done.after_seq, done.last_seq) == (600, 0, 600)
    plans, steps = read(tmp_path / "lake", "plans"), read(tmp_path / "lake", "steps")
    assert list(plans.columns) == [*PLAN_COLUMNS, "finished_day"]
    assert list(steps.columns) == [*STEP_COLUMNS, "finished_day"]
    assert str(plans["finished_at"].dtype) == "datetime64[us, UTC]"
    want_plans, want_steps = expected(history, tmp_path)
    assert done.steps == len(want_steps) == len(steps)
    got = plans.assign(
        started_at=plans["started_at"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        finished_at=plans["finished_at"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )
    for column in PLAN_COLUMNS:
        left, right = got[column].astype(object), want_plans[column].astype(object)
        assert left.where(left.notna(), None).tolist() == right.where(right.notna(), None).tolist()
    pd.testing.assert_series_equal(
        steps["tool"].astype(object), want_steps["tool"].astype(object), check_names=False
    )
    # Each day directory holds the plans that finished that day, and their steps.
    days = plans["finished_at"].dt.strftime("%Y-%m-%d")
    assert (plans["finished_day"] == days).all()
    day_of = dict(zip(plans["plan_id"], plans["finished_day"], strict=True))
    assert (steps["finished_day"] == steps["plan_id"].map(day_of)).all()
    assert sorted(p.name for p in (tmp_path / "lake" / "plans").iterdir()) == sorted(
        f"finished_day={day}" for day in days.unique()
    )


def test_duckdb_reads_the_export(history: HistoryStore, tmp_path: Path) -> None:
    history.export_parquet(tmp_path / "lake")
    plans_glob = str(tmp_path / "lake" / "plans" / "**" / "*.parquet")
    ((count, successes, days),) = duckdb.sql(
        f"SELECT count(*), count(*) FILTER (status = 'succeeded'), count(DISTINCT finished_day) "
        f"FROM read_parquet('{plans_glob}', hive_partitioning = true)"
    ).fetchall()
    want_plans, _ = expected(history, tmp_path)
    assert (count, successes) == (600, int((want_plans["status"] == "succeeded").sum()))
    assert days == want_plans["finished_at"].str[:10].nunique()


def new_plan(plan_id: str, at: datetime) -> Plan:
    return Plan(plan_id, "agent-late", "succeeded", at - timedelta(seconds=5), at,
                steps=[{"tool": "search"}, {"tool": "respond"}])  # fmt: skip


def test_a_second_export_appends_only_the_new_plans(history: HistoryStore, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    history.export_parquet(lake)
    assert history.export_parquet(lake).plans == 0  # nothing new: nothing written
    history.record_plans([new_plan("late-1", END), new_plan("late-2", END + timedelta(days=1))])
    done = history.export_parquet(lake)
    assert (done.plans, done.steps, done.after_seq, done.last_seq) == (2, 4, 600, 602)
    plans = read(lake, "plans")
    assert len(plans) == 602 and plans["plan_id"].is_unique
    assert json.loads((lake / "_metalearn_export.json").read_text())["last_seq"] == 602
    assert set(plans.query("agent_id == 'agent-late'")["finished_day"]) == {
        "2026-06-01", "2026-06-02",
    }  # fmt: skip


def test_an_interrupted_export_is_redone_in_place(history: HistoryStore, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    history.export_parquet(lake)
    history.record_plan(new_plan("late-1", END))
    history.export_parquet(lake)
    # As if the second export died after its files, before its manifest:
    (lake / "_metalearn_export.json").write_text(
        json.dumps({"store_id": history.store_id, "last_seq": 600})
    )
    assert history.export_parquet(lake).plans == 1
    assert len(read(lake, "plans")) == 601  # the same file names, overwritten: no double


def test_a_directory_of_another_store_is_refused(history: HistoryStore, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    history.export_parquet(lake)
    with HistoryStore(f"sqlite:///{tmp_path / 'other.db'}") as other:
        other.record_plan(new_plan("x", END))
        with pytest.raises(InvalidArgumentError, match="holds an export of another store"):
            other.export_parquet(lake)
    (lake / "_metalearn_export.json").unlink()
    with pytest.raises(InvalidArgumentError, match="not a metalearn export"):
        history.export_parquet(lake)


def test_metalearn_export_on_the_command_line(
    history: HistoryStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = history.engine.url.render_as_string(hide_password=False)
    assert main(["export", "--db", url, "--parquet", str(tmp_path / "lake")]) == 0
    assert "exported 600 plans" in capsys.readouterr().out
    assert main(["export", "--db", url, "--parquet", str(tmp_path / "lake")]) == 0
    assert "nothing new since seq 600" in capsys.readouterr().out
    assert main(["export", "--db", url, "--csv", str(tmp_path / "csv")]) == 0
    assert (tmp_path / "csv" / "plans.csv").exists()
    with pytest.raises(SystemExit) as exited:
        main(["export", "--db", url])
    assert exited.value.code == 2
