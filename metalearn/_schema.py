"""SQLAlchemy Core tables of the history store.

Timestamps are stored as integer microseconds since the Unix epoch (UTC) in columns named
``*_us``: exact, portable across SQLite and PostgreSQL, and cheap to bulk-read into Arrow.

``seq`` is not a database sequence. Sequences hand out numbers at insert time, so two
concurrent writers can commit 6 before 5 and a reader whose watermark already moved to 6
would skip 5 forever. Instead every writer increments the single row of
``metalearn_counters`` as the first statement of its transaction: that row lock (SQLite:
the database write lock) is held until commit, so ``seq`` order is commit order.

``metalearn_jobs`` is the durable analysis queue: one row per agent, written in the same
transaction as the agent's plans and claimed by workers under a lease (see
:mod:`metalearn._jobs` for its states and the claim protocol).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
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

__all__ = [
    "ADDED_COLUMNS",
    "JOB_STATES",
    "counters",
    "job_runs",
    "jobs",
    "metadata",
    "plans",
    "snapshot_hint_sets",
    "snapshot_hints",
    "snapshot_patterns",
    "snapshots",
    "steps",
]

metadata = MetaData()

PLAN_COUNTER = "plans"
STORE_ID = "store_id"
"""The counters row holding the store's identity (random, drawn when the store is created)."""

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

# Background analysis results, so a planner in another process can read the latest
# patterns. Old snapshots are pruned per agent; pattern rows go with their snapshot.
_Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

