"""HistoryStore: the append-only record of plans and steps, in any SQLAlchemy database.

The store appends here (seqs, plan and step rows, imports) and hands the rest to its rooms:
connections to :mod:`~metalearn._database`, reads to its :mod:`~metalearn._readers` reader,
snapshots to :mod:`~metalearn._snapshot_store`, CSV files to
:mod:`~metalearn._interchange_csv`.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal

import pandas as pd
from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DataError, IntegrityError

from metalearn import _interchange_csv, _snapshot_store
from metalearn import _jobs as jobs
from metalearn._checks import positive_int
from metalearn._database import (
    DEFAULT_URL,
    URL_VARIABLE,
    Database,
    default_url,
    frame_rows,
    insert_rows,
)
from metalearn._errors import DuplicatePlanError, InvalidArgumentError, MetalearnError
from metalearn._interchange import (
    ImportReport,
    Problem,
    RowLabel,
    default_row_label,
    duplicate_problems,
    import_report,
    problem_error,
    validate_frames,
)
from metalearn._interchange_csv import LINE_COLUMN, RowBatch, RowRanges
from metalearn._interchange_parquet import ParquetExport, write_parquet
from metalearn._readers import PlanBatch, Reader, ReaderFactory, chunk_bounds, default_reader
from metalearn._schema import PLAN_COUNTER, counters, plans, steps
from metalearn._types import Plan, epoch_micros

__all__ = ["DEFAULT_URL", "URL_VARIABLE", "HistoryStore", "ImportReport", "PlanBatch"]

# Rows are written in the tables' own column order (see _plan_row and _step_rows).
_PLAN_WRITE_COLUMNS = tuple(plans.c.keys())
_STEP_WRITE_COLUMNS = tuple(steps.c.keys())


class _NothingWritten(Exception):
    """Rolls back a write transaction that turned out to have nothing to write."""


class HistoryStore:
    """The append-only history of plans and steps, in any SQLAlchemy database.

    ``url`` is a SQLAlchemy URL (or an :class:`~sqlalchemy.Engine` to share). Without one
    the store uses ``$METALEARN_DB_URL`` or, failing that, the embedded default
    ``sqlite:///data/metalearn.db`` under the current directory. Tables are created on
    first use. SQLite runs in WAL mode with a busy timeout and foreign keys on.

    ``reader`` makes the store's reader from its database (see :mod:`metalearn._readers`);
    by default :func:`~metalearn._readers.default_reader` picks the fastest one that works
    here, once: ADBC for PostgreSQL, a helper process for big reads of a SQLite file, or
    SQLAlchemy itself.

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

    DEFAULT_URL: ClassVar[str] = DEFAULT_URL
    """The embedded default URL: a SQLite file under the current directory."""
    URL_VARIABLE: ClassVar[str] = URL_VARIABLE
    """The environment variable naming the database when no URL is given."""

    def __init__(
        self, url: str | URL | Engine | None = None, *, reader: ReaderFactory = default_reader
    ) -> None:
        self._database = Database(url)
        self._reader = reader(self._database)

    @staticmethod
    def default_url() -> str:
        """The URL a store opens without one: ``$METALEARN_DB_URL``, else :attr:`DEFAULT_URL`.

        >>> HistoryStore.default_url() == (os.environ.get(HistoryStore.URL_VARIABLE)
        ...                                or HistoryStore.DEFAULT_URL)
        True
        """
        return default_url()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (thread-safe; open connections inside worker threads)."""
        return self._database.engine

    @property
    def database(self) -> Database:
        """The store's database: its engine, locks and schema, shared by the store's parts
        and by the job queue's workers (so this process's SQLite writers queue on one lock)."""
        return self._database

    @property
    def reader(self) -> Reader:
        """The reader chosen when the store was created."""
        return self._reader

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def store_id(self) -> str:
        """This store's identity, drawn at random when its tables were created.

        A store deleted and created again (even with as many plans) has a new identity;
        a persisted :class:`~metalearn.Warehouse` records it and rebuilds on a mismatch.
        """
        return self._database.store_id

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
        """Release the reader and the connections (the pool only when the store created it)."""
        self._reader.close()
        self._database.close()

    # -- writing -----------------------------------------------------------------------

    def record_plan(self, plan: Plan) -> int:
        """Write one plan and its steps in one transaction; return its ``seq``.

        Raises :class:`DuplicatePlanError` (and writes nothing) when the ``plan_id`` is
        already recorded.
        """
        (outcome,) = self.record_plans([plan])
        if isinstance(outcome, DuplicatePlanError):
            raise outcome
        return outcome

    def record_plans(
        self, batch: Sequence[Plan], *, priorities: Sequence[int | None] | None = None
    ) -> list[int | DuplicatePlanError]:
        """Write several plans in one transaction (a group commit); one outcome per plan.

        Each outcome is the plan's ``seq``, or a :class:`DuplicatePlanError` for a plan
        whose ``plan_id`` is already stored (or earlier in the batch), which is skipped.
        One transaction for many plans is what keeps a busy writer fast. Each plan queues
        its agent's analysis job in the same transaction, at ``priorities[i]`` (``None``,
        or no list: the plan's own priority).
        """
        if priorities is not None and len(priorities) != len(batch):
            raise InvalidArgumentError(
                f"priorities has {len(priorities)} items for {len(batch)} plans; give one each"
            )
        wanted = [None] * len(batch) if priorities is None else priorities
        for plan in batch:
            if not isinstance(plan, Plan):
                raise TypeError(f"record_plan() takes a metalearn.Plan, not {type(plan).__name__}")
        if not batch:
            return []
        outcomes: list[int | DuplicatePlanError] = []
        try:
            with self._database.begin() as conn:
                # The counter update comes first: it takes the write lock before any read.
                first = _allocate(conn, len(batch))
                stored = _existing_ids(conn, pd.Series([p.plan_id for p in batch]))
                plan_rows, step_rows, written = [], [], []
                numbered = zip(range(first, first + len(batch)), batch, wanted, strict=True)
                for seq, plan, priority in numbered:
                    if plan.plan_id in stored:
                        outcomes.append(DuplicatePlanError(plan.plan_id))
                        continue
                    stored.add(plan.plan_id)
                    outcomes.append(seq)
                    job_priority = plan.priority if priority is None else priority
                    written.append((plan.agent_id, job_priority, seq, 1))
                    plan_rows.append(_plan_row(seq, plan))
                    step_rows += _step_rows(seq, plan)
                if not plan_rows:
                    raise _NothingWritten  # roll the counter back too: nothing changes
                insert_rows(conn, plans, _PLAN_WRITE_COLUMNS, plan_rows)
                insert_rows(conn, steps, _STEP_WRITE_COLUMNS, step_rows)
                # The agents' analysis jobs commit with their plans: acknowledged is queued.
                jobs.enqueue(conn, written)
        except _NothingWritten:
            pass
        return outcomes

    def requeue(self, agents: Mapping[str, int]) -> None:
        """Queue the analysis jobs of ``agents`` (agent -> its newest plan's seq), as a plan
        of theirs would: for plans stored without one (``agents_behind`` finds them)."""
        if agents:
            with self._database.begin() as conn:
                jobs.enqueue(conn, [(agent, 0, seq, 0) for agent, seq in agents.items()])

    def import_frames(
        self,
        plans: pd.DataFrame,
        steps: pd.DataFrame,
        *,
        on_error: Literal["raise", "skip"] = "raise",
    ) -> ImportReport:
        """Bulk-load plans and steps in the interchange format (see the README).

        ``on_error="raise"`` is all-or-nothing: the first bad record (plan rows first, then
        step rows) raises :class:`InvalidRecordError` naming its table, row, plan and field
        (or :class:`DuplicatePlanError` for a plan already stored) and nothing is written.
        ``on_error="skip"`` writes every valid plan and reports the rejected ones, one per
        plan, in the report's ``rejections``; a plan the database itself refuses is
        rejected there too. Each plan row reserves the seq ``first + row``, so seqs follow
        the rows and a rejected row leaves a gap.
        """
        _check_on_error(on_error)
        valid = RowRanges(len(plans), len(plans))  # the frames are in memory already
        return self._import([RowBatch.of_frames(plans, steps)], valid, len(plans), on_error)

    def import_csv(
        self,
        plans_path: str | os.PathLike[str],
        steps_path: str | os.PathLike[str],
        *,
        on_error: Literal["raise", "skip"] = "raise",
        batch_size: int = 20_000,
    ) -> ImportReport:
        """Bulk-load ``plans.csv`` and ``steps.csv`` files (UTF-8, RFC 4180); see
        :meth:`import_frames`. Errors name the file and its line (the header is line 1).

        The files are streamed: they are read and checked first (a file that is not UTF-8,
        has a malformed quote, no header or no required column raises
        :class:`InvalidRecordError` before anything is written), their rows staged in
        temporary files (``$TMPDIR``) by plan id and validated about ``batch_size`` plans
        at a time, then the valid ones written in the order of the file, in one
        transaction. Memory follows ``batch_size``, not the size of the files; the steps
        of a plan may be anywhere in ``steps.csv``.
        """
        _check_on_error(on_error)
        positive_int("batch_size", batch_size, what="plans per batch")
        with _interchange_csv.stage_csv(plans_path, steps_path, batch_size=batch_size) as staged:
            valid = staged.row_ranges(batch_size)
            return self._import(staged.batches(), valid, staged.plan_rows, on_error)

    def _import(
        self, batches: Iterable[RowBatch], valid: RowRanges, rows: int, on_error: str
    ) -> ImportReport:
        rejections = _Rejections(keep_all=on_error == "skip")
        for batch in batches:
            plan_rows, step_rows = rejections.check(batch)
            if not rejections.failed:  # "raise" only looks on for an earlier bad record
                valid.add(plan_rows, step_rows)
        rejections.raise_first()  # before the transaction: nothing is written
        with self._database.begin() as conn:
            written = _write_in_order(conn, valid, rows, rejections)
            rejections.raise_first()
        return rejections.report(*written)

    # -- reading -----------------------------------------------------------------------

    def count(self) -> int:
        """Number of plans recorded."""
        with self._database.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(plans)).scalar_one())

    def last_seq(self) -> int:
        """The highest committed ``seq`` (0 for an empty store)."""
        with self._database.connect() as conn:
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
        if limit is not None:
            positive_int("limit", limit, what="plans, or None for all")
        return self._reader.plans_after(after_seq, limit, step_plan_ids=step_plan_ids)

    def plans_between(
        self, after_seq: int, upto_seq: int, *, step_plan_ids: bool = True
    ) -> PlanBatch:
        """Plans with ``after_seq < seq <= upto_seq`` and their steps; ``last_seq`` is
        ``upto_seq``. Only meaningful up to :meth:`last_seq` (later seqs may still commit).
        """
        return self._reader.plans_between(after_seq, upto_seq, step_plan_ids=step_plan_ids)

    def batches_between(
        self, after_seq: int, upto_seq: int, chunk_size: int = 100_000
    ) -> Generator[PlanBatch]:
        """:meth:`plans_between` over ``(after_seq, upto_seq]`` in chunks of ``chunk_size``
        plans, oldest first, steps without ``plan_id``: the bulk read of a warehouse build.

        The store's :attr:`reader` decides how: a SQLite file store reads ranges of at
        least ``BULK_MIN_PLANS`` plans in a helper process through the ADBC SQLite driver,
        Arrow-native and with two reader threads, while the caller works on earlier chunks.
        Should the helper fail, the remaining chunks are read in-process (a warning is
        logged).
        """
        positive_int("chunk_size", chunk_size, what="plans per chunk")
        return self._reader.batches(chunk_bounds(after_seq, upto_seq, chunk_size))

    def iter_batches(self, after_seq: int = 0, batch_size: int = 100_000) -> Iterator[PlanBatch]:
        """Successive non-empty :meth:`plans_after` batches up to the latest commit."""
        while True:
            batch = self.plans_after(after_seq, batch_size)
            if not len(batch):
                return
            yield batch
            after_seq = batch.last_seq

    # -- analysis snapshots and CSV files ----------------------------------------------

    def save_snapshots(
        self,
        items: Sequence[tuple[Mapping[str, Any], pd.DataFrame]],
        *,
        keep_snapshots: int = 20,
        keep: int | None = None,
        hints: Sequence[tuple[Mapping[str, Any], pd.DataFrame] | None] | None = None,
    ) -> list[int]:
        """Write analysis snapshots with their pattern rows, each in a transaction of its own.

        Each item is a snapshot row (columns of ``metalearn_snapshots`` but the id) and a
        frame of pattern rows (columns of ``metalearn_snapshot_patterns`` but the id).
        ``hints``, when given, holds one entry per item, written in the same transaction:
        a hint set row (columns of ``metalearn_snapshot_hint_sets`` but the id) and a
        frame of hint rows (of ``metalearn_snapshot_hints``), or None.
        Keeps the newest ``keep_snapshots`` snapshots per agent (``keep`` is its old name,
        still accepted). Returns the new snapshot ids. One snapshot per transaction keeps
        SQLite's write lock for a few milliseconds at a time (a batch of 16 in one took
        ~50 ms), so plans being recorded meanwhile barely wait; a reader sees each agent's
        snapshot whole or not at all.
        """
        if keep is not None:
            keep_snapshots = keep
        positive_int("keep_snapshots", keep_snapshots, what="snapshots per agent")
        if hints is not None and len(hints) != len(items):
            raise InvalidArgumentError(
                f"hints must hold one entry (or None) per snapshot: {len(hints)} for "
                f"{len(items)} snapshots"
            )
        prepared = [
            _snapshot_store.prepare_snapshot(header, rows, hint)
            for (header, rows), hint in zip(items, hints or [None] * len(items), strict=True)
        ]
        ids = []
        for snapshot in prepared:
            with self._database.begin() as conn:
                ids.append(
                    _snapshot_store.write_snapshot(conn, snapshot, keep_snapshots=keep_snapshots)
                )
        return ids

    def latest_snapshot(self, agent_id: str) -> tuple[dict[str, Any], pd.DataFrame] | None:
        """The newest snapshot row of an agent and its pattern rows (by rank), or None."""
        with self._database.connect() as conn:
            return _snapshot_store.latest_snapshot(conn, agent_id)

    def latest_hints(self, agent_id: str) -> tuple[dict[str, Any], pd.DataFrame] | None:
        """The newest snapshot of an agent: its window and hint options, and its hint rows
        (by rank), read in one query; None if the agent has no snapshot. A snapshot stored
        without hints has hint options None and no rows."""
        with self._database.connect() as conn:
            return _snapshot_store.latest_hints(conn, agent_id)

    def agents_behind(self) -> dict[str, int]:
        """Agents with plans newer than their latest snapshot: agent -> their last seq.

        What background analysis still owes after a crash between recording and analysis.
        """
        with self._database.connect() as conn:
            return _snapshot_store.agents_behind(conn)

    def export_csv(self, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``plans.csv`` and ``steps.csv`` (interchange format) into ``directory``.

        :meth:`import_csv` reads them back into identical plans and steps. That is what
        these files are for (a backup, a move to another database): every value is kept
        verbatim, so a tool name or error text an agent wrote as ``=HYPERLINK(...)`` stays
        a formula cell. Do not open them in a spreadsheet; share the analysis CSVs of
        :mod:`metalearn.export` instead, whose text cells are neutralised.
        """
        return _interchange_csv.write_csv(self.iter_batches(), directory)

    def export_parquet(self, directory: str | os.PathLike[str]) -> ParquetExport:
        """Append the plans recorded since the last export to ``DIR/plans/`` and
        ``DIR/steps/``, two Parquet datasets in the interchange columns (timestamps as UTC
        timestamps), hive-partitioned by finish day (``finished_day=YYYY-MM-DD``).

        The first call exports everything; each later one only the plans after the last
        exported ``seq`` (kept in ``DIR/_metalearn_export.json`` with the store's
        identity, so another store's directory is refused). Spark reads the directories
        as they are (``spark.read.parquet("DIR/plans")``), DuckDB with
        ``read_parquet('DIR/plans/**/*.parquet', hive_partitioning = true)``.
        """
        return write_parquet(directory, store_id=self.store_id, batches_after=self.iter_batches)


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


