"""metalearn on Spark against the DuckDB path: ``python -m benchmarks.spark [--sizes N ...]``.

For each size, the cached SQLite history of the suite (:mod:`benchmarks.histories`; only
the store is built, not the suite's pandas Parquet frames) and its
``HistoryStore.export_parquet`` export, cached as ``benchmarks/cache/spark-<n>-<key>/``
(``plans/`` and ``steps/``). Each path runs in a fresh Python process of its own, so each
process's peak is its own:

* **DuckDB** (the baseline): ``MetaLearningService(url)`` on a private copy of the store,
  ``refresh_sync()`` (the one-time mirror into DuckDB, timed apart), then
  ``analyze_execution_patterns_sync(time_range_days=None)`` twice and
  ``extract_successful_patterns_sync(time_range_days=None)`` (defaults) twice.
* **Spark**: ``local_session(2)``, ``SparkHistory(spark, plans=DIR/plans,
  steps=DIR/steps)``, the same calls (analyze twice, the first pays the preparation of
  the steps; extract once, ``--spark-extract-twice`` for a second call).

A thread samples every 50 ms the RSS of the measuring Python process and of its children
(the JVM of the local Spark session; the SQLite bulk reader of the DuckDB refresh); the
Python peak is also read exactly from ``VmHWM`` at the end, the JVM's from its ``VmHWM``
before the session stops. ``SparkSnapshot.arrow`` (the only place Spark results reach
the driver) is wrapped here to count calls, rows and Arrow bytes collected. The parent
compares every analysis table and ``report.patterns`` of the two paths with
``pandas.testing.assert_frame_equal(check_exact=False, rtol=1e-12)``.

Results: ``benchmarks/results/spark/<label>.md`` and ``.json`` (rewritten after each size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import histories
from benchmarks.report import VERSIONS, markdown_table, seconds

RESULTS = Path(__file__).parent / "results" / "spark"
DEFAULT_SIZES = [1_000_000, 3_000_000]
PEAK_TARGET_BYTES = 1.5e9
"""The Python driver process's peak RSS on Spark (where collected rows live)."""
SPARK_MEMORY = "1g"
TABLES = ("overall", "by_agent", "by_goal_type", "by_tool", "by_day", "failure_reasons")
SAMPLE_S = 0.05

# -- the caches ----------------------------------------------------------------------------


def store_for(n: int, key: str) -> histories.History:
    """The suite's cached store of ``n`` plans, built first if missing (not its frames)."""
    history = histories.cached(n, key)
    partial = history.store.with_suffix(".partial.db")

    def building() -> bool:  # another process writes the partial store (or its WAL)
        times = [p.stat().st_mtime for p in histories._with_sidecars(partial) if p.exists()]
        return bool(times) and time.time() - max(times) < 120

    while not history.store.exists() and building():
        print(f"waiting for the build of {history.store} in another process ...", flush=True)
        time.sleep(30)
    if not history.store.exists():
        histories.CACHE.mkdir(exist_ok=True)
        started = time.perf_counter()
        print(f"building the {n:,}-plan history in {history.store} ...", flush=True)
        histories._build_store(n, history.store)
        print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
    return history


def export_for(history: histories.History, key: str) -> tuple[Path, float | None]:
    """The store's Parquet export (``plans/``, ``steps/``), built first if missing; the
    seconds the export took when this run made it."""
    target = histories.CACHE / f"spark-{history.n}-{key}"
    if target.exists():
        return target, None
    from metalearn import HistoryStore

    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    print(f"exporting the {history.n:,}-plan history to {target} ...", flush=True)
    started = time.perf_counter()
    with histories.working_copy(history, histories.CACHE) as url, HistoryStore(url) as store:
        store.export_parquet(partial)
    elapsed = time.perf_counter() - started
    partial.rename(target)  # only complete exports carry the final name
    print(f"  exported in {elapsed:.0f} s", flush=True)
    return target, elapsed


def count_rows(directory: Path) -> int:
    import pyarrow.dataset as ds

    return int(ds.dataset(directory, format="parquet", partitioning="hive").count_rows())


# -- memory --------------------------------------------------------------------------------


