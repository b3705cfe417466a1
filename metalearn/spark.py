"""metalearn on Apache Spark: the same analyses over a lakehouse history.

:class:`SparkHistory` reads plans and steps in the interchange format (the README's
table) from Spark DataFrames, table names or Parquet paths (``store.export_parquet``
writes them) and stands in for the database of a :class:`~metalearn.MetaLearningService`::

    from metalearn.spark import SparkHistory, local_session

    spark = local_session()                      # or your cluster's SparkSession
    history = SparkHistory(spark, plans="lake/plans", steps="lake/steps")
    with MetaLearningService(history) as service:
        report = service.extract_successful_patterns_sync(time_range_days=None)

Heavy work runs on the cluster, statistics on the driver. Every query is the DuckDB
path's own text (:mod:`metalearn._queries`, :mod:`metalearn._pattern_sql`), transpiled to
Spark SQL by sqlglot with its parameters bound as literals; only aggregated tables (one
row per group, pattern, stratum or findings context) are collected, through Arrow. The
results equal the DuckDB path's on the same data.

The rate analyses, patterns (:mod:`metalearn._pattern_sql`), next-step hints
(:mod:`metalearn._hint_sql`) and change detection all run this way. The history is read
where it is: nothing is mirrored (``refresh`` does nothing) and a Spark history has no
store, so background snapshots (``snapshot_agents``, ``latest_*``) raise
:class:`~metalearn._external.UnsupportedError`. A plan's ``plan_id`` is its key (unique);
``through_seq`` of its results is 0 (there is no store ``seq``: the plans are numbered
on Spark, once, for cheaper joins).

Each job runs in its own Spark session (its temporary views are its own, its time zone
UTC) under its own job group, so ``interrupt()`` (and closing the service) cancels its
running Spark jobs.
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, TypeVar

import pyarrow as pa
import sqlglot
from sqlglot import exp

from metalearn._errors import (
    AnalysisInterrupted,
    InvalidArgumentError,
    InvalidRecordError,
    MissingDependencyError,
)
from metalearn._external import ExternalHistory
from metalearn._interchange import PLAN_COLUMNS, STEP_COLUMNS
from metalearn._warehouse import _MASKS

try:
    from pyspark import StorageLevel
    from pyspark.errors import PySparkException
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.sql.window import Window as SparkWindow
except ImportError as error:  # pragma: no cover - the spark extra is installed in CI
    raise MissingDependencyError(
        'metalearn.spark needs pyspark: pip install "metalearn[spark]" (and a Java runtime, '
        "e.g. apt install openjdk-17-jre-headless)"
    ) from error

from py4j.protocol import Py4JError

__all__ = ["SparkHistory", "SparkSnapshot", "local_session", "to_spark_sql"]

_T = TypeVar("_T")
_KEPT = StorageLevel.DISK_ONLY  # tables kept on the cluster (see SparkSnapshot.checkpoint)

# -- the schema ---------------------------------------------------------------------------

_TEXT, _TIME, _INTEGER, _NUMBER = "a string", "a timestamp", "an integer", "a number"
_KINDS: dict[str, dict[str, str]] = {
    "plans": {"plan_id": _TEXT, "agent_id": _TEXT, "goal_type": _TEXT, "status": _TEXT,
              "started_at": _TIME, "finished_at": _TIME, "reward": _NUMBER, "error": _TEXT,
              "priority": _INTEGER},
    "steps": {"plan_id": _TEXT, "step_index": _INTEGER, "tool": _TEXT, "status": _TEXT,
              "duration_ms": _NUMBER, "error": _TEXT},
}  # fmt: skip
_REQUIRED = {
    "plans": ("plan_id", "agent_id", "status", "started_at", "finished_at"),
    "steps": ("plan_id", "step_index", "tool", "status"),
}
assert set(_KINDS["plans"]) == set(PLAN_COLUMNS) and set(_KINDS["steps"]) == set(STEP_COLUMNS)


_SPARK_TYPES = {_TEXT: "string", _TIME: "timestamp", _INTEGER: "int", _NUMBER: "double"}


def _accepts(kind: str, data_type: T.DataType) -> bool:
    if kind == _TEXT:
        return isinstance(data_type, T.StringType | T.NullType)
    if kind == _TIME:
        return isinstance(data_type, T.TimestampType | T.TimestampNTZType)
    if kind == _INTEGER:
        return isinstance(data_type, T.ByteType | T.ShortType | T.IntegerType | T.LongType)
    return isinstance(data_type, T.NumericType | T.NullType)


def _checked(frame: DataFrame, table: str) -> DataFrame:
    """The interchange columns of ``frame``, typed as the warehouse's; optional columns
    that are missing become NULL. A missing required or mistyped column raises
    :class:`InvalidRecordError` naming it."""
    fields = {f.name: f.dataType for f in frame.schema.fields}
    columns = []
    for name, kind in _KINDS[table].items():
        if name not in fields:
            if name in _REQUIRED[table]:
                raise InvalidRecordError(
                    f"{table}: the column {name!r} is missing; the interchange format has "
                    f"{', '.join(_KINDS[table])} (required: {', '.join(_REQUIRED[table])}); "
                    f"got {', '.join(fields) or 'no columns'}",
                    field=name,
                    table=table,
                )
            columns.append(F.lit(None).cast(_SPARK_TYPES[kind]).alias(name))
            continue
        if not _accepts(kind, fields[name]):
            raise InvalidRecordError(
                f"{table}: the column {name!r} is {fields[name].simpleString()}; it must be "
                f"{kind}" + (" (UTC)" if kind == _TIME else "") + "; cast it before "
                "handing the table to SparkHistory",
                field=name,
                table=table,
            )
        columns.append(F.col(name))
    return frame.select(*columns)


def _frame(spark: SparkSession, source: object, table: str) -> DataFrame:
    """A DataFrame, a table name or a Parquet path, as a DataFrame."""
    if isinstance(source, DataFrame):
        return source
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        if os.path.exists(text) or "://" in text:
            return spark.read.parquet(text)
        try:
            exists = spark.catalog.tableExists(text)
        except PySparkException:  # not even a valid table name
            exists = False
        if exists:
            return spark.table(text)
        raise InvalidArgumentError(
            f"{table}={text!r} is neither a Parquet path nor a table of this Spark session"
        )
    raise InvalidArgumentError(
        f"{table} must be a Spark DataFrame, a table name or a Parquet path, "
        f"not {type(source).__name__}"
    )


# -- preparing the history: the warehouse's columns, computed by Spark ---------------------


def _java_regex(pattern: str) -> str:
    """An RE2 mask of ``_warehouse._MASKS`` in Java's regex syntax, matching the same.

    RE2's ``\\b`` and ``\\s`` are ASCII; Java 17's ``\\b`` is Unicode-aware and its ``\\s``
    has the vertical tab, so both are spelled out (every ``\\b`` in the masks precedes a
    word character, so it is "no word character before").
    """
    return pattern.replace(r"\b", "(?<![A-Za-z0-9_])").replace(r"\s", r"[\t\n\f\r ]")


def _error_norm(error: Any) -> Any:
    """The masked error text, as ``_warehouse.normalised_errors`` computes it."""
    masked = F.coalesce(error, F.lit("(no message)"))
    for pattern, mask in _MASKS:
        masked = F.regexp_replace(masked, _java_regex(pattern), mask)
    return F.trim(masked)


def _prepared_plans(plans: DataFrame) -> DataFrame:
    """The warehouse's ``plans``; ``seq`` a unique BIGINT (checkpointed once, so it is
    stable: numeric keys make every later join and shuffle by plan cheaper than plan_id)."""
    instant = {c: F.col(c).cast("timestamp") for c in ("started_at", "finished_at")}
    micros = {c: F.unix_micros(v) for c, v in instant.items()}
    return plans.select(
        F.monotonically_increasing_id().alias("seq"),
        "plan_id",
        "agent_id",
        "goal_type",
        (F.col("status") == "succeeded").alias("succeeded"),
        instant["started_at"].cast("timestamp_ntz").alias("started_at"),
        instant["finished_at"].cast("timestamp_ntz").alias("finished_at"),
        ((micros["finished_at"] - micros["started_at"]) / 1e6).alias("duration_s"),
        F.col("reward").cast("double").alias("reward"),
        "error",
        F.coalesce(F.col("priority").cast("int"), F.lit(0)).alias("priority"),
    )


def _prepared_tools(steps: DataFrame) -> DataFrame:
    """The warehouse's ``tools``: each distinct tool name and its integer id."""
    names = steps.select("tool").distinct()
    return names.select(
        (F.row_number().over(SparkWindow.orderBy("tool")) - 1).alias("tool_id"), "tool"
    )


