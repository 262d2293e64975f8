"""Both worlds of a (model, guide) pair: the objective they derive, and their picture.

The *real world P* is the data plus the guide; the *dream world Q* is the
model; the objective is ``I[P;Q] = KL(P || Q)``. Data flows one way:
(model, guide, args) -> traces -> a plain spec dict
(:func:`~pyro_kl.worlds.spec.worlds_spec`) -> a :class:`graphviz.Digraph`
(:func:`render_worlds`).
"""

from .objective import Objective, derive_objective
from .render import render_worlds
from .spec import worlds_spec

__all__ = ["Objective", "derive_objective", "render_worlds", "worlds_spec"]
