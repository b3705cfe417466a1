"""The ``metalearn`` command line (also ``python -m metalearn``). Uses only the public API.

- ``metalearn demo``: build a synthetic history in the default store if it is empty, run
  both analyses and change detection per agent, write PNG plots and CSV tables to
  ``reports/`` and print a summary.
- ``metalearn report --db URL``: the same report for any store.
- ``metalearn import``: read trace exports or interchange CSVs into a store.
- ``metalearn worker``: run the analysis jobs queued in a store, until SIGTERM or SIGINT.
- ``metalearn status``: the analysis queue (pending, running, failed) and each agent's lag.
- ``metalearn export``: a store's plans and steps as Parquet datasets (appending) or CSVs.
- ``metalearn hints``: which next tool, after a prefix of tools, goes with success.

Progress goes to stderr (a bar on a terminal), results to stdout. Exit status: 0 done;
1 the work failed (unreadable or unreachable database, missing file, empty history: the
message says what to do); 2 bad arguments; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TextIO

import pandas as pd
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from metalearn import (
    AnalysisWorker,
    BackgroundOptions,
    ChangeReport,
    ExecutionAnalysis,
    HistoryStore,
    ImportReport,
    MetalearnError,
    MetaLearningService,
    PatternReport,
    queue_status,
)
from metalearn.export import export_csv
from metalearn.plots import save_plots
from metalearn.synthetic import make_history, planted_truth

__all__ = ["main"]

DEMO_PLANS = 20_000
DEFAULT_OUT = "reports"
_DB_HELP = f"SQLAlchemy URL (default: ${HistoryStore.URL_VARIABLE} or {HistoryStore.DEFAULT_URL})"
_CHUNK = 2_000  # plans per write while building the demo, so the bar moves


class CommandError(MetalearnError):
    """A command cannot do what it was asked; the message says what to do instead."""


class _Progress:
    """Stage lines on stderr, and a bar redrawn in place when stderr is a terminal."""

    def __init__(self, *, quiet: bool, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.started = time.monotonic()

    def stage(self, text: str) -> None:
        if not self.quiet:
            elapsed = time.monotonic() - self.started
            print(f"[{elapsed:5.1f}s] {text}", file=self.stream, flush=True)

    def bar(self, done: int, total: int, unit: str) -> None:
        if self.quiet or not self.stream.isatty():
            return
        filled = round(30 * done / max(total, 1))
        end = "\n" if done >= total else ""
        self.stream.write(f"\r        [{'#' * filled}{'.' * (30 - filled)}] "
                          f"{done:,}/{total:,} {unit}{end}")  # fmt: skip
        self.stream.flush()


# -- demo and report ---------------------------------------------------------------------


def _build_demo(store: HistoryStore, n_plans: int, seed: int, progress: _Progress) -> str:
    progress.stage(f"drawing a synthetic history of {n_plans:,} plans (seed {seed})")
    plans, steps = make_history(n_plans, seed=seed)
    progress.stage(f"recording it in {store.url}")
    for start in range(0, n_plans, _CHUNK):
        part = plans.iloc[start : start + _CHUNK]
        store.import_frames(part, steps[steps["plan_id"].isin(part["plan_id"])])
        progress.bar(min(start + _CHUNK, n_plans), n_plans, "plans")
    return f"built a demo history: {n_plans:,} plans, {len(steps):,} steps in {store.url}"


def _analyse(
    store: HistoryStore, args: argparse.Namespace, progress: _Progress
) -> tuple[ExecutionAnalysis, PatternReport, ChangeReport]:
    window = "the whole history" if args.days is None else f"the last {args.days:g} days"
    who = f"agent {args.agent!r}" if args.agent else "any agent"
    with MetaLearningService(store) as service:
        progress.stage(f"success rates of {who} over {window}")
        analysis = service.analyze_execution_patterns_sync(args.agent, time_range_days=args.days)
        if analysis.n_plans == 0:
            raise CommandError(_no_plans(store, who, window))
        progress.stage("testing tool sequences for an effect on success")
        report = service.extract_successful_patterns_sync(
            args.agent, time_range_days=args.days, min_support=args.min_support,
            max_gap=args.max_gap,
        )  # fmt: skip
        progress.stage("looking for a change in each agent's success rate")
        changes = service.detect_changes_sync("agent_id", time_range_days=args.days)
    return analysis, report, changes


def _no_plans(store: HistoryStore, who: str, window: str) -> str:
    total = len(store)
    if total == 0:
        return (f"{store.url} holds no plans yet; record or import some (`metalearn import`), "
                "or run `metalearn demo` for a synthetic history")  # fmt: skip
    return (f"no plans of {who} finished in {window} ({total:,} plans in {store.url}); "
            "drop --agent or widen --days")  # fmt: skip


def _write(
    results: Sequence[ExecutionAnalysis | PatternReport | ChangeReport],
    out: Path,
    progress: _Progress,
) -> list[Path]:
    written: list[Path] = []
    for result in results:
        progress.stage(f"writing the plots and tables of the {type(result).__name__} to {out}/")
        written += save_plots(result, out)
        written += export_csv(result, out)
    return written


def _rate(value: float) -> str:
    return "n/a" if value != value else f"{value:.1%}"


def _agents_lines(by_agent: pd.DataFrame) -> list[str]:
    if len(by_agent) < 2:
        return []
    ranked = by_agent.sort_values(["success_rate", "plans"], ascending=[False, False])
    width = max(len(str(a)) for a in ranked["agent_id"].iloc[[0, -1]])
    return [
        f"{label} {row.agent_id!s:<{width}}  {_rate(row.success_rate)} of {row.plans:,} plans"
        for label, row in [("best agent: ", ranked.iloc[0]), ("worst agent:", ranked.iloc[-1])]
    ]


def _pattern_lines(report: PatternReport, direction: str, top: int = 5) -> list[str]:
    rows = report.findings
    rows = rows[rows["direction"] == direction].head(top)  # findings: most significant first
    heading = f"findings that go with {direction} (most significant first):"
    if rows.empty:
        return [f"{heading} none"]
    lines = [f"  OR {r.mh_odds_ratio:5.2f} ({r.mh_ci_low:.2f}-{r.mh_ci_high:.2f})  "
             f"{r.plans:>7,} plans  q={r.q_value:<8.1e}  {r.pattern_text}"
             + (f"  [Simpson: pooled lift {r.lift:.2f}x]" if r.simpson else "")
             for r in rows.itertuples()]  # fmt: skip
    return [heading, *lines]


def _effect_line(report: PatternReport) -> str:
    within = "pooled" if report.stratify_by is None else f"within {report.stratify_by}"
    return (f"OR = Mantel-Haenszel odds ratio of success with the sequence ({within}), "
            "95% interval")  # fmt: skip


def _summary(analysis: ExecutionAnalysis, report: PatternReport) -> str:
    overall = analysis.overall.iloc[0]
    window = "whole history" if analysis.time_range_days is None else (
        f"last {analysis.time_range_days:g} days to {analysis.as_of:%Y-%m-%d}")  # fmt: skip
    return "\n".join([
        f"{analysis.n_plans:,} plans ({analysis.agent_id or 'all agents'}, {window}): "
        f"{_rate(analysis.success_rate)} succeeded "
        f"(95% CI {_rate(overall.ci_low)} to {_rate(overall.ci_high)})",
        *_agents_lines(analysis.by_agent),
        f"{len(report.patterns):,} tool sequences in >= {report.min_support} plans tested, "
        f"{int(report.patterns['significant'].sum()):,} significant (FDR {report.fdr:g}), "
        f"{len(report.findings):,} findings (no stronger overlapping sequence explains them)",
        _effect_line(report),
        *_pattern_lines(report, "success"),
        *_pattern_lines(report, "failure"),
    ])  # fmt: skip


def _change_lines(changes: ChangeReport, top: int = 3) -> list[str]:
    options = changes.options
    heading = (f"change points: {len(changes.significant)} of {len(changes.changes)} agents "
               f"with >= {options.min_plans} plans changed (FDR {options.fdr:g})")  # fmt: skip
    lines = [f"  {r['group']}: {_rate(r['rate_before'])} -> {_rate(r['rate_after'])} from "
             f"{r['changed_at']:%Y-%m-%d %H:%M} UTC (q={r['q_value']:.1e})"
             for r in changes.significant.head(top).to_dict("records")]  # fmt: skip
    return [heading, *lines]


def _planted_line(report: PatternReport) -> str:
    truth = planted_truth()
    effects = truth[truth["finding"]]
    found = report.findings
    hits = sum(
        ((found["pattern_text"] == row.pattern_text) & (found["direction"] == row.direction)).any()
        for row in effects.itertuples()
    )
    decoys = truth.loc[~truth["finding"], "pattern_text"]
    fooled = int(found["pattern_text"].isin(decoys).sum())
    return (
        f"planted ground truth: {hits} of {len(effects)} planted effects among the findings in "
        f"their direction, {fooled} of {len(decoys)} confounded decoys "
        "(metalearn.synthetic.planted_truth())"
    )


def _report_to(store: HistoryStore, args: argparse.Namespace, progress: _Progress) -> str:
    analysis, report, changes = _analyse(store, args, progress)
    written = _write([analysis, report, changes], Path(args.out), progress)
    lines = [_summary(analysis, report), *_change_lines(changes)]
    if args.command == "demo":
        lines.append(_planted_line(report))
    pictures = sum(p.suffix == ".png" for p in written)
    lines.append(f"wrote {pictures} PNG plots and {len(written) - pictures} CSV tables to "
                 f"{args.out}/ (start with patterns.png and success_by_agent.png)")  # fmt: skip
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    progress = _Progress(quiet=args.quiet)
    with HistoryStore(args.db) as store:
        if len(store) == 0:
            print(_build_demo(store, args.plans, args.seed, progress))
        else:
            print(f"using the existing history in {store.url}: {len(store):,} plans "
                  "(delete the database file to rebuild it)")  # fmt: skip
        print(_report_to(store, args, progress))
    return 0


def _require_database(url: str) -> None:
    """A report must not create an empty SQLite file where the user mistyped a path."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    if not Path(parsed.database).exists():
        raise CommandError(
            f"no database file at {parsed.database}; check --db, or run `metalearn demo` "
            "or `metalearn import` to create one"
        )


