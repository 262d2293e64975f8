"""``rao_blackwell=True``: TraceGraph_ELBO's estimator per term, weighted, with baselines.

Unit weights are checked against :class:`pyro.infer.TraceGraph_ELBO` under the
same seed (loss, and the gradients of model, guide and baseline parameters);
non-unit weights against the exact gradient of the weighted objective, by
enumerating two Bernoulli latents.
"""

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions.testing import fakes
from pyro.infer import SVI, TraceGraph_ELBO, config_enumerate
from pyro.optim import Adam
from torch.distributions import constraints

from pyro_kl import BetaGammaELBO, RateDistortionELBO, TherMLELBO, WeightedELBO
from pyro_kl.compile import CompiledSVI
from pyro_kl.tracegraph import AVERAGE_PARAM_PREFIX

X = torch.tensor(1.5)
PLATE_DATA = torch.tensor([0.3, -1.2, 2.5, 0.8])


def two_bernoulli():
    """Two Bernoulli latents, the second depending on the first in both worlds."""

    def model(x):
        p1 = pyro.param("model_p1", torch.tensor(0.3), constraint=constraints.unit_interval)
        z1 = pyro.sample("z1", dist.Bernoulli(p1))
        z2 = pyro.sample("z2", dist.Bernoulli(0.2 + 0.6 * z1))
        pyro.sample("x", dist.Normal(z1 + 2.0 * z2, 1.0), obs=x)

    def guide(x):
        q1 = pyro.param("q1", torch.tensor(0.6), constraint=constraints.unit_interval)
        q2 = pyro.param("q2", torch.tensor([0.4, 0.7]), constraint=constraints.unit_interval)
        z1 = pyro.sample("z1", dist.Bernoulli(q1))
        pyro.sample("z2", dist.Bernoulli(q2[z1.long()]))

    return model, guide, (X,)


def chain():
    """z1 -> z2 -> x with a non-reparameterised guide: x depends on z1 only through z2."""

    def model(x):
        z1 = pyro.sample("z1", dist.Normal(0.0, 1.0))
        z2 = pyro.sample("z2", dist.Normal(z1, 1.0))
        pyro.sample("x", dist.Normal(z2, 0.5), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.tensor(0.2))
        scale = pyro.param("scale", torch.tensor(0.8), constraint=constraints.positive)
        w = pyro.param("w", torch.tensor(0.5))
        z1 = pyro.sample("z1", fakes.NonreparameterizedNormal(loc, scale))
        pyro.sample("z2", fakes.NonreparameterizedNormal(w * z1 + 0.3 * x, scale))

    return model, guide, (X,)


def plated_categorical():
    """A global non-reparameterised latent and a local Categorical per datapoint."""

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        locs = torch.tensor([-1.0, 0.0, 1.0])
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(torch.ones(3) / 3))
            pyro.sample("x", dist.Normal(mu + locs[c], 1.0), obs=x)

    def guide(x):
        m = pyro.param("m", torch.tensor(0.1))
        logits = pyro.param("logits", torch.zeros(len(x), 3))
        pyro.sample("mu", fakes.NonreparameterizedNormal(m, 0.5))
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Categorical(logits=logits))

    return model, guide, (PLATE_DATA,)


MODELS = {"two_bernoulli": two_bernoulli, "chain": chain, "plated_categorical": plated_categorical}