snapshots = Table(
    "metalearn_snapshots",
    metadata,
    Column("snapshot_id", _Id, primary_key=True, autoincrement=True),
    Column("agent_id", String(MAX_NAME_LENGTH), nullable=False),
    Column("through_seq", BigInteger, nullable=False),
    Column("computed_at_us", BigInteger, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("time_range_days", Float),
    Column("as_of_us", BigInteger, nullable=False),
    Column("plans", Integer, nullable=False),
    Column("successes", Integer, nullable=False),
    Column("patterns_tested", Integer, nullable=False),
    Column("patterns_significant", Integer, nullable=False),
    Column("min_length", Integer, nullable=False),
    Column("max_length", Integer, nullable=False),
    Column("min_support", Integer, nullable=False),
    Column("fdr", Float, nullable=False),
    Column("analysis", Text, nullable=False),
    # Added with stratified patterns; NULL in snapshots written before (pooled ones).
    Column("stratify_by", String(32)),
    Index("ix_metalearn_snapshots_agent", "agent_id", "snapshot_id"),
)

snapshot_patterns = Table(
    "metalearn_snapshot_patterns",
    metadata,
    Column(
        "snapshot_id",
        _Id,
        ForeignKey("metalearn_snapshots.snapshot_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("rank", Integer, primary_key=True, autoincrement=False),
    Column("pattern", Text, nullable=False),
    Column("length", Integer, nullable=False),
    Column("plans", Integer, nullable=False),
    Column("successes", Integer, nullable=False),
    Column("success_rate", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("lift", Float),
    Column("p_value", Float),
    Column("q_value", Float),
    Column("significant", Boolean, nullable=False),
    Column("direction", String(8), nullable=False),
    # Added with stratified patterns and findings: NULL in rows written before (see
    # ADDED_COLUMNS); nullable, so an older store gains them by ALTER TABLE.
    Column("mh_odds_ratio", Float),
    Column("mh_ci_low", Float),
    Column("mh_ci_high", Float),
    Column("cmh_p_value", Float),
    Column("homogeneity_p_value", Float),
    Column("strata", Integer),
    Column("simpson", Boolean),
    Column("plans_needed", BigInteger),
    Column("explained_by", Text),
    Column("finding", Boolean),
)

# Next-step hints stored with a snapshot (in the same transaction): one hint set per
# snapshot that has hints (its options), one row per (prefix, next tool). A snapshot
# written before these tables existed has neither: it reads back as an empty hint table.
snapshot_hint_sets = Table(
    "metalearn_snapshot_hint_sets",
    metadata,
    Column(
        "snapshot_id",
        _Id,
        ForeignKey("metalearn_snapshots.snapshot_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("max_prefix", Integer, nullable=False),
    Column("min_support", Integer, nullable=False),
    Column("fdr", Float, nullable=False),
)

snapshot_hints = Table(
    "metalearn_snapshot_hints",
    metadata,
    Column(
        "snapshot_id",
        _Id,
        ForeignKey("metalearn_snapshots.snapshot_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("rank", Integer, primary_key=True, autoincrement=False),
    Column("prefix", Text, nullable=False),  # JSON list of tool names
    Column("next_tool", Text),  # NULL: the plans that ended right after the prefix
    Column("plans", Integer, nullable=False),
    Column("successes", Integer, nullable=False),
    Column("success_rate", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("lift", Float),
    Column("p_value", Float),
    Column("q_value", Float),
    Column("significant", Boolean, nullable=False),
    Column("low_n", Boolean, nullable=False),
)

ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    snapshots.name: ("stratify_by",),
    snapshot_patterns.name: (
        "mh_odds_ratio", "mh_ci_low", "mh_ci_high", "cmh_p_value", "homogeneity_p_value",
        "strata", "simpson", "plans_needed", "explained_by", "finding",
    ),
}  # fmt: skip
"""Nullable columns added after the first release: a store created before lacks them, and
``Database.ensure_schema`` adds them (``ALTER TABLE ... ADD COLUMN``)."""

JOB_STATES = ("pending", "running", "failed", "done")
"""The states of an analysis job (the ``state`` column of :data:`jobs`)."""

# One row per agent: new plans coalesce into it, so pending jobs never outnumber agents.
# Times are microseconds. Owner and lease are NULL unless running; claimed_at is the last claim.
jobs = Table(
    "metalearn_jobs",
    metadata,
    Column("agent_id", String(MAX_NAME_LENGTH), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    # The first enqueue of the waiting work, kept while plans coalesce into it.
    Column("enqueued_at_us", BigInteger, nullable=False),
    # The agent's newest plan: a run is done only if it covered this seq.
    Column("last_seq", BigInteger, nullable=False),
    Column("plans", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("not_before_us", BigInteger, nullable=False),  # retry backoff
    Column("owner", String(MAX_NAME_LENGTH)),
    Column("lease_expires_at_us", BigInteger),
    Column("claimed_at_us", BigInteger),
    # Plans enqueued while the job ran (which the run may have missed) and the first's time.
    Column("late_plans", BigInteger, nullable=False),
    Column("late_since_us", BigInteger),
    Column("finished_at_us", BigInteger),  # the last run that succeeded, or the final failure
    Column("error", Text),
    # Counts re-arms: a done or failed job that a new plan makes pending again.
    Column("generation", BigInteger, nullable=False),
    CheckConstraint(
        "state IN (" + ", ".join(f"'{s}'" for s in JOB_STATES) + ")",
        name="ck_metalearn_jobs_state",
    ),
)
Index("ix_metalearn_jobs_claim", jobs.c.state, jobs.c.priority.desc(), jobs.c.enqueued_at_us)
Index("ix_metalearn_jobs_owner", jobs.c.owner)

# The log of finished job runs (one row per claimed batch), for the queue's metrics in any
# process. Kept short: the newest rows only (see metalearn._job_runs).
job_runs = Table(
    "metalearn_job_runs",
    metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(MAX_NAME_LENGTH), nullable=False),
    Column("agents", Text, nullable=False),  # a JSON list, in claim order
    Column("agent_count", Integer, nullable=False),
    Column("plans", BigInteger, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("enqueued_at_us", BigInteger, nullable=False),  # the batch's oldest waiting plan
    Column("claimed_at_us", BigInteger, nullable=False),
    Column("finished_at_us", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("analyses", Integer, nullable=False),  # agents whose analysis was stored
    Column("error", Text),
)
Index("ix_metalearn_job_runs_finished", job_runs.c.finished_at_us)
