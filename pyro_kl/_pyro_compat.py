"""Every name of Pyro's that is not public API, in one place.

pyro_kl extends Pyro at its documented seams, but some of those seams are
private (underscored methods of :class:`~pyro.infer.ELBO`) or not exported
(inspect's helpers outside its ``__all__``, the names Pyro gives its own
plates). They are all imported or
spelled here, and ``tests/test_pyro_compat.py`` fails loudly when a Pyro
upgrade moves one of them.
"""

import torch
from pyro.infer.inspect import (  # not in pyro.infer.inspect.__all__
    generate_graph_specification,
    get_model_relations,
    site_is_deterministic,
)
from pyro.infer.tracegraph_elbo import TrackNonReparam  # not in pyro.infer.__all__
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match, check_site_shape

PARTICLE_PLATE = "num_particles_vectorized"
"""Name of the plate Pyro's ELBOs add to vectorize particles."""

CLONE_MARK = "__CLONE"
"""What Pyro appends to a plate's name when it clones the plate
(``pyro.plate`` reused under another dim); the user's name comes before it."""

ELBO_SEAMS = ("_get_trace", "_get_traces")
"""The :class:`~pyro.infer.ELBO` methods :class:`~pyro_kl.WeightedELBO`
overrides: one (model, guide) trace pair, and the generator of a call's pairs
(both ``(self, model, guide, args, kwargs)``)."""


def vectorized_num_particles(elbo, fn):
    """``fn`` inside Pyro's outermost particle plate (``num_particles_vectorized``)."""
    return elbo._vectorized_num_particles(fn)


ENUMERATED_INFER_KEYS = ("_enumerate_dim", "_enum_total")
"""The ``infer`` keys Pyro's enumeration handlers write on the sites they enumerate
(parallel: the dim; sequential: the number of values)."""


def is_enumerated_by_pyro(site) -> bool:
    """Whether Pyro's enumeration handlers enumerated this site (not only configured it)."""
    infer = site["infer"]
    return infer.get("_enumerate_dim") is not None or "_enum_total" in infer


def dim_to_symbol(site) -> dict:
    """A packed trace's map from a site's tensor dims to their symbols
    (what :meth:`~pyro.poutine.Trace.pack_tensors` packed the site's tensors with)."""
    return site["infer"]["_dim_to_symbol"]


def unpack_latent(autoguide, latent: torch.Tensor):
    """An :class:`~pyro.infer.autoguide.AutoContinuous` guide's packed vector (or
    any tensor with its last dim laid out so) split by site: ``(site, part)``
    pairs, as the guide itself unpacks its latent."""
    return autoguide._unpack_latent(latent)


def packed_dims(tensor: torch.Tensor) -> str:
    """The dimension symbols of a packed tensor (:mod:`pyro.ops.packed`)."""
    return tensor._pyro_dims


def tensor_version(tensor: torch.Tensor) -> int:
    """A tensor's in-place modification counter (it changes at each optimizer update)."""
    return tensor._version


def finish_importance_pair(model_trace, guide_trace, max_plate_nesting: float):
    """What :func:`pyro.infer.enum.get_importance_trace` does after running the
    guide and the model: Pyro's checks under validation, subsample sites pruned,
    log-densities and score parts computed. Lets one plain pass serve as a
    particle. ``tests/test_pyro_compat.py`` checks it against Pyro's own.

    :returns: ``(model_trace, guide_trace)``.
    """
    if is_validation_enabled():
        check_model_guide_match(model_trace, guide_trace, max_plate_nesting)
    guide_trace = prune_subsample_sites(guide_trace)
    model_trace = prune_subsample_sites(model_trace)
    model_trace.compute_log_prob()
    guide_trace.compute_score_parts()
    if is_validation_enabled():
        for trace in (model_trace, guide_trace):
            for site in trace.nodes.values():
                if site["type"] == "sample":
                    check_site_shape(site, max_plate_nesting)
    return model_trace, guide_trace


def plate_label(plate_name: str) -> str:
    """The user's name of a plate, without Pyro's clone suffix."""
    return plate_name.split(CLONE_MARK)[0]


def is_particle_plate(frame_name: str) -> bool:
    """Whether a plate frame is Pyro's particle plate, never a data plate."""
    return frame_name == PARTICLE_PLATE


__all__ = [
    "CLONE_MARK",
    "ELBO_SEAMS",
    "ENUMERATED_INFER_KEYS",
    "PARTICLE_PLATE",
    "TrackNonReparam",
    "dim_to_symbol",
    "finish_importance_pair",
    "generate_graph_specification",
    "get_model_relations",
    "is_enumerated_by_pyro",
    "is_particle_plate",
    "packed_dims",
    "plate_label",
    "site_is_deterministic",
    "tensor_version",
    "unpack_latent",
    "vectorized_num_particles",
]
