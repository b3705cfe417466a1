"""The analysis warehouse: an in-process DuckDB mirror of the history store.

The mirror is a cache. Its watermark is the highest plan ``seq`` it holds, kept in the
same DuckDB transaction as the rows, and a refresh copies exactly the plans above it (with
their steps) from :meth:`HistoryStore.plans_after`, chunk by chunk through Arrow. Because
the store hands out ``seq`` in commit order, nothing is lost or doubled while writers keep
going. Tool names are stored once (``tools``) and steps reference them by integer id, which
keeps the rows narrow and lets pattern mining work on integer codes.

Every job gets its own cursor (a DuckDB connection to the same database) and reads one
consistent snapshot of the mirror.

A persisted file has one writer: DuckDB locks it for the process that opened it. With
``if_locked="fallback"`` a warehouse whose file is held (by another process, or by another
warehouse of this one) takes the next free numbered file beside it (``name.2.duckdb``, up
to ``name.9.duckdb``: the same slot is free again at the next start, so restarts stay
incremental), else an in-memory mirror, and logs where it went.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from metalearn._arrays import first_occurrences
from metalearn._checks import positive_int
from metalearn._errors import AnalysisInterrupted, InvalidArgumentError
from metalearn._interrupt import Interrupt
from metalearn._store import HistoryStore, PlanBatch

__all__ = ["Snapshot", "Warehouse", "normalised_errors"]

logger = logging.getLogger("metalearn.warehouse")

SCHEMA_VERSION = 2

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
-- Steps carry their plan's agent, finish time and outcome, so windows filter steps
-- without a join; first_in_plan marks a tool's first call in its plan (plans per tool
-- without DISTINCT); error_norm is the masked error text of error steps. Rows are kept
-- in (seq, step_index) order: pattern mining reads them in that order.
CREATE TABLE IF NOT EXISTS steps (
    seq BIGINT NOT NULL,
    step_index INTEGER NOT NULL,
    tool_id INTEGER NOT NULL,
    status VARCHAR NOT NULL,
    duration_ms DOUBLE,
    error VARCHAR,
    agent_id VARCHAR NOT NULL,
    finished_at TIMESTAMP NOT NULL,
    succeeded BOOLEAN NOT NULL,
    first_in_plan BOOLEAN NOT NULL,
    error_norm VARCHAR
);
INSERT INTO sync_state VALUES ('watermark', 0) ON CONFLICT DO NOTHING;
"""

_DROP = "DROP TABLE IF EXISTS steps; DROP TABLE IF EXISTS plans; DROP TABLE IF EXISTS tools;"

_LOAD = """
INSERT INTO tools SELECT tool_id, tool FROM new_tools;

INSERT INTO plans
SELECT seq, plan_id, agent_id, goal_type, status = 'succeeded', started_at, finished_at,
       date_diff('microsecond', started_at, finished_at) / 1e6, reward, error, priority
FROM batch_plans;

INSERT INTO steps
SELECT seq, step_index, tool_id, status, duration_ms, error, agent_id, finished_at,
       succeeded, first_in_plan, error_norm
FROM batch_steps;

UPDATE sync_state SET value = $watermark WHERE key = 'watermark';
"""

_WATERMARK = "SELECT value FROM sync_state WHERE key = 'watermark'"
_VERSION = "SELECT value FROM sync_state WHERE key = 'schema_version'"
_STORE_ID = "SELECT value FROM sync_state WHERE key = 'store_id'"

IfLocked = Literal["raise", "fallback"]
"""What a warehouse does when its file is in use: raise, or fall back (module docstring)."""
_LOCKED = "Could not set lock on file"  # DuckDB's IOException: another process holds the file
_FALLBACK_FILES = range(2, 10)
# Files a warehouse of this process has open: DuckDB lets a process open its own file twice,
# and two mirrors writing one file would load every plan twice.
_open_files: Counter[Path] = Counter()
_open_files_lock = threading.Lock()


# Masks, in order: quoted values, UUIDs, tokens mixing letters and digits (ids such as
# req_33080, u-48213, 0x1f), then numbers; then whitespace runs become one space (only
# runs that change are matched: a regex replacement per single space costs twice the rest).
# RE2 syntax (pyarrow's regex engine, as DuckDB's). Applied once per distinct error text of
# the error steps when the warehouse loads them (steps.error_norm).
_MASKS = (
    ("'[^']*'|\"[^\"]*\"", "<str>"),
    ("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<id>"),
    (r"\b(?:[A-Za-z_]+[-_]?[0-9]|[0-9]+[A-Za-z_])[A-Za-z0-9_-]*", "<id>"),
    (r"[0-9]+(?:\.[0-9]+)?", "<n>"),
    (r"\s{2,}|[\t\n\f\r]", " "),  # RE2's \s is [\t\n\f\r ]
)


