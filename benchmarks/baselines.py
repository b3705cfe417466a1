"""What a user would write instead of metalearn: pandas, PM4Py and ``prefixspan``.

Each function is the straightforward version a data scientist would reach for, computing
the same figures (or, for PM4Py and ``prefixspan``, the nearest thing those tools offer)
from the same store. The suite times them side by side with metalearn; the agreement check
compares the pandas ones with metalearn's results number for number.

PM4Py and ``prefixspan`` come with the benchmark-only extra ``pip install -e ".[bench]"``;
:func:`missing_extra` says when they are not installed.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import numpy as np
import pandas as pd

PATTERN_SEPARATOR = " → "  # as metalearn's ``pattern_text``
NO_GOAL_TYPE = "(none)"  # how metalearn labels plans without a goal type


# -- loading -------------------------------------------------------------------------------


def _steps_sql(engine: Any) -> str:
    """``SELECT`` every step with its tool name, whatever way the store keeps tool names."""
    from sqlalchemy import inspect

    inspector = inspect(engine)
    columns = {c["name"] for c in inspector.get_columns("metalearn_steps")}
    if "tool" in columns:
        return "SELECT * FROM metalearn_steps"
    for table in inspector.get_table_names():  # tool names stored once, referenced by id
        names = {c["name"] for c in inspector.get_columns(table)}
        if "tool_id" in columns and {"tool_id", "tool"} <= names:
            return f"SELECT s.*, t.tool FROM metalearn_steps AS s JOIN {table} AS t USING (tool_id)"
    raise RuntimeError(
        "metalearn_steps has no tool column and no table maps tool_id to tool: the store "
        "layout changed; update benchmarks/baselines.py::_steps_sql"
    )


def load_frames(url: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plans and steps with ``pandas.read_sql`` through SQLAlchemy (every column)."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        plans = pd.read_sql("SELECT * FROM metalearn_plans", engine)
        steps = pd.read_sql(_steps_sql(engine), engine)
    finally:
        engine.dispose()
    return plans, steps


# -- success rates -------------------------------------------------------------------------


def _rates(frame: pd.DataFrame, key: str | list[str]) -> pd.DataFrame:
    grouped = frame.groupby(key)["succeeded"]
    return pd.DataFrame(
        {"plans": grouped.size(), "successes": grouped.sum(), "success_rate": grouped.mean()}
    )


def success_rates(plans: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Plans, successes and success rate overall and by agent, goal type and (UTC) day."""
    frame = pd.DataFrame(
        {
            "all": "all",
            "agent_id": plans["agent_id"],
            "goal_type": plans["goal_type"].fillna(NO_GOAL_TYPE),
            "day": pd.to_datetime(plans["finished_at_us"], unit="us").dt.floor("D"),
            "succeeded": plans["status"] == "succeeded",
        }
    )
    return {key: _rates(frame, key) for key in ("all", "agent_id", "goal_type", "day")}


# -- contiguous n-grams --------------------------------------------------------------------


def ngrams(
    plans: pd.DataFrame, steps: pd.DataFrame, *, max_length: int = 4, min_support: int = 20
) -> pd.DataFrame:
    """Contiguous tool sequences of 1..max_length tools found in at least min_support plans.

    Columns: pattern_text (tools joined by ``" → "``), length, plans (containing it at
    least once), successes, success_rate, lift (success_rate / overall rate).
    """
    steps = steps.sort_values(["plan_seq", "step_index"])
    succeeded = plans.set_index("seq")["status"] == "succeeded"
    following = steps.groupby("plan_seq")["tool"]
    text = steps["tool"]
    found = []
    for length in range(1, max_length + 1):
        if length > 1:  # a gram running past its plan's last step becomes missing
            text = text + PATTERN_SEPARATOR + following.shift(-(length - 1))
        pairs = pd.DataFrame({"plan_seq": steps["plan_seq"], "pattern_text": text})
        pairs = pairs.dropna().drop_duplicates()
        pairs["succeeded"] = pairs["plan_seq"].map(succeeded)
        counts = pairs.groupby("pattern_text")["succeeded"].agg(plans="size", successes="sum")
        found.append(counts[counts["plans"] >= min_support].assign(length=length))
    table = pd.concat(found).reset_index()
    table["success_rate"] = table["successes"] / table["plans"]
    table["lift"] = table["success_rate"] / succeeded.mean()
    return table[["pattern_text", "length", "plans", "successes", "success_rate", "lift"]]


def _plan_pairs(steps: pd.DataFrame, max_length: int) -> list[pd.DataFrame]:
    """Per length: the distinct (plan_seq, pattern_text) pairs."""
    steps = steps.sort_values(["plan_seq", "step_index"])
    following = steps.groupby("plan_seq")["tool"]
    text = steps["tool"]
    found = []
    for length in range(1, max_length + 1):
        if length > 1:
            text = text + PATTERN_SEPARATOR + following.shift(-(length - 1))
        pairs = pd.DataFrame({"plan_seq": steps["plan_seq"], "pattern_text": text})
        found.append(pairs.dropna().drop_duplicates().assign(length=length))
    return found


