"""Strip volatile metadata from notebooks, keeping their outputs.

Removes execution timestamps, widget and kernel state and cell ids, so that
committed notebooks differ only where their content does. Cell tags are kept:
tests/test_stored_outputs.py reads them (``check-outputs``, ``check-setup``).

Usage::

    python scripts/strip_notebooks.py tutorials/*.ipynb
"""

import argparse
from typing import Iterable

import nbformat

KEPT_NOTEBOOK_METADATA = ("kernelspec", "language_info")


def strip_notebook(path: str) -> None:
    """Rewrites the notebook at ``path`` without volatile metadata.

    :param str path: a ``.ipynb`` file.
    """
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata = {
        key: notebook.metadata[key] for key in KEPT_NOTEBOOK_METADATA if key in notebook.metadata
    }
    notebook.metadata.get("language_info", {}).pop("version", None)
    for cell in notebook.cells:
        tags = cell.metadata.get("tags")
        cell.metadata = {"tags": tags} if tags else {}
        cell.pop("id", None)
        if cell.cell_type == "code":
            for output in cell.outputs:
                if "metadata" in output:
                    output["metadata"] = {}
    notebook.nbformat_minor = 4
    nbformat.write(notebook, path)


def main(paths: Iterable[str]) -> None:
    for path in paths:
        strip_notebook(path)
        print(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="notebook files")
    main(parser.parse_args().paths)
