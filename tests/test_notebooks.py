"""Every notebook in notebooks/ runs top to bottom (small size) and is committed without outputs."""

from pathlib import Path

import pytest
from conftest import optional

nbformat = optional("nbformat")
NotebookClient = optional("nbclient").NotebookClient
optional("ipykernel")
optional("matplotlib")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_exist():
    assert {p.stem for p in NOTEBOOKS} >= {
        "quickstart",
        "environment_and_critics",
        "ablations",
        "transfer",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        "commit notebooks without outputs"
    )
    monkeypatch.setenv("RMTL_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("RMTL_REPO", str(path.parents[1]))  # where the committed results are
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    plots = sum("plots." in c.source for c in nb.cells if c.cell_type == "code")
    images = sum(
        "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert images >= plots, f"{plots} cells plot but only {images} images were rendered"
