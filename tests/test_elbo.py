import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_kl import BetaGammaELBO, RateDistortionELBO, TherMLELBO, WeightedELBO

from .model_zoo import MODELS, REPARAMETERIZED

UNIT_PRESETS = {
    "weighted": lambda **kw: WeightedELBO(**kw),
    "rate_distortion": lambda **kw: RateDistortionELBO(beta=1.0, **kw),
    "beta_gamma": lambda **kw: BetaGammaELBO(beta=1.0, gamma=1.0, **kw),
    "therml": lambda **kw: TherMLELBO(gamma=1.0, delta=1.0, sigma=1.0, **kw),
}
PARTICLE_OPTIONS = [{}, {"num_particles": 3, "vectorize_particles": True}, {"num_particles": 2}]


def loss_and_grads(elbo, model_name, seed=0):
    """One loss_and_grads call on a fresh copy of a zoo model, from a fixed seed."""
    pyro.clear_param_store()
    model, guide, args = MODELS[model_name]()
    pyro.set_rng_seed(seed)
    loss = elbo.loss_and_grads(model, guide, *args)
    grads = {}
    for name, param in pyro.get_param_store().named_parameters():
        grads[name] = None if param.grad is None else param.grad.clone()
        param.grad = None
    return loss, grads


def assert_same(expected, actual):
    loss_expected, grads_expected = expected
    loss_actual, grads_actual = actual
    assert loss_actual == pytest.approx(loss_expected, rel=1e-6, abs=1e-6)
    assert grads_actual.keys() == grads_expected.keys()
    for name in grads_expected:
        torch.testing.assert_close(grads_actual[name], grads_expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", PARTICLE_OPTIONS, ids=["one", "vectorized", "sequential"])
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("preset", list(UNIT_PRESETS))
def test_unit_weights_reproduce_trace_elbo(preset, model_name, options):
    expected = loss_and_grads(Trace_ELBO(**options), model_name)
    actual = loss_and_grads(UNIT_PRESETS[preset](**options), model_name)
    assert_same(expected, actual)


@pytest.mark.parametrize("options", PARTICLE_OPTIONS[:2], ids=["one", "vectorized"])
@pytest.mark.parametrize("model_name", REPARAMETERIZED)
@pytest.mark.parametrize("preset", list(UNIT_PRESETS))
def test_unit_weights_analytic_reproduce_trace_mean_field(preset, model_name, options):
    expected = loss_and_grads(TraceMeanField_ELBO(**options), model_name)
    actual = loss_and_grads(UNIT_PRESETS[preset](analytic_kl=True, **options), model_name)
    assert_same(expected, actual)


WEIGHTED_PRESETS = [
    lambda **kw: WeightedELBO(weights={"rate": 0.3, "complexity": 2.0, "factor": 0.5}, **kw),
    lambda **kw: RateDistortionELBO(beta=0.37, **kw),
    lambda **kw: BetaGammaELBO(beta=1.7, gamma=0.2, site_terms={"x": "classification"}, **kw),
    lambda **kw: TherMLELBO(gamma=2.0, delta=0.1, sigma=3.0, **kw),
    lambda **kw: WeightedELBO(weights={"distortion": 0.0, "rate": 4.0}, **kw),
]


@pytest.mark.filterwarnings("ignore:The weight .* has no effect")  # not every model has S
@pytest.mark.parametrize("analytic_kl", [False, True])
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("make_elbo", WEIGHTED_PRESETS)
def test_terms_sum_to_loss(make_elbo, model_name, analytic_kl):
    if analytic_kl and model_name not in REPARAMETERIZED:
        pytest.skip("analytic KL is tested on reparameterized guides")
    elbo = make_elbo(analytic_kl=analytic_kl, num_particles=2)
    loss, _ = loss_and_grads(elbo, model_name)
    weighted = sum(elbo.last_weights[t] * value for t, value in elbo.last_terms.items())
    assert loss == pytest.approx(weighted, rel=1e-6, abs=1e-6)
    # all three entry points agree for the same sample; only training calls record
    model, guide, args = MODELS[model_name]()
    elbo.estimate_terms(model, guide, *args)  # autoguides initialise (and draw) on first use
    weights = dict(elbo.last_weights)
    for method in (elbo.loss, elbo.differentiable_loss, elbo.loss_and_grads):
        before = dict(elbo.last_terms)
        pyro.set_rng_seed(5)
        value = float(torch.as_tensor(method(model, guide, *args)).detach())
        pyro.set_rng_seed(5)
        terms = elbo.estimate_terms(model, guide, *args)
        if method == elbo.loss:
            assert elbo.last_terms == before
        else:
            assert elbo.last_terms == pytest.approx(terms)
        assert value == pytest.approx(sum(weights[t] * v for t, v in terms.items()))


def hand_weighted_loss(weights, x):
    """The weighted objective of ``global_local`` computed site by site from traces."""
    model, guide, _ = MODELS["global_local"]()
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()

    def lp(trace, name):
        return trace.nodes[name]["log_prob_sum"]

    distortion = -lp(model_trace, "x")
    rate = lp(guide_trace, "z") - lp(model_trace, "z")
    complexity = lp(guide_trace, "mu") - lp(model_trace, "mu")
    terms = {"distortion": distortion, "rate": rate, "complexity": complexity}
    return sum(weights.get(t, 1.0) * v for t, v in terms.items()), terms


@pytest.mark.parametrize(
    "weights", [{"rate": 0.3}, {"distortion": 2.0, "complexity": 0.0}, {"rate": 5.0}]
)
def test_weighted_loss_and_pathwise_gradient_match_hand_computation(weights):
    x = MODELS["global_local"]()[2][0]
    pyro.set_rng_seed(3)
    expected_loss, expected_terms = hand_weighted_loss(weights, x)
    params = dict(pyro.get_param_store().named_parameters())
    expected_grads = torch.autograd.grad(expected_loss, list(params.values()))

    elbo = WeightedELBO(weights=weights)
    model, guide, _ = MODELS["global_local"]()
    pyro.set_rng_seed(3)
    loss = elbo.loss_and_grads(model, guide, x)
    assert loss == pytest.approx(expected_loss.item(), rel=1e-6)
    assert elbo.last_terms == pytest.approx({t: v.item() for t, v in expected_terms.items()})
    for param, expected in zip(params.values(), expected_grads):
        torch.testing.assert_close(param.grad, expected)


# ---- score-function gradients against exact enumeration -------------------

X_DISCRETE = torch.tensor([0.3, -1.2, 2.0])


def discrete_model(x):
    mu = pyro.param("mu", torch.tensor([-1.0, 1.5]))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Bernoulli(0.3))
        pyro.sample("x", dist.Normal(mu[z.long()], 1.0), obs=x)


