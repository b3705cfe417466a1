"""Success rates, durations, failure reasons and trends of a window of plans."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from metalearn import _queries as q
from metalearn._queries import Window
from metalearn._stats import wilson_interval
from metalearn._warehouse import Snapshot

__all__ = ["ExecutionAnalysis", "analyze"]

RATE_COLUMNS = ["plans", "successes", "success_rate", "ci_low", "ci_high"]
PLAN_COLUMNS = [*RATE_COLUMNS, "median_duration_s", "p95_duration_s"]
TOOL_COLUMNS = [
    "tool", "calls", "errors", "error_rate", *RATE_COLUMNS,
    "median_duration_ms", "p95_duration_ms",
]  # fmt: skip
DAY_COLUMNS = ["day", *RATE_COLUMNS]
FAILURE_COLUMNS = ["tool", "error", "count", "plans"]


@dataclass(frozen=True, repr=False)
class ExecutionAnalysis:
    """Success rates, durations and failure reasons of the plans in one window.

    Every rate comes with its count and a 95% Wilson interval (``ci_low``, ``ci_high``).

    - ``overall``: one row: plans, successes, success_rate, ci_low, ci_high,
      median_duration_s, p95_duration_s
    - ``by_agent``: agent_id + the same columns; ``by_goal_type``: goal_type (missing shown
      as ``"(none)"``) + the same columns
    - ``by_tool``: tool, calls, errors, error_rate, plans (that used the tool), successes,
      success_rate, ci_low, ci_high, median_duration_ms, p95_duration_ms
    - ``by_day``: day (UTC date), plans, successes, success_rate, ci_low, ci_high
    - ``failure_reasons``: tool, error (numbers, ids and quoted values masked), count
      (error steps), plans

    Groups are sorted by ``plans`` descending (``by_day`` by day; ``failure_reasons`` by
    count). ``through_seq`` is the highest plan ``seq`` the analysis saw.
    """

    overall: pd.DataFrame
    by_agent: pd.DataFrame
    by_goal_type: pd.DataFrame
    by_tool: pd.DataFrame
    by_day: pd.DataFrame
    failure_reasons: pd.DataFrame
    agent_id: str | None
    time_range_days: float | None
    as_of: datetime
    through_seq: int
    computed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def n_plans(self) -> int:
        """Plans in the window."""
        return int(self.overall["plans"].iloc[0])

    @property
    def success_rate(self) -> float:
        """Overall success rate (NaN for an empty window)."""
        return float(self.overall["success_rate"].iloc[0])

    def __repr__(self) -> str:
        window = "all" if self.time_range_days is None else f"{self.time_range_days:g}d"
        return (
            f"<ExecutionAnalysis agent={self.agent_id or 'all'} window={window} "
            f"plans={self.n_plans} success_rate={self.success_rate:.3f} "
            f"through_seq={self.through_seq}>"
        )


def with_rates(frame: pd.DataFrame) -> pd.DataFrame:
    """Add success_rate and its Wilson interval from ``plans`` and ``successes``."""
    plans = frame["plans"].to_numpy(dtype="float64")
    successes = frame["successes"].to_numpy(dtype="float64")
    low, high = wilson_interval(successes, plans)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(plans > 0, successes / plans, np.nan)
    return frame.assign(success_rate=rate, ci_low=low, ci_high=high)


def _counts(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    return frame.astype({c: "int64" for c in columns})


def _groups(snapshot: Snapshot, sql: str, key: str, window: Window) -> pd.DataFrame:
    frame = _counts(snapshot.frame(sql, window.params), "plans", "successes")
    frame = with_rates(frame).sort_values(["plans", key], ascending=[False, True])
    return frame[[key, *PLAN_COLUMNS]].reset_index(drop=True)


def _by_tool(snapshot: Snapshot, window: Window) -> pd.DataFrame:
    frame = _counts(snapshot.frame(q.BY_TOOL, window.params), "calls", "errors", "plans",
                    "successes")  # fmt: skip
    frame = with_rates(frame).assign(
        error_rate=lambda f: f["errors"] / f["calls"].where(f["calls"] > 0)
    )
    frame = frame.sort_values(["plans", "tool"], ascending=[False, True])
    return frame[TOOL_COLUMNS].reset_index(drop=True)


def _by_day(snapshot: Snapshot, window: Window) -> pd.DataFrame:
    frame = with_rates(_counts(snapshot.frame(q.BY_DAY, window.params), "plans", "successes"))
    return frame[DAY_COLUMNS].reset_index(drop=True)


def _failure_reasons(snapshot: Snapshot, window: Window) -> pd.DataFrame:
    frame = _counts(snapshot.frame(q.FAILURE_REASONS, window.params), "count", "plans")
    return frame[FAILURE_COLUMNS].reset_index(drop=True)


def analyze(snapshot: Snapshot, window: Window) -> ExecutionAnalysis:
    """Compute every table of an :class:`ExecutionAnalysis` from one snapshot."""
    overall = with_rates(_counts(snapshot.frame(q.OVERALL, window.params), "plans", "successes"))
    return ExecutionAnalysis(
        overall=overall[PLAN_COLUMNS],
        by_agent=_groups(snapshot, q.BY_AGENT, "agent_id", window),
        by_goal_type=_groups(snapshot, q.BY_GOAL_TYPE, "goal_type", window),
        by_tool=_by_tool(snapshot, window),
        by_day=_by_day(snapshot, window),
        failure_reasons=_failure_reasons(snapshot, window),
        agent_id=window.agent_id,
        time_range_days=window.time_range_days,
        as_of=window.as_of,
        through_seq=snapshot.through_seq,
    )
