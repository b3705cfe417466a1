"""The analysis warehouse: an in-process DuckDB mirror of the history store.

The mirror is a cache. Its watermark is the highest plan ``seq`` it holds, kept in the
same DuckDB transaction as the rows, and a refresh copies exactly the plans above it (with
their steps) from :meth:`HistoryStore.plans_after`, chunk by chunk through Arrow. Because
the store hands out ``seq`` in commit order, nothing is lost or doubled while writers keep
going. Tool names are stored once (``tools``) and steps reference them by integer id, which
keeps the rows narrow and lets pattern mining work on integer codes.

Every job gets its own cursor (a DuckDB connection to the same database) and reads one
consistent snapshot of the mirror.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from metalearn._errors import AnalysisInterrupted
from metalearn._store import HistoryStore, PlanBatch

__all__ = ["Interrupt", "Snapshot", "Warehouse"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sync_state (key VARCHAR PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS tools (tool_id INTEGER NOT NULL, tool VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS plans (
    seq BIGINT NOT NULL,
    plan_id VARCHAR NOT NULL,
    agent_id VARCHAR NOT NULL,
    goal_type VARCHAR,
    succeeded BOOLEAN NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NOT NULL,
    duration_s DOUBLE NOT NULL,
    reward DOUBLE,
    error VARCHAR,
    priority INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    seq BIGINT NOT NULL,
    step_index INTEGER NOT NULL,
    tool_id INTEGER NOT NULL,
    status VARCHAR NOT NULL,
    duration_ms DOUBLE,
    error VARCHAR
);
INSERT INTO sync_state VALUES ('watermark', 0) ON CONFLICT DO NOTHING;
"""

_LOAD = """
INSERT INTO tools
SELECT (SELECT coalesce(max(tool_id), -1) FROM tools) + row_number() OVER (ORDER BY tool), tool
FROM (SELECT DISTINCT tool FROM batch_steps) AS new
WHERE tool NOT IN (SELECT tool FROM tools);

INSERT INTO plans
SELECT seq, plan_id, agent_id, goal_type, status = 'succeeded', started_at, finished_at,
       date_diff('microsecond', started_at, finished_at) / 1e6, reward, error, priority
FROM batch_plans;

INSERT INTO steps
SELECT s.seq, s.step_index, t.tool_id, s.status, s.duration_ms, s.error
FROM batch_steps AS s JOIN tools AS t USING (tool);

UPDATE sync_state SET value = $watermark WHERE key = 'watermark';
"""

_WATERMARK = "SELECT value FROM sync_state WHERE key = 'watermark'"


def _naive_utc(table: pa.Table, *columns: str) -> pa.Table:
    """Drop the UTC zone from timestamp columns (DuckDB then needs no time-zone support)."""
    for name in columns:
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, table.column(name).cast(pa.timestamp("us")))
    return table


def _scalar(cursor: duckdb.DuckDBPyConnection, sql: str) -> Any:
    rows = cursor.sql(sql).fetchall()  # fetch everything: DuckDB 2 refuses half-read results
    return rows[0][0] if rows else None


class Snapshot:
    """One job's consistent, read-only view of the warehouse (its own DuckDB cursor).

    ``through_seq`` is the highest plan ``seq`` visible in it.
    """

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor = cursor
        self.through_seq = int(self._fetch_scalar(_WATERMARK))

    def _fetch_scalar(self, sql: str) -> Any:
        return _scalar(self._cursor, sql)

    def arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a query and fetch the result as an Arrow table."""
        table: pa.Table = self._cursor.sql(sql, params=dict(params or {})).to_arrow_table()
        return table

    def frame(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a query and fetch the result through Arrow (never ``.df()``: GIL-bound)."""
        frame: pd.DataFrame = self.arrow(sql, params).to_pandas()
        return frame

    def interrupt(self) -> None:
        """Stop the query running in this snapshot (from another thread)."""
        self._cursor.interrupt()


