"""ExecutionService with a real event loop and a real store."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from metalearn import (
    DuplicatePlanError,
    ExecutionService,
    HistoryStore,
    InvalidArgumentError,
    MetaLearningService,
    Plan,
)
from metalearn._interrupt import Interrupt
from metalearn.synthetic import make_history

NOW = datetime.now(UTC)


def plan(plan_id: str, agent_id: str, *, ok: bool = True, priority: int = 0) -> Plan:
    start = NOW - timedelta(minutes=5)
    tools = ["search", "fetch", "respond"] if ok else ["search", "retry", "retry"]
    return Plan(
        plan_id, agent_id, "succeeded" if ok else "failed", start, start + timedelta(seconds=3),
        steps=[{"tool": t} for t in tools], priority=priority,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore(f"sqlite:///{tmp_path / 'history.db'}") as history:
        yield history


class HeldService(MetaLearningService):
    """Background analyses wait on ``release`` (a real service otherwise)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.entered = threading.Event()

    def snapshot_agents_sync(self, agent_ids: Sequence[str], **kwargs: Any) -> dict[str, int]:
        self.entered.set()
        assert self.release.wait(timeout=10), "test never released the analysis"
        return super().snapshot_agents_sync(agent_ids, **kwargs)


def test_finalize_returns_before_the_analysis_runs(store: HistoryStore) -> None:
    meta = HeldService(store)

    async def main() -> None:
        async with ExecutionService(meta_learning=meta, worker="thread", min_support=1) as service:
            result = await service.finalize_plan(plan("p-1", "agent-a"))
            assert (result.plan_id, result.seq, result.scheduled) == ("p-1", 1, True)
            await asyncio.to_thread(meta.entered.wait, 5)  # the analysis has started...
            assert await meta.latest_patterns("agent-a") is None  # ...and is held
            second = await service.finalize_plan(plan("p-2", "agent-a"))  # still answers at once
            assert second.seq == 2
            meta.release.set()
            await service.queue.drain(timeout=10)
            latest = await meta.latest_patterns("agent-a")
            assert latest is not None and latest.through_seq == 2 and latest.n_plans == 2

    asyncio.run(main())
    meta.close()


def test_two_thousand_finalizations_from_twenty_agents(store: HistoryStore) -> None:
    agents = [f"agent-{i:02d}" for i in range(20)]

    async def main() -> ExecutionService:
        async with ExecutionService(store, worker="thread", min_support=5, batch_size=8) as service:
            results = await asyncio.gather(*(
                service.finalize_plan(plan(f"p-{i}", agents[i % 20], ok=i % 3 != 0))
                for i in range(2_000)
            ))  # fmt: skip
            assert sorted(r.seq for r in results) == list(range(1, 2_001))
            await service.queue.drain(timeout=120)
            for agent in agents:
                latest = await service.meta_learning.latest_patterns(agent)
                assert latest is not None and latest.n_plans == 100, agent
                assert latest.through_seq >= max(r.seq for r in results if r.plan_id in {
                    f"p-{i}" for i in range(2_000) if agents[i % 20] == agent})  # fmt: skip
                # every failed plan is search → retry → retry: its parts hold the same plans,
                # so the longest stands for them and explains the rest
                assert ("search", "retry", "retry") in set(latest.failing["pattern"])
                parts = latest.patterns.set_index("pattern_text")
                assert parts.at["search → retry", "explained_by"] == "search → retry → retry"
        return service

    service = asyncio.run(main())
    stats = service.queue.stats()
    assert stats["failed"] == 0 and stats["submitted"] == 2_000
    assert stats["analyses"] < 2_000 / 4  # coalescing
    assert stats["analyses"] + stats["coalesced"] == 2_000
    assert service.queue.metrics()["status"].eq("completed").all()


def test_recovery_after_a_crash(store: HistoryStore) -> None:
    # plans recorded, but the process died before their analysis ran
    for i in range(6):
        store.record_plan(plan(f"p-{i}", f"agent-{i % 3}"))

    async def main() -> tuple[int, int]:
        async with ExecutionService(store, worker="thread", min_support=1) as service:
            await service.queue.drain(timeout=30)
            for agent in ("agent-0", "agent-1", "agent-2"):
                latest = await service.meta_learning.latest_analysis(agent)
                assert latest is not None and latest.n_plans == 2 and latest.through_seq == 6
            again = await service.recover()
            return service.queue.stats()["analyses"], again

    analyses, again = asyncio.run(main())
    assert analyses == 3 and again == 0
    assert store.agents_behind() == {}


