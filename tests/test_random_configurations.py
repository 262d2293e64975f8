"""Twenty random programs, each drawn from a seed: at unit weights pyro_kl's
loss and gradients are Pyro's own (Trace_ELBO, TraceEnum_ELBO or
TraceGraph_ELBO under the same random seed), to float32 noise.

Each program picks its features at random: a global latent, a data plate
(full or subsampled), a mask on the observations, a local latent that is
reparameterised, score-function (non-reparameterised) or discrete, and when
discrete, enumerated in the model (summed out), enumerated in the guide, or
sampled; one, several or vectorised particles.
"""

import random
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.testing.fakes import NonreparameterizedNormal
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, config_enumerate

from pyro_kl import WeightedELBO

SEEDS = range(20)
DATA = torch.tensor([-1.5, -0.2, 0.4, 1.1, 2.0])


class Configuration(NamedTuple):
    global_latent: bool
    subsample: bool
    masked: bool
    local: str  # "reparameterised", "score", "discrete"
    enumerate: str  # "none", "model", "guide" (discrete locals only)
    particles: dict


LOCALS = [("reparameterised", "none"), ("score", "none"), ("discrete", "none"),
          ("discrete", "model"), ("discrete", "guide")]
PARTICLES = [{}, {"num_particles": 2}, {"num_particles": 3, "vectorize_particles": True}]


def configuration(seed: int) -> Configuration:
    """The local latent's kind cycles with the seed (every kind four times in
    twenty); the particles and the other features are drawn at random."""
    rng = random.Random(seed)
    local, enumerate = LOCALS[seed % len(LOCALS)]
    particles = rng.choice(PARTICLES)
    return Configuration(
        global_latent=rng.random() < 0.6, subsample=rng.random() < 0.4, masked=rng.random() < 0.4,
        local=local, enumerate=enumerate, particles=particles,
    )


def program(config: Configuration):
    mask = torch.tensor([True, False, True, True, False])

    def plate():
        return pyro.plate("data", len(DATA), subsample_size=3 if config.subsample else None, dim=-1)

    def model():
        shift = pyro.sample("mu", dist.Normal(0.0, 2.0)) if config.global_latent else 0.0
        with plate() as idx:
            if config.local == "discrete":
                c = pyro.sample("c", dist.Bernoulli(0.3), infer=_enumerated(config, "model"))
                loc = shift + 2.0 * c - 1.0
            else:
                loc = pyro.sample("z", dist.Normal(shift, 1.0))
            with pyro.poutine.mask(mask=mask[idx] if config.masked else True):
                pyro.sample("x", dist.Normal(loc, 0.7), obs=DATA[idx])

    def guide():
        if config.global_latent:
            m = pyro.param("m", torch.tensor(0.2))
            s = pyro.param("s", torch.tensor(0.8), constraint=dist.constraints.positive)
            pyro.sample("mu", dist.Normal(m, s))
        with plate() as idx:
            if config.local == "discrete" and config.enumerate != "model":
                a = pyro.param("a", torch.tensor(0.6))
                logits = pyro.param("logits", torch.zeros(len(DATA)))
                pyro.sample("c", dist.Bernoulli(logits=a * DATA[idx] + logits[idx]),
                            infer=_enumerated(config, "guide"))
            elif config.local != "discrete":
                a = pyro.param("a", torch.tensor(0.6))
                b = pyro.param("b", torch.tensor(0.9), constraint=dist.constraints.positive)
                family = NonreparameterizedNormal if config.local == "score" else dist.Normal
                pyro.sample("z", family(a * DATA[idx], b))

    return model, guide


def _enumerated(config: Configuration, side: str) -> dict:
    return {"enumerate": "parallel"} if config.enumerate == side else {}


def pyro_elbo(config: Configuration):
    """Pyro's ELBO for the program, and pyro_kl's options that match it."""
    if config.enumerate != "none":
        return TraceEnum_ELBO(max_plate_nesting=1, **config.particles), {"max_plate_nesting": 1}
    if config.local in ("score", "discrete"):
        return TraceGraph_ELBO(**config.particles), {"rao_blackwell": True}
    return Trace_ELBO(**config.particles), {}


def loss_and_grads(elbo, config: Configuration, seed: int):
    pyro.clear_param_store()
    model, guide = program(config)
    if config.enumerate == "model":
        model = config_enumerate(model)
    pyro.set_rng_seed(seed)
    loss = elbo.loss_and_grads(model, guide)
    grads = {name: param.grad for name, param in pyro.get_param_store().named_parameters()}
    assert all(grad is not None for grad in grads.values()), "every parameter is read"
    return loss, grads


@pytest.mark.parametrize("seed", SEEDS)
def test_a_random_program_gives_pyros_loss_and_gradients(seed):
    config = configuration(seed)
    expected_elbo, options = pyro_elbo(config)
    expected = loss_and_grads(expected_elbo, config, seed)
    actual = loss_and_grads(WeightedELBO(**options, **config.particles), config, seed)
    assert actual[0] == pytest.approx(expected[0], rel=1e-5, abs=1e-5), config
    assert actual[1].keys() == expected[1].keys()
    for name in expected[1]:
        torch.testing.assert_close(actual[1][name], expected[1][name], rtol=1e-4, atol=1e-5,
                                   msg=lambda m: f"{name} under {config}: {m}")
    if config.local == "score" and config.global_latent:
        # Trace_ELBO sums a local site's costs to its plates, as TraceGraph_ELBO does, but
        # keeps the global latent's cost upstream of it: the two estimators differ here
        plain = loss_and_grads(Trace_ELBO(**config.particles), config, seed)
        assert any(not torch.allclose(plain[1][n], expected[1][n]) for n in expected[1]), config


def test_the_configurations_cover_every_feature():
    configs = [configuration(seed) for seed in SEEDS]
    assert {c.local for c in configs} == {"reparameterised", "score", "discrete"}
    assert {c.enumerate for c in configs} == {"none", "model", "guide"}
    assert any(c.subsample for c in configs) and any(c.masked for c in configs)
    assert any(c.global_latent for c in configs) and not all(c.global_latent for c in configs)
    assert {len(c.particles) for c in configs} == {0, 1, 2}
