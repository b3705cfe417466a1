"""The benchmark suite: metalearn and the tools a user would pick instead, side by side.

Every measurement runs in a fresh process, forked from a server that has already imported
numpy, pandas, pyarrow, SQLAlchemy, DuckDB, scipy.stats (metalearn imports it on first
use) and metalearn (so a child's time is the measurement, not seconds of imports; PM4Py
and prefixspan are imported by their own children, outside the timed part). Each child
works on its own copy of the cached store, times one call and reports its peak RSS. The
parent repeats each measurement, takes the median, and compares the results of the timed
metalearn and pandas runs (:mod:`benchmarks.agreement`).
"""

from __future__ import annotations

import inspect
import multiprocessing
import resource
import signal
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

# The fork server imports this module once; children inherit everything imported here.
import duckdb  # noqa: F401
import numpy  # noqa: F401
import pandas as pd
import pyarrow  # noqa: F401
import scipy.stats  # noqa: F401
import sqlalchemy  # noqa: F401

import metalearn
from benchmarks import agreement, baselines, histories
from benchmarks.histories import History

AGENT = "support-bot"
"""The agent whose background job is timed (one of the 20 in every history)."""
HARD_LIMIT_S = 3600.0
"""A child still running after this long is killed (a hung measurement, not a slow one)."""


@dataclass(frozen=True)
class Spec:
    """What one child measures, and where (picklable: it crosses to the child)."""

    case: str
    history: History
    workdir: Path  # private copies of the store
    outdir: Path  # results kept for the agreement check
    limit_s: float | None  # soft limit on each timed part of a baseline


class TimedOut(Exception):
    """A timed part ran past its soft limit."""


class Run:
    """A child's view of its measurement: timed parts, notes, results kept for later."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.parts: dict[str, float] = {}
        self.info: dict[str, Any] = {}

    @property
    def n(self) -> int:
        return self.spec.history.n

    @contextmanager
    def timed(self, part: str, *, limited: bool = False) -> Iterator[None]:
        """Time the block as ``part``; with ``limited``, stop it at the soft limit."""
        limit = self.spec.limit_s if limited else None
        with _alarm(limit, part):
            started = time.perf_counter()
            yield
            self.parts[part] = time.perf_counter() - started

    @contextmanager
    def store(self) -> Iterator[str]:
        """A private copy of the cached store (its URL), deleted afterwards."""
        with histories.working_copy(self.spec.history, self.spec.workdir) as url:
            yield url

    @contextmanager
    def service(self) -> Iterator[metalearn.MetaLearningService]:
        """A warm service: a new one on a private copy, after a (not timed) refresh."""
        with self.store() as url, metalearn.MetaLearningService(url) as service:
            service.refresh_sync()
            yield service

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Plans and steps as ``read_sql`` returns them, read from the Parquet cache."""
        return pd.read_parquet(self.spec.history.plans), pd.read_parquet(self.spec.history.steps)

    def keep(self, name: str, value: object) -> None:
        """Keep a result for the agreement check (overwritten by later repeats)."""
        pd.to_pickle(value, self.spec.outdir / f"{name}-{self.n}.pkl")


@contextmanager
def _alarm(seconds: float | None, part: str) -> Iterator[None]:
    if seconds is None:
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimedOut(part)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- metalearn -----------------------------------------------------------------------------


def cold_build(run: Run) -> None:
    with run.store() as url:
        with run.timed("build"):
            service = metalearn.MetaLearningService(url)
            run.info["plans"] = service.refresh_sync()
        service.close()


def _refresh_after(run: Run, count: int) -> None:
    plans, steps = histories.make(count, seed=histories.APPENDED_SEED)
    with run.service() as service:
        service.store.import_frames(plans, steps)
        with run.timed("refresh"):
            added = service.refresh_sync()
    if added != count:
        raise AssertionError(f"refresh mirrored {added} plans, expected {count}")


def refresh_1(run: Run) -> None:
    _refresh_after(run, 1)


def refresh_1000(run: Run) -> None:
    _refresh_after(run, 1_000)


