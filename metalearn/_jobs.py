"""The durable analysis queue: one job per agent in ``metalearn_jobs``, claimed under a lease.

A job's life::

    new plan ──▶ pending ──claim──▶ running ──complete──▶ done ──new plan──▶ pending, generation + 1
                    ▲                  │
                    └──────────────────┤  complete with a newer plan, fail with attempts left
                                       │  (after a backoff), release (the attempt not counted)
                                       └──fail, no attempts left──▶ failed ──new plan──▶ pending

A running job whose lease expired (its worker died or hung) is claimable as it is.

:func:`enqueue` runs in the caller's transaction, so a plan and its agent's job commit
together. Every other function opens one short write transaction of its own. No agent is
held by two owners at once: a claim takes the rows it hands out under a lock (PostgreSQL:
``SELECT ... FOR UPDATE SKIP LOCKED``, so claimers pass each other's rows by; SQLite:
``BEGIN IMMEDIATE``, the database write lock) and every later step of the job checks, in the
same statement or under the same lock, that its caller still owns it. A worker that stops
renewing its lease loses the job to the next claim once the lease expires, and its own
:func:`complete` then reports ``"lost"`` instead of writing.

Where several rows are locked at once they are locked in ``agent_id`` order (enqueue,
renew, release) or skipped when busy (claim), so writers never deadlock each other.

>>> database = Database("sqlite://")
>>> with database.begin() as conn:  # e.g. the transaction that records the plans
...     enqueue(conn, [("agent-a", 0, 1, 1), ("agent-b", 5, 2, 1), ("agent-a", 0, 3, 1)])
>>> claimed = claim(database, "worker-1", batch_size=10, lease_seconds=60)
>>> [(job.agent_id, job.last_seq, job.plans) for job in claimed]  # priority first
[('agent-b', 2, 1), ('agent-a', 3, 2)]
>>> complete(database, "worker-1", "agent-a", covered_seq=3)
'done'
>>> fail(database, "worker-1", "agent-b", "ValueError: boom", max_attempts=3, backoff_s=1.0)
'retrying'
>>> {k: job_stats(database)[k] for k in ("pending", "running", "done")}
{'pending': 1, 'running': 0, 'done': 1}
>>> database.close()
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import pandas as pd
from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    case,
    func,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.elements import KeyedColumnElement

from metalearn._checks import positive_int
from metalearn._database import Database
from metalearn._errors import InvalidArgumentError
from metalearn._schema import JOB_STATES, jobs
from metalearn._types import epoch_micros, from_epoch_micros

__all__ = [
    "JOB_COLUMNS",
    "ClaimedJob",
    "Completion",
    "Failure",
    "JobRequest",
    "claim",
    "complete",
    "enqueue",
    "fail",
    "job_stats",
    "job_table",
    "make_owner",
    "release",
    "renew",
    "settle",
]

logger = logging.getLogger("metalearn.jobs")

Completion = Literal["done", "requeued", "lost"]
"""What :func:`complete` did: the job is done, pending again for a newer plan, or no longer
the caller's (its lease was lost to another worker; nothing was written)."""
Failure = Literal["retrying", "failed", "lost"]
"""What :func:`fail` did: pending after a backoff, failed for good, or not the caller's."""

JOB_COLUMNS = [
    "agent_id", "state", "priority", "plans", "late_plans", "attempts", "generation",
    "last_seq", "owner", "enqueued_at", "waiting_since", "wait_s", "claimed_at",
    "lease_age_s", "lease_expires_at", "lease_left_s", "not_before", "finished_at", "error",
]  # fmt: skip
"""The columns of :func:`job_table`, in order."""

_c = jobs.c
_US = 1_000_000
_UPSERT_CHUNK = 1_000  # rows per INSERT: well under SQLite's and PostgreSQL's parameter limits
_MAX_BACKOFF_S = 86_400.0
_MAX_ERROR_CHARS = 10_000
_NO_LEASE: dict[str, Any] = {"owner": None, "lease_expires_at_us": None}
_COUNT_COLUMNS = ("priority", "plans", "late_plans", "attempts", "generation", "last_seq")


class JobRequest(NamedTuple):
    """One item for :func:`enqueue`: ``plans`` new plans of an agent, the newest ``last_seq``."""

    agent_id: str
    priority: int
    last_seq: int
    plans: int = 1