def _prepared_steps(steps: DataFrame, plans: DataFrame, tools: DataFrame) -> DataFrame:
    """The warehouse's ``steps``: their plan's columns joined (by plan_id, once), each
    tool's first call in its plan marked and error texts masked."""
    owner = plans.select("seq", F.col("plan_id").alias("owner"), "agent_id", "finished_at",
                         "succeeded")  # fmt: skip
    first_call = SparkWindow.partitionBy("seq", "tool_id").orderBy("step_index")
    return (
        steps.join(F.broadcast(tools), "tool")
        .join(owner, steps["plan_id"] == owner["owner"])
        .select(
            "seq",
            F.col("step_index").cast("int").alias("step_index"),
            "tool_id",
            "status",
            F.col("duration_ms").cast("double").alias("duration_ms"),
            "error",
            "agent_id",
            "finished_at",
            "succeeded",
            (F.row_number().over(first_call) == 1).alias("first_in_plan"),
            F.when(F.col("status") == "error", _error_norm(F.col("error"))).alias("error_norm"),
        )
    )


# -- DuckDB-dialect SQL as Spark SQL -----------------------------------------------------


def _literal(value: object) -> exp.Expression:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float):
        return exp.Literal.number(repr(value))
    if isinstance(value, datetime | date):
        return exp.Literal.string(value.isoformat(sep=" ") if isinstance(value, datetime)
                                  else value.isoformat())  # fmt: skip
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, list | tuple):
        return exp.Array(expressions=[_literal(v) for v in value])
    raise InvalidArgumentError(f"no Spark literal for the query parameter {value!r}")


