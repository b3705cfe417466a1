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
queue metrics (DataFrame)     ``queue_metrics.csv``
============================  ===========================================================

Every file is UTF-8 (no byte-order mark) with a header row and CRLF line ends, as RFC 4180
and spreadsheets expect (a cell holding a line break is quoted, so it cannot split a row). The
columns are those of the result's tables (see :class:`~metalearn.ExecutionAnalysis` and
:class:`~metalearn.PatternReport`) in the same order; ``overall.csv`` and
``pattern_summary.csv`` add the window first (``agent_id`` — ``(all)`` for every agent —,
``time_range_days`` — empty for the whole history —, ``as_of``, ``through_seq``).
Timestamps are ISO-8601 in UTC (``2026-03-01T12:00:00.000000Z``), days ``2026-03-01``;
missing values are empty cells. A pattern is written as its text form
(``validate_input → dry_run → apply_change``), a job's agents joined by ``", "``.

Tool names and error messages come from agents and are untrusted, so a text cell that
starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``:
spreadsheets then show it as text instead of running it as a formula. Only text columns
are touched; numbers (negative ones too) are written as they are.

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

import html
import os
from datetime import datetime
from pathlib import Path

import pandas as pd

from metalearn._analysis import ExecutionAnalysis
from metalearn._errors import InvalidArgumentError
from metalearn._patterns import PatternReport

__all__ = [
    "ANALYSIS_FILES",
    "PATTERN_FILES",
    "QUEUE_FILES",
    "export_csv",
    "neutralise_formulas",
    "to_html",
]

ANALYSIS_FILES = (
    "overall.csv", "success_by_agent.csv", "success_by_goal_type.csv", "success_by_tool.csv",
    "success_by_day.csv", "failure_reasons.csv",
)  # fmt: skip
"""The files :func:`export_csv` writes for an ExecutionAnalysis, in this order."""
PATTERN_FILES = (
    "pattern_summary.csv", "patterns.csv", "successful_patterns.csv", "failing_patterns.csv"
)  # fmt: skip
"""The files :func:`export_csv` writes for a PatternReport, in this order."""
QUEUE_FILES = ("queue_metrics.csv",)
"""The file :func:`export_csv` writes for the DataFrame of ``AnalysisQueue.metrics()``."""

QUEUE_COLUMNS = [
    "job_id", "agents", "plans", "priority", "submitted_at", "started_at", "finished_at",
    "wait_ms", "run_ms", "attempts", "status", "error",
]  # fmt: skip
_WINDOW = ["agent_id", "time_range_days", "as_of", "through_seq"]
_PATTERN_SUMMARY = [*_WINDOW, "plans", "successes", "baseline_rate", "patterns_tested",
                    "significant", "min_length", "max_length", "min_support", "fdr"]  # fmt: skip
_UNSAFE_START = ("=", "+", "-", "@", "\t", "\r")
_ISO_UTC = "%Y-%m-%dT%H:%M:%S.%fZ"

Result = ExecutionAnalysis | PatternReport | pd.DataFrame


def neutralise_formulas(column: pd.Series) -> pd.Series:
    """Prefix ``'`` to the text cells a spreadsheet would run as a formula.

    Cells starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return; other cells and
    missing values are kept. Apply it to text columns only: numbers stay numbers.

    >>> neutralise_formulas(pd.Series(["=HYPERLINK(1)", "-2+3", "ok", None], dtype="str"))
    0    '=HYPERLINK(1)
    1             '-2+3
    2                ok
    3               NaN
    dtype: str
    """
    text = column.astype("str")
    unsafe = text.str.startswith(_UNSAFE_START).fillna(False).astype(bool)
    return text.mask(unsafe, "'" + text)


