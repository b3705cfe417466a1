"""The log of finished analysis runs, so that any process can read the queue's metrics.

A worker writes one row per claimed batch when the batch ends (``metalearn_job_runs``):
its agents, plans, priority, when its oldest plan was queued, when it was claimed and
ended, the attempt, a status and the first error. The log keeps about the newest
:data:`KEEP_RUNS` rows. :func:`run_metrics` gives them the columns of
:meth:`AnalysisQueue.metrics <metalearn.AnalysisQueue.metrics>` (``METRIC_COLUMNS``),
which is how :class:`~metalearn.ExecutionService`'s queue reports on analyses that run in
another process.

A run's ``status`` is the worst of its agents' outcomes: ``failed`` (an analysis raised and
has no attempts left), ``retrying`` (raised; it will run again), ``cancelled`` (released
on a stop, or its lease lost to another worker) or ``completed``.

>>> from metalearn._jobs import claim, complete, enqueue
>>> database = Database("sqlite://")
>>> with database.begin() as conn:
...     enqueue(conn, [("agent-a", 0, 1, 1)])
>>> jobs = claim(database, "worker-1", batch_size=4, lease_seconds=30)
>>> complete(database, "worker-1", "agent-a", covered_seq=1)
'done'
>>> record_run(database, "worker-1", jobs, {"agent-a": "done"})
>>> run_metrics(database)[["agents", "plans", "attempts", "status"]]
       agents  plans  attempts     status
0  (agent-a,)      1         1  completed
>>> database.close()
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import case, delete, func, insert, select

from metalearn._database import Database
from metalearn._jobs import ClaimedJob
from metalearn._queue import metrics_frame
from metalearn._schema import job_runs
from metalearn._types import epoch_micros, from_epoch_micros

__all__ = ["KEEP_RUNS", "RUN_STATUSES", "record_run", "run_counts", "run_metrics"]

KEEP_RUNS = 10_000
"""How many runs the log keeps at least (older ones are deleted every 100 runs)."""

RUN_STATUSES = ("completed", "retrying", "failed", "cancelled")
"""The statuses of a run, from best to worst."""

_PRUNE_EVERY = 100
_STATUS_OF = {"done": "completed", "requeued": "completed", "retrying": "retrying",
              "failed": "failed", "released": "cancelled", "lost": "cancelled"}  # fmt: skip
_MAX_ERROR_CHARS = 2_000
_c = job_runs.c


def record_run(
    database: Database,
    owner: str,
    jobs: Sequence[ClaimedJob],
    outcomes: Mapping[str, str],
    errors: Mapping[str, str] | None = None,
    *,
    keep: int = KEEP_RUNS,
    now: datetime | None = None,
) -> None:
    """Log one finished batch: ``jobs`` as claimed, each agent's outcome (as in
    :class:`~metalearn._worker.BatchResult`) and the errors of those that raised. Keeps
    the newest ``keep`` runs (pruning every ``min(keep, 100)`` runs, so between ``keep``
    and twice as many stay)."""
    statuses = [_STATUS_OF.get(outcomes.get(job.agent_id, "lost"), "cancelled") for job in jobs]
    first_error = next(iter((errors or {}).values()), None)
    row = {
        "owner": owner,
        "agents": json.dumps([job.agent_id for job in jobs]),
        "agent_count": len(jobs),
        "plans": sum(job.plans for job in jobs),
        "priority": max(job.priority for job in jobs),
        "enqueued_at_us": min(epoch_micros(job.enqueued_at) for job in jobs),
        "claimed_at_us": min(epoch_micros(job.claimed_at) for job in jobs),
        "finished_at_us": epoch_micros(now or datetime.now(UTC)),
        "attempts": max(job.attempts for job in jobs),
        "status": max(statuses, key=RUN_STATUSES.index),
        "analyses": statuses.count("completed"),
        "error": None if first_error is None else first_error[:_MAX_ERROR_CHARS],
    }
    with database.begin() as conn:
        run_id = conn.execute(insert(job_runs).values(row).returning(_c.run_id)).scalar_one()
        if run_id % min(keep, _PRUNE_EVERY) == 0:
            conn.execute(delete(job_runs).where(_c.run_id <= run_id - keep))


def run_metrics(
    database: Database, *, since: datetime | None = None, limit: int = 1_000
) -> pd.DataFrame:
    """The newest ``limit`` runs that ended at or after ``since``, oldest first, with the
    columns of :data:`~metalearn._queue.METRIC_COLUMNS` (``job_id`` is the run's id)."""
    query = select(job_runs).order_by(_c.run_id.desc()).limit(limit)
    if since is not None:
        query = query.where(_c.finished_at_us >= epoch_micros(since))
    with database.connect() as conn:
        rows = [dict(row) for row in conn.execute(query).mappings()][::-1]
    return metrics_frame(_metric_record(row) for row in rows)


def _metric_record(row: dict[str, Any]) -> dict[str, Any]:
    """A run log row as a metrics row (the columns of :meth:`AnalysisQueue.metrics`)."""
    return {
        "job_id": row["run_id"],
        "agents": tuple(json.loads(row["agents"])),
        "plans": row["plans"],
        "priority": row["priority"],
        "submitted_at": from_epoch_micros(row["enqueued_at_us"]),
        "started_at": from_epoch_micros(row["claimed_at_us"]),
        "finished_at": from_epoch_micros(row["finished_at_us"]),
        "wait_ms": (row["claimed_at_us"] - row["enqueued_at_us"]) / 1000,
        "run_ms": (row["finished_at_us"] - row["claimed_at_us"]) / 1000,
        "attempts": row["attempts"],
        "status": row["status"],
        "error": row["error"],
    }


def run_counts(database: Database, *, since: datetime | None = None) -> dict[str, int]:
    """Runs by status since ``since`` (``completed``, ``retrying``, ``failed``,
    ``cancelled``), ``analyses`` (agents analysed and stored) and ``coalesced`` (plans
    that joined a job already waiting: each run's plans beyond one per agent)."""
    query = select(
        *(func.sum(case((_c.status == status, 1), else_=0)) for status in RUN_STATUSES),
        func.sum(_c.analyses),
        func.sum(_c.plans - _c.agent_count),
    )
    if since is not None:
        query = query.where(_c.finished_at_us >= epoch_micros(since))
    with database.connect() as conn:
        values = conn.execute(query).one()
    names = [*RUN_STATUSES, "analyses", "coalesced"]
    return {name: int(value or 0) for name, value in zip(names, values, strict=True)}