def _existing_ids(conn: Connection, plan_ids: pd.Series) -> set[str]:
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


def _plan_row(seq: int, plan: Plan) -> tuple[Any, ...]:
    """A plan in the column order of ``_PLAN_WRITE_COLUMNS``."""
    return (
        seq, plan.plan_id, plan.agent_id, plan.goal_type, plan.status.value,
        epoch_micros(plan.started_at), epoch_micros(plan.finished_at), plan.reward, plan.error,
        plan.priority,
    )  # fmt: skip


def _step_rows(seq: int, plan: Plan) -> list[tuple[Any, ...]]:
    """A plan's steps in the column order of ``_STEP_WRITE_COLUMNS``."""
    return [(seq, s.step_index, s.tool, s.status.value, s.duration_ms, s.error) for s in plan.steps]


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise InvalidArgumentError(f"on_error must be 'raise' or 'skip', not {on_error!r}")


# What a problem is, in the order "raise" reports them: bad records, plans already
# stored, plans the database refused.
_RECORD_KIND, _STORED_KIND, _REFUSED_KIND = 0, 1, 2
# A database refusing a value (NUL in PostgreSQL text, an integer out of range, a
# constraint): the write is retried in halves until the refused plans are found.
_REFUSALS = (DataError, IntegrityError, UnicodeError)
_WRITE_ROWS = 50_000  # rows turned into driver tuples at a time