def _report(args: argparse.Namespace) -> int:
    progress = _Progress(quiet=args.quiet)
    _require_database(args.db if args.db is not None else HistoryStore.default_url())
    with HistoryStore(args.db) as store:
        print(_report_to(store, args, progress))
    return 0


# -- hints -----------------------------------------------------------------------------


def _hints(args: argparse.Namespace) -> int:
    _require_database(args.db if args.db is not None else HistoryStore.default_url())
    prefix = [] if not args.prefix.strip() else [t.strip() for t in args.prefix.split(",")]
    with HistoryStore(args.db) as store, MetaLearningService(store) as service:
        hints = service.next_step_hints_sync(
            prefix, agent_id=args.agent, goal_type=args.goal_type, time_range_days=args.days,
            min_support=args.min_support,
        )  # fmt: skip
    print(_hints_text(prefix, hints, args.min_support))
    return 0


def _hints_text(prefix: list[str], hints: pd.DataFrame, min_support: int) -> str:
    after = " → ".join(prefix) if prefix else "the start (first step)"
    if hints.empty:
        return f"after {after}: no next tool seen in >= {min_support} plans"
    lines = [f"after {after} (best 95% lower bound first; * significant):"]
    width = max(len(str(t)) for t in hints["next_tool"].fillna("(plan ended)"))
    for row in hints.to_dict("records"):
        tool = "(plan ended)" if pd.isna(row["next_tool"]) else row["next_tool"]
        flag = "*" if row["significant"] else " "
        lines.append(f"  {flag} {tool:<{width}}  {_rate(row['success_rate']):>6} "
                     f"[{_rate(row['ci_low'])}, {_rate(row['ci_high'])}] of {row['plans']:,} "
                     f"plans  lift {row['lift']:.2f}  q={row['q_value']:.1e}")  # fmt: skip
    return "\n".join(lines)


