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


Tables = dict[str | None, pd.DataFrame]


def _per_group(snapshot: Snapshot, sql: str, window: Window, *counts: str) -> Tables:
    """Run a grouped query and split its rows by group (every group present, maybe empty)."""
    frame = _counts(snapshot.frame(window.sql(sql), window.params), *counts)
    if not window.per_agent:
        return {None: frame.drop(columns="group_key")}
    parts: dict[str | None, pd.DataFrame] = {
        str(key): part for key, part in frame.groupby("group_key", sort=False)
    }
    empty = frame.iloc[0:0]
    return {key: parts.get(key, empty).drop(columns="group_key") for key in window.groups}


def _overall(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:  # no plans: one row of zeros and NaNs
        frame = pd.DataFrame({"plans": [0], "successes": [0], "median_duration_s": [np.nan],
                              "p95_duration_s": [np.nan]})  # fmt: skip
    return with_rates(frame)[PLAN_COLUMNS].reset_index(drop=True)


def _ranked(frame: pd.DataFrame, key: str, columns: list[str]) -> pd.DataFrame:
    frame = with_rates(frame).sort_values(["plans", key], ascending=[False, True])
    return frame[columns].reset_index(drop=True)


def _tools(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.assign(error_rate=frame["errors"] / frame["calls"].where(frame["calls"] > 0))
    return _ranked(frame, "tool", TOOL_COLUMNS)


def analyze_groups(snapshot: Snapshot, window: Window) -> dict[str | None, ExecutionAnalysis]:
    """Every table of an :class:`ExecutionAnalysis`, for each group of the window.

    One query per table, whatever the number of groups.
    """
    plans = ("plans", "successes")
    overall = _per_group(snapshot, q.OVERALL, window, *plans)
    agents = _per_group(snapshot, q.BY_AGENT, window, *plans)
    goals = _per_group(snapshot, q.BY_GOAL_TYPE, window, *plans)
    tools = _per_group(snapshot, q.BY_TOOL, window, "calls", "errors", *plans)
    days = _per_group(snapshot, q.BY_DAY, window, *plans)
    failures = _per_group(snapshot, q.FAILURE_REASONS, window, "count", "plans")
    return {
        key: ExecutionAnalysis(
            overall=_overall(overall[key]),
            by_agent=_ranked(agents[key], "agent_id", ["agent_id", *PLAN_COLUMNS]),
            by_goal_type=_ranked(goals[key], "goal_type", ["goal_type", *PLAN_COLUMNS]),
            by_tool=_tools(tools[key]),
            by_day=with_rates(days[key])[DAY_COLUMNS].reset_index(drop=True),
            failure_reasons=failures[key][FAILURE_COLUMNS].reset_index(drop=True),
            agent_id=key if window.per_agent else window.agent_id,
            time_range_days=window.time_range_days,
            as_of=window.as_of,
            through_seq=snapshot.through_seq,
        )
        for key in window.groups
    }


def analyze(snapshot: Snapshot, window: Window) -> ExecutionAnalysis:
    """The :class:`ExecutionAnalysis` of a one-group window."""
    return analyze_groups(snapshot, window)[None]
