"""SQLAlchemy Core tables of the history store.

Timestamps are stored as integer microseconds since the Unix epoch (UTC) in columns named
``*_us``: exact, portable across SQLite and PostgreSQL, and cheap to bulk-read into Arrow.

``seq`` is not a database sequence. Sequences hand out numbers at insert time, so two
concurrent writers can commit 6 before 5 and a reader whose watermark already moved to 6
would skip 5 forever. Instead every writer increments the single row of
``metalearn_counters`` as the first statement of its transaction: that row lock (SQLite:
the database write lock) is held until commit, so ``seq`` order is commit order.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from metalearn._types import MAX_NAME_LENGTH

__all__ = ["counters", "metadata", "plans", "steps"]

metadata = MetaData()

PLAN_COUNTER = "plans"

counters = Table(
    "metalearn_counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

plans = Table(
    "metalearn_plans",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("plan_id", String(MAX_NAME_LENGTH), nullable=False, unique=True),
    Column("agent_id", String(MAX_NAME_LENGTH), nullable=False),
    Column("goal_type", String(MAX_NAME_LENGTH)),
    Column("status", String(16), nullable=False),
    Column("started_at_us", BigInteger, nullable=False),
    Column("finished_at_us", BigInteger, nullable=False),
    Column("reward", Float),
    Column("error", Text),
    Column("priority", Integer, nullable=False, default=0),
    Index("ix_metalearn_plans_agent_seq", "agent_id", "seq"),
    Index("ix_metalearn_plans_agent_finished", "agent_id", "finished_at_us"),
    Index("ix_metalearn_plans_finished", "finished_at_us"),
)

steps = Table(
    "metalearn_steps",
    metadata,
    Column(
        "plan_seq",
        BigInteger,
        ForeignKey("metalearn_plans.seq", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("step_index", Integer, primary_key=True, autoincrement=False),
    Column("tool", String(MAX_NAME_LENGTH), nullable=False),
    Column("status", String(16), nullable=False),
    Column("duration_ms", Float),
    Column("error", Text),
    Index("ix_metalearn_steps_tool", "tool"),
)
