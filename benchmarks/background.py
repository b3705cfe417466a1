"""Background-analysis benchmark: finalizing plans in an async app, vs analysing inline.

On a history of ``--history`` plans (default 200,000), an asyncio app finalizes
``--plans`` new plans (default 5,000) from 20 agents as fast as it can, in waves of 50
concurrent requests, while a 1 ms ticker measures event-loop lag. metalearn's
ExecutionService records each plan and analyses in the background; the baseline is the
old synchronous behaviour, recording and analysing inline in the request (which blocks
the loop), measured on the first ``--baseline-plans`` plans because it is ~1,000x slower.

Writes benchmarks/results/background.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

import metalearn
from metalearn import ExecutionService, HistoryStore, MetaLearningService, Plan
from metalearn.synthetic import make_history

RESULTS = Path(__file__).parent / "results"
CACHE = Path(__file__).parent / "cache"
AGENTS = [f"bench-agent-{i:02d}" for i in range(20)]
WAVE = 50


def _history_db(n: int) -> Path:
    """A cached SQLite store of ``n`` synthetic plans (copied per run, never mutated)."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"history-{n}.db"
    if not path.exists():
        with HistoryStore(f"sqlite:///{path}") as store:
            store.import_frames(*make_history(n, n_agents=20, seed=0))
    return path


def _fresh_copy(source: Path, directory: Path) -> str:
    target = directory / f"run-{time.time_ns()}.db"
    target.write_bytes(source.read_bytes())
    return f"sqlite:///{target}"


def _plans(count: int, prefix: str) -> list[Plan]:
    now = datetime.now(UTC)
    tools = [["search_web", "fetch_page", "summarize"], ["query_db", "retry", "retry", "retry"]]
    return [
        Plan(
            f"{prefix}-{i}",
            AGENTS[i % 20],
            "succeeded" if i % 3 else "failed",
            now - timedelta(seconds=5),
            now,
            steps=[{"tool": t} for t in tools[i % 2]],
        )
        for i in range(count)
    ]


class Ticker:
    """Measures event-loop lag: how late a 1 ms sleep wakes up."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            self.lags_ms.append((time.perf_counter() - started - 0.001) * 1000)

    def start(self) -> None:
        self._task = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


async def _waves(plans: list[Plan], finalize: Callable[[Plan], Awaitable[Any]]) -> list[float]:
    """Finalize all plans, WAVE concurrent requests at a time; per-request latency in ms."""
    latencies: list[float] = []

    async def one(plan: Plan) -> None:
        started = time.perf_counter()
        await finalize(plan)
        latencies.append((time.perf_counter() - started) * 1000)

    for start in range(0, len(plans), WAVE):
        await asyncio.gather(*(one(p) for p in plans[start : start + WAVE]))
    return latencies


async def _metalearn(url: str, count: int) -> dict[str, Any]:
    ticker = Ticker()
    async with ExecutionService(url, worker="thread", recover=False) as service:
        await service.meta_learning.refresh()  # the warehouse is warm in a running app
        ticker.start()
        started = time.perf_counter()
        latencies = await _waves(_plans(count, "ml"), service.finalize_plan)
        finalized = time.perf_counter() - started
        await service.queue.drain()
        drained = time.perf_counter() - started
        await ticker.stop()
        stats = service.queue.stats()
    return _summary("metalearn ExecutionService", count, latencies, ticker, finalized, drained,
                    analyses=int(stats["analyses"]), failed=int(stats["failed"]))  # fmt: skip


async def _inline(url: str, count: int) -> dict[str, Any]:
    """The old behaviour: record and analyse inside the request, blocking the loop."""
    ticker = Ticker()
    with MetaLearningService(url) as meta:
        meta.refresh_sync()

        async def finalize(plan: Plan) -> None:
            meta.store.record_plan(plan)
            meta.snapshot_agents_sync([plan.agent_id])

        ticker.start()
        started = time.perf_counter()
        latencies = await _waves(_plans(count, "inline"), finalize)
        elapsed = time.perf_counter() - started
        await ticker.stop()
    return _summary("baseline: analysis inline", count, latencies, ticker, elapsed, elapsed,
                    analyses=count, failed=0)  # fmt: skip


def _summary(
    name: str,
    count: int,
    latencies: list[float],
    ticker: Ticker,
    finalized: float,
    drained: float,
    *,
    analyses: int,
    failed: int,
) -> dict[str, Any]:
    lags = ticker.lags_ms or [0.0]
    return {
        "system": name,
        "plans": count,
        "finalize_p50_ms": float(np.percentile(latencies, 50)),
        "finalize_p99_ms": float(np.percentile(latencies, 99)),
        "loop_lag_p50_ms": float(np.percentile(lags, 50)),
        "loop_lag_p99_ms": float(np.percentile(lags, 99)),
        "loop_lag_max_ms": float(max(lags)),
        "analyses": analyses,
        "plans_per_analysis": count / analyses if analyses else float("nan"),
        "failed_jobs": failed,
        "finalize_throughput_per_s": count / finalized,
        "seconds_until_all_analysed": drained,
    }


def _table(rows: list[dict[str, Any]], ratios: dict[str, float]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else v
                 for v in row.values()]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    lines += [f"- {name}: {value:,.1f}x" for name, value in ratios.items()]
    return "\n".join(lines)


def run(history: int, plans: int, baseline_plans: int, repeats: int) -> Path:
    source = _history_db(history)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            ours.append(asyncio.run(_metalearn(_fresh_copy(source, Path(tmp)), plans)))
            theirs.append(asyncio.run(_inline(_fresh_copy(source, Path(tmp)), baseline_plans)))
    best = min(ours, key=lambda r: r["seconds_until_all_analysed"])
    base = min(theirs, key=lambda r: r["finalize_p50_ms"])
    ratios = {
        "finalize latency p50, baseline / metalearn": base["finalize_p50_ms"]
        / best["finalize_p50_ms"],
        "finalize throughput, metalearn / baseline": (
            best["finalize_throughput_per_s"] / base["finalize_throughput_per_s"]
        ),
        "event-loop lag p99, baseline / metalearn": base["loop_lag_p99_ms"]
        / best["loop_lag_p99_ms"],
    }
    header = (
        f"# Background analysis benchmark\n\n{history:,}-plan SQLite history, 20 agents, "
        f"requests in waves of {WAVE}; metalearn finalizes {plans:,} plans, the inline "
        f"baseline {baseline_plans:,} (it is far slower). Best of {repeats} runs. "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"metalearn {metalearn.__version__}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n\n"
    )
    table = _table([best, base], ratios)
    print(header + table)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "background.md"
    path.write_text(header + table + "\n")
    (RESULTS / "background.json").write_text(json.dumps(
        {"metalearn": ours, "baseline": theirs, "ratios": ratios,
         "history": history, "cores": os.cpu_count()}, indent=2))  # fmt: skip
    print(f"\nwritten to {path}")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--history", type=int, default=200_000)
    parser.add_argument("--plans", type=int, default=5_000)
    parser.add_argument("--baseline-plans", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    run(args.history, args.plans, args.baseline_plans, args.repeats)


if __name__ == "__main__":
    main()
