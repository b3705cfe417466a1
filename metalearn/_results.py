"""The result objects, :class:`ExecutionAnalysis` and :class:`PatternReport`, and their views.

A result holds DataFrames with documented columns and says how it is shown: the tables
it writes as CSV files, the sections of its HTML, the kinds of plot it draws. What the
two result types share (``plot``, ``to_csv``, ``_repr_html_``) is written once, in
:class:`Result`.

Imports go one way: the computations (``_analysis``, ``_patterns``) build results, and
the public namespaces :mod:`metalearn.plots` and :mod:`metalearn.export` take them in;
this module imports neither. A result draws and writes itself through the machinery
below it: :mod:`metalearn._csv` (CSV rules, no result types) and
:mod:`metalearn._drawing` (the plot functions, which know results by their attributes
and import the result types for type checking only). ``_drawing`` is imported inside
:meth:`Result.plot` so that ``import metalearn`` does not load matplotlib; that is the
only import inside a function here, and it closes no cycle.
"""

from __future__ import annotations

import html
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from metalearn._csv import stamp, write_tables
from metalearn._errors import InvalidArgumentError
from metalearn._queries import ChangeOptions, HintOptions, PatternOptions

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "ANALYSIS_FILES",
    "CHANGE_BIN_COLUMNS",
    "CHANGE_COLUMNS",
    "CHANGE_FILES",
    "DAY_COLUMNS",
    "FAILURE_COLUMNS",
    "HINT_COLUMNS",
    "HINT_FILES",
    "HINT_TABLE_COLUMNS",
    "PATTERN_COLUMNS",
    "PATTERN_FILES",
    "PLAN_COLUMNS",
    "RATE_COLUMNS",
    "START_TEXT",
    "TOOL_COLUMNS",
    "ChangeReport",
    "ExecutionAnalysis",
    "HintTable",
    "PatternReport",
    "Result",
    "pattern_text",
    "prefix_text",
    "to_html",
]

RATE_COLUMNS = ["plans", "successes", "success_rate", "ci_low", "ci_high", "low_n"]
PLAN_COLUMNS = [*RATE_COLUMNS, "median_duration_s", "p95_duration_s"]
TOOL_COLUMNS = [
    "tool", "calls", "errors", "error_rate", *RATE_COLUMNS,
    "median_duration_ms", "p95_duration_ms",
]  # fmt: skip
DAY_COLUMNS = ["day", *RATE_COLUMNS]
FAILURE_COLUMNS = ["tool", "error", "count", "plans"]
PATTERN_COLUMNS = [
    "pattern", "pattern_text", "length", "plans", "successes", "success_rate", "ci_low",
    "ci_high", "lift", "p_value", "mh_odds_ratio", "mh_ci_low", "mh_ci_high", "cmh_p_value",
    "homogeneity_p_value", "strata", "simpson", "q_value", "significant", "direction",
    "plans_needed", "explained_by", "finding",
]  # fmt: skip

ANALYSIS_FILES = (
    "overall.csv", "success_by_agent.csv", "success_by_goal_type.csv", "success_by_tool.csv",
    "success_by_day.csv", "failure_reasons.csv",
)  # fmt: skip
"""The CSV files an ExecutionAnalysis writes, in this order."""
PATTERN_FILES = (
    "pattern_summary.csv", "patterns.csv", "successful_patterns.csv", "failing_patterns.csv"
)  # fmt: skip
"""The CSV files a PatternReport writes, in this order."""

_WINDOW = ["agent_id", "time_range_days", "as_of", "through_seq"]
_PATTERN_SUMMARY = [*_WINDOW, "plans", "successes", "baseline_rate", "patterns_tested",
                    "significant", "findings", "min_length", "max_length", "min_support", "fdr",
                    "stratify_by", "max_gap"]  # fmt: skip