def _hwm_bytes(pid: int | str = "self") -> int | None:
    """``VmHWM`` (peak RSS) of a process, in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Sampler:
    """RSS of this process and of its children every 50 ms; peaks per phase and overall."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self.phase = "start"
        self.peaks: dict[str, dict[str, int]] = {}
        self.jvm: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_S)

    def sample(self) -> None:
        import psutil

        own = self._me.memory_info().rss
        jvm = other = 0
        try:
            children = self._me.children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            try:
                rss = child.memory_info().rss
                if child.name() == "java":
                    jvm = max(jvm, rss)
                    # the largest java child is Spark's JVM (the launcher runs -Xmx128m)
                    if rss > self.jvm.get("rss", 0):
                        self.jvm = {"pid": child.pid, "xmx": _xmx(child.cmdline()), "rss": rss}
                else:
                    other = max(other, rss)
            except psutil.Error:
                continue
        for phase in (self.phase, "all"):
            peak = self.peaks.setdefault(phase, {"python": 0, "jvm": 0, "other_child": 0})
            peak["python"] = max(peak["python"], own)
            peak["jvm"] = max(peak["jvm"], jvm)
            peak["other_child"] = max(peak["other_child"], other)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _xmx(cmdline: list[str]) -> str | None:
    flags = [a for a in cmdline if a.startswith("-Xmx")]
    return flags[-1][4:] if flags else None


# -- the measuring child -------------------------------------------------------------------


class Child:
    """One path's process: timed phases, notes, peaks, results pickled for the parent."""

    def __init__(self, sampler: Sampler, progress: Path | None = None) -> None:
        self.sampler = sampler
        self.times: dict[str, float] = {}
        self.info: dict[str, Any] = {}
        self.progress = progress  # rewritten after each phase: a stopped run still reports

    def partial(self) -> dict[str, Any]:
        return {"times": self.times, "info": self.info, "peaks": self.sampler.peaks,
                "python_vmhwm": _hwm_bytes()}  # fmt: skip

    @contextmanager
    def timed(self, phase: str):  # type: ignore[no-untyped-def]
        self.sampler.phase = phase
        started, epoch = time.perf_counter(), time.time()
        try:
            yield
        except BaseException:
            self.info["failed"] = {"phase": phase, "after_s": time.perf_counter() - started}
            raise
        self.times[phase] = time.perf_counter() - started
        self.info.setdefault("epochs", {})[phase] = [epoch, time.time()]
        self.sampler.sample()
        self.sampler.phase = "between"
        print(f"    {phase}: {self.times[phase]:.2f} s", file=sys.stderr, flush=True)
        if self.progress is not None:
            self.progress.write_text(json.dumps(self.partial(), default=str))


def _keep(out: Path, name: str, analysis: Any = None, report: Any = None) -> None:
    import pandas as pd

    if analysis is not None:
        pd.to_pickle({t: getattr(analysis, t) for t in TABLES}, out / f"{name}-analysis.pkl")
    if report is not None:
        pd.to_pickle(report.patterns, out / f"{name}-patterns.pkl")


def run_duckdb(child: Child, args: argparse.Namespace, out: Path) -> None:
    import metalearn

    history = histories.cached(args.n, args.key)
    with histories.working_copy(history, out) as url:
        service = metalearn.MetaLearningService(url)
        try:
            with child.timed("refresh"):
                child.info["mirrored_plans"] = service.refresh_sync()
            with child.timed("analyze 1"):
                first = service.analyze_execution_patterns_sync(time_range_days=None)
            with child.timed("analyze 2"):
                analysis = service.analyze_execution_patterns_sync(time_range_days=None)
            with child.timed("extract 1"):
                service.extract_successful_patterns_sync(time_range_days=None)
            with child.timed("extract 2"):
                report = service.extract_successful_patterns_sync(time_range_days=None)
        finally:
            service.close()
    del first
    child.info.update(plans=analysis.n_plans, patterns=len(report.patterns),
                      findings=len(report.findings))  # fmt: skip
    _keep(out, "duckdb", analysis, report)