def analyze(run: Run) -> None:
    """A warm service's call; the same call first in the fresh process is a detail."""
    with run.service() as service:
        with run.timed("first call"):
            service.analyze_execution_patterns_sync(time_range_days=None)
        with run.timed("call"):
            analysis = service.analyze_execution_patterns_sync(time_range_days=None)
    run.info["plans"] = analysis.n_plans
    run.keep("metalearn_rates", agreement.metalearn_rates(analysis))


def _timed_extract(run: Run, **extra: object) -> metalearn.PatternReport:
    """A warm service's extract over the whole history (lengths 1-4), timed twice: the
    first call in a fresh process also pays page faults on fresh memory for its big
    integer arrays (~1 s at 1M plans), shown as a detail."""
    options = {
        "time_range_days": None,
        "min_length": 1,
        "max_length": agreement.MAX_LENGTH,
        "min_support": agreement.MIN_SUPPORT,
        **extra,
    }
    with run.service() as service:
        with run.timed("first call"):
            service.extract_successful_patterns_sync(**options)
        with run.timed("call"):
            report = service.extract_successful_patterns_sync(**options)
    run.info.update(
        plans=report.n_plans,
        patterns=len(report.patterns),
        significant=int(report.patterns["significant"].sum()),
    )
    return report


def extract(run: Run) -> None:
    """Pooled (``stratify_by=None``: what extraction did before it was stratified;
    findings included)."""
    report = _timed_extract(run, stratify_by=None)
    run.keep("metalearn_patterns", agreement.metalearn_patterns(report))


def extract_stratified(run: Run) -> None:
    """The same call with the default options: stratified by goal type, findings computed."""
    report = _timed_extract(run)
    run.info["findings"] = len(report.findings)
    run.keep("metalearn_stratified", agreement.metalearn_stratified(report))


def _default_window_days() -> float | None:
    signature = inspect.signature(metalearn.MetaLearningService.snapshot_agents_sync)
    days: float | None = signature.parameters["time_range_days"].default
    return days


def agent_job(run: Run) -> None:
    """The job background analysis runs for one agent: default options, with the window
    ending at the history's last plan (a window ending now would empty as the fixed
    history ages, and the row would measure nothing)."""
    with run.service() as service:
        with run.timed("job"):
            service.snapshot_agents_sync([AGENT], as_of=histories.END)
        days = _default_window_days()
        window = service.analyze_execution_patterns_sync(
            AGENT, time_range_days=days, as_of=histories.END
        )
    if window.n_plans == 0:
        raise RuntimeError(f"agent_job: the {days}-day window before {histories.END} is empty")
    run.info.update(window_days=days, window_plans=window.n_plans)


def agent_job_all(run: Run) -> None:
    with run.service() as service:
        with run.timed("job"):
            service.snapshot_agents_sync([AGENT], time_range_days=None)
        window = service.analyze_execution_patterns_sync(AGENT, time_range_days=None)
    run.info["window_plans"] = window.n_plans


# -- baselines -----------------------------------------------------------------------------


def pandas_load(run: Run) -> None:
    with run.store() as url, run.timed("load"):
        plans, steps = baselines.load_frames(url)
    run.info.update(plans=len(plans), steps=len(steps))


def pandas_rates(run: Run) -> None:
    plans, _ = run.frames()
    with run.timed("rates"):
        rates = baselines.success_rates(plans)
    run.keep("pandas_rates", rates)


def pandas_ngrams(run: Run) -> None:
    plans, steps = run.frames()
    with run.timed("ngrams", limited=True):
        table = baselines.ngrams(
            plans, steps, max_length=agreement.MAX_LENGTH, min_support=agreement.MIN_SUPPORT
        )
    run.info["patterns"] = len(table)
    run.keep("pandas_ngrams", table)


def pandas_cmh(run: Run) -> None:
    plans, steps = run.frames()
    with run.timed("stratified", limited=True):
        table = baselines.stratified_ngrams(
            plans, steps, max_length=agreement.MAX_LENGTH, min_support=agreement.MIN_SUPPORT
        )
    run.info["patterns"] = len(table)
    run.keep("pandas_stratified", table)


