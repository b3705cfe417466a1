"""The analyses on Spark (metalearn.spark, issue 16) equal the DuckDB path's on the same data.

A real Spark ``local[2]`` with Java runs every test here. The histories are τ-bench, the
20,000-plan synthetic one and a messy one (the edge plans of the poison tests, error texts
every mask has to handle, plans without steps), each exported with ``export_parquet`` and
read back by :class:`SparkHistory`. The pattern and hint aggregations Spark runs are the ones
``tests/test_pattern_sql.py`` pins to the numpy path bit for bit, so equal here means the
whole chain holds. Under ``CI=true`` a missing pyspark or Java fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from metalearn import (
    AnalysisInterrupted,
    HistoryStore,
    InvalidArgumentError,
    InvalidRecordError,
    MetaLearningService,
    MissingDependencyError,
    Plan,
)
from metalearn._external import UnsupportedError
from tests.conftest import END
from tests.test_poison import edge_plans

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} under CI=true: .ci/run installs both", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


try:
    from metalearn.spark import SparkHistory, local_session
except MissingDependencyError:
    _unavailable('pyspark is not installed (pip install "metalearn[spark]")')
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    _unavailable("no Java runtime (apt install openjdk-17-jre-headless)")

TABLES = ("overall", "by_agent", "by_goal_type", "by_tool", "by_day", "failure_reasons")


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    session = local_session(2)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _lake(store: HistoryStore, directory: Path) -> tuple[str, str]:
    store.export_parquet(directory)
    return str(directory / "plans"), str(directory / "steps")


@pytest.fixture(scope="module")
def messy_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HistoryStore]:
    """Edge values of every field, error texts for every mask, plans without steps."""
    texts = [
        "timeout after 30s on 'db-7'", 'quota "user 5" hit', "éab1 failed: x9\x0b\x0bdone",
        "id 123e4567-e89b-12d3-a456-426614174000 gone", "tab\there\n  twice", None, "  ",
        "ü-42 and ñ_7 and 0x1f", "\U0001f600 code 500",
    ]  # fmt: skip
    plans = [*edge_plans("spark"), *edge_plans("lake")]
    for n in range(240):
        steps = [
            {"tool": ("search", "fetch", "ünïcode tool", "retry")[(n + i) % 4],
             "status": "error" if (n + i) % 3 == 0 else "ok",
             "error": texts[(n + i) % len(texts)] if (n + i) % 3 == 0 else None,
             "duration_ms": None if i == 1 else float(n % 17) * 1.5}
            for i in range(n % 5)
        ]  # fmt: skip
        plans.append(Plan(
            f"messy-{n}", ("a-é", "b")[n % 2], "succeeded" if n % 3 else "failed",
            END - timedelta(days=n % 40, minutes=n), END - timedelta(days=n % 40),
            goal_type=(None, "refund", "lookup")[n % 3], steps=steps,
        ))  # fmt: skip
    with HistoryStore("sqlite://") as store:
        store.record_plans(plans)
        yield store


@pytest.fixture(scope="module")
def histories(
    spark: Any,
    tau_store: HistoryStore,
    synthetic_store: HistoryStore,
    messy_store: HistoryStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[MetaLearningService, MetaLearningService]]]:
    """Per history: (the DuckDB service, the Spark service) over the same plans."""
    made = {}
    for name, store in (("tau", tau_store), ("synthetic", synthetic_store),
                        ("messy", messy_store)):  # fmt: skip
        plans, steps = _lake(store, tmp_path_factory.mktemp(f"lake-{name}"))
        history = SparkHistory(spark, plans=plans, steps=steps)
        made[name] = (MetaLearningService(store, max_workers=2),
                      MetaLearningService(history, max_workers=2), history)  # fmt: skip
    yield {name: (local, remote) for name, (local, remote, _) in made.items()}
    for local, remote, history in made.values():
        local.close()
        remote.close()
        history.close()


def same_frames(expected: pd.DataFrame, got: pd.DataFrame) -> None:
    """Equal to 1e-12 relative. The one absolute slack is for durations' medians next to
    zero: DuckDB and Spark interpolate quantiles by different (both exact) formulas, so
    between 0.0 and the smallest subnormal (5e-324, in the messy data) one rounds to 0."""
    pd.testing.assert_frame_equal(expected, got, check_exact=False, rtol=1e-12, atol=1e-300)


def same_analysis(expected: Any, got: Any) -> None:
    for name in TABLES:
        same_frames(getattr(expected, name), getattr(got, name))
    assert (got.agent_id, got.time_range_days) == (expected.agent_id, expected.time_range_days)
    assert got.through_seq == 0  # a lake has no store seq


ALL: dict[str, Any] = {"time_range_days": None}
WINDOWS = {
    "tau": [ALL],
    "synthetic": [ALL, {"agent_id": "support-bot", "time_range_days": 20, "as_of": END}],
    "messy": [ALL, {"agent_id": "a-é", "time_range_days": 30, "as_of": END}],
}


@pytest.mark.parametrize(
    ("name", "window"),
    [pytest.param(n, w, id=f"{n}-{i}") for n, ws in WINDOWS.items() for i, w in enumerate(ws)],
)
def test_analysis_equals_duckdb(
    histories: dict[str, Any], name: str, window: dict[str, Any]
) -> None:
    local, remote = histories[name]
    expected = local.analyze_execution_patterns_sync(**window)
    got = remote.analyze_execution_patterns_sync(**window)
    assert expected.n_plans > 0 and not expected.by_tool.empty
    same_analysis(expected, got)


AGENT_POOLED = {"agent_id": "support-bot", "time_range_days": 20, "as_of": END,
                "stratify_by": None}  # fmt: skip
GAPS_BY_AGENT = {"time_range_days": None, "max_gap": 1, "max_length": 3,
                 "stratify_by": "agent_id"}  # fmt: skip
PATTERNS = [
    pytest.param("synthetic", ALL, id="synthetic-defaults"),
    pytest.param("synthetic", AGENT_POOLED, id="synthetic-agent-pooled"),
    pytest.param("synthetic", GAPS_BY_AGENT, id="synthetic-gaps-by-agent"),
    pytest.param("tau", {**ALL, "min_support": 5}, id="tau-defaults"),
    pytest.param("messy", {**ALL, "min_support": 3}, id="messy-defaults"),
]


@pytest.mark.parametrize(("name", "options"), PATTERNS)
def test_patterns_equal_duckdb(
    histories: dict[str, Any], name: str, options: dict[str, Any]
) -> None:
    local, remote = histories[name]
    expected = local.extract_successful_patterns_sync(**options)
    got = remote.extract_successful_patterns_sync(**options)
    assert len(expected.patterns) >= 10
    same_frames(expected.patterns, got.patterns)
    assert (got.n_plans, got.n_successes, got.options) == (
        expected.n_plans, expected.n_successes, expected.options)  # fmt: skip


@pytest.mark.parametrize("name", ["synthetic", "messy"])
def test_hints_equal_duckdb(histories: dict[str, Any], name: str) -> None:
    local, remote = histories[name]
    support = {"synthetic": 10, "messy": 2}[name]
    expected = local.hint_table_sync(3, time_range_days=None, min_support=support)
    got = remote.hint_table_sync(3, time_range_days=None, min_support=support)
    assert len(expected.hints) > 10
    same_frames(expected.hints, got.hints)
    assert (got.n_plans, got.n_successes) == (expected.n_plans, expected.n_successes)
    prefix = list(expected.hints["prefix"].iloc[-1])
    hints = local.next_step_hints_sync(prefix, time_range_days=None, min_support=support)
    same_frames(hints, remote.next_step_hints_sync(prefix, time_range_days=None,
                                                   min_support=support))  # fmt: skip


@pytest.mark.parametrize("by", ["agent_id", "goal_type", "tool"])
def test_changes_equal_duckdb(histories: dict[str, Any], by: str) -> None:
    local, remote = histories["synthetic"]
    expected = local.detect_changes_sync(by, min_plans=500, permutations=99)
    got = remote.detect_changes_sync(by, min_plans=500, permutations=99)
    assert not expected.changes.empty
    same_frames(expected.changes, got.changes)


def test_async_twins_run_on_spark(histories: dict[str, Any]) -> None:
    local, remote = histories["tau"]

    async def both() -> tuple[Any, Any]:
        return await asyncio.gather(
            remote.analyze_execution_patterns(time_range_days=None),
            remote.extract_successful_patterns(time_range_days=None, min_support=5),
        )

    analysis, report = asyncio.run(both())
    same_analysis(local.analyze_execution_patterns_sync(time_range_days=None), analysis)
    expected = local.extract_successful_patterns_sync(time_range_days=None, min_support=5)
    same_frames(expected.patterns, report.patterns)


def test_dataframes_and_tables_in_another_time_zone(
    spark: Any, tau_store: HistoryStore, tau: MetaLearningService, tmp_path: Path
) -> None:
    """DataFrames and table names work as Parquet paths do, whatever the caller's zone."""
    plans, steps = _lake(tau_store, tmp_path)
    zone = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        spark.read.parquet(steps).createOrReplaceTempView("tau_steps")
        history = SparkHistory(spark, plans=spark.read.parquet(plans), steps="tau_steps")
        with MetaLearningService(history) as service:
            got = service.analyze_execution_patterns_sync(time_range_days=None)
        history.close()
    finally:
        spark.conf.set("spark.sql.session.timeZone", zone)
    same_analysis(tau.analyze_execution_patterns_sync(time_range_days=None), got)