@dataclass(frozen=True)
class ClaimedJob:
    """A job as :func:`claim` handed it out: the worker analyses ``agent_id`` through at least
    ``last_seq`` and holds it until ``lease_expires_at`` unless it renews.

    ``attempts`` counts this claim; ``reclaimed_from`` names the owner whose lease had
    expired (``None`` for a pending job).
    """

    agent_id: str
    owner: str
    priority: int
    last_seq: int
    plans: int
    attempts: int
    generation: int
    enqueued_at: datetime
    claimed_at: datetime
    lease_expires_at: datetime
    reclaimed_from: str | None = None

    @property
    def wait_ms(self) -> float:
        """Milliseconds from the first enqueue of its plans to this claim."""
        return (self.claimed_at - self.enqueued_at).total_seconds() * 1000


def make_owner() -> str:
    """A new owner name for a worker: host, process id and a random part (unique per call)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


# -- enqueueing, in the caller's transaction -------------------------------------------


def enqueue(
    conn: Connection, items: Iterable[tuple[str, int, int, int]], *, now: datetime | None = None
) -> None:
    """Queue each (agent_id, priority, last_seq, plans) item, inside the caller's transaction.

    An agent without a job gets a pending one. Otherwise the plans coalesce into its row:
    a pending job takes the higher priority, the newer ``last_seq`` and the extra plans
    and keeps its first enqueue time; a running job does the same but counts the plans as
    ``late_plans`` (its run may not cover them, and then :func:`complete` leaves it
    pending); a done or failed job is re-armed: pending, a new ``generation``, attempts
    and error cleared. One ``INSERT ... ON CONFLICT DO UPDATE``, so concurrent writers
    of the same new agent cannot both insert.
    """
    merged = _merge(items)
    moment = _micros(now)
    rows = [_new_row(merged[agent], moment) for agent in sorted(merged)]  # lock order
    for start in range(0, len(rows), _UPSERT_CHUNK):
        conn.execute(_upsert(conn, rows[start : start + _UPSERT_CHUNK]))


def _merge(items: Iterable[tuple[str, int, int, int]]) -> dict[str, JobRequest]:
    """One request per agent (one statement may not touch a row twice)."""
    merged: dict[str, JobRequest] = {}
    for agent_id, priority, last_seq, plans in items:
        seen = merged.get(agent_id)
        if seen is not None:
            priority, last_seq = max(priority, seen.priority), max(last_seq, seen.last_seq)
            plans += seen.plans
        merged[agent_id] = JobRequest(agent_id, priority, last_seq, plans)
    return merged


def _new_row(request: JobRequest, moment: int) -> dict[str, Any]:
    return {
        "agent_id": request.agent_id,
        "state": "pending",
        "priority": request.priority,
        "enqueued_at_us": moment,
        "last_seq": request.last_seq,
        "plans": request.plans,
        "attempts": 0,
        "not_before_us": 0,
        "late_plans": 0,
        "generation": 0,
    }


def _upsert(conn: Connection, rows: list[dict[str, Any]]) -> Any:
    if conn.dialect.name == "postgresql":
        on_pg = postgresql.insert(jobs).values(rows)
        return on_pg.on_conflict_do_update(
            index_elements=[_c.agent_id], set_=_coalesced(on_pg.excluded)
        )
    if conn.dialect.name == "sqlite":
        on_sqlite = sqlite.insert(jobs).values(rows)
        return on_sqlite.on_conflict_do_update(
            index_elements=[_c.agent_id], set_=_coalesced(on_sqlite.excluded)
        )
    raise InvalidArgumentError(
        f"the job queue supports SQLite and PostgreSQL stores, not {conn.dialect.name!r}"
    )


def _coalesced(
    new: ReadOnlyColumnCollection[str, KeyedColumnElement[Any]],
) -> dict[str, ColumnElement[Any]]:
    """The existing row merged with a new request (SET sees the row as it was)."""
    rearm = _c.state.in_(("done", "failed"))
    running = _c.state == "running"
    return {
        "state": case((rearm, "pending"), else_=_c.state),
        "priority": case((rearm | (new.priority > _c.priority), new.priority), else_=_c.priority),
        "enqueued_at_us": case((rearm, new.enqueued_at_us), else_=_c.enqueued_at_us),
        "last_seq": case((new.last_seq > _c.last_seq, new.last_seq), else_=_c.last_seq),
        "plans": case((rearm, new.plans), (running, _c.plans), else_=_c.plans + new.plans),
        "late_plans": case((running, _c.late_plans + new.plans), else_=_c.late_plans),
        "late_since_us": case(
            (running, func.coalesce(_c.late_since_us, new.enqueued_at_us)),
            else_=_c.late_since_us,
        ),
        "attempts": case((rearm, 0), else_=_c.attempts),
        "not_before_us": case((rearm, 0), else_=_c.not_before_us),
        "error": case((rearm, null()), else_=_c.error),
        # A failure is forgotten once a new plan re-arms the job; a success is kept.
        "finished_at_us": case((_c.state == "failed", null()), else_=_c.finished_at_us),
        "generation": case((rearm, _c.generation + 1), else_=_c.generation),
    }


# -- claiming and holding --------------------------------------------------------------


def claim(
    database: Database,
    owner: str,
    *,
    batch_size: int,
    lease_seconds: float,
    max_attempts: int | None = None,
    min_interval_s: float = 0.0,
    now: datetime | None = None,
) -> list[ClaimedJob]:
    """Claim up to ``batch_size`` jobs for ``owner``: highest priority first, then oldest.

    Claimable are pending jobs past their backoff whose last run ended at least
    ``min_interval_s`` ago (so an agent whose plans keep coming is analysed at most that
    often, its plans coalescing meanwhile), and running jobs whose lease expired (their
    worker stopped renewing: died or hung). Each claimed job becomes running,
    owned by ``owner`` until ``now + lease_seconds``, with one more attempt. With
    ``max_attempts``, an expired job that already used them all is marked failed
    (logged) instead of being run again, so an agent that kills its workers stops.
    """
    owner = _owner(owner)
    limit = positive_int("batch_size", batch_size)
    lease = _duration_us("lease_seconds", lease_seconds)
    moment = _micros(now)
    due = _due(moment, _interval_us(min_interval_s))
    if not _any_due(database, due):
        return []
    with database.begin() as conn:
        rows = [dict(row) for row in conn.execute(_claimable(due, limit)).mappings()]
        exhausted = [r for r in rows if _exhausted(r, max_attempts)]
        for row in exhausted:
            _fail_abandoned(conn, row, moment)
        rows = [r for r in rows if not _exhausted(r, max_attempts)]
        if rows:
            conn.execute(
                update(jobs)
                .where(_c.agent_id.in_([r["agent_id"] for r in rows]))
                .values(
                    state="running",
                    owner=owner,
                    claimed_at_us=moment,
                    lease_expires_at_us=moment + lease,
                    attempts=_c.attempts + 1,
                    plans=_c.plans + _c.late_plans,
                    late_plans=0,
                    late_since_us=None,
                )
            )
    return [_claimed(r, owner, moment, lease) for r in rows]


def _due(moment: int, interval_us: int) -> ColumnElement[bool]:
    rested = or_(_c.finished_at_us.is_(None), _c.finished_at_us <= moment - interval_us)
    return or_(
        and_(_c.state == "pending", _c.not_before_us <= moment, rested),
        and_(_c.state == "running", _c.lease_expires_at_us <= moment),
    )


def _interval_us(seconds: float) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise InvalidArgumentError(
            f"min_interval_s must be a number of seconds >= 0, not {seconds!r}"
        )
    return round(seconds * _US)


def _any_due(database: Database, due: ColumnElement[bool]) -> bool:
    """Whether a claim could find work: a plain read, so an idle worker polling the queue
    never takes SQLite's write lock away from the plans being recorded."""
    with database.connect() as conn:
        return conn.execute(select(_c.agent_id).where(due).limit(1)).first() is not None


