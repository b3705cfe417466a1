"""Every analysis query, in one place, and the options they share.

Queries run on the warehouse's tables (``plans``, ``steps``, ``tools``; timestamps are
naive UTC) through a :class:`~metalearn._warehouse.Snapshot`. Keeping them together is
what lets them move to a portable expression layer later without touching the analyses.
The options of an analysis are checked and frozen once, where a public method receives
them: :class:`Window` (which plans) and :class:`PatternOptions` (which patterns).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from metalearn._checks import positive_int
from metalearn._errors import InvalidArgumentError

__all__ = [
    "CHANGE_GROUPS",
    "MAX_GAP",
    "STRATA",
    "BackgroundOptions",
    "ChangeOptions",
    "HintOptions",
    "PatternOptions",
    "StratifyBy",
    "Window",
    "pattern_strata",
    "window_days",
]

StratifyBy = Literal["goal_type", "agent_id"] | None
MAX_GAP = 10
"""The largest ``max_gap`` (occurrences to track grow about (max_gap + 1)-fold per tool)."""
STRATA: tuple[str | None, ...] = ("goal_type", "agent_id", None)
"""The values ``stratify_by`` takes: the plan column whose values are the strata, or None."""


def window_days(time_range_days: float | None) -> float | None:
    """``time_range_days`` if it is a number > 0 or None, else :class:`InvalidArgumentError`."""
    if time_range_days is not None and (
        isinstance(time_range_days, bool)
        or not isinstance(time_range_days, int | float)
        or not math.isfinite(time_range_days)
        or time_range_days <= 0
    ):
        raise InvalidArgumentError(
            f"time_range_days must be a number > 0, or None for the whole history, "
            f"not {time_range_days!r}"
        )
    return time_range_days


@dataclass(frozen=True)
class Window:
    """Which plans an analysis covers, and whether results are split per agent.

    Plans of ``agents`` (``None``: every agent) finishing in ``(start, end]``; ``start`` is
    ``None`` for the whole history and ``as_of`` ends the window (default: now). With
    ``per_agent`` every query groups by agent first, so a batch of agents costs one query
    per table instead of one per agent.
    """

    agents: tuple[str, ...] | None
    time_range_days: float | None
    as_of: datetime
    start: datetime | None
    per_agent: bool = False

    @classmethod
    def build(
        cls,
        agent_id: str | None,
        time_range_days: float | None,
        as_of: datetime | None,
        *,
        agents: tuple[str, ...] | None = None,
    ) -> Window:
        """A window for one agent (or all), or per agent for ``agents`` when given."""
        for name in [agent_id] if agents is None else list(agents):
            if name is not None and (not isinstance(name, str) or not name):
                raise InvalidArgumentError(
                    f"agent_id must be a non-empty string or None (all agents), not {name!r}"
                )
        window_days(time_range_days)
        if as_of is None:
            as_of = datetime.now(UTC)
        elif not isinstance(as_of, datetime) or as_of.utcoffset() is None:
            raise InvalidArgumentError(
                f"as_of must be a timezone-aware datetime, not {as_of!r}; "
                "e.g. datetime.now(timezone.utc)"
            )
        try:
            as_of = as_of.astimezone(UTC)
            start = None if time_range_days is None else as_of - timedelta(days=time_range_days)
        except OverflowError:  # before year 1 or after 9999
            raise InvalidArgumentError(
                f"the window of {time_range_days!r} days ending at {as_of.isoformat()} "
                "does not fit in the calendar (years 1 to 9999); use a shorter window, "
                "or time_range_days=None for the whole history"
            ) from None
        if agents is not None:
            return cls(tuple(agents), time_range_days, as_of, start, per_agent=True)
        return cls(None if agent_id is None else (agent_id,), time_range_days, as_of, start)

    @property
    def agent_id(self) -> str | None:
        """The single agent of a one-agent window, else ``None``."""
        return self.agents[0] if self.agents and len(self.agents) == 1 else None

    @property
    def groups(self) -> list[str | None]:
        """The group keys results come in: each agent, or one ``None`` group."""
        return list(self.agents or ()) if self.per_agent else [None]

    @property
    def params(self) -> dict[str, Any]:
        """Query parameters (naive UTC, as the warehouse stores timestamps)."""
        return {
            "agents": None if self.agents is None else list(self.agents),
            "start": None if self.start is None else self.start.replace(tzinfo=None),
            "end": self.as_of.replace(tzinfo=None),
        }

    def described(self, through_seq: int, key: str | None = None) -> dict[str, Any]:
        """What a result says of its window: the agent (group ``key`` when per agent),
        ``time_range_days``, ``as_of`` and the highest ``seq`` it covers."""
        return {
            "agent_id": key if self.per_agent else self.agent_id,
            "time_range_days": self.time_range_days,
            "as_of": self.as_of,
            "through_seq": through_seq,
        }

    def sql(self, query: str) -> str:
        """A query with its ``{group}`` key: the agent, or one constant group."""
        return query.format(group="agent_id" if self.per_agent else "NULL::VARCHAR")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class PatternOptions:
    """Which tool sequences a pattern analysis mines and how it judges them.

    Sequences of ``min_length..max_length`` tools found in at least ``min_support`` plans,
    with at most ``max_gap`` other steps between consecutive tools (0: contiguous),
    significant at false discovery rate ``fdr``, their effects estimated within the strata
    of ``stratify_by`` (``"goal_type"``, ``"agent_id"``, or None for one pooled table).
    The fields are named as the keyword arguments of the public methods that take them.

    >>> options = PatternOptions.build(min_length=1, max_length=3, min_support=20, fdr=0.05)
    >>> options.stratify_by, options.max_gap
    ('goal_type', 0)
    >>> PatternOptions.build(min_length=2, max_length=1, min_support=20, fdr=0.05)
    Traceback (most recent call last):
    ...
    metalearn._errors.InvalidArgumentError: max_length must be an integer >= min_length (2), not 1
    """

    min_length: int
    max_length: int
    min_support: int
    fdr: float
    stratify_by: StratifyBy = "goal_type"
    max_gap: int = 0

    @classmethod
    def build(
        cls,
        *,
        min_length: int,
        max_length: int,
        min_support: int,
        fdr: float,
        stratify_by: StratifyBy = "goal_type",
        max_gap: int = 0,
    ) -> PatternOptions:
        """The options, checked: one clear error for the first value out of range."""
        if not _whole(min_length) or min_length < 1:
            raise InvalidArgumentError(f"min_length must be an integer >= 1, not {min_length!r}")
        if not _whole(max_length) or max_length < min_length:
            raise InvalidArgumentError(
                f"max_length must be an integer >= min_length ({min_length}), not {max_length!r}"
            )
        if not _whole(min_support) or min_support < 1:
            raise InvalidArgumentError(
                "min_support must be an integer >= 1 (plans containing a pattern), "
                f"not {min_support!r}"
            )
        if isinstance(fdr, bool) or not isinstance(fdr, int | float) or not 0 < fdr <= 1:
            raise InvalidArgumentError(f"fdr must be a number in (0, 1], not {fdr!r}")
        if not (stratify_by is None or (isinstance(stratify_by, str) and stratify_by in STRATA)):
            raise InvalidArgumentError(
                'stratify_by must be "goal_type", "agent_id" or None (one pooled table), '
                f"not {stratify_by!r}"
            )
        if not _whole(max_gap) or not 0 <= max_gap <= MAX_GAP:
            raise InvalidArgumentError(
                f"max_gap must be an integer from 0 (contiguous) to {MAX_GAP} (other steps "
                f"allowed between consecutive tools of a pattern), not {max_gap!r}"
            )
        return cls(min_length, max_length, min_support, fdr, stratify_by, int(max_gap))


@dataclass(frozen=True)
class BackgroundOptions:
    """What every background analysis (of an ExecutionService or a worker) runs with.

    The window (the last ``time_range_days``, ending when the analysis runs), the pattern
    options and how many snapshots per agent the store keeps; checked once, when the
    service is made.
    """

    time_range_days: float | None
    patterns: PatternOptions
    keep_snapshots: int

    @classmethod
    def build(
        cls,
        *,
        time_range_days: float | None = 30,
        min_length: int = 1,
        max_length: int = 4,
        min_support: int = 20,
        fdr: float = 0.05,
        keep_snapshots: int = 20,
        stratify_by: StratifyBy = "goal_type",
    ) -> BackgroundOptions:
        """The options, checked (the defaults are those of ``snapshot_agents_sync``).

        >>> BackgroundOptions.build(min_support=5).keywords()["min_support"]
        5
        """
        return cls(
            time_range_days=window_days(time_range_days),
            patterns=PatternOptions.build(
                min_length=min_length,
                max_length=max_length,
                min_support=min_support,
                fdr=fdr,
                stratify_by=stratify_by,
            ),
            keep_snapshots=positive_int(
                "keep_snapshots", keep_snapshots, what="snapshots per agent"
            ),
        )

    def keywords(self) -> dict[str, Any]:
        """These options as keyword arguments of ``MetaLearningService.snapshot_agents``."""
        return {
            "time_range_days": self.time_range_days,
            "min_length": self.patterns.min_length,
            "max_length": self.patterns.max_length,
            "min_support": self.patterns.min_support,
            "fdr": self.patterns.fdr,
            "stratify_by": self.patterns.stratify_by,
            "keep_snapshots": self.keep_snapshots,
        }

    def command_args(self) -> list[str]:
        """These options as ``metalearn worker`` flags.

        >>> BackgroundOptions.build(time_range_days=None, fdr=0.1).command_args()[:2]
        ['--days', 'all']
        """
        days = "all" if self.time_range_days is None else repr(self.time_range_days)
        return [
            "--days", days,
            "--min-length", str(self.patterns.min_length),
            "--max-length", str(self.patterns.max_length),
            "--min-support", str(self.patterns.min_support),
            "--fdr", repr(self.patterns.fdr),
            "--keep-snapshots", str(self.keep_snapshots),
        ]  # fmt: skip


def _check_fdr(fdr: object) -> float:
    if isinstance(fdr, bool) or not isinstance(fdr, int | float) or not 0 < fdr <= 1:
        raise InvalidArgumentError(f"fdr must be a number in (0, 1], not {fdr!r}")
    return float(fdr)


@dataclass(frozen=True)
class HintOptions:
    """How next-step hints are counted and judged.

    Prefixes of up to ``max_prefix`` tools (a hint table; a single prefix's hints use its
    length), next tools seen in at least ``min_support`` plans, significant at false
    discovery rate ``fdr``.

    >>> HintOptions.build(max_prefix=3, min_support=10, fdr=0.05)
    HintOptions(max_prefix=3, min_support=10, fdr=0.05)
    >>> HintOptions.build(max_prefix=0, min_support=10, fdr=0.05)
    Traceback (most recent call last):
    ...
    metalearn._errors.InvalidArgumentError: max_prefix must be an integer >= 1 (tools), not 0
    """

    max_prefix: int
    min_support: int
    fdr: float

    @classmethod
    def build(cls, *, max_prefix: int, min_support: int, fdr: float) -> HintOptions:
        """The options, checked: one clear error for the first value out of range."""
        max_prefix = positive_int("max_prefix", max_prefix, what="tools")
        min_support = positive_int("min_support", min_support, what="plans")
        return cls(max_prefix, min_support, _check_fdr(fdr))

    @staticmethod
    def prefix(prefix: Sequence[str]) -> tuple[str, ...]:
        """A prefix of tool names, checked: a list or tuple of non-empty strings.

        >>> HintOptions.prefix(["search", "fetch"])
        ('search', 'fetch')
        >>> HintOptions.prefix(["search", ""])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        metalearn._errors.InvalidArgumentError: prefix[1] is '': a prefix is a list of ...
        """
        if isinstance(prefix, str | bytes) or not isinstance(prefix, Sequence):
            raise InvalidArgumentError(
                f"prefix must be a list of tool names (e.g. ['search', 'fetch']), or [] for "
                f"the first step, not {prefix!r}"
            )
        for position, tool in enumerate(prefix):
            if not isinstance(tool, str) or not tool:
                raise InvalidArgumentError(
                    f"prefix[{position}] is {tool!r}: a prefix is a list of non-empty tool "
                    "names (e.g. ['search', 'fetch']), or [] for the first step"
                )
        return tuple(prefix)

    @staticmethod
    def goal_type(goal_type: str | None) -> str | None:
        """A goal type to filter on (``"(none)"``: plans without one), or None for all."""
        if goal_type is not None and (not isinstance(goal_type, str) or not goal_type):
            raise InvalidArgumentError(
                f"goal_type must be a non-empty string or None (all goal types), not {goal_type!r}"
            )
        return goal_type


CHANGE_GROUPS = ("agent_id", "goal_type", "tool")
"""What ``detect_changes`` can group plans by."""


@dataclass(frozen=True)
class ChangeOptions:
    """Which groups change detection looks at, and how it judges them.

    Groups of plans by ``by`` (one of :data:`CHANGE_GROUPS`; a tool's group is the plans
    that call it) with at least ``min_plans`` plans, each tested with ``permutations``
    random reorderings, significant at false discovery rate ``fdr`` across groups.

    >>> ChangeOptions.build(by="goal_type", min_plans=200, fdr=0.05, permutations=999)
    ChangeOptions(by='goal_type', min_plans=200, fdr=0.05, permutations=999)
    >>> ChangeOptions.build(by="day", min_plans=2, fdr=0.05, permutations=9)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    metalearn._errors.InvalidArgumentError: by must be one of ['agent_id', 'goal_type', 'tool'], ...
    """

    by: str
    min_plans: int
    fdr: float
    permutations: int

    @classmethod
    def build(cls, *, by: str, min_plans: int, fdr: float, permutations: int) -> ChangeOptions:
        """The options, checked: one clear error for the first value out of range."""
        if by not in CHANGE_GROUPS:
            raise InvalidArgumentError(f"by must be one of {list(CHANGE_GROUPS)}, not {by!r}")
        if not _whole(min_plans) or min_plans < 2:
            raise InvalidArgumentError(
                f"min_plans must be an integer >= 2 (plans in a group), not {min_plans!r}"
            )
        permutations = positive_int("permutations", permutations, what="random reorderings")
        return cls(by, min_plans, _check_fdr(fdr), permutations)


_WINDOW = """
WITH window_plans AS (
    SELECT {group} AS group_key, * FROM plans
    WHERE ($agents::VARCHAR[] IS NULL OR list_contains($agents::VARCHAR[], agent_id))
      AND ($start::TIMESTAMP IS NULL OR finished_at > $start::TIMESTAMP)
      AND finished_at <= $end::TIMESTAMP
),
window_steps AS (  -- the same filter: steps carry their plan's agent and finish time
    SELECT {group} AS group_key, * FROM steps
    WHERE ($agents::VARCHAR[] IS NULL OR list_contains($agents::VARCHAR[], agent_id))
      AND ($start::TIMESTAMP IS NULL OR finished_at > $start::TIMESTAMP)
      AND finished_at <= $end::TIMESTAMP
)
"""

PATTERN_WINDOW = _WINDOW
"""The window's plans and steps as CTEs (``window_plans``, ``window_steps``), for queries
built from parts (:mod:`metalearn._pattern_sql`)."""

_PLAN_FIGURES = """
    count(*) AS plans,
    count(*) FILTER (WHERE succeeded) AS successes,
    quantile_cont(duration_s, 0.5) AS median_duration_s,
    quantile_cont(duration_s, 0.95) AS p95_duration_s