# -- import ----------------------------------------------------------------------------


def _import(args: argparse.Namespace) -> int:
    """Read trace exports (or interchange CSVs) into the store and summarise what happened."""
    csv = args.format == "csv"
    if csv == bool(args.paths) or csv != bool(args.plans and args.steps):
        print(
            "metalearn import: give --plans and --steps (and no PATH) for --format csv, "
            "and one or more PATHs for the trace formats",
            file=sys.stderr,
        )
        return 2
    try:
        with HistoryStore(args.db) as store:
            report = _import_into(store, args)
            print(f"imported {report.imported:,} plans ({report.steps:,} steps) into {store!r}")
            print(_rejections_summary(report.rejections))
    except (MetalearnError, OSError) as err:
        print(f"metalearn import: {err}", file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    """Write the store's history as Parquet datasets (incrementally) or interchange CSVs."""
    try:
        with HistoryStore(args.db) as store:
            if args.parquet is not None:
                done = store.export_parquet(args.parquet)
                print(f"exported {done.plans:,} plans ({done.steps:,} steps) with seq "
                      f"{done.after_seq + 1:,}..{done.last_seq:,} from {store!r} to "
                      f"{done.plans_path} and {done.steps_path}"
                      if done.plans else f"nothing new since seq {done.last_seq:,}")  # fmt: skip
            else:
                plans_path, steps_path = store.export_csv(args.csv)
                print(f"exported {store!r} to {plans_path} and {steps_path}")
    except (MetalearnError, OSError) as err:
        print(f"metalearn export: {err}", file=sys.stderr)
        return 1
    return 0


def _import_into(store: HistoryStore, args: argparse.Namespace) -> ImportReport:
    from metalearn import importers  # the trace readers load only for this command

    on_error: Literal["raise", "skip"] = "skip" if args.skip_bad else "raise"
    if args.format == "csv":
        return store.import_csv(args.plans, args.steps, on_error=on_error)
    read = getattr(importers, f"read_{args.format}")
    result = read(
        args.paths, per_agent=args.per_agent, flatten=args.flatten, goal_type=args.goal_type
    )
    print(_traces_summary(result.report))
    return store.import_frames(result.plans, result.steps, on_error=on_error)


def _traces_summary(report: pd.DataFrame) -> str:
    skipped = report[report["skipped_reason"].notna()]
    lines = [f"read {report['trace_id'].nunique():,} traces: {len(report) - len(skipped):,} plans"]
    lines.append(f"skipped {len(skipped):,} traces" + (":" if len(skipped) else ""))
    lines += [f"  {row.trace_id}: {row.skipped_reason}" for row in skipped.itertuples()]
    return "\n".join(lines)


def _rejections_summary(rejections: pd.DataFrame) -> str:
    lines = [f"rejected {len(rejections):,} plans" + (":" if len(rejections) else "")]
    for row in rejections.to_dict("records"):
        where = f"{row['table']} row {row['row']}"
        if row["field"]:
            where += f", field {row['field']}"
        lines.append(f"  {row['plan_id']} ({where}): {row['reason']}")
    return "\n".join(lines)


# -- worker and status -----------------------------------------------------------------


def _worker(args: argparse.Namespace) -> int:
    """Run an analysis worker until SIGTERM or SIGINT (a second signal interrupts at once)."""

    if args.nice:
        os.nice(args.nice)  # this process only: a worker gives way to the apps on its machine
    with _log_to_stderr(quiet=args.quiet):
        worker = AnalysisWorker(
            args.db, batch_size=args.batch_size, concurrency=args.concurrency,
            lease_seconds=args.lease_seconds, min_interval_s=args.min_interval,
            threads=args.threads or None,
            warehouse_path=args.warehouse,
            options=_background_options(args), poll_s=args.poll, max_attempts=args.max_attempts,
            retry_backoff_s=args.retry_backoff, stop_timeout_s=args.grace,
        )  # fmt: skip
        with worker, _stop_on_signals(worker), _stop_on_eof(worker, enabled=args.stop_on_eof):
            worker.run()
    stats = worker.stats()
    print(f"worker {stats['owner']} stopped: " + ", ".join(
        f"{stats[name]:,} {name}" for name in ("batches", "claimed", "completed", "requeued",
                                               "retried", "failed", "released", "lost", "errors")
    ))  # fmt: skip
    return 0


def _background_options(args: argparse.Namespace) -> BackgroundOptions:
    return BackgroundOptions.build(
        time_range_days=args.days, min_length=args.min_length, max_length=args.max_length,
        min_support=args.min_support, fdr=args.fdr, keep_snapshots=args.keep_snapshots,
    )  # fmt: skip


@contextmanager
def _log_to_stderr(*, quiet: bool) -> Iterator[None]:
    """The package's log lines on stderr while a long-running command runs."""
    package = logging.getLogger("metalearn")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = package.level
    package.setLevel(logging.WARNING if quiet else logging.INFO)
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)