def discrete_guide(x):
    phi = pyro.param("phi", torch.tensor([0.2, -0.4, 0.9]))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Bernoulli(logits=phi))


def exact_weighted_loss(beta, cost_weight=None):
    """``E_guide[D + beta * R]`` by enumerating z in {0, 1} for every data point.

    ``cost_weight`` replaces beta in the score-function cost only; it builds the
    wrong answer an unweighted estimator would give, to check the test's power.
    """
    cost_weight = beta if cost_weight is None else cost_weight
    mu, phi = pyro.param("mu"), pyro.param("phi")
    total = 0.0
    for value in (0.0, 1.0):
        z = torch.full_like(X_DISCRETE, value)
        log_q = dist.Bernoulli(logits=phi).log_prob(z)
        log_p = dist.Bernoulli(0.3).log_prob(z)
        distortion = -dist.Normal(mu[z.long()], 1.0).log_prob(X_DISCRETE)
        cost = distortion + beta * (log_q - log_p)
        score_cost = (distortion + cost_weight * (log_q - log_p)).detach()
        q = log_q.exp()
        # value and gradient of sum_z q(z) cost(z), the score part using score_cost
        total = total + (q.detach() * cost + (q - q.detach()) * score_cost).sum()
    return total


@pytest.mark.parametrize("beta", [0.0, 0.5, 4.0])
def test_weighted_score_function_gradient_matches_enumeration(beta):
    discrete_guide(X_DISCRETE)
    discrete_model(X_DISCRETE)
    params = [pyro.param("mu").unconstrained(), pyro.param("phi").unconstrained()]
    exact = torch.autograd.grad(exact_weighted_loss(beta), params)

    elbo = RateDistortionELBO(beta=beta, num_particles=40000, vectorize_particles=True)
    pyro.set_rng_seed(0)
    loss = elbo.loss_and_grads(discrete_model, discrete_guide, X_DISCRETE)
    assert loss == pytest.approx(exact_weighted_loss(beta).item(), rel=0.02)
    for param, expected in zip(params, exact):
        torch.testing.assert_close(param.grad, expected, atol=0.03, rtol=0.03)
    # the test can fail: weighting only the value, not the score-function cost, is far off
    if beta != 1.0:
        wrong = torch.autograd.grad(exact_weighted_loss(beta, cost_weight=1.0), params)[1]
        assert not torch.allclose(wrong, exact[1], atol=0.1)
