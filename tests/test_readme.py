"""The README's example runs as written and logs terms that sum to the loss."""

import contextlib
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).parents[1] / "README.md"


def test_readme_beta_vae_example_runs():
    text = README.read_text()
    code = re.search(r"## A β-VAE with SVI\n\n```python\n(.*?)```", text, re.S).group(1)
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(code, str(README), "exec"), namespace)
    assert printed.getvalue().count("'distortion'") == 100
    elbo, loss = namespace["elbo"], namespace["loss"]
    assert set(elbo.last_terms) == {"rate", "distortion"}
    assert elbo.last_weights["rate"] == 0.5
    expected = elbo.last_terms["distortion"] + 0.5 * elbo.last_terms["rate"]
    assert loss == pytest.approx(expected, rel=1e-6)