def _grads(elbo, model, guide, args, seed, steps=1):
    """The loss and every parameter's gradient after ``steps`` SVI steps from a fresh
    param store (the last step's gradients; the earlier steps move the parameters)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    svi = SVI(model, guide, Adam({"lr": 0.05}), loss=elbo)
    for _ in range(steps - 1):
        svi.step(*args)
    with poutine.trace(param_only=True) as params:
        loss = elbo.loss_and_grads(model, guide, *args)
    grads = {}
    for name, site in params.trace.nodes.items():
        value = site["value"].unconstrained()
        grads[name] = value.grad.detach().clone() if value.grad is not None else None
    store = {name: value.detach().clone() for name, value in pyro.get_param_store().items()}
    return loss, grads, store


def _assert_same(expected, actual):
    loss_e, grads_e, store_e = expected
    loss_a, grads_a, store_a = actual
    assert loss_a == pytest.approx(loss_e, rel=1e-6, abs=1e-6)
    assert set(grads_a) == set(grads_e)
    for name, grad in grads_e.items():
        if grad is None:
            assert grads_a[name] is None, name
        else:
            assert torch.allclose(grads_a[name], grad, rtol=1e-5, atol=1e-6), name
    assert set(store_a) == set(store_e)
    for name, value in store_e.items():
        assert torch.allclose(store_a[name], value, rtol=1e-5, atol=1e-6), name


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("num_particles,vectorize", [(1, False), (3, False), (4, True)])
def test_unit_weights_are_tracegraph_elbo(name, num_particles, vectorize):
    model, guide, args = MODELS[name]()
    options = dict(num_particles=num_particles, vectorize_particles=vectorize)
    for seed in (0, 1, 2):
        expected = _grads(TraceGraph_ELBO(**options), model, guide, args, seed)
        actual = _grads(WeightedELBO(rao_blackwell=True, **options), model, guide, args, seed)
        _assert_same(expected, actual)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RateDistortionELBO(beta=1.0, rao_blackwell=True),
        lambda: BetaGammaELBO(beta=1.0, gamma=1.0, rao_blackwell=True),
        lambda: TherMLELBO(rao_blackwell=True),
    ],
    ids=["RateDistortionELBO", "BetaGammaELBO", "TherMLELBO"],
)
def test_presets_take_the_option(make):
    model, guide, args = plated_categorical()
    _assert_same(
        _grads(TraceGraph_ELBO(), model, guide, args, seed=3),
        _grads(make(), model, guide, args, seed=3),
    )


def test_the_estimator_differs_from_trace_elbos():
    """On the chain, z2's score function meets only the costs downstream of z2: the
    costs of z1 (sampled before it) are left out, so the gradient of ``w`` (which
    reaches the loss through z2's score only) differs from Trace_ELBO's, which
    multiplies it by every cost."""
    model, guide, args = chain()
    graph = _grads(WeightedELBO(rao_blackwell=True), model, guide, args, seed=0)
    plain = _grads(WeightedELBO(), model, guide, args, seed=0)
    assert graph[0] == pytest.approx(plain[0])  # the same sample, the same loss
    assert not torch.allclose(graph[1]["w"], plain[1]["w"])
    assert torch.allclose(graph[1]["loc"], plain[1]["loc"])  # everything is below z1


def test_scaling_every_weight_scales_the_gradient():
    """An identity under one seed: weights all c give c times the unit gradient."""
    model, guide, args = plated_categorical()
    weights = {"rate": 2.5, "complexity": 2.5, "distortion": 2.5}
    unit = _grads(WeightedELBO(rao_blackwell=True), model, guide, args, seed=4)
    scaled = _grads(WeightedELBO(weights=weights, rao_blackwell=True), model, guide, args, seed=4)
    assert scaled[0] == pytest.approx(2.5 * unit[0], rel=1e-6)
    for name, grad in unit[1].items():
        assert torch.allclose(scaled[1][name], 2.5 * grad, rtol=1e-5, atol=1e-6), name


@pytest.mark.parametrize("beta", [0.5, 4.0])
def test_rate_distortion_is_tracegraph_elbo_of_the_rescaled_model(beta):
    """``D + β·(R + S) = β·(D/β + R + S)``: at any β the gradient equals β times
    TraceGraph_ELBO's on the model whose observed site is scaled by ``1/β``, under
    the same seed (an identity with Pyro's own estimator at non-unit weights)."""
    model, guide, args = two_bernoulli()
    num_particles = 2

    def obs_scaled_model(x):  # two_bernoulli's model, its observed site scaled by 1/beta
        p1 = pyro.param("model_p1", torch.tensor(0.3), constraint=constraints.unit_interval)
        z1 = pyro.sample("z1", dist.Bernoulli(p1))
        z2 = pyro.sample("z2", dist.Bernoulli(0.2 + 0.6 * z1))
        with poutine.scale(scale=1.0 / beta):
            pyro.sample("x", dist.Normal(z1 + 2.0 * z2, 1.0), obs=x)

    for seed in (0, 1):
        loss_e, grads_e, _ = _grads(TraceGraph_ELBO(num_particles), obs_scaled_model, guide,
                                    args, seed)
        loss_a, grads_a, _ = _grads(RateDistortionELBO(beta, num_particles, rao_blackwell=True),
                                    model, guide, args, seed)
        assert loss_a == pytest.approx(beta * loss_e, rel=1e-5)
        for name, grad in grads_e.items():
            assert torch.allclose(grads_a[name], beta * grad, rtol=1e-5, atol=1e-6), name


def _exact_weighted_loss(weights):
    """``E_guide[w_S (log q - log p)(z) - w_D log p(x | z)]`` of :func:`two_bernoulli`,
    by enumerating both latents, as a function of the param store's parameters."""
    model, guide, args = two_bernoulli()
    total = 0.0
    for v1, v2 in itertools.product((0.0, 1.0), repeat=2):
        values = {"z1": torch.tensor(v1), "z2": torch.tensor(v2)}
        conditioned_guide = poutine.condition(guide, values)
        guide_trace = poutine.trace(conditioned_guide).get_trace(*args)
        model_trace = poutine.trace(poutine.condition(model, values)).get_trace(*args)
        log_q = guide_trace.log_prob_sum()
        latent = sum(model_trace.nodes[n]["fn"].log_prob(values[n]) for n in values)
        data = model_trace.nodes["x"]["fn"].log_prob(X)
        total = total + log_q.exp() * (
            weights["complexity"] * (log_q - latent) - weights["distortion"] * data
        )
    return total


@pytest.mark.parametrize("baseline", [False, True], ids=["plain", "decaying_average"])
def test_weighted_gradient_is_the_exact_gradient(baseline):
    """The mean of many Rao-Blackwellised gradient samples at non-unit weights equals
    the exact gradient of the weighted objective (enumeration of both Bernoulli
    latents), within 4 standard errors of the mean over the batches."""
    weights = {"complexity": 0.3, "distortion": 2.0}
    model, guide, args = two_bernoulli()
    if baseline:
        guide = poutine.infer_config(
            guide, lambda site: {"baseline": {"use_decaying_avg_baseline": True}}
        )
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    exact_loss = _exact_weighted_loss(weights)
    params = {n: v.unconstrained() for n, v in pyro.get_param_store().items()}
    exact = dict(zip(params, torch.autograd.grad(exact_loss, list(params.values()))))

    elbo = WeightedELBO(weights=weights, rao_blackwell=True, num_particles=2000,
                        vectorize_particles=True, max_plate_nesting=0)
    batches = []
    for _ in range(12):
        for p in params.values():
            p.grad = None
        elbo.loss_and_grads(model, guide, *args)
        batches.append(torch.cat([params[n].grad.reshape(-1) for n in exact]))
    batches = torch.stack(batches)
    mean, stderr = batches.mean(0), batches.std(0) / len(batches) ** 0.5
    expected = torch.cat([exact[n].reshape(-1) for n in exact])
    assert torch.all((mean - expected).abs() <= 4 * stderr + 1e-4), (mean, expected, stderr)


class Baseline(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)
        torch.nn.init.constant_(self.linear.weight, 0.3)
        torch.nn.init.constant_(self.linear.bias, -0.2)

    def forward(self, x):
        return self.linear(x.reshape(-1, 1)).reshape(x.shape)


def _baselined(kind):
    """The plated model with a baseline of ``kind`` on the local and the global latent."""
    net = Baseline()

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(mu + c, 1.0), obs=x)

    def guide(x):
        m = pyro.param("m", torch.tensor(0.1))
        logits = pyro.param("logits", torch.zeros(len(x)))
        if kind == "nn":
            pyro.module("baseline_net", net)
            local = {"nn_baseline": net, "nn_baseline_input": x}
            top = {"use_decaying_avg_baseline": True, "baseline_beta": 0.8}
        elif kind == "value":
            b = pyro.param("b", torch.zeros(len(x)))
            b0 = pyro.param("b0", torch.tensor(0.0))
            local = {"baseline_value": b}
            top = {"baseline_value": b0}
        else:
            local = {"use_decaying_avg_baseline": True}
            top = {"use_decaying_avg_baseline": True, "baseline_beta": 0.5}
        pyro.sample("mu", fakes.NonreparameterizedNormal(m, 0.5), infer={"baseline": top})
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(logits=logits), infer={"baseline": local})

    return model, guide, (PLATE_DATA,)


