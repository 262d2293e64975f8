"""The linear-Gaussian model, where rate, distortion and the beta-VAE optimum are exact.

Dream world (model): z ~ N(0, 1), x | z ~ N(z, sx^2). Real world: data x and the
encoder z | x ~ N(a x, s^2). Per data point

    R(x) = 1/2 (s^2 + a^2 x^2 - 1 - ln s^2)
    D(x) = 1/2 ln(2 pi sx^2) + ((1 - a)^2 x^2 + s^2) / (2 sx^2)

and the minimiser of D + beta R is a* = 1 / (1 + beta sx^2), s*^2 = beta sx^2 / (1 + beta sx^2).
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_kl import RateDistortionELBO

SX = 0.7
X = torch.randn(200, generator=torch.Generator().manual_seed(2024)) * math.sqrt(1 + SX**2)


def model(x, **encoder):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, SX), obs=x)


def guide(x, a=None, s=None):
    a = pyro.param("a", torch.tensor(0.1)) if a is None else a
    s = pyro.param("s", torch.tensor(1.5), constraint=dist.constraints.positive) if s is None else s
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(a * x, s))


def exact_rate(a, s, x=X):
    return (0.5 * (s**2 + a**2 * x**2 - 1 - math.log(s**2))).sum().item()


def exact_distortion(a, s, x=X):
    per_point = 0.5 * math.log(2 * math.pi * SX**2) + ((1 - a) ** 2 * x**2 + s**2) / (2 * SX**2)
    return per_point.sum().item()


@pytest.mark.parametrize("a, s", [(0.3, 0.5), (0.9, 1.2), (-0.4, 0.2)])
def test_analytic_rate_is_exact_and_monte_carlo_agrees(a, s):
    analytic = RateDistortionELBO(analytic_kl=True).estimate_terms(model, guide, X, a=a, s=s)
    assert analytic["rate"] == pytest.approx(exact_rate(a, s), rel=1e-5)

    elbo = RateDistortionELBO(num_particles=4000, vectorize_particles=True)
    monte_carlo = elbo.estimate_terms(model, guide, X, a=a, s=s)
    # standard errors of the sums over 200 points averaged over 4000 draws are < 0.5 nats
    assert monte_carlo["rate"] == pytest.approx(exact_rate(a, s), abs=0.5)
    assert monte_carlo["distortion"] == pytest.approx(exact_distortion(a, s), abs=0.5)
    assert analytic["distortion"] == pytest.approx(exact_distortion(a, s), rel=0.1)


@pytest.mark.parametrize("beta", [0.5, 3.0])
def test_svi_reaches_the_beta_vae_optimum(beta):
    elbo = RateDistortionELBO(beta=beta, analytic_kl=True, num_particles=16,
                              vectorize_particles=True)
    svi = SVI(model, guide, Adam({"lr": 0.02}), loss=elbo)
    for _ in range(1500):
        svi.step(X)
    a, s = pyro.param("a").item(), pyro.param("s").item()
    a_star = 1 / (1 + beta * SX**2)
    s2_star = beta * SX**2 / (1 + beta * SX**2)
    assert a == pytest.approx(a_star, abs=0.02)
    assert s**2 == pytest.approx(s2_star, abs=0.02)


def test_rate_plus_distortion_is_minus_log_evidence_at_the_optimum():
    """At beta = 1 the optimal encoder is the true posterior, so D + R = -ln p(x)."""
    a_star = 1 / (1 + SX**2)
    s_star = math.sqrt(SX**2 / (1 + SX**2))
    minus_log_evidence = -dist.Normal(0.0, math.sqrt(1 + SX**2)).log_prob(X).sum().item()
    exact = exact_rate(a_star, s_star) + exact_distortion(a_star, s_star)
    assert exact == pytest.approx(minus_log_evidence, rel=1e-5)

    elbo = RateDistortionELBO(analytic_kl=True, num_particles=4000, vectorize_particles=True)
    terms = elbo.estimate_terms(model, guide, X, a=a_star, s=s_star)
    assert terms["rate"] + terms["distortion"] == pytest.approx(minus_log_evidence, abs=0.5)
    # and away from the optimum the bound is strict
    loose = exact_rate(0.2, 1.0) + exact_distortion(0.2, 1.0)
    assert loose > minus_log_evidence + 1.0
