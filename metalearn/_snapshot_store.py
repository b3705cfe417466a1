"""Analysis snapshots in the store: written by background analysis, read by planners.

SQL only, on a connection the caller opened (``HistoryStore`` decides the transaction).
What a snapshot holds, and how results become rows and back, is
:mod:`metalearn._snapshots`' job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Connection, delete, func, insert, select

from metalearn._database import frame_rows, insert_rows
from metalearn._schema import (
    ADDED_COLUMNS,
    plans,
    snapshot_hint_sets,
    snapshot_hints,
    snapshot_patterns,
    snapshots,
)

__all__ = [
    "PreparedSnapshot",
    "agents_behind",
    "latest_hints",
    "latest_snapshot",
    "prepare_snapshot",
    "write_snapshot",
]

_PATTERN_COLUMNS = [c.name for c in snapshot_patterns.c if c.name != "snapshot_id"]
_HINT_COLUMNS = [c.name for c in snapshot_hints.c if c.name != "snapshot_id"]
HintItem = tuple[Mapping[str, Any], pd.DataFrame]  # a hint set row and its hint rows


@dataclass(frozen=True)
class PreparedSnapshot:
    """One snapshot turned into plain row tuples (see :func:`prepare_snapshot`), so that
    the transaction that writes it does nothing but SQL."""

    header: Mapping[str, Any]
    patterns: list[tuple[Any, ...]]  # _PATTERN_COLUMNS, snapshot_id still to append
    hint_set: Mapping[str, Any] | None
    hints: list[tuple[Any, ...]]  # _HINT_COLUMNS, snapshot_id still to append


def prepare_snapshot(
    header: Mapping[str, Any], rows: pd.DataFrame, hint_item: HintItem | None = None
) -> PreparedSnapshot:
    """A snapshot row, its pattern rows and its optional (hint set row, hint rows), as
    tuples ready for :func:`write_snapshot`: done before the transaction opens, because
    turning a frame into tuples takes longer than inserting them."""
    patterns = frame_rows(_with_added(rows), _PATTERN_COLUMNS)
    if hint_item is None:
        return PreparedSnapshot(header, patterns, None, [])
    hint_set, hint_rows = hint_item
    return PreparedSnapshot(header, patterns, hint_set, frame_rows(hint_rows, _HINT_COLUMNS))


def write_snapshot(conn: Connection, snapshot: PreparedSnapshot, *, keep_snapshots: int) -> int:
    """Insert a prepared snapshot; keep the newest ``keep_snapshots`` of its agent. Returns
    the new snapshot id."""
    snapshot_id = int(
        conn.execute(
            insert(snapshots).values(**snapshot.header).returning(snapshots.c.snapshot_id)
        ).scalar_one()
    )
    insert_rows(conn, snapshot_patterns, [*_PATTERN_COLUMNS, "snapshot_id"],
                [(*row, snapshot_id) for row in snapshot.patterns])  # fmt: skip
    if snapshot.hint_set is not None:
        conn.execute(
            insert(snapshot_hint_sets).values(snapshot_id=snapshot_id, **snapshot.hint_set)
        )
        insert_rows(conn, snapshot_hints, [*_HINT_COLUMNS, "snapshot_id"],
                    [(*row, snapshot_id) for row in snapshot.hints])  # fmt: skip
    _prune_snapshots(conn, str(snapshot.header["agent_id"]), keep_snapshots)
    return snapshot_id


def _with_added(rows: pd.DataFrame) -> pd.DataFrame:
    """Pattern rows in the older layout get the columns added since as NULL."""
    missing = [c for c in ADDED_COLUMNS[snapshot_patterns.name] if c not in rows]
    return rows.assign(**dict.fromkeys(missing, None)) if missing else rows


def _prune_snapshots(conn: Connection, agent_id: str, keep_snapshots: int) -> None:
    newest = (
        select(snapshots.c.snapshot_id)
        .where(snapshots.c.agent_id == agent_id)
        .order_by(snapshots.c.snapshot_id.desc())
        .limit(keep_snapshots)
    )
    old = select(snapshots.c.snapshot_id).where(
        snapshots.c.agent_id == agent_id,
        snapshots.c.snapshot_id.not_in(newest.scalar_subquery()),
    )
    old_ids = conn.execute(old).scalars().all()
    if old_ids:
        conn.execute(delete(snapshot_patterns).where(snapshot_patterns.c.snapshot_id.in_(old_ids)))
        for table in (snapshot_hints, snapshot_hint_sets):
            conn.execute(delete(table).where(table.c.snapshot_id.in_(old_ids)))
        conn.execute(delete(snapshots).where(snapshots.c.snapshot_id.in_(old_ids)))


def latest_snapshot(conn: Connection, agent_id: str) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """The newest snapshot row of an agent and its pattern rows (by rank), or None."""
    header = (
        conn.execute(
            select(snapshots)
            .where(snapshots.c.agent_id == agent_id)
            .order_by(snapshots.c.snapshot_id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    if header is None:
        return None
    rows = conn.execute(
        select(snapshot_patterns)
        .where(snapshot_patterns.c.snapshot_id == header["snapshot_id"])
        .order_by(snapshot_patterns.c.rank)
    ).all()
    columns = [c.name for c in snapshot_patterns.c]
    return dict(header), pd.DataFrame([tuple(r) for r in rows], columns=columns)


_HINT_HEADER = ("agent_id", "through_seq", "computed_at_us", "time_range_days", "as_of_us",
                "plans", "successes", "min_support", "fdr")  # fmt: skip
_HINT_SET = ("max_prefix", "min_support", "fdr")


def latest_hints(conn: Connection, agent_id: str) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """The newest snapshot of an agent and its hint rows (by rank), in one query; or None.

    The header holds the snapshot's window and counts, and its hint options as
    ``hint_max_prefix``, ``hint_min_support`` and ``hint_fdr`` (None for a snapshot
    stored without hints, which has no rows).
    """
    newest = (
        select(func.max(snapshots.c.snapshot_id))
        .where(snapshots.c.agent_id == agent_id)
        .scalar_subquery()
    )
    columns = [
        *[snapshots.c[name] for name in _HINT_HEADER],
        *[snapshot_hint_sets.c[name].label(f"hint_{name}") for name in _HINT_SET],
        *[snapshot_hints.c[name] for name in _HINT_COLUMNS],
    ]
    query = (
        select(*columns)
        .select_from(snapshots)
        .outerjoin(snapshot_hint_sets, snapshot_hint_sets.c.snapshot_id == snapshots.c.snapshot_id)
        .outerjoin(snapshot_hints, snapshot_hints.c.snapshot_id == snapshots.c.snapshot_id)
        .where(snapshots.c.snapshot_id == newest)
        .order_by(snapshot_hints.c.rank)
    )
    found = conn.execute(query).all()
    if not found:
        return None
    width = len(_HINT_HEADER) + len(_HINT_SET)
    names = [*_HINT_HEADER, *(f"hint_{name}" for name in _HINT_SET)]
    header = dict(zip(names, found[0][:width], strict=True))
    rows = [tuple(r[width:]) for r in found if r[width] is not None]  # rank is never NULL
    return header, pd.DataFrame(rows, columns=_HINT_COLUMNS)


def agents_behind(conn: Connection) -> dict[str, int]:
    """Agents with plans newer than their latest snapshot: agent -> their last seq."""
    covered = (
        select(snapshots.c.agent_id, func.max(snapshots.c.through_seq).label("through"))
        .group_by(snapshots.c.agent_id)
        .subquery()
    )
    last = func.max(plans.c.seq)
    query = (
        select(plans.c.agent_id, last)
        .outerjoin(covered, covered.c.agent_id == plans.c.agent_id)
        .group_by(plans.c.agent_id, covered.c.through)
        .having(last > func.coalesce(covered.c.through, 0))
    )
    return {agent: int(seq) for agent, seq in conn.execute(query).all()}
