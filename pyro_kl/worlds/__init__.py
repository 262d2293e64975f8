"""Both worlds of a (model, guide) pair, drawn side by side.

The *real world P* is the data plus the guide; the *dream world Q* is the
model; the objective is ``I[P;Q] = KL(P || Q)`` (:mod:`pyro_kl.objective`).
Data flows one way: (model, guide, args) -> traces and their objective
(:func:`~pyro_kl.objective.trace_pair`) -> who reads whom in each world
(:mod:`~pyro_kl.worlds.provenance`) -> one height per variable
(:mod:`~pyro_kl.worlds.layout`) -> a plain spec dict
(:func:`~pyro_kl.worlds.spec.worlds_spec`) -> a :class:`graphviz.Digraph` and
files (:mod:`~pyro_kl.worlds.dot`), all in one call by :func:`render_worlds`.
"""

from .dot import spec_to_digraph, write
from .draw import render_worlds
from .spec import worlds_spec

__all__ = ["render_worlds", "spec_to_digraph", "worlds_spec", "write"]