class _Rejections:
    """An import's problems: every one (``keep_all``, for "skip") or the first ("raise").

    Problems are kept as rejection tables per batch, which take far less memory than
    objects, and put in order at the end: bad records (plan rows first, then step rows,
    by row), then plans already stored, then plans the database refused.
    """

    def __init__(self, *, keep_all: bool) -> None:
        self.keep_all = keep_all
        self.tables: list[pd.DataFrame] = []
        self.first: tuple[tuple[int, bool, int], MetalearnError] | None = None

    @property
    def failed(self) -> bool:
        return self.first is not None

    def add(self, kind: int, problems: list[Problem], label: RowLabel) -> None:
        if not problems:
            return
        if self.keep_all:
            table = import_report(0, 0, problems).rejections
            self.tables.append(table.assign(_kind=kind, _steps=table["table"] != "plans"))
            return
        problem = min(problems, key=lambda p: (p.table != "plans", p.row))
        key = (kind, problem.table != "plans", problem.row)
        if self.first is None or key < self.first[0]:
            error: MetalearnError
            if kind == _STORED_KIND:
                error = DuplicatePlanError(problem.plan_id)
            else:
                error = problem_error(problem, label)
                error.field = problem.field or None  # a row with extra fields names none
            self.first = key, error

    def check(self, batch: RowBatch) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The batch's valid plans (storage form, indexed by row) and their steps."""
        checked = validate_frames(batch.plans, batch.steps)
        rows = {"plans": batch.plan_rows, "steps": batch.step_rows}
        found = [replace(p, row=int(rows[p.table][p.row])) for p in checked.problems]
        problems = _first_per_plan([*batch.flaws, *found])
        self.add(_RECORD_KIND, problems, batch.label)
        positions = checked.plans.index.to_numpy()
        plan_rows = checked.plans.set_axis(batch.plan_rows[positions])
        if batch.plan_lines is not None:  # named by file line should the database refuse one
            plan_rows = plan_rows.assign(**{LINE_COLUMN: batch.plan_lines[positions]})
        if not batch.flaws:
            return plan_rows, checked.steps
        rejected = pd.Series([p.plan_id for p in problems], dtype="str")
        plan_rows = plan_rows[~plan_rows["plan_id"].isin(rejected)]
        return plan_rows, checked.steps[checked.steps["plan_id"].isin(plan_rows["plan_id"])]

    def stored(
        self, conn: Connection, plan_rows: pd.DataFrame, step_rows: pd.DataFrame
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The plans and steps left when plans already in the store are rejected."""
        duplicates = _existing_ids(conn, plan_rows["plan_id"])
        if not duplicates:
            return plan_rows, step_rows
        self.add(
            _STORED_KIND, duplicate_problems(plan_rows["plan_id"], duplicates), default_row_label
        )
        return (
            plan_rows[~plan_rows["plan_id"].isin(duplicates)],
            step_rows[~step_rows["plan_id"].isin(duplicates)],
        )

    def raise_first(self) -> None:
        if self.first is not None:
            raise self.first[1]

    def report(self, imported: int, steps: int) -> ImportReport:
        if not self.tables:
            return import_report(imported, steps, [])
        rejections = (
            pd.concat(self.tables, ignore_index=True)
            .sort_values(["_kind", "_steps", "row"], kind="stable")
            .drop(columns=["_kind", "_steps"])
            .reset_index(drop=True)
        )
        return ImportReport(imported, len(rejections), steps, rejections)


def _first_per_plan(problems: list[Problem]) -> list[Problem]:
    """One problem per plan: plan rows before step rows, then by row; a row that is not a
    record of the header's shape (listed first) before what validation found in it."""
    order = sorted(enumerate(problems), key=lambda ip: (ip[1].table != "plans", ip[1].row, ip[0]))
    seen: set[str] = set()
    first = []
    for _, problem in order:
        key = problem.plan_id or f"{problem.table}:{problem.row}"
        if key not in seen:
            seen.add(key)
            first.append(problem)
    return first


def _write_in_order(
    conn: Connection, valid: RowRanges, rows: int, rejections: _Rejections
) -> tuple[int, int]:
    """Write the valid plans and steps range by range, each plan row with the seq
    ``first + row``, so seqs follow the rows and are inserted in order (indexes stay
    local); the plans and steps written."""
    # The counter update comes first: it takes the write lock before any read.
    first_seq = _allocate(conn, rows)
    # Validation rejects a plan id seen twice in the import, so only plans stored
    # before it can be duplicates: none when the store was empty.
    stored_before = conn.execute(select(plans.c.seq).limit(1)).first() is not None
    imported = written_steps = 0
    for plan_rows, step_rows in valid:
        if stored_before:
            plan_rows, step_rows = rejections.stored(conn, plan_rows, step_rows)
        if rejections.failed:
            continue  # "raise": look on for an earlier plan already stored
        refused = _write_refusing(conn, first_seq, plan_rows, step_rows)
        rejections.add(_REFUSED_KIND, refused, valid.label(plan_rows))
        imported += len(plan_rows) - len(refused)
        written_steps += int((~step_rows["plan_id"].isin([p.plan_id for p in refused])).sum())
    return imported, written_steps


def _write_refusing(
    conn: Connection, first_seq: int, plan_rows: pd.DataFrame, step_rows: pd.DataFrame
) -> list[Problem]:
    """Write in a savepoint; where the database refuses, halve the plans until the ones it
    refuses are found (they are the problems returned, the rest is written)."""
    if plan_rows.empty:
        return []
    try:
        with conn.begin_nested():
            _write_frames(conn, first_seq, plan_rows, step_rows)
        return []
    except _REFUSALS as err:
        if len(plan_rows) == 1:
            reason = str(getattr(err, "orig", None) or err).splitlines()[0]
            row, plan_id = int(plan_rows.index[0]), str(plan_rows["plan_id"].iloc[0])
            return [Problem("plans", row, plan_id, "", f"the database refused the plan: {reason}")]
    halves = plan_rows.iloc[: len(plan_rows) // 2], plan_rows.iloc[len(plan_rows) // 2 :]
    return [
        problem
        for half in halves
        for problem in _write_refusing(
            conn, first_seq, half, step_rows[step_rows["plan_id"].isin(half["plan_id"])]
        )
    ]


def _write_frames(
    conn: Connection, first_seq: int, plan_rows: pd.DataFrame, step_rows: pd.DataFrame
) -> None:
    """Insert valid plans (indexed by their row, which gives their seq) and their steps."""
    seqs = first_seq + plan_rows.index.to_numpy(dtype="int64")
    seq_of = pd.Series(seqs, index=plan_rows["plan_id"].to_numpy())
    plan_rows = plan_rows.assign(seq=seqs)
    step_rows = step_rows.assign(plan_seq=step_rows["plan_id"].map(seq_of).to_numpy())
    for table, frame, columns in (
        (plans, plan_rows, _PLAN_WRITE_COLUMNS),
        (steps, step_rows, _STEP_WRITE_COLUMNS),
    ):
        for start in range(0, len(frame), _WRITE_ROWS):
            part = frame.iloc[start : start + _WRITE_ROWS]
            insert_rows(conn, table, columns, frame_rows(part, columns))
    # Imported plans queue their agents' analyses too, one job per agent, in this transaction.
    per_agent = plan_rows.groupby("agent_id", sort=False).agg(
        priority=("priority", "max"), last_seq=("seq", "max"), plans=("seq", "size")
    )
    numbers = [per_agent[name].to_numpy("int64").tolist() for name in per_agent.columns]
    jobs.enqueue(conn, zip(per_agent.index.astype("str").tolist(), *numbers, strict=True))
