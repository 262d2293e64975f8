"""Discrete latents: weighted enumeration against brute force and Pyro's TraceEnum_ELBO."""

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.ops.indexing import Vindex

from pyro_kl import BetaGammaELBO, RateDistortionELBO, WeightedELBO

X = torch.tensor([-2.0, -1.5, 0.2, 1.1, 2.4, 3.0])


def loss_and_grads(elbo, model, guide, *args, seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    loss = elbo.loss_and_grads(model, guide, *args)
    grads = {
        name: torch.zeros_like(p) if p.grad is None else p.grad.clone()
        for name, p in pyro.get_param_store().named_parameters()
    }
    return loss, grads


def assert_same(expected, actual, rtol=1e-5):
    assert actual[0] == pytest.approx(expected[0], rel=rtol)
    assert actual[1].keys() == expected[1].keys()
    for name, grad in expected[1].items():
        torch.testing.assert_close(actual[1][name], grad, rtol=rtol, atol=1e-6)


# ---- model side: a Gaussian mixture -------------------------------------------


@config_enumerate
def mixture(x):
    weights = pyro.param("weights", torch.tensor([0.3, 0.7]), constraint=dist.constraints.simplex)
    locs = pyro.param("locs", torch.tensor([-1.0, 2.0]))
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)


def no_guide(x):
    pass


def exact_mixture_loss(x):
    weights, locs = torch.tensor([0.3, 0.7]), torch.tensor([-1.0, 2.0])
    joint = weights.log() + dist.Normal(locs, 1.0).log_prob(x[:, None])
    return -joint.logsumexp(-1).sum().item()


@pytest.mark.parametrize("options", [{"max_plate_nesting": 1}, {}], ids=["given", "guessed"])
def test_mixture_matches_trace_enum_and_the_exact_marginal(options):
    expected = loss_and_grads(TraceEnum_ELBO(**options), mixture, no_guide, X)
    elbo = WeightedELBO(**options)
    actual = loss_and_grads(elbo, mixture, no_guide, X)
    assert_same(expected, actual)
    assert actual[0] == pytest.approx(exact_mixture_loss(X), rel=1e-6)
    # the marginal is one summand, under the observed site's term
    assert elbo.last_terms == pytest.approx({"distortion": exact_mixture_loss(X)})


def test_weight_on_distortion_doubles_the_model_side_marginal():
    elbo = WeightedELBO(weights={"distortion": 2.0}, max_plate_nesting=1)
    loss, grads = loss_and_grads(elbo, mixture, no_guide, X)
    unit_loss, unit_grads = loss_and_grads(WeightedELBO(max_plate_nesting=1), mixture, no_guide, X)
    assert loss == pytest.approx(2 * unit_loss, rel=1e-6)
    assert elbo.last_terms["distortion"] == pytest.approx(unit_loss, rel=1e-6)
    for name, grad in unit_grads.items():
        torch.testing.assert_close(grads[name], 2 * grad)


@config_enumerate
def labelled_mixture(x, y):
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(torch.tensor([0.4, 0.6])))
        pyro.sample("x", dist.Normal(torch.tensor([-1.0, 2.0])[c], 1.0), obs=x)
        pyro.sample("y", dist.Bernoulli(torch.tensor([0.2, 0.9])[c]), obs=y)


def test_model_side_marginal_cannot_be_split_between_terms_of_different_weights():
    y = (X > 0).float()
    elbo = BetaGammaELBO(gamma=3.0, site_terms={"y": "classification"}, max_plate_nesting=1)
    with pytest.raises(ValueError, match=r"marginalised together with sites of the terms "
                                         r"\['classification', 'distortion'\].*cannot be split"):
        elbo.loss(labelled_mixture, lambda x, y: None, X, y)
    # equal weights: one summand, named for both terms, and Pyro's loss
    elbo = BetaGammaELBO(beta=2.0, gamma=2.0, site_terms={"y": "classification"},
                         max_plate_nesting=1)
    loss = elbo.loss_and_grads(labelled_mixture, lambda x, y: None, X, y)
    expected = TraceEnum_ELBO(max_plate_nesting=1).loss(labelled_mixture, lambda x, y: None, X, y)
    assert elbo.last_terms == pytest.approx({"classification+distortion": expected})
    assert loss == pytest.approx(2 * expected, rel=1e-6)


