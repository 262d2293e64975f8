"""Run Pyro's own test files with one of its ELBO classes replaced by a pyro_kl class.

Pyro's tests are not shipped with pyro-ppl; point this at a checkout of Pyro's
sources whose version matches the installed pyro-ppl. The tests run unmodified:
a pytest plugin replaces the class in ``pyro.infer`` before they are imported.
``--option NAME=VALUE`` (repeatable) gives the replacement a keyword default,
``VALUE`` read as a Python literal; the tests' own keywords still win.

Usage::

    python scripts/pyro_suite.py PYRO_CHECKOUT tests/infer/test_enum.py \
        --replace TraceEnum_ELBO --by WeightedELBO [-- extra pytest arguments]
    python scripts/pyro_suite.py PYRO_CHECKOUT tests/infer/test_gradient.py \
        --replace TraceGraph_ELBO --by WeightedELBO --option rao_blackwell=True
"""

import argparse
import ast
import os
import subprocess
import sys
import tempfile

PLUGIN = '''
import pyro.infer
import pyro_kl

replaced = getattr(pyro.infer, {replace!r})
replacement = getattr(pyro_kl, {by!r})
options = {options!r}
if options:
    base = replacement

    def __init__(self, *args, **kwargs):
        base.__init__(self, *args, **{{**options, **kwargs}})

    replacement = type(base.__name__, (base,), {{"__init__": __init__, "__module__": __name__}})
for module in list(__import__("sys").modules.values()):
    if getattr(module, {replace!r}, None) is replaced:
        setattr(module, {replace!r}, replacement)
'''


def _option(text: str):
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(
            f"--option {text!r}: use NAME=VALUE, e.g. rao_blackwell=True"
        )
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(
            f"--option {text!r}: VALUE must be a Python literal (True, 0.5, 'name')"
        ) from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", help="a checkout of Pyro's sources (holds tests/)")
    parser.add_argument("test_file", help="e.g. tests/infer/test_enum.py")
    parser.add_argument("--replace", default="Trace_ELBO", help="the pyro.infer class to replace")
    parser.add_argument("--by", default="WeightedELBO", help="the pyro_kl class to use instead")
    parser.add_argument(
        "--option", type=_option, action="append", default=[], metavar="NAME=VALUE",
        help="a keyword default of the replacement (repeatable), e.g. rao_blackwell=True",
    )
    args, pytest_args = parser.parse_known_args()
    pytest_args = [a for a in pytest_args if a != "--"]

    with tempfile.TemporaryDirectory() as plugin_dir:
        with open(os.path.join(plugin_dir, "pyro_kl_swap.py"), "w") as plugin:
            plugin.write(PLUGIN.format(replace=args.replace, by=args.by,
                                       options=dict(args.option)))
        path = os.pathsep.join([plugin_dir, os.environ.get("PYTHONPATH", "")])
        env = dict(os.environ, PYTHONPATH=path)
        command = [
            sys.executable, "-m", "pytest", "-p", "pyro_kl_swap", "-p", "no:cacheprovider",
            args.test_file, *pytest_args,
        ]
        return subprocess.call(command, cwd=args.checkout, env=env)


if __name__ == "__main__":
    sys.exit(main())
