"""AnalysisQueue: background analysis jobs with priorities, coalescing, batches and metrics.

Work is keyed by agent. While an agent waits, more plans of that agent merge into its
pending entry (keeping the highest priority), so pending entries never outnumber agents;
an agent already being analysed gets exactly one follow-up entry, which waits until the
running job ends. Each worker takes up to ``batch_size`` waiting agents, highest priority
first (equal priorities in submission order), and runs them as one job.

Every worker task is held until it ends and observed; every job failure is logged,
retried with exponential backoff a bounded number of times and recorded in the metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from metalearn._checks import positive_int
from metalearn._errors import (
    AnalysisInterrupted,
    InvalidArgumentError,
    QueueClosedError,
    QueueFullError,
)
from metalearn._interrupt import Interrupt

__all__ = ["METRIC_COLUMNS", "AnalysisQueue", "Runner", "latency_percentiles", "metrics_frame"]

logger = logging.getLogger("metalearn.queue")

Runner = Callable[[tuple[str, ...], Interrupt], Awaitable[Any]]
"""An async callable that analyses a batch of agents; honours the interrupt if it can."""

Overflow = Literal["reject", "drop_lowest"]

METRIC_COLUMNS = [
    "job_id", "agents", "plans", "priority", "submitted_at", "started_at", "finished_at",
    "wait_ms", "run_ms", "attempts", "status", "error",
]  # fmt: skip
"""The columns of :meth:`AnalysisQueue.metrics`, in order (the one definition; ``plots``
and ``export`` import it)."""


@dataclass
class _Pending:
    agent_id: str
    priority: int
    order: int
    plans: int
    submitted_at: datetime
    submitted_clock: float


@dataclass
class _Job:
    job_id: int
    agents: tuple[str, ...]
    plans: int
    priority: int
    submitted_at: datetime
    submitted_clock: float
    interrupt: Interrupt = field(default_factory=Interrupt)
    started_at: datetime | None = None
    started_clock: float = 0.0
    attempts: int = 0
    status: str = "running"
    error: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


class AnalysisQueue:
    """Runs analyses of agents in the background of an asyncio application.

    ``runner(agents, interrupt)`` is awaited for each job (a batch of up to
    ``batch_size`` agents); at most ``max_concurrency`` jobs run at once. At most
    ``max_pending`` agents wait; beyond that ``overflow="reject"`` raises
    :class:`QueueFullError` and ``"drop_lowest"`` drops the lowest-priority waiting
    agent (or the new one, if it is not higher). A failing job is retried up to
    ``max_attempts`` times, waiting ``retry_backoff_s`` x 2^(attempt-1) between tries.
    :meth:`metrics` keeps the last ``metrics_history`` jobs.

    Stop it with ``await queue.close()`` (drains) or ``await queue.close(drain=False)``
    (drops waiting work and interrupts running jobs).

    >>> async def runner(agents, interrupt):
    ...     await asyncio.sleep(0)
    >>> async def main():
    ...     queue = AnalysisQueue(runner, max_concurrency=1)
    ...     queue.start()
    ...     for agent in ["a", "b", "a", "a"]:
    ...         queue.submit(agent)
    ...     await queue.close()
    ...     return queue.stats()["coalesced"], queue
    >>> asyncio.run(main())
    (2, <AnalysisQueue closed running=0 pending=0 done=1 failed=0>)
    """

    def __init__(
        self,
        runner: Runner,
        *,
        max_concurrency: int = 2,
        batch_size: int = 16,
        max_pending: int = 10_000,
        overflow: Overflow = "reject",
        max_attempts: int = 3,
        retry_backoff_s: float = 0.5,
        metrics_history: int = 1_000,
        close_timeout_s: float = 10.0,
    ) -> None:
        self._runner = runner
        self.max_concurrency = positive_int("max_concurrency", max_concurrency)
        self.batch_size = positive_int("batch_size", batch_size)
        self.max_pending = positive_int("max_pending", max_pending)
        self.max_attempts = positive_int("max_attempts", max_attempts)
        if overflow not in ("reject", "drop_lowest"):
            raise InvalidArgumentError(
                f"overflow must be 'reject' or 'drop_lowest', not {overflow!r}"
            )
        if not retry_backoff_s >= 0:
            raise InvalidArgumentError(f"retry_backoff_s must be >= 0, not {retry_backoff_s!r}")
        self.overflow: Overflow = overflow
        self.retry_backoff_s = float(retry_backoff_s)
        self.close_timeout_s = float(close_timeout_s)
        self._pending: dict[str, _Pending] = {}
        self._running: dict[int, _Job] = {}
        self._busy_agents: set[str] = set()
        self._records: deque[dict[str, Any]] = deque(
            maxlen=positive_int("metrics_history", metrics_history)
        )
        self._order = itertools.count()
        self._job_ids = itertools.count(1)
        self._counts = dict.fromkeys(
            ("submitted", "coalesced", "completed", "failed", "cancelled", "analyses", "dropped"), 0
        )
        self._workers: set[asyncio.Task[None]] = set()
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._state: Literal["new", "running", "closing", "closed"] = "new"

    # -- state -------------------------------------------------------------------------

    def __repr__(self) -> str:
        state = "" if self._state == "running" else f"{self._state} "
        return (
            f"<AnalysisQueue {state}running={len(self._running)} pending={len(self._pending)} "
            f"done={self._counts['completed']} failed={self._counts['failed']}>"
        )

    def __len__(self) -> int:
        """Agents waiting plus jobs running."""
        return len(self._pending) + len(self._running)

    @property
    def closed(self) -> bool:
        """Whether the queue stopped accepting work."""
        return self._state in ("closing", "closed")

    def start(self) -> None:
        """Start the workers in the running event loop (idempotent)."""
        if self._state == "running":
            return
        if self.closed:
            raise QueueClosedError("this queue is closed; create a new one")
        asyncio.get_running_loop()  # raises RuntimeError outside a loop, before any state
        self._wakeup, self._idle = asyncio.Event(), asyncio.Event()
        self._idle.set()
        self._state = "running"
        for number in range(self.max_concurrency):
            task = asyncio.create_task(self._work(), name=f"metalearn-analysis-worker-{number}")
            self._workers.add(task)
            task.add_done_callback(self._worker_done)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self._workers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("analysis worker crashed", exc_info=task.exception())

    # -- submitting --------------------------------------------------------------------

    def submit(self, agent_id: str, *, priority: int = 0, plans: int = 1) -> bool:
        """Ask for an analysis of ``agent_id``; returns False if the policy dropped it.

        Merges into the agent's waiting entry when there is one (``coalesced``).
        """
        if self.closed:
            raise QueueClosedError("the analysis queue is closed; no new work is accepted")
        self._counts["submitted"] += plans
        waiting = self._pending.get(agent_id)
        if waiting is not None:
            waiting.priority = max(waiting.priority, priority)
            waiting.plans += plans
            self._counts["coalesced"] += plans
            return True
        if len(self._pending) >= self.max_pending and not self._make_room(priority, plans):
            return False
        self._pending[agent_id] = _Pending(
            agent_id, priority, next(self._order), plans, _now(), time.perf_counter()
        )
        self._signal()
        return True

    def _make_room(self, priority: int, plans: int) -> bool:
        if self.overflow == "reject":
            self._counts["dropped"] += plans
            raise QueueFullError(
                f"{len(self._pending)} agents are waiting for analysis (max_pending="
                f"{self.max_pending}); raise max_pending or use overflow='drop_lowest'"
            )
        lowest = min(self._pending.values(), key=lambda p: (p.priority, -p.order))
        if lowest.priority >= priority:
            self._counts["dropped"] += plans
            return False
        del self._pending[lowest.agent_id]
        self._counts["dropped"] += lowest.plans
        logger.warning("queue full: dropped the analysis of %r", lowest.agent_id)
        return True

    def _signal(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
        if self._idle is None:
            return
        if len(self):
            self._idle.clear()
        else:
            self._idle.set()

    # -- running -----------------------------------------------------------------------

    def _take(self) -> _Job | None:
        ready = [p for p in self._pending.values() if p.agent_id not in self._busy_agents]
        if not ready:
            return None
        batch = sorted(ready, key=lambda p: (-p.priority, p.order))[: self.batch_size]
        for entry in batch:
            del self._pending[entry.agent_id]
            self._busy_agents.add(entry.agent_id)
        first = min(batch, key=lambda p: p.submitted_clock)
        job = _Job(
            job_id=next(self._job_ids),
            agents=tuple(p.agent_id for p in batch),
            plans=sum(p.plans for p in batch),
            priority=max(p.priority for p in batch),
            submitted_at=first.submitted_at,
            submitted_clock=first.submitted_clock,
        )
        self._running[job.job_id] = job
        return job

    async def _work(self) -> None:
        assert self._wakeup is not None
        while True:
            job = self._take()
            if job is not None:
                await self._run(job)
                continue
            if self._state != "running" and not self._pending:
                return
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _run(self, job: _Job) -> None:
        job.started_at, job.started_clock = _now(), time.perf_counter()
        try:
            await self._attempts(job)
        except asyncio.CancelledError:
            job.status, job.error = "cancelled", "cancelled while running"
            raise
        except BaseException as error:  # not an analysis failure: record it, let it through
            job.status, job.error = "failed", f"{type(error).__name__}: {error}"
            raise
        finally:
            self._finish(job)

    async def _attempts(self, job: _Job) -> None:
        for attempt in range(1, self.max_attempts + 1):
            job.attempts = attempt
            try:
                await self._runner(job.agents, job.interrupt)
            except AnalysisInterrupted as error:
                job.status, job.error = "cancelled", str(error)
                return
            except Exception as error:
                job.error = f"{type(error).__name__}: {error}"
                if attempt == self.max_attempts or job.interrupt.requested:
                    job.status = "failed"
                    logger.error("analysis job %d of %s failed after %d attempts",
                                 job.job_id, job.agents, attempt, exc_info=error)  # fmt: skip
                    return
                delay = self.retry_backoff_s * 2 ** (attempt - 1)
                logger.warning("analysis job %d of %s failed (attempt %d), retrying in %.2fs: %s",
                               job.job_id, job.agents, attempt, delay, job.error)  # fmt: skip
                await asyncio.sleep(delay)
            else:
                job.status = "completed"
                return

    def _finish(self, job: _Job) -> None:
        self._running.pop(job.job_id, None)
        self._busy_agents.difference_update(job.agents)
        self._counts[job.status] += 1
        if job.status == "completed":
            self._counts["analyses"] += len(job.agents)
        finished = time.perf_counter()
        self._records.append(
            {
                "job_id": job.job_id,
                "agents": job.agents,
                "plans": job.plans,
                "priority": job.priority,
                "submitted_at": job.submitted_at,
                "started_at": job.started_at,
                "finished_at": _now(),
                "wait_ms": (job.started_clock - job.submitted_clock) * 1000,
                "run_ms": (finished - job.started_clock) * 1000,
                "attempts": job.attempts,
                "status": job.status,
                "error": job.error,
            }
        )
        self._signal()

    # -- waiting and stopping ----------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until nothing is waiting or running (``TimeoutError`` after ``timeout`` s)."""
        if self._idle is None:
            if self._pending:
                raise RuntimeError("the queue was never started; call start() in a running loop")
            return
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self, *, drain: bool = True) -> None:
        """Stop accepting work; then drain, or drop waiting work and interrupt running jobs.

        Without draining, running analyses are interrupted (their DuckDB query is stopped)
        and the call returns within ``close_timeout_s`` even if one cannot be stopped.
        """
        if self._state == "closed":
            return
        started = self._state == "running"
        self._state = "closing"
        if started and drain:
            await self.drain()
        else:
            self._drop_pending()
            for job in self._running.values():
                job.interrupt.request()
        if self._wakeup is not None:
            self._wakeup.set()
        await self._stop_workers()
        self._state = "closed"

    def _drop_pending(self) -> None:
        self._counts["dropped"] += sum(p.plans for p in self._pending.values())
        self._pending.clear()
        self._signal()

    async def _stop_workers(self) -> None:
        workers = list(self._workers)
        if not workers:
            return
        _, late = await asyncio.wait(workers, timeout=self.close_timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    # -- metrics -----------------------------------------------------------------------

    def metrics(self) -> pd.DataFrame:
        """One row per finished job (the last ``metrics_history``), oldest first.

        Columns: job_id, agents (tuple), plans, priority, submitted_at, started_at,
        finished_at (UTC), wait_ms (submission of its first plan to start), run_ms,
        attempts, status (``completed``, ``failed``, ``cancelled``), error.
        """
        return metrics_frame(self._records)

    def stats(self) -> dict[str, float | int | None]:
        """Counters and latency percentiles.

        ``submitted`` (plans enqueued), ``coalesced`` (plans merged into a waiting entry),
        ``completed``, ``failed`` and ``cancelled`` (jobs), ``analyses`` (agent analyses
        written), ``dropped`` (plans whose analysis was dropped), ``pending``, ``running``,
        and ``wait_p50_ms``, ``wait_p95_ms``, ``run_p50_ms``, ``run_p95_ms`` over the
        jobs kept in :meth:`metrics` (``None`` until a job has finished, so the dict is
        JSON-safe from the start).
        """
        stats: dict[str, float | int | None] = dict(self._counts)
        stats["pending"], stats["running"] = len(self._pending), len(self._running)
        wait, run = ([r[f"{name}_ms"] for r in self._records] for name in ("wait", "run"))
        return stats | latency_percentiles(wait, run)


def metrics_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Finished jobs (dicts keyed by :data:`METRIC_COLUMNS`) as the metrics table: times
    as UTC timestamps, counts as int64, latencies as float64 (the one place that says)."""
    frame = pd.DataFrame(list(records), columns=METRIC_COLUMNS)
    for column in ("submitted_at", "started_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame.astype({"job_id": "int64", "plans": "int64", "priority": "int64",
                         "attempts": "int64", "wait_ms": "float64", "run_ms": "float64",
                         "status": "str"})  # fmt: skip


def latency_percentiles(
    wait_ms: Sequence[float], run_ms: Sequence[float]
) -> dict[str, float | None]:
    """``wait_p50_ms``, ``wait_p95_ms``, ``run_p50_ms``, ``run_p95_ms`` (None when empty)."""
    return {
        f"{name}_p{q}_ms": float(np.percentile(values, q)) if len(values) else None
        for name, values in (("wait", wait_ms), ("run", run_ms))
        for q in (50, 95)
    }
