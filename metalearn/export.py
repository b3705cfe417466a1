"""CSV summaries of analyses, pattern reports and queue metrics, to share or open in a sheet.

:func:`export_csv` writes one file per table, with fixed names and column orders:

============================  ===========================================================
result                        files
============================  ===========================================================
``ExecutionAnalysis``         ``overall.csv``, ``success_by_agent.csv``,
                              ``success_by_goal_type.csv``, ``success_by_tool.csv``,
                              ``success_by_day.csv``, ``failure_reasons.csv``
``PatternReport``             ``pattern_summary.csv``, ``patterns.csv``,
                              ``successful_patterns.csv``, ``failing_patterns.csv``
``HintTable``                 ``hint_summary.csv``, ``hints.csv``
``ChangeReport``              ``changes.csv``
queue metrics (DataFrame)     ``queue_metrics.csv``
============================  ===========================================================

Every file is UTF-8 (no byte-order mark) with a header row and CRLF line ends, as RFC 4180
and spreadsheets expect (a cell holding a line break is quoted, so it cannot split a row). The
columns are those of the result's tables (see :class:`~metalearn.ExecutionAnalysis`,
:class:`~metalearn.PatternReport`, :class:`~metalearn.HintTable` and
:class:`~metalearn.ChangeReport`) in the same order; ``overall.csv``,
``pattern_summary.csv`` and ``hint_summary.csv`` add the window first (``agent_id`` —
``(all)`` for every agent —, ``time_range_days`` — empty for the whole history —,
``as_of``, ``through_seq``).
Timestamps are ISO-8601 in UTC (``2026-03-01T12:00:00.000000Z``), days ``2026-03-01``;
missing values are empty cells. A pattern is written as its text form
(``validate_input → dry_run → apply_change``), a hint's prefix too (``(start)`` for the
first step; an empty ``next_tool`` is the plans that ended there), a job's agents joined
by ``", "``. ``patterns.csv`` holds every tested pattern (with ``explained_by`` and
``finding``); ``successful_patterns.csv`` and ``failing_patterns.csv`` hold the report's
findings only (``report.successful`` and ``report.failing``).

Tool names and error messages come from agents and are untrusted, so a text cell that
starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``:
spreadsheets then show it as text instead of running it as a formula. Only text columns
are touched; numbers (negative ones too) are written as they are.

The writing rules live in ``metalearn._csv`` and each result's tables in the result itself
(``analysis.to_csv(directory)`` writes the same files), so results write themselves
without importing this module.

>>> import tempfile
>>> from metalearn import HistoryStore, MetaLearningService
>>> from metalearn.synthetic import make_history
>>> store = HistoryStore("sqlite://")
>>> _ = store.import_frames(*make_history(1_000, seed=2))
>>> with MetaLearningService(store) as service, tempfile.TemporaryDirectory() as out:
...     analysis = service.analyze_execution_patterns_sync(time_range_days=None)
...     paths = export_csv(analysis, out)
...     header = paths[0].read_text(encoding="utf-8").splitlines()[0]
>>> [p.name for p in paths][:3]
['overall.csv', 'success_by_agent.csv', 'success_by_goal_type.csv']
>>> header.split(",")[:6]
['agent_id', 'time_range_days', 'as_of', 'through_seq', 'plans', 'successes']
>>> store.close()
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from metalearn._csv import neutralise_formulas, write_tables
from metalearn._errors import InvalidArgumentError
from metalearn._queue import METRIC_COLUMNS
from metalearn._results import (
    ANALYSIS_FILES,
    CHANGE_FILES,
    HINT_FILES,
    PATTERN_FILES,
    Result,
    to_html,
)

__all__ = [
    "ANALYSIS_FILES",
    "CHANGE_FILES",
    "HINT_FILES",
    "PATTERN_FILES",
    "QUEUE_FILES",
    "export_csv",
    "neutralise_formulas",
    "to_html",
]

QUEUE_FILES = ("queue_metrics.csv",)
"""The file :func:`export_csv` writes for the DataFrame of ``AnalysisQueue.metrics()``."""

Exportable = Result | pd.DataFrame


def _queue_table(metrics: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in METRIC_COLUMNS if c not in metrics.columns]
    if missing:
        raise InvalidArgumentError(
            f"this DataFrame lacks the queue-metrics columns {missing}; export_csv takes an "
            "ExecutionAnalysis, a PatternReport or AnalysisQueue.metrics() unchanged"
        )
    frame = metrics[METRIC_COLUMNS]
    agents = frame["agents"].map(lambda v: ", ".join(v) if isinstance(v, tuple | list) else v)
    return frame.assign(agents=agents.astype("str"))


def export_csv(result: Exportable, directory: str | os.PathLike[str]) -> list[Path]:
    """Write the tables of ``result`` as CSV files into ``directory``; return their paths.

    ``result`` is an :class:`~metalearn.ExecutionAnalysis` (files
    :data:`ANALYSIS_FILES`), a :class:`~metalearn.PatternReport` (:data:`PATTERN_FILES`),
    a :class:`~metalearn.HintTable` (:data:`HINT_FILES`), a
    :class:`~metalearn.ChangeReport` (:data:`CHANGE_FILES`) or the DataFrame of
    ``AnalysisQueue.metrics()`` (:data:`QUEUE_FILES`). The directory is created if
    missing and files of the same names are replaced. The file
    names, columns and encoding rules are in the module docstring.

    >>> import tempfile
    >>> t0 = pd.Timestamp("2026-01-01 12:00", tz="UTC")
    >>> metrics = pd.DataFrame({
    ...     "job_id": [1], "agents": [("=cmd", "b")], "plans": [2], "priority": [0],
    ...     "submitted_at": [t0], "started_at": [t0], "finished_at": [pd.NaT],
    ...     "wait_ms": [0.5], "run_ms": [-1.0], "attempts": [1], "status": ["failed"],
    ...     "error": ["-boom"]})
    >>> with tempfile.TemporaryDirectory() as out:
    ...     (path,) = export_csv(metrics, out)
    ...     back = pd.read_csv(path, dtype=str, keep_default_na=False)
    >>> path.name, list(back.columns) == METRIC_COLUMNS
    ('queue_metrics.csv', True)
    >>> back.loc[0, ["agents", "submitted_at", "finished_at", "run_ms", "error"]].tolist()
    ["'=cmd, b", '2026-01-01T12:00:00.000000Z', '', '-1.0', "'-boom"]
    """
    if isinstance(result, Result):
        return result.to_csv(directory)
    if isinstance(result, pd.DataFrame):
        return write_tables({QUEUE_FILES[0]: _queue_table(result)}, directory)
    raise TypeError(
        "export_csv takes an ExecutionAnalysis, a PatternReport or the DataFrame of "
        f"AnalysisQueue.metrics(), not {type(result).__name__}"
    )