class Collected:
    """Wraps ``SparkSnapshot.arrow`` (here, not in the library): calls, rows and bytes
    collected to the driver, per phase."""

    def __init__(self, child: Child) -> None:
        from metalearn.spark import SparkSnapshot

        self.by_phase: dict[str, dict[str, int]] = {}
        original = SparkSnapshot.arrow
        collected = self

        def arrow(snapshot: Any, sql: str, params: Any = None) -> Any:
            table = original(snapshot, sql, params)
            tally = collected.by_phase.setdefault(
                child.sampler.phase, {"calls": 0, "rows": 0, "bytes": 0, "largest": 0}
            )
            tally["calls"] += 1
            tally["rows"] += table.num_rows
            tally["bytes"] += table.nbytes
            tally["largest"] = max(tally["largest"], table.num_rows)
            return table

        SparkSnapshot.arrow = arrow  # type: ignore[method-assign]
        child.info["collected"] = self.by_phase  # in the progress file too


def run_spark(child: Child, args: argparse.Namespace, out: Path) -> None:
    import metalearn
    from metalearn.spark import SparkHistory, local_session

    collected = Collected(child)
    with child.timed("session"):
        spark = local_session(2, memory=args.spark_memory)
        child.info["driver_memory"] = spark.sparkContext.getConf().get("spark.driver.memory")
        spark.sparkContext.setLogLevel("ERROR")
    try:
        lake = Path(args.lake)
        with child.timed("history"):
            history = SparkHistory(spark, plans=str(lake / "plans"), steps=str(lake / "steps"))
        service = metalearn.MetaLearningService(history)
        try:
            with child.timed("analyze 1"):
                service.analyze_execution_patterns_sync(time_range_days=None)
            with child.timed("analyze 2"):
                analysis = service.analyze_execution_patterns_sync(time_range_days=None)
            with child.timed("extract 1"):
                report = service.extract_successful_patterns_sync(time_range_days=None)
            if args.spark_extract_twice:
                with child.timed("extract 2"):
                    report = service.extract_successful_patterns_sync(time_range_days=None)
        finally:
            service.close()
            history.close()
        jvm_pid = child.sampler.jvm.get("pid")
        if jvm_pid is not None:
            child.info["jvm_vmhwm"] = _hwm_bytes(jvm_pid)
    finally:
        spark.stop()
    child.info.update(plans=analysis.n_plans, patterns=len(report.patterns),
                      findings=len(report.findings), collected=collected.by_phase,
                      jvm_xmx=child.sampler.jvm.get("xmx"))  # fmt: skip
    _keep(out, "spark", analysis, report)


def child_main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    sampler = Sampler()
    child = Child(sampler, out / f"{args.child}.progress.json")
    outcome: dict[str, Any] = {}
    try:
        (run_spark if args.child == "spark" else run_duckdb)(child, args, out)
    except BaseException:
        outcome["error"] = traceback.format_exc()
    sampler.stop()
    outcome.update(times=child.times, info=child.info, peaks=sampler.peaks,
                   python_vmhwm=_hwm_bytes())  # fmt: skip
    (out / f"{args.child}.json").write_text(json.dumps(outcome, indent=2, default=str))
    return 1 if "error" in outcome else 0


def run_child(path: str, n: int, key: str, lake: Path, out: Path, args: argparse.Namespace
              ) -> dict[str, Any]:  # fmt: skip
    command = [sys.executable, "-m", "benchmarks.spark", "--child", path, "--n", str(n),
               "--key", key, "--lake", str(lake), "--out", str(out)]  # fmt: skip
    command += ["--spark-memory", args.spark_memory]
    if args.spark_extract_twice:
        command.append("--spark-extract-twice")
    log = out / f"{path}.log"
    env = dict(os.environ)
    if path == "spark" and args.event_log:
        (out / "events").mkdir()
        env["PYSPARK_SUBMIT_ARGS"] = (
            f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir=file://{out}/events "
            "--conf spark.eventLog.compress=false --conf spark.eventLog.rolling.enabled=false "
            "pyspark-shell"
        )
    print(f"  {path} ...", flush=True)
    started = time.perf_counter()
    with log.open("w") as stderr:
        try:
            subprocess.run(command, stdout=stderr, stderr=subprocess.STDOUT,
                           timeout=args.timeout, check=False, env=env)  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"error": f"stopped after {args.timeout:g} s", "times": {}, "info": {},
                    "peaks": {}, "log": log.read_text()[-3000:]}  # fmt: skip
    result_file = out / f"{path}.json"
    progress = out / f"{path}.progress.json"
    if not result_file.exists() and progress.exists():  # killed: what finished before
        result = json.loads(progress.read_text())
        result.update(error="the process died (killed?) after the phases listed",
                      log=log.read_text()[-3000:])  # fmt: skip
        return result
    if not result_file.exists():
        return {"error": "the process died without a result", "times": {}, "info": {},
                "peaks": {}, "log": log.read_text()[-3000:]}  # fmt: skip
    result: dict[str, Any] = json.loads(result_file.read_text())
    result["wall_s"] = time.perf_counter() - started
    if path == "spark" and args.event_log:
        try:
            result["shuffles"] = shuffles(out / "events", result["info"].get("epochs", {}))
        except Exception:  # a summary of the event log, never worth failing the run
            result["shuffles"] = {"error": traceback.format_exc()}
    if "error" in result:
        print(result["error"], flush=True)
    return result


