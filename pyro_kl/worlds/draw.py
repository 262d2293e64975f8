"""``render_worlds``: the picture of both worlds of a (model, guide) pair."""

from typing import Callable, Optional

from .dot import spec_to_digraph, write
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
    render_deterministic: bool = False,
):
    """Draw the real world P (data + guide) beside the dream world Q (model).

    The objective ``I[P;Q] = KL(real world P || dream world Q)`` compares two
    joint distributions: on the left, the *real world* — the data as nature
    gives it (shaded) and the latents the guide draws from it, with an edge
    from each datum to every guide latent whose density reads it (found by
    Pyro's provenance tracking), and nature's own arrows: its conditional
    between data (inputs → labels, ``x → y``, bold) and the data set into a
    global posterior fit to it (``D → θ``, dashed); on the right, the *dream
    world* — the model's graph, as :func:`pyro.render_model` draws it. Plates
    are drawn as boxes, each variable sits at the same height in both worlds,
    nodes are coloured by the term they feed, enumerated sites (summed out
    exactly) have a double border and deterministic sites a dashed one. Boolean masks and other
    arguments no site reads are not drawn. Each variable is drawn once, by
    its own name: an input the model observes in pieces (``x[labelled]``,
    ``xs[t]``) as those data sites (:mod:`~pyro_kl.worlds.parts`), an input
    no site holds by its parameter's name in the guide's or the model's
    signature, an autoguide's auxiliary latent folded into the sites it
    produces (:mod:`~pyro_kl.worlds.folding`); the variables at one height
    keep the order the model draws them in. Under the panels: the derived
    objective with the ELBO's weights (``I[P;Q] = D + R + const`` at unit
    weights, else the weighted objective ``L = D + 0.37·R`` with a line
    relating it to ``I[P;Q]``), and one line per term with its sites.

    :param callable model: the model, the dream world Q.
    :param callable guide: the guide; with the data, the real world P.
    :param tuple model_args: positional arguments of model and guide.
    :param dict model_kwargs: keyword arguments of model and guide.
    :param elbo: a :class:`~pyro_kl.WeightedELBO` (or preset) whose weights
        (schedules at its current step, described with their value) and
        ``site_terms`` map are used; ``None`` or a plain Pyro ELBO means the
        default rule with unit weights.
    :param str filename: if given, write the picture there, in the format
        its suffix names (``.svg``, ``.png``, ``.pdf``, ...; ``.gv`` and
        ``.dot`` write the DOT source, which needs no ``dot`` program). It is
        written atomically (a temporary beside it, renamed when complete): an
        existing file is left as it was if ``dot`` fails. Site and plate
        names are drawn literally (``<z>``, ``a\\lb``), never read as HTML
        labels or DOT escapes.
    :param bool render_distributions: as in :func:`pyro.render_model`: add
        each site's distribution to its label.
    :param bool render_params: as in :func:`pyro.render_model`: draw
        ``pyro.param`` sites and their edges.
    :param bool render_deterministic: as in :func:`pyro.render_model`: draw
        ``pyro.deterministic`` sites. Those recording nature's inputs
        (``x = pyro.deterministic("x", x)``) are data, drawn either way.
    :returns: the picture; its ``.source`` is the DOT text, available even
        without graphviz's ``dot`` program.
    :rtype: graphviz.Digraph
    :raises RuntimeError: if ``filename`` needs ``dot`` and it is not
        installed, or ``dot`` fails (its message is included).
    :raises ValueError: if ``filename``'s suffix is not a graphviz format.

    Example::

        elbo = RateDistortionELBO(beta=0.37)
        graph = render_worlds(vae.model, vae.guide, (x,), elbo=elbo, filename="vae_worlds.svg")
        "L = D + 0.37·R" in graph.source  # True
    """
    spec = worlds_spec(
        model,
        guide,
        model_args,
        model_kwargs,
        elbo=elbo,
        render_params=render_params,
        render_deterministic=render_deterministic,
    )
    graph = spec_to_digraph(spec, render_distributions=render_distributions)
    if filename is not None:
        write(graph, filename)
    return graph
