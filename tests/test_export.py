"""metalearn.export: file names, column order, encoding, timestamps, formula neutralisation."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metalearn import (
    ExecutionAnalysis,
    HistoryStore,
    InvalidArgumentError,
    MetaLearningService,
    PatternReport,
    Plan,
)
from metalearn.export import (
    ANALYSIS_FILES,
    PATTERN_FILES,
    QUEUE_FILES,
    export_csv,
    neutralise_formulas,
    to_html,
)
from tests.conftest import T0
from tests.test_plots import metrics_frame

ISO_UTC = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"


@pytest.fixture(scope="module")
def tau_results(tau_store: HistoryStore) -> tuple[ExecutionAnalysis, PatternReport]:
    with MetaLearningService(tau_store) as service:
        return (
            service.analyze_execution_patterns_sync(time_range_days=None),
            service.extract_successful_patterns_sync(time_range_days=None, min_support=10),
        )


def read(path: Path) -> pd.DataFrame:
    """A CSV file as text cells, exactly as written (empty cells stay empty strings)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


def rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def test_analysis_files_names_and_columns(
    tau_results: tuple[ExecutionAnalysis, PatternReport], tmp_path: Path
) -> None:
    analysis, _ = tau_results
    written = export_csv(analysis, tmp_path / "new" / "dir")
    assert [p.name for p in written] == list(ANALYSIS_FILES)
    assert all(p.parent == tmp_path / "new" / "dir" for p in written)
    tables = {p.name: read(p) for p in written}
    for name, frame in [
        ("success_by_agent.csv", analysis.by_agent),
        ("success_by_goal_type.csv", analysis.by_goal_type),
        ("success_by_tool.csv", analysis.by_tool),
        ("success_by_day.csv", analysis.by_day),
        ("failure_reasons.csv", analysis.failure_reasons),
    ]:
        assert list(tables[name].columns) == list(frame.columns), name
        assert len(tables[name]) == len(frame), name
    overall = tables["overall.csv"]
    assert list(overall.columns) == ["agent_id", "time_range_days", "as_of", "through_seq",
                                     *analysis.overall.columns]  # fmt: skip
    assert overall.loc[0, ["agent_id", "time_range_days", "through_seq", "plans"]].tolist() == [
        "(all)", "", "200", "200",
    ]  # fmt: skip
    assert overall["as_of"].str.match(ISO_UTC).all()
    assert tables["success_by_day.csv"]["day"].tolist()[:2] == ["2024-11-22", "2024-11-23"]


def test_numbers_round_trip(
    tau_results: tuple[ExecutionAnalysis, PatternReport], tmp_path: Path
) -> None:
    analysis, _ = tau_results
    export_csv(analysis, tmp_path)
    back = pd.read_csv(tmp_path / "success_by_goal_type.csv")
    assert back["plans"].tolist() == analysis.by_goal_type["plans"].tolist()
    assert np.allclose(back["ci_low"], analysis.by_goal_type["ci_low"], rtol=0, atol=1e-15)


def test_pattern_files_write_patterns_as_text(
    tau_results: tuple[ExecutionAnalysis, PatternReport], tmp_path: Path
) -> None:
    _, report = tau_results
    written = report.to_csv(tmp_path)
    assert [Path(str(p)).name for p in written] == list(PATTERN_FILES)
    patterns = read(tmp_path / "patterns.csv")
    assert list(patterns.columns) == [
        "pattern", "length", "plans", "successes", "success_rate", "ci_low", "ci_high", "lift",
        "p_value", "mh_odds_ratio", "mh_ci_low", "mh_ci_high", "cmh_p_value",
        "homogeneity_p_value", "strata", "simpson", "q_value", "significant", "direction",
        "plans_needed", "explained_by", "finding",
    ]  # fmt: skip
    assert patterns["pattern"].tolist() == report.patterns["pattern_text"].tolist()
    assert "respond → transfer_to_human_agents" in set(patterns["pattern"])
    successful = read(tmp_path / "successful_patterns.csv")
    assert successful["pattern"].tolist() == report.successful["pattern_text"].tolist()
    assert len(read(tmp_path / "failing_patterns.csv")) == len(report.failing)
    assert len(successful) + len(report.failing) == len(report.findings) < len(patterns)
    assert set(patterns["finding"]) <= {"True", "False"}
    summary = read(tmp_path / "pattern_summary.csv").iloc[0]
    assert summary[["plans", "successes", "patterns_tested", "min_support", "fdr"]].tolist() == [
        "200", "84", str(len(report.patterns)), "10", "0.05",
    ]  # fmt: skip


def test_files_are_utf8_with_crlf_line_ends(
    tau_results: tuple[ExecutionAnalysis, PatternReport], tmp_path: Path
) -> None:
    _, report = tau_results
    export_csv(report, tmp_path)
    raw = (tmp_path / "patterns.csv").read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert raw.count(b"\r\n") == len(report.patterns) + 1 == raw.count(b"\n")
    assert "→".encode() in raw


