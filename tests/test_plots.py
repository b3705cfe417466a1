"""metalearn.plots: what each picture shows, empty cases, files, and no global side effects."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from metalearn import (
    ExecutionAnalysis,
    HistoryStore,
    InvalidArgumentError,
    MetaLearningService,
    PatternReport,
)
from metalearn.plots import (
    QUEUE_METRICS_COLUMNS,
    plot_failure_reasons,
    plot_patterns,
    plot_queue_metrics,
    plot_success_rates,
    plot_success_trend,
    save_plots,
    strongest_patterns,
)
from metalearn.synthetic import is_planted_related, planted_patterns

T0 = pd.Timestamp("2026-03-01 12:00", tz="UTC")


@pytest.fixture(scope="module")
def results(synthetic_store: HistoryStore) -> tuple[ExecutionAnalysis, PatternReport]:
    with MetaLearningService(synthetic_store) as service:
        return (
            service.analyze_execution_patterns_sync(time_range_days=None),
            service.extract_successful_patterns_sync(time_range_days=None),
        )


@pytest.fixture
def analysis(results: tuple[ExecutionAnalysis, PatternReport]) -> ExecutionAnalysis:
    return results[0]


@pytest.fixture
def report(results: tuple[ExecutionAnalysis, PatternReport]) -> PatternReport:
    return results[1]


@pytest.fixture
def ax() -> Axes:
    """Axes of a figure pyplot does not know about: nothing to close, no backend."""
    return Figure().subplots()


@pytest.fixture
def pyplot_agg() -> Iterator[object]:
    """pyplot on the Agg backend for this test only; its figures closed afterwards."""
    import matplotlib.pyplot as plt

    previous = matplotlib.get_backend()
    plt.switch_backend("Agg")
    yield plt
    plt.close("all")
    plt.switch_backend(previous)


def analysis_failures_empty() -> pd.DataFrame:
    return pd.DataFrame({"tool": pd.Series([], dtype="str"), "error": pd.Series([], dtype="str"),
                         "count": pd.Series([], dtype="int64"),
                         "plans": pd.Series([], dtype="int64")})  # fmt: skip


def metrics_frame() -> pd.DataFrame:
    """Queue metrics as ``AnalysisQueue.metrics()`` returns them: done, failed, cancelled."""
    submitted = T0 + pd.to_timedelta([0.0, 1.0, 2.0, 3.0, 4.0], unit="s")
    started = submitted + pd.to_timedelta([0.002, 0.5, 0.01, 0.02, np.nan], unit="s")
    finished = started + pd.to_timedelta([0.8, 1.2, 0.4, 0.3, np.nan], unit="s")
    return pd.DataFrame(
        {
            "job_id": pd.Series([1, 2, 3, 4, 5], dtype="int64"),
            "agents": [
                ("support-bot",),
                ("ops-agent", "code-agent"),
                ("support-bot",),
                ("triage-agent",),
                ("ops-agent",),
            ],
            "plans": pd.Series([1, 7, 2, 1, 1], dtype="int64"),
            "priority": pd.Series([0, 0, 5, 0, -1], dtype="int64"),
            "submitted_at": submitted,
            "started_at": started,
            "finished_at": finished,
            "wait_ms": [2.0, 500.0, 10.0, 20.0, np.nan],
            "run_ms": [800.0, 1200.0, 400.0, 300.0, np.nan],
            "attempts": pd.Series([1, 1, 3, 1, 0], dtype="int64"),
            "status": pd.Series(
                ["completed", "completed", "failed", "completed", "cancelled"], dtype="str"
            ),
            "error": pd.Series(
                [None, None, "TimeoutError: warehouse busy", None, None], dtype="str"
            ),
        }
    )


def contains(longer: tuple[str, ...], shorter: tuple[str, ...]) -> bool:
    size = len(shorter)
    return any(longer[i : i + size] == shorter for i in range(len(longer) - size + 1))


def tick_labels(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_yticklabels()]


def texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


# -- success rates -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("by", "table", "key", "title"),
    [
        pytest.param("agent", "by_agent", "agent_id", "Success rate by agent", id="agent"),
        pytest.param("goal_type", "by_goal_type", "goal_type", "by goal type", id="goal_type"),
        pytest.param("tool", "by_tool", "tool", "plans that use each tool", id="tool"),
    ],
)
def test_success_rates_bars_intervals_and_counts(
    analysis: ExecutionAnalysis, ax: Axes, by: str, table: str, key: str, title: str
) -> None:
    frame: pd.DataFrame = getattr(analysis, table)
    shown = frame.nlargest(20, "plans")
    assert plot_success_rates(analysis, by=by, ax=ax) is ax  # type: ignore[arg-type]
    assert title in ax.get_title() and "20,000 plans" in ax.get_title()
    assert "95% Wilson interval" in ax.get_xlabel() and "%" in ax.get_xlabel()
    assert len(ax.patches) == len(shown)
    widths = sorted(p.get_width() for p in ax.patches)
    assert np.allclose(widths, np.sort(shown["success_rate"].to_numpy()))
    best = shown.sort_values(["success_rate", "plans"]).iloc[-1]
    assert tick_labels(ax)[-1] == str(best[key])  # best at the top
    assert f"n={best['plans']:,}" in texts(ax)
    assert f"all plans: {analysis.success_rate:.1%}" in texts(ax)


def test_success_rates_keeps_the_groups_with_most_plans(
    analysis: ExecutionAnalysis, ax: Axes
) -> None:
    plot_success_rates(analysis, by="tool", top=5, ax=ax)
    assert set(tick_labels(ax)) == set(analysis.by_tool.nlargest(5, "plans")["tool"])
    assert f"5 of {len(analysis.by_tool)} tools" in ax.get_xlabel()


def test_success_rates_from_a_table(ax: Axes) -> None:
    frame = pd.DataFrame({"goal_type": ["refund", None], "plans": [30, 10], "successes": [6, 9],
                          "success_rate": [0.2, 0.9], "ci_low": [0.1, 0.6],
                          "ci_high": [0.38, 0.98]})  # fmt: skip
    plot_success_rates(frame, by="goal_type", ax=ax)
    assert tick_labels(ax) == ["refund", "(none)"]
    assert "all plans: 37.5%" in texts(ax)


def test_success_rates_of_tools_from_a_table_have_no_baseline(
    analysis: ExecutionAnalysis, ax: Axes
) -> None:
    plot_success_rates(analysis.by_tool, by="tool", ax=ax)
    assert not any(t.startswith("all plans") for t in texts(ax))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda a, ax: plot_success_rates(a, by="day", ax=ax), "by must be one of", id="bad-by"
        ),
        pytest.param(
            lambda a, ax: plot_success_rates(a.by_tool, by="agent", ax=ax),
            "lacks the columns ['agent_id']",
            id="wrong-table",
        ),
        pytest.param(
            lambda a, ax: plot_success_trend(a.by_agent, ax=ax),
            "lacks the columns ['day']",
            id="trend-wrong-table",
        ),
    ],
)
def test_bad_input_is_a_clear_error(
    analysis: ExecutionAnalysis, ax: Axes, call: Callable[..., Axes], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        call(analysis, ax)


# -- trend -----------------------------------------------------------------------------


def test_trend_line_band_and_daily_counts(analysis: ExecutionAnalysis, ax: Axes) -> None:
    plot_success_trend(analysis, ax=ax)
    (line,) = [line for line in ax.get_lines() if line.get_label() == "success rate"]
    assert np.allclose(np.asarray(line.get_ydata(), dtype=float), analysis.by_day["success_rate"])
    assert ax.get_ylim() == (0.0, 1.0)
    assert ax.get_ylabel() == "success rate (% of plans)" and "UTC" in ax.get_xlabel()
    (counts,) = [other for other in ax.figure.axes if other is not ax]
    assert len(counts.patches) == len(analysis.by_day)
    assert "plans per day" in counts.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:3] == ["success rate", "95% Wilson interval", "plans"]


# -- patterns --------------------------------------------------------------------------


def test_strongest_patterns_fold_near_copies_and_keep_the_planted_ones(
    report: PatternReport,
) -> None:
    rows = strongest_patterns(report, top=100)
    planted = set(planted_patterns()["pattern"])
    assert planted <= set(rows["pattern"])
    assert rows["significant"].all()
    for pattern, direction in zip(rows["pattern"], rows["direction"], strict=True):
        others = rows[(rows["direction"] == direction) & (rows["pattern"] != pattern)]
        assert not any(contains(pattern, o) for o in others["pattern"]), pattern
    assert sum(is_planted_related(p) for p in rows["pattern"]) >= len(planted)
    unfolded = strongest_patterns(report, top=100, fold=False)
    assert len(unfolded) == 100 and len(rows) < 100


def test_strongest_patterns_rank_by_distance_from_odds_ratio_one(report: PatternReport) -> None:
    rows = strongest_patterns(report, top=10, fold=False)
    strength = np.abs(np.log(rows["mh_odds_ratio"].to_numpy()))
    assert (np.diff(strength) <= 1e-12).all() and len(rows) == 10
    assert strongest_patterns(report, top=50)["pattern_text"].tolist() == sorted(
        report.findings["pattern_text"],
        key=lambda t: (
            -abs(np.log(report.findings.set_index("pattern_text").at[t, "mh_odds_ratio"]))
        ),
    )


def test_patterns_two_colours_log_odds_and_support(report: PatternReport, ax: Axes) -> None:
    plot_patterns(report, top=6, ax=ax)
    rows = strongest_patterns(report, top=6)
    assert ax.get_xscale() == "log" and "MH odds ratio" in ax.get_xlabel()
    assert "within goal_type strata" in ax.get_xlabel()
    assert len(ax.patches) == len(rows) == len(report.findings) == 5
    colours = {tuple(p.get_facecolor()) for p in ax.patches}
    assert len(colours) == 2
    for patch in ax.patches:  # bars go from odds ratio 1 to the pattern's
        assert patch.get_x() == 1
    marked = [("\u26a0 " if s else "") + t
              for t, s in zip(rows["pattern_text"], rows["simpson"], strict=True)]  # fmt: skip
    assert set(tick_labels(ax)) == set(marked) and "\u26a0 quick_answer" in marked
    assert {"goes with success →", "← goes with failure"} <= set(texts(ax))
    assert any(t.startswith("n=") and "Simpson: pooled lift" in t for t in texts(ax))
    significant, tested = int(report.patterns["significant"].sum()), len(report.patterns)
    assert f"5 findings of {significant:,} significant ({tested:,} tested)" in ax.get_xlabel()


def test_patterns_say_so_when_nothing_is_significant(report: PatternReport, ax: Axes) -> None:
    nothing = dataclasses.replace(report, patterns=report.patterns.assign(significant=False))
    plot_patterns(nothing, ax=ax)
    assert not ax.patches
    tested = f"{len(report.patterns):,} tool sequences tested"
    assert texts(ax) == [f"no significant patterns\n({tested}, FDR 0.05)"]
    table = Figure().subplots()
    plot_patterns(nothing.patterns, ax=table)
    assert texts(table) == [f"no significant patterns\n({tested})"]


def test_patterns_with_a_lift_of_zero_stay_on_the_log_axis(ax: Axes) -> None:
    table = pd.DataFrame({"pattern": [("a", "b"), ("c",)], "pattern_text": ["a → b", "c"],
                          "plans": [10, 40], "successes": [0, 36], "success_rate": [0.0, 0.9],
                          "ci_low": [0.0, 0.77], "ci_high": [0.28, 0.96], "lift": [0.0, 1.8],
                          "significant": [True, True],
                          "direction": ["failure", "success"]})  # fmt: skip
    plot_patterns(table, ax=ax)
    low, high = ax.get_xlim()
    assert 0 < low < 0.01 and high > 1.8


# -- failure reasons -------------------------------------------------------------------


def test_failure_reasons_top_pairs_with_plan_counts(analysis: ExecutionAnalysis, ax: Axes) -> None:
    plot_failure_reasons(analysis, top=4, ax=ax)
    top = analysis.failure_reasons.head(4)
    assert [p.get_width() for p in ax.patches] == top["count"].tolist()[::-1]
    assert tick_labels(ax)[-1] == f"{top['tool'].iloc[0]}: {top['error'].iloc[0]}"
    assert f"in {top['plans'].iloc[0]:,} plans" in texts(ax)
    assert ax.get_xlabel().startswith("failed steps (count)\ntop 4 of ")


def test_failure_reasons_empty_and_long_messages(ax: Axes) -> None:
    empty = analysis_failures_empty()
    plot_failure_reasons(empty, ax=ax)
    assert texts(ax) == ["no failed steps in this window"]
    long = pd.DataFrame({"tool": ["t"], "error": ["x" * 200], "count": [1], "plans": [1]})
    other = Figure().subplots()
    plot_failure_reasons(long, ax=other)
    assert tick_labels(other)[0].endswith("…") and len(tick_labels(other)[0]) < 70
    assert "in 1 plan" in texts(other)


# -- queue metrics ---------------------------------------------------------------------


def test_queue_metrics_wait_run_and_throughput(ax: Axes) -> None:
    plot_queue_metrics(metrics_frame(), ax=ax)
    assert "5 jobs: 3 completed, 1 failed, 1 cancelled" in ax.get_title()
    assert ax.get_xlabel() == "time since the first job was submitted (s)"
    assert ax.get_ylabel() == "time per job (ms)" and ax.get_yscale() == "log"
    waits, runs, failed = ax.collections
    assert np.allclose(waits.get_offsets()[:4, 1], [2.0, 500.0, 10.0, 20.0])
    assert np.allclose(runs.get_offsets()[:, 1], [800.0, 1200.0, 300.0])
    assert np.allclose(failed.get_offsets()[:, 1], [400.0])
    (rate,) = [other for other in ax.figure.axes if other is not ax]
    assert "jobs finished per s" in rate.get_ylabel()
    labels = [t.get_text() for t in rate.get_legend().get_texts()]
    assert labels[-1] == "throughput: jobs finished per s"


def test_queue_metrics_over_hours_and_when_empty(ax: Axes) -> None:
    slow = metrics_frame()
    slow["finished_at"] = slow["finished_at"] + pd.Timedelta("3h")
    plot_queue_metrics(slow, ax=ax)
    assert ax.get_xlabel().endswith("(h)")
    empty = metrics_frame().iloc[0:0]
    other = Figure().subplots()
    plot_queue_metrics(empty, ax=other)
    assert texts(other) == ["no jobs yet"]


def test_queue_metrics_need_the_documented_columns(ax: Axes) -> None:
    with pytest.raises(InvalidArgumentError, match="lacks the columns"):
        plot_queue_metrics(metrics_frame().drop(columns=["run_ms"]), ax=ax)
    assert list(metrics_frame().columns) == QUEUE_METRICS_COLUMNS


# -- figures, files, shortcuts, global state -------------------------------------------


def test_new_figures_come_from_pyplot_without_show_or_style_changes(
    analysis: ExecutionAnalysis,
    report: PatternReport,
    pyplot_agg: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import matplotlib.pyplot as plt

    def no_show(*args: object, **kwargs: object) -> None:
        raise AssertionError("plot functions must not call plt.show()")

    monkeypatch.setattr(plt, "show", no_show)
    before = dict(matplotlib.rcParams)
    axes = [
        plot_success_rates(analysis),
        plot_success_trend(analysis),
        plot_patterns(report),
        plot_failure_reasons(analysis),
        plot_queue_metrics(metrics_frame()),
    ]
    assert dict(matplotlib.rcParams) == before
    assert len(plt.get_fignums()) == len(axes)
    assert all(ax.figure.get_layout_engine() is not None for ax in axes)
    height = axes[0].figure.get_size_inches()[1]
    assert height < plot_success_rates(analysis, by="tool").figure.get_size_inches()[1]


def test_save_plots_writes_pngs_without_pyplot(
    analysis: ExecutionAnalysis, report: PatternReport, tmp_path: Path, pyplot_agg: object
) -> None:
    import matplotlib.pyplot as plt

    written = save_plots(analysis, tmp_path / "out")
    written += save_plots(report, tmp_path / "out")
    written += save_plots(metrics_frame(), tmp_path / "out")
    assert [p.name for p in written] == [
        "success_by_agent.png", "success_by_goal_type.png", "success_by_tool.png",
        "success_trend.png", "failure_reasons.png", "patterns.png", "queue_metrics.png",
    ]  # fmt: skip
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    assert plt.get_fignums() == []
    with pytest.raises(TypeError, match="save_plots takes"):
        save_plots("analysis", tmp_path)  # type: ignore[arg-type]


def test_result_shortcuts(analysis: ExecutionAnalysis, report: PatternReport) -> None:
    ax = Figure().subplots()
    assert analysis.plot("success_rates", by="goal_type", ax=ax) is ax
    assert "goal type" in ax.get_title()
    trend = Figure().subplots()
    assert analysis.plot("trend", ax=trend) is trend
    patterns = Figure().subplots()
    assert report.plot(top=3, ax=patterns) is patterns
    assert len(patterns.patches) == 3
    with pytest.raises(InvalidArgumentError, match=r"ExecutionAnalysis.plot draws one of"):
        analysis.plot("patterns")


def test_results_render_as_html_tables(analysis: ExecutionAnalysis, report: PatternReport) -> None:
    page = analysis._repr_html_()
    assert page.count("<table") == 5 and "&lt;ExecutionAnalysis" in page
    assert "support-bot" in page and "(first 10 of" in page
    page = report._repr_html_()
    assert page.count("<table") == 2 and "validate_input → dry_run → apply_change" in page
    assert "pattern_text" in page and "<th>pattern</th>" not in page


def test_low_n_rates_are_drawn_pale_and_labelled(ax: Axes) -> None:
    frame = pd.DataFrame({"agent_id": ["big", "small"], "plans": [400, 12],
                          "successes": [300, 6], "success_rate": [0.75, 0.5],
                          "ci_low": [0.71, 0.25], "ci_high": [0.79, 0.75],
                          "low_n": [False, True]})  # fmt: skip
    plot_success_rates(frame, ax=ax)
    colours = {label: tuple(p.get_facecolor()) for label, p in
               zip(tick_labels(ax), ax.patches, strict=True)}  # fmt: skip
    assert colours["small"] != colours["big"]
    assert "n=12 (low n)" in texts(ax) and "n=400" in texts(ax)
    assert "pale bars: low n" in ax.get_xlabel()


def test_low_n_days_are_hollow_points(analysis: ExecutionAnalysis, ax: Axes) -> None:
    days = analysis.by_day.assign(low_n=[i % 3 == 0 for i in range(len(analysis.by_day))])
    plot_success_trend(days, ax=ax)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "low n" in labels
    assert len(ax.collections[-1].get_offsets()) == int(days["low_n"].sum())