def pm4py_variants(run: Run) -> None:
    plans, steps = run.frames()
    baselines.pm4py_event_log(plans.head(1), steps.head(1))  # imports PM4Py, untimed
    with run.timed("event log", limited=True):
        log = baselines.pm4py_event_log(plans, steps)
    with run.timed("variants", limited=True):
        variants = baselines.pm4py_variants(log)
    run.info["variants"] = len(variants)


def _prefixspan(run: Run, min_support: int) -> None:
    _, steps = run.frames()
    baselines.prefixspan_patterns([["warm-up"]], 1)  # imports prefixspan, untimed
    with run.timed("sequences"):
        database = baselines.sequences(steps)
    run.info["min_support"] = min_support
    with run.timed("mine", limited=True):
        found = baselines.prefixspan_patterns(
            database, min_support, max_length=agreement.MAX_LENGTH
        )
    run.info["patterns"] = len(found)


def prefixspan_20(run: Run) -> None:
    _prefixspan(run, agreement.MIN_SUPPORT)


def prefixspan_5pct(run: Run) -> None:
    _prefixspan(run, baselines.share_of_plans(run.n, 0.05))


# -- the cases, and running one in a child -------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One measurement: what it runs, which timed part is its result, what it needs."""

    name: str
    label: str
    system: str
    run: Callable[[Run], None]
    main: str
    needs: str | None = None


CASES = {
    case.name: case
    for case in [
        Case(
            "cold_build",
            "cold warehouse build (new service + refresh)",
            "metalearn",
            cold_build,
            "build",
        ),
        Case("refresh_1", "refresh after 1 new plan", "metalearn", refresh_1, "refresh"),
        Case("refresh_1000", "refresh after 1,000 new plans", "metalearn", refresh_1000, "refresh"),
        Case(
            "analyze",
            "analyze_execution_patterns (whole history, all agents)",
            "metalearn",
            analyze,
            "call",
        ),
        Case(
            "extract",
            "extract_successful_patterns pooled (stratify_by=None, lengths 1-4, whole history)",
            "metalearn",
            extract,
            "call",
        ),
        Case(
            "extract_stratified",
            "extract_successful_patterns defaults (by goal type + findings, lengths 1-4)",
            "metalearn",
            extract_stratified,
            "call",
        ),
        Case(
            "agent_job",
            "one agent's background job (snapshot_agents, defaults: 30 days)",
            "metalearn",
            agent_job,
            "job",
        ),
        Case(
            "agent_job_all",
            "one agent's job, whole history (time_range_days=None)",
            "metalearn",
            agent_job_all,
            "job",
        ),
        Case(
            "pandas_load",
            "pandas read_sql, plans + steps (SQLAlchemy)",
            "pandas",
            pandas_load,
            "load",
        ),
        Case(
            "pandas_rates",
            "pandas groupby rates by agent / goal type / day",
            "pandas",
            pandas_rates,
            "rates",
        ),
        Case(
            "pandas_ngrams",
            "pandas n-grams 1-4: support, success rate, lift",
            "pandas",
            pandas_ngrams,
            "ngrams",
        ),
        Case(
            "pandas_cmh",
            "pandas n-grams 1-4 per goal type: MH odds ratio and CMH test",
            "pandas",
            pandas_cmh,
            "stratified",
        ),
        Case(
            "prefixspan_20",
            "prefixspan, min support 20 plans, length <= 4",
            "prefixspan",
            prefixspan_20,
            "mine",
            needs="prefixspan",
        ),
        Case(
            "prefixspan_5pct",
            "prefixspan, min support 5% of plans, length <= 4",
            "prefixspan",
            prefixspan_5pct,
            "mine",
            needs="prefixspan",
        ),
        Case(
            "pm4py_variants",
            "PM4Py get_variants",
            "PM4Py",
            pm4py_variants,
            "variants",
            needs="pm4py",
        ),
    ]
}


