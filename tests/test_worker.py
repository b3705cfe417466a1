"""The analysis worker (``metalearn._worker``), ``metalearn worker`` and ``metalearn status``.

Most tests run real worker processes (``python -m metalearn worker``) on a store and watch
its jobs table; the signals are real (SIGINT, SIGTERM, SIGKILL). The slow job is a real
one: a 4,000-plan history analysed whole, every tool sequence up to 6 long tested (a
second or two per claim), so a test catches a worker mid-job by waiting for its claim.
The failing job is real too: a trigger makes the database refuse one agent's snapshots.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from metalearn import HistoryStore, InvalidArgumentError, MetaLearningService, Warehouse
from metalearn._jobs import claim, complete, fail, job_stats, job_table
from metalearn._worker import MEMORY, AnalysisWorker, queue_status
from metalearn.cli import main
from metalearn.synthetic import make_history
from tests.conftest import ROOT, eventually, make_plan

# Workers run at normal priority here, so a busy test machine does not starve them.
FAST = ["--poll", "0.05", "--retry-backoff", "0.1", "--nice", "0", "--min-interval", "0"]
# A real, slow job: the whole 4,000-plan history, every sequence up to 6 tools tested.
SLOW = ["--days", "all", "--min-support", "1", "--max-length", "6", "--lease-seconds", "1"]


class Worker:
    """A ``metalearn worker`` process; its stderr lines are collected as they come."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "metalearn", "worker", *FAST, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, fragment: str, timeout: float = 30) -> str:
        """The first stderr line containing ``fragment`` (fails if the worker exits first)."""

        def seen() -> str | None:
            found = next((line for line in list(self.lines) if fragment in line), None)
            if found is None and self.process.poll() is not None:
                self._reader.join(5)
                raise AssertionError(f"the worker exited ({self.process.returncode}):\n{self.log}")
            return found

        return eventually(seen, timeout, what=f"{fragment!r} in the worker's log")

    def started(self) -> str:
        """The owner name, once the worker logged its start."""
        return self.wait_for(" started on ").split("worker ")[1].split()[0]

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
        """Send ``sig`` (None: it was sent); the exit status and stdout."""
        if sig is not None:
            self.process.send_signal(sig)
        self.process.wait(timeout)
        self._reader.join(5)  # stderr is the reader's alone (communicate() would take lines)
        assert self.process.stdout is not None
        return self.process.returncode, self.process.stdout.read()


@pytest.fixture
def workers() -> Iterator[Callable[..., Worker]]:
    """Starts worker processes; kills whatever is left at the end."""
    started: list[Worker] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Worker:
        started.append(Worker(args, env))
        return started[-1]

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait(30)
        worker._reader.join(5)  # it reads stderr to its end, then the pipes can close
        for stream in (worker.process.stdout, worker.process.stderr):
            if stream is not None:
                stream.close()


def jobs_by_agent(store: HistoryStore) -> dict[str, dict[str, Any]]:
    table = job_table(store._database, states=["running", "pending", "failed", "done"])
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    return {str(row["agent_id"]): row for row in rows}


def through(store: HistoryStore, agent_id: str) -> int:
    found = store.latest_snapshot(agent_id)
    return -1 if found is None else int(found[0]["through_seq"])


def last_seqs(store: HistoryStore, plans: Sequence[Any], seqs: Sequence[Any]) -> dict[str, int]:
    newest: dict[str, int] = {}
    for plan, seq in zip(plans, seqs, strict=True):
        newest[plan.agent_id] = max(newest.get(plan.agent_id, 0), int(seq))
    return newest


def record(store: HistoryStore, prefix: str, agents: Sequence[str], n: int) -> dict[str, int]:
    """Record ``n`` plans spread over ``agents``; each agent's newest seq."""
    plans = [make_plan(f"{prefix}-{i}", agent_id=agents[i % len(agents)]) for i in range(n)]
    return last_seqs(store, plans, store.record_plans(plans))


def all_done(store: HistoryStore, newest: dict[str, int]) -> bool:
    jobs = jobs_by_agent(store)
    return all(
        jobs[agent]["state"] == "done" and through(store, agent) >= seq
        for agent, seq in newest.items()
    )


# -- a worker process on each backend ---------------------------------------------------


