"""ExecutionService: finalize a plan, answer at once, analyse in the background."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from metalearn._database import Database as DatabaseHandle
from metalearn._errors import InvalidArgumentError, QueueFullError
from metalearn._interrupt import Interrupt
from metalearn._job_queue import JobQueue
from metalearn._jobs import settle
from metalearn._queries import BackgroundOptions
from metalearn._queue import AnalysisQueue, Overflow
from metalearn._service import Database, MetaLearningService
from metalearn._store import HistoryStore
from metalearn._supervisor import WorkerProcess
from metalearn._types import PRIORITY_MAX, PRIORITY_MIN, PRIORITY_RULE, Plan
from metalearn._worker import snapshot_through

__all__ = ["ExecutionService", "FinalizeResult", "WorkerMode"]

WorkerMode = Literal["process", "thread"] | None
"""Where an :class:`ExecutionService`'s analyses run (see its docstring)."""

logger = logging.getLogger("metalearn.execution")


@dataclass(frozen=True)
class FinalizeResult:
    """What finalizing a plan did: its store ``seq`` and whether analysis was scheduled.

    ``scheduled`` is False when, in thread mode, the in-memory queue's overflow policy
    dropped the analysis (the plan and its durable job are recorded all the same; the next
    start's recovery or the agent's next plan covers it), and after a thread-mode
    :meth:`ExecutionService.finalize_plan_sync`, which analyses inline.
    """

    plan_id: str
    seq: int
    scheduled: bool


