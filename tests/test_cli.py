"""The command line: ``metalearn demo``, ``metalearn report``, help, errors and exit codes.

``metalearn import`` has its own tests (test_importers_cli.py).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from metalearn import HistoryStore
from metalearn.cli import _Progress, main
from metalearn.export import ANALYSIS_FILES, CHANGE_FILES, PATTERN_FILES

ROOT = Path(__file__).resolve().parents[1]
PNGS = [
    "success_by_agent.png", "success_by_goal_type.png", "success_by_tool.png",
    "success_trend.png", "failure_reasons.png", "patterns.png", "change_by_agent_id.png",
]  # fmt: skip


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_demo_builds_the_default_store_and_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("METALEARN_DB_URL", raising=False)
    status, out, err = run(["demo", "--plans", "3000"], capsys)
    assert status == 0, err
    assert (tmp_path / "data" / "metalearn.db").exists()
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == sorted(
        [*PNGS, *ANALYSIS_FILES, *PATTERN_FILES, *CHANGE_FILES]
    )
    lines = out.splitlines()
    assert lines[0].startswith("built a demo history: 3,000 plans")
    assert lines[1].startswith("3,000 plans (all agents, whole history): ")
    assert "succeeded (95% CI " in lines[1]
    assert lines[2].startswith("best agent:  support-bot") and lines[3].startswith("worst agent:")
    assert "findings that go with success (most significant first):" in out
    assert "validate_input → dry_run → apply_change" in out
    assert "retry → retry → retry" in out
    assert "planted effects among the findings in their direction" in out
    assert "0 of 1 confounded decoys" in out
    assert "change points: 0 of 6 agents with >= 200 plans changed (FDR 0.05)" in out
    assert lines[-1].startswith("wrote 7 PNG plots and 11 CSV tables to reports/")
    assert "recording it in sqlite:///data/metalearn.db" in err  # progress goes to stderr
    assert "[" not in out.split("\n")[0]


def test_demo_reuses_an_existing_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    out_dir = tmp_path / "out"
    assert main(["demo", "--db", url, "--plans", "1500", "--out", str(out_dir), "-q"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: no progress
    status, out, _ = run(["demo", "--db", url, "--plans", "99", "--out", str(out_dir)], capsys)
    assert status == 0
    assert out.startswith(f"using the existing history in {url}: 1,500 plans")
    assert (out_dir / "patterns.png").exists()


def test_report_on_any_store(
    tau_store: HistoryStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "tau"
    argv = ["report", "--db", tau_store.url, "--min-support", "10", "--out", str(out_dir)]
    status, out, err = run(argv, capsys)
    assert status == 0, err
    assert out.startswith("200 plans (all agents, whole history): 42.0% succeeded")
    assert "best agent" not in out  # one agent only
    # the findings within goal types: transferring stays, booking does not (see notebook 02)
    assert "respond → respond → transfer_to_human_agents" in out and "book_reservation" not in out
    assert "within goal_type" in out
    assert "planted" not in out
    assert (out_dir / "success_by_goal_type.png").exists() and (out_dir / "patterns.csv").exists()


def test_report_with_gaps(
    tau_store: HistoryStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["report", "--db", tau_store.url, "--min-support", "10", "--max-gap", "1",
            "--out", str(tmp_path), "-q"]  # fmt: skip
    status, _, err = run(argv, capsys)
    assert status == 0, err
    patterns = pd.read_csv(tmp_path / "patterns.csv")
    assert patterns["pattern"].str.contains(" → … → ").any()
    assert pd.read_csv(tmp_path / "pattern_summary.csv")["max_gap"].tolist() == [1]


def test_report_for_one_agent_and_window(
    synthetic_store: HistoryStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["report", "--db", synthetic_store.url, "--agent", "support-bot", "--days", "100000",
            "--out", str(tmp_path), "-q"]  # fmt: skip
    status, out, _ = run(argv, capsys)
    assert status == 0
    assert "plans (support-bot, last 100000 days to " in out.splitlines()[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--agent", "nobody"], "no plans of agent 'nobody'", id="unknown-agent"),
        pytest.param(["--db", "sqlite:///{tmp}/missing.db"], "no database file at", id="missing"),
        pytest.param(["--db", "not a url"], "give a SQLAlchemy URL", id="bad-url"),
        pytest.param(["--max-gap", "-1"], "max_gap must be an integer from 0", id="bad-gap"),
        pytest.param(["--db", "nosuchdb://x"], "give a SQLAlchemy URL", id="unknown-dialect"),
        pytest.param(["--db", "sqlite:///{tmp}/empty.db"], "holds no plans yet", id="empty"),
        pytest.param(
            ["--days", "0.001"], "no plans of any agent finished in the last", id="window"
        ),
    ],
)
def test_report_errors_say_what_to_do(
    synthetic_store: HistoryStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    with HistoryStore(f"sqlite:///{tmp_path / 'empty.db'}") as empty:
        assert len(empty) == 0  # the file and its tables exist, without plans
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--db" not in argv:
        argv += ["--db", synthetic_store.url]
    status, out, err = run(["report", *argv, "--out", str(tmp_path / "out"), "-q"], capsys)
    assert status == 1
    assert err.startswith("metalearn report: ") and message in err
    assert out == "" and not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["report", "--days", "-3"], id="negative-days"),
        pytest.param(["report", "--days", "many"], id="days-not-a-number"),
        pytest.param(["demo", "--plans", "0"], id="no-plans"),
        pytest.param(["report", "--min-support", "0"], id="no-support"),
        pytest.param(["frobnicate"], id="unknown-command"),
        pytest.param([], id="no-command"),
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert "usage: metalearn" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param([], ["demo", "report", "import"], id="metalearn"),
        pytest.param(["demo"], ["--plans", "--out", "--db", "--quiet"], id="demo"),
        pytest.param(["report"], ["--db", "--agent", "--days", "--out"], id="report"),
        pytest.param(["import"], ["--format", "--skip-bad", "PATH"], id="import"),
    ],
)
def test_help_everywhere(
    argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert all(word in out for word in expected)


def test_python_dash_m(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "metalearn", "report", "--db", f"sqlite:///{tmp_path}/no.db"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "no database file at" in done.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "metalearn", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert help_text.startswith("usage: metalearn")


def test_progress_bar_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = _Progress(quiet=False, stream=stream)
        progress.stage("working")
        progress.bar(1, 4, "plans")
        progress.bar(4, 4, "plans")
    assert "] working\n" in pipe.getvalue() and "#" not in pipe.getvalue()
    bar = terminal.getvalue()
    assert "\r        [########" in bar and "1/4 plans" in bar and bar.endswith("4/4 plans\n")


def test_hints_print_the_next_tools_after_a_prefix(
    tau_store: HistoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["hints", "--db", tau_store.url, "--prefix", "respond, get_user_details"]
    status, out, _ = run([*argv, "--min-support", "5"], capsys)
    lines = out.splitlines()
    assert status == 0 and lines[0].startswith("after respond → get_user_details (best 95%")
    assert len(lines) > 2 and all(" plans  lift " in line for line in lines[1:])
    status, out, _ = run(["hints", "--db", tau_store.url, "--prefix", "nope"], capsys)
    assert (status, out.strip()) == (0, "after nope: no next tool seen in >= 10 plans")
    status, _, err = run(["hints", "--db", tau_store.url, "--prefix", "respond,,x"], capsys)
    assert status == 1 and "prefix[1] is ''" in err