@pytest.mark.parametrize(
    "kind,num_particles,vectorize",
    [(kind, n, False) for kind in ("decaying_average", "nn", "value") for n in (1, 2)]
    + [("decaying_average", 3, True)],  # the others give one value per datapoint, not particle
)
def test_baselines_are_tracegraph_elbos(kind, num_particles, vectorize):
    """Gradients of model, guide and baseline parameters, and the decaying averages in
    the param store, equal TraceGraph_ELBO's after three SVI steps."""
    options = dict(num_particles=num_particles, vectorize_particles=vectorize)
    for seed in (0, 5):
        model, guide, args = _baselined(kind)
        expected = _grads(TraceGraph_ELBO(**options), model, guide, args, seed, steps=3)
        model, guide, args = _baselined(kind)
        actual = _grads(WeightedELBO(rao_blackwell=True, **options), model, guide, args,
                        seed, steps=3)
        _assert_same(expected, actual)
        if kind == "decaying_average":
            assert AVERAGE_PARAM_PREFIX + "c" in actual[2]


def test_weighted_baseline_tracks_the_weighted_cost():
    """With the weights of the costs, the decaying average is that of the weighted
    downstream ELBO: at weight c on every term it is c times the unit one."""
    averages = []
    for scale in (1.0, 3.0):
        model, guide, args = _baselined("decaying_average")
        weights = {"rate": scale, "complexity": scale, "distortion": scale}
        elbo = WeightedELBO(weights=weights, rao_blackwell=True)
        store = _grads(elbo, model, guide, args, seed=2)[2]
        averages.append(store[AVERAGE_PARAM_PREFIX + "c"])
    assert torch.allclose(averages[1], 3.0 * averages[0], rtol=1e-5)


