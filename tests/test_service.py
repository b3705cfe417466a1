"""MetaLearningService: construction, async twins, lifecycle, and a loop that keeps ticking."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from metalearn import HistoryStore, InvalidArgumentError, MetaLearningService
from metalearn.synthetic import make_history
from tests.conftest import END, make_plan


def public_sync_methods() -> list[str]:
    return [n for n in dir(MetaLearningService) if n.endswith("_sync") and not n.startswith("_")]


def test_every_sync_method_has_an_async_twin_with_the_same_parameters() -> None:
    names = public_sync_methods()
    assert {"analyze_execution_patterns_sync", "extract_successful_patterns_sync"} <= set(names)
    for name in names:
        sync = getattr(MetaLearningService, name)
        twin = getattr(MetaLearningService, name.removesuffix("_sync"))
        assert inspect.iscoroutinefunction(twin), name
        assert inspect.signature(twin).parameters == inspect.signature(sync).parameters, name
        assert twin.__name__ == name.removesuffix("_sync") and "Awaitable twin" in (
            twin.__doc__ or ""
        )


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore(f"sqlite:///{tmp_path / 'h.db'}") as store:
        store.import_frames(*make_history(300, seed=8, end=END))
        yield store


@pytest.mark.parametrize("kind", ["store", "engine", "session", "url"])
def test_accepts_every_kind_of_database(small_store: HistoryStore, kind: str) -> None:
    engine = create_engine(small_store.engine.url)
    session = Session(engine)
    db = {"store": small_store, "engine": engine, "session": session,
          "url": small_store.engine.url.render_as_string(hide_password=False)}[kind]  # fmt: skip
    with MetaLearningService(db, max_workers=1) as service:
        assert service.analyze_execution_patterns_sync(time_range_days=None).n_plans == 300
    session.close()
    engine.dispose()


def test_rejects_what_is_not_a_database() -> None:
    with pytest.raises(
        TypeError, match="db must be a HistoryStore, a SQLAlchemy Engine or Session"
    ):
        MetaLearningService(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="max_workers must be an integer >= 1, not 0"):
        MetaLearningService("sqlite://", max_workers=0)


def test_async_twins_run_in_named_worker_threads(small_store: HistoryStore) -> None:
    seen: list[str] = []

    class Spy(MetaLearningService):
        def refresh_sync(self) -> int:
            seen.append(threading.current_thread().name)
            return super().refresh_sync()

    async def main() -> None:
        async with Spy(small_store, max_workers=2) as service:
            results = await asyncio.gather(
                service.analyze_execution_patterns(time_range_days=None),
                service.extract_successful_patterns(time_range_days=None, min_support=5),
                service.refresh(),
            )
            assert results[0].n_plans == 300 and results[1].n_plans == 300 and results[2] == 0

    asyncio.run(main())
    assert seen and all(name.startswith("metalearn-worker") for name in seen)


def test_sync_and_async_give_the_same_answer(small_store: HistoryStore) -> None:
    with MetaLearningService(small_store) as service:
        blocking = service.extract_successful_patterns_sync(time_range_days=None, min_support=5)
        awaited = asyncio.run(
            service.extract_successful_patterns(time_range_days=None, min_support=5)
        )
    assert blocking.patterns.equals(awaited.patterns)


def test_new_plans_show_up_in_the_next_analysis(small_store: HistoryStore) -> None:
    with MetaLearningService(small_store) as service:
        before = service.analyze_execution_patterns_sync("agent-a", time_range_days=None)
        small_store.record_plan(make_plan("fresh", agent_id="agent-a"))
        after = service.analyze_execution_patterns_sync("agent-a", time_range_days=None)
    assert (before.n_plans, after.n_plans) == (0, 1) and after.through_seq == 301


def test_close_is_final_and_idempotent(small_store: HistoryStore) -> None:
    service = MetaLearningService(small_store)
    service.close()
    service.close()
    assert "closed" in repr(service)
    with pytest.raises(RuntimeError, match="this MetaLearningService is closed"):
        asyncio.run(service.analyze_execution_patterns())
    assert len(small_store) == 300  # a store passed in stays open


@pytest.fixture(scope="module")
def large_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HistoryStore]:
    path = tmp_path_factory.mktemp("large") / "history.db"
    with HistoryStore(f"sqlite:///{path}") as store:
        store.import_frames(*make_history(200_000, seed=6, end=END))
        yield store


def test_event_loop_keeps_ticking_during_analysis(large_store: HistoryStore) -> None:
    """A 1 ms ticker's lag while the async API refreshes and analyses 200,000 plans."""
    lags: list[float] = []

    async def main() -> None:
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(time.perf_counter() - started - 0.001)

        async with MetaLearningService(large_store) as service:
            tick = asyncio.create_task(ticker())
            analysis = await service.analyze_execution_patterns(time_range_days=None)
            report = await service.extract_successful_patterns(time_range_days=None)
            stop.set()
            await tick
        assert analysis.n_plans == report.n_plans == 200_000

    asyncio.run(main())
    p99_ms = float(np.percentile(lags, 99) * 1000)
    assert len(lags) > 500
    assert p99_ms < 50, f"event-loop lag p99 {p99_ms:.1f} ms"
