"""The run log (``metalearn._job_runs``): statuses, counts and pruning, on both backends."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from metalearn import HistoryStore
from metalearn._job_runs import record_run, run_counts, run_metrics
from metalearn._jobs import ClaimedJob, claim, enqueue
from tests.conftest import T0


def claimed(store: HistoryStore, *agents: str, plans: int = 1) -> list[ClaimedJob]:
    with store.database.begin() as conn:
        enqueue(conn, [(agent, 3, 10, plans) for agent in agents], now=T0)
    return claim(
        store.database, "w", batch_size=10, lease_seconds=60, now=T0 + timedelta(seconds=2)
    )


def test_a_run_takes_the_worst_outcome_and_counts_what_was_stored(store: HistoryStore) -> None:
    jobs = claimed(store, "a", "b", "c", plans=4)
    outcomes = {"a": "done", "b": "retrying", "c": "requeued"}
    record_run(store.database, "w", jobs, outcomes, {"b": "ValueError: boom"},
               now=T0 + timedelta(seconds=5))  # fmt: skip
    (row,) = run_metrics(store.database).to_dict("records")
    assert row["agents"] == ("a", "b", "c") and row["plans"] == 12 and row["priority"] == 3
    assert (row["status"], row["error"], row["attempts"]) == ("retrying", "ValueError: boom", 1)
    assert (row["wait_ms"], row["run_ms"]) == (2000.0, 3000.0)
    assert row["submitted_at"] == pd.Timestamp(T0)
    counts = run_counts(store.database)
    assert counts == {"completed": 0, "retrying": 1, "failed": 0, "cancelled": 0,
                      "analyses": 2, "coalesced": 9}  # fmt: skip


def test_since_and_statuses(store: HistoryStore) -> None:
    for minute, outcome in enumerate(["done", "failed", "released", "lost", "done"]):
        jobs = claimed(store, f"agent-{minute}")
        record_run(store.database, "w", jobs, {f"agent-{minute}": outcome},
                   now=T0 + timedelta(minutes=minute))  # fmt: skip
    since = T0 + timedelta(minutes=1)
    assert list(run_metrics(store.database, since=since)["status"]) == [
        "failed", "cancelled", "cancelled", "completed",
    ]  # fmt: skip
    assert run_counts(store.database, since=since) == {
        "completed": 1, "retrying": 0, "failed": 1, "cancelled": 2, "analyses": 1, "coalesced": 0,
    }  # fmt: skip
    assert list(run_metrics(store.database, limit=2)["agents"]) == [("agent-3",), ("agent-4",)]


def test_the_log_keeps_the_newest_runs(sqlite_store: HistoryStore) -> None:
    jobs = claimed(sqlite_store, "a")
    for _ in range(23):
        record_run(sqlite_store.database, "w", jobs, {"a": "done"}, keep=5)
    kept = run_metrics(sqlite_store.database)["job_id"].tolist()
    assert kept == list(range(16, 24))  # pruned at run 20: runs after 15 stay
