"""Every notebook in tutorials/ runs without error in its small (smoke) mode."""

import gc
import glob
import os
import sys
import warnings

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TUTORIALS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tutorials")
NOTEBOOKS = sorted(glob.glob(os.path.join(TUTORIALS, "[0-9][0-9]_*.ipynb")))
TIMEOUT_S = 300


def test_the_tutorials_are_there():
    assert len(NOTEBOOKS) >= 8, NOTEBOOKS


def _kernel_manager():
    """A kernel that runs on this interpreter, whatever kernelspecs are installed."""
    from jupyter_client import KernelManager

    manager = KernelManager(kernel_name="python3")
    manager.kernel_cmd_override = None
    spec = manager.kernel_spec
    spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.env = {**spec.env, "CI": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return manager


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_in_smoke_mode(path):
    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    client = nbclient.NotebookClient(
        notebook,
        timeout=TIMEOUT_S,
        km=_kernel_manager(),
        resources={"metadata": {"path": TUTORIALS}},
    )
    with warnings.catch_warnings():
        # The kernel client's ZMQ sockets are closed by garbage collection, not by
        # nbclient; collect them here so that their ResourceWarning stays in this test.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client.execute()
        finally:
            del client
            gc.collect()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
