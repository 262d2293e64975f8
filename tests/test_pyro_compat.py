"""Fails loudly when a Pyro upgrade moves one of the private names pyro_kl relies on."""

import inspect

import pyro
import pyro.distributions as dist
import pyro.infer.inspect
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, config_enumerate
from pyro.infer.elbo import ELBO
from pyro.infer.enum import get_importance_trace

from pyro_kl import _pyro_compat as compat
from pyro_kl import tracing


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
    elbo._guess_max_plate_nesting(model, guide, (x,), {})  # Pyro's own guess
    assert elbo.max_plate_nesting == 2  # the data plate and the particle plate
    raw = tracing.trace_once(model, guide, (x,))
    assert tracing.guessed_plate_nesting(*raw, particle_plate=True) == elbo.max_plate_nesting
    vectorized = compat.vectorized_num_particles(elbo, guide)
    trace = poutine.trace(vectorized).get_trace(x)
    frames = {f.name for f in trace.nodes["z"]["cond_indep_stack"]}
    assert frames == {"data", compat.PARTICLE_PLATE}
    assert compat.is_particle_plate(compat.PARTICLE_PLATE) and not compat.is_particle_plate("data")


@pytest.mark.parametrize("validation", [True, False])
def test_finish_importance_pair_is_pyros_importance_trace(validation):
    x = torch.randn(4)
    with pyro.validation_enabled(validation):
        pyro.set_rng_seed(3)
        expected = get_importance_trace("flat", 1, model, guide, (x,), {})
        pyro.set_rng_seed(3)
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
        finished = compat.finish_importance_pair(model_trace, guide_trace, 1)
    for ours, theirs in zip(finished, expected):
        assert list(ours.nodes) == list(theirs.nodes)
        for name, site in theirs.nodes.items():
            if site["type"] == "sample":
                assert torch.equal(ours.nodes[name]["value"], site["value"])
                assert torch.equal(ours.nodes[name]["log_prob"], site["log_prob"])


def test_enumeration_marks_and_versions():
    @config_enumerate
    def enumerated():
        pyro.sample("c", dist.Bernoulli(0.3))

    trace = poutine.trace(poutine.enum(enumerated, first_available_dim=-1)).get_trace()
    assert compat.is_enumerated_by_pyro(trace.nodes["c"])
    assert not compat.is_enumerated_by_pyro(poutine.trace(enumerated).get_trace().nodes["c"])
    w = torch.zeros(2)
    before = compat.tensor_version(w)
    w.add_(1.0)
    assert compat.tensor_version(w) == before + 1


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


def test_dim_to_symbol_is_what_pack_tensors_packed_with():
    @config_enumerate
    def enumerated():
        with pyro.plate("data", 3):
            pyro.sample("c", dist.Bernoulli(0.3))

    trace = poutine.trace(poutine.enum(enumerated, first_available_dim=-2)).get_trace()
    trace.compute_log_prob()
    trace.pack_tensors()
    site = trace.nodes["c"]
    mapping = compat.dim_to_symbol(site)
    assert sorted(mapping) == [-2, -1]
    assert set(compat.packed_dims(site["packed"]["log_prob"])) == set(mapping.values())


def test_track_non_reparam_marks_non_reparameterised_values():
    from pyro.ops.provenance import get_provenance

    def tracked():
        a = pyro.sample("a", dist.Bernoulli(0.5))
        b = pyro.sample("b", dist.Normal(a, 1.0))  # reparameterised: not a source
        pyro.sample("c", dist.Normal(b, 1.0), obs=torch.tensor(0.0))

    with compat.TrackNonReparam():
        trace = poutine.trace(tracked).get_trace()
    trace.compute_log_prob()
    assert get_provenance(trace.nodes["a"]["value"]) == frozenset({"a"})
    assert get_provenance(trace.nodes["c"]["log_prob_sum"]) == frozenset({"a"})


def test_unpack_latent_splits_an_autoguides_vector_by_site():
    from pyro.infer.autoguide import AutoDiagonalNormal

    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    guide = AutoDiagonalNormal(model)
    guide()
    parts = {site["name"]: part for site, part in compat.unpack_latent(guide, torch.arange(4.0))}
    assert parts["a"].tolist() == 0.0 and parts["b"].tolist() == [1.0, 2.0, 3.0]
