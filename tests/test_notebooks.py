"""Every notebook in notebooks/ runs top to bottom in a fresh Jupyter kernel, without errors.

The kernels start in a scratch copy of the repository's layout (``repo/notebooks`` as the
working directory, ``repo/data`` holding links to the committed data folders), so the
notebooks find their data by the same relative paths as in a checkout and write nothing
into the repository. They run concurrently to keep the suite fast.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DATA

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 120


async def execute(notebook: Path, cwd: Path) -> Any:
    """The notebook after running it in a new kernel started in ``cwd``."""
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    await client.async_execute()
    return nb


async def execute_all(notebooks: list[Path], cwd: Path) -> list[Any]:
    """Run the notebooks concurrently (one kernel process each); failures are returned."""
    return await asyncio.gather(*(execute(n, cwd) for n in notebooks), return_exceptions=True)


def kernel_environment(scratch: Path) -> dict[str, str]:
    """What the kernels inherit: this checkout importable, IPython state kept out of $HOME."""
    path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    return {"PYTHONPATH": path, "IPYTHONDIR": str(scratch / "ipython")}


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each notebook's name → its executed copy, or the exception that stopped it."""
    scratch = tmp_path_factory.mktemp("notebooks")
    cwd = scratch / "repo" / "notebooks"
    cwd.mkdir(parents=True)
    data = scratch / "repo" / "data"
    data.mkdir()
    for folder in ("tau_bench", "traces"):  # read-only inputs; databases are written beside
        (data / folder).symlink_to(DATA / folder, target_is_directory=True)

    with pytest.MonkeyPatch.context() as patch:
        for name, value in kernel_environment(scratch).items():
            patch.setenv(name, value)
        patch.delenv("MPLBACKEND", raising=False)  # the kernel draws inline
        results = asyncio.run(execute_all(NOTEBOOKS, cwd))
    return {n.name: result for n, result in zip(NOTEBOOKS, results, strict=True)}


def test_the_notebooks_are_there() -> None:
    names = [n.name for n in NOTEBOOKS]
    assert set(names) >= {
        "01_quickstart.ipynb",
        "02_real_trajectories.ipynb",
        "03_background_analysis.ipynb",
        "04_import_traces.ipynb",
    }


@pytest.mark.parametrize("notebook", [pytest.param(n, id=n.stem) for n in NOTEBOOKS])
def test_notebook_runs_without_errors(notebook: Path, executed: dict[str, Any]) -> None:
    result = executed[notebook.name]
    if isinstance(result, Exception):
        pytest.fail(f"{notebook.name} failed in a fresh kernel:\n{result}")
    errors = [
        output
        for cell in result.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]
    assert not errors


@pytest.mark.parametrize("notebook", [pytest.param(n, id=n.stem) for n in NOTEBOOKS])
def test_notebook_draws_its_plots(notebook: Path, executed: dict[str, Any]) -> None:
    result = executed[notebook.name]
    if isinstance(result, Exception):
        pytest.skip("the notebook did not run (see test_notebook_runs_without_errors)")
    plot_cells = [c for c in result.cells if c.cell_type == "code" and ".plot(" in c.source]
    assert plot_cells
    for cell in plot_cells:
        assert any("image/png" in out.get("data", {}) for out in cell.outputs), cell.source


@pytest.mark.parametrize("notebook", [pytest.param(n, id=n.stem) for n in NOTEBOOKS])
def test_committed_notebook_is_clean(notebook: Path) -> None:
    """Outputs cleared, no nest_asyncio, and top-level await instead of asyncio.run."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    source = "\n".join("".join(c["source"]) for c in code)
    assert "nest_asyncio" not in source and "asyncio.run(" not in source
    assert "await " in source
