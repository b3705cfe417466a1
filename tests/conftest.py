"""Shared fixtures: stores on SQLite and PostgreSQL, the τ-bench data, plan factories."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import create_engine

from metalearn import HistoryStore, MetaLearningService, Plan
from metalearn._schema import metadata

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"  # the real data committed with the repository
TAU_BENCH = DATA / "tau_bench"
TRACES = DATA / "traces"
POSTGRES_URL = os.environ.get("METALEARN_TEST_POSTGRES_URL")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_T = TypeVar("_T")


def _postgres_url() -> str:
    if POSTGRES_URL:
        return POSTGRES_URL
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            "METALEARN_TEST_POSTGRES_URL is not set under CI=true: "
            "PostgreSQL tests must run in CI (.ci/run starts the server)"
        )
    pytest.skip("set METALEARN_TEST_POSTGRES_URL (see .ci/postgres.sh) to run PostgreSQL tests")


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        metadata.drop_all(conn)
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a SQLite file, or the test PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.db'}"
        return
    url = _postgres_url()
    _reset_postgres(url)
    yield url
    _reset_postgres(url)


@pytest.fixture
def store(store_url: str) -> Iterator[HistoryStore]:
    """An empty HistoryStore on each backend."""
    with HistoryStore(store_url) as history:
        yield history


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore(f"sqlite:///{tmp_path / 'history.db'}") as history:
        yield history


def make_plan(
    plan_id: str,
    *,
    agent_id: str = "agent-a",
    tools: tuple[str, ...] = ("search", "fetch", "respond"),
    status: str = "succeeded",
    offset_s: int = 0,
) -> Plan:
    """A valid plan whose steps call ``tools`` in order."""
    start = T0 + timedelta(seconds=offset_s)
    return Plan(
        plan_id,
        agent_id,
        status,
        start,
        start + timedelta(seconds=len(tools)),
        goal_type="lookup",
        steps=[{"tool": t, "duration_ms": 10.0 * (i + 1)} for i, t in enumerate(tools)],
    )


END = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def tau_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HistoryStore]:
    """The 200 τ-bench airline plans in a SQLite store (shared, read-only for tests)."""
    path = tmp_path_factory.mktemp("tau") / "tau.db"
    with HistoryStore(f"sqlite:///{path}") as store:
        store.import_csv(TAU_BENCH / "plans.csv", TAU_BENCH / "steps.csv")
        yield store


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HistoryStore]:
    """20,000 synthetic plans with planted patterns, ending at END (shared, read-only)."""
    from metalearn.synthetic import make_history

    path = tmp_path_factory.mktemp("synthetic") / "history.db"
    with HistoryStore(f"sqlite:///{path}") as store:
        store.import_frames(*make_history(20_000, seed=1, end=END))
        yield store


@pytest.fixture(scope="session")
def tau(tau_store: HistoryStore) -> Iterator[MetaLearningService]:
    """A service over the τ-bench store (shared by the analysis and pattern tests)."""
    with MetaLearningService(tau_store, max_workers=2) as service:
        yield service


@pytest.fixture(scope="session")
def synthetic(synthetic_store: HistoryStore) -> Iterator[MetaLearningService]:
    """A service over the 20,000-plan synthetic store."""
    with MetaLearningService(synthetic_store, max_workers=2) as service:
        yield service


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Runs a service method through its blocking ``_sync`` form or its awaitable twin."""

    def run(service: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if request.param == "sync":
            return getattr(service, f"{name}_sync")(*args, **kwargs)
        return asyncio.run(getattr(service, name)(*args, **kwargs))

    return run


@contextmanager
def waiting_children(script: str, names: list[str]) -> Iterator[list[subprocess.Popen[str]]]:
    """One ``python -c script NAME`` process per name, each past its ``ready`` line and
    waiting on its stdin; closed (stdin, then wait, then stdout) however the block ends."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, name],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        yield children
    finally:
        for child in children:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=60)
            if child.stdout is not None:
                child.stdout.close()


def eventually(check: Callable[[], _T | None], timeout: float = 30, what: str = "") -> _T:
    """Poll ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
