"""Where ExecutionService's analyses run: ``worker="process"``, ``None`` and ``"thread"``.

The worker processes are real (``python -m metalearn worker`` started by the service's
supervisor), the app that is killed is a real process, and the signals are real.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select

import metalearn._execution as execution
from metalearn import (
    AnalysisQueue,
    BackgroundOptions,
    ExecutionService,
    HistoryStore,
    InvalidArgumentError,
    Plan,
)
from metalearn._execution import WorkerMode
from metalearn._job_queue import JobQueue
from metalearn._jobs import job_stats, job_table
from metalearn._queue import METRIC_COLUMNS
from metalearn._schema import plans as plans_table
from metalearn._worker import AnalysisWorker
from tests.conftest import ROOT, eventually, make_plan

OPTIONS: dict[str, Any] = {"time_range_days": None, "min_support": 2, "max_length": 3}
TOOLS = [("search", "fetch", "respond"), ("search", "retry", "retry"), ("fetch", "respond")]


def history(prefix: str, agents: int = 3, n: int = 60) -> list[Plan]:
    """The same plans under other ids and agent names, so modes can share one store."""
    plans = []
    for i in range(n):
        failed = i % 5 == 0 or (i // 3 % 3 == 1 and i % 2 == 1)
        plans.append(make_plan(
            f"{prefix}-p{i}", agent_id=f"{prefix}-agent-{i % agents}", tools=TOOLS[i // 3 % 3],
            status="failed" if failed else "succeeded", offset_s=i,
        ))  # fmt: skip
    return plans


@contextmanager
def worker_thread(store_url: str) -> Iterator[AnalysisWorker]:
    """A worker of the store running in a thread of the test, as ``metalearn worker`` would."""
    options = BackgroundOptions.build(**OPTIONS)
    worker = AnalysisWorker(store_url, poll_s=0.05, options=options)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=60)
        worker.close()


async def finalize_all(service: ExecutionService, plans: list[Plan]) -> None:
    for plan in plans:
        await service.finalize_plan(plan)
    await service.queue.drain(timeout=120)


def snapshots(store: HistoryStore, prefix: str) -> dict[str, pd.DataFrame]:
    """Each agent's latest pattern rows (agent names without the mode's prefix), after
    checking that the snapshot covers the agent's newest plan."""
    found = {}
    for i in range(3):
        agent = f"{prefix}-agent-{i}"
        latest = store.latest_snapshot(agent)
        assert latest is not None, f"{agent} has no snapshot"
        header, rows = latest
        with store.database.connect() as conn:
            newest = conn.execute(
                select(func.max(plans_table.c.seq)).where(plans_table.c.agent_id == agent)
            ).scalar_one()
        assert header["through_seq"] >= newest
        found[f"agent-{i}"] = rows.drop(columns=["snapshot_id"]).reset_index(drop=True)
    return found


def test_the_three_modes_store_the_same_snapshots(store_url: str) -> None:
    async def run(mode: WorkerMode, prefix: str) -> None:
        async with ExecutionService(store_url, worker=mode, **OPTIONS) as service:
            assert service.worker == mode
            if mode is None:
                with worker_thread(store_url):
                    await finalize_all(service, history(prefix))
            else:
                await finalize_all(service, history(prefix))

    for mode, prefix in [("thread", "t"), ("process", "p"), (None, "n")]:
        asyncio.run(run(mode, prefix))  # type: ignore[arg-type]
    with HistoryStore(store_url) as store:
        thread, process, none = (snapshots(store, prefix) for prefix in ("t", "p", "n"))
        for agent, rows in thread.items():
            assert len(rows) > 3  # patterns were tested, not an empty report
            pd.testing.assert_frame_equal(process[agent], rows)
            pd.testing.assert_frame_equal(none[agent], rows)
        jobs = job_stats(store.database)
        assert (jobs["pending"], jobs["running"], jobs["failed"], jobs["done"]) == (0, 0, 0, 9)


