"""Reading the store into Arrow: one reader interface, three readers, chosen once.

A :class:`Reader` runs the store's read-only queries into Arrow tables (:meth:`Reader.table`)
and, on top of that, reads plans with their steps: one batch after a watermark, one seq
range, or a warehouse build's chunks (:meth:`Reader.batches`). The readers:

- :class:`SqlAlchemyReader`: plain DB-API rows in short chunks, on any database;
- :class:`AdbcReader`: PostgreSQL straight into Arrow through the ADBC driver;
- :class:`SqliteHelperReader`: big ranges of a SQLite file in a helper process
  (:mod:`metalearn._sqlite_bulk`), everything else as :class:`SqlAlchemyReader`.

:func:`default_reader` picks one per store, once, by backend and what is installed;
``HistoryStore(url, reader=...)`` takes any ``Callable[[Database], Reader]`` instead.
"""

from __future__ import annotations

import gc
import itertools
import logging
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Connection, Select, case, select

from metalearn import _sqlite_bulk
from metalearn._checks import positive_int
from metalearn._database import Database
from metalearn._errors import InvalidArgumentError
from metalearn._schema import plans, steps
from metalearn._types import StepStatus

__all__ = [
    "BULK_MIN_PLANS",
    "PACKED_SEQ_LIMIT",
    "PLANS_SCHEMA",
    "STEPS_SCHEMA",
    "AdbcReader",
    "PlanBatch",
    "Reader",
    "ReaderFactory",
    "SqlAlchemyReader",
    "SqliteHelperReader",
    "chunk_bounds",
    "default_reader",
]

logger = logging.getLogger("metalearn.store")

PLANS_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("plan_id", pa.string()),
        ("agent_id", pa.string()),
        ("goal_type", pa.string()),
        ("status", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("reward", pa.float64()),
        ("error", pa.string()),
        ("priority", pa.int64()),
    ]
)
"""The columns of :attr:`PlanBatch.plans`: the interchange plan columns after ``seq``."""
STEPS_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("plan_id", pa.string()),
        ("step_index", pa.int32()),
        ("tool", pa.string()),
        ("status", pa.string()),
        ("duration_ms", pa.float64()),
        ("error", pa.string()),
    ]
)
"""The columns of :attr:`PlanBatch.steps`: the plan's ``seq``, then the interchange columns."""
_STEPS_SCHEMA_NO_ID = STEPS_SCHEMA.remove(STEPS_SCHEMA.get_field_index("plan_id"))

BULK_MIN_PLANS = 50_000
"""Below this many plans a helper process costs more to start than it saves."""
_READ_CHUNK_ROWS = 5_000

_PLAN_SELECT = [
    plans.c.seq,
    plans.c.plan_id,
    plans.c.agent_id,
    plans.c.goal_type,
    plans.c.status,
    plans.c.started_at_us.label("started_at"),
    plans.c.finished_at_us.label("finished_at"),
    plans.c.reward,
    plans.c.error,
    plans.c.priority,
]
_STEP_SELECT = [
    steps.c.plan_seq.label("seq"),
    plans.c.plan_id,
    steps.c.step_index,
    steps.c.tool,
    steps.c.status,
    steps.c.duration_ms,
    steps.c.error,
]


def _plans_query(after_seq: int, upto_seq: int | None, limit: int | None = None) -> Select[Any]:
    query = select(*_PLAN_SELECT).where(plans.c.seq > after_seq)
    if upto_seq is not None:
        query = query.where(plans.c.seq <= upto_seq)
    query = query.order_by(plans.c.seq)
    return query if limit is None else query.limit(limit)


def _steps_query(after_seq: int, upto_seq: int, with_plan_ids: bool) -> Select[Any]:
    columns = _STEP_SELECT if with_plan_ids else [c for c in _STEP_SELECT if c.name != "plan_id"]
    query = select(*columns).where(steps.c.plan_seq > after_seq, steps.c.plan_seq <= upto_seq)
    if with_plan_ids:
        query = query.join(plans, plans.c.seq == steps.c.plan_seq)
    return query.order_by(steps.c.plan_seq, steps.c.step_index)


