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
