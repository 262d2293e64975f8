"""Both worlds of every recipe, one picture each (``python -m pyro_kl gallery``).

Each picture puts the **real world P (data + guide)** beside the **dream world
Q (model)** of one of the essay's drawings (see :mod:`pyro_kl.recipes`), with
the objective its ELBO derives printed underneath.
"""

import os
import shutil
from typing import List

import pyro

from .recipes import RECIPES
from .worlds import render_worlds

DOT_SOURCE_FORMATS = ("gv", "dot")
"""Formats that write the DOT text itself, which needs no ``dot`` program."""


def _check_format(format: str) -> str:
    import graphviz

    fmt = str(format).lower().lstrip(".")
    if fmt not in DOT_SOURCE_FORMATS and fmt not in graphviz.FORMATS:
        raise ValueError(
            f"format={format!r} is not a format graphviz writes; use 'svg', 'png', "
            "'pdf' (or any of graphviz.FORMATS), or 'gv' for the DOT source."
        )
    if fmt not in DOT_SOURCE_FORMATS and shutil.which("dot") is None:
        raise RuntimeError(
            f"format={format!r} needs graphviz's `dot` program, which is not on PATH; "
            "install graphviz, or use format='gv' for the DOT sources."
        )
    return fmt


def render_gallery(out: str, *, format: str = "svg") -> List[str]:
    """Render both worlds of every recipe in :data:`pyro_kl.recipes.RECIPES` into ``out``.

    Each recipe is built with its default sizes, traced on its own seeded data
    set and drawn with the weights of its default ELBO; the file is named after
    the recipe (``vae.svg``, ``vib.svg``, ...). Pyro's global parameter store
    is left as it was: every recipe is traced in a scope of its own.

    :param str out: the output folder (created if missing).
    :param str format: any format graphviz writes (``"svg"``, ``"png"``,
        ``"pdf"``, ...), which needs graphviz's ``dot`` program; or ``"gv"``
        to write the DOT source, which does not.
    :returns: the paths written, one per recipe, in the essay's order.
    :rtype: list
    :raises ValueError: if ``format`` is not one graphviz writes.
    :raises RuntimeError: if the format needs ``dot`` and it is not installed.

    Example::

        for path in render_gallery("gallery", format="gv"):
            print(path)
    """
    fmt = _check_format(format)
    os.makedirs(out, exist_ok=True)
    paths = []
    for name, recipe_class in RECIPES.items():
        path = os.path.join(out, f"{name}.{fmt}")
        with pyro.get_param_store().scope():
            recipe = recipe_class()
            data = recipe.make_data(seed=0)
            render_worlds(
                recipe.model, recipe.guide, data, elbo=recipe.make_elbo(), filename=path
            )
        paths.append(path)
    return paths
