"""AnalysisWorker: runs the analysis jobs of the durable queue (what ``metalearn worker`` runs).

A worker claims a batch of agents from ``metalearn_jobs`` under a lease, analyses them
together with :meth:`MetaLearningService.snapshot_agents_sync` (one snapshot per agent,
written to the store) and then ends each agent's job::

    claim ──▶ refresh the warehouse, read its watermark W ──▶ snapshot_agents_sync ──▶ complete
      │          (meanwhile a companion thread renews the leases every lease_seconds / 3)
      ├── the analysis raised: each agent again alone; one that fails alone ──▶ fail
      │   (pending again after a backoff while attempts are left, else failed with its error)
      ├── an agent's lease went to another worker ──▶ its job is left alone (not completed)
      └── interrupted by stop() ──▶ release (pending again, the attempt not counted)

Every batch ends with a row in the run log (:mod:`metalearn._job_runs`), which the
queue's metrics read from any process. The snapshot is written before the job is
completed, so a worker dying in between only repeats an analysis; one dying earlier
stops renewing its lease, which expires, and the next claim takes the job over.

``covered_seq`` (what :func:`~metalearn._jobs.complete` compares with the job's newest
plan) is W: the watermark after the worker's own refresh, read before the analysis. The
analysis then reads a snapshot at least that new (the watermark only grows), so a job is
done only for plans its analysis saw; and W is at least every claimed job's ``last_seq``
(that plan committed before the claim, and a refresh copies through the store's last
seq). A plan mirrored between the two reads only makes the job run once more.

With ``concurrency`` above one, :meth:`~AnalysisWorker.run` runs that many batches at
once on threads, each under its own owner name. Only one process may write a persisted
warehouse file: a worker whose file is in use mirrors into a numbered file beside it, or
in memory (see :class:`~metalearn.Warehouse`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from metalearn._checks import positive_int
from metalearn._database import Database
from metalearn._errors import AnalysisInterrupted, InvalidArgumentError
from metalearn._interrupt import Interrupt
from metalearn._job_runs import record_run
from metalearn._jobs import (
    ClaimedJob,
    claim,
    complete,
    fail,
    job_stats,
    job_table,
    make_owner,
    release,
    renew,
)
from metalearn._queries import BackgroundOptions
from metalearn._service import MetaLearningService
from metalearn._store import HistoryStore

__all__ = [
    "MEMORY",
    "AnalysisWorker",
    "BatchResult",
    "Outcome",
    "queue_status",
    "snapshot_through",
]

logger = logging.getLogger("metalearn.worker")

Outcome = Literal["done", "requeued", "retrying", "failed", "lost", "released"]
"""How a claimed agent's job ended (see :class:`BatchResult`)."""

MEMORY = ":memory:"
"""``warehouse_path`` for a warehouse in memory, even beside a SQLite file."""

_TICK_S = 0.05  # how often waiting threads look at the stop flags
# Longer than the first sleeps of SQLite's busy handler (1, 2, 5, 10, 15, 20, 25 ms), so a
# writer of another process that is polling for the lock wakes within the gap.
_SQLITE_WRITE_PAUSE_S = 0.03
_PAUSE_AFTER_ERROR_S = (0.5, 30.0)  # first and longest pause after a failing claim
_COUNTERS = ("batches", "claimed", "completed", "requeued", "retried", "failed", "released",
             "lost", "errors")  # fmt: skip


@dataclass(frozen=True)
class BatchResult:
    """What :meth:`AnalysisWorker.run_once` did with one batch.

    ``agents`` in claim order (empty when nothing was due); ``outcomes`` per agent:
    ``done``, ``requeued`` (a newer plan arrived meanwhile: pending again), ``retrying`` or
    ``failed`` (its analysis raised; ``errors`` has the text), ``lost`` (its lease went to
    another worker, so it was not completed), ``released`` (interrupted by a stop: pending
    again). ``covered_seq`` is the watermark the analysis read (None if it got no
    further); ``seconds`` the time from claim to the last outcome.
    """

    agents: tuple[str, ...] = ()
    outcomes: Mapping[str, Outcome] = field(default_factory=dict)
    covered_seq: int | None = None
    errors: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0


