"""The pure core's contract: what is recorded when, how steps are counted, the
weighting value, the tracer's cache, and the random stream with enumeration."""

import gc
import pickle
import threading

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.optim import Adam

from pyro_kl import GECO, LinearWarmup, RateDistortionELBO, TherMLELBO, WeightedELBO
from pyro_kl.estimate import estimate
from pyro_kl.recipes import VAE
from pyro_kl.terms import assign_terms
from pyro_kl.tracing import PairTracer, TracedPair, trace_once
from pyro_kl.weighting import Weighting

from .model_zoo import DATA, MODELS
from .test_enumeration import mixture


def test_evaluate_loss_leaves_the_training_terms_alone():
    model, guide, args = MODELS["global_local"]()
    elbo = RateDistortionELBO(beta=0.5)
    svi = SVI(model, guide, Adam({"lr": 0.01}), elbo)
    svi.step(*args)
    trained, weights, step = elbo.last_terms, elbo.last_weights, elbo.step
    test_x = DATA[:3] * 10.0
    pyro.set_rng_seed(4)
    held_out = svi.evaluate_loss(test_x)
    assert elbo.last_terms == trained and elbo.last_weights == weights and elbo.step == step
    pyro.set_rng_seed(4)
    terms = elbo.estimate_terms(model, guide, test_x)
    expected = terms["distortion"] + 0.5 * (terms["rate"] + terms["complexity"])
    assert held_out == pytest.approx(expected)
    assert terms != trained


def test_a_preset_knob_reads_back_what_it_set_or_says_why_not():
    elbo = RateDistortionELBO(beta=0.25)
    assert elbo.beta == 0.25
    elbo.beta = 2
    assert elbo.beta == 2.0 and dict(elbo.weights) == {"rate": 2.0, "complexity": 2.0}
    elbo.weights = {"rate": 0.1, "complexity": 3}
    with pytest.raises(AttributeError, match=r"'beta' weighs rate and complexity.*rate=0.1"):
        elbo.beta
    elbo.beta = 1.5  # setting it gives both terms one value again
    assert elbo.beta == 1.5
    schedule = LinearWarmup(1.0, steps=10)
    assert RateDistortionELBO(beta=schedule).beta is schedule
    therml = TherMLELBO(gamma=3.0, delta=0.5)
    assert (therml.gamma, therml.delta, therml.sigma) == (3.0, 0.5, 1.0)


def test_presets_take_pyros_options_positionally_after_their_knobs():
    elbo = RateDistortionELBO(0.5, 4)
    assert elbo.beta == 0.5 and elbo.num_particles == 4
    elbo = TherMLELBO(1.0, 2.0, 3.0, 5, 2)
    assert elbo.sigma == 3.0 and (elbo.num_particles, elbo.max_plate_nesting) == (5, 2)
    with pytest.raises(TypeError, match="sets its weights from its knobs"):
        RateDistortionELBO(weights={"rate": 2.0})


def _params():
    return [p.unconstrained() for p in pyro.get_param_store().values()]


def _step_counts(accumulate: int, num_steps: int = 3):
    """An ELBOModule trained with a torch optimizer, ``accumulate`` backward passes
    per optimizer step; returns the ELBO's step count and the schedule's arguments."""
    pyro.clear_param_store()
    model, guide, args = MODELS["global_local"]()
    seen = []

    def schedule(step):
        seen.append(step)
        return 1.0

    elbo = WeightedELBO(weights={"rate": schedule})
    module = elbo(model, guide)
    module(*args)  # the parameters come to life
    optimizer = torch.optim.SGD(_params(), lr=0.01)
    seen.clear()
    for _ in range(num_steps):
        optimizer.zero_grad()
        for _ in range(accumulate):
            (module(*args) / accumulate).backward()
        optimizer.step()
    return elbo.step, seen


@pytest.mark.parametrize("accumulate", [1, 2, 3])
def test_gradient_accumulation_counts_one_step_per_optimizer_update(accumulate):
    step, seen = _step_counts(accumulate)
    assert step == 3
    assert seen == [s for s in range(3) for _ in range(accumulate)]


