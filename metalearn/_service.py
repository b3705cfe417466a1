"""MetaLearningService: the analyses, as blocking ``*_sync`` methods and awaitable twins."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from metalearn._analysis import analyze, analyze_groups
from metalearn._checks import positive_int
from metalearn._interrupt import Interrupt
from metalearn._patterns import extract, extract_groups
from metalearn._queries import PatternOptions, StratifyBy, Window
from metalearn._results import ExecutionAnalysis, PatternReport
from metalearn._snapshots import analysis_from_snapshot, report_from_snapshot, snapshot_rows
from metalearn._store import HistoryStore
from metalearn._warehouse import IfLocked, Warehouse

__all__ = ["MetaLearningService"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S", bound="MetaLearningService")

Database = HistoryStore | Engine | Session | URL | str


def _async_twin(
    sync: Callable[Concatenate[_S, _P], _R],
) -> Callable[Concatenate[_S, _P], Coroutine[Any, Any, _R]]:
    """Make ``name`` from ``name_sync``: same parameters, runs in the service's workers."""

    async def twin(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        # Looked up per call, so a subclass overriding ``name_sync`` changes ``name`` too.
        method: Callable[_P, _R] = getattr(self, sync.__name__)
        return await self._in_worker(method, *args, **kwargs)

    functools.update_wrapper(twin, sync)
    name = sync.__name__.removesuffix("_sync")
    twin.__name__ = name
    twin.__qualname__ = sync.__qualname__.removesuffix("_sync")
    twin.__doc__ = (
        f"Awaitable twin of :meth:`{sync.__name__}`: same parameters and result, computed "
        "in the service's worker threads so the event loop keeps running.\n\n"
        + inspect.cleandoc(sync.__doc__ or "").split("\n\n>>>")[0]
    )
    return twin


def _as_store(db: Database) -> tuple[HistoryStore, bool]:
    """The store to read, and whether this service created it (and so closes it)."""
    if isinstance(db, HistoryStore):
        return db, False
    if isinstance(db, Session):  # sessions are not thread-safe: only borrow the bind
        bind = db.get_bind()
        return HistoryStore(bind if isinstance(bind, Engine) else bind.engine), True
    if isinstance(db, Engine | URL | str):
        return HistoryStore(db), True
    raise TypeError(
        "db must be a HistoryStore, a SQLAlchemy Engine or Session, or a database URL, "
        f"not {type(db).__name__}"
    )


class MetaLearningService:
    """Analyses of execution history: success rates and successful patterns.

    ``db`` is a :class:`HistoryStore`, a SQLAlchemy ``Engine`` or ``Session`` (only its
    bind is used) or a URL. The service mirrors the store into an in-process DuckDB
    warehouse (``warehouse_path`` persists it; ``warehouse_if_locked="fallback"`` takes
    another file, or memory, when that one is in use: see :class:`Warehouse`) and owns a
    bounded pool of ``max_workers`` threads. Every analysis is a blocking
    ``name_sync(...)`` method with an awaitable twin ``await name(...)`` that runs it in
    that pool. Use it as a context manager (``with`` or ``async with``) or call
    :meth:`close`.

    >>> from metalearn.synthetic import make_history
    >>> store = HistoryStore("sqlite://")
    >>> _ = store.import_frames(*make_history(2_000, seed=3))
    >>> with MetaLearningService(store) as service:
    ...     analysis = service.analyze_execution_patterns_sync(time_range_days=None)
    ...     report = service.extract_successful_patterns_sync(time_range_days=None)
    >>> analysis.n_plans, report.successful["pattern_text"].iloc[0]
    (2000, 'validate_input → dry_run → apply_change')
    """

    def __init__(
        self,
        db: Database,
        *,
        max_workers: int = 4,
        warehouse_path: str | Path | None = None,
        warehouse_if_locked: IfLocked = "raise",
    ) -> None:
        self.max_workers = positive_int("max_workers", max_workers)
        self.store, self._owns_store = _as_store(db)
        self.warehouse = Warehouse(self.store, path=warehouse_path, if_locked=warehouse_if_locked)
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="metalearn-worker")
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"watermark={self.warehouse.watermark}"
        return f"<MetaLearningService {self.store.url} workers={self.max_workers} {state}>"

    async def _in_worker(
        self, function: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _R:
        """The one place that hands blocking work to the worker threads."""
        if self._closed:
            raise RuntimeError("this MetaLearningService is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(function, *args, **kwargs)
        )

    # -- analyses ----------------------------------------------------------------------

    def refresh_sync(self) -> int:
        """Mirror the plans recorded since the last refresh; return how many were new."""
        return self.warehouse.refresh()

    def analyze_execution_patterns_sync(
        self,
        agent_id: str | None = None,
        *,
        time_range_days: float | None = 30,
        as_of: datetime | None = None,
    ) -> ExecutionAnalysis:
        """Success rates, durations and failure reasons of one agent (or all, ``None``).

        Covers plans that finished in ``(as_of - time_range_days, as_of]`` (``as_of``
        defaults to now, UTC), or the whole history when ``time_range_days`` is None.
        Returns an :class:`ExecutionAnalysis` (its tables and columns are listed there).
        """
        window = Window.build(agent_id, time_range_days, as_of)
        self.warehouse.refresh()
        with self.warehouse.snapshot() as snapshot:
            return analyze(snapshot, window)

    def extract_successful_patterns_sync(
        self,
        agent_id: str | None = None,
        *,
        time_range_days: float | None = 30,
        as_of: datetime | None = None,
        min_length: int = 1,
        max_length: int = 4,
        min_support: int = 20,
        fdr: float = 0.05,
        stratify_by: StratifyBy = "goal_type",
    ) -> PatternReport:
        """Tool sequences whose presence raises or lowers the success rate.

        Tests every contiguous tool sequence of ``min_length..max_length`` tools contained
        in at least ``min_support`` plans of the window (see
        :meth:`analyze_execution_patterns_sync`): within the strata of ``stratify_by``
        (``"goal_type"``, the default, or ``"agent_id"``; plans without a value form
        their own stratum) with the Cochran-Mantel-Haenszel test and the Mantel-Haenszel
        odds ratio, or pooled (``None``) with a two-sided Fisher exact test; the pooled
        Fisher p and lift are always there. The false discovery rate is controlled at
        ``fdr`` (Benjamini-Hochberg). Returns a :class:`PatternReport`;
        ``report.findings`` holds the significant patterns no stronger one explains, and
        ``report.successful`` and ``report.failing`` split them by direction.
        """
        window = Window.build(agent_id, time_range_days, as_of)
        options = PatternOptions.build(
            min_length=min_length,
            max_length=max_length,
            min_support=min_support,
            fdr=fdr,
            stratify_by=stratify_by,
        )
        self.warehouse.refresh()
        with self.warehouse.snapshot() as snapshot:
            return extract(snapshot, window, options)

    def snapshot_agents_sync(
        self,
        agent_ids: Sequence[str],
        *,
        time_range_days: float | None = 30,
        as_of: datetime | None = None,
        min_length: int = 1,
        max_length: int = 4,
        min_support: int = 20,
        fdr: float = 0.05,
        keep_snapshots: int = 20,
        interrupt: Interrupt | None = None,
        stratify_by: StratifyBy = "goal_type",
    ) -> dict[str, int]:
        """Analyse several agents together and store one snapshot each.

        One warehouse refresh and one query per table for the whole batch; both analyses
        (window ending at ``as_of``, default now) for every agent, written with their
        pattern rows in one transaction (the newest ``keep_snapshots`` snapshots per agent
        are kept). Returns each agent's snapshot id. This is what background analysis
        runs; ``interrupt`` lets the queue stop it; ``stratify_by`` is as for
        :meth:`extract_successful_patterns_sync`.
        """
        agents = tuple(dict.fromkeys(agent_ids))
        window = Window.build(None, time_range_days, as_of, agents=agents)
        options = PatternOptions.build(
            min_length=min_length,
            max_length=max_length,
            min_support=min_support,
            fdr=fdr,
            stratify_by=stratify_by,
        )
        keep_snapshots = positive_int("keep_snapshots", keep_snapshots, what="snapshots per agent")
        started = time.perf_counter()
        self.warehouse.refresh(interrupt)
        control = interrupt or Interrupt()
        with self.warehouse.snapshot() as snapshot, control.attached(snapshot):
            analyses = analyze_groups(snapshot, window)
            control.check()
            reports = extract_groups(snapshot, window, options)
        control.check()
        elapsed_ms = (time.perf_counter() - started) * 1000
        items = [snapshot_rows(analyses[a], reports[a], duration_ms=elapsed_ms) for a in agents]
        saved = self.store.save_snapshots(items, keep_snapshots=keep_snapshots)
        return dict(zip(agents, saved, strict=True))

    def latest_patterns_sync(self, agent_id: str) -> PatternReport | None:
        """The newest stored :class:`PatternReport` of an agent (or None).

        Written by background analysis; carries ``agent_id``, ``through_seq`` (the highest
        plan ``seq`` it covered) and ``computed_at``. Readable from any process.
        """
        found = self.store.latest_snapshot(agent_id)
        return None if found is None else report_from_snapshot(*found)

    def latest_analysis_sync(self, agent_id: str) -> ExecutionAnalysis | None:
        """The newest stored :class:`ExecutionAnalysis` of an agent (or None)."""
        found = self.store.latest_snapshot(agent_id)
        return None if found is None else analysis_from_snapshot(found[0])

    refresh = _async_twin(refresh_sync)
    analyze_execution_patterns = _async_twin(analyze_execution_patterns_sync)
    extract_successful_patterns = _async_twin(extract_successful_patterns_sync)
    snapshot_agents = _async_twin(snapshot_agents_sync)
    latest_patterns = _async_twin(latest_patterns_sync)
    latest_analysis = _async_twin(latest_analysis_sync)

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Wait for running analyses, then release the threads, DuckDB and the store."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.warehouse.close()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> MetaLearningService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> MetaLearningService:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)  # waiting for workers must not block the loop