def closing_when_running(service: MetaLearningService, context: Any) -> threading.Thread:
    """A started thread that closes ``service`` once a Spark job runs (or after 30 s)."""

    def close_when_running() -> None:
        for _ in range(600):
            if context.statusTracker().getActiveJobsIds():
                break
            time.sleep(0.05)
        service.close()

    closer = threading.Thread(target=close_when_running)
    closer.start()
    return closer


def test_close_cancels_running_spark_jobs(histories: dict[str, Any]) -> None:
    """Closing the service cancels the running job group: the analysis raises at once."""
    _, remote = histories["synthetic"]
    history = remote._external
    service = MetaLearningService(history, max_workers=1)
    context = history._session.sparkContext

    async def run() -> Any:
        return await service.extract_successful_patterns(
            time_range_days=None, max_length=6, min_support=2, max_gap=3
        )

    closer = closing_when_running(service, context)
    started = time.monotonic()
    with pytest.raises(AnalysisInterrupted, match="cancelled"):
        asyncio.run(run())
    closer.join()
    assert time.monotonic() - started < 60
    assert not context.statusTracker().getActiveJobsIds()


def test_close_cancels_the_preparation_and_the_history_stays_usable(
    spark: Any, synthetic_store: HistoryStore, histories: dict[str, Any], tmp_path: Path
) -> None:
    """The first analysis prepares the tables under its job group: closing the service
    cancels that too (it must not wait for the preparation), and a later analysis
    prepares again from scratch."""
    plans, steps = _lake(synthetic_store, tmp_path)
    history = SparkHistory(spark, plans=plans, steps=steps)
    service = MetaLearningService(history, max_workers=1)
    context = spark.sparkContext

    closer = closing_when_running(service, context)
    with pytest.raises(AnalysisInterrupted, match="cancelled"):
        asyncio.run(service.analyze_execution_patterns(time_range_days=None))
    closer.join()
    assert not history._kept  # stopped while preparing, and nothing of it kept
    local, _ = histories["synthetic"]
    with MetaLearningService(history) as again:
        got = again.analyze_execution_patterns_sync(time_range_days=None)
    history.close()
    same_analysis(local.analyze_execution_patterns_sync(time_range_days=None), got)


