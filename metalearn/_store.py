"""HistoryStore: the append-only record of plans and steps, in any SQLAlchemy database."""

from __future__ import annotations

import gc
import itertools
import logging
import os
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Table,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from metalearn import _sqlite_bulk
from metalearn._errors import DuplicatePlanError
from metalearn._interchange import (
    STEP_COLUMNS,
    Problem,
    RowLabel,
    default_row_label,
    format_timestamps,
    problem_error,
    validate_frames,
)
from metalearn._schema import (
    PLAN_COUNTER,
    counters,
    metadata,
    plans,
    snapshot_patterns,
    snapshots,
    steps,
)
from metalearn._types import Plan, StepStatus, epoch_micros

__all__ = ["DEFAULT_URL", "HistoryStore", "ImportReport", "PlanBatch"]

DEFAULT_URL = "sqlite:///data/metalearn.db"
"""The embedded default: a SQLite file under the current directory."""
URL_VARIABLE = "METALEARN_DB_URL"
logger = logging.getLogger("metalearn.store")
_CHUNK_ROWS = 50_000
_READ_CHUNK_ROWS = 5_000
_SQLITE_BUSY_TIMEOUT_MS = 30_000

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


_STEPS_SCHEMA_NO_ID = STEPS_SCHEMA.remove(STEPS_SCHEMA.get_field_index("plan_id"))

# Below this many plans a helper process costs more to start than it saves.
BULK_MIN_PLANS = 50_000


def _plans_query(after_seq: int, upto_seq: int) -> Select[Any]:
    return (
        select(*_PLAN_SELECT)
        .where(plans.c.seq > after_seq, plans.c.seq <= upto_seq)
        .order_by(plans.c.seq)
    )


def _steps_query(after_seq: int, upto_seq: int, with_plan_ids: bool) -> Select[Any]:
    columns = _STEP_SELECT if with_plan_ids else [c for c in _STEP_SELECT if c.name != "plan_id"]
    query = select(*columns).where(steps.c.plan_seq > after_seq, steps.c.plan_seq <= upto_seq)
    if with_plan_ids:
        query = query.join(plans, plans.c.seq == steps.c.plan_seq)
    return query.order_by(steps.c.plan_seq, steps.c.step_index)


# The helper reads a step's plan seq, index and status as one integer: the driver's cost is
# per value, not per byte, and four values a step instead of six read ~20% faster.
# key = seq * 2**34 + index * 4 + status code: exact while seq < 2**29 (index is a 32-bit
# Integer column, never negative).
_STATUSES = pa.array([status.value for status in StepStatus])
_PACKED_SEQ_LIMIT = 2**29


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