def _literal_sql(database: Database, query: Select[Any]) -> str:
    """The query's SQL with its parameters inlined, for drivers outside SQLAlchemy.

    Only integer seq bounds are ever bound into these queries, so literals are safe.
    """
    return str(query.compile(database.engine, compile_kwargs={"literal_binds": True}))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A driver's Arrow table with the store's column types (integer micros -> timestamps,
    all-NULL columns typed by the driver -> the real type)."""
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema], schema=schema)


def chunk_bounds(after_seq: int, upto_seq: int, chunk_size: int) -> list[tuple[int, int]]:
    """``(after, upto]`` seq ranges of at most ``chunk_size`` plans covering the range.

    >>> chunk_bounds(100, 350, 100)
    [(100, 200), (200, 300), (300, 350)]
    >>> chunk_bounds(5, 5, 100)
    []
    """
    return list(itertools.pairwise([*range(after_seq, upto_seq, chunk_size), upto_seq]))


@dataclass(frozen=True)
class PlanBatch:
    """Plans with ``seq`` above a watermark, and all their steps, as Arrow tables.

    ``plans`` columns: seq, plan_id, agent_id, goal_type, status, started_at, finished_at
    (UTC timestamps), reward, error, priority. ``steps`` columns: seq (the plan's),
    plan_id, step_index, tool, status, duration_ms, error. ``last_seq`` is the highest
    plan ``seq`` in the batch (the watermark to pass next), or the one asked for when empty.
    """

    plans: pa.Table
    steps: pa.Table
    last_seq: int

    def __len__(self) -> int:
        rows: int = self.plans.num_rows
        return rows

    def to_pandas(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Both tables as pandas DataFrames (plans, steps)."""
        return self.plans.to_pandas(), self.steps.to_pandas()


class Reader(ABC):
    """How a store reads: queries into Arrow, and plans with their steps on top of that.

    A reader only ever runs the store's own read-only queries; subclasses implement
    :meth:`table` (and may read :meth:`batches` their own way). ``HistoryStore`` checks
    the options before it asks, and calls :meth:`close` when it closes. Readers are used
    from several threads at once.
    """

    def __init__(self, database: Database) -> None:
        self._database = database

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._database.engine.url.get_backend_name()}>"

    @abstractmethod
    def table(self, query: Select[Any], schema: pa.Schema) -> pa.Table:
        """The rows of a read-only query as an Arrow table with ``schema``'s columns."""

    def plans_after(
        self, after_seq: int, limit: int | None, *, step_plan_ids: bool = True
    ) -> PlanBatch:
        """Plans with ``seq > after_seq`` (at most ``limit``, oldest first) and their steps."""
        plan_table = self.table(_plans_query(after_seq, None, limit), PLANS_SCHEMA)
        last_seq = plan_table.column("seq")[-1].as_py() if plan_table.num_rows else after_seq
        return self._with_steps(plan_table, after_seq, last_seq, step_plan_ids)

    def plans_between(
        self, after_seq: int, upto_seq: int, *, step_plan_ids: bool = True
    ) -> PlanBatch:
        """Plans with ``after_seq < seq <= upto_seq`` and their steps."""
        plan_table = self.table(_plans_query(after_seq, upto_seq), PLANS_SCHEMA)
        return self._with_steps(plan_table, after_seq, upto_seq, step_plan_ids)

    def _with_steps(
        self, plan_table: pa.Table, after_seq: int, last_seq: int, step_plan_ids: bool
    ) -> PlanBatch:
        schema = STEPS_SCHEMA if step_plan_ids else _STEPS_SCHEMA_NO_ID
        step_table = self.table(_steps_query(after_seq, last_seq, step_plan_ids), schema)
        return PlanBatch(plan_table, step_table, last_seq)

    def batches(self, bounds: Sequence[tuple[int, int]]) -> Generator[PlanBatch]:
        """The chunked bulk read: :meth:`plans_between` for each ``(after, upto]`` bound,
        in order, steps without ``plan_id``. Closing the generator early stops the read."""
        for low, high in bounds:
            yield self.plans_between(low, high, step_plan_ids=False)

    def close(self) -> None:  # noqa: B027 - a reader that holds nothing has nothing to close
        """Release what the reader holds (its own connections or processes)."""


ReaderFactory = Callable[[Database], Reader]
"""Makes a store's reader from its :class:`~metalearn._database.Database`: a reader class,
:func:`default_reader`, or e.g. ``functools.partial(SqliteHelperReader, min_plans=1)``."""


