"""The ``metalearn`` command line. Uses only the public API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Literal

import pandas as pd

from metalearn import HistoryStore, ImportReport, MetalearnError
from metalearn.synthetic import make_history, planted_patterns

__all__ = ["main"]

DEMO_PLANS = 20_000


def _summary(store: HistoryStore) -> str:
    frames = [
        batch.plans.select(["agent_id", "status", "finished_at"]).to_pandas()
        for batch in store.iter_batches()
    ]
    plans = pd.concat(frames, ignore_index=True)
    by_agent = (
        plans.assign(succeeded=plans["status"] == "succeeded")
        .groupby("agent_id")["succeeded"]
        .agg(plans="size", success_rate="mean")
        .sort_values("plans", ascending=False)
    )
    lines = [
        repr(store),
        f"plans finished {plans['finished_at'].min():%Y-%m-%d} .. "
        f"{plans['finished_at'].max():%Y-%m-%d}; "
        f"overall success rate {(plans['status'] == 'succeeded').mean():.1%}",
        "",
        by_agent.to_string(formatters={"success_rate": "{:.1%}".format}),
    ]
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    with HistoryStore(args.db) as store:
        if len(store) == 0:
            plans, steps = make_history(args.plans, seed=args.seed)
            report = store.import_frames(plans, steps)
            print(f"built a demo history: {report.imported:,} plans, {report.steps:,} steps")
        else:
            print("using the existing history (delete the database file to rebuild it)")
        print(_summary(store))
        print("\nplanted patterns (ground truth the analyses should recover):")
        print(planted_patterns()[["pattern_text", "direction", "log_odds"]].to_string(index=False))
    return 0


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
    lines += [
        f"  {row.plan_id} ({row.table} row {row.row}, field {row.field}): {row.reason}"
        for row in rejections.itertuples()
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metalearn", description="Learn from AI agents' execution history."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="build a synthetic demo history in the store and summarise it"
    )
    demo.add_argument(
        "--db",
        default=None,
        help="SQLAlchemy URL (default: $METALEARN_DB_URL or sqlite:///data/metalearn.db)",
    )
    demo.add_argument("--plans", type=int, default=DEMO_PLANS, help="plans to generate")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the demo history")
    demo.set_defaults(run=_demo)
    trace_import = commands.add_parser(
        "import",
        help="import traces (OTLP JSON, OpenInference, Langfuse, MLflow) or CSVs into the store",
    )
    trace_import.add_argument(
        "--format",
        required=True,
        choices=["otlp", "openinference", "langfuse", "mlflow", "csv"],
        help="what PATH holds; csv reads --plans and --steps in the interchange format",
    )
    trace_import.add_argument(
        "--db",
        default=None,
        help="SQLAlchemy URL (default: $METALEARN_DB_URL or sqlite:///data/metalearn.db)",
    )
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
