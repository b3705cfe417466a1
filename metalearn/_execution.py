"""ExecutionService: finalize a plan, answer at once, analyse in the background."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

from metalearn._errors import InvalidArgumentError, QueueFullError
from metalearn._interrupt import Interrupt
from metalearn._queries import BackgroundOptions
from metalearn._queue import AnalysisQueue, Overflow
from metalearn._service import Database, MetaLearningService
from metalearn._types import Plan

__all__ = ["ExecutionService", "FinalizeResult"]

logger = logging.getLogger("metalearn.execution")


@dataclass(frozen=True)
class FinalizeResult:
    """What finalizing a plan did: its store ``seq`` and whether analysis was scheduled.

    ``scheduled`` is False when the queue's overflow policy dropped the analysis (the
    plan is recorded all the same; recovery or the agent's next plan covers it) and
    after :meth:`ExecutionService.finalize_plan_sync`, which analyses inline.
    """

    plan_id: str
    seq: int
    scheduled: bool


class ExecutionService:
    """Records finalized plans and keeps every agent's patterns fresh in the background.

    ``await finalize_plan(plan)`` writes the plan (in a writer thread) and enqueues an
    analysis of its agent on :attr:`queue`, then returns without waiting for it. The
    analysis (both analyses over the last ``time_range_days``, pattern options as given)
    runs on :attr:`meta_learning`'s worker threads and is stored as a snapshot that
    ``meta_learning.latest_patterns(agent_id)`` reads back. On start, agents whose plans
    are newer than their latest snapshot are queued again (``recover``), so a crash
    between recording and analysis loses nothing. Leaving ``async with`` drains the queue.

    Queue options: ``max_concurrency``, ``batch_size``, ``max_pending``, ``overflow``,
    ``max_attempts``, ``retry_backoff_s``, ``metrics_history`` (see
    :class:`AnalysisQueue`). Analysis options (``time_range_days``, ``min_length``,
    ``max_length``, ``min_support``, ``fdr``, ``keep_snapshots``: see
    :meth:`MetaLearningService.snapshot_agents_sync`) are checked here, once, and kept as
    :attr:`analysis_options`. Plans finalized at the same time are written together, up to
    ``write_batch`` per transaction.

    >>> import asyncio
    >>> from datetime import datetime, timedelta, timezone
    >>> async def main():
    ...     async with ExecutionService("sqlite://", min_support=1) as service:
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
        meta_learning: MetaLearningService | None = None,
        max_concurrency: int = 2,
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
        # Every option is checked before a service of our own (threads, DuckDB) exists.
        self.analysis_options = BackgroundOptions.build(
            time_range_days=time_range_days, min_length=min_length, max_length=max_length,
            min_support=min_support, fdr=fdr, keep_snapshots=keep_snapshots,
        )  # fmt: skip
        self.queue = AnalysisQueue(
            self._analyse, max_concurrency=max_concurrency, batch_size=batch_size,
            max_pending=max_pending, overflow=overflow, max_attempts=max_attempts,
            retry_backoff_s=retry_backoff_s, metrics_history=metrics_history,
        )  # fmt: skip
        self._owns_meta = meta_learning is None
        self.meta_learning = meta_learning or MetaLearningService(db)  # type: ignore[arg-type]
        self.store = self.meta_learning.store
        self._recover = recover
        # Plans are written on their own thread, so finalizing never waits behind analyses,
        # and plans finalized together are written together (one transaction: a group
        # commit), so a burst costs a few commits instead of one per plan.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="metalearn-writer")
        self._write_batch = write_batch
        self._waiting_writes: list[tuple[Plan, asyncio.Future[int]]] = []
        self._write_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<ExecutionService {self.store.url} {self.queue!r}>"

    async def _analyse(self, agents: tuple[str, ...], interrupt: Interrupt) -> None:
        await self.meta_learning.snapshot_agents(
            agents, interrupt=interrupt, **self.analysis_options.keywords()
        )

    async def _write(self, plan: Plan) -> int:
        loop = asyncio.get_running_loop()
        written: asyncio.Future[int] = loop.create_future()
        self._waiting_writes.append((plan, written))
        if self._write_task is None or self._write_task.done():
            self._write_task = asyncio.create_task(self._write_waiting(), name="metalearn-writer")
        return await written

    async def _write_waiting(self) -> None:
        """Write every waiting plan, a batch per transaction, until none is left."""
        loop = asyncio.get_running_loop()
        while self._waiting_writes:
            batch = self._waiting_writes[: self._write_batch]
            del self._waiting_writes[: self._write_batch]
            outcomes = await self._record(loop, [plan for plan, _ in batch])
            for (_, written), outcome in zip(batch, outcomes, strict=True):
                if written.done():  # its finalize_plan was cancelled
                    continue
                if isinstance(outcome, BaseException):
                    written.set_exception(outcome)
                else:
                    written.set_result(outcome)

    async def _record(
        self, loop: asyncio.AbstractEventLoop, plans: list[Plan]
    ) -> list[int | BaseException]:
        """Write ``plans`` in one transaction; should it fail, write them one by one, so
        that only a plan the store refuses fails, and only for its own caller."""
        try:
            return [*await loop.run_in_executor(self._writer, self.store.record_plans, plans)]
        except Exception as error:
            if len(plans) == 1:
                return [error]
            logger.warning(
                "a group commit of %d plans failed (%s: %s); writing them one at a time",
                len(plans), type(error).__name__, error,
            )  # fmt: skip
        outcomes: list[int | BaseException] = []
        for plan in plans:
            outcomes += await self._record(loop, [plan])
        return outcomes

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the queue's workers and queue the analyses a crash may have lost."""
        self.queue.start()
        if self._recover:
            await self.recover()

    async def recover(self) -> int:
        """Queue every agent whose plans are newer than its latest snapshot; return how many."""
        loop = asyncio.get_running_loop()
        behind = await loop.run_in_executor(self._writer, self.store.agents_behind)
        for agent_id in behind:
            self.queue.submit(agent_id)
        if behind:
            logger.info("recovery: queued the analysis of %d agents", len(behind))
        return len(behind)

    async def close(self, *, drain: bool = True) -> None:
        """Close the queue (draining it, or interrupting running analyses), then the threads."""
        if self._write_task is not None:
            await self._write_task  # plans being finalized are written first
        await self.queue.close(drain=drain)
        await asyncio.to_thread(self._writer.shutdown, wait=True)
        if self._owns_meta:
            await asyncio.to_thread(self.meta_learning.close)

    async def __aenter__(self) -> ExecutionService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(drain=True)

    # -- finalizing --------------------------------------------------------------------

    async def finalize_plan(self, plan: Plan, *, priority: int | None = None) -> FinalizeResult:
        """Record ``plan`` and schedule its agent's analysis; returns without waiting for it.

        ``priority`` overrides ``plan.priority`` (higher is analysed first).
        """
        if not isinstance(plan, Plan):
            raise TypeError(f"finalize_plan() takes a metalearn.Plan, not {type(plan).__name__}")
        seq = await self._write(plan)
        self.queue.start()
        try:
            scheduled = self.queue.submit(
                plan.agent_id, priority=plan.priority if priority is None else priority
            )
        except QueueFullError as error:
            logger.warning("plan %r recorded; its analysis was not queued: %s", plan.plan_id, error)
            scheduled = False
        return FinalizeResult(plan.plan_id, seq, scheduled)

    def finalize_plan_sync(self, plan: Plan) -> FinalizeResult:
        """Record ``plan`` and analyse its agent inline: for code without an event loop.

        Blocks for the whole analysis. Inside a running event loop use
        ``await finalize_plan(plan)`` instead (this raises ``RuntimeError`` there).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "finalize_plan_sync() blocks and an event loop is running in this thread; "
                "use `await service.finalize_plan(plan)` instead"
            )
        seq = self.store.record_plan(plan)
        self.meta_learning.snapshot_agents_sync(
            (plan.agent_id,), **self.analysis_options.keywords()
        )
        return FinalizeResult(plan.plan_id, seq, scheduled=False)