def stratified_ngrams(
    plans: pd.DataFrame, steps: pd.DataFrame, *, max_length: int = 4, min_support: int = 20
) -> pd.DataFrame:
    """The n-grams of :func:`ngrams` with their effect within goal types, by pandas groupby.

    For every sequence in at least ``min_support`` plans: its plans and successes per goal
    type (plans without one form their own stratum, ``(none)``), then the Mantel-Haenszel
    odds ratio and the Cochran-Mantel-Haenszel chi-square and p-value (no continuity
    correction) over the strata where both margins vary. Columns: pattern_text, length,
    plans, successes, mh_odds_ratio, cmh_statistic, cmh_p_value.
    """
    from scipy.stats import chi2

    by_seq = plans.set_index("seq")
    goal = by_seq["goal_type"].fillna(NO_GOAL_TYPE)
    succeeded = by_seq["status"] == "succeeded"
    strata = pd.DataFrame({"goal": goal, "won": succeeded}).groupby("goal")["won"]
    totals = pd.DataFrame({"n": strata.size(), "s": strata.sum()})
    tables = []
    for pairs in _plan_pairs(steps, max_length):
        pairs = pairs.assign(goal=pairs["plan_seq"].map(goal), won=pairs["plan_seq"].map(succeeded))
        counts = pairs.groupby(["pattern_text", "length", "goal"])["won"].agg(x="size", a="sum")
        support = counts.groupby(level="pattern_text")["x"].transform("sum")
        tables.append(counts[support >= min_support])
    cells = pd.concat(tables).reset_index().join(totals, on="goal")
    cells = cells.astype({"x": "float64", "a": "float64", "n": "float64", "s": "float64"})
    summed = cells.groupby(["pattern_text", "length"])[["x", "a"]].sum()
    used = cells[(cells["x"] < cells["n"]) & (cells["s"] > 0) & (cells["s"] < cells["n"])]
    b, c = used["x"] - used["a"], used["s"] - used["a"]
    d = used["n"] - used["x"] - c
    n = used["n"]
    terms = pd.DataFrame({
        "pattern_text": used["pattern_text"], "length": used["length"],
        "r": used["a"] * d / n, "q": b * c / n, "gap": used["a"] - used["x"] * used["s"] / n,
        "v": used["x"] * (n - used["x"]) * used["s"] * (n - used["s"]) / (n * n * (n - 1)),
    }).groupby(["pattern_text", "length"]).sum()  # fmt: skip
    table = summed.join(terms, how="left")
    statistic = table["gap"] ** 2 / table["v"]
    return pd.DataFrame({
        "plans": table["x"].astype("int64"), "successes": table["a"].astype("int64"),
        "mh_odds_ratio": table["r"] / table["q"], "cmh_statistic": statistic,
        "cmh_p_value": chi2.sf(statistic, 1),
    }).reset_index()  # fmt: skip


# -- PM4Py and prefixspan ------------------------------------------------------------------


def missing_extra(module: str) -> str | None:
    """Why a baseline cannot run (its package is not installed), or None."""
    if importlib.util.find_spec(module) is None:
        return f'{module} is not installed (pip install -e ".[bench]")'
    return None


def pm4py_event_log(plans: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """PM4Py's event-log frame: one event per step, ordered by a per-step timestamp.

    Steps carry no time of their own, so an event's timestamp is its plan's start plus
    its step index in microseconds (keeps PM4Py's time ordering equal to step order).
    """
    sys._pm4py_welcome_shown = True  # type: ignore[attr-defined]  # no banner on stderr
    import pm4py

    started = steps["plan_seq"].map(plans.set_index("seq")["started_at_us"])
    events = pd.DataFrame(
        {
            "case": steps["plan_seq"].astype("str"),
            "activity": steps["tool"],
            "timestamp": pd.to_datetime(started + steps["step_index"], unit="us", utc=True),
        }
    )
    log: pd.DataFrame = pm4py.format_dataframe(
        events, case_id="case", activity_key="activity", timestamp_key="timestamp"
    )
    return log


def pm4py_variants(log: pd.DataFrame) -> dict[tuple[str, ...], int]:
    """Distinct full tool sequences and how many plans follow each (``pm4py.get_variants``)."""
    import pm4py

    variants: dict[tuple[str, ...], int] = pm4py.get_variants(log)
    return variants


def sequences(steps: pd.DataFrame) -> list[list[str]]:
    """Each plan's tools in step order: the input of ``prefixspan``."""
    ordered = steps.sort_values(["plan_seq", "step_index"])
    return [list(tools) for tools in ordered.groupby("plan_seq", sort=True)["tool"].agg(list)]


def prefixspan_patterns(
    database: list[list[str]], min_support: int, *, max_length: int = 4
) -> list[tuple[int, list[str]]]:
    """Frequent (not necessarily contiguous) sequences of 1..max_length tools."""
    from prefixspan import PrefixSpan

    miner = PrefixSpan(database)
    miner.minlen, miner.maxlen = 1, max_length
    found: list[tuple[int, list[str]]] = miner.frequent(min_support)
    return found


def share_of_plans(n_plans: int, share: float) -> int:
    """An absolute minimum support: ``share`` of the plans, rounded up."""
    return int(np.ceil(n_plans * share))