# -- the event log: what each phase shuffled ---------------------------------------------


def shuffles(events: Path, epochs: dict[str, list[float]]) -> dict[str, Any]:
    """Shuffle records and bytes written per phase, and per SQL query its exchanges."""
    import re

    stage_job, job_time, job_execution = {}, {}, {}
    executions: dict[str, dict[str, Any]] = {}
    stage_totals: dict[int, list[int]] = {}
    for file in sorted(p for p in events.rglob("*") if p.is_file()):
        for line in file.open():
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            kind = event["Event"]
            if kind == "SparkListenerJobStart":
                job = event["Job ID"]
                job_time[job] = event["Submission Time"] / 1000
                job_execution[job] = (event.get("Properties") or {}).get("spark.sql.execution.id")
                for stage in event["Stage IDs"]:
                    stage_job[stage] = job
            elif kind.endswith("SparkListenerSQLExecutionStart"):
                plan = event.get("physicalPlanDescription", "")
                # formatted plans: "(7) Exchange" ... "Arguments: hashpartitioning(seq#3, 4)"
                exchanges = re.findall(
                    r"\(\d+\) Exchange\s*\n(?:[^\n]*\n)*?Arguments: ([^\n]*)", plan
                )
                executions[str(event["executionId"])] = {
                    "time": event["time"] / 1000,
                    "exchanges": [e for e in exchanges if "Broadcast" not in e],
                    "broadcasts": plan.count("BroadcastExchange"),
                }
            elif kind == "SparkListenerTaskEnd":
                metrics = (event.get("Task Metrics") or {}).get("Shuffle Write Metrics") or {}
                total = stage_totals.setdefault(event["Stage ID"], [0, 0])
                total[0] += metrics.get("Shuffle Records Written", 0)
                total[1] += metrics.get("Shuffle Bytes Written", 0)

    def phase_of(moment: float) -> str:
        for phase, (start, end) in epochs.items():
            if start <= moment <= end:
                return phase
        return "other"

    by_phase: dict[str, dict[str, int]] = {}
    by_execution: dict[str, list[int]] = {}
    for stage, (records, nbytes) in stage_totals.items():
        job = stage_job.get(stage)
        phase = phase_of(job_time.get(job, 0.0)) if job is not None else "other"
        tally = by_phase.setdefault(phase, {"records": 0, "bytes": 0})
        tally["records"] += records
        tally["bytes"] += nbytes
        execution = job_execution.get(job) if job is not None else None
        if execution is not None:
            sums = by_execution.setdefault(execution, [0, 0])
            sums[0] += records
            sums[1] += nbytes
    queries = []
    for eid, info in sorted(executions.items(), key=lambda kv: kv[1]["time"]):
        records, nbytes = by_execution.get(eid, [0, 0])
        if records or info["exchanges"]:
            queries.append(
                {
                    "phase": phase_of(info["time"]),
                    "execution": eid,
                    "shuffle_records": records,
                    "shuffle_bytes": nbytes,
                    "exchanges": info["exchanges"],
                    "broadcasts": info["broadcasts"],
                }
            )
    return {"by_phase": by_phase, "queries": queries}


# -- agreement ----------------------------------------------------------------------------


def compare(out: Path) -> list[str]:
    """Every analysis table and ``report.patterns``: OK, or the first difference of each."""
    import pandas as pd

    problems = []
    try:
        ours, theirs = (pd.read_pickle(out / f"{p}-analysis.pkl") for p in ("spark", "duckdb"))
        pairs = [(f"analysis.{t}", ours[t], theirs[t]) for t in TABLES]
        pairs.append(("report.patterns", *(pd.read_pickle(out / f"{p}-patterns.pkl")
                                           for p in ("spark", "duckdb"))))  # fmt: skip
    except OSError as error:
        return [f"not compared: {error}"]
    for name, spark, duck in pairs:
        try:
            pd.testing.assert_frame_equal(spark, duck, check_exact=False, rtol=1e-12)
        except AssertionError as error:
            problems.append(f"{name}: {' '.join(str(error).split())[:600]}")
    return problems