def _literal_sql(engine: Engine, query: Select[Any]) -> str:
    """The query's SQL with its parameters inlined, for drivers outside SQLAlchemy.

    Only integer seq bounds are ever bound into these queries, so literals are safe.
    """
    return str(query.compile(engine, compile_kwargs={"literal_binds": True}))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A driver's Arrow table with the store's column types (integer micros -> timestamps,
    all-NULL columns typed by the driver -> the real type)."""
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema], schema=schema)


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


@dataclass(frozen=True)
class ImportReport:
    """What a bulk import wrote and what it rejected.

    ``rejections`` has one row per rejected plan: plan_id, table (``plans`` or ``steps``),
    row (0-based position in that table), field and reason.
    """

    imported: int
    rejected: int
    steps: int
    rejections: pd.DataFrame = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"<ImportReport imported={self.imported} rejected={self.rejected} steps={self.steps}>"
        )


def _resolve_url(url: str | URL | None) -> URL:
    resolved = make_url(url if url is not None else os.environ.get(URL_VARIABLE) or DEFAULT_URL)
    if resolved.get_backend_name() == "sqlite" and resolved.database not in (None, "", ":memory:"):
        Path(resolved.database).parent.mkdir(parents=True, exist_ok=True)
    return resolved


def _is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _make_engine(url: URL) -> Engine:
    if _is_memory_sqlite(url):
        return create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    if url.get_backend_name() == "sqlite":
        return create_engine(url, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000})
    return create_engine(url, pool_pre_ping=True)


def _column_values(column: pd.Series) -> list[Any]:
    """Python values with every missing cell as None (what DB-API drivers expect)."""
    if column.dtype.kind in "iub":
        return column.tolist()
    values = column.astype(object)
    return values.where(column.notna(), None).tolist()


def _rows(frame: pd.DataFrame, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    return list(zip(*(_column_values(frame[c]) for c in columns), strict=True))


class HistoryStore:
    """The append-only history of plans and steps, in any SQLAlchemy database.

    ``url`` is a SQLAlchemy URL (or an :class:`~sqlalchemy.Engine` to share). Without one
    the store uses ``$METALEARN_DB_URL`` or, failing that, the embedded default
    ``sqlite:///data/metalearn.db`` under the current directory. Tables are created on
    first use. SQLite runs in WAL mode with a busy timeout and foreign keys on.

    Each plan gets a ``seq``: a store-assigned integer that strictly increases in commit
    order, so ``plans_after(watermark)`` never skips a plan committed later with a lower
    number.

    >>> from datetime import datetime, timedelta, timezone
    >>> store = HistoryStore("sqlite://")          # in memory
    >>> start = datetime(2026, 1, 5, 9, 30, tzinfo=timezone.utc)
    >>> store.record_plan(Plan("p-1", "support-bot", "succeeded", start,
    ...                        start + timedelta(seconds=3), steps=[{"tool": "search"}]))
    1
    >>> store
    <HistoryStore sqlite:// plans=1>
    >>> batch = store.plans_after(0)
    >>> batch.plans.column("plan_id").to_pylist(), batch.steps.column("tool").to_pylist()
    (['p-1'], ['search'])
    >>> store.close()
    """

    def __init__(self, url: str | URL | Engine | None = None) -> None:
        if isinstance(url, Engine):
            self._engine, self._owns_engine = url, False
        else:
            self._engine, self._owns_engine = _make_engine(_resolve_url(url)), True
        if self._engine.dialect.name == "sqlite":
            event.listen(self._engine, "connect", _sqlite_pragmas)
        # An in-memory SQLite database is one shared connection: serialise its users.
        memory = _is_memory_sqlite(self._engine.url)
        self._serial: AbstractContextManager[Any] = threading.RLock() if memory else nullcontext()
        # SQLite has one writer at a time. Queueing this process's writers on a lock wakes
        # the next one the moment a commit ends, where SQLite's busy handler would poll
        # with sleeps of up to 100 ms; other processes still meet the busy timeout.
        sqlite = self._engine.dialect.name == "sqlite"
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if sqlite and not memory else nullcontext()
        )
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self._adbc = _AdbcReader.for_engine(self._engine)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (thread-safe; open connections inside worker threads)."""
        return self._engine

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return self._engine.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        try:
            count: int | str = self.count()
        except Exception:  # a repr must not raise, even when the database is unreachable
            count = "?"
        return f"<HistoryStore {self.url} plans={count}>"

    def __len__(self) -> int:
        return self.count()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the connections (the pool only when this store created the engine)."""
        if self._adbc is not None:
            self._adbc.close()
        if self._owns_engine:
            self._engine.dispose()

    # -- connections and schema ------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        self._ensure_schema()
        with self._serial, self._engine.connect() as conn:
            yield conn

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        self._ensure_schema()
        with self._serial, self._write_lock, self._engine.begin() as conn:
            yield conn

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            with self._serial, self._engine.begin() as conn:
                metadata.create_all(conn, checkfirst=True)
            self._ensure_counter()
            self._schema_ready = True

    def _ensure_counter(self) -> None:
        try:
            with self._serial, self._engine.begin() as conn:
                if (
                    conn.execute(
                        select(counters.c.value).where(counters.c.name == PLAN_COUNTER)
                    ).first()
                    is None
                ):
                    start = conn.execute(
                        select(func.coalesce(func.max(plans.c.seq), 0))
                    ).scalar_one()
                    conn.execute(insert(counters).values(name=PLAN_COUNTER, value=start))
        except IntegrityError:
            pass  # another process created it first

    # -- writing -----------------------------------------------------------------------

    @staticmethod
    def _allocate(conn: Connection, count: int) -> int:
        """Reserve ``count`` seqs; the first statement of every write transaction.

        The counter row stays locked until commit, so seq order is commit order.
        """
        stmt = (
            update(counters)
            .where(counters.c.name == PLAN_COUNTER)
            .values(value=counters.c.value + count)
            .returning(counters.c.value)
        )
        last: int = conn.execute(stmt).scalar_one()
        return last - count + 1

    def _insert_rows(
        self, conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        if not rows:
            return
        style = conn.dialect.paramstyle
        marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(style)
        for start in range(0, len(rows), _CHUNK_ROWS):
            chunk = rows[start : start + _CHUNK_ROWS]
            if marker is None:
                conn.execute(insert(table), [dict(zip(columns, r, strict=True)) for r in chunk])
            else:
                sql = (
                    f"INSERT INTO {table.name} ({', '.join(columns)}) "
                    f"VALUES ({', '.join([marker] * len(columns))})"
                )
                conn.exec_driver_sql(sql, chunk)

    def record_plan(self, plan: Plan) -> int:
        """Write one plan and its steps in one transaction; return its ``seq``.

        Raises :class:`DuplicatePlanError` (and writes nothing) when the ``plan_id`` is
        already recorded.
        """
        (outcome,) = self.record_plans([plan])
        if isinstance(outcome, DuplicatePlanError):
            raise outcome
        return outcome

    def record_plans(self, batch: Sequence[Plan]) -> list[int | DuplicatePlanError]:
        """Write several plans in one transaction (a group commit); one outcome per plan.

        Each outcome is the plan's ``seq``, or a :class:`DuplicatePlanError` for a plan
        whose ``plan_id`` is already stored (or earlier in the batch), which is skipped.
        One transaction for many plans is what keeps a busy writer fast.
        """
        for plan in batch:
            if not isinstance(plan, Plan):
                raise TypeError(f"record_plan() takes a metalearn.Plan, not {type(plan).__name__}")
        if not batch:
            return []
        outcomes: list[int | DuplicatePlanError] = []
        try:
            with self._begin() as conn:
                # The counter update comes first: it takes the write lock before any read.
                first = self._allocate(conn, len(batch))
                stored = self._existing_ids(conn, pd.Series([p.plan_id for p in batch]))
                plan_rows, step_rows = [], []
                for seq, plan in enumerate(batch, start=first):
                    if plan.plan_id in stored:
                        outcomes.append(DuplicatePlanError(plan.plan_id))
                        continue
                    stored.add(plan.plan_id)
                    outcomes.append(seq)
                    plan_rows.append(_plan_row(seq, plan))
                    step_rows += [
                        (seq, s.step_index, s.tool, s.status.value, s.duration_ms, s.error)
                        for s in plan.steps
                    ]
                if not plan_rows:
                    raise _NothingWritten  # roll the counter back too: nothing changes
                self._insert_rows(conn, plans, _PLAN_WRITE_COLUMNS, plan_rows)
                self._insert_rows(conn, steps, _STEP_WRITE_COLUMNS, step_rows)
        except _NothingWritten:
            pass
        return outcomes

    def import_frames(
        self,
        plans: pd.DataFrame,
        steps: pd.DataFrame,
        *,
        on_error: Literal["raise", "skip"] = "raise",
    ) -> ImportReport:
        """Bulk-load plans and steps in the interchange format (see the README).

        ``on_error="raise"`` is all-or-nothing: the first bad record raises
        :class:`InvalidRecordError` naming its table, row, plan and field (or
        :class:`DuplicatePlanError` for a plan already stored) and nothing is written.
        ``on_error="skip"`` writes every valid plan and reports the rejected ones.
        """
        return self._import(plans, steps, on_error, default_row_label)

    def import_csv(
        self,
        plans_path: str | os.PathLike[str],
        steps_path: str | os.PathLike[str],
        *,
        on_error: Literal["raise", "skip"] = "raise",
    ) -> ImportReport:
        """Bulk-load ``plans.csv`` and ``steps.csv`` files; see :meth:`import_frames`.

        Errors name the file and its line (the header is line 1).
        """
        paths = {"plans": Path(plans_path), "steps": Path(steps_path)}
        frames = [
            pd.read_csv(paths[t], dtype="str", keep_default_na=False, na_values=[])
            for t in ("plans", "steps")
        ]

        def label(table: str, row: int) -> str:
            return f"{paths[table].name} line {row + 2}"

        return self._import(frames[0], frames[1], on_error, label)

    def _import(
        self,
        plan_frame: pd.DataFrame,
        step_frame: pd.DataFrame,
        on_error: str,
        row_label: RowLabel,
    ) -> ImportReport:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        checked = validate_frames(plan_frame, step_frame)
        problems = list(checked.problems)
        if problems and on_error == "raise":
            raise problem_error(problems[0], row_label)
        valid_plans, valid_steps = checked.plans, checked.steps
        with self._begin() as conn:
            first_seq = self._allocate(conn, len(valid_plans)) if len(valid_plans) else 0
            duplicates = self._existing_ids(conn, valid_plans["plan_id"])
            if duplicates and on_error == "raise":
                raise DuplicatePlanError(sorted(duplicates)[0])
            if duplicates:
                problems += _duplicate_problems(valid_plans["plan_id"], duplicates)
                valid_plans = valid_plans[~valid_plans["plan_id"].isin(duplicates)]
                valid_steps = valid_steps[~valid_steps["plan_id"].isin(duplicates)]
            self._write_frames(conn, first_seq, valid_plans, valid_steps)
        return ImportReport(
            len(valid_plans), len(problems), len(valid_steps), _rejections(problems)
        )

    def _existing_ids(self, conn: Connection, plan_ids: pd.Series) -> set[str]:
        if conn.execute(select(plans.c.seq).limit(1)).first() is None:
            return set()
        found: set[str] = set()
        values = plan_ids.tolist()
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            found.update(
                conn.execute(select(plans.c.plan_id).where(plans.c.plan_id.in_(chunk))).scalars()
            )
        return found

    def _write_frames(
        self, conn: Connection, first_seq: int, plan_rows: pd.DataFrame, step_rows: pd.DataFrame
    ) -> None:
        # Seqs are reserved for every valid plan before duplicates are known, so a skip
        # import can leave gaps; seqs only need to increase, not be dense.
        seqs = pd.Series(np.arange(first_seq, first_seq + len(plan_rows), dtype="int64"))
        if len(plan_rows) == 0:
            return
        seq_of = pd.Series(seqs.to_numpy(), index=plan_rows["plan_id"].to_numpy())
        plan_rows = plan_rows.assign(seq=seqs.to_numpy())
        step_rows = step_rows.assign(plan_seq=step_rows["plan_id"].map(seq_of).to_numpy())
        self._insert_rows(conn, plans, _PLAN_WRITE_COLUMNS, _rows(plan_rows, _PLAN_WRITE_COLUMNS))
        self._insert_rows(conn, steps, _STEP_WRITE_COLUMNS, _rows(step_rows, _STEP_WRITE_COLUMNS))

    # -- reading -----------------------------------------------------------------------

    def count(self) -> int:
        """Number of plans recorded."""
        with self._connect() as conn:
            return int(conn.execute(select(func.count()).select_from(plans)).scalar_one())

    def last_seq(self) -> int:
        """The highest committed ``seq`` (0 for an empty store)."""
        with self._connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(plans.c.seq), 0))).scalar_one())

    def plans_after(
        self, after_seq: int = 0, limit: int | None = 100_000, *, step_plan_ids: bool = True
    ) -> PlanBatch:
        """Plans with ``seq > after_seq`` (at most ``limit``, oldest first) and their steps.

        Pass the returned ``last_seq`` as the next ``after_seq`` to read incrementally:
        because seq order is commit order, no plan is ever skipped or read twice.
        ``step_plan_ids=False`` leaves ``plan_id`` out of the steps table (steps keep their
        plan's ``seq``), which spares a join and a string per step on bulk reads.
        """
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive integer or None, not {limit!r}")
        query = select(*_PLAN_SELECT).where(plans.c.seq > after_seq).order_by(plans.c.seq)
        plan_table = self._read(query.limit(limit) if limit else query, PLANS_SCHEMA)
        last_seq = plan_table.column("seq")[-1].as_py() if plan_table.num_rows else after_seq
        return self._with_steps(plan_table, after_seq, last_seq, step_plan_ids)

    def plans_between(
        self, after_seq: int, upto_seq: int, *, step_plan_ids: bool = True
    ) -> PlanBatch:
        """Plans with ``after_seq < seq <= upto_seq`` and their steps; ``last_seq`` is
        ``upto_seq``. Only meaningful up to :meth:`last_seq` (later seqs may still commit).
        """
        plan_table = self._read(_plans_query(after_seq, upto_seq), PLANS_SCHEMA)
        return self._with_steps(plan_table, after_seq, upto_seq, step_plan_ids)

    def batches_between(
        self, after_seq: int, upto_seq: int, chunk_size: int = 100_000
    ) -> Generator[PlanBatch]:
        """:meth:`plans_between` over ``(after_seq, upto_seq]`` in chunks of ``chunk_size``
        plans, oldest first, steps without ``plan_id``: the bulk read of a warehouse build.

        A SQLite file store reads ranges of at least ``BULK_MIN_PLANS`` plans in a helper
        process through the ADBC SQLite driver, Arrow-native and with two reader threads,
        while the caller works on earlier chunks. Should the helper fail, the remaining
        chunks are read in-process (a warning is logged).
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, not {chunk_size}")
        bounds = list(itertools.pairwise([*range(after_seq, upto_seq, chunk_size), upto_seq]))
        return self._batches(bounds)

    def _batches(self, bounds: list[tuple[int, int]]) -> Generator[PlanBatch]:
        done = 0
        database = self._bulk_database(bounds[0][0], bounds[-1][1]) if bounds else None
        if database is not None:
            queries = [
                (
                    _literal_sql(self._engine, _plans_query(low, high)),
                    _literal_sql(self._engine, _packed_steps_query(low, high)),
                )
                for low, high in bounds
            ]
            try:
                for plan_table, step_table in _sqlite_bulk.read_chunks(database, queries):
                    low, high = bounds[done]
                    step_table = _unpacked_steps(step_table, low, high)
                    yield PlanBatch(_conform(plan_table, PLANS_SCHEMA), step_table, high)
                    done += 1
            except _sqlite_bulk.BulkReadError as error:
                logger.warning("bulk read failed, reading in-process instead: %s", error)
        for low, high in bounds[done:]:
            yield self.plans_between(low, high, step_plan_ids=False)

    def _bulk_database(self, after_seq: int, upto_seq: int) -> str | None:
        """The SQLite file to bulk-read ``(after_seq, upto_seq]`` from in a helper process,
        if that pays and is possible (and the seqs fit the packed step keys)."""
        url = self._engine.url
        if (
            upto_seq - after_seq < BULK_MIN_PLANS
            or upto_seq >= _PACKED_SEQ_LIMIT
            or url.get_backend_name() != "sqlite"
            or _is_memory_sqlite(url)
            or not _sqlite_bulk.available()
        ):
            return None
        self._ensure_schema()
        return str(url.database)

    def _with_steps(
        self, plan_table: pa.Table, after_seq: int, last_seq: int, step_plan_ids: bool
    ) -> PlanBatch:
        schema = STEPS_SCHEMA if step_plan_ids else _STEPS_SCHEMA_NO_ID
        step_query = _steps_query(after_seq, last_seq, step_plan_ids)
        return PlanBatch(plan_table, self._read(step_query, schema), last_seq)

    def _read(self, query: Select[Any], schema: pa.Schema) -> pa.Table:
        """Run a read-only query into Arrow: through ADBC when it can, else SQLAlchemy."""
        self._ensure_schema()
        if self._adbc is not None:
            return self._adbc.read(query, schema)
        with self._connect() as conn:
            return _read_table(conn, query, schema)

    def iter_batches(self, after_seq: int = 0, batch_size: int = 100_000) -> Iterator[PlanBatch]:
        """Successive non-empty :meth:`plans_after` batches up to the latest commit."""
        while True:
            batch = self.plans_after(after_seq, batch_size)
            if not len(batch):
                return
            yield batch
            after_seq = batch.last_seq

    # -- analysis snapshots ----------------------------------------------------------

    def save_snapshots(
        self, items: Sequence[tuple[Mapping[str, Any], pd.DataFrame]], *, keep: int = 20
    ) -> list[int]:
        """Write analysis snapshots with their pattern rows in one transaction.

        Each item is a snapshot row (columns of ``metalearn_snapshots`` but the id) and a
        frame of pattern rows (columns of ``metalearn_snapshot_patterns`` but the id).
        Keeps the newest ``keep`` snapshots per agent. Returns the new snapshot ids.
        """
        ids = []
        with self._begin() as conn:
            for header, rows in items:
                snapshot_id = conn.execute(
                    insert(snapshots).values(**header).returning(snapshots.c.snapshot_id)
                ).scalar_one()
                ids.append(int(snapshot_id))
                columns = [c.name for c in snapshot_patterns.c if c.name != "snapshot_id"]
                frame = rows[columns].assign(snapshot_id=snapshot_id)
                self._insert_rows(conn, snapshot_patterns, [*columns, "snapshot_id"],
                                  _rows(frame, [*columns, "snapshot_id"]))  # fmt: skip
                self._prune_snapshots(conn, str(header["agent_id"]), keep)
        return ids

    @staticmethod
    def _prune_snapshots(conn: Connection, agent_id: str, keep: int) -> None:
        newest = (
            select(snapshots.c.snapshot_id)
            .where(snapshots.c.agent_id == agent_id)
            .order_by(snapshots.c.snapshot_id.desc())
            .limit(keep)
        )
        old = select(snapshots.c.snapshot_id).where(
            snapshots.c.agent_id == agent_id,
            snapshots.c.snapshot_id.not_in(newest.scalar_subquery()),
        )
        old_ids = conn.execute(old).scalars().all()
        if old_ids:
            conn.execute(
                delete(snapshot_patterns).where(snapshot_patterns.c.snapshot_id.in_(old_ids))
            )
            conn.execute(delete(snapshots).where(snapshots.c.snapshot_id.in_(old_ids)))

    def latest_snapshot(self, agent_id: str) -> tuple[dict[str, Any], pd.DataFrame] | None:
        """The newest snapshot row of an agent and its pattern rows (by rank), or None."""
        with self._connect() as conn:
            header = (
                conn.execute(
                    select(snapshots)
                    .where(snapshots.c.agent_id == agent_id)
                    .order_by(snapshots.c.snapshot_id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
            if header is None:
                return None
            rows = conn.execute(
                select(snapshot_patterns)
                .where(snapshot_patterns.c.snapshot_id == header["snapshot_id"])
                .order_by(snapshot_patterns.c.rank)
            ).all()
        columns = [c.name for c in snapshot_patterns.c]
        return dict(header), pd.DataFrame([tuple(r) for r in rows], columns=columns)

    def agents_behind(self) -> dict[str, int]:
        """Agents with plans newer than their latest snapshot: agent -> their last seq.

        What background analysis still owes after a crash between recording and analysis.
        """
        covered = (
            select(snapshots.c.agent_id, func.max(snapshots.c.through_seq).label("through"))
            .group_by(snapshots.c.agent_id)
            .subquery()
        )
        last = func.max(plans.c.seq)
        query = (
            select(plans.c.agent_id, last)
            .outerjoin(covered, covered.c.agent_id == plans.c.agent_id)
            .group_by(plans.c.agent_id, covered.c.through)
            .having(last > func.coalesce(covered.c.through, 0))
        )
        with self._connect() as conn:
            return {agent: int(seq) for agent, seq in conn.execute(query).all()}

    def export_csv(self, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``plans.csv`` and ``steps.csv`` (interchange format) into ``directory``.

        :meth:`import_csv` reads them back into identical plans and steps.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = out / "plans.csv", out / "steps.csv"
        for path in paths:
            path.unlink(missing_ok=True)
        header = True
        for batch in self.iter_batches():
            plan_frame, step_frame = _interchange_frames(batch)
            for frame, path in zip((plan_frame, step_frame), paths, strict=True):
                # RFC 4180 line ends: a CR inside a text field then gets quoted too
                frame.to_csv(path, mode="a", header=header, index=False, lineterminator="\r\n")
            header = False
        if header:  # empty store: still write the headers
            empty = _interchange_frames(self.plans_after(0, 1))
            for frame, path in zip(empty, paths, strict=True):
                frame.to_csv(path, index=False, lineterminator="\r\n")
        return paths


_PLAN_WRITE_COLUMNS = (
    "seq",
    "plan_id",
    "agent_id",
    "goal_type",
    "status",
    "started_at_us",
    "finished_at_us",
    "reward",
    "error",
    "priority",
)
_STEP_WRITE_COLUMNS = ("plan_seq", "step_index", "tool", "status", "duration_ms", "error")


class _NothingWritten(Exception):
    """Rolls back a write transaction that turned out to have nothing to write."""


def _plan_row(seq: int, plan: Plan) -> tuple[Any, ...]:
    """A plan in the column order of ``_PLAN_WRITE_COLUMNS``."""
    return (
        seq, plan.plan_id, plan.agent_id, plan.goal_type, plan.status.value,
        epoch_micros(plan.started_at), epoch_micros(plan.finished_at), plan.reward, plan.error,
        plan.priority,
    )  # fmt: skip


class _AdbcReader:
    """Reads PostgreSQL query results straight into Arrow through the ADBC driver.

    No Python object is created per row: several times faster than DB-API rows, and it
    neither holds the GIL for long nor feeds the garbage collector. Each thread opens its
    own connection, in autocommit mode so that every read sees the latest commits.

    (SQLite is deliberately not read this way: the ADBC SQLite driver embeds its own copy
    of SQLite, and two copies in one process break each other's POSIX file locks.)
    """

    def __init__(self, engine: Engine, connect: Callable[[], Any]) -> None:
        self._engine = engine
        self._connect = connect
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()

    @classmethod
    def for_engine(cls, engine: Engine) -> _AdbcReader | None:
        """A reader for PostgreSQL when ``adbc-driver-postgresql`` is installed."""
        if engine.url.get_backend_name() != "postgresql":
            return None
        try:
            import adbc_driver_postgresql.dbapi as postgres_adbc
        except ImportError:
            return None
        uri = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return cls(engine, lambda: postgres_adbc.connect(uri, autocommit=True))

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
            with self._lock:
                self._opened.append(connection)
        return connection

    def read(self, query: Select[Any], schema: pa.Schema) -> pa.Table:
        sql = _literal_sql(self._engine, query)
        with self._connection().cursor() as cursor:
            cursor.execute(sql)
            return _conform(cursor.fetch_arrow_table(), schema)

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()


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


def _interchange_frames(batch: PlanBatch) -> tuple[pd.DataFrame, pd.DataFrame]:
    plan_frame, step_frame = batch.to_pandas()
    for name in ("started_at", "finished_at"):
        plan_frame[name] = format_timestamps(plan_frame[name])
    plan_frame = plan_frame.drop(columns="seq")
    return plan_frame, step_frame[list(STEP_COLUMNS)]


def _duplicate_problems(plan_ids: pd.Series, duplicates: set[str]) -> list[Problem]:
    rows = plan_ids[plan_ids.isin(duplicates)]
    return [
        Problem("plans", int(row), pid, "plan_id", "plan_id is already in the store")
        for row, pid in zip(rows.index, rows, strict=True)
    ]


def _rejections(problems: list[Problem]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "plan_id": pd.Series([p.plan_id for p in problems], dtype="str"),
            "table": pd.Series([p.table for p in problems], dtype="str"),
            "row": pd.Series([p.row for p in problems], dtype="int64"),
            "field": pd.Series([p.field for p in problems], dtype="str"),
            "reason": pd.Series([p.reason for p in problems], dtype="str"),
        }
    )
