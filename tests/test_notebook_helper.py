"""metalearn.notebook.allow_nested_loops: legacy ``asyncio.run`` in a real Jupyter kernel."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from metalearn.importers import MissingDependencyError
from metalearn.notebook import allow_nested_loops

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]

SETUP = """
import asyncio
from metalearn import HistoryStore, MetaLearningService
from metalearn.synthetic import make_history

store = HistoryStore("sqlite://")
store.import_frames(*make_history(300, seed=1))
service = MetaLearningService(store)
"""
LEGACY_RUN = "print(asyncio.run(service.analyze_execution_patterns(time_range_days=None)).n_plans)"
LEGACY_LOOP = (
    "loop = asyncio.get_event_loop()\n"
    "print(loop.run_until_complete(service.extract_successful_patterns(time_range_days=None)).n_plans)"
)
OPT_IN = """
from metalearn.notebook import allow_nested_loops
allow_nested_loops()
allow_nested_loops()
"""
AWAIT = "print((await service.analyze_execution_patterns(time_range_days=None)).n_plans)"


def code_cell(source: str, *, may_fail: bool = False) -> Any:
    cell = nbformat.v4.new_code_cell(source.strip())
    if may_fail:  # nbclient goes on after an error in a cell tagged so
        cell.metadata["tags"] = ["raises-exception"]
    return cell


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """The code cells of a notebook run in a real kernel: legacy calls before and after."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        code_cell(SETUP),
        code_cell(LEGACY_RUN, may_fail=True),
        code_cell(LEGACY_LOOP, may_fail=True),
        code_cell(OPT_IN),
        code_cell(LEGACY_RUN),
        code_cell(LEGACY_LOOP),
        code_cell(AWAIT),
        code_cell("service.close()"),
    ]
    scratch = tmp_path_factory.mktemp("nested")
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(scratch)}}
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(ROOT))
        patch.setenv("IPYTHONDIR", str(scratch / "ipython"))
        asyncio.run(client.async_execute())
    return list(nb.cells)


def outputs(cell: Any, kind: str) -> list[Any]:
    return [out for out in cell.outputs if out.output_type == kind]


def stdout(cell: Any) -> str:
    return "".join(out.text for out in outputs(cell, "stream") if out.name == "stdout")


@pytest.mark.parametrize("index", [pytest.param(1, id="asyncio.run"), pytest.param(2, id="loop")])
def test_legacy_calls_fail_in_a_kernel_without_the_opt_in(cells: list[Any], index: int) -> None:
    (error,) = outputs(cells[index], "error")
    assert error.ename == "RuntimeError"
    assert "running" in error.evalue  # "... cannot be called from a running event loop"


@pytest.mark.parametrize("index", [pytest.param(4, id="asyncio.run"), pytest.param(5, id="loop")])
def test_legacy_calls_work_after_the_opt_in(cells: list[Any], index: int) -> None:
    assert not outputs(cells[index], "error")
    assert stdout(cells[index]) == "300\n"


def test_opt_in_warns_once_about_what_it_patches(cells: list[Any]) -> None:
    text = "".join(out.text for out in outputs(cells[3], "stream") if out.name == "stderr")
    assert text.count("applied nest-asyncio2") == 1
    assert "asyncio.run() and loop.run_until_complete() now re-enter" in text


def test_await_still_works_after_the_opt_in(cells: list[Any]) -> None:
    assert stdout(cells[6]) == "300\n"


def test_the_library_never_applies_it() -> None:
    code = (
        "import sys, asyncio, metalearn, metalearn.plots, metalearn.export, metalearn.cli, "
        "metalearn.notebook, metalearn.importers\n"
        "assert 'nest_asyncio2' not in sys.modules and not hasattr(asyncio, '_nest_patched')"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nest_asyncio2", None)  # import now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'metalearn\[notebook\]'"):
        allow_nested_loops()
