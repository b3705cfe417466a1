"""Planner feedback at scale: ``hint_table(max_prefix=3)`` and ``detect_changes`` (issue 15).

``python -m benchmarks.planner_feedback [N] [--store PATH]`` builds (once) the benchmark
history of N plans (default 1,000,000: ``histories.make``, 20 agents) in a SQLite file,
then measures in a fresh process, with the warehouse already mirrored: the hint table
(prefixes of up to three tools, best of three runs), one prefix's hints, and change
detection by agent, goal type and tool together (best of three), and the process's peak
memory. Writes ``results/planner_feedback.md`` and ``.json``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import histories

RESULTS = Path(__file__).parent / "results"


def _best(function: Any, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(path: Path) -> dict[str, Any]:
    """The timings on the store at ``path`` (run in a process of its own)."""
    from metalearn import HistoryStore, MetaLearningService

    warehouse = path.with_suffix(".warehouse.duckdb")
    with (
        HistoryStore(f"sqlite:///{path}") as store,
        MetaLearningService(store, warehouse_path=warehouse) as service,
    ):
        service.refresh_sync()
        service.next_step_hints_sync([], time_range_days=None)  # loads scipy
        table = service.hint_table_sync(3, time_range_days=None)
        groupings = ("agent_id", "goal_type", "tool")
        return {
            "plans": len(store),
            "hint_table_s": _best(lambda: service.hint_table_sync(3, time_range_days=None)),
            "hint_rows": len(table.hints),
            "prefixes": table.prefixes,
            "next_step_hints_s": _best(
                lambda: service.next_step_hints_sync(
                    ["call_api", "write_file"], time_range_days=None
                )
            ),
            "detect_changes_s": _best(
                lambda: [service.detect_changes_sync(by) for by in groupings]
            ),
            "groups": sum(len(service.detect_changes_sync(by).changes) for by in groupings),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def _build(n: int, path: Path) -> None:
    from metalearn import HistoryStore

    plans, steps = histories.make(n)
    with HistoryStore(f"sqlite:///{path}") as store:
        for start in range(0, n, 100_000):
            part = plans.iloc[start : start + 100_000]
            store.import_frames(part, steps[steps["plan_id"].isin(part["plan_id"])])


def _markdown(result: dict[str, Any]) -> str:
    return "\n".join([
        "# Planner feedback (issue 15)",
        "",
        f"`python -m benchmarks.planner_feedback`: {result['plans']:,} plans "
        "(`histories.make`, 20 agents), warehouse mirrored, best of three runs, on the shared "
        "2-core machine.",
        "",
        "| measurement | time | target |",
        "|---|---:|---|",
        f"| `hint_table(max_prefix=3)` ({result['prefixes']:,} prefixes, "
        f"{result['hint_rows']:,} rows) | {result['hint_table_s']:.2f} s | ≤ 1 s |",
        f"| `next_step_hints` of one prefix | {result['next_step_hints_s']:.2f} s | |",
        f"| `detect_changes` by agent, goal type and tool ({result['groups']} groups) | "
        f"{result['detect_changes_s']:.2f} s | ≤ 1 s |",
        f"| peak memory of the measuring process | {result['peak_mib']:,.0f} MiB | ≤ 2.5 GB |",
        "",
    ])  # fmt: skip


def main(argv: list[str]) -> None:
    if argv[:1] == ["--measure"]:
        print(json.dumps(measure(Path(argv[1]))))
        return
    n = int(argv[0]) if argv and not argv[0].startswith("-") else 1_000_000
    path = Path(argv[argv.index("--store") + 1]) if "--store" in argv else (
        histories.CACHE / f"planner-{n}.db")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _build(n, path)
    child = [sys.executable, "-m", "benchmarks.planner_feedback", "--measure", str(path)]
    result = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "planner_feedback.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "planner_feedback.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:])