def _peak_mib() -> float:
    """Peak RSS of this process plus its largest child (the SQLite bulk reader, where a cold
    build starts one): an upper bound, as the two need not peak at the same moment."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (own + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def _child(spec: Spec, conn: Connection) -> None:
    run = Run(spec)
    outcome: dict[str, Any] = {}
    try:
        CASES[spec.case].run(run)
    except TimedOut as stop:
        outcome["timed_out"] = str(stop)
    except BaseException:
        outcome["error"] = traceback.format_exc()
    conn.send({"parts": run.parts, "info": run.info, "peak_mib": _peak_mib(), **outcome})
    conn.close()


_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload([__name__])


def run_child(spec: Spec, hard_limit_s: float = HARD_LIMIT_S) -> dict[str, Any]:
    """Measure ``spec`` once in a fresh process; what it reports (or why it reports nothing)."""
    receiver, sender = _context.Pipe(duplex=False)
    process = _context.Process(target=_child, args=(spec, sender), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(hard_limit_s):
            process.kill()
            return {"parts": {}, "info": {}, "timed_out": "hard limit", "hard": hard_limit_s}
        return dict(receiver.recv())
    except EOFError:
        return {"parts": {}, "info": {}, "error": "the process died without a result"}
    finally:
        process.join()
        receiver.close()


# -- statistics over repeats ---------------------------------------------------------------


@dataclass
class Stat:
    """A measurement's repeats: median seconds of its main part, peak RSS, why it stopped."""

    case: str
    runs: int = 0
    seconds: float | None = None
    parts: dict[str, float] = field(default_factory=dict)
    peak_mib: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    timed_out: str | None = None
    limit_s: float | None = None
    error: str | None = None
    skipped: str | None = None

    @classmethod
    def of(cls, case: Case, outcomes: list[dict[str, Any]], limit_s: float | None) -> Stat:
        done = [o for o in outcomes if case.main in o["parts"]]
        stat = cls(case.name, runs=len(done))
        if done:
            stat.seconds = statistics.median(o["parts"][case.main] for o in done)
            names = {p for o in done for p in o["parts"]}
            stat.parts = {
                p: statistics.median(o["parts"][p] for o in done if p in o["parts"])
                for p in sorted(names)
            }
            stat.info = done[-1]["info"]
        peaks = [o["peak_mib"] for o in outcomes if "peak_mib" in o]
        stat.peak_mib = max(peaks) if peaks else None
        last = outcomes[-1] if outcomes else {}
        if "timed_out" in last:
            stat.timed_out = last["timed_out"]
            stat.limit_s = last.get("hard", limit_s)
            stat.parts.update(last["parts"])  # what finished before the limit
            stat.info = {**last["info"], **stat.info}
        stat.error = last.get("error")
        return stat

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, [])}


def measure(
    case: Case, spec: Spec, *, repeats: int, single_above_s: float, log: Callable[[str], None]
) -> Stat:
    """Median of ``repeats`` fresh runs (one, for a baseline slower than ``single_above_s``)."""
    if case.needs is not None and (reason := baselines.missing_extra(case.needs)):
        log(f"  skipped {case.name}: {reason}")
        return Stat(case.name, skipped=reason)
    outcomes = []
    for _ in range(repeats):
        outcome = run_child(spec)
        outcomes.append(outcome)
        if "timed_out" in outcome or "error" in outcome:
            break
        slow = outcome["parts"].get(case.main, 0.0) > single_above_s
        if case.system != "metalearn" and slow:
            break
    stat = Stat.of(case, outcomes, spec.limit_s)
    log(_progress(case, stat))
    return stat


def _progress(case: Case, stat: Stat) -> str:
    if stat.error:
        return f"  {case.name}: FAILED\n{stat.error}"
    if stat.timed_out:
        return f"  {case.name}: > {stat.limit_s:g} s ({stat.timed_out} stopped at the limit)"
    parts = ", ".join(f"{k} {v:.3f}" for k, v in stat.parts.items() if k != case.main)
    return (
        f"  {case.name}: {stat.seconds:.3f} s (median of {stat.runs}), "
        f"peak {stat.peak_mib:,.0f} MiB" + (f"; {parts}" if parts else "")
    )


def imports_mib() -> float:
    """Peak RSS of a child that only has the suite's imports (the floor of every peak)."""
    receiver, sender = _context.Pipe(duplex=False)
    process = _context.Process(target=_report_peak, args=(sender,), daemon=True)
    process.start()
    sender.close()
    peak = float(receiver.recv())
    process.join()
    return peak


def _report_peak(conn: Connection) -> None:
    conn.send(_peak_mib())
    conn.close()