# -- the report ---------------------------------------------------------------------------


def _ratio(spark: float | None, duck: float | None) -> str:
    if not spark or not duck:
        return "-"
    ratio = spark / duck
    if ratio <= 1:
        return f"{ratio:.3g} ({1 / ratio:,.1f}x faster)"
    return f"{ratio:.3g} ({ratio:,.1f}x slower)"


def _error_name(error: str) -> str:
    """The first exception a traceback names beyond py4j's wrapper (e.g. Spark's OOM)."""
    import re

    names = [n.rsplit(".", 1)[-1] for n in re.findall(r"([\w.]*(?:Error|Exception))\b", error)]
    inner = [n for n in names if "Py4J" not in n and n not in ("SparkException", "Exception")]
    return inner[0] if inner else (names[-1] if names else "error")


def _mib(value: int | None) -> str:
    return "-" if not value else f"{value / 2**20:,.0f}"


def rows(results: dict[int, dict[str, Any]]) -> list[dict[str, str]]:
    lines = []
    labels = [
        ("refresh", "refresh_sync (DuckDB: mirror the store, one time; Spark: nothing)"),
        ("session", "local_session(2) (JVM start)"),
        ("history", "SparkHistory(...) (schemas only; nothing is read)"),
        ("analyze 1", "analyze_execution_patterns, 1st call (Spark: + preparing the tables)"),
        ("analyze 2", "analyze_execution_patterns, 2nd call"),
        ("extract 1", "extract_successful_patterns defaults, 1st call"),
        ("extract 2", "extract_successful_patterns defaults, 2nd call"),
    ]
    for n in sorted(results):
        duck, spark = results[n]["duckdb"], results[n]["spark"]
        failed = spark.get("info", {}).get("failed") or {}
        if "error" in spark and not failed:  # runs from before "failed" was recorded
            missing = [p for p, _ in labels if p in duck["times"] and p not in spark["times"]
                       and p != "refresh"]  # fmt: skip
            failed = {"phase": missing[0]} if missing else {}
        for phase, label in labels:
            d, s = duck["times"].get(phase), spark["times"].get(phase)
            spark_text = seconds(s)
            if failed.get("phase") == phase:
                after = failed.get("after_s")
                spark_text = f"FAILED: {_error_name(spark['error'])}" + (
                    f" after {seconds(after)}" if after else "")  # fmt: skip
            if d is None and s is None:
                continue
            dpeak = duck.get("peaks", {}).get(phase, {})
            speak = spark.get("peaks", {}).get(phase, {})
            tally = spark.get("info", {}).get("collected", {}).get(phase, {})
            lines.append({
                "plans": f"{n:,}",
                "measurement": label,
                "DuckDB": seconds(d),
                "DuckDB MiB": _mib(dpeak.get("python")),
                "Spark": spark_text,
                "Spark Python MiB": _mib(speak.get("python")),
                "Spark JVM MiB": _mib(speak.get("jvm")),
                "rows collected (calls)": f"{tally['rows']:,} ({tally['calls']})" if tally
                else "-",
                "Spark / DuckDB": _ratio(s, d) if d is not None and s is not None else "-",
            })  # fmt: skip
    return lines


