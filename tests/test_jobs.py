"""The durable job queue (``metalearn._jobs``) on SQLite and PostgreSQL.

Single-process tests inject ``now=`` to move time (leases, backoff) instead of sleeping.
The last test runs 8 claimer processes against one store while they also record plans,
and checks from their logs that no agent was ever held by two of them at once, that each
generation of a job ran once (plus once per newer plan that arrived during a run), and
that every plan was counted in exactly one claim.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select, update

from metalearn._database import Database
from metalearn._errors import InvalidArgumentError
from metalearn._jobs import (
    JOB_COLUMNS,
    ClaimedJob,
    JobRequest,
    claim,
    complete,
    enqueue,
    fail,
    job_stats,
    job_table,
    make_owner,
    release,
    renew,
)
from metalearn._schema import PLAN_COUNTER, counters, jobs
from metalearn._types import epoch_micros
from tests.conftest import waiting_children

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def us(seconds: float) -> int:
    return epoch_micros(at(seconds))


@pytest.fixture
def database(store_url: str) -> Iterator[Database]:
    db = Database(store_url)
    yield db
    db.close()


def put(database: Database, *items: tuple[str, int, int, int], now: float = 0) -> None:
    with database.begin() as conn:
        enqueue(conn, items, now=at(now))


def row(database: Database, agent_id: str) -> dict[str, Any]:
    with database.connect() as conn:
        found = conn.execute(select(jobs).where(jobs.c.agent_id == agent_id)).mappings().one()
    return dict(found)


def take(
    database: Database, owner: str = "w1", *, now: float = 0, batch_size: int = 10, **options: Any
) -> list[ClaimedJob]:
    options.setdefault("lease_seconds", 60)
    return claim(database, owner, batch_size=batch_size, now=at(now), **options)


def agents(claimed: list[ClaimedJob]) -> list[str]:
    return [job.agent_id for job in claimed]


# -- enqueueing and coalescing ---------------------------------------------------------


def test_a_new_agent_gets_a_pending_job(database: Database) -> None:
    put(database, JobRequest("a", 2, 5, 1), now=3)
    assert row(database, "a") == {
        "agent_id": "a", "state": "pending", "priority": 2, "enqueued_at_us": us(3),
        "last_seq": 5, "plans": 1, "attempts": 0, "not_before_us": 0, "owner": None,
        "lease_expires_at_us": None, "claimed_at_us": None, "late_plans": 0,
        "late_since_us": None, "finished_at_us": None, "error": None, "generation": 0,
    }  # fmt: skip


def test_plans_coalesce_into_the_pending_job(database: Database) -> None:
    put(database, ("a", 1, 5, 1), now=0)
    put(database, ("a", 3, 7, 2), now=10)
    put(database, ("a", 0, 6, 1), now=20)  # lower priority, older seq: neither goes down
    put(database, ("b", 0, 8, 1), ("b", 4, 9, 1), ("b", 2, 10, 3), now=30)  # one call
    a, b = row(database, "a"), row(database, "b")
    assert (a["priority"], a["enqueued_at_us"], a["last_seq"], a["plans"]) == (3, us(0), 7, 4)
    assert (b["priority"], b["enqueued_at_us"], b["last_seq"], b["plans"]) == (4, us(30), 10, 5)
    assert job_stats(database, now=at(30))["pending"] == 2


def test_enqueue_writes_in_the_callers_transaction(database: Database) -> None:
    def record_then_fail() -> None:
        with database.begin() as conn:
            enqueue(conn, [("a", 0, 1, 1)])
            raise RuntimeError("the transaction fails after the plan and its job were written")

    with pytest.raises(RuntimeError, match="after the plan"):
        record_then_fail()
    assert job_stats(database)["pending"] == 0


def test_enqueue_many_agents_at_once(database: Database) -> None:
    put(database, *((f"agent-{i:04}", i % 7, i, 1) for i in range(2_500)))
    assert job_stats(database)["pending"] == 2_500
    assert agents(take(database, batch_size=3)) == ["agent-0006", "agent-0013", "agent-0020"]


# -- claiming --------------------------------------------------------------------------


def test_claims_go_by_priority_then_age_in_batches(database: Database) -> None:
    put(database, ("low-old", 0, 1, 1), now=0)
    put(database, ("high-old", 5, 2, 1), now=1)
    put(database, ("mid", 2, 3, 1), now=2)
    put(database, ("high-new", 5, 4, 1), now=3)
    first = take(database, "w1", batch_size=2, now=10, lease_seconds=30)
    assert agents(first) == ["high-old", "high-new"]
    assert first[0] == ClaimedJob(
        agent_id="high-old", owner="w1", priority=5, last_seq=2, plans=1, attempts=1,
        generation=0, enqueued_at=at(1), claimed_at=at(10), lease_expires_at=at(40),
    )  # fmt: skip
    assert first[0].wait_ms == 9_000
    assert agents(take(database, "w2", batch_size=2, now=10)) == ["mid", "low-old"]
    assert take(database, "w3", now=10) == []
    assert row(database, "mid")["owner"] == "w2"


def test_a_live_lease_is_kept_and_an_expired_one_is_reclaimed(database: Database) -> None:
    put(database, ("a", 0, 1, 1))
    take(database, "w1", now=0, lease_seconds=10)
    assert take(database, "w2", now=9.999) == []
    assert renew(database, "w1", ["a"], lease_seconds=10, now=at(5)) == {"a"}
    assert take(database, "w2", now=14.999) == []
    [job] = take(database, "w2", now=15)  # w1 stopped renewing: died or hung
    assert (job.owner, job.reclaimed_from, job.attempts) == ("w2", "w1", 2)
    assert renew(database, "w1", ["a"], lease_seconds=10, now=at(16)) == frozenset()
    assert complete(database, "w1", "a", covered_seq=1) == "lost"
    assert fail(database, "w1", "a", "late", max_attempts=3, backoff_s=0) == "lost"
    assert release(database, "w1") == []
    assert (row(database, "a")["owner"], row(database, "a")["state"]) == ("w2", "running")


def test_an_expired_lease_nobody_reclaimed_is_still_held(database: Database) -> None:
    put(database, ("a", 0, 1, 1))
    take(database, "w1", now=0, lease_seconds=10)
    assert job_stats(database, now=at(11))["expired"] == 1
    assert renew(database, "w1", ["a", "b"], lease_seconds=10, now=at(11)) == {"a"}
    assert take(database, "w2", now=20) == []
    assert complete(database, "w1", "a", covered_seq=1, now=at(20)) == "done"


def test_a_job_whose_workers_keep_dying_fails_after_max_attempts(database: Database) -> None:
    put(database, ("a", 0, 1, 1), ("b", 0, 2, 1))
    take(database, "w1", now=0, lease_seconds=10, max_attempts=2)
    assert [j.attempts for j in take(database, "w2", now=10, max_attempts=2)] == [2, 2]
    complete(database, "w2", "b", covered_seq=2, now=at(11))
    assert take(database, "w3", now=100, max_attempts=2) == []
    failed = row(database, "a")
    assert (failed["state"], failed["owner"], failed["finished_at_us"]) == ("failed", None, us(100))
    assert "worker 'w2' stopped renewing its lease on attempt 2" in failed["error"]


# -- ending a run ----------------------------------------------------------------------


def test_complete_marks_done_when_the_run_covered_the_newest_plan(database: Database) -> None:
    put(database, ("a", 0, 5, 2), ("b", 0, 6, 1))
    take(database, now=1)
    put(database, ("b", 0, 7, 1), now=2)  # arrives during the run, which then reads it
    assert complete(database, "w1", "a", covered_seq=5, now=at(3)) == "done"
    assert complete(database, "w1", "b", covered_seq=7, now=at(3)) == "done"
    a, b = row(database, "a"), row(database, "b")
    assert (a["state"], a["owner"], a["lease_expires_at_us"], a["finished_at_us"]) == (
        "done", None, None, us(3),
    )  # fmt: skip
    assert (b["state"], b["plans"], b["late_plans"]) == ("done", 2, 0)
    assert take(database, now=4) == []


def test_a_plan_newer_than_the_run_keeps_the_job_pending(database: Database) -> None:
    put(database, ("a", 1, 5, 2), now=0)
    take(database, "w1", now=1)
    put(database, ("a", 4, 8, 1), now=2)
    put(database, ("a", 0, 9, 1), now=3)
    running = row(database, "a")
    assert (running["state"], running["priority"], running["last_seq"]) == ("running", 4, 9)
    assert (running["plans"], running["late_plans"], running["late_since_us"]) == (2, 2, us(2))
    assert take(database, "w2", now=4) == []  # still w1's
    assert complete(database, "w1", "a", covered_seq=5, now=at(5)) == "requeued"
    pending = row(database, "a")
    assert (pending["state"], pending["owner"], pending["priority"]) == ("pending", None, 4)
    assert (pending["plans"], pending["late_plans"], pending["attempts"]) == (2, 0, 0)
    assert pending["enqueued_at_us"] == us(2)  # the wait of the first plan it missed
    [again] = take(database, "w2", now=6)
    assert (again.last_seq, again.plans, again.attempts, again.generation) == (9, 2, 1, 0)
    assert complete(database, "w2", "a", covered_seq=9, now=at(7)) == "done"


def test_failures_retry_with_exponential_backoff_then_fail(database: Database) -> None:
    put(database, ("a", 0, 1, 1))
    retry = {"max_attempts": 3, "backoff_s": 2.0}
    assert [j.attempts for j in take(database, now=0)] == [1]
    assert fail(database, "w1", "a", "ValueError: one", now=at(0), **retry) == "retrying"
    assert row(database, "a")["error"] == "ValueError: one"  # visible while it waits
    assert take(database, now=1.999) == []
    assert [j.attempts for j in take(database, now=2)] == [2]
    assert fail(database, "w1", "a", "ValueError: two", now=at(2), **retry) == "retrying"
    assert take(database, now=5.999) == []  # 2 s, then 4 s
    assert [j.attempts for j in take(database, now=6)] == [3]
    assert fail(database, "w1", "a", "ValueError: three", now=at(6), **retry) == "failed"
    assert take(database, now=10_000) == []
    failed = row(database, "a")
    assert (failed["state"], failed["error"], failed["finished_at_us"]) == (
        "failed", "ValueError: three", us(6),
    )  # fmt: skip
    assert job_stats(database, now=at(7))["failed"] == 1


@pytest.mark.parametrize("ending", ["done", "failed"])
def test_a_new_plan_rearms_a_finished_job(database: Database, ending: str) -> None:
    put(database, ("a", 5, 1, 3), now=0)
    take(database, now=1)
    if ending == "done":
        complete(database, "w1", "a", covered_seq=1, now=at(2))
    else:
        fail(database, "w1", "a", "boom", max_attempts=1, backoff_s=0, now=at(2))
    put(database, ("a", 1, 2, 1), now=3)
    rearmed = row(database, "a")
    assert (rearmed["state"], rearmed["generation"], rearmed["attempts"]) == ("pending", 1, 0)
    assert (rearmed["priority"], rearmed["plans"], rearmed["last_seq"]) == (1, 1, 2)
    assert (rearmed["enqueued_at_us"], rearmed["error"]) == (us(3), None)
    assert rearmed["finished_at_us"] == (us(2) if ending == "done" else None)
    [job] = take(database, now=4)
    assert (job.generation, job.attempts, job.last_seq) == (1, 1, 2)


def test_release_gives_jobs_back_without_counting_the_attempt(database: Database) -> None:
    put(database, ("a", 0, 1, 1), ("b", 0, 2, 1), ("c", 0, 3, 1))
    take(database, "w1", now=0)
    fail(database, "w1", "a", "boom", max_attempts=3, backoff_s=1, now=at(0))
    take(database, "w1", now=1)  # a's second attempt
    take(database, "w2", now=1)  # nothing left for w2
    put(database, ("b", 0, 4, 1), now=2)
    assert release(database, "w1") == ["a", "b", "c"]
    assert release(database, "w1") == []
    released = {agent: row(database, agent) for agent in "abc"}
    assert {a: (r["state"], r["owner"], r["attempts"]) for a, r in released.items()} == {
        "a": ("pending", None, 1), "b": ("pending", None, 0), "c": ("pending", None, 0),
    }  # fmt: skip
    assert (released["b"]["plans"], released["b"]["late_plans"]) == (2, 0)
    assert agents(take(database, "w2", now=3)) == ["a", "b", "c"]


# -- looking at the queue --------------------------------------------------------------


def test_job_stats_and_table(database: Database) -> None:
    put(database, ("pending", 0, 1, 2), now=10)
    put(database, ("running", 3, 2, 1), ("failed", 1, 3, 1), ("done", 0, 4, 1), now=0)
    claimed = take(database, "w1", now=5, lease_seconds=30, batch_size=3)
    assert agents(claimed) == ["running", "failed", "done"]  # by priority, then age
    complete(database, "w1", "done", covered_seq=4, now=at(15))
    fail(database, "w1", "failed", "KeyError: 'x'", max_attempts=1, backoff_s=0, now=at(16))
    put(database, ("running", 0, 5, 1), now=20)  # arrives during the run
    now = at(60)
    assert job_stats(database, now=now) == {
        "pending": 1, "running": 1, "failed": 1, "done": 1, "expired": 1,
        "plans_waiting": 3, "oldest_wait_s": 50.0, "done_last_hour": 1,
    }  # fmt: skip
    assert job_stats(database, now=at(15 + 3601))["done_last_hour"] == 0
    table = job_table(database, now=now)
    assert list(table.columns) == JOB_COLUMNS
    assert table["agent_id"].tolist() == ["running", "pending", "failed"]
    running = table.iloc[0]
    assert (running["owner"], running["late_plans"], running["wait_s"]) == ("w1", 1, 40.0)
    assert (running["lease_age_s"], running["lease_left_s"]) == (55.0, -25.0)
    assert running["claimed_at"] == pd.Timestamp(at(5))
    assert table.iloc[1]["wait_s"] == 50.0 and pd.isna(table.iloc[1]["owner"])
    assert table.iloc[2]["error"] == "KeyError: 'x'"
    assert table.iloc[2]["finished_at"] == pd.Timestamp(at(16))
    assert job_table(database, states=["done"])["agent_id"].tolist() == ["done"]
    with pytest.raises(InvalidArgumentError, match="unknown job states"):
        job_table(database, states=["queued"])


def test_an_empty_queue(database: Database) -> None:
    assert job_stats(database)["oldest_wait_s"] is None
    assert list(job_table(database).columns) == JOB_COLUMNS
    assert release(database, make_owner()) == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda db: claim(db, "w", batch_size=0, lease_seconds=1), "batch_size",
                     id="batch-size"),
        pytest.param(lambda db: claim(db, "w", batch_size=1, lease_seconds=0), "lease_seconds",
                     id="lease"),
        pytest.param(lambda db: claim(db, "", batch_size=1, lease_seconds=1), "owner", id="owner"),
        pytest.param(lambda db: fail(db, "w", "a", "e", max_attempts=0, backoff_s=1),
                     "max_attempts", id="max-attempts"),
        pytest.param(lambda db: fail(db, "w", "a", "e", max_attempts=1, backoff_s=-1),
                     "backoff_s", id="backoff"),
    ],
)  # fmt: skip
def test_options_are_checked(tmp_path: Any, call: Any, message: str) -> None:
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    with pytest.raises(InvalidArgumentError, match=message):
        call(db)
    db.close()


# -- 8 claimers in separate processes --------------------------------------------------

CLAIMERS = 8
AGENTS = 40
PLANS_PER_CLAIMER = 20

CLAIMER = r"""
import json, random, sys, time
from sqlalchemy import select, update
from metalearn._database import Database
from metalearn._jobs import claim, complete, enqueue
from metalearn._schema import PLAN_COUNTER, counters, jobs

