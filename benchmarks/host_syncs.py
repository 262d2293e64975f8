"""Host synchronisations per step: pyro_kl's ELBOs against Pyro's.

On a GPU, every ``Tensor.item()``, ``.tolist()``, ``float(t)``, ``int(t)`` or
``bool(t)`` on a device tensor waits for the device. This script counts those
calls during one ``loss_and_grads`` step of each ELBO on the same model and
guide, and writes ``benchmarks/results/host_syncs.json``. pyro_kl keeps the
terms as tensors and reads back only the loss that ``loss_and_grads`` returns
(``last_terms`` are read when read); the same code runs on every device.

Run ``python benchmarks/host_syncs.py``.
"""

import contextlib
import json
import os
import sys
from typing import Callable, Dict

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO, config_enumerate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from models import VAEGuide, VAEModel, digits  # noqa: E402

from pyro_kl import RateDistortionELBO, WeightedELBO  # noqa: E402

SYNCING = ("item", "tolist", "__float__", "__int__", "__bool__")


@contextlib.contextmanager
def counting_syncs():
    """Counts the calls to tensor methods that wait for the device."""
    counts = {"syncs": 0}
    originals = {name: getattr(torch.Tensor, name) for name in SYNCING}

    def counted(original):
        def method(self, *args, **kwargs):
            counts["syncs"] += 1
            return original(self, *args, **kwargs)

        return method

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(original))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def syncs_per_step(make_elbo: Callable, model, guide, *args) -> int:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    elbo = make_elbo()
    elbo.loss_and_grads(model, guide, *args)  # first call: setup, guesses
    with counting_syncs() as counts:
        elbo.loss_and_grads(model, guide, *args)
    return counts["syncs"]


@config_enumerate
def mixture(x):
    weights = pyro.param("weights", torch.ones(3) / 3, constraint=dist.constraints.simplex)
    locs = pyro.param("locs", torch.tensor([-2.0, 0.0, 2.0]))
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)


def main() -> Dict[str, int]:
    x = digits(128, binary=True)
    model, guide = VAEModel("model"), VAEGuide("guide")
    data = torch.randn(200)
    cases = {
        "vae: Trace_ELBO": (Trace_ELBO, model, guide, x),
        "vae: RateDistortionELBO": (lambda: RateDistortionELBO(beta=0.5), model, guide, x),
        "vae: TraceMeanField_ELBO": (TraceMeanField_ELBO, model, guide, x),
        "vae: RateDistortionELBO(analytic_kl)": (
            lambda: RateDistortionELBO(beta=0.5, analytic_kl=True), model, guide, x
        ),
        "mixture: TraceEnum_ELBO": (
            lambda: TraceEnum_ELBO(max_plate_nesting=1), mixture, lambda x: None, data
        ),
        "mixture: WeightedELBO": (
            lambda: WeightedELBO(max_plate_nesting=1), mixture, lambda x: None, data
        ),
    }
    results = {name: syncs_per_step(*case) for name, case in cases.items()}
    for name, count in results.items():
        print(f"{name:55s} {count:3d} host syncs per step")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "host_syncs.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print("written:", out)
    return results


if __name__ == "__main__":
    main()
