"""How each picture of :mod:`metalearn.plots` is drawn: the plot functions themselves.

Each picture is a (draw, size) pair: what to draw on an ``Axes``, and the figure size it
wants; :func:`_show` draws it on given axes or a new pyplot figure, ``save_plots`` on a
pyplot-free ``Figure``. Colours and sizes are passed to each call; nothing touches
``rcParams`` or calls ``plt.show()``.

The results draw themselves through this module (``Result.plot``), so it does not import
them at run time: a result is told from one of its tables by not being a DataFrame, and
its types are imported for type checking only. :mod:`metalearn.plots` is the public
namespace of these functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from matplotlib import dates as mdates
from matplotlib import ticker
from matplotlib.axes import Axes
from numpy.typing import NDArray

from metalearn._errors import InvalidArgumentError
from metalearn._queue import METRIC_COLUMNS
from metalearn._stats import low_n, wilson_interval

if TYPE_CHECKING:
    from metalearn._results import ChangeReport, ExecutionAnalysis, HintTable, PatternReport

__all__ = [
    "PLOTS",
    "Picture",
    "change_picture",
    "failures_picture",
    "hints_picture",
    "patterns_picture",
    "plot_change",
    "plot_failure_reasons",
    "plot_hints",
    "plot_patterns",
    "plot_queue_metrics",
    "plot_success_rates",
    "plot_success_trend",
    "queue_picture",
    "strongest_patterns",
    "success_rates_picture",
    "trend_picture",
]

GroupBy = Literal["agent", "goal_type", "tool"]
Draw = Callable[[Axes], None]
Picture = tuple[Draw, tuple[float, float]]  # what to draw, and the figure size it wants

_BLUE, _GREY, _INK, _PALE = "#4c72b0", "#9a9a9a", "#333333", "#b8c7e0"
_SUCCESS, _FAILURE = "#1b9e77", "#d95f02"  # told apart by colour-blind readers too
_GROUPS: dict[str, tuple[str, str, str]] = {  # by: (key column, table, title)
    "agent": ("agent_id", "by_agent", "Success rate by agent"),
    "goal_type": ("goal_type", "by_goal_type", "Success rate by goal type"),
    "tool": ("tool", "by_tool", "Success rate of the plans that use each tool"),
}
_LIFT_FLOOR = 0.01  # a lift of 0 cannot sit on a log axis
_LIFT_TICKS = (
    (1.25, 1.5, 2, 3, 5),
    (1.5, 2, 3, 5, 10),
    (2, 5, 10, 20, 50, 100),
    (10, 100, 1000),
)


def _bar_figsize(rows: int) -> tuple[float, float]:
    return 9.0, float(np.clip(2.2 + 0.42 * rows, 4.2, 12.0))


def _new_axes(size: tuple[float, float]) -> Axes:
    import matplotlib.pyplot as plt  # only here: save_plots and given axes need no pyplot

    _, ax = plt.subplots(figsize=size, layout="constrained")
    return ax


def _show(picture: Picture, ax: Axes | None) -> Axes:
    draw, size = picture
    target = ax if ax is not None else _new_axes(size)
    draw(target)
    return target


def _shorten(text: object, width: int) -> str:
    text = "(no message)" if text is None or text is pd.NA or text != text else str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _title(title: str, result: ExecutionAnalysis | PatternReport | HintTable | ChangeReport,
           first: str) -> str:  # fmt: skip
    """The title, then ``first · agent · window`` in lines short enough for narrow axes."""
    days = result.time_range_days
    span = "whole history" if days is None else f"last {days:g} days to {result.as_of:%Y-%m-%d}"
    lines = [first]
    for part in (result.agent_id or "all agents", span):
        if len(lines[-1]) + len(part) + 3 <= 48:
            lines[-1] += f" · {part}"
        else:
            lines.append(part)
    return "\n".join([title, *lines])


def _label(ax: Axes, x: float, y: float, text: str, *, left: bool = False) -> None:
    """A small label just beside a point (right of it, or left with ``left``)."""
    box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5}
    ax.annotate(text, (x, y), xytext=(-5 if left else 5, 0), textcoords="offset points",
                ha="right" if left else "left", va="center", fontsize=8, color=_INK,
                bbox=box)  # fmt: skip


def _say_empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color=_INK)
    ax.set_xticks([])
    ax.set_yticks([])


def _percent_axis(ax: Axes, axis: Literal["x", "y"]) -> None:
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(ticker.FixedLocator([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]))
    target.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))


def _rate_over_time_axes(ax: Axes, xlabel: str) -> None:
    """A success-rate axis (0-100 %) over a concise date axis."""
    ax.set_ylim(0, 1)
    _percent_axis(ax, "y")
    ax.set_ylabel("success rate (% of plans)")
    ax.set_xlabel(xlabel)
    locator = mdates.AutoDateLocator(maxticks=10)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]


# -- success rates ---------------------------------------------------------------------


def _rates_table(
    analysis: ExecutionAnalysis | pd.DataFrame, by: str
) -> tuple[pd.DataFrame, float, str]:
    if by not in _GROUPS:
        raise InvalidArgumentError(f"by must be one of {sorted(_GROUPS)}, not {by!r}")
    key, table, title = _GROUPS[by]
    if not isinstance(analysis, pd.DataFrame):
        frame = _held(analysis, table)
        return frame, analysis.success_rate, _title(title, analysis, f"{analysis.n_plans:,} plans")
    _require(analysis, [key, "plans", "successes", "success_rate", "ci_low", "ci_high"], table)
    # Groups of agents or goal types split the plans; tools do not (a plan uses several).
    baseline = np.nan if by == "tool" else analysis["successes"].sum() / analysis["plans"].sum()
    return analysis, float(baseline), title


def success_rates_picture(analysis: ExecutionAnalysis | pd.DataFrame, by: str, top: int) -> Picture:
    frame, baseline, title = _rates_table(analysis, by)
    key = _GROUPS[by][0]
    shown = frame.nlargest(top, "plans").sort_values(["success_rate", "plans"])

    def draw(ax: Axes) -> None:
        ax.set_title(title)
        if shown.empty:
            _say_empty(ax, "no plans in this window")
            return
        _rate_bars(ax, shown, key, baseline)
        if len(frame) > len(shown):
            note = f"{len(shown)} of {len(frame)} {key}s: those with the most plans"
            ax.set_xlabel(f"{ax.get_xlabel()}\n{note}")

    return draw, _bar_figsize(len(shown))


def _low_n(frame: pd.DataFrame) -> NDArray[np.bool_]:
    """The ``low_n`` flags of a rate table (worked out when a hand-made table lacks them)."""
    if "low_n" in frame:
        flags: NDArray[np.bool_] = frame["low_n"].to_numpy(dtype=bool)
        return flags
    return low_n(frame["plans"], frame["ci_low"], frame["ci_high"])


def _rate_bars(ax: Axes, frame: pd.DataFrame, key: str, baseline: float) -> None:
    y = np.arange(len(frame))
    rate = frame["success_rate"].to_numpy(dtype="float64")
    high = frame["ci_high"].to_numpy(dtype="float64")
    error = np.vstack([rate - frame["ci_low"].to_numpy(dtype="float64"), high - rate])
    low = _low_n(frame)
    colours = np.where(low, _PALE, _BLUE).tolist()
    ax.barh(y, rate, height=0.6, color=colours, xerr=error, ecolor=_INK, capsize=3)
    for row, end, n, few in zip(y.tolist(), high, frame["plans"], low, strict=True):
        _label(ax, end, row, f"n={n:,}" + (" (low n)" if few else ""))
    labels = [_shorten(v if v == v else "(none)", 40) for v in frame[key].tolist()]
    ax.set_yticks(y, labels=labels)
    ax.set_ylim(-0.6, len(frame) + 0.2)  # a free row on top for the baseline's label
    ax.set_xlim(0, 1.13)
    _percent_axis(ax, "x")
    ax.set_xlabel("success rate (% of plans; bars: 95% Wilson interval)")
    if low.any():
        ax.set_xlabel(f"{ax.get_xlabel()}\npale bars: low n (fewer than 30 plans or an "
                      "interval wider than 25 points)")  # fmt: skip
    if baseline == baseline:
        ax.axvline(baseline, color=_INK, linestyle="--", linewidth=1)
        _label(ax, baseline, len(frame) - 0.1, f"all plans: {baseline:.1%}")


def plot_success_rates(
    analysis: ExecutionAnalysis | pd.DataFrame,
    *,
    by: GroupBy = "agent",
    top: int = 20,
    ax: Axes | None = None,
) -> Axes:
    """Success rate per agent, goal type or tool, with 95% Wilson intervals and counts.

    Horizontal bars, best at the top; each bar's error bar is its Wilson interval and
    ``n=`` its number of plans; the dashed line is the success rate of all plans. Only the
    ``top`` groups with the most plans are drawn. ``analysis`` is an
    :class:`~metalearn.ExecutionAnalysis` or one of its tables (``by_agent``,
    ``by_goal_type``, ``by_tool``); ``by="tool"`` shows the success rate of the plans
    that used each tool.

    >>> from matplotlib.figure import Figure
    >>> frame = pd.DataFrame({"agent_id": ["a", "b"], "plans": [40, 10],
    ...                       "successes": [30, 2], "success_rate": [0.75, 0.2],
    ...                       "ci_low": [0.6, 0.06], "ci_high": [0.86, 0.51]})
    >>> ax = plot_success_rates(frame, ax=Figure().subplots())
    >>> [t.get_text() for t in ax.get_yticklabels()], ax.texts[-1].get_text()
    (['b', 'a'], 'all plans: 64.0%')
    """
    return _show(success_rates_picture(analysis, by, top), ax)


# -- trend -----------------------------------------------------------------------------


def trend_picture(analysis: ExecutionAnalysis | pd.DataFrame) -> Picture:
    if not isinstance(analysis, pd.DataFrame):
        frame, baseline = _held(analysis, "by_day"), analysis.success_rate
        title = _title("Daily success rate", analysis, f"{analysis.n_plans:,} plans")
    else:
        _require(analysis, ["day", "plans", "successes", "success_rate", "ci_low", "ci_high"],
                 "by_day")  # fmt: skip
        frame, title = analysis, "Daily success rate"
        baseline = float(frame["successes"].sum() / frame["plans"].sum()) if len(frame) else np.nan

    def draw(ax: Axes) -> None:
        ax.set_title(title)
        if frame.empty:
            _say_empty(ax, "no plans in this window")
            return
        _trend_lines(ax, frame, baseline)

    return draw, (10.0, 4.8)


def _trend_lines(ax: Axes, frame: pd.DataFrame, baseline: float) -> None:
    days = pd.to_datetime(frame["day"]).to_numpy()
    counts = ax.twinx()
    bars = counts.bar(days, frame["plans"], width=0.8, color=_GREY, alpha=0.35, label="plans")
    counts.set_ylim(0, frame["plans"].max() * 2.6)  # keep the bars in the lower part
    counts.set_ylabel("plans per day (grey bars)")
    ax.set_zorder(counts.get_zorder() + 1)  # draw the rate over the bars
    ax.patch.set_visible(False)
    band = ax.fill_between(days, frame["ci_low"], frame["ci_high"], color=_BLUE, alpha=0.25,
                           linewidth=0, label="95% Wilson interval")  # fmt: skip
    (line,) = ax.plot(days, frame["success_rate"], color=_BLUE, marker="o", markersize=3,
                      label="success rate")  # fmt: skip
    handles = [line, band, bars]
    low = _low_n(frame)
    if low.any():
        handles.append(ax.scatter(days[low], frame["success_rate"][low], s=36, zorder=3,
                                  facecolors="white", edgecolors=_BLUE, label="low n"))  # fmt: skip
    if baseline == baseline:
        handles.append(ax.axhline(baseline, color=_INK, linestyle="--", linewidth=1,
                                  label=f"all plans: {baseline:.1%}"))  # fmt: skip
    _rate_over_time_axes(ax, "day the plans finished (UTC)")
    ax.legend(handles=handles, loc="upper left", fontsize=8, ncols=len(handles), framealpha=0.9)


def plot_success_trend(
    analysis: ExecutionAnalysis | pd.DataFrame, *, ax: Axes | None = None
) -> Axes:
    """Daily success rate with its 95% interval band, over grey bars of plans per day.

    ``analysis`` is an :class:`~metalearn.ExecutionAnalysis` or its ``by_day`` table. The
    plan counts use a second y axis on the right; the dashed line is the rate of all plans.

    >>> from matplotlib.figure import Figure
    >>> frame = pd.DataFrame({"day": ["2026-01-01", "2026-01-02"], "plans": [20, 30],
    ...                       "successes": [10, 24], "success_rate": [0.5, 0.8],
    ...                       "ci_low": [0.3, 0.63], "ci_high": [0.7, 0.9]})
    >>> plot_success_trend(frame, ax=Figure().subplots()).get_ylabel()
    'success rate (% of plans)'
    """
    return _show(trend_picture(analysis), ax)


# -- patterns --------------------------------------------------------------------------


def _parts(pattern: tuple[str, ...]) -> set[tuple[str, ...]]:
    """Every shorter contiguous run of tools inside ``pattern``."""
    size = len(pattern)
    runs = {pattern[i:j] for i in range(size) for j in range(i + 1, size + 1)}
    return runs - {pattern}


def _folded(rows: pd.DataFrame) -> pd.DataFrame:
    """Drop the rows that say nothing beyond a shorter or longer row of the same direction.

    A plan containing a sequence contains each run inside it, so a run found in exactly as
    many plans as a longer sequence is found in the same plans: it gives way to the longer
    one. A sequence that extends a run of the same direction found in more plans is a
    narrower case of it: it gives way to the run.
    """
    seen = {p: (n, d) for p, n, d in zip(rows["pattern"], rows["plans"], rows["direction"],
                                         strict=True)}  # fmt: skip
    same_plans = {
        part for p, (n, _) in seen.items() for part in _parts(p) if seen.get(part, (0,))[0] == n
    }
    keep = [
        p not in same_plans
        and not any(part in seen and seen[part][1] == d and seen[part][0] > n for part in _parts(p))
        for p, (n, d) in seen.items()
    ]
    return rows[np.array(keep, dtype=bool)]


def strongest_patterns(
    report: PatternReport | pd.DataFrame, *, top: int = 15, fold: bool = True
) -> pd.DataFrame:
    """The patterns :func:`plot_patterns` draws: the ``top`` findings furthest from no effect.

    Ranked by the size of the effect, ``|log(mh_odds_ratio)|`` (``|log(lift)|`` for a
    table without it), so strong failure patterns rank with strong success patterns.
    With ``fold`` (the default) only the findings are drawn (``finding``: significant and
    not explained by a stronger overlapping pattern). A table without a ``finding``
    column is folded the older, simpler way:

    - a pattern inside a longer one found in exactly the same plans gives way to it
      (``retry`` and ``retry → retry`` to ``retry → retry → retry`` when ``retry`` only
      occurs there);
    - a pattern that extends a significant pattern of the same direction found in more
      plans gives way to it (``query_db → validate_input`` to ``validate_input``).

    ``fold=False`` ranks every significant row. Returns the rows of ``report.patterns``
    (same columns), strongest first.

    >>> rows = pd.DataFrame({
    ...     "pattern": [("a",), ("a", "b"), ("x", "a", "b"), ("c",)],
    ...     "plans": [50, 50, 12, 40], "lift": [1.5, 1.5, 1.9, 0.4],
    ...     "significant": [True, True, True, True],
    ...     "direction": ["success", "success", "success", "failure"]})
    >>> strongest_patterns(rows)["pattern"].tolist()
    [('c',), ('a', 'b')]
    >>> strongest_patterns(rows, fold=False, top=2)["pattern"].tolist()
    [('c',), ('x', 'a', 'b')]
    """
    patterns = report if isinstance(report, pd.DataFrame) else _held(report, "patterns")
    _require(patterns, ["pattern", "plans", "lift", "significant", "direction"], "patterns")
    rows = patterns[patterns["significant"].astype(bool)]
    if fold:
        rows = rows[rows["finding"].astype(bool)] if "finding" in rows else _folded(rows)
    effect = rows["mh_odds_ratio"] if "mh_odds_ratio" in rows else rows["lift"]
    clipped = np.clip(effect.to_numpy(dtype="float64"), _LIFT_FLOOR, 1 / _LIFT_FLOOR)
    strength = np.abs(np.log(np.nan_to_num(clipped, nan=1.0)))
    order = np.lexsort((-rows["plans"].to_numpy(), -strength))
    return rows.iloc[order[:top]].reset_index(drop=True)


def patterns_picture(report: PatternReport | pd.DataFrame, top: int, fold: bool) -> Picture:
    patterns = report if isinstance(report, pd.DataFrame) else _held(report, "patterns")
    rows = strongest_patterns(patterns, top=top, fold=fold)
    odds = "mh_odds_ratio" in rows
    rows = rows.sort_values("mh_odds_ratio" if odds else "lift")
    baseline = np.nan if odds else _baseline(report, patterns)
    significant = int(patterns["significant"].sum()) if len(patterns) else 0
    title = "Tool sequences that go with success and with failure"
    strata = None if isinstance(report, pd.DataFrame) else report.stratify_by
    if not isinstance(report, pd.DataFrame):
        rate = f"{report.baseline_rate:.1%} succeeded"
        title = _title(title, report, f"{report.n_plans:,} plans, {rate}")
    shown = "findings" if fold and "finding" in patterns else "significant patterns"
    caption = f"{len(rows)} {shown} of {significant:,} significant ({len(patterns):,} tested)"
    fdr = "" if isinstance(report, pd.DataFrame) else f", FDR {report.fdr:g}"

    def draw(ax: Axes) -> None:
        ax.set_title(title)
        if rows.empty:
            tested = f"{len(patterns):,} tool sequences tested"
            _say_empty(ax, f"no significant patterns\n({tested}{fdr})")
            return
        if odds:
            _odds_bars(ax, rows, strata)
        else:
            _lift_bars(ax, rows, baseline)
        folded = ", overlaps folded" if fold and "finding" not in patterns else ""
        ax.set_xlabel(f"{ax.get_xlabel()}\n{caption}{folded}")

    return draw, _bar_figsize(len(rows))


def _odds_bars(ax: Axes, rows: pd.DataFrame, strata: str | None) -> None:
    """One bar per finding from odds ratio 1 to its MH odds ratio, with its 95% interval."""
    y = np.arange(len(rows))
    odds = np.clip(rows["mh_odds_ratio"].to_numpy(dtype="float64"), _LIFT_FLOOR, 1 / _LIFT_FLOOR)
    low = np.clip(rows["mh_ci_low"].to_numpy(dtype="float64"), _LIFT_FLOOR, odds)
    high = np.clip(rows["mh_ci_high"].to_numpy(dtype="float64"), odds, 1 / _LIFT_FLOOR)
    low, high = np.nan_to_num(low, nan=_LIFT_FLOOR), np.nan_to_num(high, nan=1 / _LIFT_FLOOR)
    success = (rows["direction"] == "success").to_numpy()
    ax.barh(y, odds - 1, left=1, height=0.6, color=np.where(success, _SUCCESS, _FAILURE).tolist())
    ax.errorbar(odds, y, xerr=np.vstack([odds - low, high - odds]), fmt="none", ecolor=_INK,
                capsize=3, linewidth=1)  # fmt: skip
    simpson = rows["simpson"].to_numpy(dtype=bool) if "simpson" in rows else np.zeros(len(y), bool)
    for row, up, down, n, good, flip, lift in zip(y.tolist(), high, low, rows["plans"], success,
                                                  simpson, rows["lift"], strict=True):  # fmt: skip
        text = f"n={n:,}" + (f"  Simpson: pooled lift {lift:.2f}\u00d7" if flip else "")
        _label(ax, up if good else down, row, text, left=not good)
    ax.axvline(1, color=_INK, linewidth=1)
    _lift_axis(ax, float(low.min()), float(high.max()))
    labels = [("\u26a0 " if flip else "") + _shorten(" → ".join(p), 58)
              for p, flip in zip(rows["pattern"], simpson, strict=True)]  # fmt: skip
    ax.set_yticks(y, labels=labels)
    ax.set_ylim(-0.6, len(rows) + 0.2)
    within = "pooled, no strata" if strata is None else f"within {strata} strata"
    ax.set_xlabel(f"MH odds ratio of success, {within} (log scale, 95% CI)")
    _side_titles(ax, len(rows))


def _side_titles(ax: Axes, rows: int) -> None:
    for text, left, colour in [("goes with success →", False, _SUCCESS),
                               ("← goes with failure", True, _FAILURE)]:  # fmt: skip
        ax.annotate(text, (1, rows - 0.1), xytext=(-6 if left else 6, 0), color=colour,
                    textcoords="offset points", ha="right" if left else "left", va="center",
                    fontsize=9, fontweight="bold")  # fmt: skip


def _baseline(report: PatternReport | pd.DataFrame, patterns: pd.DataFrame) -> float:
    if not isinstance(report, pd.DataFrame):
        return report.baseline_rate
    _require(patterns, ["success_rate", "ci_low", "ci_high"], "patterns")
    usable = patterns[(patterns["lift"] > 0) & np.isfinite(patterns["lift"])]
    return float((usable["success_rate"] / usable["lift"]).median()) if len(usable) else np.nan


def _lift_bars(ax: Axes, rows: pd.DataFrame, baseline: float) -> None:
    y = np.arange(len(rows))
    lift = np.clip(rows["lift"].to_numpy(dtype="float64"), _LIFT_FLOOR, None)
    low = np.clip(rows["ci_low"].to_numpy(dtype="float64") / baseline, _LIFT_FLOOR, lift)
    high = np.maximum(rows["ci_high"].to_numpy(dtype="float64") / baseline, lift)
    success = (rows["direction"] == "success").to_numpy()
    ax.barh(y, lift - 1, left=1, height=0.6, color=np.where(success, _SUCCESS, _FAILURE))
    ax.errorbar(lift, y, xerr=np.vstack([lift - low, high - lift]), fmt="none", ecolor=_INK,
                capsize=3, linewidth=1)  # fmt: skip
    for row, up, down, n, good in zip(y.tolist(), high, low, rows["plans"], success, strict=True):
        _label(ax, up if good else down, row, f"n={n:,}", left=not good)
    ax.axvline(1, color=_INK, linewidth=1)
    _lift_axis(ax, float(low.min()), float(high.max()))
    ax.set_yticks(y, labels=[_shorten(" → ".join(p), 60) for p in rows["pattern"]])
    ax.set_ylim(-0.6, len(rows) + 0.2)  # a free row on top says which side is which
    _side_titles(ax, len(rows))


def _lift_axis(ax: Axes, low: float, high: float) -> None:
    """A log axis around lift 1 with plain, well-spaced ticks (0.5, 1, 2 times)."""
    # Room for the n= labels, and at least 35% of the width on each side of 1 for its title.
    reach_left, reach_right = -math.log10(min(low, 0.95) / 2), math.log10(max(high, 1.05) * 1.8)
    reach_right = max(reach_right, 0.54 * reach_left)
    reach_left = max(reach_left, 0.54 * reach_right)
    left, right = 10**-reach_left, 10**reach_right
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    for steps in _LIFT_TICKS:  # the finest set whose labels stay apart
        shown = sorted({t for s in (1.0, *steps) for t in (s, 1 / s) if left <= t <= right})
        if np.diff(np.log10(shown)).min(initial=1.0) >= (reach_left + reach_right) / 12:
            break
    ax.xaxis.set_major_locator(ticker.FixedLocator(shown))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.2g}\u00d7"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("lift: success rate with the pattern ÷ overall success rate (log scale)")


def plot_patterns(
    report: PatternReport | pd.DataFrame,
    *,
    top: int = 15,
    fold: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """The report's findings by effect size, success and failure in two colours.

    One bar per finding from odds ratio 1 to its Mantel-Haenszel odds ratio (within the
    report's strata) on a log axis (green: goes with success, orange: with failure), its
    95% interval and ``n=`` the plans containing it. A Simpson row (pooled, it goes the
    other way) is marked with ⚠ and its pooled lift. The rows are
    :func:`strongest_patterns` (``top``, ``fold``). When nothing is significant the axes
    say so. ``report`` is a :class:`~metalearn.PatternReport` or its ``patterns`` table;
    a table without the odds-ratio columns is drawn by lift (its success rate ÷ the
    baseline, with the Wilson interval).

    >>> from matplotlib.figure import Figure
    >>> empty = pd.DataFrame({"pattern": [("a",)], "plans": [30], "successes": [15],
    ...                       "success_rate": [0.5], "ci_low": [0.33], "ci_high": [0.67],
    ...                       "lift": [1.0], "significant": [False], "direction": ["failure"]})
    >>> ax = plot_patterns(empty, ax=Figure().subplots())
    >>> ax.texts[0].get_text().splitlines()[0]
    'no significant patterns'
    """
    return _show(patterns_picture(report, top, fold), ax)


# -- failure reasons -------------------------------------------------------------------


def failures_picture(analysis: ExecutionAnalysis | pd.DataFrame, top: int) -> Picture:
    if not isinstance(analysis, pd.DataFrame):
        frame = _held(analysis, "failure_reasons")
        title = _title("Most common step errors", analysis, f"{analysis.n_plans:,} plans")
    else:
        _require(analysis, ["tool", "error", "count", "plans"], "failure_reasons")
        frame, title = analysis, "Most common step errors"
    shown = frame.nlargest(top, "count").iloc[::-1]

    def draw(ax: Axes) -> None:
        ax.set_title(title)
        if shown.empty:
            _say_empty(ax, "no failed steps in this window")
            return
        y = np.arange(len(shown))
        ax.barh(y, shown["count"], height=0.6, color=_FAILURE)
        for row, count, plans in zip(y.tolist(), shown["count"], shown["plans"], strict=True):
            _label(ax, count, row, f"in {plans:,} plan" + ("" if plans == 1 else "s"))
        labels = [f"{tool}: {_shorten(error, 60)}" for tool, error in
                  zip(shown["tool"], shown["error"], strict=True)]  # fmt: skip
        ax.set_yticks(y, labels=labels, fontsize=8)
        ax.set_ylim(-0.6, len(shown) - 0.4)
        ax.set_xlim(0, shown["count"].max() * 1.25)
        ax.set_xlabel("failed steps (count)")
        if len(frame) > len(shown):
            ax.set_xlabel(
                f"failed steps (count)\ntop {len(shown)} of {len(frame):,} (tool, error) pairs"
            )

    return draw, _bar_figsize(len(shown))


def plot_failure_reasons(
    analysis: ExecutionAnalysis | pd.DataFrame, *, top: int = 10, ax: Axes | None = None
) -> Axes:
    """The ``top`` most frequent (tool, error message) pairs among failed steps.

    Bars count error steps; ``in n plans`` says how many plans they hit. ``analysis`` is an
    :class:`~metalearn.ExecutionAnalysis` or its ``failure_reasons`` table.

    >>> from matplotlib.figure import Figure
    >>> frame = pd.DataFrame({"tool": ["fetch"], "error": ["timeout after <n> ms"],
    ...                       "count": [12], "plans": [9]})
    >>> ax = plot_failure_reasons(frame, ax=Figure().subplots())
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['fetch: timeout after <n> ms']
    """
    return _show(failures_picture(analysis, top), ax)


# -- queue metrics ---------------------------------------------------------------------


def _time_unit(span_s: float) -> tuple[str, float]:
    if span_s < 120:
        return "s", 1.0
    return ("min", 60.0) if span_s < 7_200 else ("h", 3_600.0)


def queue_picture(metrics: pd.DataFrame) -> Picture:
    _require(metrics, METRIC_COLUMNS, "queue metrics")
    statuses = metrics["status"].value_counts()
    counts = ", ".join(f"{statuses.get(s, 0):,} {s}" for s in ("completed", "failed", "cancelled"))
    title = f"Background analysis jobs\n{len(metrics):,} jobs: {counts}"

    def draw(ax: Axes) -> None:
        ax.set_title(title)
        if metrics["submitted_at"].notna().sum() == 0:
            _say_empty(ax, "no jobs yet")
            return
        _queue_points(ax, metrics)

    return draw, (10.0, 4.8)


def _queue_points(ax: Axes, metrics: pd.DataFrame) -> None:
    start = metrics["submitted_at"].min()
    end = metrics[["submitted_at", "finished_at"]].max().max()
    unit, seconds = _time_unit((end - start).total_seconds())

    def since(column: str) -> np.ndarray:
        elapsed = (metrics[column] - start).dt.total_seconds() / seconds
        return np.asarray(elapsed, dtype="float64")

    failed = (metrics["status"] == "failed").to_numpy()
    wait = metrics["wait_ms"].to_numpy(dtype="float64")
    run = metrics["run_ms"].to_numpy(dtype="float64")
    submitted, done = since("submitted_at"), since("finished_at")
    waited, ran = np.isfinite(wait) & np.isfinite(submitted), np.isfinite(run) & np.isfinite(done)
    ax.scatter(submitted[waited], wait[waited], s=14, color=_BLUE,
               label="wait: submitted → started")  # fmt: skip
    ax.scatter(done[ran & ~failed], run[ran & ~failed], s=14, marker="s", color=_SUCCESS,
               label="run: started → finished")  # fmt: skip
    if (ran & failed).any():
        ax.scatter(done[ran & failed], run[ran & failed], s=30, marker="x", color=_FAILURE,
                   label="run of a failed job")  # fmt: skip
    _duration_axis(ax, np.concatenate([wait, run]))
    ax.set_xlabel(f"time since the first job was submitted ({unit})")
    handles, _ = ax.get_legend_handles_labels()
    top = _throughput(ax, done[np.isfinite(done)], unit)
    top.legend(handles=[*handles, *top.get_legend_handles_labels()[0]], loc="upper center",
               bbox_to_anchor=(0.5, -0.14), ncols=4, fontsize=8, frameon=False)  # fmt: skip


def _duration_axis(ax: Axes, values: np.ndarray) -> None:
    positive = values[np.isfinite(values) & (values > 0)]
    if len(positive) and positive.max() / positive.min() > 50:
        ax.set_yscale("log")
    ax.set_ylabel("time per job (ms)")


def _throughput(ax: Axes, finished: np.ndarray, unit: str) -> Axes:
    """Jobs finished per time unit, as a step line on a right-hand axis; returns that axis."""
    rate = ax.twinx()
    rate.set_ylabel(f"jobs finished per {unit} (grey line)")
    if len(finished) == 0:
        return rate
    bins = int(np.clip(round(math.sqrt(len(finished))), 1, 30))
    counts, edges = np.histogram(finished, bins=bins, range=(0.0, max(finished.max(), 1e-9)))
    rate.stairs(counts / np.diff(edges), edges, color=_GREY, linewidth=1.5,
                label=f"throughput: jobs finished per {unit}")  # fmt: skip
    rate.set_ylim(0, None)
    return rate


def plot_queue_metrics(metrics: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Wait and run time of each background job over time, and the queue's throughput.

    ``metrics`` is ``AnalysisQueue.metrics()``: one row per job with the columns of
    :data:`metalearn.plots.QUEUE_METRICS_COLUMNS`. Dots: how long each job waited, at its
    submission; squares: how long it ran, at its end (crosses: failed jobs); grey steps on
    the right axis: jobs finished per unit of time. Times are relative to the first submission; the
    duration axis turns logarithmic when durations span more than a factor of 50.

    >>> from matplotlib.figure import Figure
    >>> t0 = pd.Timestamp("2026-01-01 12:00", tz="UTC")
    >>> metrics = pd.DataFrame({
    ...     "job_id": [1, 2], "agents": [("a",), ("b", "c")], "plans": [1, 3],
    ...     "priority": [0, 0], "submitted_at": [t0, t0 + pd.Timedelta("1s")],
    ...     "started_at": [t0, t0 + pd.Timedelta("2s")],
    ...     "finished_at": [t0 + pd.Timedelta("1s"), t0 + pd.Timedelta("3s")],
    ...     "wait_ms": [0.5, 1000.0], "run_ms": [1000.0, 900.0], "attempts": [1, 1],
    ...     "status": ["completed", "completed"], "error": [None, None]})
    >>> plot_queue_metrics(metrics, ax=Figure().subplots()).get_xlabel()
    'time since the first job was submitted (s)'
    """
    return _show(queue_picture(metrics), ax)


# -- next-step hints -------------------------------------------------------------------

_ENDED_LABEL = "(plan ended)"


def _hint_rows(hints: HintTable | pd.DataFrame, prefix: tuple[str, ...]) -> pd.DataFrame:
    if not isinstance(hints, pd.DataFrame):
        rows: pd.DataFrame = hints.for_prefix(prefix)
        return rows
    _require(hints, ["next_tool", "plans", "success_rate", "ci_low", "ci_high", "lift"], "hints")
    if "prefix" in hints.columns:  # a hint table's rows: keep the prefix asked for
        return hints[hints["prefix"].map(lambda p: tuple(p) == prefix).astype(bool)]
    return hints


def hints_picture(hints: HintTable | pd.DataFrame, prefix: tuple[str, ...], top: int) -> Picture:
    rows = _hint_rows(hints, prefix)
    shown = rows.head(top).iloc[::-1].assign(next_tool=rows["next_tool"].fillna(_ENDED_LABEL))
    usable = rows[(rows["lift"] > 0) & np.isfinite(rows["lift"])]
    baseline = float((usable["success_rate"] / usable["lift"]).iloc[0]) if len(usable) else np.nan
    after = " → ".join(prefix) if prefix else "the start (first step)"
    title = f"Next step after {_shorten(after, 60)}"
    if not isinstance(hints, pd.DataFrame):
        title = _title(title, hints, f"next tools in >= {hints.options.min_support} plans")

    def draw(ax: Axes) -> None:
        ax.set_title(title)
        if shown.empty:
            _say_empty(ax, "no next tool seen often enough after this prefix")
            return
        _rate_bars(ax, shown, "next_tool", baseline)
        ax.set_xlabel(ax.get_xlabel().replace("% of plans", "% of plans with the prefix")
                      + "\nranked by the interval's lower end (best at the top); dashed: "
                      "all plans with the prefix")  # fmt: skip

    return draw, _bar_figsize(len(shown))


def plot_hints(
    hints: HintTable | pd.DataFrame,
    prefix: tuple[str, ...] | list[str] = (),
    *,
    top: int = 15,
    ax: Axes | None = None,
) -> Axes:
    """The success rate of each next tool after ``prefix``, with 95% Wilson intervals.

    Horizontal bars, best lower bound at the top (the hints' ranking), ``n=`` the plans
    with the prefix and that next tool, ``(plan ended)`` for plans that stopped there; the
    dashed line is the rate of all plans with the prefix. ``hints`` is a
    :class:`~metalearn.HintTable` (``prefix`` picks its rows; ``()`` is the first step)
    or the frame of ``next_step_hints``.

    >>> from matplotlib.figure import Figure
    >>> frame = pd.DataFrame({"next_tool": ["verify", None], "plans": [40, 12],
    ...                       "successes": [34, 3], "success_rate": [0.85, 0.25],
    ...                       "ci_low": [0.71, 0.09], "ci_high": [0.93, 0.53],
    ...                       "lift": [1.19, 0.35]})
    >>> ax = plot_hints(frame, ["plan"], ax=Figure().subplots())
    >>> [t.get_text() for t in ax.get_yticklabels()], ax.get_title()
    (['(plan ended)', 'verify'], 'Next step after plan')
    """
    return _show(hints_picture(hints, tuple(prefix), top), ax)


# -- change points ---------------------------------------------------------------------

_CHANGE_POINTS = 60  # at most this many points on the line: bins are merged into them


def _merged_bins(bins: pd.DataFrame) -> pd.DataFrame:
    """A group's bins merged into at most ``_CHANGE_POINTS`` consecutive points."""
    chunk = max(1, math.ceil(len(bins) / _CHANGE_POINTS))
    merged = bins.groupby(np.arange(len(bins)) // chunk).agg(
        plans=("plans", "sum"), successes=("successes", "sum"), first_at=("first_at", "min"),
        last_at=("last_at", "max"))  # fmt: skip
    low, high = wilson_interval(merged["successes"], merged["plans"])
    middle = merged["first_at"] + (merged["last_at"] - merged["first_at"]) / 2
    return merged.assign(rate=merged["successes"] / merged["plans"], low=low, high=high,
                         at=middle)  # fmt: skip


def change_picture(report: ChangeReport, group: str | None) -> Picture:
    changes, bins = _held(report, "changes"), _held(report, "bins")
    chosen = changes["group"].iloc[0] if group is None and len(changes) else group
    found = changes[changes["group"] == chosen]
    title = f"Success rate of {_shorten(chosen, 40)} over time" if chosen else "Change points"
    if len(found):
        plans = int(found["plans_before"].iloc[0] + found["plans_after"].iloc[0])
        days = report.time_range_days
        span = "whole history" if days is None else f"last {days:g} days to {report.as_of:%Y-%m-%d}"
        title += f"\n{plans:,} plans of this {report.by} · {span}"
    points = _merged_bins(bins[bins["group"] == chosen]) if len(found) else None

    def draw(ax: Axes) -> None:
        ax.set_title(title)
        if points is None or points.empty:
            _say_empty(ax, f"no {report.by} {chosen!r} with >= {report.options.min_plans} plans"
                       if chosen else "no group has enough plans")  # fmt: skip
            return
        _change_lines(ax, points, found.iloc[0])

    return draw, (10.0, 4.8)


def _change_lines(ax: Axes, points: pd.DataFrame, row: pd.Series) -> None:
    at = points["at"].to_numpy()
    band = ax.fill_between(at, points["low"], points["high"], color=_BLUE, alpha=0.2,
                           linewidth=0, label="95% Wilson interval")  # fmt: skip
    (line,) = ax.plot(at, points["rate"], color=_BLUE, marker="o", markersize=3,
                      label="success rate (consecutive plans)")  # fmt: skip
    handles = [line, band]
    if row["changed_at"] == row["changed_at"]:  # a split was tested
        colour = _FAILURE if row["rate_after"] < row["rate_before"] else _SUCCESS
        colour = colour if row["significant"] else _GREY
        changed = row["changed_at"]
        start, end = points["first_at"].min(), points["last_at"].max()
        ax.hlines([row["rate_before"], row["rate_after"]], [start, changed], [changed, end],
                  colors=colour, linewidth=2.5)  # fmt: skip
        verdict = "change" if row["significant"] else "most likely change, not significant"
        handles.append(ax.axvline(changed, color=colour, linestyle="--", linewidth=1.5,
                                  label=f"{verdict}: {changed:%Y-%m-%d %H:%M} "
                                  f"({row['rate_before']:.1%} → {row['rate_after']:.1%}, "
                                  f"q={row['q_value']:.2g})"))  # fmt: skip
    _rate_over_time_axes(ax, "when the plans finished (UTC)")
    ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.9)