def record_plan(database, agent, priority):
    # What record_plans does: take the next seq and queue the job in one transaction.
    with database.begin() as conn:
        seq = conn.execute(update(counters).where(counters.c.name == PLAN_COUNTER)
                           .values(value=counters.c.value + 1)
                           .returning(counters.c.value)).scalar_one()
        enqueue(conn, [(agent, priority, seq, 1)])

def holder(database, agent):
    with database.connect() as conn:
        return tuple(conn.execute(select(jobs.c.owner, jobs.c.state)
                                  .where(jobs.c.agent_id == agent)).one())

def run(url, agents, plans):
    rng = random.Random(name + url)
    database = Database(url)
    claims, idle = [], 0
    while idle < 3:
        if plans and rng.random() < 0.5:
            record_plan(database, f"agent-{rng.randrange(agents):02}", rng.randrange(3))
            plans -= 1
        batch = claim(database, name, batch_size=rng.randint(1, 4), lease_seconds=60)
        if not batch:
            idle += 0 if plans else 1
            time.sleep(0.001)
            continue
        start = time.time()
        for _ in range(2):  # the store agrees this claimer holds them, while it works
            for job in batch:
                assert holder(database, job.agent_id) == (name, "running"), job
            time.sleep(0.002)
        end = time.time()
        for job in batch:
            outcome = complete(database, name, job.agent_id, covered_seq=job.last_seq)
            claims.append([job.agent_id, job.generation, job.last_seq, job.plans, name,
                           start, end, outcome])
    database.close()
    return claims