def test_svi_counts_steps_and_loss_does_not():
    model, guide, args = MODELS["global_local"]()
    elbo = WeightedELBO()
    svi = SVI(model, guide, Adam({"lr": 0.01}), elbo)
    for expected in range(1, 4):
        svi.step(*args)
        assert elbo.step == expected
    elbo.loss(model, guide, *args)
    elbo.loss_and_grads(model, guide, *args)  # no optimizer update after it
    elbo.loss_and_grads(model, guide, *args)
    assert elbo.step == 3
    with torch.no_grad():
        pyro.param("m").unconstrained().add_(0.1)
    assert elbo.step == 4


def test_controller_updates_once_per_step_with_the_mean_of_accumulated_calls():
    model, guide, args = MODELS["global_local"]()
    geco = GECO(target=1.0, init=1.0, step_size=0.5, smoothing=0.0)
    elbo = WeightedELBO(weights={"distortion": geco})
    module = elbo(model, guide)
    elbo.estimate_terms(model, guide, *args)  # the parameters come to life
    optimizer = torch.optim.SGD(_params(), lr=0.0)
    optimizer.zero_grad()
    module(*args).backward()
    first = elbo.last_terms["distortion"]
    module(*args).backward()
    second = elbo.last_terms["distortion"]
    lambda_before = geco.state_dict()["multiplier"]
    optimizer.step()
    assert elbo.step == 1
    reference = GECO(target=1.0, init=1.0, step_size=0.5, smoothing=0.0)
    mean = (first + second) / 2 / len(DATA)
    reference.update(0, mean)
    assert geco.state_dict()["multiplier"] == pytest.approx(reference.state_dict()["multiplier"])
    assert geco.state_dict()["multiplier"] != lambda_before


def test_the_elbo_pickles_after_a_recipe_fit():
    pyro.clear_param_store()
    recipe = VAE(dim=4, latent_dim=2, hidden_dim=8)
    (x,) = recipe.make_data(16)
    elbo = recipe.make_elbo(beta=0.5)
    svi = SVI(recipe.model, recipe.guide, Adam({"lr": 0.01}), elbo)
    for _ in range(2):
        svi.step(x)
    copy = pickle.loads(pickle.dumps(elbo))
    assert copy.step == elbo.step == 2 and copy.beta == 0.5
    pyro.set_rng_seed(0)
    expected = elbo.loss(recipe.model, recipe.guide, x)
    pyro.set_rng_seed(0)
    assert copy.loss(recipe.model, recipe.guide, x) == expected


def _guide(x):
    scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
    pyro.sample("noise", dist.Normal(0.0, scale))


def _noisy_mixture(x):
    pyro.sample("noise", dist.Normal(0.0, 1.0))
    mixture(x)


@pytest.mark.parametrize("vectorize", [False, True])
def test_guessed_plate_nesting_gives_trace_enum_elbos_random_stream(vectorize):
    kwargs = dict(num_particles=3, vectorize_particles=vectorize)
    results = []
    for make in (TraceEnum_ELBO, WeightedELBO):
        pyro.clear_param_store()
        pyro.set_rng_seed(11)
        elbo = make(**kwargs)
        losses = [elbo.loss_and_grads(_noisy_mixture, _guide, DATA) for _ in range(2)]
        results.append((losses, elbo.max_plate_nesting, torch.rand(())))
    (expected, nesting, after), (losses, our_nesting, our_after) = results
    assert our_nesting == nesting
    assert losses == pytest.approx(expected, rel=1e-6)
    assert torch.equal(our_after, after)  # the same draws were taken


def test_plain_pairs_keep_trace_elbos_random_stream_with_a_guessed_nesting():
    model, guide, args = MODELS["vae"]()
    draws = []
    for make in (lambda: Trace_ELBO(num_particles=2, vectorize_particles=True),
                 lambda: WeightedELBO(num_particles=2, vectorize_particles=True)):
        pyro.clear_param_store()
        pyro.set_rng_seed(2)
        elbo = make()
        loss = elbo.loss_and_grads(model, guide, *args)
        draws.append((loss, elbo.max_plate_nesting, torch.rand(())))
    assert draws[0][0] == pytest.approx(draws[1][0], rel=1e-6)
    assert draws[0][1:2] == draws[1][1:2] and torch.equal(draws[0][2], draws[1][2])


