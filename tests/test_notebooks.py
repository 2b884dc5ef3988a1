"""The tutorial notebooks: stored without outputs, equal to their generator, and executed top to
bottom (nbclient, the python3 kernel of this environment) on tiny settings so they never rot."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
#: Per-cell limit: a cell that trains or runs Lava on tiny settings takes well under a minute.
CELL_TIMEOUT_S = 300
#: Files each notebook must leave in its working folder (proof that its steps really ran).
PRODUCES = {
    "01_train_and_compare.ipynb": [
        "runs/lorsp/summary.json",
        "runs/lor_vp/summary.json",
        "runs/lor_vp_pruned/summary.json",
        "pictures/prompts.png",
        "pictures/values.png",
        "pictures/sparsity.png",
    ],
    "02_export_nir_and_simulate_in_lava.ipynb": ["lorsp.nir", "cosim_raster.png"],
    "03_energy_and_synops.ipynb": ["energy.png"],
}


def _generator():
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", NOTEBOOK_DIR / "build_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_three_notebooks_exist():
    assert sorted(PRODUCES) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_without_outputs_and_equal_to_the_generator(name):
    stored = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(stored)
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: {cell.id}"
    assert stored.metadata.kernelspec.name == "python3"
    assert stored == _generator().build(name), (
        f"{name} differs from notebooks/build_notebooks.py; edit the cells there and rerun it"
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for all notebooks, so 02 and 03 reuse the lorsp run 01 trained (each notebook
    trains it itself when run alone)."""
    return tmp_path_factory.mktemp("notebooks")


@pytest.mark.slow
@pytest.mark.lava
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_top_to_bottom(name, workdir, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("LORSP_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells), "every code cell ran"
    printed = "".join(
        o.get("text", "") for c in code_cells for o in c.outputs if o.output_type == "stream"
    )
    assert "small settings" in printed, "the kernel saw LORSP_NOTEBOOK_SMALL=1"
    for relative in PRODUCES[name]:
        assert (workdir / "notebook_work" / relative).is_file(), relative
    pictures = [o for c in code_cells for o in c.outputs if "image/png" in o.get("data", {})]
    assert pictures, "every notebook shows at least one picture"