name = sys.argv[1]
print("ready", flush=True)
for line in sys.stdin:
    url, agents, plans = line.split()
    try:
        print(json.dumps({"claims": run(url, int(agents), int(plans))}), flush=True)
    except BaseException as error:  # reported to the parent, which fails the test
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
"""


@pytest.fixture(scope="module")
def claimers() -> Iterator[list[subprocess.Popen[str]]]:
    """8 claimer processes, started once for both backends (each waits for a URL)."""
    with waiting_children(CLAIMER, [f"claimer-{i}" for i in range(CLAIMERS)]) as children:
        yield children


def seed(database: Database) -> None:
    """One plan per agent, seqs 1..AGENTS, as record_plans would write them."""
    with database.begin() as conn:
        conn.execute(update(counters).where(counters.c.name == PLAN_COUNTER).values(value=AGENTS))
        enqueue(conn, [(f"agent-{i:02}", 0, i + 1, 1) for i in range(AGENTS)])


def drain(database: Database) -> list[list[Any]]:
    """Claim and complete what the claimers left (plans recorded after they stopped)."""
    claims: list[list[Any]] = []
    while batch := claim(database, "parent", batch_size=AGENTS, lease_seconds=60):
        for job in batch:
            outcome = complete(database, "parent", job.agent_id, covered_seq=job.last_seq)
            claims.append([job.agent_id, job.generation, job.last_seq, job.plans, "parent",
                           0.0, 0.0, outcome])  # fmt: skip
    return claims


def test_concurrent_claimers_hold_each_job_alone_and_run_it_once_per_generation(
    claimers: list[subprocess.Popen[str]], store_url: str
) -> None:
    database = Database(store_url)
    seed(database)
    for child in claimers:
        assert child.stdin is not None
        child.stdin.write(f"{store_url} {AGENTS} {PLANS_PER_CLAIMER}\n")
        child.stdin.flush()
    reports = []
    for child in claimers:
        assert child.stdout is not None
        reports.append(json.loads(child.stdout.readline()))
    assert [r["error"] for r in reports if "error" in r] == []
    claims = [c for r in reports for c in r["claims"]] + drain(database)
    with database.connect() as conn:
        final = {r.agent_id: r for r in conn.execute(select(jobs))}
    database.close()

    by_agent: dict[str, list[list[Any]]] = defaultdict(list)
    for found in claims:
        by_agent[found[0]].append(found)
    assert sum(c[3] for c in claims) == AGENTS + CLAIMERS * PLANS_PER_CLAIMER  # each plan once
    assert {c[7] for c in claims} <= {"done", "requeued"}  # no claimer lost a job
    assert len(claims) > AGENTS  # re-armed and requeued jobs ran again
    for agent, runs in by_agent.items():
        runs.sort(key=lambda c: c[2])  # by the newest plan each run covered
        assert [c[2] for c in runs] == sorted({c[2] for c in runs}), agent  # each seq once
        timed = [c for c in runs if c[4] != "parent"]
        for before, after in itertools.pairwise(timed):
            assert before[6] <= after[5], (agent, before, after)  # never two holders at once
        generations = [c[1] for c in runs]
        assert generations == sorted(generations)
        assert sorted(set(generations)) == list(range(final[agent].generation + 1))
        for generation in set(generations):
            outcomes = [c[7] for c in runs if c[1] == generation]
            assert outcomes == ["requeued"] * (len(outcomes) - 1) + ["done"], (agent, outcomes)
        assert final[agent].state == "done" and final[agent].last_seq == runs[-1][2]
    assert set(by_agent) == set(final)


def test_a_recorded_plan_commits_with_its_agents_job(store_url: str) -> None:
    from metalearn import DuplicatePlanError, HistoryStore
    from tests.conftest import make_plan

    with HistoryStore(store_url) as store:
        first = store.record_plans([make_plan("p-1", agent_id="a"), make_plan("p-2", agent_id="b")])
        again = store.record_plans([make_plan("p-1", agent_id="a"), make_plan("p-3", agent_id="a")])
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.agent_id, jobs.c.state, jobs.c.last_seq, jobs.c.plans).order_by(
                    jobs.c.agent_id
                )
            ).all()
    assert first == [1, 2] and isinstance(again[0], DuplicatePlanError) and again[1] == 4
    # the duplicate wrote no plan and queued nothing; p-3 coalesced into a's pending job
    assert [tuple(r) for r in rows] == [("a", "pending", 4, 2), ("b", "pending", 2, 1)]


def test_an_import_queues_one_job_per_agent(store_url: str) -> None:
    from metalearn import HistoryStore
    from metalearn.synthetic import make_history

    plans, steps = make_history(300, seed=5)
    with HistoryStore(store_url) as store:
        store.import_frames(plans, steps)
        stored = store.plans_after(0, limit=None).plans.to_pandas()
        with store.engine.connect() as conn:
            rows = conn.execute(select(jobs.c.agent_id, jobs.c.last_seq, jobs.c.plans)).all()
    expected = stored.groupby("agent_id").agg(last_seq=("seq", "max"), plans=("seq", "size"))
    got = {agent: (last_seq, count) for agent, last_seq, count in rows}
    assert got == {agent: (int(row.last_seq), int(row.plans)) for agent, row in expected.iterrows()}