def plot_change(report: ChangeReport, group: str | None = None, *, ax: Axes | None = None) -> Axes:
    """One group's success rate over time, with its most likely change point.

    The line is the rate of consecutive plans in finish order (about 60 points, each with
    its 95% Wilson band); the two flat segments are the rates before and after the change
    and the dashed line its time, coloured when the change is significant (orange: a
    drop, green: a rise), grey when not. ``group`` defaults to the most significant one.
    ``report`` is a :class:`~metalearn.ChangeReport` (its ``bins`` are what is drawn).
    """
    return _show(change_picture(report, group), ax)


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a DataFrame ({what}), not {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidArgumentError(
            f"the {what} table lacks the columns {missing}; pass the result object or its "
            f"{what} table unchanged (it has {list(frame.columns)})"
        )


def _held(result: object, table: str) -> pd.DataFrame:
    """The table ``table`` of a result object (anything else: a clear TypeError)."""
    frame = getattr(result, table, None)
    if not isinstance(frame, pd.DataFrame):  # neither a result nor one of its tables
        raise TypeError(f"expected a DataFrame ({table}), not {type(result).__name__}")
    return frame


PLOTS: dict[str, Callable[..., Axes]] = {
    "success_rates": plot_success_rates,
    "trend": plot_success_trend,
    "failure_reasons": plot_failure_reasons,
    "patterns": plot_patterns,
    "hints": plot_hints,
    "change": plot_change,
}
"""The plot function of each ``kind`` a result's ``plot()`` draws."""
