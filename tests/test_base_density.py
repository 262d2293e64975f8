"""Appendix A with a normalised base density m(x): the loss moves by a constant
(<log m(x)> over the data), the path gradients not at all, and <log m/q> at
q = p is -KL(P || M) <= 0."""

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributions as td
from torch.distributions import constraints

from pyro_kl import WeightedELBO
from pyro_kl.diagnostics import with_base_density


def vae_like():
    def model(x):
        loc = pyro.param("loc", torch.tensor([0.3, -0.2]))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(loc + z.unsqueeze(-1), 0.7).to_event(1), obs=x)

    def guide(x):
        a = pyro.param("a", torch.tensor(0.4))
        s = pyro.param("s", torch.tensor(0.8), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a * x.sum(-1), s))

    return model, guide, torch.randn(7, 2, generator=torch.Generator().manual_seed(0))


def loss_and_grads(model, guide, x, seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    loss = WeightedELBO(num_particles=3).differentiable_loss(model, guide, x)
    params = dict(pyro.get_param_store().named_parameters())
    names = sorted(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    return loss.detach(), dict(zip(names, grads))


@pytest.mark.parametrize("base", [td.Normal(0.0, 10.0), td.StudentT(3.0, 0.0, 2.0)])
def test_base_density_shifts_the_loss_and_leaves_path_gradients_unchanged(base):
    model, guide, x = vae_like()
    plain_loss, plain_grads = loss_and_grads(model, guide, x)
    loss, grads = loss_and_grads(with_base_density(model, {"x": base}), guide, x)
    assert torch.allclose(loss - plain_loss, base.log_prob(x).sum(), atol=1e-5)
    assert set(grads) == set(plain_grads)
    for name in grads:
        assert torch.allclose(grads[name], plain_grads[name], atol=1e-6), name


def test_at_the_truth_the_objective_is_minus_kl_of_nature_to_the_base():
    p, m = td.Normal(0.0, 1.0), td.Normal(1.0, 2.0)
    x = p.icdf(torch.linspace(1e-5, 1 - 1e-5, 200001))  # quantiles: a deterministic sample

    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)  # the dream world is nature

    loss = WeightedELBO().loss(with_base_density(model, {"x": m}), lambda x: None, x)
    per_datum = loss / x.shape[0]  # <log m/q>_p = -KL(P || M) at q = p
    assert per_datum == pytest.approx(-td.kl_divergence(p, m).item(), abs=2e-3)
    assert per_datum < 0


def test_base_density_names_a_missing_site_clearly():
    model, guide, x = vae_like()
    bad = with_base_density(model, {"y": td.Normal(0.0, 1.0)})
    with pytest.raises(ValueError, match=r"not observed sites"):
        WeightedELBO().loss(bad, guide, x)
    with pytest.raises(ValueError, match=r"torch.distributions.Distribution"):
        with_base_density(model, {"x": 1.0})