def summary(results: dict[int, dict[str, Any]]) -> list[dict[str, str]]:
    lines = []
    for n in sorted(results):
        duck, spark, size = results[n]["duckdb"], results[n]["spark"], results[n]["size"]
        collected = spark.get("info", {}).get("collected", {})
        total_rows = sum(t["rows"] for t in collected.values())
        total_calls = sum(t["calls"] for t in collected.values())
        total_bytes = sum(t["bytes"] for t in collected.values())
        rows_text = (f"{total_rows:,} ({total_calls}, {total_bytes / 2**20:,.1f} MiB)"
                     if collected else "-")  # fmt: skip
        python = spark.get("python_vmhwm")
        jvm = spark.get("info", {}).get("jvm_vmhwm") or spark.get("peaks", {}).get(
            "all", {}).get("jvm")  # fmt: skip
        info = spark.get("info", {})
        xmx = info.get("jvm_xmx") or info.get("driver_memory") or "?"
        target = "-" if python is None else (
            "met" if python <= PEAK_TARGET_BYTES else "NOT MET")  # fmt: skip
        problems = results[n]["agreement"]
        lines.append({
            "plans": f"{n:,}",
            "steps": f"{size['steps']:,}",
            "patterns": f"{spark.get('info', {}).get('patterns', '?'):,}"
            if isinstance(spark.get("info", {}).get("patterns"), int) else "-",
            "rows collected on Spark (calls, Arrow bytes)": rows_text,
            "Spark Python peak (VmHWM)": f"{_mib(python)} MiB",
            "<= 1.5 GB": target,
            "Spark JVM peak (VmHWM)": f"{_mib(jvm)} MiB (-Xmx{xmx})",
            "DuckDB peak (VmHWM)": f"{_mib(duck.get('python_vmhwm'))} MiB",
            "identical": "OK" if not problems else "not compared (a path failed)"
            if problems[0].startswith("not compared") else f"DIFFER ({len(problems)})",
        })  # fmt: skip
    return lines


def markdown(
    results: dict[int, dict[str, Any]], machine: dict[str, Any], memory: str = SPARK_MEMORY
) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    load = machine["load_average"]
    parts = [
        "# metalearn on Spark against the DuckDB path\n",
        f"{machine['date']}; {machine['cores']} cores; Python {machine['python']}; "
        f"{machine['java']}; {versions}. Load average (1 min) at start {load['start']:.1f}, "
        f"at end {load['end']:.1f}.\n",
        "Histories: the suite's `make_history(n, n_agents=20, seed=0)` stores; Spark reads "
        "their `export_parquet` export. Each path runs once in a fresh Python process "
        f"(`local_session(2)`, spark.driver.memory={memory}). MiB columns: the "
        "peak RSS sampled every 50 ms during that call (Python: the measuring process; "
        "JVM: the local Spark JVM, driver and executors in one). Rows collected: what "
        "`SparkSnapshot.arrow` returned to the Python driver during the call.\n",
        "## Summary\n",
        markdown_table(summary(results)),
        "\n## Calls\n",
        markdown_table(rows(results)),
        "\n## Agreement\n",
    ]
    for n in sorted(results):
        problems = results[n]["agreement"]
        if problems and problems[0].startswith("not compared"):
            parts.append(f"- {n:,} plans: not compared (a path did not finish)")
            continue
        parts.append(
            f"- {n:,} plans: " + ("identical (`assert_frame_equal(check_exact=False, "
            "rtol=1e-12)` on the six analysis tables and `report.patterns`)"
            if not problems else "**DIFFER**\n" + "\n".join(f"  - {p}" for p in problems))
        )  # fmt: skip
    parts.append("\n## Details\n")
    for n in sorted(results):
        r = results[n]
        size = r["size"]
        built = ", ".join(f"{k} {seconds(v)}" for k, v in size.items()
                          if k.endswith("_s") and v is not None)  # fmt: skip
        parts.append(f"- {n:,} plans: {size['steps']:,} steps; lake {size['lake']}"
                     + (f"; built this run: {built}" if built else ""))  # fmt: skip
        for path in ("duckdb", "spark"):
            res = r[path]
            if "error" in res:
                parts.append(f"  - {path}: FAILED: {_error_name(res['error'])} (the traceback "
                             "is in the JSON)")  # fmt: skip
            collected = res.get("info", {}).get("collected")
            if collected:
                text = "; ".join(
                    f"{phase}: {t['calls']} calls, {t['rows']:,} rows, largest {t['largest']:,}"
                    f", {t['bytes'] / 2**10:,.0f} KiB" for phase, t in collected.items()
                )  # fmt: skip
                parts.append(f"  - spark collected: {text}")
            shuffled = res.get("shuffles", {}).get("by_phase")
            if shuffled:
                text = "; ".join(f"{phase}: {t['records']:,} records, {t['bytes'] / 2**20:,.1f} "
                                 "MiB" for phase, t in shuffled.items())  # fmt: skip
                parts.append(f"  - spark shuffle written (event log): {text}")
            other = res.get("peaks", {}).get("all", {}).get("other_child")
            if path == "duckdb" and other:
                parts.append(f"  - duckdb: SQLite bulk reader (child) peak {_mib(other)} MiB")
            if "wall_s" in res:
                parts.append(f"  - {path}: process wall time {seconds(res['wall_s'])} "
                             "(imports, JVM start and exit included)")  # fmt: skip
    return "\n".join(parts) + "\n"


