"""The stored outputs of every committed tutorial match what the code derives today.

A notebook's stored outputs come from a full-size run and are not re-run by CI at
full size. Its *derived objectives* (the ``L = ...`` / ``I[P;Q] = ...`` text that
:func:`pyro_kl.derive_objective` prints, and its LaTeX) and its *pictures of both
worlds* (the SVG of :func:`pyro_kl.render_worlds`) do not depend on training, so
they are checked here against a fresh derivation, cheaply:

- a cell that shows an objective or a picture is tagged ``check-outputs``; the
  cells it needs (imports, data, the recipe) are tagged ``check-setup``;
- those cells are run in this process, in notebook order, in small mode (``CI``
  set), with ``display`` and ``print`` captured; nothing is trained;
- each ``check-outputs`` cell's objective text, its LaTeX and its pictures (the
  sets of node titles and labels, edge titles and texts of each SVG, not its
  bytes or layout) must equal the stored ones.

A cell whose stored outputs show an objective or a picture without the tag fails
the check, so nothing escapes it by omission.
"""

import contextlib
import glob
import io
import os
import re
import shutil
import warnings
import xml.etree.ElementTree as ElementTree
from typing import Dict, List

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("IPython")

TUTORIALS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tutorials")
NOTEBOOKS = sorted(glob.glob(os.path.join(TUTORIALS, "[0-9][0-9]_*.ipynb")))
CHECKED, SETUP = "check-outputs", "check-setup"
OBJECTIVE_LINE = re.compile(r"^(L|I\[P;Q\]) = ")
SVG = "image/svg+xml"
LATEX = "text/latex"
SVG_NS = "{http://www.w3.org/2000/svg}"


def objective_blocks(text: str) -> List[str]:
    """Each printed objective: its ``L = ...`` / ``I[P;Q] = ...`` line and the
    indented lines after it (the relation and one line per term)."""
    blocks, current = [], None
    for line in text.splitlines():
        if OBJECTIVE_LINE.match(line):
            current = [line]
            blocks.append(current)
        elif current is not None and line.startswith("  "):
            current.append(line.rstrip())
        else:
            current = None
    return ["\n".join(block) for block in blocks]


def svg_structure(svg: str) -> Dict[str, object]:
    """What a picture shows, independent of layout: node titles with their texts,
    edge titles, and the multiset of every text (labels, the objective lines)."""
    root = ElementTree.fromstring(svg)
    nodes, edges, texts = set(), set(), []
    for group in root.iter(f"{SVG_NS}g"):
        kind = group.get("class")
        title = group.find(f"{SVG_NS}title")
        title = title.text if title is not None else None
        words = tuple(t.text or "" for t in group.iter(f"{SVG_NS}text"))
        if kind == "node":
            nodes.add((title, words))
        elif kind == "edge":
            edges.add(title)
    texts = sorted(t.text or "" for t in root.iter(f"{SVG_NS}text"))
    return {"nodes": nodes, "edges": edges, "texts": texts}


def _output_text(output) -> str:
    if output.output_type == "stream":
        return output.text
    if output.output_type in ("execute_result", "display_data"):
        return output.get("data", {}).get("text/plain", "")
    return ""


def stored_views(cell) -> Dict[str, list]:
    """The checked views of a cell's stored outputs."""
    text = "".join(_output_text(o) for o in cell.outputs if o.output_type == "stream")
    data = [o.get("data", {}) for o in cell.outputs if o.output_type != "stream"]
    return {
        "objectives": objective_blocks(text),
        "latex": [d[LATEX] for d in data if LATEX in d],
        "pictures": [d[SVG] for d in data if SVG in d],
    }


def shows_derived_outputs(cell) -> bool:
    views = stored_views(cell)
    derived_latex = [t for t in views["latex"] if "I[P;Q]" in t or r"\mathcal{L}" in t]
    return bool(views["objectives"] or derived_latex or views["pictures"])