def test_too_small_max_plate_nesting_says_how_to_fix_it():
    with pytest.raises(ValueError, match=r"enumerated inside plate 'data'.*max_plate_nesting=1"):
        WeightedELBO(max_plate_nesting=0).loss(mixture, no_guide, X)


# ---- model side: an HMM --------------------------------------------------------


def hmm(data):
    transition = pyro.param("transition", torch.tensor([[0.8, 0.2], [0.3, 0.7]]),
                            constraint=dist.constraints.simplex)
    locs = pyro.param("hmm_locs", torch.tensor([-1.0, 1.5]))
    state = 0
    for t in pyro.markov(range(len(data))):
        state = pyro.sample(f"state_{t}", dist.Categorical(transition[state]),
                            infer={"enumerate": "parallel"})
        pyro.sample(f"obs_{t}", dist.Normal(Vindex(locs)[state], 1.0), obs=data[t])


def test_hmm_matches_trace_enum():
    expected = loss_and_grads(TraceEnum_ELBO(max_plate_nesting=0), hmm, lambda d: None, X)
    actual = loss_and_grads(WeightedELBO(max_plate_nesting=0), hmm, lambda d: None, X)
    assert_same(expected, actual)


# ---- guide side: brute force at any weights --------------------------------------

PRIOR = 0.4


def bernoulli_model(x, enumerate=None):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Bernoulli(PRIOR))
        pyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)


def bernoulli_guide(x, enumerate="parallel"):
    a = pyro.param("a", torch.tensor(0.3))
    b = pyro.param("b", torch.tensor(-0.2))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Bernoulli(logits=a * x + b), infer={"enumerate": enumerate})


def brute_force(x, beta):
    """sum over values of guide(values) * (D + beta R), with its gradient and terms."""
    a = torch.tensor(0.3, requires_grad=True)
    b = torch.tensor(-0.2, requires_grad=True)
    guide = dist.Bernoulli(logits=a * x + b)
    rate, distortion = 0.0, 0.0
    for value in (0.0, 1.0):
        z = torch.full_like(x, value)
        prob = guide.log_prob(z).exp()
        rate = rate + (prob * (guide.log_prob(z) - dist.Bernoulli(PRIOR).log_prob(z))).sum()
        distortion = distortion + (prob * -dist.Normal(2 * z - 1, 1.0).log_prob(x)).sum()
    loss = distortion + beta * rate
    loss.backward()
    terms = {"rate": rate.item(), "distortion": distortion.item()}
    return loss.item(), {"a": a.grad, "b": b.grad}, terms


@pytest.mark.parametrize("enumerate", ["parallel", "sequential"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 3.0])
def test_guide_side_weighted_loss_gradients_and_terms_equal_brute_force(beta, enumerate):
    elbo = RateDistortionELBO(beta=beta, max_plate_nesting=1)
    loss, grads = loss_and_grads(elbo, bernoulli_model, bernoulli_guide, X, enumerate)
    expected_loss, expected_grads, expected_terms = brute_force(X, beta)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    for name in ("a", "b"):
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=1e-4, atol=1e-5)
    assert elbo.last_terms == pytest.approx(expected_terms, rel=1e-5)
    assert loss == pytest.approx(sum(elbo.last_weights[t] * v for t, v in elbo.last_terms.items()))


def plain_bernoulli_guide(x):
    a = pyro.param("a", torch.tensor(0.3))
    b = pyro.param("b", torch.tensor(-0.2))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Bernoulli(logits=a * x + b))


def test_guide_side_enumeration_with_validation_off_is_still_summed():
    pyro.enable_validation(False)
    guide = config_enumerate(plain_bernoulli_guide)
    losses = {WeightedELBO(max_plate_nesting=1).loss(bernoulli_model, guide, X) for _ in range(3)}
    assert len(losses) == 1  # exact, not sampled
    assert losses.pop() == pytest.approx(brute_force(X, 1.0)[0], rel=1e-5)