"""

# Every query's first column is group_key (see Window.sql); braces are doubled for format.
OVERALL = _WINDOW + f"SELECT group_key, {_PLAN_FIGURES} FROM window_plans GROUP BY ALL"

BY_AGENT = _WINDOW + f"SELECT group_key, agent_id, {_PLAN_FIGURES} FROM window_plans GROUP BY ALL"

BY_GOAL_TYPE = (
    _WINDOW
    + "SELECT group_key, coalesce(goal_type, '(none)') AS goal_type, "
    + f"{_PLAN_FIGURES} FROM window_plans GROUP BY ALL"
)

BY_DAY = (
    _WINDOW
    + """
SELECT group_key, CAST(finished_at AS DATE) AS day,
       count(*) AS plans,
       count(*) FILTER (WHERE succeeded) AS successes
FROM window_plans GROUP BY ALL ORDER BY group_key, day
"""
)

BY_TOOL = (
    _WINDOW
    + """
SELECT group_key, t.tool, calls, errors, plans, successes,
       quantiles[1] AS median_duration_ms, quantiles[2] AS p95_duration_ms
FROM (
    SELECT group_key, tool_id,
           count(*) AS calls,
           count(*) FILTER (WHERE status = 'error') AS errors,
           count(*) FILTER (WHERE first_in_plan) AS plans,
           count(*) FILTER (WHERE first_in_plan AND succeeded) AS successes,
           quantile_cont(duration_ms, [0.5, 0.95]) AS quantiles
    FROM window_steps GROUP BY ALL
) JOIN tools AS t USING (tool_id)
"""
)

FAILURE_REASONS = (
    _WINDOW
    + """
