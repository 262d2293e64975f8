"""Render the README's picture: both worlds of its example, with the derived objective.

Writes ``docs/_static/readme_worlds.gv`` (the DOT source, no graphviz program
needed) and ``docs/_static/readme_worlds.svg`` (needs graphviz's ``dot``),
each atomically. ``tests/test_docs.py`` checks that the committed DOT source
is what this script gives now.

    python scripts/docs_figures.py
"""

import os
import pathlib
import shutil
import subprocess
import tempfile

STATIC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "_static"


def readme_digraph():
    """The README example's worlds: the binomial VAE recipe under ``D + 0.5·R``."""
    from pyro_kl import RateDistortionELBO, render_worlds
    from pyro_kl.recipes import VAE

    vae = VAE(likelihood="binomial", total_count=16)
    (x,) = vae.make_data(seed=0)
    return render_worlds(vae.model, vae.guide, (x,), elbo=RateDistortionELBO(beta=0.5))


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def main() -> None:
    source = readme_digraph().source
    _write_atomically(STATIC / "readme_worlds.gv", source.encode())
    if shutil.which("dot") is None:
        raise SystemExit("graphviz's `dot` is not on PATH: wrote the .gv source only")
    svg = subprocess.run(["dot", "-Tsvg"], input=source.encode(), capture_output=True, check=True)
    _write_atomically(STATIC / "readme_worlds.svg", svg.stdout)
    print(f"wrote {STATIC / 'readme_worlds.gv'} and {STATIC / 'readme_worlds.svg'}")


if __name__ == "__main__":
    main()
