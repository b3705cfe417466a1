"""AnalysisQueue on its own, with fake runners: order, coalescing, batches, failures, bounds."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pandas as pd
import pytest

from metalearn import (
    AnalysisInterrupted,
    AnalysisQueue,
    InvalidArgumentError,
    QueueClosedError,
    QueueFullError,
)
from metalearn._interrupt import Interrupt
from metalearn._queue import METRIC_COLUMNS


class Recorder:
    """A runner that records its batches, takes ``seconds``, and can be held on a gate."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.batches: list[tuple[str, ...]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()
        self.seconds = seconds

    async def __call__(self, agents: tuple[str, ...], interrupt: Interrupt) -> None:
        self.batches.append(agents)
        self.started.set()
        await asyncio.sleep(self.seconds)
        await self.gate.wait()

    def hold(self) -> None:
        self.gate.clear()
        self.started.clear()


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main(), debug=True)


def test_higher_priority_first_then_submission_order() -> None:
    async def main() -> list[tuple[str, ...]]:
        runner = Recorder()
        queue = AnalysisQueue(runner, max_concurrency=1, batch_size=1)
        queue.start()
        runner.hold()
        queue.submit("first")
        await runner.started.wait()  # "first" is running; the rest wait
        for agent, priority in [("low", 0), ("high", 5), ("mid-a", 2), ("mid-b", 2), ("top", 9)]:
            queue.submit(agent, priority=priority)
        runner.gate.set()
        await queue.close()
        return runner.batches

    assert run(main) == [("first",), ("top",), ("high",), ("mid-a",), ("mid-b",), ("low",)]


def test_burst_coalesces_per_agent() -> None:
    async def main() -> tuple[dict[str, Any], int, pd.DataFrame]:
        runner = Recorder(seconds=0.005)
        queue = AnalysisQueue(runner, max_concurrency=2, batch_size=16)
        queue.start()
        most_pending = 0
        for i in range(1_000):  # a burst: all plans arrive before any worker gets a turn
            queue.submit(f"agent-{i % 10}", priority=i % 3)
            most_pending = max(most_pending, queue.stats()["pending"])
        await queue.close()
        return queue.stats(), most_pending, queue.metrics()

    stats, most_pending, metrics = run(main)
    assert most_pending <= 10
    assert stats["submitted"] == 1_000
    assert stats["completed"] == len(metrics) == 1  # one batch of the 10 waiting agents
    assert stats["analyses"] == metrics["agents"].map(len).sum() == 10
    assert stats["coalesced"] == 1_000 - stats["analyses"]
    assert metrics["plans"].sum() == 1_000 and stats["failed"] == 0


def test_running_agent_gets_exactly_one_follow_up() -> None:
    async def main() -> tuple[list[tuple[str, ...]], dict[str, Any]]:
        runner = Recorder()
        queue = AnalysisQueue(runner, max_concurrency=2, batch_size=4)
        queue.start()
        runner.hold()
        queue.submit("a")
        await runner.started.wait()
        for _ in range(5):
            queue.submit("a", priority=3)
        await asyncio.sleep(0.01)  # a free worker must not start a second run of "a"
        assert queue.stats()["pending"] == 1 and queue.stats()["running"] == 1
        runner.gate.set()
        await queue.drain(timeout=5)
        await queue.close()
        return runner.batches, queue.stats()

    batches, stats = run(main)
    assert batches == [("a",), ("a",)]
    assert (stats["coalesced"], stats["analyses"]) == (4, 2)
    assert stats["wait_p50_ms"] >= 0 and stats["run_p95_ms"] > 0


def test_workers_take_batches() -> None:
    async def main() -> list[tuple[str, ...]]:
        runner = Recorder()
        queue = AnalysisQueue(runner, max_concurrency=1, batch_size=3)
        for agent in "abcdefg":
            queue.submit(agent)
        queue.start()
        await queue.close()
        return runner.batches

    assert run(main) == [("a", "b", "c"), ("d", "e", "f"), ("g",)]


def test_failed_job_is_retried_logged_counted_and_queue_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: dict[str, int] = {}

    async def flaky(agents: tuple[str, ...], interrupt: Interrupt) -> None:
        agent = agents[0]
        calls[agent] = calls.get(agent, 0) + 1
        if agent == "broken" or (agent == "flaky" and calls[agent] < 3):
            raise ConnectionError(f"store unreachable for {agent}")

    async def main() -> AnalysisQueue:
        queue = AnalysisQueue(flaky, max_concurrency=1, batch_size=1, retry_backoff_s=0.001)
        queue.start()
        for agent in ("broken", "flaky", "fine"):
            queue.submit(agent)
        await queue.close()
        return queue

    with caplog.at_level(logging.WARNING, logger="metalearn.queue"):
        queue = run(main)
    metrics = queue.metrics().set_index(queue.metrics()["agents"].map(lambda a: a[0]))
    assert metrics.loc["broken", "status"] == "failed" and metrics.loc["broken", "attempts"] == 3
    assert metrics.loc["broken", "error"] == "ConnectionError: store unreachable for broken"
    assert (metrics.loc["flaky", "status"], metrics.loc["flaky", "attempts"]) == ("completed", 3)
    assert metrics.loc["fine", "status"] == "completed"
    assert calls == {"broken": 3, "flaky": 3, "fine": 1}
    stats = queue.stats()
    assert (stats["completed"], stats["failed"], stats["analyses"]) == (2, 1, 2)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "failed after 3 attempts" in errors[0].getMessage()
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 4


