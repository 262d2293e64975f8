"""The posterior of model-side enumerated sites: compute_marginals, sample_posterior and
infer_discrete on pyro_kl's ELBOs, against TraceEnum_ELBO and brute-force enumeration."""

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, TraceEnum_ELBO, config_enumerate, infer_discrete
from pyro.infer.autoguide import AutoDelta
from pyro.ops.indexing import Vindex
from pyro.optim import Adam

from pyro_kl import BetaGammaELBO, RateDistortionELBO, WeightedELBO

X = torch.tensor([-2.0, -1.5, 0.2, 1.1, 2.4, 3.0])
WEIGHTS = torch.tensor([0.3, 0.7])
LOCS = torch.tensor([-1.0, 2.0])

ELBOS = [
    pytest.param(lambda **kw: WeightedELBO(**kw), id="unit"),
    pytest.param(lambda **kw: WeightedELBO(weights={"distortion": 0.25}, **kw), id="D*0.25"),
    pytest.param(lambda **kw: RateDistortionELBO(beta=3.0, **kw), id="beta=3"),
    pytest.param(lambda **kw: BetaGammaELBO(beta=0.5, **kw), id="BetaGamma"),
]


@config_enumerate
def gmm(x):
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(WEIGHTS))
        pyro.sample("x", dist.Normal(LOCS[c], 1.0), obs=x)
    return c


def no_guide(*args):
    pass


def gmm_posterior(x):
    logits = WEIGHTS.log() + dist.Normal(LOCS, 1.0).log_prob(x[:, None])
    return logits.softmax(-1)


@pytest.mark.parametrize("make_elbo", ELBOS)
def test_gmm_marginals_equal_trace_enum_and_bayes_rule_at_any_weights(make_elbo):
    expected = TraceEnum_ELBO(max_plate_nesting=1).compute_marginals(gmm, no_guide, X)
    actual = make_elbo(max_plate_nesting=1).compute_marginals(gmm, no_guide, X)
    assert list(actual) == ["c"]
    assert type(actual["c"]) is type(expected["c"])
    assert torch.equal(actual["c"].probs, expected["c"].probs)
    torch.testing.assert_close(actual["c"].probs, gmm_posterior(X))


@config_enumerate
def gmm_with_global_locs(x):
    locs = pyro.sample("locs", dist.Normal(torch.zeros(2), 3.0).to_event(1))
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(WEIGHTS))
        pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)


def locs_guide(x):
    pyro.sample("locs", dist.Normal(LOCS, 0.5).to_event(1))


def test_marginals_given_a_guide_draw_equal_trace_enum_under_the_same_seed():
    pyro.set_rng_seed(3)
    expected = TraceEnum_ELBO(max_plate_nesting=1).compute_marginals(
        gmm_with_global_locs, locs_guide, X
    )
    pyro.set_rng_seed(3)
    actual = WeightedELBO(weights={"complexity": 0.1}, max_plate_nesting=1).compute_marginals(
        gmm_with_global_locs, locs_guide, X
    )
    assert torch.equal(actual["c"].probs, expected["c"].probs)
    # and the draw matters: another seed gives other marginals
    pyro.set_rng_seed(4)
    other = WeightedELBO(max_plate_nesting=1).compute_marginals(
        gmm_with_global_locs, locs_guide, X
    )
    assert not torch.allclose(other["c"].probs, expected["c"].probs)


# ---- an HMM ----------------------------------------------------------------------

TRANSITION = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
HMM_LOCS = torch.tensor([-1.0, 1.5])


def hmm(data):
    state, states = 0, []
    for t in pyro.markov(range(len(data))):
        state = pyro.sample(f"state_{t}", dist.Categorical(TRANSITION[state]),
                            infer={"enumerate": "parallel"})
        pyro.sample(f"obs_{t}", dist.Normal(Vindex(HMM_LOCS)[state], 1.0), obs=data[t])
        states.append(state)
    return states


def hmm_brute_force(data):
    """Posterior of every state sequence, by listing all 2**T of them."""
    paths = torch.tensor(list(itertools.product([0, 1], repeat=len(data))))
    log_joint = torch.zeros(len(paths))
    for i, path in enumerate(paths):
        previous = 0
        for t, state in enumerate(path.tolist()):
            log_joint[i] += TRANSITION[previous, state].log()
            log_joint[i] += dist.Normal(HMM_LOCS[state], 1.0).log_prob(data[t])
            previous = state
    return paths, log_joint.softmax(0)


