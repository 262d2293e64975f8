"""No silent misuse: every case gets a clear error that names the fix (or a
warning where nothing is lost), with Pyro's validation switched off too."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_kl import BetaGammaELBO, RateDistortionELBO, WeightedELBO

from .model_zoo import MODELS


@pytest.fixture(params=[True, False], ids=["validation", "no_validation"])
def validation(request):
    pyro.enable_validation(request.param)
    return request.param


def global_local():
    return MODELS["global_local"]()


def test_weights_are_read_only_and_reassignment_is_validated_and_effective(validation):
    model, guide, args = global_local()
    elbo = WeightedELBO(weights={"rate": 0.5})
    with pytest.raises(TypeError, match=r"read-only.*elbo.weights = \{\*\*elbo.weights"):
        elbo.weights["rate"] = -1.0
    with pytest.raises(ValueError, match="finite and >= 0"):
        elbo.weights = {"rate": -1.0}
    elbo.weights = {**elbo.weights, "rate": 0.25}
    elbo.loss_and_grads(model, guide, *args)
    assert elbo.last_weights["rate"] == 0.25


def test_preset_knobs_are_validated_and_effective(validation):
    model, guide, args = global_local()
    elbo = RateDistortionELBO(beta=1.0)
    elbo.beta = 3.0
    loss = elbo.loss_and_grads(model, guide, *args)
    assert elbo.last_weights == {"distortion": 1.0, "rate": 3.0, "complexity": 3.0}
    assert loss == pytest.approx(sum(elbo.last_weights[t] * v for t, v in elbo.last_terms.items()))
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        elbo.beta = -1.0
    assert elbo.beta == 3.0


def test_a_weight_on_a_term_no_site_feeds_warns_once_naming_it(validation):
    model, guide, args = global_local()
    elbo = BetaGammaELBO(gamma=10.0)
    with pytest.warns(UserWarning, match=r"weight 10.0 on term 'classification' has no effect"):
        elbo.loss(model, guide, *args)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        elbo.loss(model, guide, *args)  # once per model structure
        BetaGammaELBO(gamma=1.0).loss(model, guide, *args)  # a unit weight changes nothing


def test_an_unknown_term_name_is_an_error_without_validation(validation):
    model, guide, args = global_local()
    with pytest.raises(ValueError, match=r"\['ratee'\] that no site feeds"):
        WeightedELBO(weights={"ratee": 0.5}).loss(model, guide, *args)


def test_weights_of_the_wrong_type():
    with pytest.raises(TypeError, match=r"weights must be a dict.*weights=\{'rate': 0.5\}"):
        WeightedELBO(weights=[("rate", 0.5)])
    with pytest.raises(TypeError, match="requires grad; weights are constants"):
        WeightedELBO(weights={"rate": torch.tensor(0.5, requires_grad=True)})
    assert WeightedELBO(weights={"rate": torch.tensor(0.5)}).weights["rate"] == 0.5
    with pytest.raises(TypeError, match="site_terms must be a dict"):
        WeightedELBO(site_terms=["y"])


@pytest.mark.parametrize("state", [{"step": -1}, {"step": 2.5}, {}, {"step": "3"}, None])
def test_load_state_dict_refuses_a_bad_step(state):
    elbo = WeightedELBO()
    with pytest.raises(ValueError, match="step"):
        elbo.load_state_dict(state)
    elbo.load_state_dict({"step": 7.0})
    assert elbo.step == 7 and isinstance(elbo.step, int)


def test_a_non_finite_later_particle_leaves_no_gradients(validation):
    calls = []

    def model():
        calls.append(None)
        z = pyro.sample("z", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))
        bad = len(calls) % 2 == 0  # the second particle of each call
        pyro.sample("y", dist.Normal(z, 1.0), obs=torch.tensor(math.inf if bad else 0.5))

    def guide():
        pyro.sample("z", dist.Normal(pyro.param("q", torch.tensor(0.3)), 1.0))

    with pytest.raises(ValueError, match=r"'y' \(term 'distortion'"):
        WeightedELBO(num_particles=2).loss_and_grads(model, guide)
    for name, param in pyro.get_param_store().named_parameters():
        assert param.grad is None, name


def test_changing_site_terms_after_a_step_takes_effect(validation):
    model, guide, args = global_local()
    elbo = WeightedELBO()
    elbo.loss_and_grads(model, guide, *args)
    assert "classification" not in elbo.last_terms
    with pytest.raises(TypeError, match="site_terms is read-only"):
        elbo.site_terms["x"] = "classification"
    elbo.site_terms = {"x": "classification"}
    elbo.loss_and_grads(model, guide, *args)
    assert "classification" in elbo.last_terms and "distortion" not in elbo.last_terms


def test_a_tag_that_changes_between_calls_is_not_served_from_the_cache():
    def model(x, tag):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0), infer={"kl_term": tag})
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x, tag):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.0, 2.0))

    elbo, x = WeightedELBO(), torch.zeros(3)
    assert set(elbo.estimate_terms(model, guide, x, "rate")) == {"rate", "distortion"}
    assert set(elbo.estimate_terms(model, guide, x, "bits")) == {"bits", "distortion"}


def test_estimate_terms_leaves_the_last_call_and_the_step_alone():
    model, guide, args = global_local()
    elbo = RateDistortionELBO(beta=0.5)
    elbo.loss_and_grads(model, guide, *args)
    last = dict(elbo.last_terms), dict(elbo.last_weights), elbo.step
    other = elbo.estimate_terms(model, guide, args[0] + 10.0)
    assert other != last[0]
    assert (elbo.last_terms, elbo.last_weights, elbo.step) == last


def test_pyro_positional_options_are_accepted_in_pyros_order():
    elbo = WeightedELBO(4, 2)
    assert (elbo.num_particles, elbo.max_plate_nesting) == (4, 2)
    assert RateDistortionELBO(0.5, num_particles=3).num_particles == 3


def test_an_elbo_module_counts_steps_where_gradients_are_taken():
    model, guide, args = global_local()
    elbo = RateDistortionELBO(beta=lambda step: 1.0 / (1 + step))
    module = elbo(model, guide)
    module(*args)  # initialising forward pass: not a training step
    assert elbo.step == 0
    params = [p for _, p in pyro.get_param_store().named_parameters()]
    optimizer = torch.optim.SGD(params, lr=1e-3)
    for expected_step in range(3):
        optimizer.zero_grad()
        loss = module(*args)
        assert elbo.last_weights["rate"] == pytest.approx(1.0 / (1 + expected_step))
        loss.backward()
        optimizer.step()
    assert elbo.step == 3


# ---- a controller belongs to one ELBO ------------------------------------------------


def test_a_stateful_controller_is_refused_to_a_second_elbo(validation):
    import copy
    import gc
    import pickle

    from pyro_kl import GECO, PIControl

    model, guide, args = global_local()
    for controller in (GECO(1.0, step_size=0.5, smoothing=0.0), PIControl(1.0, kp=0.1, ki=0.1)):
        first = WeightedELBO(weights={"distortion": controller})
        first.weights = {**first.weights, "rate": 0.5}  # the same ELBO may rebuild its weights
        with pytest.raises(ValueError, match=r"already weighs the terms of another ELBO.*"
                                             r"copy.deepcopy\(controller\)"):
            WeightedELBO(weights={"distortion": controller})
        with pytest.raises(ValueError, match="already weighs"):
            RateDistortionELBO(beta=controller)
        with pytest.raises(ValueError, match="already weighs"):
            WeightedELBO(weighting=first.weighting)
        # a copy of the ELBO owns copies of its controllers, which continue from its state
        first.loss_and_grads(model, guide, *args)
        first.step  # noqa: B018  (no parameters moved: the step is still open)
        for twin in (copy.deepcopy(first), pickle.loads(pickle.dumps(first))):
            own = twin.weights["distortion"]
            assert own is not controller and own.state_dict() == controller.state_dict()
            twin.weights = {**twin.weights}  # owned by the copy, not by first
        # a copy of the controller may go to a new ELBO; once the first ELBO is gone, so may it
        WeightedELBO(weights={"distortion": copy.deepcopy(controller)})
        del first
        gc.collect()
        WeightedELBO(weights={"distortion": controller})


def test_a_stateless_target_may_weigh_several_elbos(validation):
    from pyro_kl import Target

    model, guide, args = global_local()
    target = Target(1.0)
    losses = [WeightedELBO(weights={"rate": target}).loss(model, guide, *args) for _ in range(2)]
    assert all(math.isfinite(loss) for loss in losses)


def test_geco_state_without_its_average_is_refused():
    from pyro_kl import GECO

    geco = GECO(1.0)
    with pytest.raises(ValueError, match=r"needs the key 'average'.*GECO.state_dict\(\)"):
        geco.load_state_dict({"multiplier": 2.0})
    assert geco.multiplier == 1.0  # nothing half-loaded
    geco.load_state_dict({"multiplier": 2.0, "average": None})  # before the first step
    assert (geco.multiplier, geco.average) == (2.0, None)


# ---- enumeration and data edges, said where the inputs are first seen -------------------


def _normal_model(x, mark=None):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0), infer=mark or {})
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


@pytest.mark.parametrize("strategy", ["parallel", "sequential"])
@pytest.mark.parametrize("side", ["model", "guide"])
def test_enumerating_a_site_without_finite_support_names_the_site(validation, side, strategy):
    mark = {"enumerate": strategy}

    def model(x):
        _normal_model(x, mark if side == "model" else None)

    def guide(x):
        if side == "guide":
            with pyro.plate("data", len(x)):
                pyro.sample("z", dist.Normal(0.0, 1.0), infer=mark)

    for elbo in (WeightedELBO(), WeightedELBO(max_plate_nesting=1)):
        with pytest.raises(ValueError, match=r"Site 'z' is marked .*Normal has no finite support"):
            elbo.loss(model, guide, torch.randn(3))


@pytest.mark.parametrize("vectorize", [True, False])
def test_an_empty_batch_is_said_to_be_empty(validation, vectorize):
    from pyro_kl.diagnostics import iwae_bound

    elbo = WeightedELBO(num_particles=3, vectorize_particles=vectorize)
    with pytest.raises(ValueError, match=r"plate got size 0: the batch is empty.*drop_last"):
        elbo.loss(_normal_model, lambda x: None, torch.randn(0))
    with pytest.raises(ValueError, match="the batch is empty"):
        iwae_bound(_normal_model, lambda x: None, torch.randn(0), num_samples=2)


def test_bool_data_under_a_bernoulli_is_told_to_be_float(validation):
    def model(x):
        p = pyro.param("p", torch.tensor(0.3))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Bernoulli(p), obs=x)

    x = torch.tensor([True, False, True, True])
    with pytest.raises(TypeError, match=r"Site 'x' observes a bool tensor.*obs=x.float\(\)"):
        WeightedELBO().loss(model, lambda x: None, x)
    pyro.clear_param_store()
    loss = WeightedELBO().loss(model, lambda x: None, x.float())  # the fix gives the right value
    assert loss == pytest.approx(-(3 * math.log(0.3) + math.log(0.7)), rel=1e-6)