@contextmanager
def _stop_on_signals(worker: Any) -> Iterator[None]:
    """SIGTERM or SIGINT stops the worker (finish, then release); a second one interrupts."""

    def on_signal(signum: int, _frame: object) -> None:
        worker.stop(interrupt=worker.stop_requested)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _stop_on_eof(worker: Any, *, enabled: bool) -> Iterator[None]:
    """With ``--stop-on-eof``: stop the worker when stdin closes, which is how the app that
    started it says stop, and what the kernel does when that app dies."""
    if enabled:

        def wait_for_eof() -> None:
            while sys.stdin.buffer.read(4096):
                pass
            worker.stop()

        threading.Thread(target=wait_for_eof, name="metalearn-stdin", daemon=True).start()
    yield


def _status(args: argparse.Namespace) -> int:
    _require_database(args.db if args.db is not None else HistoryStore.default_url())
    with HistoryStore(args.db) as store:
        status = queue_status(store, limit=args.limit)
    print(json.dumps(status, indent=2) if args.json else _status_text(status))
    return 0


def _status_text(status: dict[str, Any]) -> str:
    stats = status["stats"]
    oldest = stats["oldest_wait_s"]
    lines = [
        f"analysis jobs in {status['url']}:",
        f"  {stats['pending']:,} pending, {stats['running']:,} running "
        f"({stats['expired']:,} with an expired lease), {stats['failed']:,} failed, "
        f"{stats['done']:,} done ({stats['done_last_hour']:,} in the last hour)",
        f"  {stats['plans_waiting']:,} plans waiting; "
        + ("none waits" if oldest is None else f"the oldest for {_duration(oldest)}"),
    ]
    for state, headers in _STATUS_HEADERS.items():
        lines += _status_section(state, stats[state], status[state], headers)
    lines += _status_section(
        "agents behind their latest snapshot", status["agents_behind"], status["lag"], _LAG_HEADERS
    )
    return "\n".join(lines)