class _CollectorPause:
    """Pauses the cyclic garbage collector while bulk reads run (re-entrant, thread-safe).

    Fetching millions of rows allocates millions of short-lived tuples; on Python 3.11
    that triggers full collections over every live object, each holding the GIL for tens
    of milliseconds and stalling the application's event loop. Reference counting still
    frees the rows at once; collection resumes when the last bulk read ends, and stays off
    if the application had turned it off itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._resume = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._active == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0 and self._resume:
                    gc.enable()


_collector_paused = _CollectorPause()


def _read_table(conn: Connection, query: Select[Any], schema: pa.Schema) -> pa.Table:
    """Fetch a query into Arrow in chunks of plain DB-API rows.

    Chunks keep every C call short (no long GIL hold); the collector pause keeps the
    garbage collector from stalling other threads.
    """
    batches = []
    with _collector_paused():
        result = conn.execute(query)  # compiled once and cached by SQLAlchemy
        if type(result.cursor_strategy).__name__ != "CursorFetchStrategy":
            raise RuntimeError("expected an unbuffered cursor result")  # rows could be lost
        while rows := result.cursor.fetchmany(_READ_CHUNK_ROWS):
            columns = zip(*rows, strict=True)
            arrays = [pa.array(v, type=f.type) for v, f in zip(columns, schema, strict=True)]
            batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
        result.close()
    return pa.Table.from_batches(batches, schema=schema)


class SqlAlchemyReader(Reader):
    """Reads through the store's own SQLAlchemy connections, in chunks of DB-API rows.

    Works on every database; what the other readers fall back to.

    >>> from metalearn import HistoryStore
    >>> with HistoryStore("sqlite://", reader=SqlAlchemyReader) as store:
    ...     store.reader, len(store.plans_after(0))
    (<SqlAlchemyReader sqlite>, 0)
    """

    def table(self, query: Select[Any], schema: pa.Schema) -> pa.Table:
        with self._database.connect() as conn:
            return _read_table(conn, query, schema)


class AdbcReader(Reader):
    """Reads PostgreSQL query results straight into Arrow through the ADBC driver.

    No Python object is created per row: several times faster than DB-API rows, and it
    neither holds the GIL for long nor feeds the garbage collector. Each thread opens its
    own connection (``connect()``), in autocommit mode so that every read sees the latest
    commits. Without ``connect`` it opens the store's URL with ``adbc-driver-postgresql``.

    (SQLite is deliberately not read this way: the ADBC SQLite driver embeds its own copy
    of SQLite, and two copies in one process break each other's POSIX file locks.)
    """

    def __init__(self, database: Database, connect: Callable[[], Any] | None = None) -> None:
        super().__init__(database)
        self._connect = connect if connect is not None else _postgres_connect(database)
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()

    @staticmethod
    def available(database: Database) -> bool:
        """Whether this reader can read ``database``: PostgreSQL, with the driver installed."""
        if database.engine.url.get_backend_name() != "postgresql":
            return False
        try:
            import adbc_driver_postgresql.dbapi  # noqa: F401
        except ImportError:
            return False
        return True

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
            with self._lock:
                self._opened.append(connection)
        return connection

    def table(self, query: Select[Any], schema: pa.Schema) -> pa.Table:
        self._database.ensure_schema()
        sql = _literal_sql(self._database, query)
        with self._connection().cursor() as cursor:
            cursor.execute(sql)
            return _conform(cursor.fetch_arrow_table(), schema)

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()


def _postgres_connect(database: Database) -> Callable[[], Any]:
    import adbc_driver_postgresql.dbapi as postgres_adbc

    url = database.engine.url.set(drivername="postgresql")
    uri = url.render_as_string(hide_password=False)
    return lambda: postgres_adbc.connect(uri, autocommit=True)


# The helper reads a step's plan seq, index and status as one integer: the driver's cost is
# per value, not per byte, and four values a step instead of six read ~20% faster.
# key = seq * 2**34 + index * 4 + status code: exact while seq < 2**29 (index is a 32-bit
# Integer column, never negative).
_STATUSES = pa.array([status.value for status in StepStatus])
PACKED_SEQ_LIMIT = 2**29
"""Seqs from here on do not fit a packed step key: their ranges are read in-process."""


def _packed_steps_query(after_seq: int, upto_seq: int) -> Select[Any]:
    code = case(
        {status.value: i for i, status in enumerate(StepStatus)},
        value=steps.c.status,
        else_=len(StepStatus),
    )
    key = steps.c.plan_seq * 2**34 + steps.c.step_index * 4 + code
    return (
        select(key.label("key"), steps.c.tool, steps.c.duration_ms, steps.c.error)
        .where(steps.c.plan_seq > after_seq, steps.c.plan_seq <= upto_seq)
        .order_by(steps.c.plan_seq, steps.c.step_index)
    )


def _unpacked_steps(table: pa.Table, after_seq: int, upto_seq: int) -> pa.Table:
    """The steps table of :func:`_packed_steps_query` rows (checked: in range and order)."""
    key = table.column("key").to_numpy().astype(np.int64, copy=False)
    seq, code = key >> 34, key & 3
    if len(key) and (
        seq[0] <= after_seq or seq[-1] > upto_seq or (np.diff(seq) < 0).any() or (code == 3).any()
    ):
        raise _sqlite_bulk.BulkReadError("packed step keys out of range or order")
    unpacked = pa.table(
        {
            "seq": seq,
            "step_index": ((key >> 2) & 0xFFFFFFFF).astype(np.int32),
            "tool": table.column("tool"),
            "status": _STATUSES.take(pa.array(code)),
            "duration_ms": table.column("duration_ms"),
            "error": table.column("error"),
        }
    )
    return _conform(unpacked, _STEPS_SCHEMA_NO_ID)


class SqliteHelperReader(SqlAlchemyReader):
    """Reads big ranges of a SQLite file store in a helper process, the rest in-process.

    A bulk read of at least ``min_plans`` plans (whose seqs fit the packed step keys, below
    :data:`PACKED_SEQ_LIMIT`) runs ``command`` (default: this Python running the helper
    script, see :func:`metalearn._sqlite_bulk.default_command`), started with ``start``
    (default :class:`subprocess.Popen`). The helper reads through the ADBC SQLite driver,
    Arrow-native with ``threads`` reader threads, while the caller works on earlier
    chunks. Should it fail, the remaining chunks are read in-process and a warning is
    logged. Every other read is :class:`SqlAlchemyReader`'s.

    >>> import functools, tempfile
    >>> from metalearn import HistoryStore
    >>> from metalearn.synthetic import make_history
    >>> folder = tempfile.TemporaryDirectory()
    >>> eager = functools.partial(SqliteHelperReader, min_plans=100)
    >>> store = HistoryStore(f"sqlite:///{folder.name}/history.db", reader=eager)
    >>> _ = store.import_frames(*make_history(300, seed=1))
    >>> [len(batch) for batch in store.batches_between(0, 300, chunk_size=120)]  # in a helper
    [120, 120, 60]
    >>> store.close(); folder.cleanup()
    """

    def __init__(
        self,
        database: Database,
        *,
        min_plans: int = BULK_MIN_PLANS,
        command: Sequence[str] | None = None,
        start: _sqlite_bulk.StartProcess = subprocess.Popen,
        threads: int = 2,
    ) -> None:
        super().__init__(database)
        if database.sqlite_file is None:
            url = database.engine.url.render_as_string(hide_password=True)
            raise InvalidArgumentError(
                f"SqliteHelperReader reads a SQLite file, not {url}; use SqlAlchemyReader"
            )
        self._file = database.sqlite_file
        self._min_plans = positive_int("min_plans", min_plans, what="plans")
        self._command = tuple(command) if command is not None else _sqlite_bulk.default_command()
        self._start = start
        self._threads = positive_int("threads", threads, what="reader threads")

    def pays(self, after_seq: int, upto_seq: int) -> bool:
        """Whether ``(after_seq, upto_seq]`` is read in a helper process: enough plans to
        pay for starting one, and seqs that fit the packed step keys."""
        return upto_seq - after_seq >= self._min_plans and upto_seq < PACKED_SEQ_LIMIT

    def batches(self, bounds: Sequence[tuple[int, int]]) -> Generator[PlanBatch]:
        done = 0
        if bounds and self.pays(bounds[0][0], bounds[-1][1]):
            try:
                with closing(self._helper_chunks(bounds)) as chunks:
                    for (plan_table, step_table), (low, high) in zip(chunks, bounds, strict=False):
                        step_table = _unpacked_steps(step_table, low, high)
                        yield PlanBatch(_conform(plan_table, PLANS_SCHEMA), step_table, high)
                        done += 1
            except _sqlite_bulk.BulkReadError as error:
                logger.warning("bulk read failed, reading in-process instead: %s", error)
        yield from super().batches(bounds[done:])

    def _helper_chunks(
        self, bounds: Sequence[tuple[int, int]]
    ) -> Generator[tuple[pa.Table, pa.Table]]:
        self._database.ensure_schema()  # the helper opens the file read-only
        queries = [
            (
                _literal_sql(self._database, _plans_query(low, high)),
                _literal_sql(self._database, _packed_steps_query(low, high)),
            )
            for low, high in bounds
        ]
        return _sqlite_bulk.read_chunks(
            self._file, queries, threads=self._threads, command=self._command, start=self._start
        )


def default_reader(database: Database, *, python: str | None = None) -> Reader:
    """The fastest reader that works here, chosen once per store.

    PostgreSQL with ``adbc-driver-postgresql`` installed: :class:`AdbcReader`. A SQLite
    file, when the helper process can run (``python``, default ``sys.executable``, is a
    Python and the ADBC SQLite driver is installed): :class:`SqliteHelperReader`.
    Otherwise (SQLite in memory, other databases, an embedding server's binary):
    :class:`SqlAlchemyReader`.

    >>> database = Database("sqlite://")
    >>> default_reader(database)
    <SqlAlchemyReader sqlite>
    >>> database.close()
    """
    if AdbcReader.available(database):
        return AdbcReader(database)
    if database.sqlite_file is not None and _sqlite_bulk.available(python):
        return SqliteHelperReader(database, command=_sqlite_bulk.default_command(python))
    return SqlAlchemyReader(database)
