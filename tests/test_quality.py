"""The package passes its linters and strict type checking (config in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["ruff", "check", "metalearn", "tests", "benchmarks"], id="ruff-check"),
        pytest.param(
            ["ruff", "format", "--check", "metalearn", "tests", "benchmarks"], id="ruff-format"
        ),
        pytest.param(["mypy"], id="mypy-strict"),
    ],
)
def test_static_checks_pass(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _tracked_files() -> list[Path]:
    """The files git tracks, or every file of the tree when this is not a git checkout."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode == 0:
        return [ROOT / name for name in listed.stdout.decode().split("\0") if name]
    skipped = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
    return [
        path
        for path in ROOT.rglob("*")
        if path.is_file() and not skipped & set(path.relative_to(ROOT).parts)
    ]


def test_no_file_refers_to_data_outside_the_repository() -> None:
    outside = "/".join(["..", "shared"])  # spelled in parts so this file does not match
    referring = [
        str(path.relative_to(ROOT))
        for path in _tracked_files()
        if path.is_file() and outside.encode() in path.read_bytes()
    ]
    assert referring == [], f"these files read data from beside the checkout: {referring}"


def test_the_real_data_is_committed_with_its_attribution() -> None:
    data = ROOT / "data"
    tracked = {str(path.relative_to(data)) for path in _tracked_files() if data in path.parents}
    expected = {"tau_bench/plans.csv", "tau_bench/steps.csv", "tau_bench/SOURCE.md"}
    for folder in ("langfuse", "any_agent", "otlp"):
        expected |= {f"traces/{folder}/LICENSE", f"traces/{folder}/SOURCE.md"}
    assert expected <= tracked, sorted(expected - tracked)
    assert sum(name.endswith(".json") for name in tracked) >= 14  # every trace sample