_STATUS_HEADERS = {
    "running": {"agent_id": "agent", "owner": "owner", "lease_age_s": "lease age",
                "lease_left_s": "lease left", "attempts": "attempt", "plans": "plans",
                "late_plans": "late plans"},
    "pending": {"agent_id": "agent", "priority": "priority", "plans": "plans",
                "wait_s": "waiting", "attempts": "attempts", "retry_in_s": "retry in",
                "error": "last error"},
    "failed": {"agent_id": "agent", "attempts": "attempts", "finished_at": "failed at",
               "error": "error"},
}  # fmt: skip
_LAG_HEADERS = {"agent_id": "agent", "last_seq": "newest plan seq",
                "through_seq": "snapshot through seq", "behind": "lag (seqs)",
                "job": "job"}  # fmt: skip


def _status_section(
    title: str, total: int, rows: list[dict[str, Any]], headers: dict[str, str]
) -> list[str]:
    if not rows:
        return [f"{title}: none"]
    shown = "" if len(rows) == total else f", the first {len(rows):,}"
    table = [list(headers.values())]
    table += [[_cell(name, row[name]) for name in headers] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    numeric = [all(_numeric(row[name]) for row in rows) for name in headers]
    return [f"{title} ({total:,}{shown}):"] + [
        "  " + "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(line, widths, numeric, strict=True)
        ).rstrip()
        for line in table
    ]  # fmt: skip


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name.endswith("_s"):
        return _duration(value)
    if name.endswith("_at"):
        return str(value)[:19].replace("T", " ")  # UTC, to the second
    text = str(value).splitlines()[0] if str(value) else ""
    return text if len(text) <= 100 else text[:99] + "…"


