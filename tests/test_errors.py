"""Bad input gets a ValueError that names the fix."""

import math

import pyro
import pyro.distributions as dist
import pytest
from pyro.infer import SVI
from pyro.optim import Adam
import torch

from pyro_kl import BetaGammaELBO, RateDistortionELBO, WeightedELBO

from .model_zoo import MODELS


@pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf, "big", None])
@pytest.mark.parametrize(
    "make", [
        lambda w: WeightedELBO(weights={"rate": w}),
        lambda w: RateDistortionELBO(beta=w),
        lambda w: BetaGammaELBO(gamma=w),
    ]
)
def test_bad_weight_fails_at_construction(make, bad):
    with pytest.raises(ValueError, match="weight"):
        make(bad)


def test_schedule_returning_a_negative_weight_names_the_step():
    elbo = RateDistortionELBO(beta=lambda step: 0.5 - step)
    model, guide, args = MODELS["global_local"]()
    svi = SVI(model, guide, Adam({"lr": 0.01}), elbo)
    svi.step(*args)  # step 0: weight 0.5
    with pytest.raises(ValueError, match=r"at step 1 .*>= 0"):
        svi.step(*args)


def test_terms_map_naming_a_missing_site_lists_the_sites():
    model, guide, args = MODELS["global_local"]()
    elbo = WeightedELBO(site_terms={"y": "classification"})
    with pytest.raises(ValueError, match=r"\['y'\].*Model sites: \['mu', 'x', 'z'\]"):
        elbo.loss(model, guide, *args)


def test_weights_naming_a_term_no_site_feeds():
    model, guide, args = MODELS["global_local"]()
    with pytest.raises(ValueError, match=r"\['ratee'\].*terms are \['complexity', 'distortion'"):
        WeightedELBO(weights={"ratee": 0.5}).loss(model, guide, *args)


def test_model_and_guide_disagreeing_on_a_term():
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0), infer={"kl_term": "rate"})

    def guide():
        pyro.sample("z", dist.Normal(0.0, 2.0), infer={"kl_term": "complexity"})

    with pytest.raises(ValueError, match="disagree on the term of site 'z'.*site_terms="):
        WeightedELBO().loss(model, guide)
    # the ELBO's map settles it
    assert WeightedELBO(site_terms={"z": "rate"}).estimate_terms(model, guide).keys() == {"rate"}


def test_latent_site_missing_from_the_guide():
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("w", dist.Normal(0.0, 1.0))

    def guide():
        pyro.sample("z", dist.Normal(0.0, 2.0))

    with pytest.warns(UserWarning, match="Found vars in model but not guide"):
        with pytest.raises(ValueError, match="'w' is missing from the guide"):
            WeightedELBO().loss(model, guide)


def test_non_finite_loss_names_its_term_and_site():
    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Uniform(z, z + 1.0, validate_args=False), obs=torch.tensor(5.0))

    def guide():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"site\(s\) 'y' \(term 'distortion': inf\)"):
        WeightedELBO().loss_and_grads(model, guide)


def test_zero_weight_masks_an_infinite_term_without_nan():
    def model():
        z = pyro.sample("z", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))
        pyro.sample("y", dist.Uniform(z, z + 1.0, validate_args=False), obs=torch.tensor(5.0))

    def guide():
        pyro.sample("z", dist.Normal(pyro.param("q", torch.tensor(0.5)), 1.0))

    elbo = BetaGammaELBO(gamma=0.0, site_terms={"y": "classification"})
    loss = elbo.loss_and_grads(model, guide)
    assert math.isfinite(loss)
    assert elbo.last_terms["classification"] == math.inf
    for name in ("m", "q"):
        assert torch.isfinite(pyro.param(name).unconstrained().grad).all()
    # the loss is the complexity alone: log guide(z) - log model(z) at one draw
    assert loss == pytest.approx(elbo.last_terms["complexity"])


@pytest.mark.parametrize("schedule", [lambda: 0.5, lambda step, other: 0.5, lambda *, step: 0.5])
@pytest.mark.parametrize(
    "make", [
        lambda f: WeightedELBO(weights={"rate": f}),
        lambda f: RateDistortionELBO(beta=f),
        lambda f: __import__("pyro_kl").GECO(f),
        lambda f: __import__("pyro_kl").Target(f),
    ], ids=["weights", "preset", "geco", "target"],
)
def test_a_schedule_of_the_wrong_arity_fails_at_construction_naming_f_step(make, schedule):
    with pytest.raises(TypeError, match=r"called as f\(step\).*lambda step: \.\.\."):
        make(schedule)


def test_schedules_that_take_one_step_are_accepted_and_used():
    model, guide, args = MODELS["global_local"]()
    elbo = WeightedELBO(weights={"rate": lambda step, scale=2.0: scale * (step + 1)})
    elbo.loss_and_grads(model, guide, *args)
    assert elbo.last_weights["rate"] == 2.0
