import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.infer.autoguide import (
    AutoDiagonalNormal,
    AutoIAFNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from pyro.infer.autoguide.initialization import init_to_value
from pyro.ops.indexing import Vindex

from pyro_kl import (
    JOINT,
    RateDistortionELBO,
    TherMLELBO,
    WeightedELBO,
    assign_terms,
    derive_objective,
)
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


def test_joint_guide_entropy_is_reported_under_its_own_key_with_one_warning():
    model = regression_model
    guide = AutoMultivariateNormal(model)
    elbo = RateDistortionELBO(beta=0.5)  # rate and complexity share beta: nothing is lost
    with pytest.warns(UserWarning, match=r"'_AutoMultivariateNormal_latent' \(MultivariateNormal\) "
                                         r"does not factorise.*log guide\(w, z\).*'joint'.*"
                                         r"\(complexity, rate\).*weights=\{'joint': w\}"):
        elbo.loss_and_grads(model, guide, X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the next steps are quiet
        loss = elbo.loss_and_grads(model, guide, X)
    assert JOINT in elbo.last_terms
    assert elbo.last_weights[JOINT] == 0.5
    assert loss == pytest.approx(sum(elbo.last_weights[t] * v for t, v in elbo.last_terms.items()))
    # unit weights still give Pyro's loss for the same draw
    pyro.set_rng_seed(1)
    expected = Trace_ELBO().loss(model, guide, X)
    pyro.set_rng_seed(1)
    with pytest.warns(UserWarning, match="does not factorise"):
        assert WeightedELBO().loss(model, guide, X) == pytest.approx(expected, rel=1e-6)


def test_joint_guide_entropy_across_different_weights_names_the_terms():
    model, guide = regression_model, AutoMultivariateNormal(regression_model)
    with pytest.raises(ValueError, match=r"spans terms whose weights differ.*'complexity': 2\.0"):
        with pytest.warns(UserWarning, match="does not factorise"):
            TherMLELBO(sigma=2.0).loss(model, guide, X)
    # an explicit joint weight is used, with a warning naming the terms it spans
    elbo = TherMLELBO(sigma=2.0)
    elbo.weights = {**elbo.weights, JOINT: 1.5}
    with pytest.warns(UserWarning, match="does not factorise"), \
            pytest.warns(UserWarning, match=r"spans terms \['complexity', 'rate'\] of different"):
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


# ---- AutoDiagonalNormal: a joint density that factorises by site ---------------------


def bayes_model(x):
    theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
    noise = pyro.sample("noise", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(theta, noise))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


INIT_LOCS = {"theta": torch.tensor(0.3), "noise": torch.tensor(0.8),
             "z": torch.tensor([0.1, -0.4, 1.2])}


def same_draw(diag, normal, x):
    """The two guides at the same values: AutoDiagonalNormal's draw, and AutoNormal
    replayed on the same unconstrained values of each site."""
    aux = "_AutoDiagonalNormal_latent"
    latent = poutine.trace(diag).get_trace(x).nodes[aux]["value"].detach()
    normal(x)  # set up its parameters
    diag_trace, normal_trace = poutine.Trace(), poutine.Trace()
    diag_trace.add_node(aux, type="sample", value=latent, is_observed=False,
                        infer={"is_auxiliary": True})
    for site, value in diag._unpack_latent(latent):
        normal_trace.add_node(f"{site['name']}_unconstrained", type="sample", value=value,
                              is_observed=False, infer={"is_auxiliary": True})
    return poutine.replay(diag, trace=diag_trace), poutine.replay(normal, trace=normal_trace)


def guides(**options):
    init = init_to_value(values=INIT_LOCS)
    return (AutoDiagonalNormal(bayes_model, init_loc_fn=init, init_scale=0.3),
            AutoNormal(bayes_model, init_loc_fn=init, init_scale=0.3))


@pytest.mark.parametrize("make_elbo", [
    lambda: WeightedELBO(), lambda: TherMLELBO(sigma=2.0), lambda: RateDistortionELBO(beta=0.1),
], ids=["unit", "TherML-sigma=2", "beta=0.1"])
def test_diagonal_normal_terms_are_autonormals_at_the_same_locs_and_scales(make_elbo):
    diag, normal = guides()
    diag_at, normal_at = same_draw(diag, normal, X)
    elbo = make_elbo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it factorises: no warning about 'joint'
        terms = elbo.estimate_terms(bayes_model, diag_at, X)
    assert set(terms) == {"complexity", "rate", "distortion"}
    assert terms == pytest.approx(elbo.estimate_terms(bayes_model, normal_at, X), rel=1e-5)
    assert elbo.loss(bayes_model, diag_at, X) == pytest.approx(
        elbo.loss(bayes_model, normal_at, X), rel=1e-5)
    # and, at unit weights, the terms add up to Pyro's loss of the same draw
    assert sum(WeightedELBO().estimate_terms(bayes_model, diag_at, X).values()) == pytest.approx(
        Trace_ELBO().loss(bayes_model, diag_at, X), rel=1e-6)


def test_diagonal_normal_gradients_are_autonormals_at_the_same_values():
    diag, normal = guides()
    diag_at, normal_at = same_draw(diag, normal, X)  # fixed values: gradients via densities
    elbo = TherMLELBO(sigma=2.0)
    elbo.loss_and_grads(bayes_model, diag_at, X)
    elbo.loss_and_grads(bayes_model, normal_at, X)
    params = dict(pyro.get_param_store().named_parameters())
    for site, grad in diag._unpack_latent(params["AutoDiagonalNormal.loc"].grad):
        expected = params[f"AutoNormal.locs.{site['name']}"].grad
        torch.testing.assert_close(grad, expected.reshape(grad.shape), rtol=1e-4, atol=1e-6)


def test_diagonal_normal_pair_of_trace_pair_holds_the_whole_guide_density():
    """trace_pair splits the joint density as the ELBO does: the latents' shares
    sum to the auxiliary site's density, so the pair's terms add up to Pyro's
    loss of the same draw (the same seed)."""
    from pyro_kl.estimate import particle_terms

    diag, _ = guides()
    diag(X)  # set up its parameters
    pyro.set_rng_seed(3)
    pair = trace_pair(bayes_model, diag, (X,))
    pair.model_trace.compute_log_prob()
    pair.guide_trace.compute_score_parts()  # what importance_pair computes (kept where there)
    pyro.set_rng_seed(3)
    expected = Trace_ELBO().loss(bayes_model, diag, X)
    terms = particle_terms(pair).values
    assert set(terms) == {"complexity", "rate", "distortion"}
    assert float(sum(terms.values())) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("options", [{"num_particles": 3, "vectorize_particles": True},
                                     {"num_particles": 2}], ids=["vectorized", "sequential"])
def test_diagonal_normal_with_particles_gives_pyros_loss_and_no_joint(options):
    diag, _ = guides()
    pyro.set_rng_seed(2)
    expected = Trace_ELBO(**options).loss(bayes_model, diag, X)
    pyro.set_rng_seed(2)
    elbo = WeightedELBO(**options)
    loss = elbo.loss_and_grads(bayes_model, diag, X)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert set(elbo.last_terms) == {"complexity", "rate", "distortion"}


@pytest.mark.parametrize("options", [{}, {"num_particles": 2, "vectorize_particles": True}],
                         ids=["one", "vectorized"])
def test_diagonal_normal_beside_model_side_enumeration_gives_trace_enums_loss(options):
    @config_enumerate
    def mixture(x):
        locs = pyro.sample("locs", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(torch.tensor([0.4, 0.6])))
            pyro.sample("x", dist.Normal(Vindex(locs)[..., c], scale), obs=x)

    guide = AutoDiagonalNormal(poutine.block(mixture, expose=["locs", "scale"]))
    guide(X)  # its set-up draws from the random stream: do it before seeding
    pyro.set_rng_seed(5)
    expected = TraceEnum_ELBO(max_plate_nesting=1, **options).loss(mixture, guide, X)
    pyro.set_rng_seed(5)
    elbo = WeightedELBO(max_plate_nesting=1, **options)
    assert elbo.loss_and_grads(mixture, guide, X) == pytest.approx(expected, rel=1e-5)
    assert set(elbo.last_terms) == {"complexity", "distortion"}


@pytest.mark.parametrize("guide_class, density", [
    (AutoLowRankMultivariateNormal, "LowRankMultivariateNormal"),
    (AutoIAFNormal, "TransformedDistribution"),
])
def test_guides_that_do_not_factorise_warn_once_naming_the_joint_term(guide_class, density):
    guide = guide_class(bayes_model)
    elbo = RateDistortionELBO(beta=0.5)
    latent = f"_{guide_class.__name__}_latent"
    with pytest.warns(UserWarning, match=rf"'{latent}' \({density}\) does not factorise.*"
                                         r"log guide\(theta, noise, z\)"):
        elbo.loss_and_grads(bayes_model, guide, X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        elbo.loss_and_grads(bayes_model, guide, X)
    assert set(elbo.last_terms) == {"complexity", "rate", "distortion", JOINT}


def test_derived_objective_splits_diagonal_normal_as_the_elbo_does():
    diag, _ = guides()
    elbo = RateDistortionELBO(beta=0.5)
    objective = derive_objective(bayes_model, diag, (X,), elbo=elbo)
    assert JOINT not in objective.sites_by_term
    assert objective.sites_by_term["rate"] == ("z",)
    elbo.loss_and_grads(bayes_model, diag, X)
    assert set(elbo.last_terms) == set(objective.sites_by_term)
