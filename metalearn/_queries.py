"""Every analysis query, in one place, and the window they share.

Queries run on the warehouse's tables (``plans``, ``steps``, ``tools``; timestamps are
naive UTC) through a :class:`~metalearn._warehouse.Snapshot`. Keeping them together is
what lets them move to a portable expression layer later without touching the analyses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from metalearn._errors import InvalidArgumentError

__all__ = ["Window"]


@dataclass(frozen=True)
class Window:
    """Which plans an analysis covers: one agent (or all) finishing in ``(start, end]``.

    ``start`` is ``None`` for the whole history; ``end`` is ``as_of`` (default: now).
    """

    agent_id: str | None
    time_range_days: float | None
    as_of: datetime
    start: datetime | None

    @classmethod
    def build(
        cls, agent_id: str | None, time_range_days: float | None, as_of: datetime | None
    ) -> Window:
        if agent_id is not None and (not isinstance(agent_id, str) or not agent_id):
            raise InvalidArgumentError(
                f"agent_id must be a non-empty string or None (all agents), not {agent_id!r}"
            )
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
        if as_of is None:
            as_of = datetime.now(UTC)
        elif not isinstance(as_of, datetime) or as_of.utcoffset() is None:
            raise InvalidArgumentError(
                f"as_of must be a timezone-aware datetime, not {as_of!r}; "
                "e.g. datetime.now(timezone.utc)"
            )
        as_of = as_of.astimezone(UTC)
        start = None if time_range_days is None else as_of - timedelta(days=time_range_days)
        return cls(agent_id, time_range_days, as_of, start)

    @property
    def params(self) -> dict[str, Any]:
        """Query parameters (naive UTC, as the warehouse stores timestamps)."""
        return {
            "agent_id": self.agent_id,
            "start": None if self.start is None else self.start.replace(tzinfo=None),
            "end": self.as_of.replace(tzinfo=None),
        }


_WINDOW = """
WITH window_plans AS (
    SELECT * FROM plans
    WHERE ($agent_id::VARCHAR IS NULL OR agent_id = $agent_id::VARCHAR)
      AND ($start::TIMESTAMP IS NULL OR finished_at > $start::TIMESTAMP)
      AND finished_at <= $end::TIMESTAMP
),
window_steps AS (
    SELECT s.*, p.succeeded FROM steps AS s JOIN window_plans AS p USING (seq)
)
"""

_PLAN_FIGURES = """
    count(*) AS plans,
    count(*) FILTER (WHERE succeeded) AS successes,
    quantile_cont(duration_s, 0.5) AS median_duration_s,
    quantile_cont(duration_s, 0.95) AS p95_duration_s
"""

OVERALL = _WINDOW + f"SELECT {_PLAN_FIGURES} FROM window_plans"

BY_AGENT = _WINDOW + f"SELECT agent_id, {_PLAN_FIGURES} FROM window_plans GROUP BY agent_id"

BY_GOAL_TYPE = (
    _WINDOW
    + f"SELECT coalesce(goal_type, '(none)') AS goal_type, {_PLAN_FIGURES} "
    + "FROM window_plans GROUP BY ALL"
)

BY_DAY = (
    _WINDOW
    + """
SELECT CAST(finished_at AS DATE) AS day,
       count(*) AS plans,
       count(*) FILTER (WHERE succeeded) AS successes
FROM window_plans GROUP BY ALL ORDER BY day
"""
)

BY_TOOL = (
    _WINDOW
    + """
SELECT t.tool,
       count(*) AS calls,
       count(*) FILTER (WHERE s.status = 'error') AS errors,
       count(DISTINCT s.seq) AS plans,
       count(DISTINCT s.seq) FILTER (WHERE s.succeeded) AS successes,
       quantile_cont(s.duration_ms, 0.5) AS median_duration_ms,
       quantile_cont(s.duration_ms, 0.95) AS p95_duration_ms
FROM window_steps AS s JOIN tools AS t USING (tool_id)
GROUP BY t.tool
"""
)

# Masks, in order: quoted values, UUIDs, tokens mixing letters and digits (ids such as
# req_33080, u-48213, 0x1f), then numbers; so one failure reads the same every time.
_NORMALISED_ERROR = r"""
trim(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
    coalesce(s.error, '(no message)'),
    '''[^'']*''|"[^"]*"', '<str>', 'g'),
    '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}', '<id>', 'g'),
    '\b(?:[A-Za-z_]+[-_]?[0-9]|[0-9]+[A-Za-z_])[A-Za-z0-9_-]*', '<id>', 'g'),
    '[0-9]+(?:\.[0-9]+)?', '<n>', 'g'),
    '\s+', ' ', 'g'))
"""

FAILURE_REASONS = (
    _WINDOW
    + f"""
SELECT t.tool, {_NORMALISED_ERROR} AS error,
       count(*) AS count,
       count(DISTINCT s.seq) AS plans
FROM window_steps AS s JOIN tools AS t USING (tool_id)
WHERE s.status = 'error'
GROUP BY ALL
ORDER BY count DESC, plans DESC, t.tool, error
"""
)

PATTERN_PLANS = _WINDOW + "SELECT seq, succeeded FROM window_plans ORDER BY seq"

PATTERN_STEPS = _WINDOW + "SELECT seq, tool_id FROM window_steps ORDER BY seq, step_index"

TOOLS = "SELECT tool_id, tool FROM tools ORDER BY tool_id"