def _spark_node(params: Mapping[str, Any]) -> Callable[[exp.Expression], exp.Expression]:
    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder | exp.Parameter):
            name = node.name
            if name not in params:
                raise InvalidArgumentError(f"the query needs the parameter ${name}")
            return _literal(params[name])
        if isinstance(node, exp.PercentileCont):  # exact, linear: DuckDB's quantile_cont
            return exp.Anonymous(this="percentile", expressions=[node.this, node.expression])
        if isinstance(node, exp.UnixToTime) and not isinstance(node.parent, exp.Cast):
            # DuckDB's make_timestamp is naive (UTC); Spark's timestamp_micros is an instant.
            return exp.cast(node.copy(), "TIMESTAMP_NTZ")
        if isinstance(node, exp.Anonymous) and node.name.lower() == "epoch_us":
            return exp.Anonymous(
                this="unix_micros", expressions=[exp.cast(node.expressions[0], "TIMESTAMP")]
            )
        return node

    return rewrite


def to_spark_sql(sql: str, params: Mapping[str, Any] | None = None) -> str:
    """A DuckDB-dialect query of metalearn as Spark SQL, its ``$name`` parameters bound.

    >>> to_spark_sql("SELECT quantile_cont(x, 0.5) FROM t WHERE a = $a", {"a": "x'y"})
    "SELECT PERCENTILE(x, 0.5) FROM t WHERE a = 'x\\\\'y'"
    """
    tree = sqlglot.parse_one(sql, read="duckdb").transform(_spark_node(params or {}))
    text: str = tree.sql(dialect="spark")
    return text


# -- sessions and snapshots ----------------------------------------------------------------


def local_session(cores: int = 2, *, memory: str = "1g") -> SparkSession:
    """A local Spark session (``local[cores]``) for notebooks, tests and benchmarks.

    Raises :class:`MissingDependencyError` saying what to install when no Java runtime
    is found (Spark 4 needs Java 17 or 21).
    """
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (
        java_home and os.path.exists(os.path.join(java_home, "bin", "java"))
    ):
        raise MissingDependencyError(
            "Spark needs a Java runtime (17 or 21) and none was found on PATH or in "
            "JAVA_HOME: apt install openjdk-17-jre-headless (Debian/Ubuntu), or set "
            "JAVA_HOME to a JDK"
        )
    return (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("metalearn")
        .config("spark.driver.memory", memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(max(2 * cores, 2)))
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )


def _stopped(spark: SparkSession) -> bool:
    context = spark.sparkContext
    java = getattr(context, "_jsc", None)  # pyspark drops it when the context stops
    return java is None or bool(java.sc().isStopped())


