"""Every name of Pyro's that is not public API, in one place.

pyro_kl extends Pyro at its documented seams, but some of those seams are
private (underscored methods of :class:`~pyro.infer.ELBO`) or not exported
(inspect's helpers outside its ``__all__``, the names Pyro gives its own
plates). They are all imported or
spelled here, and ``tests/test_pyro_compat.py`` fails loudly when a Pyro
upgrade moves one of them.
"""

from pyro.infer.inspect import (  # not in pyro.infer.inspect.__all__
    generate_graph_specification,
    get_model_relations,
    site_is_deterministic,
)

PARTICLE_PLATE = "num_particles_vectorized"
"""Name of the plate Pyro's ELBOs add to vectorize particles."""

CLONE_MARK = "__CLONE"
"""What Pyro appends to a plate's name when it clones the plate
(``pyro.plate`` reused under another dim); the user's name comes before it."""

ELBO_SEAMS = ("_get_trace", "_get_traces")
"""The :class:`~pyro.infer.ELBO` methods :class:`~pyro_kl.WeightedELBO`
overrides: one (model, guide) trace pair, and the generator of a call's pairs
(both ``(self, model, guide, args, kwargs)``)."""


def guess_max_plate_nesting(elbo, model, guide, args: tuple, kwargs: dict) -> None:
    """Sets ``elbo.max_plate_nesting`` from one blocked run of the pair, as Pyro's ELBOs do."""
    elbo._guess_max_plate_nesting(model, guide, args, kwargs)


def vectorized_num_particles(elbo, fn):
    """``fn`` inside Pyro's outermost particle plate (``num_particles_vectorized``)."""
    return elbo._vectorized_num_particles(fn)


def plate_label(plate_name: str) -> str:
    """The user's name of a plate, without Pyro's clone suffix."""
    return plate_name.split(CLONE_MARK)[0]


def is_particle_plate(frame_name: str) -> bool:
    """Whether a plate frame is Pyro's particle plate, never a data plate."""
    return frame_name == PARTICLE_PLATE


__all__ = [
    "CLONE_MARK",
    "ELBO_SEAMS",
    "PARTICLE_PLATE",
    "generate_graph_specification",
    "get_model_relations",
    "guess_max_plate_nesting",
    "is_particle_plate",
    "plate_label",
    "site_is_deterministic",
    "vectorized_num_particles",
]