class _Lease:
    """A batch's companion thread: renews its leases every ``lease_seconds / 3`` and passes
    a stop with interrupt on to the analysis (the worker's stop flags are plain attributes,
    so that :meth:`AnalysisWorker.stop` is safe in a signal handler)."""

    def __init__(
        self, worker: AnalysisWorker, owner: str, agents: Iterable[str], interrupt: Interrupt
    ) -> None:
        self._worker, self._owner, self.interrupt = worker, owner, interrupt
        self._held = set(agents)
        self.lost: set[str] = set()
        self._lock = threading.Lock()  # renewals and the end of a job never interleave
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"metalearn-lease {owner}")

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    @contextmanager
    def ending(self, agent_id: str) -> Iterator[bool]:
        """While the caller ends ``agent_id``'s job: whether its lease is still held."""
        with self._lock:
            yield agent_id not in self.lost
            self._held.discard(agent_id)

    def _run(self) -> None:
        interval = self._worker.lease_seconds / 3
        due = time.monotonic() + interval
        while not self._done.wait(_TICK_S):
            if self._worker.interrupt_requested and not self.interrupt.requested:
                self.interrupt.request()
            if time.monotonic() >= due:
                self._renew()
                due = time.monotonic() + interval

    def _renew(self) -> None:
        with self._lock:
            agents = sorted(self._held - self.lost)
            if not agents:
                return
            try:
                held = renew(
                    self._worker.database, self._owner, agents,
                    lease_seconds=self._worker.lease_seconds,
                )  # fmt: skip
            except Exception as error:  # the lease may still be saved by the next renewal
                self._worker._failed(f"renewing the leases of {agents}", error)
                return
            self.lost |= set(agents) - held


