"""Every ``Example::`` block in pyro_kl's docstrings runs, as Pyro's doctests do.

A block runs in a namespace holding its own module's names, pyro_kl's public
names, the usual imports, and a few fixtures the examples share: ``vae`` (the
VAE recipe) with its data ``x``, and ``model``, ``guide``, ``batches`` from
the VIB recipe (a model with a label site ``y``). A block whose header says
what it needs, ``Example (needs torch.distributed)::``, is listed but not run.
"""

import ast
import importlib
import pathlib
import re
import textwrap

import pytest

PACKAGE = pathlib.Path(__file__).parents[1] / "pyro_kl"
HEADER = re.compile(r"Example(?P<needs> \(needs [^)]*\))?[^\n:]*::\n\n(?P<body>(?:[ ]{4}.*\n|\n)+)")


def _examples():
    for path in sorted(PACKAGE.rglob("*.py")):
        module_name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module_name = module_name.removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
                continue
            doc = ast.get_docstring(node)
            for match in HEADER.finditer((doc or "") + "\n"):
                where = f"{module_name}:{getattr(node, 'name', '<module>')}"
                yield pytest.param(
                    module_name,
                    textwrap.dedent(match.group("body")),
                    id=where,
                    marks=[pytest.mark.skip(reason=match.group("needs"))]
                    if match.group("needs")
                    else [],
                )


def _namespace(module_name: str) -> dict:
    import os

    import pyro
    import pyro.distributions as dist
    import torch
    from pyro import poutine
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam
    from torch.utils.data import DataLoader

    import pyro_kl
    from pyro_kl.recipes import VAE, VIB

    namespace = dict(vars(importlib.import_module(module_name)))
    namespace.update({name: getattr(pyro_kl, name) for name in pyro_kl.__all__})
    namespace.update(
        os=os, pyro=pyro, dist=dist, torch=torch, poutine=poutine, SVI=SVI,
        Trace_ELBO=Trace_ELBO, Adam=Adam, DataLoader=DataLoader, pyro_kl=pyro_kl,
    )
    vae = VAE()
    (x,) = vae.make_data(seed=0)
    vib = VIB()
    vib_x, vib_y = vib.make_data(seed=0)
    namespace.update(
        vae=vae, x=x, x_train=x[:100], x_test=x[100:], images=x,
        model=vib.model, guide=vib.guide, batches=[(vib_x, vib_y)],
    )
    return namespace


@pytest.mark.slow
@pytest.mark.parametrize("module_name, code", list(_examples()))
def test_docstring_example_runs(module_name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    exec(compile(code, f"<{module_name} example>", "exec"), _namespace(module_name))