@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_guide_side_unit_and_weighted_match_trace_enum_at_unit_weights(beta):
    expected = loss_and_grads(TraceEnum_ELBO(max_plate_nesting=1), bernoulli_model,
                              bernoulli_guide, X)
    actual = loss_and_grads(RateDistortionELBO(beta=1.0, max_plate_nesting=1), bernoulli_model,
                            bernoulli_guide, X)
    assert_same(expected, actual)


# ---- guide side with a continuous latent: an M2-style semi-supervised model -------


def m2_model(x, y=None):
    decoder = pyro.param("decoder", torch.tensor([[-1.0, 0.5], [1.5, -0.5]]))
    with pyro.plate("data", len(x)):
        label = pyro.sample("y", dist.Categorical(torch.ones(2) / 2), obs=y)
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(Vindex(decoder)[label, 0] + z * Vindex(decoder)[label, 1],
                                     1.0), obs=x)


@config_enumerate
def m2_guide(x, y=None):
    classifier = pyro.param("classifier", torch.tensor([0.7, -0.1]))
    encoder = pyro.param("encoder", torch.tensor([0.4, 0.2, -0.3]))
    with pyro.plate("data", len(x)):
        if y is None:
            logit = classifier[0] * x + classifier[1]
            y = pyro.sample("y", dist.Categorical(logits=torch.stack([-logit, logit], -1)))
        loc = encoder[0] * x + encoder[1] * y.float()
        pyro.sample("z", dist.Normal(loc, encoder[2].exp()))


@pytest.mark.parametrize("labelled", [False, True])
def test_m2_style_model_matches_trace_enum_at_unit_weights(labelled):
    y = (X > 0).long() if labelled else None
    trace_enum = TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=not labelled)
    expected = loss_and_grads(trace_enum, m2_model, m2_guide, X, y)
    actual = loss_and_grads(WeightedELBO(max_plate_nesting=1), m2_model, m2_guide, X, y)
    assert_same(expected, actual)


def test_m2_style_weighted_gradient_is_the_weighted_sum_of_term_gradients():
    """Linearity: the weighted gradient equals sum_t w_t * grad(T_t), each T_t's
    gradient taken alone (the other terms weighted 0), under the same seed."""
    weights = {"distortion": 0.7, "rate": 2.5}
    total = loss_and_grads(WeightedELBO(weights=weights, max_plate_nesting=1), m2_model,
                           m2_guide, X)
    expected = {}
    for term, weight in weights.items():
        alone = {t: (1.0 if t == term else 0.0) for t in weights}
        _, grads = loss_and_grads(WeightedELBO(weights=alone, max_plate_nesting=1), m2_model,
                                  m2_guide, X)
        for name, grad in grads.items():
            expected[name] = expected.get(name, 0.0) + weight * grad
    for name, grad in expected.items():
        torch.testing.assert_close(total[1][name], grad, rtol=1e-4, atol=1e-5)