class AnalysisWorker:
    """Runs the analysis jobs recorded plans queue in the store (see the module docstring).

    ``db`` is a :class:`MetaLearningService` (used as it is; not closed), a
    :class:`HistoryStore` (borrowed), or a URL or engine for a store of the worker's own
    (``None``: ``$METALEARN_DB_URL``, else the default SQLite file). The warehouse is
    persisted at ``warehouse_path``, by default beside a SQLite store file
    (``<file>.warehouse.duckdb``) and in memory for other stores; :data:`MEMORY` keeps it
    in memory. A file in use by another worker is never shared: this one takes a numbered
    file beside it, or memory.

    Each claim takes up to ``batch_size`` agents under a lease of ``lease_seconds``
    (renewed while the batch runs); an agent is analysed again only ``min_interval_s``
    after its last run ended, so that the plans of a busy agent coalesce and the store
    sees a bounded rate of snapshot writes (a plan waits at most about that long more).
    The warehouse it makes uses at most ``threads`` DuckDB threads (default 1, so that the
    apps on the machine keep a core; None: one per core).
    An analysis that raises is retried with backoff
    (``retry_backoff_s`` x 2^(attempt-1)) up to ``max_attempts`` claims, then failed with
    its error; ``options`` (:class:`BackgroundOptions`) are the analysis options
    (default: those of :meth:`MetaLearningService.snapshot_agents_sync`). An idle worker
    looks for due jobs every ``poll_s`` with a plain read, which takes no write lock.

    :meth:`run` runs ``concurrency`` batches at a time until :meth:`stop`; :meth:`run_once`
    runs one batch in the calling thread. :meth:`stats` counts what happened; every
    failure is logged on ``metalearn.worker`` and counted.

    >>> from datetime import datetime, timedelta, timezone
    >>> from metalearn import Plan
    >>> store = HistoryStore("sqlite://")
    >>> start = datetime(2026, 3, 1, tzinfo=timezone.utc)
    >>> for plan_id in ("p-1", "p-2"):  # each recorded plan queues its agent's job
    ...     _ = store.record_plan(Plan(plan_id, "support-bot", "succeeded", start,
    ...                                start + timedelta(seconds=2), steps=[{"tool": "search"}]))
    >>> with AnalysisWorker(store) as worker:
    ...     result = worker.run_once()
    ...     nothing_due = worker.run_once()
    >>> dict(result.outcomes), result.covered_seq, nothing_due.agents
    ({'support-bot': 'done'}, 2, ())
    >>> store.latest_snapshot("support-bot")[0]["through_seq"]
    2
    >>> store.close()
    """

    def __init__(
        self,
        db: MetaLearningService | HistoryStore | Engine | URL | str | None = None,
        *,
        batch_size: int = 16,
        concurrency: int = 1,
        lease_seconds: float = 30.0,
        min_interval_s: float = 2.0,
        threads: int | None = 1,
        warehouse_path: str | Path | None = None,
        options: BackgroundOptions | None = None,
        poll_s: float = 0.5,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.5,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.batch_size = positive_int("batch_size", batch_size, what="agents per claim")
        self.concurrency = positive_int("concurrency", concurrency, what="batches at once")
        self.max_attempts = positive_int("max_attempts", max_attempts)
        self.lease_seconds = _seconds("lease_seconds", lease_seconds, zero=False)
        self.min_interval_s = _seconds("min_interval_s", min_interval_s, zero=True)
        self.poll_s = _seconds("poll_s", poll_s, zero=False)
        self.retry_backoff_s = _seconds("retry_backoff_s", retry_backoff_s, zero=True)
        self.stop_timeout_s = _seconds("stop_timeout_s", stop_timeout_s, zero=True)
        if options is not None and not isinstance(options, BackgroundOptions):
            raise InvalidArgumentError(
                f"options must be BackgroundOptions (or None), not {type(options).__name__}"
            )
        self.options = options
        if threads is not None:
            positive_int("threads", threads, what="DuckDB threads")
        self.service, self._owned_store = _service_for(db, warehouse_path)
        self._owned_service = self.service is not db
        if threads is not None and self._owned_service:
            self.service.warehouse.limit_threads(threads)
        self.store = self.service.store
        # The store's own Database: this process's SQLite writers (renewals, completions,
        # snapshots) then queue on one lock, and an in-memory store stays serialised.
        self.database: Database = self.store.database
        if self._owned_store and self.database.sqlite_file is not None:
            # A worker of its own store (as `metalearn worker` is) gives way after each
            # write: the app's writers, in other processes, get the lock between them.
            self.database.write_in_background(_SQLITE_WRITE_PAUSE_S)
        self.owner = make_owner()
        self._owners = [self.owner, *(f"{self.owner}/{i}" for i in range(1, self.concurrency))]
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._running = 0
        self._state = "idle"
        # Plain attributes, set by stop() and read by every loop: safe in a signal handler.
        self.stop_requested = False
        self.interrupt_requested = False

    def __repr__(self) -> str:
        counts = self.stats()
        return (
            f"<AnalysisWorker {self.store.url} {counts['state']} running={counts['running']} "
            f"claimed={counts['claimed']} done={counts['completed']} failed={counts['failed']}>"
        )

    # -- running -----------------------------------------------------------------------

    def run(self) -> None:
        """Claim and analyse batches until :meth:`stop`; then release what is left.

        After a stop, running batches get ``stop_timeout_s`` to finish before they are
        interrupted (at once with ``stop(interrupt=True)``); their jobs are released.
        """
        with self._lock:
            if self._state != "idle":
                raise RuntimeError(f"this AnalysisWorker is {self._state}; make a new one")
            self._state = "running"
        logger.info("worker %s started on %s (%s)", self.owner, self.store.url, self._where())
        slots = [
            threading.Thread(target=self._loop, args=(owner,), name=f"metalearn-analysis {owner}")
            for owner in self._owners
        ]
        for slot in slots:
            slot.start()
        try:
            self._wait_for(lambda: self.stop_requested or not any(s.is_alive() for s in slots))
        except BaseException:  # KeyboardInterrupt without a handler: stop now
            self.stop(interrupt=True)
            raise
        finally:
            self._finish(slots)

    def run_once(self) -> BatchResult:
        """Claim one batch and analyse it in this thread; what happened to it.

        Claims nothing after :meth:`stop` (the result is then empty, as when no job is due).
        """
        with self._lock:
            if self._state == "running":
                raise RuntimeError("run_once() cannot run beside run() on the same worker")
        return self._claim_and_run(self.owner)

    def stop(self, *, interrupt: bool = False) -> None:
        """Stop claiming; running batches finish (``interrupt``: are interrupted at once)
        and :meth:`run` returns. Returns at once; safe from any thread and from a signal
        handler (it only sets flags that the worker's threads look at)."""
        self.stop_requested = True
        if interrupt:
            self.interrupt_requested = True

    def _loop(self, owner: str) -> None:
        """One slot of :meth:`run`: claim, analyse, repeat; pause when idle or failing."""
        errors = 0
        while not self.stop_requested:
            try:
                result = self._claim_and_run(owner)
            except Exception as error:  # the store is unreachable: log, count, back off
                self._failed(f"a batch of {owner}", error)
                first, most = _PAUSE_AFTER_ERROR_S
                self._pause(min(first * 2**errors, most))
                errors += 1
                continue
            errors = 0
            if not result.agents:
                self._pause(self.poll_s)

    def _finish(self, slots: list[threading.Thread]) -> None:
        self.stop()
        with self._lock:
            self._state = "stopping"
        deadline = time.monotonic() + self.stop_timeout_s
        self._wait_for(lambda: not any(s.is_alive() for s in slots) or time.monotonic() >= deadline)
        self.stop(interrupt=True)  # a no-op once every slot is done
        for slot in slots:
            slot.join()
        self._release_all()
        with self._lock:
            self._state = "stopped"
        logger.info("worker %s stopped: %s", self.owner, _counts_text(self.stats()))

    def _release_all(self) -> None:
        """Give back whatever a slot still holds (a batch that died on an error)."""
        for owner in self._owners:
            try:
                released = release(self.database, owner)
            except Exception as error:  # their leases expire; the next claim takes them
                self._failed(f"releasing the jobs of {owner}", error)
                continue
            if released:
                self._count("released", len(released))
                logger.warning("worker %s released %s", owner, released)

    # -- one batch ---------------------------------------------------------------------

    def _claim_and_run(self, owner: str) -> BatchResult:
        if self.stop_requested:
            return BatchResult()
        jobs = claim(
            self.database, owner, batch_size=self.batch_size,
            lease_seconds=self.lease_seconds, max_attempts=self.max_attempts,
            min_interval_s=self.min_interval_s,
        )  # fmt: skip
        if not jobs:
            return BatchResult()
        started = time.perf_counter()
        self._count("claimed", len(jobs))
        self._count("batches")
        logger.info("%s claimed %s", owner, _jobs_text(jobs))
        with self._lock:
            self._running += 1
        try:
            return self._run_batch(owner, jobs, started)
        finally:
            with self._lock:
                self._running -= 1

    def _run_batch(self, owner: str, jobs: list[ClaimedJob], started: float) -> BatchResult:
        agents = tuple(job.agent_id for job in jobs)
        outcomes: dict[str, Outcome] = {}
        errors: dict[str, str] = {}
        covered: list[int] = []
        interrupted = False
        with _Lease(self, owner, agents, Interrupt()) as lease:
            try:
                self._analyse(owner, agents, lease, outcomes, errors, covered)
            except AnalysisInterrupted:
                interrupted = True
        if interrupted:  # released once the renewals stopped
            released = set(release(self.database, owner))
            self._count("released", len(released))
            logger.warning("%s was stopped: released %s", owner, sorted(released))
            for agent in agents:  # neither completed nor released: its lease was lost
                outcomes.setdefault(agent, "released" if agent in released else "lost")
        seconds = time.perf_counter() - started
        logger.info("%s ended %s in %.2f s", owner, _outcomes_text(outcomes), seconds)
        self._log_run(owner, jobs, outcomes, errors)
        return BatchResult(agents, outcomes, min(covered, default=None), errors, seconds)

    def _log_run(
        self,
        owner: str,
        jobs: list[ClaimedJob],
        outcomes: Mapping[str, Outcome],
        errors: Mapping[str, str],
    ) -> None:
        try:
            record_run(self.database, owner, jobs, outcomes, errors)
        except Exception as error:  # the metrics miss a row; the jobs themselves are ended
            self._failed(f"logging the run of {[job.agent_id for job in jobs]}", error)

    def _analyse(
        self,
        owner: str,
        agents: tuple[str, ...],
        lease: _Lease,
        outcomes: dict[str, Outcome],
        errors: dict[str, str],
        covered: list[int],
    ) -> None:
        """Analyse ``agents`` together and end their jobs; on an error, each alone."""
        try:
            seq = self._snapshot(agents, lease.interrupt)
        except AnalysisInterrupted:
            raise
        except Exception as error:
            if len(agents) == 1:
                outcomes[agents[0]] = self._fail(owner, agents[0], error, lease)
                errors[agents[0]] = _error_text(error)
                return
            logger.warning(
                "%s: the analysis of %d agents failed (%s); analysing them one at a time",
                owner, len(agents), _error_text(error),
            )  # fmt: skip
            for agent in agents:
                self._analyse(owner, (agent,), lease, outcomes, errors, covered)
            return
        covered.append(seq)
        logger.info("%s analysed %s through seq %d", owner, ", ".join(agents), seq)
        for agent in agents:
            outcomes[agent] = self._complete(owner, agent, seq, lease)

    def _snapshot(self, agents: tuple[str, ...], interrupt: Interrupt) -> int:
        return snapshot_through(self.service, agents, interrupt, self.options)

    def _complete(self, owner: str, agent: str, covered_seq: int, lease: _Lease) -> Outcome:
        with lease.ending(agent) as held:
            if not held:
                self._count("lost")
                logger.warning("%s lost the lease of %r: its result is not completed", owner, agent)
                return "lost"
            outcome = complete(self.database, owner, agent, covered_seq=covered_seq)
        self._count({"done": "completed", "requeued": "requeued", "lost": "lost"}[outcome])
        return outcome

    def _fail(self, owner: str, agent: str, error: Exception, lease: _Lease) -> Outcome:
        text = _error_text(error)
        with lease.ending(agent) as held:
            if not held:
                self._count("lost")
                logger.warning("%s lost the lease of %r; its failure (%s) is not recorded",
                               owner, agent, text)  # fmt: skip
                return "lost"
            outcome = fail(
                self.database, owner, agent, text,
                max_attempts=self.max_attempts, backoff_s=self.retry_backoff_s,
            )  # fmt: skip
        self._count({"retrying": "retried", "failed": "failed", "lost": "lost"}[outcome])
        logger.error(
            "%s: the analysis of %r failed (%s); %s", owner, agent, text,
            "it will be retried" if outcome == "retrying" else f"the job is {outcome}",
            exc_info=error,
        )  # fmt: skip
        return outcome

    # -- bookkeeping -------------------------------------------------------------------

    def _failed(self, what: str, error: Exception) -> None:
        """Log and count a failure of the worker itself (not of an analysis)."""
        self._count("errors")
        logger.error("worker %s: %s failed: %s", self.owner, what, _error_text(error),
                     exc_info=error)  # fmt: skip

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def stats(self) -> dict[str, Any]:
        """JSON-safe counts: ``owner``, ``state`` (idle, running, stopping, stopped),
        ``running`` (batches now), ``batches``, ``claimed`` (jobs), ``completed`` (done),
        ``requeued`` (a newer plan came meanwhile), ``retried`` and ``failed`` (analyses
        that raised, with attempts left or not), ``released`` (given back on a stop),
        ``lost`` (leases taken over by another worker) and ``errors`` (the worker's own
        failures: claims, renewals, releases)."""
        with self._lock:
            return {"owner": self.owner, "state": self._state, "running": self._running,
                    **self._counts}  # fmt: skip

    def _where(self) -> str:
        path = self.service.warehouse.path
        return f"warehouse {path}" if path is not None else "warehouse in memory"

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        self._wait_for(lambda: self.stop_requested or time.monotonic() >= deadline)

    @staticmethod
    def _wait_for(done: Callable[[], bool]) -> None:
        # Sleeping in ticks, not on an Event: stop() may run in a signal handler, where
        # setting an Event could deadlock on its lock.
        while not done():
            time.sleep(_TICK_S)

    def close(self) -> None:
        """Stop, and close the service (and store) the worker made."""
        self.stop()
        if self._owned_service:
            self.service.close()
        if self._owned_store:
            self.store.close()

    def __enter__(self) -> AnalysisWorker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def snapshot_through(
    service: MetaLearningService,
    agents: Sequence[str],
    interrupt: Interrupt,
    options: BackgroundOptions | None,
) -> int:
    """Store the agents' snapshots; return the seq they cover for sure (module docstring:
    the watermark after a refresh, read before the analysis)."""
    service.warehouse.refresh(interrupt)
    covered = service.warehouse.watermark
    keywords = {} if options is None else options.keywords()
    service.snapshot_agents_sync(agents, interrupt=interrupt, **keywords)
    return covered


def _service_for(
    db: MetaLearningService | HistoryStore | Engine | URL | str | None,
    warehouse_path: str | Path | None,
) -> tuple[MetaLearningService, bool]:
    """The service a worker analyses with, and whether the worker made its store."""
    if isinstance(db, MetaLearningService):
        if warehouse_path is not None:
            raise InvalidArgumentError(
                "warehouse_path is the given MetaLearningService's business; "
                "give it there (MetaLearningService(..., warehouse_path=...))"
            )
        return db, False
    store = db if isinstance(db, HistoryStore) else HistoryStore(db)
    try:
        path = _default_warehouse(store) if warehouse_path is None else warehouse_path
        service = MetaLearningService(
            store, max_workers=1, warehouse_path=None if str(path) == MEMORY else path,
            warehouse_if_locked="fallback",
        )  # fmt: skip
    except BaseException:
        if store is not db:
            store.close()
        raise
    return service, store is not db


def _default_warehouse(store: HistoryStore) -> str:
    sqlite_file = store.database.sqlite_file
    return MEMORY if sqlite_file is None else f"{sqlite_file}.warehouse.duckdb"


def _seconds(name: str, value: float, *, zero: bool) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (value >= 0 if zero else value > 0) or value != value:
        bound = ">= 0" if zero else "> 0"
        raise InvalidArgumentError(f"{name} must be a number of seconds {bound}, not {value!r}")
    return float(value)


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _jobs_text(jobs: list[ClaimedJob]) -> str:
    return ", ".join(
        f"{job.agent_id} (seq {job.last_seq}, {job.plans} plans, attempt {job.attempts}"
        + (f", from {job.reclaimed_from}" if job.reclaimed_from else "")
        + ")"
        for job in jobs
    )


def _outcomes_text(outcomes: Mapping[str, Outcome]) -> str:
    return ", ".join(f"{agent} {outcome}" for agent, outcome in outcomes.items()) or "nothing"


def _counts_text(stats: Mapping[str, Any]) -> str:
    return ", ".join(f"{stats[name]} {name}" for name in _COUNTERS)


# -- what the queue holds (``metalearn status``) ------------------------------------------


def queue_status(
    store: HistoryStore, *, limit: int = 20, now: datetime | None = None
) -> dict[str, Any]:
    """The queue and the analyses' lag, JSON-safe (what ``metalearn status`` prints).

    ``stats`` (counts by state, ``expired`` leases, ``plans_waiting``, ``oldest_wait_s``,
    ``done_last_hour``: see :func:`~metalearn._jobs.job_stats`); ``running`` (agent,
    owner, lease age and time left, attempt, plans), ``pending`` (agent, priority, plans,
    wait, attempts, ``retry_in_s`` while a retry waits out its backoff, the last error) and
    ``failed`` (agent, attempts, finished_at, error) jobs, at most ``limit`` of each (by
    priority, then age); ``agents_behind``, the number of agents whose newest plan is
    newer than their latest snapshot, and ``lag``: up to ``limit`` of them (oldest newest
    plan first: those waiting longest) with ``last_seq``, ``through_seq`` (None: no
    snapshot yet), ``behind`` (seqs between the two) and the state of their job.
    """
    limit = positive_int("limit", limit, what="rows per section")
    moment = pd.Timestamp(now if now is not None else datetime.now(UTC))
    database: Database = store.database
    table = job_table(database, now=moment.to_pydatetime())
    states = dict(zip(table["agent_id"], table["state"], strict=True))
    behind = store.agents_behind()
    oldest = sorted(behind.items(), key=lambda item: (item[1], item[0]))[:limit]
    return {
        "url": store.url,
        "stats": job_stats(database, now=moment.to_pydatetime()),
        **{
            state: _rows(table[table["state"] == state].head(limit), moment, columns)
            for state, columns in _STATUS_COLUMNS.items()
        },
        "agents_behind": len(behind),
        "lag": [_lag(store, agent, seq, states.get(agent, "done")) for agent, seq in oldest],
    }


_STATUS_COLUMNS = {
    "running": ["agent_id", "owner", "lease_age_s", "lease_left_s", "attempts", "plans",
                "late_plans"],
    "pending": ["agent_id", "priority", "plans", "wait_s", "attempts", "retry_in_s", "error"],
    "failed": ["agent_id", "attempts", "finished_at", "error"],
}  # fmt: skip


def _rows(rows: pd.DataFrame, now: pd.Timestamp, columns: list[str]) -> list[dict[str, Any]]:
    left = (rows["not_before"] - now).dt.total_seconds()
    rows = rows.assign(
        retry_in_s=left.where(left > 0),
        finished_at=rows["finished_at"].map(lambda t: None if pd.isna(t) else t.isoformat()),
    )
    return [
        {str(name): _plain(value) for name, value in row.items()}
        for row in rows[columns].to_dict("records")
    ]


def _lag(store: HistoryStore, agent_id: str, last_seq: int, job: str) -> dict[str, Any]:
    latest = store.latest_snapshot(agent_id)
    through = None if latest is None else int(latest[0]["through_seq"])
    return {"agent_id": agent_id, "last_seq": last_seq, "through_seq": through,
            "behind": last_seq - (through or 0), "job": job}  # fmt: skip


def _plain(value: Any) -> Any:
    """A JSON value: numpy scalars as Python numbers, missing values as None."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value