def machine_info(load_start: float) -> dict[str, Any]:
    versions = {}
    for name in [*VERSIONS[:6], "pyspark", "sqlglot"]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    commit = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short",
                             "HEAD"], capture_output=True, text=True, check=False)  # fmt: skip
    return {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "java": (java.stderr.splitlines() or ["java ?"])[0].strip(),
        "versions": versions,
        "commit": commit.stdout.strip() or "?",
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
    }


def write(results: dict[int, dict[str, Any]], label: str, load_start: float,
          config: dict[str, Any]) -> tuple[Path, Path]:  # fmt: skip
    machine = machine_info(load_start)
    RESULTS.mkdir(parents=True, exist_ok=True)
    md, js = RESULTS / f"{label}.md", RESULTS / f"{label}.json"
    md.write_text(markdown(results, machine, config["spark_memory"]))
    payload = {"machine": machine, "config": config,
               "results": {str(n): r for n, r in results.items()},
               "summary": summary(results), "rows": rows(results)}  # fmt: skip
    js.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return md, js


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.spark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--label", help="results file name (default: spark, or partial "
                        "when --sizes is not the default)")  # fmt: skip
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="stop a path's process after S seconds (default 3600)",
    )
    parser.add_argument(
        "--spark-memory", default=SPARK_MEMORY, help=f"local_session(memory=...), {SPARK_MEMORY}"
    )
    parser.add_argument(
        "--spark-extract-twice", action="store_true", help="time a second extract call on Spark too"
    )
    parser.add_argument(
        "--event-log",
        action="store_true",
        help="Spark event log: shuffle records and bytes per phase and query",
    )
    parser.add_argument("--child", choices=["duckdb", "spark"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="rewrite the Markdown of an earlier run from its JSON; no measuring",
    )
    args = parser.parse_args(argv)
    if args.render:
        data = json.loads(args.render.read_text())
        results = {int(n): r for n, r in data["results"].items()}
        memory = data["config"].get("spark_memory", SPARK_MEMORY)
        args.render.with_suffix(".md").write_text(markdown(results, data["machine"], memory))
        print(f"written to {args.render.with_suffix('.md')}")
        return 0
    if args.child:
        return child_main(args)
    label = args.label or ("spark" if args.sizes == DEFAULT_SIZES else "partial")
    load_start = os.getloadavg()[0]
    key = histories.cache_key()
    config = {
        "sizes": args.sizes,
        "spark_memory": args.spark_memory,
        "key": key,
        "timeout_s": args.timeout,
        "spark_extract_twice": args.spark_extract_twice,
        "event_log": args.event_log,
    }
    results: dict[int, dict[str, Any]] = {}
    failed = False
    for n in args.sizes:
        print(f"{n:,} plans", flush=True)
        started = time.perf_counter()
        had_store = histories.cached(n, key).store.exists()
        history = store_for(n, key)
        store_s = None if had_store else time.perf_counter() - started
        lake, export_s = export_for(history, key)
        size = {"steps": count_rows(lake / "steps"), "plans": count_rows(lake / "plans"),
                "lake": str(lake.relative_to(Path.cwd()) if lake.is_relative_to(Path.cwd())
                            else lake),
                "store_build_s": store_s, "export_s": export_s}  # fmt: skip
        with tempfile.TemporaryDirectory(prefix=f"spark-bench-{n}-", dir=histories.CACHE) as tmp:
            out = Path(tmp)
            duck = run_child("duckdb", n, key, lake, out, args)
            spark = run_child("spark", n, key, lake, out, args)
            problems = compare(out)
        results[n] = {"size": size, "duckdb": duck, "spark": spark, "agreement": problems}
        failed |= bool(problems) or "error" in duck or "error" in spark
        print(f"  identical: {'OK' if not problems else problems[0]}", flush=True)
        md, js = write(results, label, load_start, config)
    print()
    print(markdown_table(summary(results)))
    print()
    print(markdown_table(rows(results)))
    print(f"\nwritten to {md} and {js}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