class Result(ABC):
    """What every result shares: its window, HTML, CSV files and plots.

    A subclass names the plots it draws (``_PLOTS``, the default first) and says which
    tables it writes (:meth:`_csv_tables`) and shows (:meth:`_html_sections`).
    """

    _PLOTS: ClassVar[tuple[str, ...]]
    agent_id: str | None
    time_range_days: float | None
    as_of: datetime
    through_seq: int

    @property
    def _window_text(self) -> str:
        return "all" if self.time_range_days is None else f"{self.time_range_days:g}d"

    def _window_row(self) -> dict[str, object]:
        """The window columns that lead a result's summary file."""
        return {
            "agent_id": self.agent_id if self.agent_id is not None else "(all)",
            "time_range_days": self.time_range_days,
            "as_of": stamp(self.as_of),
            "through_seq": self.through_seq,
        }

    @abstractmethod
    def _csv_tables(self) -> dict[str, pd.DataFrame]:
        """The tables :meth:`to_csv` writes, by file name, in order."""

    @abstractmethod
    def _html_sections(self) -> list[tuple[str, pd.DataFrame]]:
        """The titled tables the HTML shows after the one-line summary."""

    def plot(self, kind: str | None = None, **options: Any) -> Axes:
        """Draw one of this result's plots and return its matplotlib ``Axes``.

        ``kind`` picks the function of :mod:`metalearn.plots`. An
        :class:`ExecutionAnalysis` draws ``"success_rates"`` (the default;
        :func:`~metalearn.plots.plot_success_rates`: ``by="agent"``, ``"goal_type"`` or
        ``"tool"``, ``top=``), ``"trend"`` (:func:`~metalearn.plots.plot_success_trend`)
        or ``"failure_reasons"`` (:func:`~metalearn.plots.plot_failure_reasons`; ``top=``);
        a :class:`PatternReport` draws ``"patterns"``
        (:func:`~metalearn.plots.plot_patterns`: ``top=``, ``fold=``); a
        :class:`HintTable` ``"hints"`` (:func:`~metalearn.plots.plot_hints`: ``prefix=``,
        ``top=``); a :class:`ChangeReport` ``"change"``
        (:func:`~metalearn.plots.plot_change`: ``group=``). ``ax=`` draws on existing axes
        instead of a new figure.
        """
        from metalearn import _drawing  # here, so that importing metalearn loads no matplotlib

        chosen = self._PLOTS[0] if kind is None else kind
        if chosen not in self._PLOTS:
            raise InvalidArgumentError(
                f"{type(self).__name__}.plot draws one of {list(self._PLOTS)}, not {kind!r}"
            )
        return _drawing.PLOTS[chosen](self, **options)

    def to_csv(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write this result's tables as CSV files into ``directory``; return the paths.

        The files and their columns are listed in :mod:`metalearn.export`.
        """
        return write_tables(self._csv_tables(), directory)

    def _repr_html_(self) -> str:
        return to_html(self)


@dataclass(frozen=True, repr=False)
class ExecutionAnalysis(Result):
    """Success rates, durations and failure reasons of the plans in one window.

    Every rate comes with its count, a 95% Wilson interval (``ci_low``, ``ci_high``) and
    ``low_n``: True where nobody should act on it, with fewer than 30 plans or an interval
    wider than 25 percentage points (:func:`metalearn._stats.low_n`).

    - ``overall``: one row: plans, successes, success_rate, ci_low, ci_high, low_n,
      median_duration_s, p95_duration_s
    - ``by_agent``: agent_id + the same columns; ``by_goal_type``: goal_type (missing shown
      as ``"(none)"``) + the same columns
    - ``by_tool``: tool, calls, errors, error_rate, plans (that used the tool), successes,
      success_rate, ci_low, ci_high, low_n, median_duration_ms, p95_duration_ms
    - ``by_day``: day (UTC date), plans, successes, success_rate, ci_low, ci_high, low_n
    - ``failure_reasons``: tool, error (numbers, ids and quoted values masked), count
      (error steps), plans

    Groups are sorted by ``plans`` descending (``by_day`` by day; ``failure_reasons`` by
    count). ``through_seq`` is the highest plan ``seq`` the analysis saw.
    """

    _PLOTS: ClassVar[tuple[str, ...]] = ("success_rates", "trend", "failure_reasons")

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
        return (
            f"<ExecutionAnalysis agent={self.agent_id or 'all'} window={self._window_text} "
            f"plans={self.n_plans} success_rate={self.success_rate:.3f} "
            f"through_seq={self.through_seq}>"
        )

    def _csv_tables(self) -> dict[str, pd.DataFrame]:
        window = pd.DataFrame([self._window_row()] * len(self.overall), columns=_WINDOW)
        days = pd.to_datetime(self.by_day["day"]).dt.strftime("%Y-%m-%d")
        tables = [
            pd.concat([window, self.overall.reset_index(drop=True)], axis=1),
            self.by_agent,
            self.by_goal_type,
            self.by_tool,
            self.by_day.assign(day=days),
            self.failure_reasons,
        ]
        return dict(zip(ANALYSIS_FILES, tables, strict=True))

    def _html_sections(self) -> list[tuple[str, pd.DataFrame]]:
        return [("overall", self.overall), ("by agent", self.by_agent),
                ("by goal type", self.by_goal_type), ("by tool", self.by_tool),
                ("failure reasons", self.failure_reasons)]  # fmt: skip


@dataclass(frozen=True, repr=False)
class PatternReport(Result):
    """Tool sequences tested for an effect on success in one window of plans.

    ``patterns`` has one row per contiguous tool sequence contained in at least
    ``min_support`` plans, most significant first:

    - pattern (tuple of tools), pattern_text (``" → "``-joined; ``" → … → "`` when the
      report's ``options.max_gap`` lets other steps come between), length, plans
      (containing it), successes, success_rate, ci_low, ci_high (95% Wilson)
    - lift (success_rate / baseline_rate) and p_value (two-sided Fisher exact test of
      with / without x succeeded / failed): the pooled comparison, always
    - mh_odds_ratio, mh_ci_low, mh_ci_high (Mantel-Haenszel common odds ratio within the
      strata of ``stratify_by``, Robins-Breslow-Greenland 95% interval), cmh_p_value
      (Cochran-Mantel-Haenszel, no continuity correction), homogeneity_p_value
      (Breslow-Day with Tarone's adjustment: small when the odds ratio differs between
      strata; empty with fewer than two), strata (strata that contribute: the pattern is
      in some but not all of their plans, and those plans neither all succeed nor all
      fail). Unstratified (``stratify_by=None``) they are the pooled table's.
    - simpson: the pooled direction (lift) and the stratified one disagree, and the
      stratified test is significant
    - q_value (Benjamini-Hochberg over all rows, of cmh_p_value when stratified, else of
      p_value), significant (q_value <= fdr), direction (``"success"`` when the MH odds
      ratio is above 1, or unstratified the lift, else ``"failure"``)
    - plans_needed: about how many more plans, at the same frequency and effect, a
      two-sided test at the report's BH threshold needs for 80% power (0 when
      significant; empty where no finite number exists: no effect, or an odds ratio of 0
      or infinity). See :func:`metalearn._stats.plans_needed`.
    - explained_by: the pattern_text of the stronger overlapping pattern that explains
      this one (empty otherwise), and finding: a significant pattern that nothing
      explains and that stays significant over the findings (the rule is in
      :mod:`metalearn._findings` and the README).

    ``options`` are the pattern options it was mined with (also read as ``min_length``,
    ``max_length``, ``min_support``, ``fdr``, ``stratify_by`` and ``max_gap``).
    """

    _PLOTS: ClassVar[tuple[str, ...]] = ("patterns",)

    patterns: pd.DataFrame
    baseline_rate: float
    n_plans: int
    n_successes: int
    agent_id: str | None
    time_range_days: float | None
    as_of: datetime
    options: PatternOptions
    through_seq: int
    computed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def min_length(self) -> int:
        """Fewest tools in a tested sequence."""
        return self.options.min_length

    @property
    def max_length(self) -> int:
        """Most tools in a tested sequence."""
        return self.options.max_length

    @property
    def min_support(self) -> int:
        """Fewest plans a sequence was found in to be tested."""
        return self.options.min_support

    @property
    def fdr(self) -> float:
        """The false discovery rate ``significant`` is controlled at."""
        return self.options.fdr

    @property
    def stratify_by(self) -> str | None:
        """The plan column whose values are the strata (None: pooled)."""
        return self.options.stratify_by

    @property
    def max_gap(self) -> int:
        """How many other steps may come between consecutive tools of a pattern (0:
        contiguous)."""
        return self.options.max_gap

    @property
    def findings(self) -> pd.DataFrame:
        """The significant patterns no stronger overlapping one explains, strongest first.

        The same columns as ``patterns``; the rows with ``finding`` True.
        """
        return self.patterns[self.patterns["finding"]].reset_index(drop=True)

    @property
    def successful(self) -> pd.DataFrame:
        """Findings that go with success, largest effect (MH odds ratio) first."""
        return self._found("success", ascending=False)

    @property
    def failing(self) -> pd.DataFrame:
        """Findings that go with failure, smallest MH odds ratio first."""
        return self._found("failure", ascending=True)

    def _found(self, direction: str, *, ascending: bool) -> pd.DataFrame:
        rows = self.findings[self.findings["direction"] == direction]
        rows = rows.sort_values(
            ["mh_odds_ratio", "plans", "length", "pattern_text"],
            ascending=[ascending, False, False, True],
        )
        return rows.reset_index(drop=True)

    def __repr__(self) -> str:
        significant = int(self.patterns["significant"].sum())
        return (
            f"<PatternReport agent={self.agent_id or 'all'} window={self._window_text} "
            f"plans={self.n_plans} patterns={len(self.patterns)} significant={significant} "
            f"findings={int(self.patterns['finding'].sum())} "
            f"stratify_by={self.stratify_by or 'none'} "
            + (f"max_gap={self.max_gap} " if self.max_gap else "")
            + f"baseline_rate={self.baseline_rate:.3f} through_seq={self.through_seq}>"
        )

    def _csv_tables(self) -> dict[str, pd.DataFrame]:
        summary = {
            **self._window_row(),
            "plans": self.n_plans, "successes": self.n_successes,
            "baseline_rate": self.baseline_rate, "patterns_tested": len(self.patterns),
            "significant": int(self.patterns["significant"].sum()),
            "findings": int(self.patterns["finding"].sum()),
            "min_length": self.min_length, "max_length": self.max_length,
            "min_support": self.min_support, "fdr": self.fdr,
            "stratify_by": self.stratify_by or "", "max_gap": self.max_gap,
        }  # fmt: skip
        tables = [
            pd.DataFrame([summary], columns=_PATTERN_SUMMARY),
            _pattern_text(self.patterns),
            _pattern_text(self.successful),
            _pattern_text(self.failing),
        ]
        return dict(zip(PATTERN_FILES, tables, strict=True))

    def _html_sections(self) -> list[tuple[str, pd.DataFrame]]:
        return [("findings that go with success", self.successful),
                ("findings that go with failure", self.failing)]  # fmt: skip


def _pattern_text(rows: pd.DataFrame) -> pd.DataFrame:
    """Patterns as their text form in a ``pattern`` column (for files)."""
    frame = rows.drop(columns="pattern").rename(columns={"pattern_text": "pattern"})
    return frame.astype({"pattern": "str"})


def _html_table(title: str, frame: pd.DataFrame, max_rows: int) -> str:
    shown = frame.drop(columns=["pattern"], errors="ignore")
    table = shown.to_html(index=False, max_rows=max_rows, float_format="{:.4g}".format,
                          na_rep="", border=0)  # fmt: skip
    more = f" (first {max_rows} of {len(frame):,})" if len(frame) > max_rows else ""
    return f"<h4>{html.escape(title)}{more}</h4>{table}"


def to_html(result: Result, *, max_rows: int = 10) -> str:
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
    if not isinstance(result, Result):
        raise TypeError(f"to_html takes an ExecutionAnalysis or a PatternReport, not {result!r}")
    head = f"<p><code>{html.escape(repr(result))}</code></p>"
    sections = result._html_sections()
    return head + "".join(_html_table(title, frame, max_rows) for title, frame in sections)


# -- planner feedback: next-step hints and change points --------------------------------

HINT_COLUMNS = [
    "next_tool", "plans", "successes", "success_rate", "ci_low", "ci_high", "lift",
    "p_value", "q_value", "significant", "low_n",
]  # fmt: skip
"""The columns of ``next_step_hints``, in order (see :class:`HintTable`)."""
HINT_TABLE_COLUMNS = ["prefix", "prefix_text", *HINT_COLUMNS]
"""The columns of :attr:`HintTable.hints`, in order."""
HINT_FILES = ("hint_summary.csv", "hints.csv")
"""The CSV files a HintTable writes, in this order."""
START_TEXT = "(start)"
"""The ``prefix_text`` of the empty prefix: hints for a plan's first step."""
CHANGE_COLUMNS = [
    "by", "group", "changed_at", "plans_before", "plans_after", "rate_before", "rate_after",
    "p_value", "q_value", "significant",
]  # fmt: skip
"""The columns of :attr:`ChangeReport.changes`, in order."""
CHANGE_BIN_COLUMNS = ["group", "bin", "plans", "successes", "first_at", "last_at"]
"""The columns of :attr:`ChangeReport.bins`, in order."""
CHANGE_FILES = ("changes.csv",)
"""The CSV files a ChangeReport writes."""
_HINT_SUMMARY = [*_WINDOW, "plans", "successes", "prefixes", "hints", "significant",
                 "max_prefix", "min_support", "fdr"]  # fmt: skip


def pattern_text(pattern: tuple[str, ...], max_gap: int = 0) -> str:
    """A pattern as text: ``"a → b"``; ``"a → … → b"`` when other steps may come between
    its tools (``max_gap > 0``).

    >>> pattern_text(("validate_input", "apply_change")), pattern_text(("a", "b"), max_gap=1)
    ('validate_input → apply_change', 'a → … → b')
    """
    return (" → … → " if max_gap else " → ").join(pattern)


def prefix_text(prefix: tuple[str, ...]) -> str:
    """A prefix as text: its tools joined by ``" → "``, or :data:`START_TEXT` when empty."""
    return " → ".join(prefix) if prefix else START_TEXT


@dataclass(frozen=True, repr=False)
class HintTable(Result):
    """Which next tool gives the best chance of success, after every frequent prefix.

    ``hints`` has one row per (prefix, next tool): prefix (tuple of the tools a plan ran
    first, ``()`` for none yet), prefix_text (``" → "``-joined, ``"(start)"`` when empty),
    next_tool (missing for the plans that ended right after the prefix), plans (with that
    prefix and next tool), successes, success_rate, ci_low, ci_high (95% Wilson), lift
    (success_rate / the rate of all plans with the prefix), p_value (two-sided Fisher exact
    test: this next tool against the other continuations of the prefix), q_value
    (Benjamini-Hochberg over the rows of the same prefix, so a prefix's rows are exactly
    what ``next_step_hints`` gives for it), significant (q_value <= fdr) and low_n (fewer
    than 30 plans or an interval wider than 25 points: :func:`~metalearn._stats.low_n`).
    Prefixes have up to ``max_prefix`` tools and at least ``min_support`` plans; rows at
    least ``min_support`` plans. Rows come by prefix (shortest first), then best
    ``ci_low`` first, so a rare lucky tool does not win. :meth:`for_prefix` reads one prefix's rows.
    """

    _PLOTS: ClassVar[tuple[str, ...]] = ("hints",)

    hints: pd.DataFrame
    n_plans: int
    n_successes: int
    agent_id: str | None
    time_range_days: float | None
    as_of: datetime
    options: HintOptions
    through_seq: int
    computed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def prefixes(self) -> int:
        """How many prefixes have rows."""
        return int(self.hints["prefix_text"].nunique())

    def for_prefix(self, prefix: tuple[str, ...] | list[str]) -> pd.DataFrame:
        """The rows of one prefix (columns :data:`HINT_COLUMNS`), best ``ci_low`` first.

        Empty when the prefix is not in the table (too rare, too long, or unknown tools).
        """
        wanted = HintOptions.prefix(prefix)
        rows = self.hints[self.hints["prefix"].map(lambda p: p == wanted).astype(bool)]
        return rows[HINT_COLUMNS].reset_index(drop=True)

    def __repr__(self) -> str:
        significant = int(self.hints["significant"].sum())
        return (
            f"<HintTable agent={self.agent_id or 'all'} window={self._window_text} "
            f"plans={self.n_plans} prefixes={self.prefixes} hints={len(self.hints)} "
            f"significant={significant} through_seq={self.through_seq}>"
        )

    def _csv_tables(self) -> dict[str, pd.DataFrame]:
        summary = {
            **self._window_row(),
            "plans": self.n_plans, "successes": self.n_successes, "prefixes": self.prefixes,
            "hints": len(self.hints), "significant": int(self.hints["significant"].sum()),
            "max_prefix": self.options.max_prefix, "min_support": self.options.min_support,
            "fdr": self.options.fdr,
        }  # fmt: skip
        rows = self.hints.drop(columns="prefix").rename(columns={"prefix_text": "prefix"})
        return dict(zip(HINT_FILES, [pd.DataFrame([summary], columns=_HINT_SUMMARY), rows],
                        strict=True))  # fmt: skip

    def _html_sections(self) -> list[tuple[str, pd.DataFrame]]:
        return [("next-step hints, by prefix (best ci_low first)", self.hints)]


@dataclass(frozen=True, repr=False)
class ChangeReport(Result):
    """The most likely change in success rate of each group, tested for "a change anywhere".

    ``changes`` has one row per group of ``by`` with at least ``min_plans`` plans: by,
    group, changed_at (finish time of the first plan after the change; missing when no
    split could be tested), plans_before, plans_after, rate_before, rate_after, p_value
    (permutation test of the maximum statistic over all splits: see
    :func:`~metalearn._stats.change_point_test`), q_value (Benjamini-Hochberg across the
    groups) and significant (q_value <= fdr); most significant first. ``bins`` holds each
    group's plans counted in consecutive slices of its time span (group, bin: the slice's
    number, plans, successes, first_at and last_at: its first and last finish; empty
    slices left out): what the change was found in, and what ``plot`` draws.
    """

    _PLOTS: ClassVar[tuple[str, ...]] = ("change",)

    changes: pd.DataFrame
    bins: pd.DataFrame
    time_range_days: float | None
    as_of: datetime
    options: ChangeOptions
    through_seq: int
    agent_id: str | None = None
    computed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def by(self) -> str:
        """What the plans were grouped by."""
        return self.options.by

    @property
    def significant(self) -> pd.DataFrame:
        """The rows of the groups whose change is significant."""
        return self.changes[self.changes["significant"]].reset_index(drop=True)

    def __repr__(self) -> str:
        return (
            f"<ChangeReport by={self.by} window={self._window_text} groups={len(self.changes)} "
            f"significant={int(self.changes['significant'].sum())} through_seq={self.through_seq}>"
        )

    def _csv_tables(self) -> dict[str, pd.DataFrame]:
        return {CHANGE_FILES[0]: self.changes}

    def _html_sections(self) -> list[tuple[str, pd.DataFrame]]:
        return [(f"change points by {self.by} (most significant first)", self.changes)]