# -- bad setups: typed errors that say what to do -----------------------------------------


def test_a_missing_column_is_named(spark: Any, tau_store: HistoryStore, tmp_path: Path) -> None:
    plans, steps = _lake(tau_store, tmp_path)
    with pytest.raises(InvalidRecordError, match="'finished_at' is missing") as raised:
        SparkHistory(spark, plans=spark.read.parquet(plans).drop("finished_at"), steps=steps)
    assert (raised.value.field, raised.value.table) == ("finished_at", "plans")


def test_a_mistyped_column_is_named(spark: Any, tau_store: HistoryStore, tmp_path: Path) -> None:
    plans, steps = _lake(tau_store, tmp_path)
    text_index = spark.read.parquet(steps).withColumn("step_index", pd_col("step_index"))
    with pytest.raises(InvalidRecordError, match="'step_index' is string; it must be an integer"):
        SparkHistory(spark, plans=plans, steps=text_index)
    with pytest.raises(InvalidRecordError, match="'started_at' is string; it must be a timestamp"):
        SparkHistory(spark, plans=spark.read.parquet(plans).withColumn(
            "started_at", pd_col("started_at")), steps=steps)  # fmt: skip


def pd_col(name: str) -> Any:
    from pyspark.sql import functions

    return functions.col(name).cast("string")


