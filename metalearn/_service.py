"""MetaLearningService: the analyses, as blocking ``*_sync`` methods and awaitable twins."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from metalearn._analysis import analyze, analyze_groups
from metalearn._changes import detect_changes
from metalearn._checks import positive_int
from metalearn._external import ExternalHistory
from metalearn._hint_sql import hint_table_on_engine, next_step_hints_on_engine
from metalearn._hints import hint_tables, next_step_hints
from metalearn._interrupt import Interrupt
from metalearn._pattern_sql import extract_on_engine
from metalearn._patterns import extract, extract_groups
from metalearn._queries import ChangeOptions, HintOptions, PatternOptions, StratifyBy, Window
from metalearn._results import ChangeReport, ExecutionAnalysis, HintTable, PatternReport
from metalearn._snapshots import (
    analysis_from_snapshot,
    hint_rows,
    hints_from_snapshot,
    report_from_snapshot,
    snapshot_rows,
)
from metalearn._store import HistoryStore
from metalearn._warehouse import IfLocked, Warehouse

__all__ = ["MetaLearningService"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S", bound="MetaLearningService")

Database = HistoryStore | Engine | Session | URL | str | ExternalHistory


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


def _as_store(db: Engine | Session | URL | str | HistoryStore) -> tuple[HistoryStore, bool]:
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
    bind is used), a URL, or a history that lives elsewhere:
    :class:`metalearn.spark.SparkHistory` runs every analysis on Spark instead (nothing
    to mirror, no store: background snapshots raise ``UnsupportedError``). The
    service mirrors the store into an in-process DuckDB
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
        self._external = db if isinstance(db, ExternalHistory) else None
        if isinstance(db, ExternalHistory):
            self._owns_store = False
        else:
            self.store, self._owns_store = _as_store(db)
            self.warehouse = Warehouse(
                self.store, path=warehouse_path, if_locked=warehouse_if_locked
            )
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="metalearn-worker")
        self._closed = False

    def __repr__(self) -> str:
        if self._external is not None:
            where, state = repr(self._external), "closed" if self._closed else "open"
        else:
            where = str(self.store.url)
            state = "closed" if self._closed else f"watermark={self.warehouse.watermark}"
        return f"<MetaLearningService {where} workers={self.max_workers} {state}>"

    def _snapshot(self) -> AbstractContextManager[Any]:
        """Mirror what is new, then a job's own snapshot (an external history's own)."""
        if self._external is not None:
            return self._external.snapshot()
        self.warehouse.refresh()
        return self.warehouse.snapshot()

    def _store(self, what: str) -> HistoryStore:
        """The store, for what needs one (an external history has none)."""
        if self._external is not None:
            raise self._external.unsupported(what)
        return self.store

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
        """Mirror the plans recorded since the last refresh; return how many were new
        (0 for an external history: it is read where it is)."""
        if self._external is not None:
            return self._external.refresh()
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
        with self._snapshot() as snapshot:
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
        max_gap: int = 0,
    ) -> PatternReport:
        """Tool sequences whose presence raises or lowers the success rate.

        Tests every tool sequence of ``min_length..max_length`` tools contained in at least
        ``min_support`` plans of the window, contiguous, or with ``max_gap`` > 0 with at
        most that many other steps between consecutive tools (presence counted once per
        plan; ``pattern_text`` then reads ``a → … → b``) (see
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
            max_gap=max_gap,
        )
        with self._snapshot() as snapshot:
            if self._external is not None:  # counted by the engine: steps stay there
                return extract_on_engine(snapshot, window, options)
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
        max_prefix: int = 3,
        stratify_by: StratifyBy = "goal_type",
    ) -> dict[str, int]:
        """Analyse several agents together and store one snapshot each.

        One warehouse refresh and one query per table for the whole batch; both analyses
        (window ending at ``as_of``, default now) for every agent, each agent's snapshot
        written with its pattern rows and its :class:`HintTable` (prefixes of up to
        ``max_prefix`` tools, the same ``min_support`` and ``fdr``) in one short
        transaction of its own (the newest ``keep_snapshots`` snapshots per agent are
        kept). Returns each
        agent's snapshot id. This is what background analysis runs; ``interrupt`` lets
        the queue stop it; ``stratify_by`` is as for :meth:`extract_successful_patterns_sync`.
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
        hint_options = HintOptions.build(max_prefix=max_prefix, min_support=min_support, fdr=fdr)
        keep_snapshots = positive_int("keep_snapshots", keep_snapshots, what="snapshots per agent")
        store = self._store("snapshot_agents")
        started = time.perf_counter()
        self.warehouse.refresh(interrupt)
        control = interrupt or Interrupt()
        with self.warehouse.snapshot() as snapshot, control.attached(snapshot):
            analyses = analyze_groups(snapshot, window)
            control.check()
            reports = extract_groups(snapshot, window, options)
            control.check()
            hints = hint_tables(snapshot, window, hint_options)
        control.check()
        elapsed_ms = (time.perf_counter() - started) * 1000
        items = [snapshot_rows(analyses[a], reports[a], duration_ms=elapsed_ms) for a in agents]
        saved = store.save_snapshots(
            items, keep_snapshots=keep_snapshots, hints=[hint_rows(hints[a]) for a in agents]
        )
        return dict(zip(agents, saved, strict=True))

    def latest_patterns_sync(self, agent_id: str) -> PatternReport | None:
        """The newest stored :class:`PatternReport` of an agent (or None).

        Written by background analysis; carries ``agent_id``, ``through_seq`` (the highest
        plan ``seq`` it covered) and ``computed_at``. Readable from any process.
        """
        found = self._store("latest_patterns").latest_snapshot(agent_id)
        return None if found is None else report_from_snapshot(*found)

    def latest_analysis_sync(self, agent_id: str) -> ExecutionAnalysis | None:
        """The newest stored :class:`ExecutionAnalysis` of an agent (or None)."""
        found = self._store("latest_analysis").latest_snapshot(agent_id)
        return None if found is None else analysis_from_snapshot(found[0])

    # -- planner feedback: next-step hints and change points -----------------------------

    def next_step_hints_sync(
        self,
        prefix: Sequence[str],
        *,
        agent_id: str | None = None,
        goal_type: str | None = None,
        time_range_days: float | None = 30,
        as_of: datetime | None = None,
        min_support: int = 10,
        fdr: float = 0.05,
    ) -> pd.DataFrame:
        """Which next tool, after the tools a plan has run so far, goes with success.

        ``prefix`` is the tools a plan ran, from its first step (``[]``: hints for the
        first step). Among the window's plans (see :meth:`analyze_execution_patterns_sync`;
        of one agent and one goal type when given, ``"(none)"`` for plans without one)
        whose steps begin with exactly that prefix, one row per next tool seen in at least
        ``min_support`` of them, plus a row with a missing ``next_tool`` for the plans that
        ended right after the prefix (if at least ``min_support``). Columns: next_tool,
        plans, successes, success_rate, ci_low, ci_high (95% Wilson), lift (against all
        plans with the prefix), p_value (two-sided Fisher exact test: this next tool
        against the other continuations), q_value (Benjamini-Hochberg over the rows),
        significant (q_value <= fdr), low_n (fewer than 30 plans, or an interval wider
        than 25 points: :func:`~metalearn._stats.low_n`). Ranked by ``ci_low``, best
        first, so a rare lucky tool does not win. A tool never seen makes an empty frame,
        not an error.

        >>> from metalearn.synthetic import make_history
        >>> store = HistoryStore("sqlite://")
        >>> _ = store.import_frames(*make_history(5_000, seed=3))
        >>> with MetaLearningService(store) as service:
        ...     hints = service.next_step_hints_sync([], time_range_days=None)
        >>> hints[["next_tool", "plans", "successes"]].head(2).to_numpy().tolist()
        [['validate_input', 174, 139], ['read_faq', 561, 406]]
        >>> store.close()
        """
        options = HintOptions.build(max_prefix=1, min_support=min_support, fdr=fdr)
        tools, goal = HintOptions.prefix(prefix), HintOptions.goal_type(goal_type)
        window = Window.build(agent_id, time_range_days, as_of)
        with self._snapshot() as snapshot:
            if self._external is not None:
                return next_step_hints_on_engine(snapshot, window, tools, options, goal)
            return next_step_hints(snapshot, window, tools, options, goal)

    def hint_table_sync(
        self,
        max_prefix: int = 3,
        *,
        agent_id: str | None = None,
        goal_type: str | None = None,
        time_range_days: float | None = 30,
        as_of: datetime | None = None,
        min_support: int = 10,
        fdr: float = 0.05,
    ) -> HintTable:
        """Next-step hints after every prefix of up to ``max_prefix`` tools, in one pass.

        Every prefix (the empty one included) that at least ``min_support`` plans start
        with, and its next-tool rows as :meth:`next_step_hints_sync` gives them, in a
        :class:`HintTable` (``hints``; ``for_prefix(prefix)`` reads one prefix's rows).
        Background analysis stores one per agent with its snapshot: see
        :meth:`latest_hints_sync`.

        >>> from metalearn.synthetic import make_history
        >>> store = HistoryStore("sqlite://")
        >>> _ = store.import_frames(*make_history(5_000, seed=3))
        >>> with MetaLearningService(store) as service:
        ...     table = service.hint_table_sync(time_range_days=None)
        >>> table.for_prefix(["ask_clarification"])["next_tool"].tolist()
        ['confirm_goal']
        >>> store.close()
        """
        options = HintOptions.build(max_prefix=max_prefix, min_support=min_support, fdr=fdr)
        goal = HintOptions.goal_type(goal_type)
        window = Window.build(agent_id, time_range_days, as_of)
        with self._snapshot() as snapshot:
            if self._external is not None:
                return hint_table_on_engine(snapshot, window, options, goal)
            return hint_tables(snapshot, window, options, goal)[None]

    def latest_hints_sync(self, agent_id: str) -> HintTable | None:
        """The newest stored :class:`HintTable` of an agent (or None), in one query.

        Written by background analysis with the agent's snapshot (prefixes of up to
        ``max_prefix`` tools, the snapshot's ``min_support`` and ``fdr``). A snapshot
        stored before hints existed gives an empty table. Readable from any process.
        """
        found = self._store("latest_hints").latest_hints(agent_id)
        return None if found is None else hints_from_snapshot(*found)

    def detect_changes_sync(
        self,
        by: str = "agent_id",
        *,
        time_range_days: float | None = None,
        as_of: datetime | None = None,
        min_plans: int = 200,
        fdr: float = 0.05,
        permutations: int = 999,
    ) -> ChangeReport:
        """The most likely change in success rate of every agent, goal type or tool.

        ``by`` is ``"agent_id"``, ``"goal_type"`` or ``"tool"`` (a tool's group: the plans
        that call it). For every group with at least ``min_plans`` plans in the window
        (default: the whole history), the single split of its plans in finish order that
        best separates a success rate before from one after, with a p-value valid for "a
        change anywhere" (a permutation test of the maximum over all splits, with up to
        ``permutations`` reorderings, so p >= 1 / (permutations + 1); a group stops early
        once 20 reorderings were as extreme: see
        :func:`~metalearn._stats.change_point_test`), q-values by Benjamini-Hochberg
        across groups. Returns a :class:`ChangeReport`; its
        ``changes`` columns are by, group, changed_at, plans_before, plans_after,
        rate_before, rate_after, p_value, q_value, significant.

        >>> from datetime import UTC, timedelta
        >>> from metalearn.synthetic import PlantedChange, make_history
        >>> end = datetime(2026, 3, 1, tzinfo=UTC)
        >>> drop = PlantedChange("support-bot", end - timedelta(days=20), log_odds=-1.5)
        >>> store = HistoryStore("sqlite://")
        >>> _ = store.import_frames(*make_history(6_000, seed=2, end=end, change=drop))
        >>> with MetaLearningService(store) as service:
        ...     found = service.detect_changes_sync().significant
        >>> found["group"].tolist(), f"{found['changed_at'].iloc[0]:%Y-%m-%d %H:%M}"  # truth: 9th
        (['support-bot'], '2026-02-08 16:05')
        >>> store.close()
        """
        options = ChangeOptions.build(
            by=by, min_plans=min_plans, fdr=fdr, permutations=permutations
        )
        window = Window.build(None, time_range_days, as_of)
        with self._snapshot() as snapshot:
            return detect_changes(snapshot, window, options)

    refresh = _async_twin(refresh_sync)
    analyze_execution_patterns = _async_twin(analyze_execution_patterns_sync)
    extract_successful_patterns = _async_twin(extract_successful_patterns_sync)
    snapshot_agents = _async_twin(snapshot_agents_sync)
    latest_patterns = _async_twin(latest_patterns_sync)
    latest_analysis = _async_twin(latest_analysis_sync)
    next_step_hints = _async_twin(next_step_hints_sync)
    hint_table = _async_twin(hint_table_sync)
    latest_hints = _async_twin(latest_hints_sync)
    detect_changes = _async_twin(detect_changes_sync)

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Wait for running analyses, then release the threads, DuckDB and the store.

        On an external history the running analyses are cancelled instead (their Spark
        jobs, through their job groups; they raise ``AnalysisInterrupted``); the history
        itself stays open for its owner.
        """
        if self._closed:
            return
        self._closed = True
        if self._external is not None:
            self._external.cancel()
            self._executor.shutdown(wait=True, cancel_futures=True)
            return
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