class ExecutionService:
    """Records finalized plans; their agents' analyses run in the background, elsewhere.

    ``await finalize_plan(plan)`` writes the plan and its agent's analysis job in one
    transaction (on a writer thread; plans finalized together share a transaction), then
    returns: an acknowledged plan always has its analysis queued, durably. Where the
    analyses run (both analyses over the last ``time_range_days``, pattern options as
    given, stored as snapshots that ``meta_learning.latest_patterns(agent_id)`` reads
    back from any process) is ``worker``:

    - ``"process"`` (the default): the service starts one ``metalearn worker`` process on
      the store and supervises it (restarted, with backoff, if it dies; see
      :class:`~metalearn._supervisor.WorkerProcess`), at CPU priority ``nice`` lower than
      the app. No analysis runs in the app's process.
    - ``None``: the app only records plans and queues jobs; ``metalearn worker`` processes
      started apart (any number, on any machine when the store is PostgreSQL) run them.
    - ``"thread"``: the analyses run in this process, on :attr:`meta_learning`'s threads,
      through an :class:`AnalysisQueue` (priorities, coalescing, batches in memory); each
      analysis also settles its agents' jobs in the store. For notebooks and tests.

    An in-memory store (``sqlite://``) cannot be opened by another process: there
    ``"process"`` falls back to ``"thread"`` (logged once). :attr:`worker` is the mode in
    use. :attr:`queue` reports in every mode with the same ``stats()`` keys and
    ``metrics()`` columns (read from the store's jobs and run log outside thread mode:
    :class:`~metalearn._job_queue.JobQueue`). Leaving ``async with`` never waits for
    analyses, which are durable jobs; ``await service.queue.drain()`` waits.

    Queue options: ``max_concurrency`` (batches at once; default 2 in thread mode and 1
    in a worker process: with two at once the worker's bursts of snapshot writes raised
    the app's POST p99 3-4x in ``benchmarks.server``, with one it matched record-only),
    ``batch_size``, ``max_attempts``,
    ``retry_backoff_s``, ``metrics_history`` in every mode; ``lease_seconds`` for a worker
    process; ``max_pending`` and ``overflow`` in thread mode only (the store's queue
    drops nothing). Analysis options (``time_range_days``, ``min_length``,
    ``max_length``, ``min_support``, ``fdr``, ``keep_snapshots``: see
    :meth:`MetaLearningService.snapshot_agents_sync`) are checked here, once, and kept as
    :attr:`analysis_options`. On start, agents whose plans are newer than their latest
    snapshot are queued again (``recover``). Plans finalized at the same time are written
    together, up to ``write_batch`` per transaction.

    >>> import asyncio
    >>> from datetime import datetime, timedelta, timezone
    >>> async def main():
    ...     async with ExecutionService("sqlite://", worker="thread", min_support=1) as service:
    ...         start = datetime(2026, 1, 5, tzinfo=timezone.utc)
    ...         result = await service.finalize_plan(Plan(
    ...             "p-1", "support-bot", "succeeded", start, start + timedelta(seconds=2),
    ...             steps=[{"tool": "search"}, {"tool": "respond"}]))
    ...         await service.queue.drain()  # only to show the result; the app moves on
    ...         latest = await service.meta_learning.latest_patterns("support-bot")
    ...     return result, latest.through_seq
    >>> asyncio.run(main())
    (FinalizeResult(plan_id='p-1', seq=1, scheduled=True), 1)
    """

    def __init__(
        self,
        db: Database | None = None,
        *,
        worker: WorkerMode = "process",
        nice: int = 10,
        lease_seconds: float = 30.0,
        meta_learning: MetaLearningService | None = None,
        max_concurrency: int | None = None,
        batch_size: int = 16,
        max_pending: int = 10_000,
        overflow: Overflow = "reject",
        max_attempts: int = 3,
        retry_backoff_s: float = 0.5,
        metrics_history: int = 1_000,
        time_range_days: float | None = 30,
        min_length: int = 1,
        max_length: int = 4,
        min_support: int = 20,
        fdr: float = 0.05,
        keep_snapshots: int = 20,
        recover: bool = True,
        write_batch: int = 500,
    ) -> None:
        if meta_learning is None and db is None:
            raise InvalidArgumentError("give a database (db=...) or a MetaLearningService")
        if worker not in ("process", "thread", None):
            raise InvalidArgumentError(
                f"worker must be 'process', 'thread' or None, not {worker!r}"
            )
        # Every option is checked before a service of our own (threads, DuckDB) exists.
        threads_at_once = 2 if max_concurrency is None else max_concurrency
        batches_at_once = 1 if max_concurrency is None else max_concurrency
        self.analysis_options = BackgroundOptions.build(
            time_range_days=time_range_days, min_length=min_length, max_length=max_length,
            min_support=min_support, fdr=fdr, keep_snapshots=keep_snapshots,
        )  # fmt: skip
        memory_queue = AnalysisQueue(
            self._analyse, max_concurrency=threads_at_once, batch_size=batch_size,
            max_pending=max_pending, overflow=overflow, max_attempts=max_attempts,
            retry_backoff_s=retry_backoff_s, metrics_history=metrics_history,
        )  # fmt: skip
        worker_args = _worker_args(
            self.analysis_options, nice=nice, lease_seconds=lease_seconds,
            batch_size=batch_size, concurrency=batches_at_once, max_attempts=max_attempts,
            retry_backoff_s=retry_backoff_s,
        )  # fmt: skip
        self._owns_meta = meta_learning is None
        self.meta_learning = meta_learning or MetaLearningService(db)  # type: ignore[arg-type]
        self.store = self.meta_learning.store
        self.worker: WorkerMode = _mode_for(worker, self.store.database)
        self.queue: AnalysisQueue | JobQueue = memory_queue
        if self.worker != "thread":
            where = "process" if self.worker == "process" else "none"
            self.queue = JobQueue(self.store.database, where=where, metrics_history=metrics_history)
        self.worker_process = (
            WorkerProcess(_full_url(self.store), worker_args, shown_url=self.store.url)
            if self.worker == "process"
            else None
        )
        self._recover = recover
        # Plans are written on their own thread, so finalizing never waits behind analyses,
        # and plans finalized together are written together (one transaction: a group
        # commit), so a burst costs a few commits instead of one per plan.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="metalearn-writer")
        self._write_batch = write_batch
        self._waiting_writes: list[tuple[Plan, int | None, asyncio.Future[int]]] = []
        self._write_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<ExecutionService {self.store.url} worker={self.worker} {self.queue!r}>"

    async def _analyse(self, agents: tuple[str, ...], interrupt: Interrupt) -> None:
        await self.meta_learning._in_worker(self._analyse_sync, agents, interrupt)

    def _analyse_sync(self, agents: Sequence[str], interrupt: Interrupt | None = None) -> None:
        """Thread mode: snapshot the agents here, then settle their jobs in the store."""
        covered = snapshot_through(
            self.meta_learning, agents, interrupt or Interrupt(), self.analysis_options
        )
        settle(self.store.database, agents, covered_seq=covered)

    async def _write(self, plan: Plan, priority: int | None) -> int:
        loop = asyncio.get_running_loop()
        written: asyncio.Future[int] = loop.create_future()
        self._waiting_writes.append((plan, priority, written))
        if self._write_task is None or self._write_task.done():
            self._write_task = asyncio.create_task(self._write_waiting(), name="metalearn-writer")
        return await written

    async def _write_waiting(self) -> None:
        """Write every waiting plan, a batch per transaction, until none is left."""
        loop = asyncio.get_running_loop()
        while self._waiting_writes:
            batch = self._waiting_writes[: self._write_batch]
            del self._waiting_writes[: self._write_batch]
            outcomes = await self._record(loop, [(plan, priority) for plan, priority, _ in batch])
            for (_, _, written), outcome in zip(batch, outcomes, strict=True):
                if written.done():  # its finalize_plan was cancelled
                    continue
                if isinstance(outcome, BaseException):
                    written.set_exception(outcome)
                else:
                    written.set_result(outcome)

    async def _record(
        self, loop: asyncio.AbstractEventLoop, items: list[tuple[Plan, int | None]]
    ) -> list[int | BaseException]:
        """Write the plans in one transaction; should it fail, write them one by one, so
        that only a plan the store refuses fails, and only for its own caller."""
        plans, priorities = [plan for plan, _ in items], [priority for _, priority in items]
        try:
            return [*await loop.run_in_executor(
                self._writer, functools.partial(self.store.record_plans, plans,
                                                priorities=priorities)
            )]  # fmt: skip
        except Exception as error:
            if len(items) == 1:
                return [error]
            logger.warning(
                "a group commit of %d plans failed (%s: %s); writing them one at a time",
                len(items), type(error).__name__, error,
            )  # fmt: skip
        outcomes: list[int | BaseException] = []
        for item in items:
            outcomes += await self._record(loop, [item])
        return outcomes

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the analyses (the worker process, or the queue's threads) and queue again
        the agents a crash may have left without a current snapshot."""
        if self._recover:
            await self.recover()
        self._start_analyses()

    def _start_analyses(self) -> None:
        if self.worker_process is not None:
            self.worker_process.start()
        elif isinstance(self.queue, AnalysisQueue):
            self.queue.start()

    async def recover(self) -> int:
        """Queue every agent whose plans are newer than its latest snapshot; return how many.

        In thread mode they go on the in-memory queue; otherwise their jobs in the store
        are (re)armed, for plans stored without one (say, by an older metalearn).
        """
        loop = asyncio.get_running_loop()
        behind = await loop.run_in_executor(self._writer, self.store.agents_behind)
        if isinstance(self.queue, AnalysisQueue):
            self.queue.start()
            for agent_id in behind:
                self.queue.submit(agent_id)
        elif behind:
            await loop.run_in_executor(self._writer, self.store.requeue, behind)
        if behind:
            logger.info("recovery: queued the analysis of %d agents", len(behind))
        return len(behind)

    async def close(self, *, drain: bool = False) -> None:
        """Write the plans being finalized, then stop the analyses and the threads.

        Thread mode: ``drain=True`` waits for the queued analyses; otherwise running ones
        are interrupted and waiting ones are left to the store's jobs (the next start
        recovers them). A worker process is asked to stop, and finishes or releases its
        batch; jobs stay in the store.
        """
        if self._write_task is not None:
            await self._write_task  # plans being finalized are written first
        if isinstance(self.queue, AnalysisQueue):
            await self.queue.close(drain=drain)
        else:
            if drain:
                await self.queue.drain()
            self.queue.close()
        if self.worker_process is not None:
            await asyncio.to_thread(self.worker_process.stop)
        await asyncio.to_thread(self._writer.shutdown, wait=True)
        if self._owns_meta:
            await asyncio.to_thread(self.meta_learning.close)

    def close_sync(self) -> None:
        """:meth:`close` for code without an event loop (after ``finalize_plan_sync``)."""
        _no_running_loop("close_sync()", "await service.close()")
        if self.worker_process is not None:
            self.worker_process.stop()
        if isinstance(self.queue, JobQueue):
            self.queue.close()
        self._writer.shutdown(wait=True)
        if self._owns_meta:
            self.meta_learning.close()

    async def __aenter__(self) -> ExecutionService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- finalizing --------------------------------------------------------------------

    async def finalize_plan(self, plan: Plan, *, priority: int | None = None) -> FinalizeResult:
        """Record ``plan`` and queue its agent's analysis; returns without waiting for it.

        ``priority`` overrides ``plan.priority`` for the analysis job (higher runs first).
        """
        if not isinstance(plan, Plan):
            raise TypeError(f"finalize_plan() takes a metalearn.Plan, not {type(plan).__name__}")
        job_priority = plan.priority if priority is None else _job_priority(priority)
        seq = await self._write(plan, job_priority)
        if not isinstance(self.queue, AnalysisQueue):
            self.queue.submitted()
            self._start_analyses()
            return FinalizeResult(plan.plan_id, seq, scheduled=True)
        self.queue.start()
        try:
            scheduled = self.queue.submit(plan.agent_id, priority=job_priority)
        except QueueFullError as error:
            logger.warning("plan %r recorded; its analysis was not queued: %s", plan.plan_id, error)
            scheduled = False
        return FinalizeResult(plan.plan_id, seq, scheduled)

    def finalize_plan_sync(self, plan: Plan) -> FinalizeResult:
        """Record ``plan`` without an event loop.

        Thread mode analyses its agent inline (blocking for the analysis) and returns
        ``scheduled=False``; the other modes queue its job, start the worker process if
        it is not running, and return at once. Inside a running event loop use
        ``await finalize_plan(plan)`` instead (this raises ``RuntimeError`` there).
        """
        _no_running_loop("finalize_plan_sync()", "await service.finalize_plan(plan)")
        seq = self.store.record_plan(plan)
        if isinstance(self.queue, JobQueue):
            self.queue.submitted()
            self._start_analyses()
            return FinalizeResult(plan.plan_id, seq, scheduled=True)
        self._analyse_sync((plan.agent_id,))
        return FinalizeResult(plan.plan_id, seq, scheduled=False)


def _job_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidArgumentError(f"priority must be an integer, not {priority!r}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidArgumentError(f"priority {priority}: {PRIORITY_RULE}")
    return priority


def _no_running_loop(call: str, instead: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{call} blocks and an event loop is running in this thread; use `{instead}` instead"
    )


_memory_fallback_logged = False


def _mode_for(worker: WorkerMode, database: DatabaseHandle) -> WorkerMode:
    """``worker``, or ``"thread"`` for a store that no other process can open."""
    global _memory_fallback_logged
    if worker != "process" or not database.in_memory:
        return worker
    if not _memory_fallback_logged:
        _memory_fallback_logged = True
        logger.info(
            "an in-memory SQLite store cannot be shared with a worker process; "
            "analysing in this process's threads (worker='thread')"
        )
    return "thread"


def _full_url(store: HistoryStore) -> str:
    """The store's URL with its password: for the worker's environment, never for a log."""
    return store.engine.url.render_as_string(hide_password=False)


def _worker_args(
    options: BackgroundOptions,
    *,
    nice: int,
    lease_seconds: float,
    batch_size: int,
    concurrency: int,
    max_attempts: int,
    retry_backoff_s: float,
) -> list[str]:
    if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
        raise InvalidArgumentError(f"nice must be an integer from 0 to 19, not {nice!r}")
    if (
        isinstance(lease_seconds, bool)
        or not isinstance(lease_seconds, int | float)
        or not (lease_seconds > 0)
    ):
        raise InvalidArgumentError(f"lease_seconds must be a number > 0, not {lease_seconds!r}")
    return [
        "--batch-size", str(batch_size), "--concurrency", str(concurrency),
        "--lease-seconds", repr(float(lease_seconds)), "--nice", str(nice),
        "--max-attempts", str(max_attempts), "--retry-backoff", repr(float(retry_backoff_s)),
        *options.command_args(), "--quiet",
    ]  # fmt: skip
