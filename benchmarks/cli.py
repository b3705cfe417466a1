"""``python -m benchmarks``: the suite; ``... background``, ``... store`` and ``... import_csv``:
the others."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks import agreement, histories, report, suite
from benchmarks.histories import History

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
SIZES = [10_000, 100_000, 1_000_000]
QUICK_SIZES = [10_000, 100_000]
ORDER = [
    "cold_build",
    "pandas_load",
    "refresh_1",
    "refresh_1000",
    "analyze",
    "pandas_rates",
    "extract",
    "extract_stratified",
    "pandas_ngrams",
    "pandas_cmh",
    "prefixspan_20",
    "prefixspan_5pct",
    "pm4py_variants",
    "agent_job",
    "agent_job_all",
]
KEPT = {
    "analyze": "metalearn_rates",
    "extract": "metalearn_patterns",
    "pandas_rates": "pandas_rates",
    "pandas_ngrams": "pandas_ngrams",
}
STRATIFIED_KEPT = {"extract_stratified": "metalearn_stratified", "pandas_cmh": "pandas_stratified"}
NOT_QUICK = ("agent_job_all",)
"""--quick leaves out the whole-history agent job (not one of the issue's rows)."""
PLAN_COUNTS = ("cold_build", "pandas_load", "analyze", "extract", "extract_stratified")

EPILOG = """other benchmarks:
  python -m benchmarks background [--history N --plans N ...]   event-loop lag, finalize latency
  python -m benchmarks store [SIZES...]                           store import and reads
  python -m benchmarks import_csv [--sizes N ...]                 import_csv peak memory and time
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="metalearn vs pandas, PM4Py and prefixspan on 10k / 100k / 1M plans.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10,000 and 100,000 plans only, slow baselines once, capped at 10 s",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        metavar="N",
        help=f"history sizes (default {' '.join(map(str, SIZES))})",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="stop a baseline's timed part after S seconds (default 120, quick 10)",
    )
    parser.add_argument(
        "--single-above",
        type=float,
        metavar="S",
        help="run a baseline once when its first run takes over S seconds (default 60, quick 2)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=ORDER,
        metavar="CASE",
        help=f"measure only these: {', '.join(ORDER)}",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help="where benchmarks.md and benchmarks.json go"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["background"]:
        from benchmarks import background

        background.main(argv[1:])
        return 0
    if argv[:1] == ["store"]:
        from benchmarks import store

        store.run([int(s) for s in argv[1:]] or [10_000, 100_000])
        return 0
    if argv[:1] == ["import_csv"]:
        from benchmarks import import_csv

        return import_csv.main(argv[1:])
    args = _parser().parse_args(argv)
    if args.repeats < 1:
        _parser().error("--repeats must be at least 1")
    return run_suite(
        args.sizes or (QUICK_SIZES if args.quick else SIZES),
        repeats=args.repeats,
        limit_s=args.timeout or (10.0 if args.quick else 120.0),
        single_above_s=args.single_above or (2.0 if args.quick else 60.0),
        only=args.only,
        quick=args.quick,
        output=args.output,
    )


def _ensure(n: int, key: str) -> History:
    """The cached history, built by a child process (the parent stays small)."""
    history = histories.cached(n, key)
    if not all(p.exists() for p in history.files()):
        subprocess.run([sys.executable, "-m", "benchmarks.histories", str(n)], check=True, cwd=ROOT)
    return history


def _wanted(name: str, only: list[str] | None, quick: bool, done: dict[str, suite.Stat]) -> bool:
    if only is not None:
        return name in only
    if name == "prefixspan_5pct":  # only when a support of 20 plans was too slow
        first = done.get("prefixspan_20")
        return first is not None and first.timed_out is not None
    return not (quick and name in NOT_QUICK)


def _agreement(n: int, stats: dict[str, suite.Stat], outdir: Path) -> list[str] | None:
    """Compare what the timed metalearn and pandas runs computed (None: not all ran)."""
    problems = [
        f"{case} saw {s.info['plans']:,} plans, the history has {n:,}"
        for case in PLAN_COUNTS
        if (s := stats.get(case)) and "plans" in s.info and s.info["plans"] != n
    ]
    problems += _stratified_agreement(n, stats, outdir) or []
    paths = {case: outdir / f"{kept}-{n}.pkl" for case, kept in KEPT.items()}
    if any(stats.get(c) is None or stats[c].seconds is None for c in KEPT):
        return problems or None
    kept = {case: pd.read_pickle(path) for case, path in paths.items()}
    return problems + agreement.compare(
        kept["analyze"], kept["extract"], kept["pandas_rates"], kept["pandas_ngrams"]
    )


def _stratified_agreement(n: int, stats: dict[str, suite.Stat], outdir: Path) -> list[str] | None:
    """Compare the stratified figures of the timed runs (None: not both ran)."""
    if any(stats.get(c) is None or stats[c].seconds is None for c in STRATIFIED_KEPT):
        return None
    ours, theirs = (pd.read_pickle(outdir / f"{kept}-{n}.pkl") for kept in STRATIFIED_KEPT.values())
    return agreement.compare_stratified(ours, theirs)


def _loud(lines: list[str]) -> None:
    bar = "!" * 78
    print("\n".join([bar, *lines, bar]), file=sys.stderr, flush=True)


def run_suite(
    sizes: list[int],
    *,
    repeats: int,
    limit_s: float,
    single_above_s: float,
    only: list[str] | None,
    quick: bool = False,
    output: Path,
) -> int:
    """Measure every size, print and write the results; 1 if anything disagreed or failed."""
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    key = histories.cache_key()
    built = [_ensure(n, key) for n in sizes]
    stamps = {h.n: h.stamp() for h in built}
    results: dict[int, dict[str, suite.Stat]] = {}
    agreed: dict[int, list[str] | None] = {}
    with tempfile.TemporaryDirectory(dir=histories.CACHE, prefix="run-") as tmp:
        workdir, outdir = Path(tmp), Path(tmp) / "kept"
        outdir.mkdir()
        floor = suite.imports_mib()
        for history in built:
            print(f"\n{history.n:,} plans", flush=True)
            stats: dict[str, suite.Stat] = {}
            for name in (n for n in ORDER if _wanted(n, only, quick, stats)):
                case = suite.CASES[name]
                limit = None if case.system == "metalearn" else limit_s
                spec = suite.Spec(name, history, workdir, outdir, limit)
                stats[name] = suite.measure(
                    case, spec, repeats=repeats, single_above_s=single_above_s, log=print
                )
            results[history.n] = stats
            agreed[history.n] = _agreement(history.n, stats, outdir)
    config = {
        "sizes": sizes,
        "repeats": repeats,
        "limit_s": limit_s,
        "single_above_s": single_above_s,
        "only": only,
        "quick": quick,
        "output": str(output),
        "end": histories.END.isoformat(),
        "agent": suite.AGENT,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    result = report.Report(results, agreed, config, report.machine(floor, load_start))
    text = result.markdown()
    print("\n" + text)
    md, js = result.write(output, _stem(quick, only, sizes))
    print(f"written to {md} and {js} ({config['wall_s']:.0f} s)")
    unchecked = [n for n, problems in agreed.items() if problems is None]
    if unchecked and only is None:
        _loud(
            [
                f"WARNING: agreement not checked at {n:,} plans: analyze, extract, pandas_rates "
                "or pandas_ngrams did not finish"
                for n in unchecked
            ]
        )
    return _verdict(results, agreed, built, stamps)


def _stem(quick: bool, only: list[str] | None, sizes: list[int]) -> str:
    """benchmarks.md for a full run; quick and partial runs do not overwrite it."""
    if quick:
        return "benchmarks-quick"
    return "benchmarks" if only is None and sizes == SIZES else "benchmarks-partial"


def _verdict(
    results: dict[int, dict[str, suite.Stat]],
    agreed: dict[int, list[str] | None],
    built: list[History],
    stamps: dict[int, list[tuple[str, int, int]]],
) -> int:
    failures = []
    for n, problems in agreed.items():
        if problems:
            failures.append(
                f"DISAGREEMENT at {n:,} plans: metalearn and the pandas baseline "
                f"differ ({len(problems)}):"
            )
            failures += [f"  {p}" for p in problems]
    failures += [
        f"FAILED: {name} at {n:,} plans (see its traceback above)"
        for n, stats in results.items()
        for name, s in stats.items()
        if s.error
    ]
    failures += [
        f"A MEASUREMENT CHANGED THE CACHED STORE {h.store}"
        for h in built
        if h.stamp() != stamps[h.n]
    ]
    if failures:
        _loud(failures)
        return 1
    return 0
