"""CompiledSVI: the same steps as SVI under the same seed, no recompiles, a warned fallback."""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from torch._dynamo.utils import counters

from pyro_kl import GECO, LinearWarmup, RateDistortionELBO, Target, WeightedELBO
from pyro_kl.compile import CompiledSVI, CompileFallbackWarning

from . import model_zoo

FAST = "aot_eager"  # the traced graph through AOT autograd, without inductor's C++ build


def _train(pair, make_elbo, *, compiled, steps=6, backend=FAST, seed=3):
    """Parameters, losses and last terms after ``steps`` steps of SGD (SGD, so that
    equal parameters mean equal gradients at every step)."""
    pyro.clear_param_store()
    model, guide, args = pair()
    elbo = make_elbo()
    optim = pyro.optim.SGD({"lr": 1e-3})
    svi = (CompiledSVI(model, guide, optim, elbo, backend=backend) if compiled
           else SVI(model, guide, optim, elbo))
    pyro.set_rng_seed(seed)
    losses, terms, weights = [], [], []
    for _ in range(steps):
        losses.append(float(svi.step(*args)))
        terms.append(dict(elbo.last_terms))
        weights.append(dict(elbo.last_weights))
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    return losses, terms, weights, params, elbo, svi


def _assert_same(eager, compiled, rtol=1e-5):
    for a, b in zip(eager[0], compiled[0]):
        assert b == pytest.approx(a, rel=rtol, abs=1e-4)
    for a, b in zip(eager[1], compiled[1]):
        assert a.keys() == b.keys()
        for term in a:
            assert b[term] == pytest.approx(a[term], rel=rtol, abs=1e-4)
    for a, b in zip(eager[2], compiled[2]):
        assert a.keys() == b.keys()
        assert all(b[t] == pytest.approx(a[t], rel=1e-6) for t in a)
    assert eager[3].keys() == compiled[3].keys()
    for name in eager[3]:
        torch.testing.assert_close(compiled[3][name], eager[3][name], rtol=1e-5, atol=1e-6)


WEIGHTINGS = {
    "beta": lambda: RateDistortionELBO(0.5),
    "schedule": lambda: RateDistortionELBO(LinearWarmup(1.0, steps=4, start=0.1)),
    "geco": lambda: WeightedELBO(weights={"distortion": GECO(5.0, step_size=0.05)}),
    "target": lambda: RateDistortionELBO(Target(0.5)),
    "site_terms": lambda: WeightedELBO(weights={"classification": 2.0, "rate": 0.3},
                                       site_terms={"x": "classification"}),
}


@pytest.mark.parametrize("weighting", sorted(WEIGHTINGS))
@pytest.mark.parametrize("pair", ["global_local", "vae", "nonreparameterized", "subsampled"])
def test_same_steps_as_svi(pair, weighting):
    pair = getattr(model_zoo, pair)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a weight on a term a model does not feed
        eager = _train(pair, WEIGHTINGS[weighting], compiled=False)
        compiled = _train(pair, WEIGHTINGS[weighting], compiled=True)
    _assert_same(eager, compiled)
    assert eager[4].step == compiled[4].step == 6
    (traced,) = compiled[5]._traced.values()
    assert traced is not None
    assert (traced.full is None) == (weighting in ("geco", "target"))  # one graph without


def test_controller_state_matches():
    eager = _train(model_zoo.vae, WEIGHTINGS["geco"], compiled=False)
    compiled = _train(model_zoo.vae, WEIGHTINGS["geco"], compiled=True)
    a = eager[4].state_dict()["controllers"]["distortion"]
    b = compiled[4].state_dict()["controllers"]["distortion"]
    assert b["multiplier"] == pytest.approx(a["multiplier"], rel=1e-6)
    assert b["multiplier"] != 1.0  # the controller moved


@pytest.mark.filterwarnings(  # raised inside torch when inductor is first imported
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)
def test_inductor_same_steps_as_svi():
    """Inductor draws its random numbers with ATen's generator (fallback_random)."""
    eager = _train(model_zoo.vae, WEIGHTINGS["schedule"], compiled=False)
    compiled = _train(model_zoo.vae, WEIGHTINGS["schedule"], compiled=True, backend="inductor")
    _assert_same(eager, compiled)


@pytest.mark.parametrize("controller", [False, True], ids=["one graph", "forward+autograd"])
def test_no_recompiles_after_warm_up(controller):
    model, guide, (x,) = model_zoo.vae()
    weights = {"rate": LinearWarmup(1.0, steps=10, start=0.2)}
    if controller:  # a controller's weight needs the step's terms: forward graph + autograd
        weights["distortion"] = GECO(1.0, step_size=0.1)
    elbo = WeightedELBO(weights=weights)
    svi = CompiledSVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), elbo, backend=FAST)
    for _ in range(3):
        svi.step(x)
    graphs, frames = counters["stats"]["unique_graphs"], counters["stats"]["calls_captured"]
    weights = set()
    for _ in range(20):
        svi.step(x)
        weights.add(elbo.last_weights["rate"])
    assert counters["stats"]["unique_graphs"] == graphs
    assert counters["stats"]["calls_captured"] == frames
    assert len(weights) > 5  # the schedule moved without a recompile
    (traced,) = svi._traced.values()
    assert (traced.full is None) == controller


