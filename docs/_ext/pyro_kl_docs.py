"""Sphinx helpers of pyro_kl's documentation.

- ``.. pyro-kl-all:: MODULE`` documents every name in ``MODULE.__all__``
  (classes with their members, functions, data), so the API pages follow the
  code: a name added to ``__all__`` appears, a renamed one cannot vanish. A
  name the module re-exports from a module documented elsewhere (give those
  with ``:canonical: pyro_kl.diagnostics``) gets a short entry that links to
  the full one.
- After reading, every public name (:data:`PUBLIC_MODULES`) must be a Python
  object of the built docs; a missing one is a warning, so ``-W`` fails.
- The notebooks of ``tutorials/`` are mirrored into ``docs/tutorials/``
  (links, or copies where links cannot be made) before the build reads them,
  so the tutorials' toctree picks up every notebook.
"""

import importlib
import inspect
import os
import pkgutil
import pathlib
import shutil
from typing import Dict, List, Optional

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

PUBLIC_MODULES = ("pyro_kl", "pyro_kl.recipes", "pyro_kl.diagnostics")
"""The modules whose ``__all__`` the API reference documents in full."""


INSTANCE_ATTRIBUTES: Dict[str, Dict[str, str]] = {}
"""Attributes set in ``__init__`` that the class docstrings refer to, documented here
until the code gives them ``#:`` comments."""


def public_names(module_name: str) -> List[str]:
    """``module.__all__``, refused when the module has none."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if not names:
        raise ValueError(f"{module_name} has no __all__; the API pages are generated from it")
    return list(names)


def _kind(obj: object) -> str:
    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return "data"


def api_rst(module_name: str, canonical: Optional[List[str]] = None) -> str:
    """The reStructuredText that documents every name of ``module_name.__all__``.

    :param module_name: a module with ``__all__``.
    :param canonical: modules whose objects are documented on their own page;
        a name of ``module_name`` that is the same object as one of theirs
        gets a short entry linking there instead of a second full one.

    Example::

        text = api_rst("pyro_kl.recipes")
        assert ".. autoclass:: pyro_kl.recipes.VAE" in text
    """
    module = importlib.import_module(module_name)
    owners: Dict[int, str] = {}
    for other in canonical or ():
        other_module = importlib.import_module(other)
        for name in public_names(other):
            owners[id(getattr(other_module, name))] = f"{other}.{name}"
    lines = []
    for name in public_names(module_name):
        obj = getattr(module, name)
        kind = _kind(obj)
        full = f"{module_name}.{name}"
        owner = owners.get(id(obj))
        if owner is not None:
            role = {"class": "class", "function": "func", "data": "data"}[kind]
            lines += [f".. py:{kind}:: {name}", f"   :module: {module_name}", "",
                      f"   The same as :{role}:`{owner}`.", ""]
        elif kind == "class":
            lines += [f".. autoclass:: {full}", "   :members:", "   :show-inheritance:", ""]
            for attribute, text in INSTANCE_ATTRIBUTES.get(full, {}).items():
                lines += [f"   .. py:attribute:: {attribute}", "", f"      {text}", ""]
        elif kind == "function":
            lines += [f".. autofunction:: {full}", ""]
        else:
            lines += [f".. autodata:: {full}", "   :annotation:", ""]
    return "\n".join(lines)


def _public_objects() -> Dict[int, str]:
    """id(object) -> its documented public name, over :data:`PUBLIC_MODULES`."""
    owners: Dict[int, str] = {}
    for module_name in PUBLIC_MODULES:  # the submodules' names win
        module = importlib.import_module(module_name)
        for name in public_names(module_name):
            obj = getattr(module, name)
            if inspect.isclass(obj) or callable(obj):
                owners[id(obj)] = f"{module_name}.{name}"
    return owners


def internal_modules() -> List[str]:
    """Every module of the package, in import-path order."""
    import pyro_kl

    names = ["pyro_kl"] + [
        info.name for info in pkgutil.walk_packages(pyro_kl.__path__, "pyro_kl.")
    ]
    return sorted(name for name in names if name not in ("pyro_kl", "pyro_kl.__main__"))


def internals_rst() -> str:
    """Every module but the public ones, with the classes and functions it defines
    (those without a docstring, and public objects, left out) and its documented data.

    Example::

        text = internals_rst()
        assert ".. automodule:: pyro_kl.elbo" in text
        assert "pyro_kl.elbo.WeightedELBO" not in text  # public: on the pyro_kl page
    """
    from sphinx.pycode import ModuleAnalyzer

    public = set(_public_objects())
    lines = []
    for module_name in internal_modules():
        if module_name in PUBLIC_MODULES:
            continue
        module = importlib.import_module(module_name)
        title = f"``{module_name}``"
        lines += [title, "-" * len(title), "", f".. automodule:: {module_name}",
                  "   :no-members:", ""]
        for name, obj in vars(module).items():
            if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", None) != module_name or id(obj) in public:
                continue
            if obj.__doc__:
                directive = "autoclass" if inspect.isclass(obj) else "autofunction"
                lines += [f".. {directive}:: {module_name}.{name}", ""]
        attr_docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
        for scope, name in attr_docs:
            if scope == "" and not name.startswith("_"):
                lines += [f".. autodata:: {module_name}.{name}", "   :no-value:", ""]
    return "\n".join(lines)


class PyroKLInternals(SphinxDirective):
    """``.. pyro-kl-internals::``: :func:`internals_rst`, parsed in place."""

    def run(self) -> List[nodes.Node]:
        content = StringList(internals_rst().splitlines(), source="<pyro-kl-internals>")
        container = nodes.container()
        self.state.nested_parse(content, self.content_offset, container, match_titles=True)
        return container.children


class PyroKLAll(SphinxDirective):
    """``.. pyro-kl-all:: MODULE`` with an optional ``:canonical: MOD1 MOD2``."""

    required_arguments = 1
    option_spec = {"canonical": directives.unchanged}

    def run(self) -> List[nodes.Node]:
        module_name = self.arguments[0]
        canonical = self.options.get("canonical", "").split()
        text = api_rst(module_name, canonical)
        source = f"<pyro-kl-all {module_name}>"
        content = StringList(text.splitlines(), source=source)
        container = nodes.container()
        self.state.nested_parse(content, self.content_offset, container)
        return container.children


def check_public_names(app, env) -> None:
    """Warn for each public name the built docs do not describe."""
    documented = set(env.get_domain("py").objects)
    for module_name in PUBLIC_MODULES:
        for name in public_names(module_name):
            if f"{module_name}.{name}" not in documented:
                logger.warning("%s.%s is public (in __all__) but not in the API pages",
                               module_name, name)


def _import(path: str):
    """The object at a dotted path, or None."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                obj = getattr(obj, part)
        except AttributeError:
            return None
        return obj
    return None


