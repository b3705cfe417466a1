"""``metalearn import``: trace files and interchange CSVs into a store, with a summary."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from metalearn import HistoryStore
from metalearn.cli import main
from tests.conftest import TAU_BENCH, TRACES


def plans_in(url: str) -> pd.DataFrame:
    with HistoryStore(url) as store:
        return store.plans_after(0, limit=None).to_pandas()[0]


def test_import_otlp_files_reports_skipped_traces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'traces.db'}"
    paths = [str(p) for p in sorted((TRACES / "any_agent").glob("*.json"))]
    assert (
        main(
            ["import", "--format", "otlp", "--db", url, *paths, str(TRACES / "otlp" / "trace.json")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "read 8 traces: 7 plans" in out
    assert "skipped 1 traces:\n  5b8efff798038103d269b633813fc60c: no root span" in out
    assert f"imported 7 plans (18 steps) into <HistoryStore {url} plans=7>" in out
    assert "rejected 0 plans" in out
    assert plans_in(url)["agent_id"].unique().tolist() == ["any_agent"]


def test_import_langfuse_with_options_and_skip_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'traces.db'}"
    path = str(TRACES / "langfuse" / "pydantic-ai-tools-2025-12-04.json")
    args = ["import", "--format", "langfuse", "--db", url, "--goal-type", "langfuse.trace.name"]
    assert main([*args, "--per-agent", path]) == 0
    assert plans_in(url)[["agent_id", "goal_type"]].values.tolist() == [
        ["joke_agent", "joke-generator"]
    ]
    capsys.readouterr()
    assert main([*args, "--per-agent", path]) == 1
    assert "is already recorded" in capsys.readouterr().err
    assert main([*args, "--per-agent", "--skip-bad", path]) == 0
    out = capsys.readouterr().out
    assert "imported 0 plans (0 steps)" in out
    assert (
        "rejected 1 plans:\n  7a38edd8123db47ad8dcb8aa4c5e3926:5b5c52d029f28206 (plans row 0" in out
    )


@pytest.mark.parametrize(
    ("fmt", "suffix", "frame"),
    [
        pytest.param(
            "openinference",
            ".parquet",
            pd.DataFrame(
                {
                    "context.trace_id": ["t1", "t1"],
                    "context.span_id": ["s1", "s2"],
                    "parent_id": [None, "s1"],
                    "span_kind": ["AGENT", "TOOL"],
                    "name": ["agent", "search"],
                    "start_time": pd.to_datetime(["2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"]),
                    "end_time": pd.to_datetime(["2026-01-01T00:00:05Z", "2026-01-01T00:00:02Z"]),
                    "status_code": ["OK", "OK"],
                }
            ),
            id="openinference",
        ),
        pytest.param(
            "mlflow",
            ".jsonl",
            pd.DataFrame(
                {
                    "trace_id": ["tr-1"],
                    "state": ["OK"],
                    "spans": [
                        json.dumps(
                            [
                                {
                                    "span_id": "aa",
                                    "parent_span_id": None,
                                    "name": "agent",
                                    "start_time_unix_nano": 1_767_225_600_000_000_000,
                                    "end_time_unix_nano": 1_767_225_605_000_000_000,
                                    "status": {"code": "OK"},
                                    "attributes": {"mlflow.spanType": '"AGENT"'},
                                },
                                {
                                    "span_id": "bb",
                                    "parent_span_id": "aa",
                                    "name": "search",
                                    "start_time_unix_nano": 1_767_225_601_000_000_000,
                                    "end_time_unix_nano": 1_767_225_602_000_000_000,
                                    "status": {"code": "OK"},
                                    "attributes": {"mlflow.spanType": '"TOOL"'},
                                },
                            ]
                        )
                    ],
                }
            ),
            id="mlflow",
        ),
    ],
)
def test_import_frame_formats_from_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, suffix: str, frame: pd.DataFrame
) -> None:
    path = tmp_path / f"export{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)
    url = f"sqlite:///{tmp_path / 'traces.db'}"
    assert main(["import", "--format", fmt, "--db", url, str(path)]) == 0
    assert "imported 1 plans (1 steps)" in capsys.readouterr().out


def test_import_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'tau.db'}"
    plans, steps = str(TAU_BENCH / "plans.csv"), str(TAU_BENCH / "steps.csv")
    assert main(["import", "--format", "csv", "--db", url, "--plans", plans, "--steps", steps]) == 0
    assert "imported 200 plans (2,454 steps)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--format", "csv", "x.json"], id="csv-with-path"),
        pytest.param(["--format", "csv", "--plans", "p.csv"], id="csv-without-steps"),
        pytest.param(["--format", "otlp"], id="otlp-without-path"),
    ],
)
def test_import_argument_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert main(["import", "--db", f"sqlite:///{tmp_path / 'x.db'}", *args]) == 2
    assert "give --plans and --steps" in capsys.readouterr().err


def test_import_reports_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["import", "--format", "otlp", "--db", url, str(bad)]) == 1
    assert "bad.json line 1: not valid JSON" in capsys.readouterr().err
    assert main(["import", "--format", "otlp", "--db", url, str(tmp_path / "missing.json")]) == 1
    assert "No such file" in capsys.readouterr().err
