"""Success rates, durations, failure reasons and trends of a window of plans."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray

from metalearn import _queries as q
from metalearn._queries import Window
from metalearn._results import (
    DAY_COLUMNS,
    FAILURE_COLUMNS,
    PLAN_COLUMNS,
    TOOL_COLUMNS,
    ExecutionAnalysis,
)
from metalearn._stats import low_n, wilson_interval
from metalearn._warehouse import Snapshot

__all__ = [
    "Queryable",
    "analyze",
    "analyze_groups",
    "tool_names",
    "with_rates",
    "with_rates_flagged",
]


class Queryable(Protocol):
    """What runs an analysis query: a warehouse ``Snapshot``, or a ``SparkSnapshot``."""

    def arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a query; the result as an Arrow table."""


def tool_names(snapshot: Queryable) -> NDArray[np.object_]:
    """Every tool's name, at the position of its ``tool_id``."""
    return np.array(snapshot.arrow(q.TOOLS).column("tool").to_pylist(), dtype=object)


def with_rates(frame: pd.DataFrame) -> pd.DataFrame:
    """Add success_rate and its Wilson interval from ``plans`` and ``successes``."""
    plans = frame["plans"].to_numpy(dtype="float64")
    successes = frame["successes"].to_numpy(dtype="float64")
    low, high = wilson_interval(successes, plans)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(plans > 0, successes / plans, np.nan)
    return frame.assign(success_rate=rate, ci_low=low, ci_high=high)


def with_rates_flagged(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`with_rates`, and ``low_n`` where the rate rests on too little."""
    frame = with_rates(frame)
    return frame.assign(low_n=low_n(frame["plans"], frame["ci_low"], frame["ci_high"]))


def _counts(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    return frame.astype({c: "int64" for c in columns})


Tables = dict[str | None, pd.DataFrame]


def _per_group(
    snapshot: Snapshot,
    sql: str,
    window: Window,
    counts: tuple[str, ...],
    finish: Callable[[pd.DataFrame], pd.DataFrame],
) -> Tables:
    """Run a grouped query, ``finish`` all its rows at once, then split them by group.

    Finishing before splitting keeps the pandas work per query, not per agent: a batch of
    agents costs about what one agent does. Every group is present, maybe empty.
    """
    frame = finish(_counts(snapshot.frame(window.sql(sql), window.params), *counts))
    keys = frame.pop("group_key")
    if not window.per_agent:
        return {None: frame.reset_index(drop=True)}
    parts: dict[str | None, pd.DataFrame] = {
        str(key): part.reset_index(drop=True) for key, part in frame.groupby(keys, sort=False)
    }
    empty = frame.iloc[0:0]
    return {key: parts.get(key, empty) for key in window.groups}


def _overall(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:  # no plans: one row of zeros and NaNs
        frame = pd.DataFrame({"plans": [0], "successes": [0], "median_duration_s": [np.nan],
                              "p95_duration_s": [np.nan]})  # fmt: skip
    return frame.reset_index(drop=True)


def _ranked(key: str, columns: list[str]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def finish(frame: pd.DataFrame) -> pd.DataFrame:
        frame = with_rates_flagged(frame).sort_values(
            ["group_key", "plans", key], ascending=[True, False, True], na_position="first"
        )
        return frame[["group_key", *columns]]

    return finish


def _tools(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.assign(error_rate=frame["errors"] / frame["calls"].where(frame["calls"] > 0))
    return _ranked("tool", TOOL_COLUMNS)(frame)


def _rated(columns: list[str]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda frame: with_rates_flagged(frame)[["group_key", *columns]]


def _kept(columns: list[str]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda frame: frame[["group_key", *columns]]


def analyze_groups(snapshot: Snapshot, window: Window) -> dict[str | None, ExecutionAnalysis]:
    """Every table of an :class:`ExecutionAnalysis`, for each group of the window.

    One query per table, whatever the number of groups.
    """
    plans = ("plans", "successes")
    tables = {
        "overall": (q.OVERALL, plans, _kept(["plans", "successes", *PLAN_COLUMNS[-2:]])),
        "agents": (q.BY_AGENT, plans, _ranked("agent_id", ["agent_id", *PLAN_COLUMNS])),
        "goals": (q.BY_GOAL_TYPE, plans, _ranked("goal_type", ["goal_type", *PLAN_COLUMNS])),
        "tools": (q.BY_TOOL, ("calls", "errors", *plans), _tools),
        "days": (q.BY_DAY, plans, _rated(DAY_COLUMNS)),
        "failures": (q.FAILURE_REASONS, ("count", "plans"), _kept(FAILURE_COLUMNS)),
    }
    got = {
        name: _per_group(snapshot, sql, window, counts, finish)
        for name, (sql, counts, finish) in tables.items()
    }
    return {
        key: ExecutionAnalysis(
            overall=with_rates_flagged(_overall(got["overall"][key]))[PLAN_COLUMNS],
            by_agent=got["agents"][key],
            by_goal_type=got["goals"][key],
            by_tool=got["tools"][key],
            by_day=got["days"][key],
            failure_reasons=got["failures"][key],
            **window.described(snapshot.through_seq, key),
        )
        for key in window.groups
    }


def analyze(snapshot: Snapshot, window: Window) -> ExecutionAnalysis:
    """The :class:`ExecutionAnalysis` of a one-group window."""
    return analyze_groups(snapshot, window)[None]
