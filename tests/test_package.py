"""The public surface: exports, typing marker, docstrings, the command line."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import metalearn
import metalearn.synthetic
from metalearn.cli import main


def test_all_is_sorted_and_complete() -> None:
    public = {
        name
        for name, value in vars(metalearn).items()
        if not name.startswith("_") and not inspect.ismodule(value)  # submodules import on use
    }
    assert metalearn.__all__ == sorted(metalearn.__all__)
    assert set(metalearn.__all__) - {"__version__"} == public


def test_py_typed_is_shipped() -> None:
    assert (Path(metalearn.__file__).parent / "py.typed").exists()


@pytest.mark.parametrize("module", [metalearn, metalearn.synthetic], ids=lambda m: m.__name__)
def test_public_names_have_docstrings(module: object) -> None:
    for name in module.__all__:  # type: ignore[attr-defined]
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"  # type: ignore[attr-defined]


def test_errors_hierarchy() -> None:
    assert issubclass(metalearn.InvalidRecordError, metalearn.MetalearnError)
    assert issubclass(metalearn.InvalidRecordError, ValueError)
    assert issubclass(metalearn.DuplicatePlanError, metalearn.MetalearnError)


def test_demo_builds_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    out_dir = tmp_path / "reports"
    assert main(["demo", "--db", url, "--plans", "2000", "--out", str(out_dir), "-q"]) == 0
    out = capsys.readouterr().out
    assert "built a demo history: 2,000 plans" in out
    assert "2,000 plans (all agents, whole history)" in out
    assert "validate_input → dry_run → apply_change" in out
    assert (out_dir / "patterns.png").exists() and (out_dir / "patterns.csv").exists()
    assert main(["demo", "--db", url, "--out", str(out_dir), "-q"]) == 0
    assert "using the existing history" in capsys.readouterr().out
