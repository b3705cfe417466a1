"""Snapshots: the stratified columns are stored, and snapshots of older stores still load."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import MetaData, Table, create_engine, insert, inspect

from metalearn import HistoryStore, MetaLearningService
from metalearn._schema import ADDED_COLUMNS, metadata
from metalearn._snapshots import snapshot_rows
from metalearn.synthetic import make_history
from tests.conftest import END

AGENT = "support-bot"


def _old_metadata() -> MetaData:
    """The store's tables as they were before the stratified columns were added."""
    old = MetaData()
    for table in metadata.sorted_tables:
        dropped = set(ADDED_COLUMNS.get(table.name, ()))
        columns: list[Any] = [c._copy() for c in table.columns if c.name not in dropped]
        Table(table.name, old, *columns)
    return old


@pytest.fixture
def history() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_history(1_500, seed=5, end=END)


def _old_snapshot(
    history: tuple[pd.DataFrame, pd.DataFrame],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """A snapshot as the older version wrote it: pooled, no stratified columns, no low_n."""
    with HistoryStore("sqlite://") as scratch:
        scratch.import_frames(*history)
        with MetaLearningService(scratch, max_workers=1) as service:
            analysis = service.analyze_execution_patterns_sync(AGENT, time_range_days=None)
            report = service.extract_successful_patterns_sync(
                AGENT, time_range_days=None, min_support=5, stratify_by=None
            )
    header, rows = snapshot_rows(analysis, report, duration_ms=1.0)
    header.pop("stratify_by")
    tables = json.loads(header["analysis"])
    for table in tables.values():
        if "low_n" in table["columns"]:
            at = table["columns"].index("low_n")
            table["columns"].pop(at)
            for row in table["data"]:
                row.pop(at)
    header["analysis"] = json.dumps(tables)
    return header, rows.drop(columns=list(ADDED_COLUMNS["metalearn_snapshot_patterns"]))


@pytest.fixture
def old_store(store_url: str, history: tuple[pd.DataFrame, pd.DataFrame]) -> str:
    """A store created by the older schema, holding one old snapshot of AGENT."""
    header, rows = _old_snapshot(history)
    old = _old_metadata()
    engine = create_engine(store_url)
    with engine.begin() as conn:
        old.create_all(conn)
        snapshot_id = conn.execute(
            insert(old.tables["metalearn_snapshots"]).values(**header)
        ).inserted_primary_key[0]
        records = rows.assign(snapshot_id=snapshot_id).to_dict(orient="records")
        conn.execute(insert(old.tables["metalearn_snapshot_patterns"]), records)
    engine.dispose()
    return store_url


def test_an_old_store_gains_the_columns_and_its_snapshots_load(old_store: str) -> None:
    with HistoryStore(old_store) as store, MetaLearningService(store, max_workers=1) as service:
        report = service.latest_patterns_sync(AGENT)
        analysis = service.latest_analysis_sync(AGENT)
        engine = store._database.engine
        columns = {c["name"] for c in inspect(engine).get_columns("metalearn_snapshot_patterns")}
    assert set(ADDED_COLUMNS["metalearn_snapshot_patterns"]) <= columns
    assert report is not None and analysis is not None
    assert report.stratify_by is None and len(report.patterns) > 10
    rows = report.patterns
    assert rows["mh_odds_ratio"].isna().all() and (rows["strata"] == 0).all()
    assert not rows["simpson"].any() and (rows["explained_by"] == "").all()
    assert rows["plans_needed"].isna().all()
    assert (rows["finding"] == rows["significant"]).all()  # every significant row, as before
    assert len(report.successful) + len(report.failing) == int(rows["significant"].sum())
    assert analysis.by_goal_type["low_n"].dtype == bool  # worked out on loading
    assert analysis.by_goal_type.columns.tolist()[:6] == [
        "goal_type", "plans", "successes", "success_rate", "ci_low", "ci_high"]  # fmt: skip


def test_new_snapshots_store_every_column(
    old_store: str, history: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    with HistoryStore(old_store) as store:
        store.import_frames(*history)
        with MetaLearningService(store, max_workers=1) as service:
            service.snapshot_agents_sync([AGENT], time_range_days=None, min_support=5)
            stored = service.latest_patterns_sync(AGENT)
            direct = service.extract_successful_patterns_sync(
                AGENT, time_range_days=None, min_support=5
            )
    assert stored is not None and stored.stratify_by == "goal_type"
    pd.testing.assert_frame_equal(stored.patterns, direct.patterns)
    assert (
        stored.patterns["strata"].max() > 1 and np.isfinite(stored.patterns["mh_odds_ratio"]).any()
    )