def test_sync_fallback_without_a_loop(store: HistoryStore) -> None:
    service = ExecutionService(store, worker="thread", min_support=1)
    result = service.finalize_plan_sync(plan("p-1", "agent-a", ok=False))
    assert (result.seq, result.scheduled) == (1, False)
    latest = service.meta_learning.latest_patterns_sync("agent-a")
    assert latest is not None and latest.through_seq == 1 and latest.n_successes == 0

    async def inside_a_loop() -> None:
        with pytest.raises(RuntimeError, match=r"use `await service.finalize_plan\(plan\)`"):
            service.finalize_plan_sync(plan("p-2", "agent-a"))

    asyncio.run(inside_a_loop())
    asyncio.run(service.close())
    assert len(store) == 1  # the refused call wrote nothing


class SlowQueryService(MetaLearningService):
    """Background analysis runs a DuckDB query that would take minutes."""

    def snapshot_agents_sync(
        self, agent_ids: Sequence[str], *, interrupt: Interrupt | None = None, **kwargs: Any
    ) -> dict[str, int]:
        assert interrupt is not None
        with self.warehouse.snapshot() as snapshot, interrupt.attached(snapshot):
            snapshot.frame("SELECT count(*) FROM range(100000000000) a WHERE a % 7 = 3")
        return {}


def test_close_without_drain_interrupts_running_query(store: HistoryStore) -> None:
    meta = SlowQueryService(store)

    async def main() -> float:
        service = ExecutionService(meta_learning=meta, worker="thread")
        await service.start()
        await service.finalize_plan(plan("p-1", "agent-a"))
        await service.finalize_plan(plan("p-2", "agent-b"))
        await asyncio.sleep(0.3)  # the query is running
        started = time.perf_counter()
        await service.close(drain=False)
        elapsed = time.perf_counter() - started
        assert set(service.queue.metrics()["status"]) == {"cancelled"}
        return elapsed

    assert asyncio.run(main()) < 3
    meta.close()


class FailingService(MetaLearningService):
    def snapshot_agents_sync(self, agent_ids: Sequence[str], **kwargs: Any) -> dict[str, int]:
        if "bad-agent" in agent_ids:
            raise RuntimeError("analysis exploded")
        return super().snapshot_agents_sync(agent_ids, **kwargs)


