"""``analysis.ipynb`` (the project's analysis notebook) executes from top to bottom without an
error, on real data, through nbclient (as Jupyter would run it). About a minute on 2 cores."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "analysis.ipynb"


@pytest.mark.slow
def test_analysis_notebook_executes(mnist_dir, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' (nbformat, nbclient, ipykernel)")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' (nbformat, nbclient, ipykernel)")
    pytest.importorskip("ipykernel", reason="pip install -e '.[test]' (ipykernel runs the notebook's code)")
    monkeypatch.setenv("FASTNN_DATA_DIR", str(mnist_dir))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()                                   # raises CellExecutionError naming the failing cell
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "evaluated here: accuracy 98.81%" in text
    assert ("torch agrees" in text) == (importlib.util.find_spec("torch") is not None)   # its check ran where it can