def test_missing_optional_columns_read_as_missing_values(
    spark: Any, tau_store: HistoryStore, tau: MetaLearningService, tmp_path: Path
) -> None:
    plans, steps = _lake(tau_store, tmp_path)
    history = SparkHistory(spark, plans=spark.read.parquet(plans).drop("reward", "priority"),
                           steps=spark.read.parquet(steps).drop("duration_ms"))  # fmt: skip
    with MetaLearningService(history) as service:
        got = service.analyze_execution_patterns_sync(time_range_days=None)
    history.close()
    expected = tau.analyze_execution_patterns_sync(time_range_days=None)
    same_frames(expected.by_agent, got.by_agent)
    assert got.by_tool["median_duration_ms"].isna().all()


def test_duplicate_plan_ids_are_refused(
    spark: Any, tau_store: HistoryStore, tmp_path: Path
) -> None:
    plans, steps = _lake(tau_store, tmp_path)
    twice = spark.read.parquet(plans).unionByName(spark.read.parquet(plans).limit(1))
    history = SparkHistory(spark, plans=twice, steps=steps)
    with (
        MetaLearningService(history) as service,
        pytest.raises(InvalidRecordError, match="appears 2 times") as raised,
    ):
        service.analyze_execution_patterns_sync(time_range_days=None)
    history.close()
    assert raised.value.field == "plan_id"


def test_bad_arguments(spark: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="needs a SparkSession"):
        SparkHistory("spark", plans="p", steps="s")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="neither a Parquet path nor a table"):
        SparkHistory(spark, plans=str(tmp_path / "nowhere"), steps="s")
    with pytest.raises(InvalidArgumentError, match="must be a Spark DataFrame"):
        SparkHistory(spark, plans=42, steps="s")


def test_no_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MissingDependencyError, match="openjdk-17-jre-headless"):
        local_session()


@pytest.mark.parametrize(
    ("method", "args"),
    [("snapshot_agents_sync", (["support-bot"],)), ("latest_patterns_sync", ("support-bot",)),
     ("latest_analysis_sync", ("support-bot",)), ("latest_hints_sync", ("support-bot",))],
)  # fmt: skip
def test_store_bound_operations_say_why_not(
    histories: dict[str, Any], method: str, args: tuple[Any, ...]
) -> None:
    _, remote = histories["tau"]
    with pytest.raises(UnsupportedError, match="Spark history"):
        getattr(remote, method)(*args)
    assert remote.refresh_sync() == 0


def test_without_pyspark_the_import_says_what_to_install() -> None:
    """``import metalearn.spark`` with pyspark missing: MissingDependencyError naming the extra."""
    script = (
        "import sys; sys.modules['pyspark'] = None\n"
        "try:\n"
        "    import metalearn.spark\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=120)  # fmt: skip
    assert done.stdout.startswith("MissingDependencyError metalearn.spark needs pyspark")
    assert 'pip install "metalearn[spark]"' in done.stdout


def test_a_stopped_session_is_refused_at_once() -> None:
    """In a process of its own: stopping the session of this module would end the others."""
    script = (
        "from metalearn.spark import SparkHistory, local_session\n"
        "spark = local_session(1)\n"
        "spark.stop()\n"
        "try:\n"
        "    SparkHistory(spark, plans='p', steps='s')\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True,
                          text=True, check=True, timeout=300)  # fmt: skip
    assert done.stdout.startswith("InvalidArgumentError this SparkSession is stopped"), done