def _numeric(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _duration(seconds: float) -> str:
    if abs(seconds) < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if abs(seconds) < 7200 else f"{seconds / 3600:.1f} h"


# -- arguments -------------------------------------------------------------------------


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _add_report_options(command: argparse.ArgumentParser, *, whole_history: bool) -> None:
    command.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"where to write the PNG plots and CSV tables (default: {DEFAULT_OUT}/)",
    )
    command.add_argument(
        "--min-support",
        type=_positive(int),
        default=20,
        metavar="N",
        help="test tool sequences found in at least N plans (default: 20)",
    )
    command.add_argument(
        "--max-gap",
        type=int,
        default=0,
        metavar="K",
        help="let up to K other steps come between consecutive tools of a sequence "
        "(default: 0, contiguous)",
    )
    command.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    if whole_history:
        command.set_defaults(agent=None, days=None)


def _demo_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="build a synthetic demo history (if the store is empty) and report on it",
        description="Build a synthetic history with planted patterns in the store if it is "
        "empty, run both analyses over the whole history, write PNG plots and CSV tables and "
        "print a summary.",
    )
    demo.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    demo.add_argument(
        "--plans",
        type=_positive(int),
        default=DEMO_PLANS,
        metavar="N",
        help=f"plans to generate when the store is empty (default: {DEMO_PLANS:,})",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed of the demo history")
    _add_report_options(demo, whole_history=True)
    demo.set_defaults(run=_demo)


def _report_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser(
        "report",
        help="analyse a store: success rates, patterns, plots and CSV tables",
        description="Run both analyses on a store, write PNG plots and CSV tables and print "
        "a summary.",
        epilog=f"example: metalearn report --db {HistoryStore.DEFAULT_URL} --agent support-bot "
        "--days 30 --out reports/support-bot",
    )
    report.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    report.add_argument("--agent", default=None, metavar="ID", help="one agent (default: all)")
    report.add_argument(
        "--days",
        type=_positive(float),
        default=None,
        metavar="N",
        help="plans that finished in the last N days (default: all history)",
    )
    _add_report_options(report, whole_history=False)
    report.set_defaults(run=_report)


def _export_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = commands.add_parser(
        "export",
        help="write a store's plans and steps as Parquet datasets (appending) or CSVs",
        description="Write the store's plans and steps in the interchange columns: as two "
        "Parquet datasets DIR/plans/ and DIR/steps/, partitioned by finish day, appending "
        "only the plans recorded since the last export into DIR; or as plans.csv and "
        "steps.csv (which `metalearn import --format csv` reads back).",
        epilog="example: metalearn export --db sqlite:///history.db --parquet lake/agents",
    )
    export.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("--parquet", metavar="DIR", help="the Parquet export directory")
    target.add_argument("--csv", metavar="DIR", help="write plans.csv and steps.csv here")
    export.set_defaults(run=_export)


def _import_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    trace_import = commands.add_parser(
        "import",
        help="import traces (OTLP JSON, OpenInference, Langfuse, MLflow) or CSVs into the store",
        description="Read trace exports or interchange CSVs into a store and summarise what "
        "was imported, skipped and rejected.",
    )
    trace_import.add_argument(
        "--format",
        required=True,
        choices=["otlp", "openinference", "langfuse", "mlflow", "csv"],
        help="what PATH holds; csv reads --plans and --steps in the interchange format",
    )
    trace_import.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    trace_import.add_argument("paths", nargs="*", metavar="PATH", help="trace files to read")
    trace_import.add_argument("--plans", default=None, help="plans.csv (with --format csv)")
    trace_import.add_argument("--steps", default=None, help="steps.csv (with --format csv)")
    trace_import.add_argument(
        "--skip-bad", action="store_true", help="write the valid plans and report bad ones"
    )
    trace_import.add_argument(
        "--per-agent", action="store_true", help="make each agent subtree its own plan"
    )
    trace_import.add_argument(
        "--flatten", action="store_true", help="count nested tool spans as steps too"
    )
    trace_import.add_argument(
        "--goal-type", default=None, metavar="ATTRIBUTE", help="attribute holding the goal type"
    )
    trace_import.set_defaults(run=_import)


def _non_negative(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _days(text: str) -> float | None:
    return None if text == "all" else _positive(float)(text)


def _worker_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser(
        "worker",
        help="run analysis jobs from the store's queue until SIGTERM or SIGINT",
        description="Claim the analysis jobs that recorded plans queue in the store, analyse "
        "each batch of agents and store their snapshots, until SIGTERM or SIGINT; then stop "
        "claiming, finish (or, after --grace seconds or a second signal, interrupt and "
        "release) what is running, and exit 0. Any number of workers may share a store.",
        epilog="example: METALEARN_DB_URL=postgresql+psycopg://user:password@host/db "
        "metalearn worker --concurrency 2 (the URL stays out of ps)",
    )
    worker.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    worker.add_argument(
        "--batch-size",
        type=_positive(int),
        default=16,
        metavar="N",
        help="agents claimed and analysed together (default: 16)",
    )
    worker.add_argument(
        "--concurrency",
        type=_positive(int),
        default=1,
        metavar="N",
        help="batches analysed at once (default: 1)",
    )
    worker.add_argument(
        "--lease-seconds",
        type=_positive(float),
        default=30.0,
        metavar="S",
        help="a claim's lease, renewed every S/3 while its batch runs; a dead "
        "worker's jobs are claimed again S after its last renewal (default: 30)",
    )
    worker.add_argument(
        "--threads",
        type=_non_negative(int),
        default=1,
        metavar="N",
        help="DuckDB threads of the analyses (default: 1, leaving the other cores to the "
        "apps on this machine; 0: one per core)",
    )
    worker.add_argument(
        "--min-interval",
        type=_non_negative(float),
        default=2.0,
        metavar="S",
        help="analyse an agent again only S seconds after its last run ended: its new "
        "plans coalesce meanwhile, and the store sees fewer snapshot writes (default: 2)",
    )
    worker.add_argument(
        "--warehouse",
        default=None,
        metavar="PATH",
        help="the DuckDB warehouse file (default: beside a SQLite store, "
        "<file>.warehouse.duckdb; in memory for other stores; :memory: for "
        "none). A file in use by another worker is left to it: this one "
        "takes PATH.N.duckdb beside it, or memory",
    )
    worker.add_argument(
        "--nice",
        type=int,
        default=10,
        metavar="N",
        help="lower this process's CPU priority by N (default: 10; 0 keeps it)",
    )
    worker.add_argument(
        "--days",
        type=_days,
        default=30.0,
        metavar="N",
        help="analyse the plans that finished in the last N days, or 'all' (default: 30)",
    )
    worker.add_argument(
        "--min-support",
        type=_positive(int),
        default=20,
        metavar="N",
        help="test tool sequences found in at least N plans (default: 20)",
    )
    worker.add_argument(
        "--min-length",
        type=_positive(int),
        default=1,
        metavar="N",
        help="shortest tool sequence tested (default: 1)",
    )
    worker.add_argument(
        "--max-length",
        type=_positive(int),
        default=4,
        metavar="N",
        help="longest tool sequence tested (default: 4)",
    )
    worker.add_argument(
        "--fdr",
        type=float,
        default=0.05,
        metavar="Q",
        help="false discovery rate of the pattern tests (default: 0.05)",
    )
    worker.add_argument(
        "--keep-snapshots",
        type=_positive(int),
        default=20,
        metavar="N",
        help="snapshots kept per agent (default: 20)",
    )
    worker.add_argument(
        "--max-attempts",
        type=_positive(int),
        default=3,
        metavar="N",
        help="claims of a job before it is marked failed (default: 3)",
    )
    worker.add_argument(
        "--retry-backoff",
        type=_non_negative(float),
        default=0.5,
        metavar="S",
        help="wait S x 2^(attempt-1) before a failed job runs again (default: 0.5)",
    )
    worker.add_argument(
        "--poll",
        type=_positive(float),
        default=0.5,
        metavar="S",
        help="look for due jobs every S seconds when idle (default: 0.5)",
    )
    worker.add_argument(
        "--grace",
        type=_non_negative(float),
        default=10.0,
        metavar="S",
        help="on SIGTERM, let running batches finish for up to S seconds "
        "before interrupting and releasing them (default: 10)",
    )
    worker.add_argument(
        "--stop-on-eof",
        action="store_true",
        help="also stop when stdin closes (how an app that started this worker stops it)",
    )
    worker.add_argument(
        "-q", "--quiet", action="store_true", help="log only warnings and errors on stderr"
    )
    worker.set_defaults(run=_worker)  # fmt: skip


def _status_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="show the analysis queue: pending, running and failed jobs, and each agent's lag",
        description="Print the store's analysis jobs (pending, running with their owner and "
        "lease age, failed with their error), the oldest wait, jobs done in the last hour, "
        "and the agents whose latest snapshot does not cover their newest plan.",
    )
    status.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    status.add_argument("--limit", type=_positive(int), default=20, metavar="N",
                        help="rows shown per section (default: 20)")  # fmt: skip
    status.set_defaults(run=_status)


def _hints_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hints = commands.add_parser(
        "hints",
        help="which next tool, after the tools a plan ran so far, goes with success",
        description="Among the plans whose steps begin with exactly the given tools, the "
        "success rate of each next tool (95%% Wilson interval, lift, Fisher test, BH q-value), "
        "best lower bound first.",
        epilog="example: metalearn hints --db sqlite:///data/metalearn.db "
        '--prefix "search_web,fetch_page" --agent support-bot',
    )
    hints.add_argument("--db", default=None, metavar="URL", help=_DB_HELP)
    hints.add_argument("--prefix", default="", metavar="TOOLS",
                       help="comma-separated tools from the first step (default: none, "
                       "hints for the first step)")  # fmt: skip
    hints.add_argument("--agent", default=None, metavar="ID", help="one agent (default: all)")
    hints.add_argument("--goal-type", default=None, metavar="TYPE",
                       help="one goal type (default: all)")  # fmt: skip
    hints.add_argument("--days", type=_positive(float), default=None, metavar="N",
                       help="plans of the last N days (default: the whole history)")  # fmt: skip
    hints.add_argument("--min-support", type=_positive(int), default=10, metavar="N",
                       help="next tools seen in at least N plans (default: 10)")  # fmt: skip
    hints.set_defaults(run=_hints)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metalearn",
        description="Learn from AI agents' execution history.",
        epilog="start with `metalearn demo`; `metalearn COMMAND --help` explains each command",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _demo_parser(commands)
    _report_parser(commands)
    _import_parser(commands)
    _export_parser(commands)
    _worker_parser(commands)
    _status_parser(commands)
    _hints_parser(commands)
    return parser


def _explain(err: Exception) -> str:
    if isinstance(err, ArgumentError):
        return (f"{err}; give a SQLAlchemy URL such as {HistoryStore.DEFAULT_URL} or "
                "postgresql+psycopg://user:password@host/database")  # fmt: skip
    if isinstance(err, ImportError):
        return (
            f"{err}; the database driver is missing (PostgreSQL: pip install 'metalearn[postgres]')"
        )
    if isinstance(err, SQLAlchemyError):
        return f"cannot use the database: {str(err).splitlines()[0]}"
    return str(err)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except (MetalearnError, OSError, SQLAlchemyError, ImportError) as err:
        print(f"metalearn {args.command}: {_explain(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"metalearn {args.command}: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
