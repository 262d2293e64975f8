"""Sphinx configuration of pyro_kl's documentation.

Build (offline, warnings as errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Links into Pyro's and PyTorch's documentation: intersphinx needs their
``objects.inv`` inventories, which live on docs.pyro.ai and pytorch.org. The
default build never reaches the network: references to ``pyro.*`` and
``torch.*`` names then render as code without a link (and are exempt from the
nitpicky check, which holds for every other reference). Set
``PYRO_KL_DOCS_INTERSPHINX=1`` where the network is reachable to link them.
"""

import os
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

import pyro_kl  # noqa: E402

project = "pyro_kl"
author = "the pyro_kl authors"
copyright = "the pyro_kl authors"
release = version = pyro_kl.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",  # MyST markdown pages and the tutorials' stored outputs (no pandoc needed)
    "pyro_kl_docs",  # the API pages from __all__, the tutorials mirrored from tutorials/
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
root_doc = "index"

# ---- notebooks: rendered from their stored outputs, never executed ----------
nb_execution_mode = "off"
nb_output_stderr = "show"
nb_merge_streams = True
nb_mime_priority_overrides = [("html", "text/latex", 100)]  # the derived objectives

# ---- MyST ---------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# ---- autodoc: the docstrings are Sphinx field lists (no napoleon) ------------
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autoclass_content = "both"

# ---- references ---------------------------------------------------------------
nitpicky = True
nitpick_ignore_regex = [
    # Pyro, PyTorch and the other libraries the signatures name: linked only when
    # their inventories can be fetched (see the module docstring)
    (r"py:.*", r"(pyro|torch|graphviz|numpy|matplotlib|abc|collections\.abc)(\..*)?"),
    (r"py:.*", r"(typing\.)?(Any|Callable|Dict|Iterable|Iterator|List|Mapping|Optional"
               r"|Sequence|Tuple|Type|Union|Hashable|MutableMapping|Literal)"),
    (r"py:.*", r"(builtins\.)?(float|int|str|bool|dict|list|tuple|object|callable|bytes|None"
               r"|os\.PathLike|pathlib\.Path|Path)"),
    (r"py:class", r"Module"),  # torch.nn.Module.forward's own docstring, inherited
]
# References in the core's docstrings that name nothing documented; the core is being
# rewritten (issue 16): fix them there and drop these lines.
nitpick_ignore = [
    ("py:attr", "weights"),  # pyro_kl.weighting.ReadOnlyMap
    ("py:attr", "site_terms"),  # pyro_kl.weighting.ReadOnlyMap
    ("py:meth", "_repr_latex_"),  # pyro_kl.objective.Objective
    ("py:data", "WORK_FACTOR"),  # pyro_kl.diagnostics.traces.ELEMENT_BUDGET
]

if os.environ.get("PYRO_KL_DOCS_INTERSPHINX"):
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "pyro": ("https://docs.pyro.ai/en/stable/", None),
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
    }
else:
    intersphinx_mapping = {}

# ---- HTML -----------------------------------------------------------------------
html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"pyro_kl {release}"
html_theme_options = {
    "description": "Pyro objectives as KL(real world || dream world), in named terms",
    "fixed_sidebar": True,
}
