import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

from pyro_kl import JOINT, RateDistortionELBO, TherMLELBO, WeightedELBO, assign_terms
from pyro_kl.objective import trace_pair

from .model_zoo import MODELS

X = torch.tensor([0.5, -1.0, 2.0])


def regression_model(x):
    """Global weights in a feature plate are complexity, not rate."""
    with pyro.plate("features", 2):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(w[0] * x + w[1] + z, 1.0), obs=x)


def traces(model, guide, *args):
    """The model trace (with its own kl_term tags) and the guide trace it replayed."""
    pair = trace_pair(model, guide, args)
    return pair.model_trace, pair.guide_trace


def test_default_rule_uses_plates_that_hold_data():
    guide = AutoNormal(regression_model)
    assignment = assign_terms(*traces(regression_model, guide, X))
    assert assignment.model == {"w": "complexity", "z": "rate", "y": "distortion"}
    # an autoguide's auxiliary sites feed the term of the site they stand for
    assert assignment.guide == {
        "w_unconstrained": "complexity", "w": "complexity",
        "z_unconstrained": "rate", "z": "rate",
    }
    assert assignment.joint == {}
    assert assignment.sites_by_term() == {
        "complexity": ("w", "w_unconstrained"), "rate": ("z", "z_unconstrained"),
        "distortion": ("y",),
    }


def test_particle_plate_is_not_a_data_plate():
    model, guide, args = MODELS["global_local"]()
    elbo = WeightedELBO(num_particles=4, vectorize_particles=True)
    elbo.loss_and_grads(model, guide, *args)
    assert set(elbo.last_terms) == {"complexity", "rate", "distortion"}


def test_factor_and_deterministic_sites():
    model, guide, args = MODELS["factor"]()
    assignment = assign_terms(*traces(model, guide, *args))
    assert assignment.model == {"mu": "complexity", "penalty": "factor", "x": "distortion"}


def test_explicit_choices_win_model_tag_on_a_latent_survives_replay():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0), infer={"kl_term": "nuisance"})
            pyro.sample("y", dist.Normal(z, 1.0), obs=x, infer={"kl_term": "classification"})

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.0, 2.0))

    assignment = assign_terms(*traces(model, guide, X))
    assert assignment.model == {"z": "nuisance", "y": "classification"}
    assert assignment.guide == {"z": "nuisance"}
    assignment = assign_terms(*traces(model, guide, X), site_terms={"z": "rate", "y": "distortion"})
    assert assignment.model == {"z": "rate", "y": "distortion"}
    elbo = WeightedELBO(weights={"nuisance": 0.0})
    elbo.loss_and_grads(model, guide, X)
    assert set(elbo.last_terms) == {"nuisance", "classification"}
    assert elbo.last_weights["nuisance"] == 0.0


def test_joint_guide_entropy_is_reported_under_its_own_key_quietly_at_equal_weights():
    model = regression_model
    guide = AutoMultivariateNormal(model)
    elbo = RateDistortionELBO(beta=0.5)  # rate and complexity share beta: nothing is lost
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = elbo.loss_and_grads(model, guide, X)
    assert JOINT in elbo.last_terms
    assert elbo.last_weights[JOINT] == 0.5
    assert loss == pytest.approx(sum(elbo.last_weights[t] * v for t, v in elbo.last_terms.items()))
    # unit weights still give Pyro's loss for the same draw
    pyro.set_rng_seed(1)
    expected = Trace_ELBO().loss(model, guide, X)
    pyro.set_rng_seed(1)
    assert WeightedELBO().loss(model, guide, X) == pytest.approx(expected, rel=1e-6)


def test_joint_guide_entropy_across_different_weights_names_the_terms():
    model, guide = regression_model, AutoMultivariateNormal(regression_model)
    with pytest.raises(ValueError, match=r"spans terms whose weights differ.*'complexity': 2\.0"):
        TherMLELBO(sigma=2.0).loss(model, guide, X)
    # an explicit joint weight is used, with a warning naming the terms it spans
    elbo = TherMLELBO(sigma=2.0)
    elbo.weights = {**elbo.weights, JOINT: 1.5}
    with pytest.warns(UserWarning, match=r"spans terms \['complexity', 'rate'\] of different"):
        elbo.loss_and_grads(model, guide, X)
    assert elbo.last_weights[JOINT] == 1.5


def test_unmatched_guide_site_warning_says_what_happened():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        pyro.sample("extra", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    pyro.enable_validation(False)  # Pyro's own check is off; ours still speaks
    match = r"\['extra'\] are not in the model.*still enters the loss"
    with pytest.warns(UserWarning, match=match):
        WeightedELBO().loss(model, guide, X)


def test_elbo_module_trains_with_a_torch_optimizer_and_matches_trace_elbo():
    model, guide, args = MODELS["global_local"]()
    guide(*args)  # create the parameters
    params = [p for _, p in pyro.get_param_store().named_parameters()]
    losses = {}
    for name, elbo in [("pyro", Trace_ELBO()), ("ours", RateDistortionELBO())]:
        module = elbo(model, guide)
        pyro.set_rng_seed(7)
        loss = module(*args)
        grads = torch.autograd.grad(loss, params)
        losses[name] = loss.item(), grads
    assert losses["ours"][0] == pytest.approx(losses["pyro"][0], rel=1e-6)
    for ours, pyros in zip(losses["ours"][1], losses["pyro"][1]):
        torch.testing.assert_close(ours, pyros)

    elbo = RateDistortionELBO(analytic_kl=True, num_particles=8, vectorize_particles=True)
    module = elbo(model, guide)
    optimizer = torch.optim.Adam(params, lr=0.05)
    first = None
    for _ in range(150):
        optimizer.zero_grad()
        loss = module(*args)
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    assert elbo.step == 150
    assert loss.item() < first - 1.0