def _release(frame: DataFrame) -> None:
    """Free the executors' blocks of a local checkpoint (``unpersist()`` leaves them)."""
    plan = frame._jdf.queryExecution().logical()
    if plan.getClass().getSimpleName() == "LogicalRDD":
        plan.rdd().unpersist(False)
    else:
        frame.unpersist()


def _utc(session: SparkSession) -> SparkSession:
    session.conf.set("spark.sql.session.timeZone", "UTC")
    return session


class SparkSnapshot:
    """One job's view of a :class:`SparkHistory`: its own session, views and job group.

    The query engine of :mod:`metalearn._pattern_sql`: :meth:`arrow` runs a DuckDB-dialect
    query, :meth:`materialize` keeps a result on the cluster (checkpointed), :meth:`upload`
    sends a small driver table, :meth:`drop` forgets one.
    """

    through_seq = 0

    def __init__(self, history: SparkHistory, group: str) -> None:
        self._history, self._group = history, group
        self._session = _utc(history._session.newSession())
        self._context = self._session.sparkContext
        self._tables: dict[str, DataFrame] = {}
        self._interrupted = False

    def attach(self) -> None:
        """Name the history's prepared tables ``plans``, ``steps`` and ``tools`` here."""
        for name in ("plans", "steps", "tools"):
            source = f"global_temp.{self._history._view(name)}"
            self._session.sql(f"CREATE TEMPORARY VIEW {name} AS SELECT * FROM {source}")

    def checkpoint(self, frame: DataFrame) -> DataFrame:
        """Compute ``frame`` now, under this job's group, and keep it on the executors' disks.

        A local checkpoint, not ``persist()``: later plans start from its blocks, so they
        stay small however many tables were built from tables before them (with persist(),
        each findings round planned the whole lineage again: seconds). On disk, so kept
        tables never take the memory aggregations need (in memory, 3M plans' tables left
        a 1 GiB local session none).
        """
        return self._run(lambda: frame.localCheckpoint(eager=True, storageLevel=_KEPT))

    def _run(self, action: Callable[[], _T]) -> _T:
        """Run a Spark action under this job's group (so :meth:`interrupt` cancels it)."""
        if self._interrupted:  # cancelling stops running jobs only: start no new one
            raise AnalysisInterrupted("the Spark job was cancelled")
        self._context.setJobGroup(self._group, "metalearn analysis", interruptOnCancel=True)
        try:
            return action()
        except (PySparkException, Py4JError) as error:
            if self._interrupted:
                raise AnalysisInterrupted("the Spark job was cancelled") from error
            raise

    def arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a query (DuckDB dialect) on Spark; the result as an Arrow table."""
        frame = self._session.sql(to_spark_sql(sql, params))
        table: pa.Table = self._run(frame.toArrow)
        return table

    def frame(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        """:meth:`arrow` as a pandas DataFrame."""
        return self.arrow(sql, params).to_pandas()

    def materialize(self, name: str, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Keep a query's result on the cluster (:meth:`checkpoint`) as ``name``."""
        frame = self.checkpoint(self._session.sql(to_spark_sql(sql, params)))
        self._tables[name] = frame
        frame.createOrReplaceTempView(name)

    def upload(self, name: str, table: pa.Table) -> None:
        """Send a small driver-side Arrow table to the job as ``name``."""
        self._session.createDataFrame(table).createOrReplaceTempView(name)

    def drop(self, name: str) -> None:
        """Forget a table :meth:`materialize` or :meth:`upload` made."""
        frame = self._tables.pop(name, None)
        if frame is not None:
            _release(frame)
        self._session.catalog.dropTempView(name)

    def interrupt(self) -> None:
        """Cancel this job's running Spark jobs (from another thread)."""
        self._interrupted = True
        self._context.cancelJobGroup(self._group)

    def close(self) -> None:
        """Free what the job kept on the cluster."""
        for name in list(self._tables):
            self.drop(name)