def test_a_worker_turns_recorded_plans_into_snapshots(
    store_url: str, tmp_path: Path, workers: Callable[..., Worker]
) -> None:
    with HistoryStore(store_url) as store:
        newest = record(store, "p", ["agent-a", "agent-b", "agent-c"], 9)
        # The URL (and its password) comes through the environment, not the command line.
        env = {**os.environ, "METALEARN_DB_URL": store.engine.url.render_as_string(False)}
        worker = workers("--batch-size", "2", "--nice", "5", env=env)
        started = worker.wait_for(" started on ")
        niceness = os.getpriority(os.PRIO_PROCESS, worker.process.pid)
        assert niceness == min(os.getpriority(os.PRIO_PROCESS, 0) + 5, 19)  # a lower priority
        eventually(lambda: all_done(store, newest), what="every job done")
        newest |= record(store, "late", ["agent-a"], 2)  # while the worker runs
        eventually(lambda: all_done(store, newest), what="the late plans covered")
        with MetaLearningService(store) as service:
            for agent, seq in newest.items():
                report = service.latest_patterns_sync(agent)
                assert report is not None and report.through_seq >= seq, agent
        stats = job_stats(store._database)
        assert (stats["pending"], stats["running"], stats["done"]) == (0, 0, 3)
        status, out = worker.stop(signal.SIGINT)
    assert status == 0, worker.log
    assert out.startswith("worker ") and " stopped: " in out and " 0 errors" in out
    assert f"started on {store.url} " in started  # the URL with its password masked
    if store_url.startswith("sqlite"):
        assert f"(warehouse {tmp_path / 'history.db'}.warehouse.duckdb)" in started
    else:
        assert "***" in started and "metalearn@" not in started.replace("metalearn:***@", "")
        assert "(warehouse in memory)" in started


# -- crashes and signals ----------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with 4,000 plans of two agents (no jobs: imports queue none)."""
    path = tmp_path_factory.mktemp("slow") / "history.db"
    with HistoryStore(f"sqlite:///{path}") as store:
        store.import_frames(*make_history(4_000, n_agents=2, seed=5))
    return path


@pytest.fixture
def slow_store(slow_history: Path, tmp_path: Path) -> Iterator[tuple[HistoryStore, dict[str, int]]]:
    """A copy of the slow history whose two agents each just got a plan (and a job)."""
    shutil.copy(slow_history, tmp_path / "history.db")
    with HistoryStore(f"sqlite:///{tmp_path / 'history.db'}") as store:
        agents = sorted(store.agents_behind())
        yield store, record(store, "new", agents, len(agents))


def running_jobs(store: HistoryStore, pid: int) -> list[dict[str, Any]]:
    jobs = jobs_by_agent(store).values()
    return [j for j in jobs if j["state"] == "running" and f":{pid}:" in str(j["owner"])]


def test_a_killed_workers_job_is_reclaimed_after_its_lease_and_completed(
    slow_store: tuple[HistoryStore, dict[str, int]], workers: Callable[..., Worker]
) -> None:
    store, newest = slow_store
    url = store.url
    first = workers("--db", url, *SLOW)
    held = eventually(lambda: len(running_jobs(store, first.process.pid)) == 2 and
                      running_jobs(store, first.process.pid), what="the first claim")  # fmt: skip
    first.process.kill()  # SIGKILL, mid-job: no handler runs, nothing is released
    first.process.wait(30)
    assert first.process.returncode == -signal.SIGKILL
    assert "analysed" not in first.log  # it died before its analysis ended
    owner = held[0]["owner"]
    assert {j["owner"] for j in running_jobs(store, first.process.pid)} == {owner}  # stuck...
    second = workers("--db", url, *SLOW)
    reclaimed = second.wait_for("claimed")
    assert f"from {owner})" in reclaimed and "attempt 2" in reclaimed  # ...until the lease expired
    eventually(lambda: all_done(store, newest), timeout=60, what="the reclaimed jobs done")
    status, _ = second.stop()
    assert status == 0, second.log


