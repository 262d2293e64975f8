"""Fails loudly when a Pyro upgrade moves one of the private names pyro_kl relies on."""

import inspect

import pyro
import pyro.distributions as dist
import pyro.infer.inspect
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.elbo import ELBO

from pyro_kl import _pyro_compat as compat


@pytest.mark.parametrize("seam", compat.ELBO_SEAMS)
def test_elbo_seams_exist_with_their_signatures(seam):
    for cls in (ELBO, Trace_ELBO):
        method = getattr(cls, seam, None)
        assert callable(method), f"pyro.infer.{cls.__name__}.{seam} moved"
        parameters = list(inspect.signature(method).parameters)
        assert parameters == ["self", "model", "guide", "args", "kwargs"], (seam, parameters)


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.deterministic("twice_z", 2 * z)
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(0.0, 2.0))


def test_particle_plate_name_and_helpers():
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True)
    x = torch.zeros(4)
    compat.guess_max_plate_nesting(elbo, model, guide, (x,), {})
    assert elbo.max_plate_nesting == 2  # the data plate and the particle plate
    vectorized = compat.vectorized_num_particles(elbo, guide)
    trace = poutine.trace(vectorized).get_trace(x)
    frames = {f.name for f in trace.nodes["z"]["cond_indep_stack"]}
    assert frames == {"data", compat.PARTICLE_PLATE}
    assert compat.is_particle_plate(compat.PARTICLE_PLATE) and not compat.is_particle_plate("data")


def test_inspect_helpers():
    trace = poutine.trace(model).get_trace(torch.zeros(4))
    assert compat.site_is_deterministic(trace.nodes["twice_z"])
    assert not compat.site_is_deterministic(trace.nodes["x"])
    relations = compat.get_model_relations(model, (torch.zeros(4),), include_deterministic=True)
    assert relations["sample_sample"]["x"] == ["z"]
    spec = compat.generate_graph_specification(relations)
    assert {"plate_groups", "plate_data", "node_data", "edge_list"} <= set(spec)


def test_clone_mark_is_what_inspect_appends():
    source = inspect.getsource(pyro.infer.inspect)
    assert f'"{compat.CLONE_MARK}"' in source
    assert compat.plate_label("data" + compat.CLONE_MARK) == "data"