SELECT s.group_key, t.tool, s.error_norm AS error,
       count(*) AS count,
       count(DISTINCT s.seq) AS plans
FROM window_steps AS s JOIN tools AS t USING (tool_id)
WHERE s.status = 'error'
GROUP BY ALL
ORDER BY s.group_key, count DESC, plans DESC, t.tool, error
"""
)

PATTERN_PLANS = (
    _WINDOW
    + "SELECT group_key, count(*) AS plans, count(*) FILTER (WHERE succeeded) AS successes "
    + "FROM window_plans GROUP BY ALL"
)

# No ORDER BY: steps are stored in (seq, step_index) order and a filtered scan keeps it
# (DuckDB preserves insertion order); the caller checks and sorts only if it must.
PATTERN_STEPS = (
    _WINDOW
    + "SELECT group_key, seq, step_index, tool_id, succeeded, first_in_plan FROM window_steps"
)

# Every plan of the window with its stratum (the column named by stratify_by). No ORDER
# BY: plans are stored in seq order and a filtered scan keeps it; the caller checks.
_PATTERN_STRATA = (
    _WINDOW + "SELECT group_key, seq, succeeded, {stratum} AS stratum FROM window_plans"
)


def pattern_strata(stratify_by: StratifyBy) -> str:
    """The plans query of a pattern analysis, its stratum the ``stratify_by`` column.

    >>> "NULL::VARCHAR AS stratum" in pattern_strata(None)
    True
    """
    stratum = "NULL::VARCHAR" if stratify_by is None else stratify_by
    return _PATTERN_STRATA.format(group="{group}", stratum=stratum)


TOOLS = "SELECT tool_id, tool FROM tools ORDER BY tool_id"

# Next-step hints: the plans of the window (of one goal type, when $goal_type is given:
# '(none)' for plans without one) and each plan's first steps, up to step index $depth.
HINT_GOAL = "($goal_type::VARCHAR IS NULL OR coalesce(goal_type, '(none)') = $goal_type::VARCHAR)"
"""The plans of one goal type (``$goal_type``; ``'(none)'``: without one), or all (NULL)."""
HINT_PLANS = (
    _WINDOW
    + "SELECT group_key, count(*) AS plans, count(*) FILTER (WHERE succeeded) AS successes "
    + f"FROM window_plans WHERE {HINT_GOAL} GROUP BY ALL"
)
HINT_STEPS = (
    _WINDOW
    + "SELECT group_key, seq, step_index, tool_id, succeeded FROM window_steps "
    + "WHERE step_index <= $depth AND ($goal_type::VARCHAR IS NULL OR seq IN "
    + f"(SELECT seq FROM window_plans WHERE {HINT_GOAL}))"
)

# Change detection: each group's plans in finish order, counted in $bins equal slices of
# the group's time span (first to last finish; a slice is `width` microseconds, integer
# arithmetic that cannot overflow). Hash aggregates only: no window sort of millions of
# rows; the driver gets at most $bins rows per group, in time order.
# {members} is the (grp, us: finish time in epoch microseconds, succeeded) rows of one grouping.
_CHANGE_BINS = """
, members AS ({members}),
spans AS (
    SELECT grp, min(us) AS t0, (max(us) - min(us)) // $bins + 1 AS width
    FROM members GROUP BY grp HAVING count(*) >= $min_plans
)
SELECT m.grp AS "group",
       (m.us - s.t0) // s.width AS bin,
       count(*) AS plans,
       count(*) FILTER (WHERE m.succeeded) AS successes,
       make_timestamp(min(m.us)) AS first_at,
       make_timestamp(max(m.us)) AS last_at
FROM members AS m JOIN spans AS s USING (grp)
GROUP BY ALL ORDER BY "group", bin
"""
_US = "epoch_us(finished_at) AS us"
_CHANGE_MEMBERS = {
    "agent_id": f"SELECT agent_id AS grp, {_US}, succeeded FROM window_plans",
    "goal_type": f"SELECT coalesce(goal_type, '(none)') AS grp, {_US}, succeeded FROM window_plans",
    "tool": f"SELECT tool_id AS grp, {_US}, succeeded FROM window_steps WHERE first_in_plan",
}
CHANGE_BINS = {
    by: _WINDOW.rstrip() + _CHANGE_BINS.replace("{members}", members)
    for by, members in _CHANGE_MEMBERS.items()
}
"""The binning query of each ``by`` of :data:`CHANGE_GROUPS` (run through ``Window.sql``)."""