def test_enumerated_values_match_itertools_product_of_two_guide_sites():
    """Two enumerated guide sites in different plates: the exact expectation."""

    def model():
        a = pyro.sample("a", dist.Bernoulli(0.3))
        with pyro.plate("p", 2):
            pyro.sample("b", dist.Bernoulli(0.2 + 0.5 * a))

    @config_enumerate
    def guide():
        qa = pyro.param("qa", torch.tensor(0.6), constraint=dist.constraints.unit_interval)
        qb = pyro.param("qb", torch.tensor([0.3, 0.8]), constraint=dist.constraints.unit_interval)
        a = pyro.sample("a", dist.Bernoulli(qa))
        with pyro.plate("p", 2):
            pyro.sample("b", dist.Bernoulli(qb * 0.5 + 0.25 * a))

    weights = {"complexity": 0.3, "rate": 2.0}
    elbo = WeightedELBO(weights=weights, site_terms={"a": "complexity", "b": "rate"},
                        max_plate_nesting=1)
    loss = elbo.loss(model, guide)
    qa, qb = torch.tensor(0.6), torch.tensor([0.3, 0.8])
    expected = 0.0
    for a, b0, b1 in itertools.product((0.0, 1.0), repeat=3):
        b = torch.tensor([b0, b1])
        guide_a, guide_b = dist.Bernoulli(qa), dist.Bernoulli(qb * 0.5 + 0.25 * a)
        prob = guide_a.log_prob(torch.tensor(a)).exp() * guide_b.log_prob(b).exp().prod()
        kl_a = guide_a.log_prob(torch.tensor(a)) - dist.Bernoulli(0.3).log_prob(torch.tensor(a))
        kl_b = (guide_b.log_prob(b) - dist.Bernoulli(0.2 + 0.5 * a).log_prob(b)).sum()
        expected += (prob * (0.3 * kl_a + 2.0 * kl_b)).item()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_guide_side_weights_with_subsampling_equal_brute_force():
    """A subsampled data plate scales every cost by N/b; weights still apply per term."""
    subsample = torch.tensor([1, 3, 4])
    scale = len(X) / len(subsample)

    def model(x):
        with pyro.plate("data", len(x), subsample=subsample) as idx:
            z = pyro.sample("z", dist.Bernoulli(PRIOR))
            pyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x[idx])

    @config_enumerate
    def guide(x):
        a, b = pyro.param("a", torch.tensor(0.3)), pyro.param("b", torch.tensor(-0.2))
        with pyro.plate("data", len(x), subsample=subsample) as idx:
            pyro.sample("z", dist.Bernoulli(logits=a * x[idx] + b))

    beta = 2.5
    elbo = RateDistortionELBO(beta=beta, max_plate_nesting=1)
    loss, grads = loss_and_grads(elbo, model, guide, X)
    expected_loss, expected_grads, expected_terms = brute_force(X[subsample], beta)
    assert loss == pytest.approx(scale * expected_loss, rel=1e-5)
    for name in ("a", "b"):
        torch.testing.assert_close(grads[name], scale * expected_grads[name], rtol=1e-4, atol=1e-5)
    scaled = {t: scale * v for t, v in expected_terms.items()}
    assert elbo.last_terms == pytest.approx(scaled, rel=1e-5)


def test_model_enumeration_more_global_than_guide_enumeration_is_refused():
    @config_enumerate
    def model():
        a = pyro.sample("a", dist.Categorical(torch.tensor([0.45, 0.55])))
        with pyro.plate("b_axis", 2):
            b = pyro.sample("b", dist.Categorical(torch.tensor([0.6, 0.4])))
            probs = torch.tensor([[[0.4, 0.6], [0.3, 0.7]], [[0.2, 0.8], [0.5, 0.5]]])
            pyro.sample("c", dist.Categorical(Vindex(probs)[a, b]), obs=torch.tensor([1, 0]))

    @config_enumerate
    def guide():
        probs = pyro.param("guide_probs_b", torch.tensor([0.8, 0.2]),
                           constraint=dist.constraints.simplex)
        with pyro.plate("b_axis", 2):
            pyro.sample("b", dist.Categorical(probs))

    with pytest.raises(ValueError, match=r"no more global than guide.*\['a'\].*'b'"):
        WeightedELBO(max_plate_nesting=1).differentiable_loss(model, guide)


# ---- analytic KL beside enumeration -----------------------------------------------


@config_enumerate
def shifted_mixture(x):
    theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(torch.tensor([0.3, 0.7])))
        pyro.sample("x", dist.Normal(theta + torch.tensor([-2.0, 2.0])[c], 1.0), obs=x)


def theta_guide(x):
    loc = pyro.param("loc", torch.tensor(0.5))
    scale = pyro.param("scale", torch.tensor(0.6), constraint=dist.constraints.positive)
    pyro.sample("theta", dist.Normal(loc, scale))


def theta_kl():
    loc = torch.tensor(0.5, requires_grad=True)
    scale = torch.tensor(0.6, requires_grad=True)
    kl = torch.distributions.kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0))
    kl.backward()
    return kl.item(), loc.grad, scale.grad


