"""The user guide's first examples run as written and log terms that sum to the loss."""

import contextlib
import io
import pathlib
import re

import pytest

GUIDE = pathlib.Path(__file__).parents[1] / "docs" / "guide"


def test_quickstart_beta_vae_example_runs():
    page = GUIDE / "quickstart.md"
    text = page.read_text()
    code = re.search(r"## A β-VAE with SVI\n\n```python\n(.*?)```", text, re.S).group(1)
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(code, str(page), "exec"), namespace)
    assert printed.getvalue().count("'distortion'") == 100
    elbo, loss = namespace["elbo"], namespace["loss"]
    assert set(elbo.last_terms) == {"rate", "distortion"}
    assert elbo.last_weights["rate"] == 0.5
    expected = elbo.last_terms["distortion"] + 0.5 * elbo.last_terms["rate"]
    assert loss == pytest.approx(expected, rel=1e-6)


def test_discrete_latents_mixture_example_sums_the_assignment_exactly():
    page = GUIDE / "discrete-latents.md"
    text = page.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace = {}
    exec(compile(code, str(page), "exec"), namespace)
    torch, dist = namespace["torch"], namespace["dist"]
    x, elbo = namespace["x"], namespace["elbo"]
    # the terms were estimated at the initial parameters, before the step
    locs = torch.tensor([-2.0, 0.0, 2.0])
    joint = dist.Normal(locs, 1.0).log_prob(x[:, None]) + torch.tensor(1 / 3).log()
    exact = -joint.logsumexp(-1).sum().item()
    assert elbo.last_terms == pytest.approx({"distortion": exact}, rel=1e-6)