def test_queue_metrics_file(tmp_path: Path) -> None:
    metrics = metrics_frame()
    shuffled = metrics[list(reversed(metrics.columns))]
    (path,) = export_csv(shuffled, tmp_path)
    assert path.name == QUEUE_FILES[0]
    table = read(path)
    assert list(table.columns) == list(metrics.columns)
    assert table["agents"].tolist()[:2] == ["support-bot", "ops-agent, code-agent"]
    assert table["submitted_at"].str.match(ISO_UTC).all()
    assert table["submitted_at"].iloc[0] == "2026-03-01T12:00:00.000000Z"
    assert table.loc[4, ["started_at", "finished_at", "wait_ms", "error"]].tolist() == [
        "",
        "",
        "",
        "",
    ]
    assert table["priority"].tolist() == ["0", "0", "5", "0", "-1"]  # numbers are left alone
    assert table.loc[2, "error"] == "TimeoutError: warehouse busy"


def test_timestamps_in_other_zones_are_written_in_utc(tmp_path: Path) -> None:
    metrics = metrics_frame()
    metrics["submitted_at"] = metrics["submitted_at"].dt.tz_convert("Europe/Berlin")
    (path,) = export_csv(metrics, tmp_path)
    assert read(path)["submitted_at"].iloc[0] == "2026-03-01T12:00:00.000000Z"


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        pytest.param('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")', id="equals"),
        pytest.param("+1+1", "'+1+1", id="plus"),
        pytest.param("-2+3", "'-2+3", id="minus"),
        pytest.param("@SUM(A1)", "'@SUM(A1)", id="at"),
        pytest.param("\tcmd", "'\tcmd", id="tab"),
        pytest.param("\rcmd", "'\rcmd", id="carriage-return"),
        pytest.param("a=b", "a=b", id="equals-inside"),
        pytest.param(" =x", " =x", id="leading-space"),
        pytest.param("", "", id="empty"),
    ],
)
def test_text_cells_that_start_a_formula_are_neutralised(
    tmp_path: Path, cell: str, written: str
) -> None:
    metrics = metrics_frame().assign(error=pd.Series([cell] * 5, dtype="str"))
    (path,) = export_csv(metrics, tmp_path)
    header, *body = rows(path)
    assert {row[header.index("error")] for row in body} == {written}


def test_neutralise_formulas_keeps_missing_values() -> None:
    out = neutralise_formulas(pd.Series(["=1", None, "ok"], dtype="str"))
    assert out.tolist()[0] == "'=1" and pd.isna(out.iloc[1]) and out.iloc[2] == "ok"


def test_untrusted_agent_output_is_neutralised_end_to_end(tmp_path: Path) -> None:
    with HistoryStore(f"sqlite:///{tmp_path / 'evil.db'}") as store:
        for i in range(30):
            start = T0 + timedelta(minutes=i)
            store.record_plan(Plan(
                f"p{i}", "@evil-agent", "failed" if i % 3 else "succeeded", start,
                start + timedelta(seconds=5), goal_type="-refund",
                steps=[{"tool": "=cmd|' /C calc'!A0", "status": "error",
                        "error": "+danger 42", "duration_ms": 1.0},
                       {"tool": "respond", "duration_ms": 2.0}],
            ))  # fmt: skip
        with MetaLearningService(store) as service:
            analysis = service.analyze_execution_patterns_sync(time_range_days=None)
            report = service.extract_successful_patterns_sync(time_range_days=None, min_support=5)
    export_csv(analysis, tmp_path / "out")
    export_csv(report, tmp_path / "out")
    assert read(tmp_path / "out" / "success_by_agent.csv")["agent_id"].tolist() == ["'@evil-agent"]
    assert read(tmp_path / "out" / "success_by_goal_type.csv")["goal_type"].tolist() == ["'-refund"]
    reasons = read(tmp_path / "out" / "failure_reasons.csv")
    assert reasons[["tool", "error"]].values.tolist() == [["'=cmd|' /C calc'!A0", "'+danger <n>"]]
    patterns = set(read(tmp_path / "out" / "patterns.csv")["pattern"])
    assert "'=cmd|' /C calc'!A0 → respond" in patterns and "respond" in patterns


@pytest.mark.parametrize(
    ("result", "error", "message"),
    [
        pytest.param("x", TypeError, "export_csv takes an ExecutionAnalysis", id="not-a-result"),
        pytest.param(
            pd.DataFrame({"job_id": [1]}),
            InvalidArgumentError,
            "lacks the queue-metrics columns",
            id="not-queue-metrics",
        ),
    ],
)
def test_wrong_input_is_a_clear_error(
    tmp_path: Path, result: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        export_csv(result, tmp_path)  # type: ignore[arg-type]


def test_to_csv_needs_a_path(tau_results: tuple[ExecutionAnalysis, PatternReport]) -> None:
    with pytest.raises(TypeError, match="directory must be a path"):
        tau_results[0].to_csv(42)


def test_html_escapes_cells(tmp_path: Path) -> None:
    with HistoryStore(f"sqlite:///{tmp_path / 'html.db'}") as store:
        start = T0
        store.record_plan(Plan("p", "<script>x</script>", "succeeded", start,
                               start + timedelta(seconds=1), steps=[{"tool": "a"}]))  # fmt: skip
        with MetaLearningService(store) as service:
            analysis = service.analyze_execution_patterns_sync(time_range_days=None)
    page = to_html(analysis)
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