def normalised_errors(texts: pa.Array) -> pa.Array:
    """Error texts with their variable parts masked (a missing text reads as no message).

    ``texts`` is a string array; one failure then reads the same every time.
    """
    masked = pc.coalesce(texts, pa.scalar("(no message)", pa.string()))
    for pattern, mask in _MASKS:
        masked = pc.replace_substring_regex(masked, pattern=pattern, replacement=mask)
    return pc.utf8_trim(masked, characters=" ")


def _naive_utc(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Drop the UTC zone from a timestamp column (DuckDB then needs no time-zone support)."""
    return column.cast(pa.timestamp("us"))


@dataclass(frozen=True)
class _Prepared:
    """A batch made ready to load, without the warehouse's state (so it can run ahead).

    Steps carry their tools as codes into ``tools`` (this batch's distinct names); the
    load maps those to the warehouse's tool ids, which only it may hand out.
    """

    plans: pa.Table
    steps: pa.Table
    tools: list[str]
    last_seq: int


def _prepare(batch: PlanBatch) -> _Prepared:
    """The batch's plans with naive UTC times, and its steps with their plan's columns,
    first_in_plan and error_norm, still in order."""
    plans, steps = batch.plans, batch.steps
    for name in ("started_at", "finished_at"):
        plans = plans.set_column(plans.schema.get_field_index(name), name,
                                 _naive_utc(plans.column(name)))  # fmt: skip
    plan_index = pa.array(np.searchsorted(plans.column("seq").to_numpy(),
                                          steps.column("seq").to_numpy()))  # fmt: skip
    tools = pc.dictionary_encode(steps.column("tool")).combine_chunks()
    codes = tools.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    prepared = pa.table(
        {
            "seq": steps.column("seq"),
            "step_index": steps.column("step_index"),
            "tool_code": pa.array(codes, pa.int32()),
            "status": steps.column("status"),
            "duration_ms": steps.column("duration_ms"),
            "error": steps.column("error"),
            # Integer takes of a dictionary column, not copies of a string per step.
            "agent_id": pc.dictionary_encode(plans.column("agent_id")).take(plan_index),
            "finished_at": plans.column("finished_at").take(plan_index),
            "succeeded": pc.equal(plans.column("status"), "succeeded").take(plan_index),
            "first_in_plan": pa.array(
                first_occurrences(codes, steps.column("step_index").to_numpy())
            ),
            "error_norm": _error_norms(steps),
        }
    )
    return _Prepared(plans, prepared, tools.dictionary.to_pylist(), batch.last_seq)


def _error_norms(steps: pa.Table) -> pa.Array:
    """The masked error text of each error step (NULL for the others)."""
    is_error = pc.equal(steps.column("status"), "error").combine_chunks()
    masked = normalised_errors(steps.column("error").combine_chunks().filter(is_error))
    # Each error step's position among the error steps; NULL (not an error step) elsewhere.
    flags = is_error.to_numpy(zero_copy_only=False)
    result: pa.Array = masked.take(pa.array(np.cumsum(flags) - 1, mask=~flags))
    return result


def _scalar(cursor: duckdb.DuckDBPyConnection, sql: str) -> Any:
    rows = cursor.sql(sql).fetchall()  # fetch everything: DuckDB 2 refuses half-read results
    return rows[0][0] if rows else None


@contextmanager
def _interruptible() -> Iterator[None]:
    """A query stopped by ``Snapshot.interrupt`` raises :class:`AnalysisInterrupted`."""
    try:
        yield
    except duckdb.InterruptException as error:
        raise AnalysisInterrupted("the analysis query was interrupted") from error


class Snapshot:
    """One job's consistent, read-only view of the warehouse (its own DuckDB cursor).

    ``through_seq`` is the highest plan ``seq`` visible in it.
    """

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor = cursor
        self._uploaded: set[str] = set()
        self.through_seq = int(self._fetch_scalar(_WATERMARK))

    def _fetch_scalar(self, sql: str) -> Any:
        return _scalar(self._cursor, sql)

    def arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a query and fetch the result as an Arrow table.

        A query stopped by :meth:`interrupt` raises :class:`AnalysisInterrupted`.
        """
        with _interruptible():
            table: pa.Table = self._cursor.sql(sql, params=dict(params or {})).to_arrow_table()
        return table

    def materialize(self, name: str, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Store a query's result as a temporary table of this snapshot's cursor."""
        with _interruptible():
            self._cursor.execute(f"CREATE TEMP TABLE {name} AS {sql}", dict(params or {}))

    def upload(self, name: str, table: pa.Table) -> None:
        """Make an Arrow table queryable as ``name`` by this snapshot's cursor."""
        self._cursor.register(name, table)
        self._uploaded.add(name)

    def drop(self, name: str) -> None:
        """Forget a table :meth:`materialize` or :meth:`upload` made."""
        if name in self._uploaded:
            self._uploaded.discard(name)
            self._cursor.unregister(name)
        else:
            self._cursor.execute(f"DROP TABLE IF EXISTS {name}")

    def frame(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a query and fetch the result through Arrow (never ``.df()``: GIL-bound)."""
        frame: pd.DataFrame = self.arrow(sql, params).to_pandas()
        return frame

    def interrupt(self) -> None:
        """Stop the query running in this snapshot (from another thread).

        This is what an attached :class:`~metalearn._interrupt.Interrupt` calls.
        """
        self._cursor.interrupt()


class Warehouse:
    """DuckDB mirror of a :class:`HistoryStore`, refreshed incrementally by ``seq``.

    ``path`` persists the mirror to a DuckDB file, so the next start resumes from its
    watermark instead of copying the whole history again (one file per store). A file
    another process (or warehouse) holds raises DuckDB's ``IOException`` unless
    ``if_locked="fallback"``: then the warehouse uses the next free ``name.N.duckdb``
    beside it, or memory (see the module docstring); :attr:`path` says which.

    >>> from metalearn.synthetic import make_history
    >>> store = HistoryStore("sqlite://")
    >>> _ = store.import_frames(*make_history(500, seed=1))
    >>> warehouse = Warehouse(store)
    >>> warehouse.refresh(), warehouse.refresh(), warehouse.watermark
    (500, 0, 500)
    >>> warehouse.close()
    """

    def __init__(
        self,
        store: HistoryStore,
        *,
        path: str | Path | None = None,
        chunk_size: int = 100_000,
        if_locked: IfLocked = "raise",
    ) -> None:
        if if_locked not in ("raise", "fallback"):
            raise InvalidArgumentError(
                f"if_locked must be 'raise' or 'fallback', not {if_locked!r}"
            )
        self._store = store
        self._chunk_size = positive_int("chunk_size", chunk_size, what="plans")
        self._path, self._connection = _connect(Path(path) if path is not None else None, if_locked)
        self._refresh_lock = threading.Lock()
        self._closed = False
        try:
            self._create_schema()
            self._check_store()
            self._tool_ids = self._known_tools()
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> Path | None:
        """The DuckDB file this warehouse mirrors into (None: in memory)."""
        return self._path

    def limit_threads(self, threads: int) -> None:
        """Let DuckDB use at most ``threads`` threads (default: one per core): what a
        background worker sets so that the apps on its machine keep a core."""
        threads = positive_int("threads", threads, what="DuckDB threads")
        self._connection.execute(f"SET threads = {threads}")

    def _check_store(self) -> None:
        """Empty a mirror of another store (or of this one before a reset), and record
        which store this file mirrors.

        The identity decides: a store deleted and recreated with as many plans or more
        has the same seqs but another history.
        """
        cursor = self._connection.cursor()
        try:
            mirrored = _scalar(cursor, _STORE_ID)
        finally:
            cursor.close()
        current = int(self._store.store_id, 16)
        watermark = self.watermark
        if watermark and (mirrored != current or watermark > self._store.last_seq()):
            logger.warning(
                "rebuilding warehouse %s: it mirrors %s, not store %s (%s)",
                self._path or "in memory",
                "an unidentified store" if mirrored is None else f"store {mirrored:016x}",
                self._store.store_id,
                self._store.url,
            )
            self._rebuild()
        self._connection.execute(
            "INSERT OR REPLACE INTO sync_state VALUES ('store_id', $id)", {"id": current}
        )

    def _create_schema(self) -> None:
        """Create the tables; a file written by an older layout is rebuilt from scratch."""
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS sync_state (key VARCHAR PRIMARY KEY, value BIGINT)"
        )
        version = _scalar(self._connection.cursor(), _VERSION)
        has_rows = _scalar(self._connection.cursor(), _WATERMARK) is not None
        if version != SCHEMA_VERSION and (version is not None or has_rows):
            self._connection.execute(_DROP + "DELETE FROM sync_state;")
        self._connection.execute(_SCHEMA)
        self._connection.execute(
            "INSERT INTO sync_state VALUES ('schema_version', $v) ON CONFLICT DO NOTHING",
            {"v": SCHEMA_VERSION},
        )

    def _known_tools(self) -> dict[str, int]:
        cursor = self._connection.cursor()
        try:
            rows = cursor.sql("SELECT tool, tool_id FROM tools").fetchall()
        finally:
            cursor.close()
        return {str(tool): int(tool_id) for tool, tool_id in rows}

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
            target, added = self._store.last_seq(), 0
            batches = self._store.batches_between(self.watermark, target, self._chunk_size)
            # Each batch is prepared (Arrow work, GIL released) on a thread while the one
            # before it loads into DuckDB; loads stay in seq order.
            with closing(batches), ThreadPoolExecutor(1, "metalearn-prepare") as pool:
                ahead: Future[_Prepared] | None = None
                for batch in batches:
                    next_ahead = pool.submit(_prepare, batch)
                    if ahead is not None:
                        added += self._load(ahead.result(), interrupt)
                    ahead = next_ahead
                if ahead is not None:
                    added += self._load(ahead.result(), interrupt)
            return added

    def _tool_lookup(self, names: list[str]) -> tuple[NDArray[np.int32], dict[str, int]]:
        """The warehouse's tool id of each name (new names get the next ids); the new ones."""
        new: dict[str, int] = {}
        for name in names:
            if name not in self._tool_ids and name not in new:
                new[name] = len(self._tool_ids) + len(new)
        ids = [self._tool_ids.get(n, new.get(n, -1)) for n in names]
        return np.array(ids, dtype=np.int32), new

    def _load(self, batch: _Prepared, interrupt: Interrupt | None) -> int:
        """Insert a prepared batch in one transaction; return its number of plans."""
        if interrupt is not None:
            interrupt.check()
        lookup, new_tools = self._tool_lookup(batch.tools)
        codes = batch.steps.column("tool_code").to_numpy()
        steps = batch.steps.set_column(
            batch.steps.schema.get_field_index("tool_code"), "tool_id", pa.array(lookup[codes])
        )
        cursor = self._connection.cursor()
        try:
            cursor.begin()
            cursor.register("new_tools", pa.table({
                "tool_id": pa.array(list(new_tools.values()), pa.int32()),
                "tool": pa.array(list(new_tools), pa.string()),
            }))  # fmt: skip
            cursor.register("batch_plans", batch.plans)
            cursor.register("batch_steps", steps)
            cursor.execute(_LOAD, {"watermark": batch.last_seq})
            cursor.commit()
        except BaseException:
            cursor.rollback()
            raise
        finally:
            cursor.close()
        self._tool_ids.update(new_tools)  # only once the rows that use them are committed
        rows: int = batch.plans.num_rows
        return rows

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
        if self._closed:
            return
        self._closed = True
        self._connection.close()
        if self._path is not None:
            with _open_files_lock:
                _open_files[self._path.resolve()] -= 1


def _connect(
    path: Path | None, if_locked: IfLocked
) -> tuple[Path | None, duckdb.DuckDBPyConnection]:
    """The file a new warehouse mirrors into (see the module docstring) and its connection."""
    if path is None:
        return None, duckdb.connect(":memory:")
    path.parent.mkdir(parents=True, exist_ok=True)
    numbered = [path.with_name(f"{path.stem}.{n}{path.suffix}") for n in _FALLBACK_FILES]
    for candidate in [path] if if_locked == "raise" else [path, *numbered]:
        connection = _open_file(candidate, shared=if_locked == "raise")
        if connection is not None:
            if candidate != path:
                logger.warning("warehouse %s is in use: mirroring into %s instead", path, candidate)
            return candidate, connection
    logger.warning(
        "warehouse %s and its numbered neighbours (to %s) are all in use: mirroring in memory",
        path, numbered[-1].name,
    )  # fmt: skip
    return None, duckdb.connect(":memory:")


def _open_file(path: Path, *, shared: bool) -> duckdb.DuckDBPyConnection | None:
    """A connection to ``path``, or None when another process holds it (or, unless
    ``shared``, another warehouse of this process: DuckDB would let it in)."""
    key = path.resolve()
    with _open_files_lock:
        if not shared and _open_files[key]:
            logger.info("warehouse file %s is open in another warehouse of this process", path)
            return None
        try:
            connection = duckdb.connect(str(path))
        except duckdb.IOException as error:
            if shared or _LOCKED not in str(error):
                raise
            logger.info("warehouse file %s is locked by another process: %s", path, error)
            return None
        _open_files[key] += 1
    return connection