def test_the_supervisor_restarts_a_killed_worker(
    sqlite_store: HistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with ExecutionService(sqlite_store, worker="process", **OPTIONS) as service:
            supervised = service.worker_process
            assert supervised is not None
            first = eventually(lambda: supervised.pid, what="the worker process")
            os.kill(first, signal.SIGKILL)
            second = eventually(
                lambda: supervised.pid if supervised.pid not in (None, first) else None,
                what="a new worker process",
            )
            assert supervised.restarts == 1
            await finalize_all(service, history("k"))  # the new worker does the work
            assert second == supervised.pid
        assert supervised.pid is None  # stopped with the service

    with caplog.at_level(logging.INFO, logger="metalearn.supervisor"):
        asyncio.run(main())
    assert any("exited with signal 9; starting another" in r.getMessage() for r in caplog.records)
    assert sqlite_store.agents_behind() == {}


APP = textwrap.dedent(
    """
    import asyncio, sys
    from metalearn import ExecutionService
    from tests.conftest import make_plan

    async def main():
        async with ExecutionService(sys.argv[1], min_support=2, time_range_days=None) as service:
            print("worker", service.worker_process.pid, flush=True)
            for i in range(10_000):
                done = await service.finalize_plan(make_plan(f"p{i}", agent_id=f"agent-{i % 4}"))
                print("ack", done.plan_id, done.seq, flush=True)
    asyncio.run(main())
    """
)


def test_an_app_killed_after_acknowledging_loses_no_plan(sqlite_store: HistoryStore) -> None:
    app = subprocess.Popen(
        [sys.executable, "-c", APP, sqlite_store.engine.url.render_as_string(False)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert app.stdout is not None
    worker_pid = int(app.stdout.readline().split()[1])
    acked = {}
    for line in app.stdout:
        _, plan_id, seq = line.split()
        acked[plan_id] = int(seq)
        if len(acked) == 300:
            break
    app.send_signal(signal.SIGKILL)
    app.wait(timeout=30)
    app.stdout.close()
    # The kernel closed the app's end of the worker's stdin: the orphan stops by itself.
    eventually(lambda: not _alive(worker_pid), timeout=60, what="the orphaned worker to stop")
    with sqlite_store.database.connect() as conn:
        stored = dict(conn.execute(select(plans_table.c.plan_id, plans_table.c.seq)).all())
    assert {plan_id: stored.get(plan_id) for plan_id in acked} == acked
    with AnalysisWorker(sqlite_store, options=None) as worker:  # what a restarted app starts
        while worker.run_once().agents:
            pass
    assert sqlite_store.agents_behind() == {}
    newest = pd.Series(acked).groupby(lambda plan_id: int(plan_id[1:]) % 4).max()
    for agent, seq in newest.items():
        header, _ = sqlite_store.latest_snapshot(f"agent-{agent}")  # type: ignore[misc]
        assert header["through_seq"] >= seq


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as stopped.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


def test_finalize_plan_sync_queues_the_job_for_the_worker_process(
    sqlite_store: HistoryStore,
) -> None:
    service = ExecutionService(sqlite_store, **OPTIONS)
    assert service.worker == "process"
    results = [service.finalize_plan_sync(plan) for plan in history("s")]
    assert all(r.scheduled for r in results)
    service.queue.drain_sync(timeout=120)  # type: ignore[union-attr]
    assert sqlite_store.agents_behind() == {}
    assert service.queue.stats()["submitted"] == 60
    supervised = service.worker_process
    service.close_sync()
    assert supervised is not None and supervised.pid is None


def test_a_memory_store_falls_back_to_threads_and_says_so_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execution, "_memory_fallback_logged", False)
    with caplog.at_level(logging.INFO, logger="metalearn.execution"):
        services = [ExecutionService("sqlite://", min_support=1) for _ in range(2)]
    assert [s.worker for s in services] == ["thread", "thread"]
    assert all(isinstance(s.queue, AnalysisQueue) and s.worker_process is None for s in services)
    said = [r for r in caplog.records if "cannot be shared with a worker process" in r.message]
    assert len(said) == 1
    for service in services:
        asyncio.run(service.close())


def test_the_store_queue_reports_like_the_memory_queue(
    sqlite_store: HistoryStore,
) -> None:
    plans = history("q", agents=2, n=10)

    async def thread_mode() -> tuple[dict[str, Any], pd.DataFrame]:
        async with ExecutionService("sqlite://", worker="thread", **OPTIONS) as service:
            await finalize_all(service, plans)
            return service.queue.stats(), service.queue.metrics()

    async def none_mode() -> tuple[dict[str, Any], pd.DataFrame, str]:
        async with ExecutionService(sqlite_store, worker=None, **OPTIONS) as service:
            assert isinstance(service.queue, JobQueue) and service.worker_process is None
            for plan in plans:
                await service.finalize_plan(plan)
            assert service.queue.stats()["pending"] == 2  # nobody analyses: they wait
            with AnalysisWorker(sqlite_store, options=service.analysis_options) as worker:
                assert worker.run_once().outcomes == {"q-agent-0": "done", "q-agent-1": "done"}
            await service.queue.drain(timeout=10)
            return service.queue.stats(), service.queue.metrics(), repr(service.queue)

    memory_stats, memory_metrics = asyncio.run(thread_mode())
    stats, metrics, shown = asyncio.run(none_mode())
    assert list(stats) == list(memory_stats)
    assert list(metrics.columns) == METRIC_COLUMNS == list(memory_metrics.columns)
    assert metrics.dtypes.to_dict() == memory_metrics.dtypes.to_dict()
    counted = ("submitted", "coalesced", "completed", "analyses", "dropped")
    assert [stats[k] for k in counted] == [10, 8, 1, 2, 0]
    assert (stats["pending"], stats["running"], stats["failed"]) == (0, 0, 0)
    row = metrics.iloc[0]
    assert (row["agents"], row["plans"], row["attempts"], row["status"]) == (
        ("q-agent-0", "q-agent-1"), 10, 1, "completed",
    )  # fmt: skip
    assert row["wait_ms"] >= 0 and 0 < row["run_ms"] == stats["run_p50_ms"]
    assert shown == "<JobQueue none running=0 pending=0 done=2 failed=0>"


def test_thread_mode_settles_the_jobs_in_the_store(sqlite_store: HistoryStore) -> None:
    async def main() -> None:
        async with ExecutionService(sqlite_store, worker="thread", **OPTIONS) as service:
            await finalize_all(service, history("t"))

    asyncio.run(main())
    jobs = job_stats(sqlite_store.database)
    assert (jobs["pending"], jobs["running"], jobs["done"]) == (0, 0, 3)
    assert sqlite_store.agents_behind() == {}


def test_a_priority_override_reaches_the_stored_job(sqlite_store: HistoryStore) -> None:
    async def main() -> None:
        async with ExecutionService(sqlite_store, worker=None) as service:
            await service.finalize_plan(make_plan("p-1", agent_id="a"), priority=7)
            await service.finalize_plan(make_plan("p-2", agent_id="b"))
            with pytest.raises(InvalidArgumentError, match="priority 4294967296: it must be"):
                await service.finalize_plan(make_plan("p-3"), priority=2**32)

    asyncio.run(main())
    table = job_table(sqlite_store.database)
    assert dict(zip(table["agent_id"], table["priority"], strict=True)) == {"a": 7, "b": 0}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"worker": "cluster"}, "worker must be 'process', 'thread' or None", id="mode"
        ),
        pytest.param({"nice": -1}, "nice must be an integer from 0 to 19", id="nice"),
        pytest.param({"lease_seconds": 0}, "lease_seconds must be a number > 0", id="lease"),
    ],
)
def test_bad_worker_options(
    sqlite_store: HistoryStore, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        ExecutionService(sqlite_store, **options)
