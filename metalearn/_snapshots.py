"""Analysis snapshots: results turned into store rows and back.

The store keeps plain rows (``metalearn_snapshots`` and ``metalearn_snapshot_patterns``);
this module knows how an :class:`ExecutionAnalysis` and a :class:`PatternReport` map onto
them, so a planner in another process can read the latest patterns back.

Snapshots written before stratified patterns lack the stratified columns (NULL in the
store): they read back as a pooled report (``stratify_by`` None), the stratified figures
empty, ``strata`` 0, ``simpson`` False, ``explained_by`` empty and every significant row a
finding (what ``successful`` and ``failing`` held then).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from metalearn._queries import HintOptions, PatternOptions
from metalearn._results import (
    HINT_TABLE_COLUMNS,
    PATTERN_COLUMNS,
    ExecutionAnalysis,
    HintTable,
    PatternReport,
    prefix_text,
)
from metalearn._stats import low_n
from metalearn._types import epoch_micros, from_epoch_micros

__all__ = [
    "analysis_from_snapshot",
    "hint_rows",
    "hints_from_snapshot",
    "report_from_snapshot",
    "snapshot_rows",
]

_TABLES = ("overall", "by_agent", "by_goal_type", "by_tool", "by_day", "failure_reasons")
_INTEGERS = {"plans", "successes", "calls", "errors", "count"}
_TEXTS = {"agent_id", "goal_type", "tool", "error"}
_ROW_COLUMNS = [c for c in PATTERN_COLUMNS if c not in ("pattern_text",)]


def _frame_to_json(frame: pd.DataFrame) -> dict[str, Any]:
    if "day" in frame:
        frame = frame.assign(day=[d.isoformat() for d in frame["day"]])
    table = frame.to_dict(orient="split", index=False)  # plain Python values, NaN kept
    return {"columns": table["columns"], "data": table["data"]}


def _frame_from_json(table: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(table["data"], columns=table["columns"])
    for column in frame.columns:
        if column in _INTEGERS:
            frame[column] = frame[column].astype("int64")
        elif column in _TEXTS:
            frame[column] = frame[column].astype("str")
        elif column == "day":
            frame[column] = pd.to_datetime(frame[column]).dt.date
        elif column == "low_n":
            frame[column] = frame[column].astype(bool)
        else:
            frame[column] = frame[column].astype("float64")
    if "ci_high" in frame and "low_n" not in frame:  # written before low_n existed
        at = frame.columns.tolist().index("ci_high") + 1
        frame.insert(at, "low_n", low_n(frame["plans"], frame["ci_low"], frame["ci_high"]))
    return frame


def snapshot_rows(
    analysis: ExecutionAnalysis, report: PatternReport, *, duration_ms: float
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The snapshot row and pattern rows of one agent's analysis, ready for the store."""
    tables = {name: _frame_to_json(getattr(analysis, name)) for name in _TABLES}
    header = {
        "agent_id": analysis.agent_id,
        "through_seq": analysis.through_seq,
        "computed_at_us": epoch_micros(analysis.computed_at),
        "duration_ms": float(duration_ms),
        "time_range_days": analysis.time_range_days,
        "as_of_us": epoch_micros(analysis.as_of),
        "plans": report.n_plans,
        "successes": report.n_successes,
        "patterns_tested": len(report.patterns),
        "patterns_significant": int(report.patterns["significant"].sum()),
        "min_length": report.options.min_length,
        "max_length": report.options.max_length,
        "min_support": report.options.min_support,
        "fdr": report.options.fdr,
        "stratify_by": report.options.stratify_by,
        "analysis": json.dumps(tables, allow_nan=True),
    }
    rows = report.patterns[_ROW_COLUMNS].assign(
        rank=np.arange(len(report.patterns)),
        pattern=[json.dumps(list(p)) for p in report.patterns["pattern"]],
    )
    return header, rows


def analysis_from_snapshot(header: dict[str, Any]) -> ExecutionAnalysis:
    """The :class:`ExecutionAnalysis` stored in a snapshot row."""
    tables = json.loads(header["analysis"])
    return ExecutionAnalysis(
        **{name: _frame_from_json(tables[name]) for name in _TABLES},
        agent_id=header["agent_id"],
        time_range_days=header["time_range_days"],
        as_of=from_epoch_micros(header["as_of_us"]),
        through_seq=int(header["through_seq"]),
        computed_at=from_epoch_micros(header["computed_at_us"]),
    )


_FLOATS = ("success_rate", "ci_low", "ci_high", "lift", "p_value", "q_value", "mh_odds_ratio",
           "mh_ci_low", "mh_ci_high", "cmh_p_value", "homogeneity_p_value")  # fmt: skip


