"""JobQueue: the store's durable queue as an :class:`ExecutionService` sees it when analyses
run in other processes (``worker="process"`` or ``None``).

It offers what :class:`~metalearn.AnalysisQueue` offers an app (``stats()``, ``metrics()``,
``drain()``, ``len()``, a one-line repr) with the same keys and columns, read from the jobs
table and the run log instead of counted in memory. The queue is the store's, shared by
every app and worker on it: ``pending`` and ``running`` count all of its jobs, and the run
counters and metrics cover the runs that ended since this queue was made, whoever
queued them. Nothing is ever dropped (``dropped`` is 0): every plan's job is durable.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pandas as pd

from metalearn._checks import positive_int
from metalearn._database import Database
from metalearn._job_runs import run_counts, run_metrics
from metalearn._jobs import job_stats
from metalearn._queue import latency_percentiles

__all__ = ["JobQueue"]


class JobQueue:
    """The durable queue of ``database``, seen by one app (see the module docstring).

    ``where`` says who runs the jobs (``"process"``: the app's worker process; ``"none"``:
    workers started apart) and shows in the repr. :meth:`drain` polls every ``poll_s``.
    """

    def __init__(
        self, database: Database, *, where: str, metrics_history: int = 1_000, poll_s: float = 0.1
    ) -> None:
        self._database = database
        self.where = where
        self.metrics_history = positive_int("metrics_history", metrics_history)
        self.poll_s = poll_s
        self.started_at = datetime.now(UTC)
        self._submitted = 0
        self._closed = False

    def __repr__(self) -> str:
        state = "closed " if self._closed else ""
        try:
            jobs = job_stats(self._database)
        except Exception:  # a repr must not raise: say what is known
            return f"<JobQueue {state}{self.where} (store unreachable)>"
        return (
            f"<JobQueue {state}{self.where} running={jobs['running']} pending={jobs['pending']} "
            f"done={jobs['done']} failed={jobs['failed']}>"
        )

    def __len__(self) -> int:
        """Jobs waiting plus jobs running, in the whole store."""
        jobs = job_stats(self._database)
        return int(jobs["pending"] or 0) + int(jobs["running"] or 0)

    @property
    def closed(self) -> bool:
        """Whether its service closed."""
        return self._closed

    def submitted(self, plans: int = 1) -> None:
        """Count plans whose jobs the service queued (the store did the queueing)."""
        self._submitted += plans

    def close(self) -> None:
        """Mark it closed; the jobs stay in the store."""
        self._closed = True

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until no job in the store is pending or running (``TimeoutError`` after
        ``timeout`` s). A failed job does not count: it waits for its agent's next plan."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while await asyncio.to_thread(len, self):
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"analysis jobs still waiting after {timeout} s")
            await asyncio.sleep(self.poll_s)

    def drain_sync(self, timeout: float | None = None) -> None:
        """:meth:`drain` for code without an event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self):
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"analysis jobs still waiting after {timeout} s")
            time.sleep(self.poll_s)

    def metrics(self) -> pd.DataFrame:
        """One row per run that ended since this queue was made (the last
        ``metrics_history``), oldest first, with :meth:`AnalysisQueue.metrics`'s columns;
        ``status`` may also be ``retrying`` (the run raised and will run again)."""
        return run_metrics(self._database, since=self.started_at, limit=self.metrics_history)

    def stats(self) -> dict[str, float | int | None]:
        """:meth:`AnalysisQueue.stats`'s keys, from the store: ``submitted`` (plans this
        service queued), ``coalesced`` (plans that joined a waiting job), ``completed``,
        ``failed`` and ``cancelled`` (runs; a run that will be retried counts as failed
        only when it is the last), ``analyses`` (agent snapshots written), ``dropped``
        (always 0), ``pending`` and ``running`` (jobs in the store), and the wait and run
        percentiles of :meth:`metrics` (``None`` until a run has ended)."""
        counts = run_counts(self._database, since=self.started_at)
        jobs = job_stats(self._database)
        stats: dict[str, float | int | None] = {
            "submitted": self._submitted,
            "coalesced": counts["coalesced"],
            "completed": counts["completed"],
            "failed": counts["failed"],
            "cancelled": counts["cancelled"],
            "analyses": counts["analyses"],
            "dropped": 0,
            "pending": jobs["pending"],
            "running": jobs["running"],
        }
        metrics = self.metrics()
        return stats | latency_percentiles(metrics["wait_ms"].tolist(), metrics["run_ms"].tolist())
