"""A fresh store used first by a crowd: six processes at once, ten fresh stores in a row.

Each child process waits on its stdin for a URL, opens a new :class:`HistoryStore` on it
and records one plan, and answers with the plan's seq and the store's identity (or the
error it met). The parent hands the same fresh URL to all six at the same moment, so
every round races the schema creation, the counter row and the identity row.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _postgres_url, _reset_postgres, waiting_children

PROCESSES = 6
ROUNDS = 10

CHILD = r"""
import sys
from datetime import datetime, timedelta, timezone

from metalearn import HistoryStore, Plan

name = sys.argv[1]
start = datetime(2026, 3, 1, tzinfo=timezone.utc)
print("ready", flush=True)
for line in sys.stdin:
    url, round_ = line.split()
    try:
        with HistoryStore(url) as store:
            seq = store.record_plan(Plan(f"{name}-{round_}", "agent", "succeeded", start,
                                         start + timedelta(seconds=1), steps=[{"tool": "t"}]))
            print("ok", seq, store.store_id, flush=True)
    except Exception as error:  # reported to the parent, which fails the test
        message = str(error)[:200].replace("\n", " ")
        print("error", type(error).__module__, type(error).__name__, message, flush=True)
"""


@pytest.fixture
def crowd() -> Iterator[list[subprocess.Popen[str]]]:
    with waiting_children(CHILD, [f"child{i}" for i in range(PROCESSES)]) as children:
        yield children


def race(children: list[subprocess.Popen[str]], url: str, round_: int) -> list[list[str]]:
    """Hand ``url`` to every child at once; each child's answer, split into words."""
    for child in children:
        assert child.stdin is not None
        child.stdin.write(f"{url} {round_}\n")
        child.stdin.flush()
    answers = []
    for child in children:
        assert child.stdout is not None
        answers.append(child.stdout.readline().split())
    return answers


def check_round(answers: list[list[str]]) -> None:
    errors = [" ".join(a) for a in answers if a[0] != "ok"]
    assert errors == [], errors
    seqs = sorted(int(a[1]) for a in answers)
    assert seqs == list(range(1, PROCESSES + 1))  # every plan written, none doubled
    assert len({a[2] for a in answers}) == 1  # one identity, whoever created it


def test_fresh_sqlite_stores_survive_a_crowd(
    crowd: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    for round_ in range(ROUNDS):
        check_round(race(crowd, f"sqlite:///{tmp_path / f'round-{round_}.db'}", round_))


@pytest.mark.postgres
def test_fresh_postgres_stores_survive_a_crowd(crowd: list[subprocess.Popen[str]]) -> None:
    url = _postgres_url()
    identities = set()
    try:
        for round_ in range(ROUNDS):
            _reset_postgres(url)
            answers = race(crowd, url, round_)
            check_round(answers)
            identities.add(answers[0][2])
    finally:
        _reset_postgres(url)
    assert len(identities) == ROUNDS  # a recreated store is a new store
