"""Re-derive the stored objectives and world pictures of tutorials, without training.

The cells tagged ``check-outputs`` show what :func:`pyro_kl.derive_objective` and
:func:`pyro_kl.render_worlds` make of a recipe, which does not depend on training
or on the notebook's size. After a change to the objective text or to the
pictures, this script runs those cells (and the ``check-setup`` cells they need)
in small mode, in this process, and replaces their stored outputs; every other
cell keeps the outputs of its full-size run. tests/test_stored_outputs.py checks
the result.

Usage::

    python scripts/refresh_derived_outputs.py tutorials/*.ipynb
"""

import argparse
import contextlib
import io
import os
import sys
import warnings
from typing import Iterable, List

import nbformat

CHECKED, SETUP = "check-outputs", "check-setup"


class _Outputs(io.TextIOBase):
    """Collects a cell's outputs in order: printed text as stream outputs, displays
    as display_data outputs (every mime type the formatter gives)."""

    def __init__(self):
        self.outputs: List[dict] = []

    def write(self, text: str) -> int:
        if self.outputs and self.outputs[-1]["output_type"] == "stream":
            self.outputs[-1]["text"] += text
        else:
            self.outputs.append(nbformat.v4.new_output("stream", name="stdout", text=text))
        return len(text)

    def display(self, data: dict) -> None:
        self.outputs.append(nbformat.v4.new_output("display_data", data=data, metadata={}))


def _python_source(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%"))


def refresh(path: str) -> List[int]:
    """Re-runs the tagged cells of the notebook at ``path`` in small mode and
    replaces the outputs of its ``check-outputs`` cells.

    :returns: the indices of the refreshed cells.
    """
    import IPython.display
    import pyro
    import torch
    from IPython.core.formatters import DisplayFormatter

    notebook = nbformat.read(path, as_version=4)
    formatter = DisplayFormatter()
    current = _Outputs()

    def display(*objects, **kwargs):
        for obj in objects:
            current.display(formatter.format(obj)[0])

    refreshed = []
    os.environ["CI"], os.environ["MPLBACKEND"] = "1", "Agg"
    cwd, original, threads = os.getcwd(), IPython.display.display, torch.get_num_threads()
    IPython.display.display = display
    try:
        with warnings.catch_warnings(), pyro.get_param_store().scope():
            os.chdir(os.path.dirname(os.path.abspath(path)))
            namespace = {"__name__": "__main__", "display": display}
            for index, cell in enumerate(notebook.cells):
                tags = cell.get("metadata", {}).get("tags", [])
                if cell.cell_type != "code" or not (CHECKED in tags or SETUP in tags):
                    continue
                current = _Outputs()
                with contextlib.redirect_stdout(current):
                    exec(compile(_python_source(cell.source), f"<cell {index}>", "exec"), namespace)
                if CHECKED in tags:
                    cell.outputs = current.outputs
                    refreshed.append(index)
    finally:
        os.chdir(cwd)
        IPython.display.display = original
        torch.set_num_threads(threads)
    nbformat.write(notebook, path)
    return refreshed


def main(paths: Iterable[str]) -> None:
    for path in paths:
        print(path, "refreshed cells", refresh(path), file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="notebook files")
    main(parser.parse_args().paths)
