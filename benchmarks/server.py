"""Server benchmark: a real FastAPI app under uvicorn, an open-loop client, real processes.

``python -m benchmarks.server`` (needs the ``bench`` extra). On a ``--history``-plan
(default 200,000) SQLite store, the app of :mod:`benchmarks.server_app` serves
``POST /plans``; an HTTP client on this machine sends plans from 20 agents at a fixed
``--rate`` (default 30 plans/s) for ``--seconds`` (default 60), open loop (a request is
sent on time whether or not earlier ones were answered), and probes ``GET /health`` every
50 ms. One run measures, each on a fresh copy of the store:

- record only (the baseline: no analysis at all);
- ``ExecutionService(worker="process")`` (the default: one supervised worker process);
- ``ExecutionService(worker="thread")`` (the analyses in the app's own threads);
- ``uvicorn --workers 2`` with ``worker=None``, plus one ``metalearn worker``;
- on PostgreSQL (when ``--postgres URL`` is given): ``--workers 2`` with ``worker=None``
  and two ``metalearn worker`` processes; the run log is checked for an agent run twice
  at once.

Per setup: POST p50/p90/p99, /health p99, analyses (snapshots written during the load),
plans per analysis, snapshot lag p95 (from a plan's acknowledgement to the first moment a
snapshot covering it is in the store, polled every 100 ms) and the peak total RSS of all
the server's processes. A second table measures ``HistoryStore.record_plan`` on SQLite at
the same rate with and without a worker process writing snapshots on the same file.
Writes ``benchmarks/results/server.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from sqlalchemy import create_engine, func, select, text

import metalearn
from metalearn import HistoryStore, Plan
from metalearn._jobs import job_stats
from metalearn._schema import job_runs, snapshots
from metalearn.synthetic import make_history

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
CACHE = Path(__file__).parent / "cache"
AGENTS = 20
HEALTH_EVERY_S = 0.05
LAG_POLL_S = 0.1


@dataclass(frozen=True)
class Setup:
    key: str  # what --only names it
    name: str
    mode: str  # server_app's METALEARN_BENCH_MODE
    app_workers: int = 1
    separate_workers: int = 0  # `metalearn worker` processes started beside the app
    postgres: bool = False


SETUPS = [
    Setup("record", "record only (baseline)", "record"),
    Setup("none", "worker=None, no worker (recording and queueing only)", "none"),
    Setup("process", 'worker="process"', "process"),
    Setup("thread", 'worker="thread"', "thread"),
    Setup("workers", "uvicorn --workers 2, worker=None, + 1 metalearn worker", "none", 2, 1),
]
POSTGRES_SETUP = Setup(
    "postgres", "PostgreSQL: --workers 2, worker=None, + 2 metalearn workers", "none", 2, 2,
    postgres=True,
)  # fmt: skip


# -- the stores -----------------------------------------------------------------------------


def _history(n: int) -> Path:
    """A cached SQLite store of ``n`` synthetic plans ending at today's midnight UTC, so the
    analyses' 30-day windows hold a month of history (copied per run, never mutated)."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"server-history-{n}-{datetime.now(UTC):%Y-%m-%d}.db"
    if not path.exists():
        for stale in CACHE.glob(f"server-history-{n}-*.db*"):
            stale.unlink()
        with HistoryStore(f"sqlite:///{path}") as store:
            store.import_frames(*make_history(n, n_agents=AGENTS, seed=0))
    return path


def _postgres_copy(url: str, n: int) -> str:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    with HistoryStore(url) as store:
        store.import_frames(*make_history(n, n_agents=AGENTS, seed=0))
    return url


