"""Matplotlib pictures of analyses, pattern reports and queue metrics.

Every ``plot_*`` function takes a result object (or the DataFrame it holds), draws on
``ax`` when one is given or else on a new pyplot figure sized for the data, and returns the
:class:`~matplotlib.axes.Axes`. Nothing here calls ``plt.show()`` or touches
``rcParams``: colours and sizes are passed to each call, so a notebook's style stays its
own. :func:`save_plots` writes the PNG files of a result without pyplot (no window, no
figure left open), for scripts and the command line.

The plot functions are defined in ``metalearn._drawing``, below the result types, so a
result can draw itself (``analysis.plot("trend")``) without importing this module; this
module, which does import the result types, adds :func:`save_plots`.

>>> from matplotlib.figure import Figure
>>> from metalearn import HistoryStore, MetaLearningService
>>> from metalearn.synthetic import make_history
>>> store = HistoryStore("sqlite://")
>>> _ = store.import_frames(*make_history(2_000, seed=3))
>>> with MetaLearningService(store) as service:
...     analysis = service.analyze_execution_patterns_sync(time_range_days=None)
...     report = service.extract_successful_patterns_sync(time_range_days=None)
>>> ax = plot_success_rates(analysis, by="goal_type", ax=Figure().subplots())
>>> ax.get_title().splitlines()[0]
'Success rate by goal type'
>>> print(ax.get_xlabel())  # 36 plans have no goal type: their rate is marked
success rate (% of plans; bars: 95% Wilson interval)
pale bars: low n (fewer than 30 plans or an interval wider than 25 points)
>>> print(plot_patterns(report, ax=Figure().subplots()).get_xlabel())
MH odds ratio of success, within goal_type strata (log scale, 95% CI)
4 findings of 17 significant (320 tested)
>>> store.close()
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from metalearn import _drawing
from metalearn._drawing import (
    plot_change,
    plot_failure_reasons,
    plot_hints,
    plot_patterns,
    plot_queue_metrics,
    plot_success_rates,
    plot_success_trend,
    strongest_patterns,
)
from metalearn._queue import METRIC_COLUMNS
from metalearn._results import ChangeReport, ExecutionAnalysis, HintTable, PatternReport

__all__ = [
    "QUEUE_METRICS_COLUMNS",
    "plot_change",
    "plot_failure_reasons",
    "plot_hints",
    "plot_patterns",
    "plot_queue_metrics",
    "plot_success_rates",
    "plot_success_trend",
    "save_plots",
    "strongest_patterns",
]

QUEUE_METRICS_COLUMNS = METRIC_COLUMNS
"""The columns of ``AnalysisQueue.metrics()``, one row per background job, in this order.

The same list object as ``metalearn._queue.METRIC_COLUMNS``, the one definition.
"""


Plottable = ExecutionAnalysis | PatternReport | HintTable | ChangeReport | pd.DataFrame


def _pictures(result: Plottable) -> dict[str, _drawing.Picture]:
    if isinstance(result, ExecutionAnalysis):
        return {
            "success_by_agent.png": _drawing.success_rates_picture(result, "agent", 20),
            "success_by_goal_type.png": _drawing.success_rates_picture(result, "goal_type", 20),
            "success_by_tool.png": _drawing.success_rates_picture(result, "tool", 20),
            "success_trend.png": _drawing.trend_picture(result),
            "failure_reasons.png": _drawing.failures_picture(result, 10),
        }
    if isinstance(result, PatternReport):
        return {"patterns.png": _drawing.patterns_picture(result, 15, True)}
    if isinstance(result, HintTable):
        return {"first_step_hints.png": _drawing.hints_picture(result, (), 15)}
    if isinstance(result, ChangeReport):
        return {f"change_by_{result.by}.png": _drawing.change_picture(result, None)}
    if isinstance(result, pd.DataFrame):
        return {"queue_metrics.png": _drawing.queue_picture(result)}
    raise TypeError(
        "save_plots takes an ExecutionAnalysis, a PatternReport, a HintTable, a ChangeReport "
        "or the DataFrame of "
        f"AnalysisQueue.metrics(), not {type(result).__name__}"
    )


def save_plots(
    result: Plottable,
    directory: str | os.PathLike[str],
    *,
    dpi: int = 150,
) -> list[Path]:
    """Write a result's plots as PNG files into ``directory`` (created if missing).

    Files, by result: an :class:`~metalearn.ExecutionAnalysis` gives
    ``success_by_agent.png``, ``success_by_goal_type.png``, ``success_by_tool.png``,
    ``success_trend.png`` and ``failure_reasons.png``; a :class:`~metalearn.PatternReport`
    ``patterns.png``; a :class:`~metalearn.HintTable` ``first_step_hints.png``; a
    :class:`~metalearn.ChangeReport` ``change_by_<by>.png`` (its most significant group);
    a queue-metrics DataFrame ``queue_metrics.png``. Existing files are
    replaced. Figures are drawn without pyplot, so no window opens and none stays open.

    >>> import tempfile
    >>> from metalearn import HistoryStore, MetaLearningService
    >>> from metalearn.synthetic import make_history
    >>> store = HistoryStore("sqlite://")
    >>> _ = store.import_frames(*make_history(500, seed=1))
    >>> with MetaLearningService(store) as service, tempfile.TemporaryDirectory() as out:
    ...     report = service.extract_successful_patterns_sync(time_range_days=None)
    ...     [path.name for path in save_plots(report, out)]
    ['patterns.png']
    >>> store.close()
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (draw, size) in _pictures(result).items():
        figure = Figure(figsize=size, layout="constrained")
        draw(figure.subplots())
        figure.savefig(target / name, dpi=dpi)
        written.append(target / name)
    return written
