"""Variational diffusion as per-step KLs against the forward process's Gaussian posterior."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch.distributions import kl_divergence

from pyro_kl.recipes import VariationalDiffusion

SCHEDULE = (0.1, 0.3, 0.5)


def build():
    recipe = VariationalDiffusion(num_steps=3, noise=SCHEDULE)
    (x,) = recipe.make_data(64, seed=0)
    return recipe, x


def test_the_posterior_guide_is_the_same_real_world_drawn_backwards():
    recipe, x = build()
    forward = poutine.trace(recipe.guide).get_trace(x)
    backward = poutine.trace(poutine.replay(recipe.posterior_guide, trace=forward)).get_trace(x)
    assert [name for name in backward.stochastic_nodes if name != "data"] == ["z3", "z2", "z1"]
    assert float(backward.log_prob_sum()) == pytest.approx(float(forward.log_prob_sum()), rel=1e-5)


def test_forward_posterior_matches_bayes_rule_on_a_grid():
    recipe, _ = build()
    x, z2 = torch.tensor([0.7]), torch.tensor([-0.4])
    loc, variance = recipe.forward_posterior(x, z2, 2)
    betas, bars = torch.tensor(SCHEDULE), torch.cumprod(1 - torch.tensor(SCHEDULE), 0)
    grid = torch.linspace(-6, 6, 20001)
    # p(z1 | x) p(z2 | z1), normalised on the grid
    log_joint = dist.Normal(bars[0].sqrt() * x, (1 - bars[0]).sqrt()).log_prob(grid) + dist.Normal(
        (1 - betas[1]).sqrt() * grid, betas[1].sqrt()
    ).log_prob(z2)
    weights = torch.softmax(log_joint, 0)
    mean = (weights * grid).sum()
    assert float(loc) == pytest.approx(float(mean), abs=1e-4)
    assert float(variance) == pytest.approx(float((weights * (grid - mean) ** 2).sum()), abs=1e-4)


def test_each_level_is_its_own_term_and_they_sum_to_the_loss():
    recipe, x = build()
    elbo = recipe.make_elbo(per_step=True)
    loss = elbo.loss_and_grads(recipe.model, recipe.posterior_guide, x)
    assert set(elbo.last_terms) == {"distortion", "kl_z1", "kl_z2", "kl_z3"}
    assert sum(elbo.last_terms.values()) == pytest.approx(loss, rel=1e-6)
    # the top level's KL is against the prior and depends on x alone: exact
    bar = recipe.alpha_bars[-1]
    top = kl_divergence(dist.Normal(bar.sqrt() * x, (1 - bar).sqrt()), dist.Normal(0.0, 1.0))
    assert elbo.last_terms["kl_z3"] == pytest.approx(float(top.sum()), rel=1e-5)


def test_per_step_objective_has_the_expectation_of_pyros_elbo():
    recipe, x = build()
    recipe.fit(x, num_steps=30, lr=0.02)  # a denoiser that is not the identity
    per_step = recipe.make_elbo(per_step=True)
    losses = {"per_step": [], "monte_carlo": []}
    for seed in range(200):
        pyro.set_rng_seed(seed)
        losses["per_step"].append(per_step.loss(recipe.model, recipe.posterior_guide, x))
        losses["monte_carlo"].append(Trace_ELBO().loss(recipe.model, recipe.guide, x))
    per_step_losses, mc_losses = (torch.tensor(losses[k]) for k in ("per_step", "monte_carlo"))
    standard_error = (per_step_losses.var() / 200 + mc_losses.var() / 200).sqrt()
    assert abs(float(per_step_losses.mean() - mc_losses.mean())) < 4 * float(standard_error)


def test_schedules_are_checked():
    betas = VariationalDiffusion(num_steps=2, noise=0.2).betas
    assert torch.allclose(betas, torch.tensor([0.2, 0.2]))
    with pytest.raises(ValueError, match="num_steps of them"):
        VariationalDiffusion(num_steps=3, noise=[0.1, 0.2])
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        VariationalDiffusion(num_steps=2, noise=[0.1, 1.0])