@pytest.mark.parametrize(
    ("grace", "ending"),
    [
        pytest.param("0", "pending", id="interrupted-and-released"),
        pytest.param("60", "done", id="finished"),
    ],
)
def test_sigterm_mid_job_exits_0_and_loses_no_job(
    slow_store: tuple[HistoryStore, dict[str, int]],
    workers: Callable[..., Worker],
    grace: str,
    ending: str,
) -> None:
    store, newest = slow_store
    worker = workers("--db", store.url, *SLOW, "--grace", grace)
    eventually(lambda: len(running_jobs(store, worker.process.pid)) == 2, what="the claim")
    started = time.monotonic()
    status, out = worker.stop(signal.SIGTERM)
    assert status == 0, worker.log
    assert time.monotonic() - started < 30
    jobs = jobs_by_agent(store)
    assert {a: (j["state"], j["owner"]) for a, j in jobs.items()} == {
        agent: (ending, None) for agent in newest
    }
    if ending == "pending":  # released: pending at once, the attempt not counted
        assert [j["attempts"] for j in jobs.values()] == [0, 0]
        assert "was stopped: released" in worker.log and " 2 released" in out
    else:
        assert all(through(store, agent) >= seq for agent, seq in newest.items())
        assert " 2 completed" in out and " 0 released" in out


# -- failures -----------------------------------------------------------------------------

REFUSED = "snapshots of bad-agent are refused"
OWNER = "host:123:cafe"