def test_no_graph_breaks():
    model, guide, (x,) = model_zoo.global_local()
    svi = CompiledSVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), RateDistortionELBO(0.5),
                      compile=False)
    svi.step(x)
    (traced,) = svi._traced.values()
    store = pyro.get_param_store()
    unconstrained = dict(store.named_parameters())
    params = [unconstrained[n] for n in traced.param_names]
    explanation = torch._dynamo.explain(traced.graph)(params, [x])
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1
    with torch.no_grad():
        explanation = torch._dynamo.explain(traced.full)(params, [x], torch.ones(3))
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1


def test_new_shape_retraces_with_a_warning():
    model, guide, (x,) = model_zoo.vae()
    elbo = RateDistortionELBO(0.5)
    svi = CompiledSVI(model, guide, pyro.optim.SGD({"lr": 1e-3}), elbo, backend=FAST)
    svi.step(x)
    svi.step(x)
    with pytest.warns(CompileFallbackWarning, match="structure changed"):
        svi.step(x[:5])
    svi.step(x[:5])
    assert len(svi._traced) == 2
    pyro.set_rng_seed(7)
    eager = elbo.loss(model, guide, x[:5])  # before the step moves the parameters
    pyro.set_rng_seed(7)
    compiled = float(svi.step(x[:5]))
    assert compiled == pytest.approx(eager, rel=1e-5)


def test_too_many_structures_fall_back():
    model, guide, (x,) = model_zoo.vae()
    svi = CompiledSVI(model, guide, pyro.optim.SGD({"lr": 1e-3}), RateDistortionELBO(0.5),
                      backend=FAST, max_structures=1)
    svi.step(x)
    with pytest.warns(CompileFallbackWarning, match="max_structures"):
        svi.step(x[:4])
    svi.step(x[:3])  # eager from now on, silently
    assert len(svi._traced) == 1


def _data_dependent():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        if mu > 0:  # the structure depends on a sampled value
            pyro.sample("extra", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        m = pyro.param("m", torch.tensor(0.1))
        mu = pyro.sample("mu", dist.Normal(m, 1.0))
        if mu > 0:
            pyro.sample("extra", dist.Normal(0.0, 1.0))

    return model, guide, (model_zoo.DATA,)


def test_data_dependent_structure_falls_back_with_a_warning():
    with pytest.warns(CompileFallbackWarning, match="reads a tensor's value"):
        compiled = _train(_data_dependent, lambda: RateDistortionELBO(0.5), compiled=True)
    eager = _train(_data_dependent, lambda: RateDistortionELBO(0.5), compiled=False)
    _assert_same(eager, compiled)
    assert list(compiled[5]._traced.values()) == [None]


def test_non_finite_loss_names_the_site():
    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0), obs=x)

    def guide(x):
        pass

    x = model_zoo.DATA.clone()
    elbo = WeightedELBO(weights={"distortion": 0.5})
    svi = CompiledSVI(model, guide, pyro.optim.SGD({"lr": 1e-3}), elbo, backend=FAST)
    svi.step(x)
    svi.step(x)
    with pytest.raises(ValueError, match="'x'"):
        svi.step(torch.full_like(x, float("inf")))  # same structure, an infinite datum
    assert pyro.get_param_store()["loc"].grad is None  # nothing was backpropagated


def test_lazy_last_terms_off_validation():
    model, guide, (x,) = model_zoo.vae()
    elbo = RateDistortionELBO(0.5)
    svi = CompiledSVI(model, guide, pyro.optim.SGD({"lr": 1e-3}), elbo, backend=FAST)
    with pyro.validation_enabled(False):
        svi.step(x)
        loss = svi.step(x)
    assert sorted(elbo.last_terms) == ["distortion", "rate"]
    total = sum(elbo.last_weights[t] * v for t, v in elbo.last_terms.items())
    assert float(loss) == pytest.approx(total, rel=1e-5)


def test_torch_optimizer():
    model, guide, (x,) = model_zoo.vae()
    with pyro.poutine.trace(param_only=True) as capture:
        model(x), guide(x)
    params = [site["value"].unconstrained() for site in capture.trace.nodes.values()]
    before = [p.detach().clone() for p in params]
    svi = CompiledSVI(model, guide, torch.optim.Adam(params, lr=1e-2), RateDistortionELBO(0.5),
                      backend=FAST)
    for _ in range(3):
        svi.step(x)
    assert all(not torch.equal(a, p) for a, p in zip(before, params))
    assert all(p.grad is None for p in params)


def test_bad_arguments():
    model, guide, _ = model_zoo.vae()
    with pytest.raises(TypeError, match="WeightedELBO"):
        CompiledSVI(model, guide, pyro.optim.SGD({"lr": 1e-3}), pyro.infer.Trace_ELBO())
    with pytest.raises(TypeError, match="optim"):
        CompiledSVI(model, guide, object(), RateDistortionELBO(0.5))
    with pytest.raises(ValueError, match="mode"):
        CompiledSVI(model, guide, pyro.optim.SGD({"lr": 1e-3}), RateDistortionELBO(0.5),
                    mode="fastest")


def test_docstring_example_with_a_recipe():
    from pyro_kl.recipes import VIB

    vib = VIB()
    x, y = vib.make_data(seed=0)
    elbo = RateDistortionELBO(beta=0.5)
    svi = CompiledSVI(vib.model, vib.guide, pyro.optim.Adam({"lr": 1e-3}), elbo, backend=FAST)
    losses = [float(svi.step(x, y)) for _ in range(4)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert set(elbo.last_terms) == {"distortion", "rate"}
    (traced,) = svi._traced.values()
    assert traced is not None and traced.full is not None
