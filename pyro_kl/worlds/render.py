"""``render_worlds``: the picture of both worlds of a (model, guide) pair."""

from typing import Callable, Optional

from .graph import spec_to_digraph, write
from .spec import worlds_spec


def render_worlds(
    model: Callable,
    guide: Callable,
    model_args: tuple = (),
    model_kwargs: Optional[dict] = None,
    *,
    elbo=None,
    filename: Optional[str] = None,
    render_distributions: bool = False,
    render_params: bool = False,
):
    """Draw the real world P (data + guide) beside the dream world Q (model).

    The objective ``I[P;Q] = KL(real world P || dream world Q)`` compares two
    joint distributions: on the left, the *real world* — the data as nature
    gives it (shaded) and the latents the guide draws from it, with an edge
    from each datum to every guide latent whose density reads it (found by
    Pyro's provenance tracking); on the right, the *dream world* — the
    model's graph, as :func:`pyro.render_model` draws it. Plates are drawn as
    boxes, each variable sits at the same height in both worlds, and nodes are
    coloured by the term they feed. Under the panels: the derived objective
    with the ELBO's weights and one line per term with its sites.

    :param callable model: the model, the dream world Q.
    :param callable guide: the guide; with the data, the real world P.
    :param tuple model_args: positional arguments of model and guide.
    :param dict model_kwargs: keyword arguments of model and guide.
    :param elbo: a :class:`~pyro_kl.WeightedELBO` (or preset) whose weights
        (schedules at its current step) and ``terms`` map are used; ``None``
        means the default rule with unit weights.
    :param str filename: if given, write the picture there, in the format
        its suffix names (``.svg``, ``.png``, ``.pdf``, ``.dot``, ...).
    :param bool render_distributions: add each site's distribution to its label.
    :param bool render_params: draw ``pyro.param`` sites and their edges.
    :returns: the picture; its ``.source`` is the DOT text, available even
        without graphviz's ``dot`` program.
    :rtype: graphviz.Digraph
    :raises RuntimeError: if ``filename`` is given and ``dot`` is not installed.
    :raises ValueError: if ``filename``'s suffix is not a graphviz format.

    Example::

        elbo = RateDistortionELBO(beta=0.37)
        render_worlds(vae.model, vae.guide, (x,), elbo=elbo, filename="vae_worlds.svg")
    """
    spec = worlds_spec(
        model, guide, model_args, model_kwargs, elbo=elbo, render_params=render_params
    )
    graph = spec_to_digraph(spec, render_distributions=render_distributions)
    if filename is not None:
        write(graph, filename)
    return graph