def test_a_failing_job_retries_with_backoff_ends_failed_and_shows_in_status(
    tmp_path: Path, workers: Callable[..., Worker], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    with HistoryStore(url) as store:
        store.count()  # creates the tables
        with store.engine.begin() as conn:  # a real failure: the database refuses the write
            conn.execute(text(
                "CREATE TRIGGER refuse BEFORE INSERT ON metalearn_snapshots "
                f"WHEN NEW.agent_id = 'bad-agent' BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END"
            ))  # fmt: skip
        newest = record(store, "p", ["good-agent", "bad-agent"], 4)
        worker = workers("--db", url, "--max-attempts", "3", "--retry-backoff", "0.3")
        eventually(lambda: jobs_by_agent(store)["bad-agent"]["state"] == "failed", what="failed")
        jobs = jobs_by_agent(store)
        assert jobs["good-agent"]["state"] == "done"  # its batchmate's failure is not its own
        assert through(store, "good-agent") >= newest["good-agent"]
        bad = jobs["bad-agent"]
        assert (bad["attempts"], bad["owner"]) == (3, None)
        assert bad["error"].startswith("IntegrityError: ") and REFUSED in bad["error"]
        assert through(store, "bad-agent") == -1
        code, out, _ = run_cli(["status", "--db", url], capsys)
        json_code, json_out, _ = run_cli(["status", "--db", url, "--json"], capsys)
        status, _ = worker.stop()
    assert status == 0 and code == 0 and json_code == 0
    assert "analysing them one at a time" in worker.log
    assert worker.log.count("it will be retried") == 2 and "the job is failed" in worker.log
    claims = [claimed_at(line) for line in worker.lines if "claimed bad-agent" in line]
    failures = [claimed_at(line) for line in worker.lines if "'bad-agent' failed" in line]
    assert len(claims) == len(failures) == 3  # the first claim with good-agent, then alone
    assert (claims[1] - failures[0]).total_seconds() >= 0.3  # backoff 0.3 s, then 0.6 s
    assert (claims[2] - failures[1]).total_seconds() >= 0.6
    lines = out.splitlines()
    assert "1 failed, 1 done" in lines[1]
    failed = lines[lines.index("failed (1):") + 2]
    assert failed.startswith("  bad-agent         3  ") and REFUSED in failed
    listed = json.loads(json_out)
    [failed_job] = listed["failed"]
    assert failed_job["agent_id"] == "bad-agent" and REFUSED in failed_job["error"]
    assert listed["lag"] == [{"agent_id": "bad-agent", "last_seq": newest["bad-agent"],
                              "through_seq": None, "behind": newest["bad-agent"],
                              "job": "failed"}]  # fmt: skip


def claimed_at(line: str) -> datetime:
    """The time of a worker log line (its asctime, to the millisecond)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


class FailingService(MetaLearningService):
    """A real service whose analysis of ``bad-agent`` raises."""

    def snapshot_agents_sync(self, agent_ids: Sequence[str], **kwargs: Any) -> dict[str, int]:
        if "bad-agent" in agent_ids:
            raise RuntimeError("analysis exploded")
        return super().snapshot_agents_sync(agent_ids, **kwargs)


def test_run_once_isolates_a_failing_agent_and_backs_off(
    sqlite_store: HistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    newest = record(sqlite_store, "p", ["agent-a", "bad-agent", "agent-b"], 6)
    service = FailingService(sqlite_store)
    with service, caplog.at_level(logging.INFO, logger="metalearn.worker"):
        worker = AnalysisWorker(service, max_attempts=2, retry_backoff_s=0.2)
        first = worker.run_once()
        assert first.agents == ("agent-a", "agent-b", "bad-agent")  # equal waits: by name
        assert dict(first.outcomes) == {"agent-a": "done", "agent-b": "done",
                                        "bad-agent": "retrying"}  # fmt: skip
        assert dict(first.errors) == {"bad-agent": "RuntimeError: analysis exploded"}
        assert first.covered_seq == max(newest.values())
        assert worker.run_once().agents == ()  # backing off
        time.sleep(0.25)
        second = worker.run_once()
        assert dict(second.outcomes) == {"bad-agent": "failed"}
        assert worker.run_once().agents == ()  # failed for good, until its next plan
        record(sqlite_store, "again", ["bad-agent"], 1)
        assert dict(worker.run_once().outcomes) == {"bad-agent": "retrying"}
        stats = worker.stats()
        worker.close()
    assert {k: stats[k] for k in ("batches", "claimed", "completed", "retried", "failed")} == {
        "batches": 3, "claimed": 5, "completed": 2, "retried": 2, "failed": 1,
    }  # fmt: skip
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3 and all("RuntimeError: analysis exploded" in r.getMessage()
                                    for r in errors)  # fmt: skip
    assert repr(worker).startswith("<AnalysisWorker sqlite:///") and "done=2 failed=1>" in repr(
        worker
    )


def test_a_lost_lease_is_not_completed(
    sqlite_store: HistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    newest = record(sqlite_store, "p", ["agent-a"], 1)
    database = sqlite_store._database

    class Overtaken(MetaLearningService):
        """While it analyses, another worker takes its job over (as after a long pause)."""

        def snapshot_agents_sync(self, agent_ids: Sequence[str], **kwargs: Any) -> dict[str, int]:
            later = datetime.now(UTC) + timedelta(minutes=5)  # the lease has expired by then
            [job] = claim(database, "thief", batch_size=1, lease_seconds=600, now=later)
            assert job.reclaimed_from is not None
            time.sleep(0.3)  # the next renewal finds the lease lost
            return super().snapshot_agents_sync(agent_ids, **kwargs)

    with Overtaken(sqlite_store) as service, caplog.at_level(logging.WARNING):
        worker = AnalysisWorker(service, lease_seconds=0.3)
        result = worker.run_once()
    assert dict(result.outcomes) == {"agent-a": "lost"} and worker.stats()["lost"] == 1
    assert any("lost its lease on ['agent-a']" in r.getMessage() for r in caplog.records)
    row = jobs_by_agent(sqlite_store)["agent-a"]
    assert (row["state"], row["owner"]) == ("running", "thief")  # the loser wrote nothing
    assert complete(database, "thief", "agent-a", covered_seq=newest["agent-a"]) == "done"


# -- two workers on one machine ----------------------------------------------------------


def test_two_workers_share_the_queue_but_never_a_warehouse_file(
    tmp_path: Path, workers: Callable[..., Worker]
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    agents = [f"agent-{i}" for i in range(8)]
    with HistoryStore(url) as store:
        store.count()
        pair = [workers("--db", url, "--batch-size", "2") for _ in range(2)]
        starts = [worker.wait_for(" started on ") for worker in pair]
        newest: dict[str, int] = {}
        for round_ in range(4):  # plans keep coming while both analyse
            newest |= record(store, f"r{round_}", agents, 16)
            time.sleep(0.15)
        eventually(lambda: all_done(store, newest), timeout=60, what="every job done")
        for worker in pair:
            worker.process.send_signal(signal.SIGTERM)
        stopped = [worker.stop(None) for worker in pair]
    assert [status for status, _ in stopped] == [0, 0], [w.log for w in pair]
    files = {start.split("(warehouse ")[1].rstrip(")") for start in starts}
    assert files == {f"{tmp_path / 'history.db'}.warehouse.{n}duckdb" for n in ("", "2.")}
    assert "is in use: mirroring into" in pair[0].log + pair[1].log
    holds = [held_intervals(worker.lines) for worker in pair]
    assert all(holds), "both workers analysed batches"
    for agent in agents:  # never held by both at once
        for start_a, end_a in holds[0].get(agent, []):
            for start_b, end_b in holds[1].get(agent, []):
                assert end_a <= start_b or end_b <= start_a, (agent, start_a, start_b)


def held_intervals(lines: list[str]) -> dict[str, list[tuple[datetime, datetime]]]:
    """Per agent, from a worker's log: (after its claim, before its completion) pairs.

    A claim is logged after it committed and the analysis before the jobs are completed,
    so each interval lies inside the time the worker really held the job.
    """
    held: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    claimed: dict[str, datetime] = {}
    for line in lines:
        if " claimed " in line:
            for part in line.split(" claimed ")[1].split("), "):
                claimed[part.split(" (")[0]] = claimed_at(line)
        elif " analysed " in line:
            for agent in line.split(" analysed ")[1].split(" through seq ")[0].split(", "):
                held[agent].append((claimed.pop(agent), claimed_at(line)))
    return held


def test_in_one_process_a_second_worker_mirrors_elsewhere(sqlite_store: HistoryStore) -> None:
    with AnalysisWorker(sqlite_store) as first, AnalysisWorker(sqlite_store) as second:
        paths = [first.service.warehouse.path, second.service.warehouse.path]
        with AnalysisWorker(sqlite_store, warehouse_path=MEMORY) as third:
            assert third.service.warehouse.path is None
    file = sqlite_store._database.sqlite_file
    assert paths == [Path(f"{file}.warehouse.duckdb"), Path(f"{file}.warehouse.2.duckdb")]


def test_a_warehouse_whose_files_are_all_in_use_mirrors_in_memory(
    sqlite_store: HistoryStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mirror.duckdb"
    with caplog.at_level(logging.WARNING, logger="metalearn.warehouse"):
        held = [Warehouse(sqlite_store, path=path, if_locked="fallback") for _ in range(9)]
        spare = Warehouse(sqlite_store, path=path, if_locked="fallback")
    try:
        assert [w.path for w in held] == [path, *(tmp_path / f"mirror.{n}.duckdb"
                                                  for n in range(2, 10))]  # fmt: skip
        assert spare.path is None and spare.refresh() == 0
        assert "are all in use: mirroring in memory" in caplog.text
        held[3].close()  # a free slot is taken again (a restart stays incremental)
        again = Warehouse(sqlite_store, path=path, if_locked="fallback")
        assert again.path == tmp_path / "mirror.4.duckdb"
        again.close()
    finally:
        for warehouse in [*held, spare]:
            warehouse.close()
    with pytest.raises(InvalidArgumentError, match="if_locked"):
        Warehouse(sqlite_store, if_locked="wait")  # type: ignore[arg-type]


# -- status -----------------------------------------------------------------------------


def test_status_shows_pending_running_failed_and_lag(
    sqlite_store: HistoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    database = sqlite_store._database
    newest = record(sqlite_store, "p", ["done-agent", "failed-agent", "running-agent"], 3)
    with AnalysisWorker(sqlite_store) as worker:
        worker.run_once()  # all three analysed: done
    newest |= record(sqlite_store, "q", ["failed-agent", "running-agent", "waiting-agent"], 3)
    claimed = claim(database, OWNER, batch_size=2, lease_seconds=600)
    assert [j.agent_id for j in claimed] == ["failed-agent", "running-agent"]
    fail(database, OWNER, "failed-agent", "KeyError: 'x'\nmore", max_attempts=1,
         backoff_s=0)  # fmt: skip
    url = sqlite_store.url

    code, out, _ = run_cli(["status", "--db", url], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"analysis jobs in {url}:"
    assert lines[1].startswith("  1 pending, 1 running (0 with an expired lease), 1 failed, 1 done")
    assert lines[2].startswith("  1 plans waiting; the oldest for ")
    running = lines[lines.index("running (1):") + 2].split()
    assert running[:2] == ["running-agent", OWNER] and running[-3:] == ["1", "1", "0"]
    assert lines[lines.index("pending (1):") + 2].split()[:3] == ["waiting-agent", "0", "1"]
    failed = lines[lines.index("failed (1):") + 2]
    assert failed.split()[:2] == ["failed-agent", "1"] and failed.endswith("KeyError: 'x'")
    lag = lines[lines.index("agents behind their latest snapshot (3):") + 1 :]
    assert lag[0].split() == ["agent", "newest", "plan", "seq", "snapshot", "through", "seq",
                              "lag", "(seqs)", "job"]  # fmt: skip
    assert [row.split() for row in lag[1:]] == [
        ["failed-agent", "4", "3", "1", "failed"],
        ["running-agent", "5", "3", "2", "running"],
        ["waiting-agent", "6", "-", "6", "pending"],
    ]

    code, out, _ = run_cli(["status", "--db", url, "--json"], capsys)
    status = json.loads(out)
    assert code == 0 and status["url"] == url
    assert {k: status["stats"][k] for k in ("pending", "running", "failed", "done")} == {
        "pending": 1, "running": 1, "failed": 1, "done": 1,
    }  # fmt: skip
    [held] = status["running"]
    assert (held["agent_id"], held["owner"], held["attempts"]) == ("running-agent", OWNER, 1)
    assert 0 <= held["lease_age_s"] < 60 and 500 < held["lease_left_s"] <= 600
    assert status["failed"][0]["error"] == "KeyError: 'x'\nmore"
    assert status["pending"][0]["agent_id"] == "waiting-agent"
    assert status["agents_behind"] == 3 and status["lag"][2]["through_seq"] is None
    assert newest["waiting-agent"] == status["lag"][2]["last_seq"]
    assert queue_status(sqlite_store, limit=1)["lag"] == status["lag"][:1]


def test_status_of_a_missing_database_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["status", "--db", f"sqlite:///{tmp_path / 'none.db'}"], capsys)
    assert (code, out) == (1, "") and "no database file at" in err
    assert not (tmp_path / "none.db").exists()


# -- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"batch_size": 0}, "batch_size", id="batch-size"),
        pytest.param({"concurrency": 0}, "concurrency", id="concurrency"),
        pytest.param({"lease_seconds": 0}, "lease_seconds", id="lease"),
        pytest.param({"poll_s": -1}, "poll_s", id="poll"),
        pytest.param({"retry_backoff_s": float("nan")}, "retry_backoff_s", id="backoff"),
        pytest.param({"max_attempts": 0}, "max_attempts", id="attempts"),
        pytest.param({"options": {"min_support": 1}}, "BackgroundOptions", id="options"),
    ],
)
def test_options_are_checked(
    sqlite_store: HistoryStore, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        AnalysisWorker(sqlite_store, **options)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["worker", "--batch-size", "0"], id="batch-size"),
        pytest.param(["worker", "--lease-seconds", "-1"], id="lease"),
        pytest.param(["worker", "--days", "soon"], id="days"),
        pytest.param(["worker", "--grace", "-1"], id="grace"),
        pytest.param(["status", "--limit", "0"], id="limit"),
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and "usage: metalearn" in capsys.readouterr().err


def test_a_worker_of_its_own_sqlite_store_gives_way_after_each_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    with AnalysisWorker(url, warehouse_path=MEMORY) as worker:
        assert worker.database.pause_after_write_s == 0.03
    with HistoryStore(url) as store, AnalysisWorker(store, warehouse_path=MEMORY) as worker:
        assert worker.database.pause_after_write_s == 0  # the app's store: never slowed
    memory = HistoryStore("sqlite://")
    with pytest.raises(InvalidArgumentError, match="only a SQLite file store"):
        memory.database.write_in_background(0.03)
    memory.close()


def test_a_worker_leaves_the_other_cores_to_the_apps(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"

    def threads(worker: AnalysisWorker) -> int:
        cursor = worker.service.warehouse._connection.cursor()
        try:
            return int(cursor.execute("SELECT current_setting('threads')").fetchall()[0][0])
        finally:
            cursor.close()

    with AnalysisWorker(url, warehouse_path=MEMORY) as worker:
        assert threads(worker) == 1
    with AnalysisWorker(url, warehouse_path=MEMORY, threads=None) as worker:
        assert threads(worker) == os.cpu_count()
    with pytest.raises(InvalidArgumentError, match="threads must be an integer >= 1"):
        AnalysisWorker(url, threads=0)