@pytest.mark.parametrize("make_elbo", ELBOS)
def test_hmm_marginals_equal_trace_enum_and_brute_force(make_elbo):
    expected = TraceEnum_ELBO(max_plate_nesting=0).compute_marginals(hmm, no_guide, X)
    actual = make_elbo(max_plate_nesting=0).compute_marginals(hmm, no_guide, X)
    assert list(actual) == list(expected) == [f"state_{t}" for t in range(len(X))]
    paths, posterior = hmm_brute_force(X)
    for t, name in enumerate(actual):
        assert torch.equal(actual[name].probs, expected[name].probs)
        exact = torch.stack([posterior[paths[:, t] == k].sum() for k in (0, 1)])
        torch.testing.assert_close(actual[name].probs, exact)


@pytest.mark.parametrize("make_elbo", ELBOS)
def test_hmm_sample_posterior_is_trace_enums_draw_under_the_same_seed(make_elbo):
    draws = []
    for elbo in (TraceEnum_ELBO(max_plate_nesting=0), make_elbo(max_plate_nesting=0)):
        pyro.set_rng_seed(7)
        draws.append(torch.stack([torch.stack(elbo.sample_posterior(hmm, no_guide, X))
                                  for _ in range(20)]))
    assert torch.equal(draws[0], draws[1])


def test_hmm_sample_posterior_follows_the_joint_posterior():
    paths, posterior = hmm_brute_force(X[:3])
    elbo = WeightedELBO(weights={"distortion": 2.0}, max_plate_nesting=0)
    draws = torch.stack([torch.stack(elbo.sample_posterior(hmm, no_guide, X[:3]))
                         for _ in range(300)])
    codes = draws @ torch.tensor([4, 2, 1])
    frequencies = torch.bincount(codes, minlength=8).float() / len(draws)
    exact = posterior[torch.argsort(paths @ torch.tensor([4, 2, 1]))]
    # 300 draws: each frequency within 4 standard errors of its probability
    assert (frequencies - exact).abs().max() < 4 * (0.25 / len(draws)) ** 0.5


def test_plate_nesting_is_guessed_as_pyro_guesses_it():
    elbo = WeightedELBO()
    marginals = elbo.compute_marginals(gmm, no_guide, X)
    assert elbo.max_plate_nesting == 1
    torch.testing.assert_close(marginals["c"].probs, gmm_posterior(X))


def test_restrictions_are_pyros():
    with pytest.raises(NotImplementedError, match="multiple particles"):
        WeightedELBO(num_particles=2, max_plate_nesting=1).compute_marginals(gmm, no_guide, X)
    with pytest.raises(NotImplementedError, match="multiple particles"):
        WeightedELBO(num_particles=2, max_plate_nesting=1).sample_posterior(gmm, no_guide, X)

    def model():
        pyro.sample("b", dist.Bernoulli(0.3))

    @config_enumerate
    def guide():
        pyro.sample("b", dist.Bernoulli(0.6))

    with pytest.raises(NotImplementedError, match="guide enumeration"):
        WeightedELBO(max_plate_nesting=0).compute_marginals(model, guide)


# ---- infer_discrete on a model trained with pyro_kl ---------------------------------


@config_enumerate
def trainable_gmm(x):
    weights = pyro.param("mix", torch.tensor([0.5, 0.5]), constraint=dist.constraints.simplex)
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    locs = pyro.param("locs", torch.tensor([-0.5, 0.5]))
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[c], scale), obs=x)
    return c


def test_infer_discrete_on_a_model_trained_with_pyro_kl():
    data = torch.cat([torch.randn(40) * 0.5 - 3.0, torch.randn(60) * 0.5 + 2.0])
    guide = AutoDelta(poutine.block(trainable_gmm, expose=["scale"]))
    elbo = RateDistortionELBO(beta=0.5, max_plate_nesting=1)
    svi = SVI(trainable_gmm, guide, Adam({"lr": 0.1}), elbo)
    for _ in range(150):
        svi.step(data)
    locs = pyro.param("locs").detach()
    torch.testing.assert_close(locs, torch.tensor([-3.0, 2.0]), atol=0.3, rtol=0.0)

    guide_trace = poutine.trace(guide).get_trace(data)
    trained = poutine.replay(trainable_gmm, trace=guide_trace)
    map_c = infer_discrete(trained, first_available_dim=-2, temperature=0)(data)
    assert map_c.tolist() == [0] * 40 + [1] * 60
    # the MAP assignment is the argmax of the marginals (independent data points)
    marginals = elbo.compute_marginals(trainable_gmm, guide, data)
    assert torch.equal(map_c, marginals["c"].probs.argmax(-1))
    # a posterior draw is Pyro's own under the same seed
    pyro.set_rng_seed(11)
    drawn = infer_discrete(trained, first_available_dim=-2, temperature=1)(data)
    pyro.set_rng_seed(11)
    assert torch.equal(drawn, TraceEnum_ELBO(max_plate_nesting=1).sample_posterior(
        trainable_gmm, guide, data))