# -- processes ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _server(setup: Setup, url: str) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    port = _free_port()
    env = {**os.environ, "METALEARN_DB_URL": url, "METALEARN_BENCH_MODE": setup.mode}
    app = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.server_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(setup.app_workers), "--log-level", "warning",
         "--no-access-log"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    workers = [
        subprocess.Popen([sys.executable, "-m", "metalearn", "worker", "-q"], cwd=ROOT, env=env)
        for _ in range(setup.separate_workers)
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_health(base)
        yield base, [app, *workers]
    finally:
        for process in [app, *workers]:
            process.send_signal(signal.SIGTERM)
        for process in [app, *workers]:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_for_health(base: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the app at {base} did not answer within {timeout} s")


class RssSampler:
    """The peak total RSS of some processes and all their children, sampled every 0.5 s."""

    def __init__(self, processes: list[subprocess.Popen[bytes]]) -> None:
        self._roots = [psutil.Process(p.pid) for p in processes]
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> int:
        total = 0
        for root in self._roots:
            try:
                family = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for process in family:
                with suppress(psutil.NoSuchProcess):
                    total += process.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self._total())

    def __enter__(self) -> RssSampler:
        self.peak = self._total()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the client -----------------------------------------------------------------------------


def _plan_bodies(count: int, prefix: str) -> list[dict[str, Any]]:
    """``count`` plans drawn from the synthetic generator (with its planted patterns),
    finishing now, as the JSON an agent runtime would post."""
    plans, steps = make_history(count, n_agents=AGENTS, seed=11)
    by_plan = steps.groupby("plan_id", sort=False)
    now = datetime.now(UTC)
    bodies = []
    for i, row in enumerate(plans.itertuples()):
        calls = by_plan.get_group(row.plan_id)
        bodies.append({
            "plan_id": f"{prefix}-{i}", "agent_id": row.agent_id, "status": row.status,
            "started_at": (now - timedelta(seconds=20)).isoformat(),
            "finished_at": now.isoformat(),
            "goal_type": row.goal_type if isinstance(row.goal_type, str) else None,
            "steps": [{"tool": t, "status": s} for t, s in zip(calls["tool"], calls["status"],
                                                                strict=True)],
        })  # fmt: skip
    return bodies


@dataclass
class Load:
    post_ms: list[float] = field(default_factory=list)
    health_ms: list[float] = field(default_factory=list)
    acks: list[tuple[str, int, float]] = field(default_factory=list)  # agent, seq, when
    errors: int = 0


async def _open_loop(base: str, bodies: list[dict[str, Any]], rate: float) -> Load:
    load = Load()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def post(body: dict[str, Any]) -> None:
            started = time.perf_counter()
            response = await client.post("/plans", json=body)
            load.post_ms.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                load.errors += 1
                return
            load.acks.append((body["agent_id"], int(response.json()["seq"]), time.monotonic()))

        async def probe() -> None:
            started = time.perf_counter()
            await client.get("/health")
            load.health_ms.append((time.perf_counter() - started) * 1000)

        seconds = len(bodies) / rate
        schedule = sorted(
            [(i / rate, post, body) for i, body in enumerate(bodies)]
            + [(k * HEALTH_EVERY_S, probe, None) for k in range(int(seconds / HEALTH_EVERY_S))],
            key=lambda item: item[0],
        )
        tasks = []
        t0 = time.perf_counter()
        for at, call, body in schedule:
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(call(body) if body is not None else call()))
        await asyncio.gather(*tasks)
    return load


class LagWatcher:
    """Polls each agent's newest snapshot ``through_seq``; the first time it covers an
    acknowledged plan gives that plan's snapshot lag."""

    def __init__(self, url: str) -> None:
        self._engine = create_engine(url)
        self._stop = threading.Event()
        self.covered: dict[str, list[tuple[float, int]]] = {}  # agent -> (when, through)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = select(snapshots.c.agent_id, func.max(snapshots.c.through_seq)).group_by(
            snapshots.c.agent_id
        )
        while not self._stop.wait(LAG_POLL_S):
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
            now = time.monotonic()
            for agent, through in rows:
                seen = self.covered.setdefault(agent, [])
                if not seen or seen[-1][1] < through:
                    seen.append((now, int(through)))

    def lags(self, acks: list[tuple[str, int, float]]) -> list[float]:
        """Seconds from each ack to its coverage (unbounded: ``inf`` if never covered)."""
        found = []
        for agent, seq, when in acks:
            times = [t for t, through in self.covered.get(agent, []) if through >= seq]
            found.append(max(min(times) - when, 0.0) if times else float("inf"))
        return found

    def __enter__(self) -> LagWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._engine.dispose()


# -- one setup --------------------------------------------------------------------------------


def _wait_for_queue(url: str, timeout: float) -> float:
    """Wait until the store's queue is empty (the start-up analyses); seconds waited."""
    started = time.monotonic()
    with HistoryStore(url) as store:
        while time.monotonic() - started < timeout:
            stats = job_stats(store.database)
            if not stats["pending"] and not stats["running"]:
                return time.monotonic() - started
            time.sleep(0.5)
    raise RuntimeError(f"the queue of {url} was not empty after {timeout} s")