class Interrupt:
    """Lets another thread stop a job: flags it and interrupts its running DuckDB query.

    The job checks :meth:`check` between steps and attaches its snapshot while querying.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self.requested = False

    def request(self) -> None:
        """Stop the job as soon as possible (safe from any thread)."""
        with self._lock:
            self.requested = True
            if self._snapshot is not None:
                self._snapshot.interrupt()

    def check(self) -> None:
        """Raise :class:`AnalysisInterrupted` if an interrupt was requested."""
        if self.requested:
            raise AnalysisInterrupted("the analysis was interrupted (queue closed without drain)")

    @contextmanager
    def attached(self, snapshot: Snapshot) -> Iterator[Snapshot]:
        """While inside, :meth:`request` also interrupts this snapshot's query."""
        with self._lock:
            self._snapshot = snapshot
        try:
            self.check()
            yield snapshot
        except duckdb.InterruptException as error:
            raise AnalysisInterrupted("the analysis query was interrupted") from error
        finally:
            with self._lock:
                self._snapshot = None


class Warehouse:
    """DuckDB mirror of a :class:`HistoryStore`, refreshed incrementally by ``seq``.

    ``path`` persists the mirror to a DuckDB file, so the next start resumes from its
    watermark instead of copying the whole history again (one file per store).

    >>> from metalearn.synthetic import make_history
    >>> store = HistoryStore("sqlite://")
    >>> _ = store.import_frames(*make_history(500, seed=1))
    >>> warehouse = Warehouse(store)
    >>> warehouse.refresh(), warehouse.refresh(), warehouse.watermark
    (500, 0, 500)
    >>> warehouse.close()
    """

    def __init__(
        self, store: HistoryStore, *, path: str | Path | None = None, chunk_size: int = 250_000
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, not {chunk_size}")
        self._store = store
        self._chunk_size = chunk_size
        self._path = Path(path) if path is not None else None
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = duckdb.connect(str(self._path) if self._path else ":memory:")
        self._connection.execute(_SCHEMA)
        self._refresh_lock = threading.Lock()
        self._closed = False
        if self.watermark > store.last_seq():
            self._rebuild()  # the file mirrors another (or a reset) store

    def __repr__(self) -> str:
        where = str(self._path) if self._path else "memory"
        return f"<Warehouse {where} watermark={self.watermark}>"

    @property
    def watermark(self) -> int:
        """The highest plan ``seq`` mirrored so far."""
        cursor = self._connection.cursor()
        try:
            return int(_scalar(cursor, _WATERMARK))
        finally:
            cursor.close()

    def _rebuild(self) -> None:
        with self._refresh_lock:
            self._connection.execute(
                "DELETE FROM steps; DELETE FROM plans; DELETE FROM tools;"
                "UPDATE sync_state SET value = 0 WHERE key = 'watermark';"
            )

    def refresh(self, interrupt: Interrupt | None = None) -> int:
        """Copy the plans committed since the last refresh; return how many.

        Stops at the store's last ``seq`` as of the call, so a busy store cannot keep it
        looping; later plans arrive with the next refresh. An ``interrupt`` is honoured
        between chunks (what was copied stays: the mirror is consistent after any chunk).
        """
        with self._refresh_lock:
            self._check_open()
            target = self._store.last_seq()
            watermark, added = self.watermark, 0
            while watermark < target:
                if interrupt is not None:
                    interrupt.check()
                batch = self._store.plans_after(watermark, self._chunk_size)
                if not len(batch):
                    break
                self._load(batch)
                watermark, added = batch.last_seq, added + len(batch)
            return added

    def _load(self, batch: PlanBatch) -> None:
        cursor = self._connection.cursor()
        try:
            cursor.begin()
            cursor.register("batch_plans", _naive_utc(batch.plans, "started_at", "finished_at"))
            cursor.register("batch_steps", batch.steps)
            cursor.execute(_LOAD, {"watermark": batch.last_seq})
            cursor.commit()
        except BaseException:
            cursor.rollback()
            raise
        finally:
            cursor.close()

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """A job's own cursor, in one read transaction (a consistent view), closed after."""
        self._check_open()
        cursor = self._connection.cursor()
        try:
            cursor.begin()
            yield Snapshot(cursor)
            cursor.commit()
        finally:
            cursor.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this warehouse is closed; create a new one")

    def close(self) -> None:
        """Close the DuckDB database (a persisted file keeps its rows and watermark)."""
        self._closed = True
        self._connection.close()