def _is_text(column: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(column) or column.dtype == object


def _iso(column: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(column, utc=True)
    return stamps.dt.strftime(_ISO_UTC)


def _stamp(value: datetime) -> str:
    return pd.Timestamp(value).tz_convert("UTC").strftime(_ISO_UTC)


def _for_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """Timestamps as ISO-8601 UTC, tuples as text, text cells made safe."""
    columns = {}
    for name, column in frame.items():
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            column = _iso(column)
        elif column.dtype == object and column.map(lambda v: isinstance(v, tuple)).any():
            column = column.map(lambda v: ", ".join(v) if isinstance(v, tuple) else v)
        if _is_text(column):
            column = neutralise_formulas(column)
        columns[str(name)] = column
    return pd.DataFrame(columns, index=frame.index)


def _window(result: ExecutionAnalysis | PatternReport) -> dict[str, object]:
    return {
        "agent_id": result.agent_id if result.agent_id is not None else "(all)",
        "time_range_days": result.time_range_days,
        "as_of": _stamp(result.as_of),
        "through_seq": result.through_seq,
    }


def _analysis_tables(analysis: ExecutionAnalysis) -> list[pd.DataFrame]:
    window = pd.DataFrame([_window(analysis)] * len(analysis.overall), columns=_WINDOW)
    days = pd.to_datetime(analysis.by_day["day"]).dt.strftime("%Y-%m-%d")
    return [
        pd.concat([window, analysis.overall.reset_index(drop=True)], axis=1),
        analysis.by_agent,
        analysis.by_goal_type,
        analysis.by_tool,
        analysis.by_day.assign(day=days),
        analysis.failure_reasons,
    ]


def _pattern_text(rows: pd.DataFrame) -> pd.DataFrame:
    frame = rows.drop(columns="pattern").rename(columns={"pattern_text": "pattern"})
    return frame.astype({"pattern": "str"})


def _pattern_tables(report: PatternReport) -> list[pd.DataFrame]:
    summary = {
        **_window(report),
        "plans": report.n_plans, "successes": report.n_successes,
        "baseline_rate": report.baseline_rate, "patterns_tested": len(report.patterns),
        "significant": int(report.patterns["significant"].sum()),
        "min_length": report.min_length, "max_length": report.max_length,
        "min_support": report.min_support, "fdr": report.fdr,
    }  # fmt: skip
    return [
        pd.DataFrame([summary], columns=_PATTERN_SUMMARY),
        _pattern_text(report.patterns),
        _pattern_text(report.successful),
        _pattern_text(report.failing),
    ]


def _queue_table(metrics: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in QUEUE_COLUMNS if c not in metrics.columns]
    if missing:
        raise InvalidArgumentError(
            f"this DataFrame lacks the queue-metrics columns {missing}; export_csv takes an "
            "ExecutionAnalysis, a PatternReport or AnalysisQueue.metrics() unchanged"
        )
    frame = metrics[QUEUE_COLUMNS]
    agents = frame["agents"].map(lambda v: ", ".join(v) if isinstance(v, tuple | list) else v)
    return frame.assign(agents=agents.astype("str"))


def _tables(result: Result) -> dict[str, pd.DataFrame]:
    if isinstance(result, ExecutionAnalysis):
        return dict(zip(ANALYSIS_FILES, _analysis_tables(result), strict=True))
    if isinstance(result, PatternReport):
        return dict(zip(PATTERN_FILES, _pattern_tables(result), strict=True))
    if isinstance(result, pd.DataFrame):
        return {QUEUE_FILES[0]: _queue_table(result)}
    raise TypeError(
        "export_csv takes an ExecutionAnalysis, a PatternReport or the DataFrame of "
        f"AnalysisQueue.metrics(), not {type(result).__name__}"
    )


def export_csv(result: Result, directory: str | os.PathLike[str]) -> list[Path]:
    """Write the tables of ``result`` as CSV files into ``directory``; return their paths.

    ``result`` is an :class:`~metalearn.ExecutionAnalysis`, a
    :class:`~metalearn.PatternReport` or the DataFrame of ``AnalysisQueue.metrics()``. The
    directory is created if missing and files of the same names are replaced. The file
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
    >>> path.name, list(back.columns) == QUEUE_COLUMNS
    ('queue_metrics.csv', True)
    >>> back.loc[0, ["agents", "submitted_at", "finished_at", "run_ms", "error"]].tolist()
    ["'=cmd, b", '2026-01-01T12:00:00.000000Z', '', '-1.0', "'-boom"]
    """
    if not isinstance(directory, str | os.PathLike):
        raise TypeError(f"directory must be a path (str or os.PathLike), not {directory!r}")
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in _tables(result).items():
        path = target / name
        _for_csv(frame).to_csv(path, index=False, encoding="utf-8", lineterminator="\r\n")
        written.append(path)
    return written


def _html_table(title: str, frame: pd.DataFrame, max_rows: int) -> str:
    shown = frame.drop(columns=["pattern"], errors="ignore")
    table = shown.to_html(index=False, max_rows=max_rows, float_format="{:.4g}".format,
                          na_rep="", border=0)  # fmt: skip
    more = f" (first {max_rows} of {len(frame):,})" if len(frame) > max_rows else ""
    return f"<h4>{html.escape(title)}{more}</h4>{table}"


def to_html(result: ExecutionAnalysis | PatternReport, *, max_rows: int = 10) -> str:
    """The result as HTML: its one-line summary, then its main tables (``max_rows`` each).

    This is what a notebook shows for an analysis or a pattern report (``_repr_html_``).
    Cell text is escaped.

    >>> from metalearn import HistoryStore, MetaLearningService
    >>> from metalearn.synthetic import make_history
    >>> store = HistoryStore("sqlite://")
    >>> _ = store.import_frames(*make_history(500, seed=1))
    >>> with MetaLearningService(store) as service:
    ...     page = to_html(service.analyze_execution_patterns_sync(time_range_days=None))
    >>> page.count("<table"), "&lt;ExecutionAnalysis agent=all window=all plans=500" in page
    (5, True)
    >>> store.close()
    """
    if isinstance(result, ExecutionAnalysis):
        sections = [("overall", result.overall), ("by agent", result.by_agent),
                    ("by goal type", result.by_goal_type), ("by tool", result.by_tool),
                    ("failure reasons", result.failure_reasons)]  # fmt: skip
    elif isinstance(result, PatternReport):
        sections = [("patterns that go with success", result.successful),
                    ("patterns that go with failure", result.failing)]  # fmt: skip
    else:
        raise TypeError(f"to_html takes an ExecutionAnalysis or a PatternReport, not {result!r}")
    head = f"<p><code>{html.escape(repr(result))}</code></p>"
    return head + "".join(_html_table(title, frame, max_rows) for title, frame in sections)
