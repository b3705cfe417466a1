"""``python -m benchmarks.import_csv``: peak memory and time of ``HistoryStore.import_csv``.

The files are the benchmark histories (``histories.make(n)``) written by
``HistoryStore.export_csv``, cached under ``benchmarks/cache/``. Every import runs in a fresh
process on a fresh store; its peak RSS is that process's high-water mark (``VmHWM``), read
as it ends, so it includes the interpreter and the imported libraries. (Not ``ru_maxrss``
from ``wait4``: on Linux a child's also counts the parent's RSS when it was spawned.) The
baseline is
what ``import_csv`` did before it streamed, measured the same way in the same run: both
files read whole with ``pandas.read_csv(dtype=str)``, then ``HistoryStore.import_frames``.

Results go to ``benchmarks/results/import_csv.md`` and ``.json``.

    python -m benchmarks.import_csv                      # 100,000 and 1,000,000 plans
    python -m benchmarks.import_csv --sizes 100000 --postgres postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import histories

RESULTS = Path(__file__).parent / "results"
SIZES = [100_000, 1_000_000]
TARGET_MIB = 400
RUNS = [("streamed", "raise"), ("streamed", "skip"), ("baseline", "raise")]
"""Each size and backend: import_csv in both modes, then the whole-file baseline."""


# -- in the child process ----------------------------------------------------------------


def _fresh_store(url: str) -> Any:
    from sqlalchemy import create_engine

    from metalearn import HistoryStore
    from metalearn._schema import metadata

    if url.startswith("sqlite:///"):
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    else:
        engine = create_engine(url)
        with engine.begin() as conn:
            metadata.drop_all(conn)
        engine.dispose()
    store = HistoryStore(url)
    store.count()  # creates the tables before the clock starts
    return store


def baseline_import(store: Any, plans: Path, steps: Path, on_error: str) -> Any:
    """What import_csv did before it streamed: both files whole, then import_frames."""
    import pandas as pd

    frames = [
        pd.read_csv(p, dtype="str", keep_default_na=False, na_values=[]) for p in (plans, steps)
    ]
    return store.import_frames(*frames, on_error=on_error)


def _child(how: str, plans: str, steps: str, url: str, on_error: str) -> None:
    store = _fresh_store(url)
    start = time.perf_counter()
    if how == "streamed":
        report = store.import_csv(plans, steps, on_error=on_error)
    else:
        report = baseline_import(store, Path(plans), Path(steps), on_error)
    seconds = time.perf_counter() - start
    store.close()
    result = {"seconds": seconds, "imported": report.imported, "rejected": report.rejected}
    print(json.dumps({**result, "steps": report.steps, "peak_mib": _high_water_mib()}))


def _high_water_mib() -> float:
    """This process's peak RSS so far (Linux: VmHWM; elsewhere ru_maxrss)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak) / (2**20 if sys.platform == "darwin" else 1024)


# -- in the parent -----------------------------------------------------------------------


def csv_files(n: int) -> tuple[Path, Path]:
    """``plans.csv`` and ``steps.csv`` of the n-plan benchmark history (built once)."""
    directory = histories.CACHE / f"import-csv-{n}-{histories.cache_key()}"
    paths = directory / "plans.csv", directory / "steps.csv"
    if not all(p.exists() for p in paths):
        print(f"writing the {n:,}-plan history as CSV to {directory} ...", flush=True)
        code = (
            "import sys, tempfile; from pathlib import Path; from benchmarks import histories; "
            "from metalearn import HistoryStore\n"
            "with tempfile.TemporaryDirectory(dir=histories.CACHE) as tmp:\n"
            "    with HistoryStore(f'sqlite:///{tmp}/h.db') as store:\n"
            "        store.import_frames(*histories.make(int(sys.argv[1])))\n"
            "        store.export_csv(Path(sys.argv[2]).with_suffix('.partial'))\n"
            "Path(sys.argv[2]).with_suffix('.partial').rename(sys.argv[2])"
        )
        histories.CACHE.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-c", code, str(n), str(directory)], check=True)
    return paths


