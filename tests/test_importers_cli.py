"""``metalearn import``: trace files and interchange CSVs into a store, with a summary."""

from __future__ import annotations

import json
import subprocess
import sys
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


def _spoiled_tau(directory: Path, spoil: str) -> list[str]:
    """The τ-bench files with one fault: a Latin-1 byte, an extra field, or no header."""
    plans = (TAU_BENCH / "plans.csv").read_bytes()
    steps = (TAU_BENCH / "steps.csv").read_bytes()
    lines = plans.splitlines(keepends=True)
    if spoil == "latin-1":
        lines[6] = lines[6].replace(b"airline:", "avi\u00f3n:".encode("latin-1"))
    elif spoil == "extra-field":
        lines[6] = lines[6].rstrip(b"\n") + b",surplus\n"
    else:
        lines = []
    directory.mkdir(exist_ok=True)
    (directory / "plans.csv").write_bytes(b"".join(lines))
    (directory / "steps.csv").write_bytes(steps)
    return ["--plans", str(directory / "plans.csv"), "--steps", str(directory / "steps.csv")]


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        pytest.param(
            "latin-1",
            "plans.csv line 7: not UTF-8 (byte 0xf3 in field 'goal_type', byte ",
            id="latin-1",
        ),
        pytest.param(
            "extra-field",
            "plans.csv line 7 (plan 'tau-gpt-4o-airline-task05-trial0'): 8 fields where the "
            "header has 7; quote a field that holds a comma",
            id="extra-field",
        ),
        pytest.param("empty", "plans.csv is empty (no header line)", id="empty"),
    ],
)
def test_import_csv_bad_files_exit_1_with_the_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spoil: str, message: str
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    args = ["import", "--format", "csv", "--db", url, *_spoiled_tau(tmp_path / "in", spoil)]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert err.startswith("metalearn import: ") and message in err and "Traceback" not in err
    assert out == "" and len(plans_in(url)) == 0


def test_import_csv_skip_bad_lists_the_rejected_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    files = _spoiled_tau(tmp_path / "in", "extra-field")
    assert main(["import", "--format", "csv", "--db", url, "--skip-bad", *files]) == 0
    out = capsys.readouterr().out
    assert "imported 199 plans" in out
    assert (
        "rejected 1 plans:\n  tau-gpt-4o-airline-task05-trial0 (plans row 5): 8 fields where "
        "the header has 7" in out
    )


def test_import_csv_bad_file_in_a_real_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    files = _spoiled_tau(tmp_path / "in", "latin-1")
    done = subprocess.run(
        [sys.executable, "-m", "metalearn", "import", "--format", "csv", "--db", url, *files],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("metalearn import: plans.csv line 7: not UTF-8 (byte 0xf3")
    assert "re-save the file as UTF-8" in done.stderr and "Traceback" not in done.stderr
