"""Store benchmark: history generation, bulk import and incremental reads vs pandas' own route.

Each case runs in a fresh subprocess (so peak RSS is its own), several times; the table
shows the median seconds, the peak RSS and metalearn / baseline ratios.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
END = "2026-11-01T00:00:00+00:00"


def _history(n: int) -> Any:
    from datetime import datetime

    from metalearn.synthetic import make_history

    return make_history(n, seed=0, end=datetime.fromisoformat(END))


def case_make_history(n: int, workdir: Path) -> float:
    import metalearn.synthetic  # noqa: F401  (import time is not the generator's)

    start = time.perf_counter()
    _history(n)
    return time.perf_counter() - start


def _prepared(n: int, workdir: Path) -> Any:
    """Frames read from a pickle so that the timed part is only the import."""
    import pandas as pd

    cache = workdir / f"history-{n}.pkl"
    if not cache.exists():
        pd.to_pickle(_history(n), cache)
    return pd.read_pickle(cache)


def case_import_frames(n: int, workdir: Path) -> float:
    from metalearn import HistoryStore

    plans, steps = _prepared(n, workdir)
    db = workdir / f"import-{time.time_ns()}.db"
    start = time.perf_counter()
    with HistoryStore(f"sqlite:///{db}") as store:
        store.import_frames(plans, steps)
    return time.perf_counter() - start


def case_pandas_to_sql(n: int, workdir: Path) -> float:
    """Baseline: pandas' DataFrame.to_sql of both tables (no validation, no seq)."""
    from sqlalchemy import create_engine

    plans, steps = _prepared(n, workdir)
    db = workdir / f"to_sql-{time.time_ns()}.db"
    start = time.perf_counter()
    engine = create_engine(f"sqlite:///{db}")
    plans.to_sql("plans", engine, index=False, chunksize=50_000)
    steps.to_sql("steps", engine, index=False, chunksize=50_000)
    engine.dispose()
    return time.perf_counter() - start


def _stored(n: int, workdir: Path) -> Path:
    from metalearn import HistoryStore

    db = workdir / f"stored-{n}.db"
    if not db.exists():
        plans, steps = _prepared(n, workdir)
        with HistoryStore(f"sqlite:///{db}") as store:
            store.import_frames(plans, steps)
    return db


def case_read_batches(n: int, workdir: Path) -> float:
    from metalearn import HistoryStore

    db = _stored(n, workdir)
    start = time.perf_counter()
    with HistoryStore(f"sqlite:///{db}") as store:
        rows = sum(batch.steps.num_rows for batch in store.iter_batches())
    assert rows > 0
    return time.perf_counter() - start


def case_pandas_read_sql(n: int, workdir: Path) -> float:
    """Baseline: pandas.read_sql of both tables (the join included) through SQLAlchemy."""
    import pandas as pd
    from sqlalchemy import create_engine

    db = _stored(n, workdir)
    start = time.perf_counter()
    engine = create_engine(f"sqlite:///{db}")
    pd.read_sql("SELECT * FROM metalearn_plans", engine)
    pd.read_sql(
        "SELECT s.*, p.plan_id FROM metalearn_steps s JOIN metalearn_plans p ON p.seq = s.plan_seq",
        engine,
    )
    engine.dispose()
    return time.perf_counter() - start


def case_record_plan(n: int, workdir: Path) -> float:
    """One transaction per plan (the finalize path), for the first n plans."""
    from metalearn import HistoryStore, Plan

    plans, steps = _prepared(max(n, 10_000), workdir)
    plans = plans.head(n)
    grouped = dict(tuple(steps[steps["plan_id"].isin(plans["plan_id"])].groupby("plan_id")))
    records = [
        Plan(
            row.plan_id,
            row.agent_id,
            row.status,
            row.started_at,
            row.finished_at,
            goal_type=row.goal_type if isinstance(row.goal_type, str) else None,
            steps=[{"tool": t} for t in grouped[row.plan_id]["tool"]],
        )
        for row in plans.itertuples()
    ]
    db = workdir / f"record-{time.time_ns()}.db"
    start = time.perf_counter()
    with HistoryStore(f"sqlite:///{db}") as store:
        for plan in records:
            store.record_plan(plan)
    return time.perf_counter() - start


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


def _child(case: str, n: int, workdir: str) -> None:
    start = time.perf_counter()
    inner = CASES[case](n, Path(workdir))
    elapsed = inner if isinstance(inner, float) else time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "peak_mib": peak_mib}))


def measure(case: str, n: int, workdir: Path, repeats: int) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.store", "--child", case, str(n), str(workdir)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_mib": max(r["peak_mib"] for r in runs),
    }


def main(sizes: list[int], repeats: int = 3) -> str:
    pairs = [
        ("make_history", None),
        ("import_frames", "pandas_to_sql"),
        ("read_batches", "pandas_read_sql"),
    ]
    lines = [
        "| plans | metalearn case | s (median) | peak MiB "
        "| baseline | s (median) | peak MiB | ratio |",
        "|---:|---|---:|---:|---|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for n in sizes:
            for case, baseline in pairs:
                ours = measure(case, n, workdir, repeats)
                if baseline is None:
                    lines.append(
                        f"| {n:,} | {case} | {ours['seconds']:.2f} | {ours['peak_mib']:.0f}"
                        " | - | - | - | - |"
                    )
                else:
                    base = measure(baseline, n, workdir, repeats)
                    lines.append(
                        f"| {n:,} | {case} | {ours['seconds']:.2f} | {ours['peak_mib']:.0f} | "
                        f"{baseline} | {base['seconds']:.2f} | {base['peak_mib']:.0f} | "
                        f"{ours['seconds'] / base['seconds']:.2f} |"
                    )
                print(lines[-1], flush=True)
        single = min(sizes[0], 2_000)
        record = measure("record_plan", single, workdir, repeats)
        bulk = measure("import_frames", single, workdir, repeats)
        lines.append(
            f"| {single:,} | record_plan (1 txn/plan) | {record['seconds']:.2f} | "
            f"{record['peak_mib']:.0f} | import_frames | {bulk['seconds']:.2f} | "
            f"{bulk['peak_mib']:.0f} | {record['seconds'] / bulk['seconds']:.2f} |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines)


def run(sizes: list[int]) -> Path:
    """Measure, print the table as it grows, and write it to results/store.md."""
    table = main(sizes)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "store.md"
    path.write_text("# Store benchmark (SQLite file, 2 cores)\n\n" + table + "\n")
    print(f"\nwritten to {path}")
    return path


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        run([int(s) for s in sys.argv[1:]] or [10_000, 100_000])
