"""The ``metalearn`` command line. Uses only the public API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd

from metalearn import HistoryStore
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