def test_a_term_of_weight_zero_cannot_make_a_nan():
    """x is impossible when z = 0; with distortion weighted 0 its infinite cost
    enters neither the loss, nor the score function's downstream cost, nor a baseline."""

    def model():
        z = pyro.sample("z", dist.Bernoulli(0.5))
        pyro.sample("x", dist.Bernoulli(probs=z), obs=torch.tensor(1.0))

    def guide():
        q = pyro.param("q", torch.tensor(0.0))
        pyro.sample("z", dist.Bernoulli(logits=q),
                    infer={"baseline": {"use_decaying_avg_baseline": True}})

    elbo = WeightedELBO(weights={"distortion": 0.0}, rao_blackwell=True)
    for seed in range(6):  # both values of z are drawn
        pyro.set_rng_seed(seed)
        loss = elbo.loss_and_grads(model, guide)
        assert torch.isfinite(torch.tensor(loss))
        assert torch.isfinite(pyro.param("q").grad).all()


def test_loss_without_gradients_leaves_baselines_alone():
    model, guide, args = _baselined("decaying_average")
    elbo = WeightedELBO(rao_blackwell=True)
    elbo.loss(model, guide, *args)
    elbo.estimate_terms(model, guide, *args)
    assert not any(name.startswith(AVERAGE_PARAM_PREFIX) for name in pyro.get_param_store())


def test_terms_sum_to_the_loss():
    model, guide, args = plated_categorical()
    elbo = WeightedELBO(weights={"rate": 0.5}, rao_blackwell=True)
    loss = elbo.loss_and_grads(model, guide, *args)
    terms = elbo.last_terms
    assert set(terms) == {"rate", "complexity", "distortion"}
    assert loss == pytest.approx(0.5 * terms["rate"] + terms["complexity"] + terms["distortion"])
    assert all(type(v) is torch.Tensor for v in elbo.last_term_tensors.values())


def test_enumerated_sites_are_refused():
    model, guide, args = plated_categorical()
    elbo = WeightedELBO(rao_blackwell=True, max_plate_nesting=1)
    with pytest.raises(ValueError, match=r"\['c'\] are configured for enumeration"):
        elbo.loss_and_grads(model, config_enumerate(guide, default="parallel"), *args)


def test_analytic_kl_is_refused():
    with pytest.raises(ValueError, match="analytic_kl=True"):
        WeightedELBO(rao_blackwell=True, analytic_kl=True)
    with pytest.raises(TypeError, match="True or False"):
        RateDistortionELBO(rao_blackwell="yes")


def test_compiled_svi_is_refused():
    model, guide, _ = two_bernoulli()
    with pytest.raises(ValueError, match="pyro.infer.SVI"):
        CompiledSVI(model, guide, Adam({"lr": 0.1}), WeightedELBO(rao_blackwell=True))


@pytest.mark.parametrize(
    "options,match",
    [
        ({"use_decaying_avg": True}, "unknown baseline option"),
        ({"nn_baseline": Baseline(), "nn_baseline_input": X, "baseline_value": X}, "give one"),
        ({"nn_baseline": Baseline()}, "without nn_baseline_input"),
        ({"use_decaying_avg_baseline": True, "baseline_beta": 1.5}, "baseline_beta=1.5"),
        ({"baseline_value": torch.zeros(3)}, r"shape \(3,\)"),
    ],
)
def test_bad_baseline_options(options, match):
    def model(x):
        z = pyro.sample("z", dist.Bernoulli(0.5))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        pyro.sample("z", dist.Bernoulli(0.4), infer={"baseline": options})

    with pytest.raises(ValueError, match=match):
        WeightedELBO(rao_blackwell=True).loss_and_grads(model, guide, X)