def measure(how: str, paths: tuple[Path, Path], url: str, on_error: str) -> dict[str, Any]:
    """One import in a fresh process: its report, seconds and peak RSS."""
    args = [sys.executable, "-m", "benchmarks.import_csv", "--child", how, *map(str, paths)]
    done = subprocess.run([*args, url, on_error], stdout=subprocess.PIPE, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _floor_mib() -> float:
    """Peak RSS of a process that only imports metalearn: the floor of every row."""
    code = (
        "import metalearn; from benchmarks import import_csv; print(import_csv._high_water_mib())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, check=True
    )
    return float(done.stdout)


def run(
    sizes: list[int], backends: dict[str, str], repeats: int, workdir: Path
) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        paths = csv_files(n)
        csv_mib = sum(p.stat().st_size for p in paths) / 2**20
        for backend, url in backends.items():
            url = url or f"sqlite:///{workdir / f'import-{n}.db'}"
            for how, on_error in RUNS:
                runs = [measure(how, paths, url, on_error) for _ in range(repeats)]
                row = {
                    "plans": n, "csv_mib": csv_mib, "backend": backend, "how": how,
                    "on_error": on_error, "seconds": statistics.median(r["seconds"] for r in runs),
                    "peak_mib": max(r["peak_mib"] for r in runs), "runs": runs,
                    "imported": runs[0]["imported"], "steps": runs[0]["steps"],
                }  # fmt: skip
                rows.append(row)
                print(
                    f"{n:>9,} plans {backend:<10} {how:<8} {on_error:<5} "
                    f"{row['seconds']:7.1f} s  {row['peak_mib']:7.0f} MiB",
                    flush=True,
                )
    return rows


def _verdict(row: dict[str, Any]) -> str:
    if row["how"] == "baseline":
        return ""
    return "met" if row["peak_mib"] <= TARGET_MIB else "NOT MET"


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [
        "# import_csv: peak memory and time",
        "",
        f"{machine['date']}, {machine['cores']} cores, Python {machine['python']}; each row "
        "is one import in a fresh process on a fresh store (median of its runs; peak RSS the "
        f"largest). A process that only imports metalearn peaks at {machine['imports_mib']:.0f} "
        "MiB. Baseline: both files read whole by `pandas.read_csv(dtype=str)`, then "
        "`import_frames` (what `import_csv` did before it streamed).",
        "",
        "| plans | steps | CSV | backend | import | on_error | time | peak RSS | "
        f"time vs baseline | RSS vs baseline | ≤ {TARGET_MIB} MiB |",
        "|---:|---:|---:|---|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        base = next(
            (b for b in rows if b["how"] == "baseline" and (b["plans"], b["backend"]) ==
             (row["plans"], row["backend"])), None,
        )  # fmt: skip
        ratios = ["", ""]
        if base is not None and row is not base:
            ratios = [f"{row['seconds'] / base['seconds']:.2f}x",
                      f"{row['peak_mib'] / base['peak_mib']:.2f}x"]  # fmt: skip
        name = "`import_csv`" if row["how"] == "streamed" else "baseline"
        lines.append(
            f"| {row['plans']:,} | {row['steps']:,} | {row['csv_mib']:.0f} MiB | {row['backend']} "
            f"| {name} | {row['on_error']} | {row['seconds']:.1f} s | {row['peak_mib']:.0f} MiB "
            f"| {ratios[0]} | {ratios[1]} | {_verdict(row)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.import_csv", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, metavar="N")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row (median time)")
    parser.add_argument("--postgres", metavar="URL", help="also measure on this database "
                        "(its metalearn tables are dropped and recreated)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from benchmarks.report import machine

    load_start = os.getloadavg()[0]
    backends = {"SQLite": ""}
    if args.postgres:
        backends["PostgreSQL"] = args.postgres
    histories.CACHE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=histories.CACHE, prefix="import-csv-run-") as tmp:
        rows = run(args.sizes, backends, args.repeats, Path(tmp))
    about = machine(_floor_mib(), load_start)
    text = markdown(rows, about)
    print("\n" + text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "import_csv.md").write_text(text)
    (args.output / "import_csv.json").write_text(
        json.dumps({"rows": rows, "machine": about, "target_mib": TARGET_MIB}, indent=2) + "\n"
    )
    print(f"written to {args.output / 'import_csv.md'} and .json")
    return 0 if all(_verdict(r) != "NOT MET" for r in rows) else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(*sys.argv[2:7])
    else:
        sys.exit(main())