@pytest.mark.parametrize("options", [{}, {"num_particles": 3, "vectorize_particles": True}],
                         ids=["one", "vectorized"])
def test_analytic_kl_with_a_model_side_enumerated_site_is_the_closed_form(options):
    kl, loc_grad, scale_grad = theta_kl()
    plain = WeightedELBO(max_plate_nesting=1, **options)
    loss_and_grads(plain, shifted_mixture, theta_guide, X, seed=1)
    elbo = WeightedELBO(analytic_kl=True, max_plate_nesting=1, **options)
    loss, _ = loss_and_grads(elbo, shifted_mixture, theta_guide, X, seed=1)
    assert elbo.last_terms["complexity"] == pytest.approx(kl, rel=1e-6)
    assert plain.last_terms["complexity"] != pytest.approx(kl, rel=1e-2)  # Monte Carlo differs
    # the same draw of theta: the model-side marginal is Monte Carlo's, unchanged
    assert elbo.last_terms["distortion"] == pytest.approx(plain.last_terms["distortion"], rel=1e-6)
    assert loss == pytest.approx(plain.last_terms["distortion"] + kl, rel=1e-6)
    # the complexity's gradient alone is the closed form's
    only_kl = WeightedELBO(weights={"distortion": 0.0}, analytic_kl=True, max_plate_nesting=1,
                           **options)
    _, grads = loss_and_grads(only_kl, shifted_mixture, theta_guide, X, seed=1)
    torch.testing.assert_close(grads["loc"], loc_grad)
    scale_param = pyro.get_param_store()["scale"]  # its unconstrained gradient: chain rule
    torch.testing.assert_close(grads["scale"], scale_grad * scale_param.detach(), rtol=1e-5,
                               atol=1e-6)


@config_enumerate
def switch_model(x):
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Bernoulli(0.4))
        z = pyro.sample("z", dist.Normal(torch.tensor([-1.0, 1.0])[c.long()], 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


@config_enumerate
def switch_guide(x):
    q = pyro.param("q", torch.full((len(x),), 0.3), constraint=dist.constraints.unit_interval)
    means = pyro.param("means", torch.tensor([-0.5, 0.7]))
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Bernoulli(q))
        pyro.sample("z", dist.Normal(means[c.long()] + 0.1 * x, 0.8))


def test_analytic_kl_under_guide_side_enumeration_is_the_expected_closed_form():
    elbo = WeightedELBO(analytic_kl=True, site_terms={"z": "kl_z"}, max_plate_nesting=1)
    elbo.loss_and_grads(switch_model, switch_guide, X)
    # exact: sum_c q(c) KL(guide(z | c, x) || model(z | c)), summed over the data
    q = torch.tensor([1 - 0.3, 0.3])
    guide_z = dist.Normal(torch.tensor([-0.5, 0.7])[:, None] + 0.1 * X, 0.8)
    model_z = dist.Normal(torch.tensor([-1.0, 1.0])[:, None], 1.0)
    expected = (q[:, None] * torch.distributions.kl_divergence(guide_z, model_z)).sum()
    assert elbo.last_terms["kl_z"] == pytest.approx(expected.item(), rel=1e-6)
    # c is enumerated: its term is exact with or without analytic_kl
    plain = WeightedELBO(site_terms={"z": "kl_z"}, max_plate_nesting=1)
    plain.loss_and_grads(switch_model, switch_guide, X)
    assert elbo.last_terms["rate"] == pytest.approx(plain.last_terms["rate"], rel=1e-6)


def test_analytic_kl_for_a_latent_inside_a_model_side_marginal_warns_and_names_it():
    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.1 * x, 0.8))

    elbo = WeightedELBO(analytic_kl=True, max_plate_nesting=1)
    with pytest.warns(UserWarning, match=r"site 'z' keeps its Monte Carlo cost"):
        loss, _ = loss_and_grads(elbo, switch_model, guide, X)
    expected, _ = loss_and_grads(TraceEnum_ELBO(max_plate_nesting=1), switch_model, guide, X)
    assert loss == pytest.approx(expected, rel=1e-6)