class SparkHistory(ExternalHistory):
    """Plans and steps on Spark, analysed where they are (see the module docstring).

    ``plans`` and ``steps`` are Spark DataFrames, table names or Parquet paths in the
    interchange format (``store.export_parquet`` writes ``DIR/plans`` and ``DIR/steps``).
    Their schemas are checked at once: a missing required column or a column of the wrong
    type raises :class:`InvalidRecordError` naming it. Nothing is read until the first
    analysis: it checks that plan ids are unique, then prepares the warehouse's tables
    once (plans numbered, steps joined to their plan, first calls marked, errors masked)
    and keeps them on the executors' disks for every later analysis (:meth:`close`
    frees them). That first analysis pays the join; it runs under its job group like
    every query, so it can be cancelled too.
    """

    engine_name = "Spark"

    def __init__(self, spark: SparkSession, *, plans: object, steps: object) -> None:
        if not isinstance(spark, SparkSession):
            raise InvalidArgumentError(
                "SparkHistory needs a SparkSession (metalearn.spark.local_session(), or "
                f"SparkSession.builder...getOrCreate()), not {type(spark).__name__}"
            )
        if _stopped(spark):  # fail here, not in the middle of the first analysis
            raise InvalidArgumentError(
                "this SparkSession is stopped; make a new one (metalearn.spark.local_session(),"
                " or SparkSession.builder...getOrCreate())"
            )
        self._session = _utc(spark.newSession())
        self._name = f"metalearn_{uuid.uuid4().hex[:12]}"
        sources = {"plans": plans, "steps": steps}
        self._sources = {}
        for table, source in sources.items():
            # Read and checked in the caller's session (its tables, its paths), prepared
            # in this history's own (UTC) session, which reads it as a global view.
            _checked(_frame(spark, source, table), table).createOrReplaceGlobalTempView(
                self._view(f"{table}_source")
            )
            self._sources[table] = self._session.table(
                f"global_temp.{self._view(table + '_source')}"
            )
        self._kept: list[DataFrame] = []
        self._preparing = threading.Lock()
        self._lock = threading.Lock()  # guards _running only
        self._running: set[SparkSnapshot] = set()
        self._groups = itertools.count(1)
        self._closed = False

    def _view(self, name: str) -> str:
        return f"{self._name}_{name}"

    def __repr__(self) -> str:
        return f"<SparkHistory {self._name} {'closed' if self._closed else 'open'}>"

    def _prepare(self, job: SparkSnapshot) -> None:
        """Once, in the first analysis (its job group, so it can be cancelled): check that
        plan ids are unique (they are the plans' key), then compute the warehouse's tables
        and keep them on the cluster."""
        with self._preparing:  # not self._lock: cancel() must reach a preparing job
            if self._kept:
                return
            counted = self._sources["plans"].groupBy("plan_id").count()
            twice = job._run(counted.where("count > 1").limit(1).collect)
            if twice:
                plan_id, times = twice[0]["plan_id"], twice[0]["count"]
                raise InvalidRecordError(
                    f"plans: plan_id {plan_id!r} appears {times} times; each plan must have "
                    "one row (plan_id is the key its steps refer to)",
                    plan_id=plan_id,
                    field="plan_id",
                    table="plans",
                )
            kept: list[DataFrame] = []
            try:  # a cancelled preparation leaves nothing behind; the next analysis redoes it
                kept.append(job.checkpoint(_prepared_plans(self._sources["plans"])))
                kept.append(job.checkpoint(_prepared_tools(self._sources["steps"])))
                plans, tools = kept
                kept.append(job.checkpoint(_prepared_steps(self._sources["steps"], plans, tools)))
            except BaseException:
                for frame in kept:
                    _release(frame)
                raise
            for name, frame in zip(("plans", "tools", "steps"), kept, strict=True):
                frame.createOrReplaceGlobalTempView(self._view(name))
            self._kept = kept

    @contextmanager
    def snapshot(self) -> Iterator[SparkSnapshot]:
        """A job's own view (session, views, job group), released after."""
        if self._closed:
            raise RuntimeError("this SparkHistory is closed; create a new one")
        snapshot = SparkSnapshot(self, f"{self._name}-{next(self._groups)}")
        with self._lock:
            self._running.add(snapshot)
        try:
            self._prepare(snapshot)
            snapshot.attach()
            yield snapshot
        finally:
            with self._lock:
                self._running.discard(snapshot)
            snapshot.close()

    def cancel(self) -> None:
        """Cancel every running job of this history's snapshots (from any thread)."""
        with self._lock:
            running = list(self._running)
        for snapshot in running:
            snapshot.interrupt()

    def close(self) -> None:
        """Cancel running jobs, free the prepared tables and drop the global views."""
        if self._closed:
            return
        self._closed = True
        self.cancel()
        for frame in self._kept:
            _release(frame)
        for name in ("plans", "steps", "tools", "plans_source", "steps_source"):
            self._session.catalog.dropGlobalTempView(self._view(name))
