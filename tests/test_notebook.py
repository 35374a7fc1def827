"""docs/notebooks/quickstart.ipynb runs from top to bottom in a fresh
kernel, on digits, as a student (and CI) runs it."""

import os

import pytest

from tests.conftest import REPO

NOTEBOOK = REPO / "docs" / "notebooks" / "quickstart.ipynb"
CELL_TIMEOUT = 300  # seconds; the whole notebook takes about 35 s on a 2-core CPU


def test_the_quickstart_notebook_runs_without_an_error(tmp_path):
    """Must show: every cell runs (nbclient raises CellExecutionError at the
    first that fails), on digits with KERASCNN_DATA_DIR unset, writing only
    into its working folder, with no TensorFlow start-up lines in its
    outputs; the committed file is left as it is."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    committed = NOTEBOOK.read_bytes()
    notebook = nbformat.reads(committed.decode(), as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "KERASCNN_DATA_DIR"}
    # The kernel imports this checkout's kerascnn, so the install cell skips (as it does in CI).
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "data: digits" in text
    assert "the same 360 test predictions before saving and after loading" in text
    assert "absl::InitializeLog" not in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 8
    assert (tmp_path / "quickstart_output" / "lenet.keras").is_file()
    assert NOTEBOOK.read_bytes() == committed