def _pattern_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Stored pattern rows as ``PatternReport.patterns`` (older rows: see the module doc)."""
    patterns = [tuple(json.loads(text)) for text in rows["pattern"]]
    significant = rows["significant"].astype(bool)
    old = rows["finding"].isna() if "finding" in rows else pd.Series(True, index=rows.index)
    frame = rows.assign(
        pattern=pd.Series(patterns, dtype=object, index=rows.index),
        pattern_text=pd.Series([" → ".join(p) for p in patterns], dtype="str", index=rows.index),
        significant=significant,
        direction=rows["direction"].astype("str"),
    )
    for column in ("length", "plans", "successes"):
        frame[column] = frame[column].astype("int64")
    for column in _FLOATS:
        frame[column] = _column(frame, column, np.nan).astype("float64")
    frame["strata"] = _column(frame, "strata", 0).fillna(0).astype("int64")
    frame["simpson"] = _column(frame, "simpson", False).fillna(False).astype(bool)
    frame["plans_needed"] = _column(frame, "plans_needed", None).astype("Int64")
    frame["explained_by"] = _column(frame, "explained_by", "").fillna("").astype("str")
    finding = _column(frame, "finding", False).fillna(False).astype(bool)
    frame["finding"] = finding.where(~old, significant & (frame["explained_by"] == ""))
    return frame[PATTERN_COLUMNS].reset_index(drop=True)


def _column(frame: pd.DataFrame, name: str, missing: object) -> pd.Series:
    if name in frame:
        return frame[name].astype(object).where(frame[name].notna(), None)
    return pd.Series([missing] * len(frame), index=frame.index, dtype=object)


def report_from_snapshot(header: dict[str, Any], rows: pd.DataFrame) -> PatternReport:
    """The :class:`PatternReport` stored in a snapshot row and its pattern rows."""
    n_plans, n_successes = int(header["plans"]), int(header["successes"])
    return PatternReport(
        patterns=_pattern_frame(rows),
        baseline_rate=n_successes / n_plans if n_plans else float("nan"),
        n_plans=n_plans,
        n_successes=n_successes,
        agent_id=header["agent_id"],
        time_range_days=header["time_range_days"],
        as_of=from_epoch_micros(header["as_of_us"]),
        options=PatternOptions(
            min_length=int(header["min_length"]),
            max_length=int(header["max_length"]),
            min_support=int(header["min_support"]),
            fdr=float(header["fdr"]),
            stratify_by=header.get("stratify_by"),
        ),
        through_seq=int(header["through_seq"]),
        computed_at=from_epoch_micros(header["computed_at_us"]),
    )


_HINT_ROW_COLUMNS = [c for c in HINT_TABLE_COLUMNS if c != "prefix_text"]


def hint_rows(table: HintTable) -> tuple[dict[str, Any], pd.DataFrame]:
    """The hint set row and hint rows of a :class:`HintTable`, ready for the store."""
    options = table.options
    hint_set = {"max_prefix": options.max_prefix, "min_support": options.min_support,
                "fdr": options.fdr}  # fmt: skip
    hints = table.hints
    rows = hints[_HINT_ROW_COLUMNS].assign(
        rank=np.arange(len(hints)),
        prefix=[json.dumps(list(p)) for p in hints["prefix"]],
        next_tool=hints["next_tool"].astype(object).where(hints["next_tool"].notna(), None),
    )
    return hint_set, rows


def hints_from_snapshot(header: dict[str, Any], rows: pd.DataFrame) -> HintTable:
    """The :class:`HintTable` of a snapshot (see ``HistoryStore.latest_hints``).

    A snapshot stored without hints gives an empty table whose ``max_prefix`` is 0.
    """
    prefixes = [tuple(json.loads(text)) for text in rows["prefix"]]
    frame = rows.assign(
        prefix=pd.Series(prefixes, dtype=object, index=rows.index),
        prefix_text=pd.Series([prefix_text(p) for p in prefixes], dtype="str", index=rows.index),
        next_tool=rows["next_tool"].astype("str"),
        significant=rows["significant"].astype(bool),
        low_n=rows["low_n"].astype(bool),
    )
    for column in ("plans", "successes"):
        frame[column] = frame[column].astype("int64")
    for column in ("success_rate", "ci_low", "ci_high", "lift", "p_value", "q_value"):
        frame[column] = frame[column].astype("float64")
    stored = header["hint_max_prefix"] is not None
    return HintTable(
        hints=frame[HINT_TABLE_COLUMNS].reset_index(drop=True),
        n_plans=int(header["plans"]),
        n_successes=int(header["successes"]),
        agent_id=header["agent_id"],
        time_range_days=header["time_range_days"],
        as_of=from_epoch_micros(header["as_of_us"]),
        options=HintOptions(
            max_prefix=int(header["hint_max_prefix"]) if stored else 0,
            min_support=int(header["hint_min_support" if stored else "min_support"]),
            fdr=float(header["hint_fdr" if stored else "fdr"]),
        ),
        through_seq=int(header["through_seq"]),
        computed_at=from_epoch_micros(header["computed_at_us"]),
    )