def _max_snapshot_id(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        value = conn.execute(select(func.max(snapshots.c.snapshot_id))).scalar()
    engine.dispose()
    return int(value or 0)


def _overlapping_runs(url: str) -> int:
    """Pairs of runs of one agent whose claim-to-end intervals overlap (must be 0)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(job_runs.c.agents, job_runs.c.claimed_at_us, job_runs.c.finished_at_us)
        ).all()
    engine.dispose()
    spans: dict[str, list[tuple[int, int]]] = {}
    for agents, start, end in rows:
        for agent in json.loads(agents):
            spans.setdefault(agent, []).append((start, end))
    overlaps = 0
    for intervals in spans.values():
        intervals.sort()
        overlaps += sum(b[0] < a[1] for a, b in itertools.pairwise(intervals))
    return overlaps


def measure(setup: Setup, url: str, rate: float, seconds: float) -> dict[str, Any]:
    bodies = _plan_bodies(round(rate * seconds), prefix=f"load-{time.time_ns()}")
    with _server(setup, url) as (base, processes), RssSampler(processes) as rss:
        analysed = setup.mode not in ("record", "none") or setup.separate_workers > 0
        warmup = _wait_for_queue(url, timeout=600) if analysed else 0.0
        first_snapshot = _max_snapshot_id(url)
        with LagWatcher(url) as watcher:
            load = asyncio.run(_open_loop(base, bodies, rate))
            sent_until = time.monotonic()
            if analysed:
                _wait_for_queue(url, timeout=120)
                time.sleep(2 * LAG_POLL_S)
        analyses = _max_snapshot_id(url) - first_snapshot
        lags = watcher.lags(load.acks) if analysed else []
        with HistoryStore(url) as store:
            jobs = job_stats(store.database)
    post, health = np.array(load.post_ms), np.array(load.health_ms)
    return {
        "setup": setup.name,
        "post_p50_ms": float(np.percentile(post, 50)),
        "post_p90_ms": float(np.percentile(post, 90)),
        "post_p99_ms": float(np.percentile(post, 99)),
        "health_p99_ms": float(np.percentile(health, 99)),
        "analyses": analyses,
        "plans_per_analysis": len(load.acks) / analyses if analyses else None,
        "lag_p95_s": float(np.percentile(lags, 95)) if lags else None,
        "rss_mib": rss.peak / 2**20,
        "plans": len(load.acks),
        "errors": load.errors,
        "warmup_s": warmup,
        "drain_s": time.monotonic() - sent_until,
        "jobs_after": {k: jobs[k] for k in ("pending", "running", "failed", "done")},
        "overlapping_runs": _overlapping_runs(url) if setup.separate_workers else None,
    }


# -- record_plan beside a worker -------------------------------------------------------------


def record_latency(source: Path, directory: Path, rate: float, seconds: float) -> dict[str, Any]:
    """``record_plan`` p50/p99 at ``rate`` on SQLite, alone and beside a worker process that
    writes snapshots all along (each recorded plan queues a job, so it always has work)."""
    rows = {}
    for name, with_worker in [("record_plan alone", False), ("record_plan + worker", True)]:
        url = _copy(source, directory)
        with HistoryStore(url) as store:
            env = {**os.environ, "METALEARN_DB_URL": url}
            worker = (
                subprocess.Popen(
                    [sys.executable, "-m", "metalearn", "worker", "-q"], env=env, cwd=ROOT
                )
                if with_worker
                else None
            )
            try:
                if worker is not None:
                    _wait_for_queue(url, timeout=600)
                before = _max_snapshot_id(url)
                latencies = _record_at(store, rate, seconds)
                written = _max_snapshot_id(url) - before
            finally:
                if worker is not None:
                    worker.send_signal(signal.SIGTERM)
                    worker.wait(timeout=60)
        rows[name] = {
            "setup": name,
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)),
            "max_ms": float(np.max(latencies)),
            "snapshots_written": written,
        }
    return rows


def _record_at(store: HistoryStore, rate: float, seconds: float) -> list[float]:
    bodies = _plan_bodies(round(rate * seconds), prefix=f"direct-{time.time_ns()}")
    latencies = []
    t0 = time.perf_counter()
    for i, body in enumerate(bodies):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        plan = Plan(
            body["plan_id"], body["agent_id"], body["status"], body["started_at"],
            body["finished_at"], goal_type=body["goal_type"], steps=body["steps"],
        )  # fmt: skip
        started = time.perf_counter()
        store.record_plan(plan)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


# -- the report ------------------------------------------------------------------------------


def _copy(source: Path, directory: Path) -> str:
    target = directory / f"run-{time.time_ns()}.db"
    shutil.copyfile(source, target)
    return f"sqlite:///{target}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


SERVER_COLUMNS = ["setup", "post_p50_ms", "post_p90_ms", "post_p99_ms", "health_p99_ms",
                  "analyses", "plans_per_analysis", "lag_p95_s", "rss_mib", "post_p99_x",
                  "health_p99_x"]  # fmt: skip


def _targets(rows: list[dict[str, Any]], direct: dict[str, Any]) -> list[str]:
    checks = [
        ("record_plan p99 beside a worker <= 1.5x alone",
         direct["record_plan + worker"]["p99_ms"] <= 1.5 * direct["record_plan alone"]["p99_ms"]),
    ]  # fmt: skip
    for process in (row for row in rows if row["setup"] == 'worker="process"'):
        checks += [
            ('worker="process" POST p99 <= 1.25x record only', process["post_p99_x"] <= 1.25),
            ('worker="process" /health p99 <= 1.25x record only',
             process["health_p99_x"] <= 1.25),
            ('worker="process" snapshot lag p95 <= 10 s', (process["lag_p95_s"] or 1e9) <= 10),
        ]  # fmt: skip
    for row in (r for r in rows[1:] if r["analyses"]):
        checks.append((f"{row['setup']}: every job done, none failed",
                       row["jobs_after"]["pending"] == row["jobs_after"]["running"] == 0
                       and row["jobs_after"]["failed"] == 0))  # fmt: skip
        if row["overlapping_runs"] is not None:
            checks.append((f"{row['setup']}: no agent run twice at once",
                           row["overlapping_runs"] == 0))  # fmt: skip
    return [f"- {'met' if ok else 'MISSED'}: {what}" for what, ok in checks]


def run(history: int, rate: float, seconds: float, postgres: str | None, only: list[str]) -> Path:
    source = _history(history)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for setup in SETUPS:
            if setup.key in only:
                print(f"measuring {setup.name} ...", flush=True)
                rows.append(measure(setup, _copy(source, Path(tmp)), rate, seconds))
        if postgres and POSTGRES_SETUP.key in only:
            print(f"measuring {POSTGRES_SETUP.name} ...", flush=True)
            rows.append(measure(POSTGRES_SETUP, _postgres_copy(postgres, history), rate, seconds))
        print("measuring record_plan beside a worker ...", flush=True)
        direct = record_latency(source, Path(tmp), rate, min(seconds, 30))
    base = rows[0]
    for row in rows:
        row["post_p99_x"] = row["post_p99_ms"] / base["post_p99_ms"]
        row["health_p99_x"] = row["health_p99_ms"] / base["health_p99_ms"]
    header = (
        f"# Server benchmark\n\nA FastAPI app under uvicorn on a {history:,}-plan store "
        f"({AGENTS} agents); an open-loop client on the same machine posts {rate:g} plans/s "
        f"for {seconds:g} s and probes /health every {HEALTH_EVERY_S * 1000:.0f} ms. "
        f"Ratios (x) are against record only, measured in the same run. {os.cpu_count()} "
        f"cores, Python {platform.python_version()}, metalearn {metalearn.__version__}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n\n"
    )
    body = (
        _table(rows, SERVER_COLUMNS)
        + f"\n\n`record_plan` on SQLite at {rate:g} plans/s for {min(seconds, 30):g} s:\n\n"
        + _table(
            list(direct.values()), ["setup", "p50_ms", "p99_ms", "max_ms", "snapshots_written"]
        )
        + "\n\nTargets:\n\n"
        + "\n".join(_targets(rows, direct))
        + "\n"
    )
    print("\n" + header + body)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "server.md"
    path.write_text(header + body)
    (RESULTS / "server.json").write_text(json.dumps(
        {"server": rows, "record_plan": direct, "history": history, "rate": rate,
         "seconds": seconds, "cores": os.cpu_count()}, indent=2, default=str))  # fmt: skip
    print(f"written to {path}")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--history", type=int, default=200_000, help="plans in the store")
    parser.add_argument("--rate", type=float, default=30.0, help="plans per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load")
    parser.add_argument("--postgres", default=os.environ.get("METALEARN_TEST_POSTGRES_URL"),
                        metavar="URL", help="also measure on this (emptied!) PostgreSQL "
                        "database (default: $METALEARN_TEST_POSTGRES_URL)")  # fmt: skip
    keys = [setup.key for setup in [*SETUPS, POSTGRES_SETUP]]
    parser.add_argument("--only", nargs="+", choices=keys, default=keys, metavar="SETUP",
                        help=f"measure only these setups ({', '.join(keys)}; record is the "
                        "baseline and always runs)")  # fmt: skip
    args = parser.parse_args(argv)
    run(args.history, args.rate, args.seconds, args.postgres, ["record", *args.only])


if __name__ == "__main__":
    main()