def test_debug_mode_shows_no_lost_task_or_coroutine(
    store: HistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    meta = FailingService(store)

    async def main() -> ExecutionService:
        async with ExecutionService(meta_learning=meta, worker="thread", batch_size=1,
                                    retry_backoff_s=0.001, min_support=1) as service:  # fmt: skip
            for i in range(10):
                await service.finalize_plan(plan(f"p-{i}", ["bad-agent", "good"][i % 2]))
            await service.queue.drain(timeout=30)  # leaving does not wait for analyses
        return service

    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        service = asyncio.run(main(), debug=True)
        gc.collect()
    meta.close()
    asyncio_problems = [
        r.getMessage() for r in caplog.records
        if r.name == "asyncio" and r.levelno >= logging.ERROR
    ]  # fmt: skip
    assert asyncio_problems == []
    assert not [w for w in caught if "never awaited" in str(w.message)]
    stats = service.queue.stats()
    assert stats["failed"] >= 1 and stats["completed"] >= 1
    failed = service.queue.metrics().query("status == 'failed'")
    assert failed["error"].str.contains("RuntimeError: analysis exploded").all()
    assert any("failed after 3 attempts" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"min_support": 0}, "min_support must be an integer >= 1", id="support"),
        pytest.param({"fdr": 2}, r"fdr must be a number in \(0, 1\]", id="fdr"),
        pytest.param({"time_range_days": 0}, "time_range_days must be a number > 0", id="days"),
        pytest.param({"keep_snapshots": 0}, "keep_snapshots must be an integer >= 1", id="keep"),
        pytest.param({"metrics_history": 0}, "metrics_history must be an integer >= 1", id="hist"),
    ],
)
def test_analysis_options_are_checked_when_the_service_is_made(
    store: HistoryStore, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        ExecutionService(store, worker="thread", **options)


def test_analysis_options_are_one_frozen_value(store: HistoryStore) -> None:
    service = ExecutionService(
        store, worker="thread", time_range_days=7, min_length=2, keep_snapshots=3
    )
    options = service.analysis_options
    assert (options.time_range_days, options.patterns.min_length, options.keep_snapshots) == (
        7, 2, 3,
    )  # fmt: skip
    with pytest.raises(AttributeError):
        options.keep_snapshots = 5  # type: ignore[misc]
    asyncio.run(service.close())


def test_priority_override_and_bad_input(store: HistoryStore) -> None:
    async def main() -> None:
        async with ExecutionService(store, worker="thread", min_support=1) as service:
            result = await service.finalize_plan(plan("p-1", "a", priority=1), priority=7)
            assert result.scheduled
            with pytest.raises(TypeError, match=r"finalize_plan\(\) takes a metalearn\.Plan"):
                await service.finalize_plan({"plan_id": "x"})  # type: ignore[arg-type]

    asyncio.run(main())


def test_snapshots_are_pruned_per_agent(tmp_path: Path) -> None:
    with HistoryStore(f"sqlite:///{tmp_path / 'h.db'}") as store:
        store.import_frames(*make_history(200, seed=3))
        with MetaLearningService(store) as meta:
            for _ in range(4):
                meta.snapshot_agents_sync(["support-bot"], keep_snapshots=2, min_support=1)
            latest = meta.latest_patterns_sync("support-bot")
        with store.engine.connect() as conn:
            from sqlalchemy import text

            count = conn.execute(text("SELECT count(*) FROM metalearn_snapshots")).scalar()
            orphans = conn.execute(text(
                "SELECT count(*) FROM metalearn_snapshot_patterns p LEFT JOIN metalearn_snapshots s"
                " USING (snapshot_id) WHERE s.snapshot_id IS NULL"
            )).scalar()  # fmt: skip
    assert count == 2 and orphans == 0
    assert latest is not None and len(latest.patterns) > 0


def test_duplicate_in_a_group_commit_fails_only_its_caller(store: HistoryStore) -> None:
    async def main() -> list[Any]:
        async with ExecutionService(store, worker="thread", min_support=1) as service:
            return await asyncio.gather(
                service.finalize_plan(plan("p-1", "a")),
                service.finalize_plan(plan("p-1", "a")),
                service.finalize_plan(plan("p-2", "b")),
                return_exceptions=True,
            )

    first, second, third = asyncio.run(main())
    assert first.seq == 1 and third.scheduled
    assert isinstance(second, DuplicatePlanError) and second.plan_id == "p-1"
    assert len(store) == 2


def test_background_snapshot_equals_a_direct_analysis(tmp_path: Path) -> None:
    with HistoryStore(f"sqlite:///{tmp_path / 'h.db'}") as store:
        store.import_frames(*make_history(3_000, seed=4))
        with MetaLearningService(store) as meta:
            meta.snapshot_agents_sync(["support-bot", "ops-agent", "nobody"], min_support=5)
            for agent in ("support-bot", "ops-agent", "nobody"):
                stored, direct = (
                    meta.latest_analysis_sync(agent),
                    meta.analyze_execution_patterns_sync(agent),
                )
                assert stored is not None and stored.agent_id == agent
                for table in (
                    "overall",
                    "by_agent",
                    "by_goal_type",
                    "by_tool",
                    "by_day",
                    "failure_reasons",
                ):
                    pd.testing.assert_frame_equal(getattr(stored, table), getattr(direct, table))
                report = meta.latest_patterns_sync(agent)
                assert report is not None and report.through_seq == 3_000
                pd.testing.assert_frame_equal(
                    report.patterns,
                    meta.extract_successful_patterns_sync(agent, min_support=5).patterns,
                )


class RefusingStore(HistoryStore):
    """A real store whose database refuses any transaction holding the plan ``refused``
    (as a database refuses a value it cannot store), whatever else is in it."""

    def record_plans(self, batch: Sequence[Plan], **options: Any) -> list[int | DuplicatePlanError]:
        if any(plan.plan_id == "refused" for plan in batch):
            raise LookupError("the database refused plan 'refused'")
        return super().record_plans(batch, **options)


def test_group_commit_isolates_the_failing_plan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RefusingStore(f"sqlite:///{tmp_path / 'history.db'}")

    async def main() -> list[Any]:
        async with ExecutionService(store, worker="thread", min_support=1) as service:
            plans = [plan(f"p-{i}", "a") for i in range(40)]
            plans.insert(17, plan("refused", "a"))
            return await asyncio.gather(
                *(service.finalize_plan(p) for p in plans), return_exceptions=True
            )

    outcomes = asyncio.run(main())
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], LookupError)
    assert outcomes[17] is failed[0]  # the refused plan's own caller, nobody else
    written = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(written) == 40 and len(store) == 40
    assert sorted(o.seq for o in written) == sorted(set(o.seq for o in written))
    assert "writing them one at a time" in caplog.text
    store.close()


def test_background_snapshot_of_a_past_window(tmp_path: Path) -> None:
    end = datetime(2026, 6, 1, tzinfo=UTC)  # a fixed history: its window must not age
    with HistoryStore(f"sqlite:///{tmp_path / 'h.db'}") as store:
        store.import_frames(*make_history(2_000, seed=4, end=end))
        with MetaLearningService(store) as meta:
            meta.snapshot_agents_sync(["support-bot"], as_of=end, min_support=5)
            stored = meta.latest_analysis_sync("support-bot")
            direct = meta.analyze_execution_patterns_sync("support-bot", as_of=end)
    assert stored is not None and stored.n_plans == direct.n_plans > 0
    pd.testing.assert_frame_equal(stored.by_goal_type, direct.by_goal_type)