def test_reject_policy_raises_and_counts() -> None:
    async def main() -> AnalysisQueue:
        queue = AnalysisQueue(Recorder(), max_pending=2)
        queue.submit("a")
        queue.submit("b")
        queue.submit("a")  # merging is always possible
        with pytest.raises(QueueFullError, match=r"2 agents are waiting .*max_pending=2"):
            queue.submit("c", plans=3)
        return queue

    assert run(main).stats()["dropped"] == 3


def test_drop_lowest_policy_keeps_the_important_work() -> None:
    async def main() -> tuple[list[tuple[str, ...]], dict[str, Any]]:
        runner = Recorder()
        queue = AnalysisQueue(runner, max_pending=2, overflow="drop_lowest", batch_size=10)
        queue.submit("low", priority=0)
        queue.submit("mid", priority=1)
        assert queue.submit("urgent", priority=5) is True  # "low" makes room
        assert queue.submit("meh", priority=0) is False  # not above the lowest waiting
        queue.start()
        await queue.close()
        return runner.batches, queue.stats()

    batches, stats = run(main)
    assert batches == [("urgent", "mid")] and stats["dropped"] == 2


def test_close_without_drain_returns_promptly() -> None:
    async def stubborn(agents: tuple[str, ...], interrupt: Interrupt) -> None:
        await asyncio.sleep(30)

    async def main() -> tuple[float, AnalysisQueue]:
        queue = AnalysisQueue(stubborn, close_timeout_s=0.2)
        queue.start()
        queue.submit("a")
        queue.submit("b")
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        await queue.close(drain=False)
        return time.perf_counter() - started, queue

    elapsed, queue = run(main)
    assert elapsed < 2
    assert set(queue.metrics()["status"]) == {"cancelled"}
    assert queue.stats()["cancelled"] == 1 and queue.stats()["running"] == 0


def test_interrupt_reaches_the_runner() -> None:
    async def polite(agents: tuple[str, ...], interrupt: Interrupt) -> None:
        while True:
            await asyncio.sleep(0.005)
            interrupt.check()

    async def main() -> AnalysisQueue:
        queue = AnalysisQueue(polite)
        queue.start()
        queue.submit("a")
        await asyncio.sleep(0.02)
        await queue.close(drain=False)
        return queue

    metrics = run(main).metrics()
    assert metrics["status"].tolist() == ["cancelled"]
    assert "interrupted" in metrics["error"].iloc[0]


def test_metrics_columns_types_and_bounded_history() -> None:
    async def main() -> AnalysisQueue:
        queue = AnalysisQueue(Recorder(), max_concurrency=1, batch_size=1, metrics_history=3)
        queue.start()
        for agent in "abcde":
            queue.submit(agent, priority=ord(agent))
        await queue.close()
        return queue

    queue = run(main)
    metrics = queue.metrics()
    assert metrics.columns.tolist() == METRIC_COLUMNS
    assert len(metrics) == 3 and metrics["job_id"].tolist() == [3, 4, 5]
    assert str(metrics["submitted_at"].dtype) == "datetime64[us, UTC]"
    assert (metrics["started_at"] >= metrics["submitted_at"]).all()
    assert (metrics["finished_at"] >= metrics["started_at"]).all()
    assert (metrics["wait_ms"] >= 0).all() and (metrics["attempts"] == 1).all()
    assert queue.stats()["completed"] == 5  # counters are not bounded by the history
    assert repr(queue) == "<AnalysisQueue closed running=0 pending=0 done=5 failed=0>"


def test_closed_queue_refuses_work_and_options_are_checked() -> None:
    async def main() -> None:
        queue = AnalysisQueue(Recorder())
        await queue.close()
        with pytest.raises(QueueClosedError, match="the analysis queue is closed"):
            queue.submit("a")

    run(main)
    with pytest.raises(InvalidArgumentError, match="max_concurrency must be an integer >= 1"):
        AnalysisQueue(Recorder(), max_concurrency=0)
    with pytest.raises(InvalidArgumentError, match="overflow must be 'reject' or 'drop_lowest'"):
        AnalysisQueue(Recorder(), overflow="block")  # type: ignore[arg-type]


def test_interrupted_error_is_a_metalearn_error() -> None:
    interrupt = Interrupt()
    interrupt.check()
    interrupt.request()
    with pytest.raises(AnalysisInterrupted, match="interrupted"):
        interrupt.check()


def test_stats_are_json_safe_before_the_first_job() -> None:
    async def main() -> AnalysisQueue:
        async def runner(agents: tuple[str, ...], interrupt: Interrupt) -> None:
            return None

        queue = AnalysisQueue(runner)
        assert json.loads(json.dumps(queue.stats(), allow_nan=False))["wait_p50_ms"] is None
        queue.start()
        queue.submit("a")
        await queue.close(drain=True)
        return queue

    stats = run(main).stats()
    assert isinstance(stats["run_p95_ms"], float) and stats["completed"] == 1
    json.dumps(stats, allow_nan=False)