def _tags(cell) -> List[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _python_source(source: str) -> str:
    """The cell without IPython magics (``%matplotlib inline``): none is needed here."""
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%"))


@contextlib.contextmanager
def _isolated_run():
    """Small mode, a headless backend, and the global state (RNG, threads, param
    store, warnings filters) restored afterwards."""
    import random

    import numpy
    import pyro
    import torch

    saved_env = {key: os.environ.get(key) for key in ("CI", "MPLBACKEND")}
    os.environ["CI"], os.environ["MPLBACKEND"] = "1", "Agg"
    threads = torch.get_num_threads()
    rng = torch.get_rng_state(), random.getstate(), numpy.random.get_state()
    cwd = os.getcwd()
    try:
        with warnings.catch_warnings(), pyro.get_param_store().scope():
            os.chdir(TUTORIALS)
            yield
    finally:
        os.chdir(cwd)
        torch.set_rng_state(rng[0])
        random.setstate(rng[1])
        numpy.random.set_state(rng[2])
        torch.set_num_threads(threads)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fresh_views(notebook) -> Dict[int, Dict[str, list]]:
    """Runs the tagged cells and returns, for each ``check-outputs`` cell (by index),
    the views of what it displays and prints now."""
    import IPython.display
    from IPython.core.formatters import DisplayFormatter

    formatter = DisplayFormatter()
    shown: List[dict] = []

    def display(*objects, **kwargs):
        for obj in objects:
            shown.append(formatter.format(obj)[0])

    views = {}
    with _isolated_run():
        original = IPython.display.display
        IPython.display.display = display
        try:
            namespace = {"__name__": "__main__", "display": display}
            for index, cell in enumerate(notebook.cells):
                tags = _tags(cell)
                if cell.cell_type != "code" or not (CHECKED in tags or SETUP in tags):
                    continue
                shown.clear()
                printed = io.StringIO()
                with contextlib.redirect_stdout(printed):
                    exec(compile(_python_source(cell.source), f"<cell {index}>", "exec"), namespace)
                if CHECKED in tags:
                    views[index] = {
                        "objectives": objective_blocks(printed.getvalue()),
                        "latex": [d[LATEX] for d in shown if LATEX in d],
                        "pictures": [d[SVG] for d in shown if SVG in d],
                    }
        finally:
            IPython.display.display = original
    return views


def _compare(name: str, index: int, stored: dict, fresh: dict, *, pictures: bool) -> List[str]:
    problems = []
    where = f"{name}, cell {index}"
    if stored["objectives"] != fresh["objectives"]:
        problems.append(f"{where}: printed objective\n  stored: {stored['objectives']}\n"
                        f"  fresh:  {fresh['objectives']}")
    if stored["latex"] != fresh["latex"]:
        problems.append(f"{where}: LaTeX\n  stored: {stored['latex']}\n  fresh:  {fresh['latex']}")
    if pictures:
        if len(stored["pictures"]) != len(fresh["pictures"]):
            problems.append(f"{where}: {len(stored['pictures'])} stored pictures, "
                            f"{len(fresh['pictures'])} fresh")
        for number, (old, new) in enumerate(zip(stored["pictures"], fresh["pictures"])):
            old, new = svg_structure(old), svg_structure(new)
            for part in ("nodes", "edges", "texts"):
                if old[part] != new[part]:
                    only_old = sorted(map(str, set(old[part]) - set(new[part])))
                    only_new = sorted(map(str, set(new[part]) - set(old[part])))
                    problems.append(f"{where}, picture {number}: {part} differ; stored only: "
                                    f"{only_old}; fresh only: {only_new}")
    return problems


def test_the_tutorials_are_there():
    assert len(NOTEBOOKS) >= 8, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_every_derived_output_is_tagged(path):
    notebook = nbformat.read(path, as_version=4)
    untagged = [
        index for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and shows_derived_outputs(cell) and CHECKED not in _tags(cell)
    ]
    assert not untagged, (
        f"cells {untagged} of {os.path.basename(path)} show a derived objective or a picture of "
        f"the worlds without the {CHECKED!r} tag; tag them (and the cells they need "
        f"{SETUP!r}) so that tests/test_stored_outputs.py checks them"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_stored_objectives_and_pictures_match_the_code(path):
    notebook = nbformat.read(path, as_version=4)
    checked = [i for i, cell in enumerate(notebook.cells) if CHECKED in _tags(cell)]
    if not checked:
        pytest.skip("no derived objective or picture in this notebook")
    fresh = fresh_views(notebook)
    pictures = shutil.which("dot") is not None
    problems = []
    for index in checked:
        problems += _compare(os.path.basename(path), index, stored_views(notebook.cells[index]),
                             fresh[index], pictures=pictures)
    assert not problems, (
        "stored outputs no longer match the code; re-run the notebook at full size and strip it "
        "(python scripts/strip_notebooks.py):\n" + "\n".join(problems)
    )


def test_objective_blocks_and_svg_structure():
    text = "noise\nL = D + 0.5·R\n  weighted\n   D = distortion\nafter\nI[P;Q] = D + const\n"
    assert objective_blocks(text) == ["L = D + 0.5·R\n  weighted\n   D = distortion",
                                      "I[P;Q] = D + const"]
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg"><g class="graph"><text>I[P;Q] = D</text>'
        '<g class="node"><title>x</title><text>x</text></g>'
        '<g class="edge"><title>z&#45;&gt;x</title></g></g></svg>'
    )
    structure = svg_structure(svg)
    assert structure["nodes"] == {("x", ("x",))}
    assert structure["edges"] == {"z->x"}
    assert structure["texts"] == ["I[P;Q] = D", "x"]


SETUP_SOURCE = '''
import pyro
import pyro.distributions as dist
import pyro_kl


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x / 2, 0.7))
'''
CHECKED_SOURCE = '''
import torch
from IPython.display import display
x = torch.zeros(3)
elbo = pyro_kl.RateDistortionELBO(beta=2.0)
display(pyro_kl.render_worlds(model, guide, (x,), elbo=elbo))
objective = pyro_kl.derive_objective(model, guide, (x,), elbo=elbo)
display(objective)
print(objective)
'''


def _notebook_with_stored(outputs):
    setup = nbformat.v4.new_code_cell(SETUP_SOURCE, metadata={"tags": [SETUP]})
    checked = nbformat.v4.new_code_cell(CHECKED_SOURCE, metadata={"tags": [CHECKED]})
    checked.outputs = outputs
    return nbformat.v4.new_notebook(cells=[setup, checked])


def test_the_check_tells_a_stale_objective_and_picture_from_a_fresh_one():
    # the stored outputs of a fresh run pass ...
    fresh = fresh_views(_notebook_with_stored([]))[1]
    outputs = [nbformat.v4.new_output("display_data", data={SVG: svg, "text/plain": "<Digraph>"})
               for svg in fresh["pictures"]]
    outputs += [nbformat.v4.new_output("display_data", data={LATEX: latex})
                for latex in fresh["latex"]]
    outputs.append(nbformat.v4.new_output("stream", name="stdout", text="\n".join(
        fresh["objectives"]) + "\n"))
    notebook = _notebook_with_stored(outputs)
    assert shows_derived_outputs(notebook.cells[1])
    pictures = shutil.which("dot") is not None
    assert _compare("fresh", 1, stored_views(notebook.cells[1]), fresh, pictures=pictures) == []
    assert fresh["objectives"][0].startswith("L = D + 2·R\n")
    # ... and the text an older version printed (tutorial 03's) does not
    stale_text = "I[P;Q] = D + 2·R + const\n   D = distortion  weight 1     sites: x\n"
    outputs[-1] = nbformat.v4.new_output("stream", name="stdout", text=stale_text)
    stale = stored_views(_notebook_with_stored(outputs).cells[1])
    problems = _compare("stale", 1, stale, fresh, pictures=pictures)
    assert len(problems) == 1 and "printed objective" in problems[0]
    if pictures:  # a picture that prints another objective under its panels is stale too
        other = fresh_views(_notebook_with_stored([]))[1]["pictures"][0].replace(
            "L = D + 2·R", "L = D + 3·R")
        outputs[0] = nbformat.v4.new_output("display_data", data={SVG: other})
        problems = _compare("stale", 1, stored_views(_notebook_with_stored(outputs).cells[1]),
                            fresh, pictures=True)
        assert any("texts differ" in p and "L = D + 3·R" in p for p in problems)