def test_the_tracer_forgets_pairs_it_no_longer_sees():
    tracer = PairTracer()
    elbo = WeightedELBO(max_plate_nesting=1)
    plain = Trace_ELBO(max_plate_nesting=1)._get_traces

    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    def guide(x):
        pass

    list(tracer.pairs(elbo, plain, model, guide, (DATA,), {}))
    assert len(tracer._cache._known) == 1
    del model
    gc.collect()
    assert all(model_ref() is None for model_ref, _ in tracer._cache._known)  # not kept alive
    for _ in range(70):
        def fresh(x):
            with pyro.plate("data", len(x)):
                pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)
        list(tracer.pairs(elbo, plain, fresh, guide, (DATA,), {}))
    assert len(tracer._cache._known) <= 64


def test_estimate_is_a_pure_function_of_pairs():
    model, guide, args = MODELS["global_local"]()
    pyro.set_rng_seed(0)
    model_trace, guide_trace = trace_once(model, guide, args)
    model_trace.compute_log_prob()
    guide_trace.compute_score_parts()
    pair = TracedPair(model_trace, guide_trace, assign_terms(model_trace, guide_trace))
    weighting = Weighting({"rate": 0.5, "complexity": 0.0})
    result = estimate([pair], weighting, step=0, num_particles=1)
    terms = {t: float(v) for t, v in result.terms.items()}
    assert float(result.loss) == pytest.approx(terms["distortion"] + 0.5 * terms["rate"])
    assert all(torch.is_tensor(v) and not v.requires_grad for v in result.terms.values())
    assert result.weights == {"distortion": 1.0, "rate": 0.5, "complexity": 0.0}
    again = estimate([pair], weighting, step=0, num_particles=1)
    assert torch.equal(again.loss, result.loss)


@pytest.mark.parametrize("num_particles", [0, -1, 2.5, "3", True])
def test_num_particles_must_be_a_whole_number(num_particles):
    with pytest.raises(ValueError, match="num_particles=.*whole number >= 1"):
        WeightedELBO(num_particles=num_particles)


def test_max_plate_nesting_must_be_a_whole_number():
    with pytest.raises(ValueError, match=r"max_plate_nesting=-1.*whole number >= 0"):
        WeightedELBO(max_plate_nesting=-1)


def test_a_term_name_may_not_hold_the_marginal_join():
    with pytest.raises(ValueError, match=r"'\+' is reserved.*'x_y'"):
        WeightedELBO(weights={"x+y": 2.0})
    with pytest.raises(ValueError, match=r"'\+' is reserved"):
        WeightedELBO(site_terms={"z": "x+y"})


@pytest.mark.parametrize("term", ["factor", "joint"])
def test_a_weight_on_a_registry_term_no_site_feeds_warns(term):
    model, guide, args = MODELS["global_local"]()
    with pytest.warns(UserWarning, match=f"weight 5.0 on term '{term}' has no effect"):
        WeightedELBO(weights={term: 5.0}).loss(model, guide, *args)


def test_a_second_thread_training_at_once_is_refused():
    model, guide, args = MODELS["global_local"]()
    elbo = WeightedELBO()
    inside, release, errors = threading.Event(), threading.Event(), []

    def slow_guide(x):
        inside.set()
        release.wait(5)
        guide(x)

    worker = threading.Thread(target=lambda: elbo.loss_and_grads(model, slow_guide, *args))
    worker.start()
    inside.wait(5)
    try:
        WeightedELBO().loss_and_grads(model, guide, *args)
    except RuntimeError as error:
        errors.append(str(error))
    finally:
        release.set()
        worker.join()
    assert errors and "one process per model" in errors[0]
    WeightedELBO().loss_and_grads(model, guide, *args)  # free again afterwards


def test_load_state_dict_checks_its_keys_and_takes_numpy_integers():
    np = pytest.importorskip("numpy")
    elbo = WeightedELBO()
    elbo.load_state_dict({"step": np.int64(5)})
    assert elbo.step == 5
    with pytest.raises(ValueError, match=r"unexpected \['stpe'\]"):
        elbo.load_state_dict({"step": 1, "stpe": 2})
    geco = WeightedELBO(weights={"distortion": GECO(target=1.0)})
    with pytest.raises(ValueError, match=r"missing \['controllers'\]"):
        geco.load_state_dict({"step": 3})
    with pytest.raises(ValueError, match=r"unexpected \['controller'\]"):
        geco.load_state_dict({"step": 3, "controller": {}, "controllers": {}})