def _claimable(due: ColumnElement[bool], limit: int) -> Any:
    return (
        select(jobs)
        .where(due)
        .order_by(_c.priority.desc(), _c.enqueued_at_us, _c.agent_id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # SQLite: nothing (BEGIN IMMEDIATE holds the lock)
    )


def _exhausted(row: Mapping[str, Any], max_attempts: int | None) -> bool:
    return (
        max_attempts is not None and row["state"] == "running" and (row["attempts"] >= max_attempts)
    )


def _fail_abandoned(conn: Connection, row: Mapping[str, Any], moment: int) -> None:
    error = (
        f"worker {row['owner']!r} stopped renewing its lease on attempt {row['attempts']} "
        "(it died or hung); no attempts are left"
    )
    logger.error("analysis job of %r failed: %s", row["agent_id"], error)
    conn.execute(
        update(jobs)
        .where(_c.agent_id == row["agent_id"])
        .values({**_ended(), "state": "failed", "error": error, "finished_at_us": moment})
    )


def _claimed(row: Mapping[str, Any], owner: str, moment: int, lease: int) -> ClaimedJob:
    return ClaimedJob(
        agent_id=row["agent_id"],
        owner=owner,
        priority=int(row["priority"]),
        last_seq=int(row["last_seq"]),
        plans=int(row["plans"] + row["late_plans"]),
        attempts=int(row["attempts"]) + 1,
        generation=int(row["generation"]),
        enqueued_at=from_epoch_micros(row["enqueued_at_us"]),
        claimed_at=from_epoch_micros(moment),
        lease_expires_at=from_epoch_micros(moment + lease),
        reclaimed_from=row["owner"] if row["state"] == "running" else None,
    )


def renew(
    database: Database,
    owner: str,
    agents: Collection[str],
    *,
    lease_seconds: float,
    now: datetime | None = None,
) -> frozenset[str]:
    """Extend ``owner``'s leases on ``agents`` to ``now + lease_seconds``; returns the agents
    it still holds. A lost lease (reclaimed by another worker) is logged and left out,
    not raised: the caller should stop working on it. An expired lease that nobody
    reclaimed yet is still held, and renewed.
    """
    lease = _duration_us("lease_seconds", lease_seconds)
    moment = _micros(now)
    with database.begin() as conn:
        held = _lock_held(conn, owner, agents)
        if held:
            conn.execute(
                update(jobs).where(_c.agent_id.in_(held)).values(lease_expires_at_us=moment + lease)
            )
    lost = sorted(set(agents) - set(held))
    if lost:
        logger.warning("worker %r lost its lease on %s", owner, lost)
    return frozenset(held)


def _held_by(owner: str) -> ColumnElement[bool]:
    return and_(_c.owner == owner, _c.state == "running")


def _lock_held(conn: Connection, owner: str, agents: Collection[str] | None) -> list[str]:
    """The agents (of ``agents``, or all) that ``owner`` holds, locked in agent order."""
    query = select(_c.agent_id).where(_held_by(owner))
    if agents is not None:
        query = query.where(_c.agent_id.in_(list(agents)))
    return list(conn.execute(query.order_by(_c.agent_id).with_for_update()).scalars())


def _ended() -> dict[str, Any]:
    """The columns every end of a run sets: no owner, and late plans folded in."""
    return {**_NO_LEASE, "plans": _c.plans + _c.late_plans, "late_plans": 0, "late_since_us": None}


# -- ending a run ----------------------------------------------------------------------


def complete(
    database: Database,
    owner: str,
    agent_id: str,
    *,
    covered_seq: int,
    now: datetime | None = None,
) -> Completion:
    """Record that ``owner`` analysed ``agent_id`` through ``covered_seq`` (the highest plan
    seq the analysis saw).

    The job is ``"done"`` if that covers the agent's newest plan; if a newer plan arrived
    meanwhile it is ``"requeued"``: pending again at once, keeping its (possibly raised)
    priority, with attempts reset, counting the plans that came during the run and
    waiting since the first of them. ``"lost"``: ``owner`` no longer holds the job, and
    nothing was written.
    """
    moment = _micros(now)
    covered = _c.last_seq <= covered_seq
    with database.begin() as conn:
        state = conn.execute(
            update(jobs)
            .where(_c.agent_id == agent_id, _held_by(owner))
            .values(
                {
                    **_ended(),
                    "state": case((covered, "done"), else_="pending"),
                    # Not covered: what waits is the plans that came during the run.
                    "plans": case(
                        (covered | (_c.late_plans == 0), _c.plans + _c.late_plans),
                        else_=_c.late_plans,
                    ),
                    "enqueued_at_us": case(
                        (covered, _c.enqueued_at_us),
                        else_=func.coalesce(_c.late_since_us, _c.enqueued_at_us),
                    ),
                    "attempts": 0,
                    "not_before_us": 0,
                    "error": None,
                    "finished_at_us": moment,
                }
            )
            .returning(_c.state)
        ).scalar_one_or_none()
    if state is None:
        logger.warning("worker %r completed %r but no longer held it", owner, agent_id)
        return "lost"
    return "done" if state == "done" else "requeued"


def fail(
    database: Database,
    owner: str,
    agent_id: str,
    error: str,
    *,
    max_attempts: int,
    backoff_s: float,
    now: datetime | None = None,
) -> Failure:
    """Record that ``owner``'s run of ``agent_id`` failed with ``error`` (its text).

    With attempts left (fewer than ``max_attempts`` so far) the job is ``"retrying"``:
    pending, claimable from ``now + backoff_s * 2**(attempts - 1)`` (at most a day).
    Otherwise it is ``"failed"``, with the error kept for status until the agent's next
    plan re-arms it (plans that came during the failed run wait with it). ``"lost"``:
    ``owner`` no longer holds the job; nothing is written.
    """
    limit = positive_int("max_attempts", max_attempts)
    if not backoff_s >= 0:
        raise InvalidArgumentError(f"backoff_s must be >= 0 seconds, not {backoff_s!r}")
    moment = _micros(now)
    with database.begin() as conn:
        attempts = conn.execute(
            select(_c.attempts).where(_c.agent_id == agent_id, _held_by(owner)).with_for_update()
        ).scalar_one_or_none()
        if attempts is None:
            logger.warning("worker %r failed %r but no longer held it", owner, agent_id)
            return "lost"
        values: dict[str, Any]
        if attempts < limit:
            delay = min(backoff_s * 2 ** (attempts - 1), _MAX_BACKOFF_S)
            values = {"state": "pending", "not_before_us": moment + round(delay * _US)}
        else:
            values = {"state": "failed", "finished_at_us": moment}
        values |= {**_ended(), "error": str(error)[:_MAX_ERROR_CHARS]}
        conn.execute(update(jobs).where(_c.agent_id == agent_id).values(values))
    return "retrying" if attempts < limit else "failed"


def release(database: Database, owner: str) -> list[str]:
    """Give back every job ``owner`` holds (say, on SIGTERM): pending at once, the attempt
    not counted against it. Returns the released agents."""
    with database.begin() as conn:
        held = _lock_held(conn, owner, None)
        if held:
            conn.execute(
                update(jobs)
                .where(_c.agent_id.in_(held))
                .values(
                    {
                        **_ended(),
                        "state": "pending",
                        "attempts": case((_c.attempts > 0, _c.attempts - 1), else_=0),
                    }
                )
            )
    return held


def settle(
    database: Database,
    agents: Collection[str],
    *,
    covered_seq: int,
    now: datetime | None = None,
) -> list[str]:
    """Mark done the waiting jobs of ``agents`` that an analysis run outside the queue
    (in the app's own threads) covered through ``covered_seq``; returns those agents.

    Only pending and failed jobs whose newest plan is covered are settled: a job running
    under another worker's lease is left to it, and one with a newer plan keeps waiting.
    """
    if not agents:
        return []
    moment = _micros(now)
    with database.begin() as conn:
        settled = conn.execute(
            update(jobs)
            .where(
                _c.agent_id.in_(sorted(agents)),
                _c.state.in_(("pending", "failed")),
                _c.last_seq <= covered_seq,
            )
            .values(state="done", attempts=0, not_before_us=0, error=None, finished_at_us=moment)
            .returning(_c.agent_id)
        )
        return sorted(settled.scalars())


# -- looking at the queue --------------------------------------------------------------


def job_stats(database: Database, *, now: datetime | None = None) -> dict[str, int | float | None]:
    """Counts of the queue, JSON-safe.

    ``pending``, ``running``, ``failed``, ``done`` (jobs by state); ``expired`` (running
    jobs whose lease has passed: their worker is late or dead); ``plans_waiting`` (plans
    in pending jobs plus those that arrived during running ones); ``oldest_wait_s``
    (seconds since the oldest waiting plan was enqueued, ``None`` when nothing waits);
    ``done_last_hour`` (agents whose latest run succeeded within the last hour).
    """
    moment = _micros(now)
    pending = _c.state == "pending"
    waiting_since = case((pending, _c.enqueued_at_us), else_=_c.late_since_us)
    expired = and_(_c.state == "running", _c.lease_expires_at_us <= moment)
    recent = and_(_c.state != "failed", _c.finished_at_us >= moment - 3600 * _US)
    totals = select(
        func.sum(case((expired, 1), else_=0)),
        func.sum(case((pending, _c.plans), else_=_c.late_plans)),
        func.min(case((_c.state.in_(("pending", "running")), waiting_since))),
        func.sum(case((recent, 1), else_=0)),
    )
    with database.connect() as conn:
        by_state = select(_c.state, func.count()).group_by(_c.state)
        counts = {str(state): int(n) for state, n in conn.execute(by_state)}
        expired_n, waiting, oldest, recent_n = conn.execute(totals).one()
    stats: dict[str, int | float | None] = {s: int(counts.get(s, 0)) for s in JOB_STATES}
    stats["expired"] = int(expired_n or 0)
    stats["plans_waiting"] = int(waiting or 0)
    stats["oldest_wait_s"] = None if oldest is None else (moment - int(oldest)) / _US
    stats["done_last_hour"] = int(recent_n or 0)
    return stats


def job_table(
    database: Database,
    *,
    states: Sequence[str] = ("running", "pending", "failed"),
    now: datetime | None = None,
) -> pd.DataFrame:
    """One row per job in ``states``, in that order of states, then in claim order.

    Columns (:data:`JOB_COLUMNS`): agent_id, state, priority, plans (covered by the
    waiting or running work), late_plans (arrived while it runs), attempts, generation,
    last_seq, owner; enqueued_at, waiting_since (the oldest plan not yet being analysed:
    enqueued_at when pending, the first late plan when running), wait_s (now minus
    waiting_since), claimed_at (last claim), lease_age_s and lease_expires_at and
    lease_left_s (running only; a negative ``lease_left_s`` is an expired lease),
    not_before (retry backoff), finished_at (the last success, or the final failure) as
    UTC timestamps or seconds, and error (the last failure's text).
    """
    unknown = sorted(set(states) - set(JOB_STATES))
    if unknown:
        raise InvalidArgumentError(f"unknown job states {unknown}; use some of {JOB_STATES}")
    moment = _micros(now)
    order = case({s: i for i, s in enumerate(states)}, value=_c.state)
    query = (
        select(jobs)
        .where(_c.state.in_(list(states)))
        .order_by(order, _c.priority.desc(), _c.enqueued_at_us, _c.agent_id)
    )
    with database.connect() as conn:
        rows = [dict(row) for row in conn.execute(query).mappings()]
    return _status_frame(rows, moment)


def _status_frame(rows: list[dict[str, Any]], moment: int) -> pd.DataFrame:
    def column(name: str, dtype: str) -> pd.Series:
        return pd.Series([r[name] for r in rows], dtype=dtype)

    def stamps(values: list[int | None]) -> pd.Series:
        return pd.Series(pd.to_datetime(pd.array(values, dtype="Int64"), unit="us", utc=True))

    def seconds(values: list[int | None]) -> pd.Series:
        return pd.Series([None if v is None else v / _US for v in values], dtype="float64")

    waiting = [r["enqueued_at_us"] if r["state"] == "pending" else r["late_since_us"] for r in rows]
    lease = [r["lease_expires_at_us"] for r in rows]
    frame = pd.DataFrame(
        {
            **{name: column(name, "str") for name in ("agent_id", "state", "owner")},
            **{name: column(name, "int64") for name in _COUNT_COLUMNS},
            "enqueued_at": stamps([r["enqueued_at_us"] for r in rows]),
            "waiting_since": stamps(waiting),
            "wait_s": seconds([None if w is None else moment - w for w in waiting]),
            "claimed_at": stamps([r["claimed_at_us"] for r in rows]),
            "lease_age_s": seconds(
                [moment - r["claimed_at_us"] if r["state"] == "running" else None for r in rows]
            ),
            "lease_expires_at": stamps(lease),
            "lease_left_s": seconds([None if v is None else v - moment for v in lease]),
            "not_before": stamps([r["not_before_us"] or None for r in rows]),
            "finished_at": stamps([r["finished_at_us"] for r in rows]),
            "error": column("error", "str"),
        }
    )
    return frame[JOB_COLUMNS]


# -- checks and clocks -----------------------------------------------------------------


def _micros(now: datetime | None) -> int:
    return epoch_micros(now if now is not None else datetime.now(UTC))


def _duration_us(name: str, seconds: float) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise InvalidArgumentError(f"{name} must be a number of seconds > 0, not {seconds!r}")
    return round(seconds * _US)


def _owner(owner: str) -> str:
    if not isinstance(owner, str) or not owner:
        raise InvalidArgumentError(
            f"owner must be a non-empty string (see make_owner()), not {owner!r}"
        )
    return owner