def resolve_to_documented_object(app, env, node, contnode):
    """Resolve a Python reference by the object it names, not by its spelling.

    A docstring that names an object where it is defined or imported
    (``:func:`iwae_bound``` inside ``pyro_kl.diagnostics.bounds``,
    ``pyro_kl.objective.derive_objective``) links to where that object is
    documented (``pyro_kl.diagnostics.iwae_bound``, ``pyro_kl.derive_objective``).
    A name no import finds stays unresolved, and ``-W`` reports it.
    """
    if node.get("refdomain") != "py" or not node.get("reftarget", "").split(".")[0]:
        return None
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module:
        candidates += [f"{module}.{target}"]
        if cls:
            candidates += [f"{module}.{cls}.{target}"]
    documented = env.get_domain("py").objects
    owners = _public_objects()
    for candidate in candidates:
        if not candidate.startswith("pyro_kl"):
            continue
        obj = _import(candidate)
        if obj is None:
            continue
        names = [owners.get(id(obj)) if (inspect.isclass(obj) or callable(obj)) else None]
        names.append(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}")
        for name in names:
            if name and name in documented:
                return env.get_domain("py").resolve_xref(
                    env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
                )
    return None


def mirror_tutorials(app) -> None:
    """Link (or copy) every ``tutorials/*.ipynb`` into ``docs/tutorials/``."""
    source = pathlib.Path(app.srcdir).parent / "tutorials"
    target = pathlib.Path(app.srcdir) / "tutorials"
    target.mkdir(exist_ok=True)
    wanted = {path.name: path for path in sorted(source.glob("*.ipynb"))}
    for stale in target.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for name, path in wanted.items():
        mirror = target / name
        if mirror.is_symlink() or mirror.exists():
            if mirror.resolve() == path.resolve():
                continue
            if mirror.is_symlink() or not mirror.exists():
                mirror.unlink()
            elif mirror.read_bytes() == path.read_bytes():
                continue
            else:
                mirror.unlink()
        try:
            os.symlink(os.path.relpath(path, target), mirror)
        except OSError:
            temporary = mirror.with_name(f".{name}.partial")
            shutil.copyfile(path, temporary)
            os.replace(temporary, mirror)


def setup(app):
    app.add_directive("pyro-kl-all", PyroKLAll)
    app.add_directive("pyro-kl-internals", PyroKLInternals)
    app.connect("builder-inited", mirror_tutorials)
    app.connect("env-check-consistency", check_public_names)
    app.connect("missing-reference", resolve_to_documented_object)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
