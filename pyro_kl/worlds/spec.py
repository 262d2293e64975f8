"""Both worlds of a (model, guide) pair as plain data: the spec the renderer draws.

The *real world P* is the data (given by nature) plus the guide; the *dream
world Q* is the model. The spec lists, per world, the nodes (with their term,
colour, shading and plates), the edges, the plates, and the derived objective.
It is a dict of lists, dicts, strings, numbers and booleans only, so it can be
tested and serialised without graphviz. The relations come from
:mod:`~pyro_kl.worlds.provenance`, the heights from :mod:`~pyro_kl.worlds.layout`,
the objective from :mod:`pyro_kl.objective`.
"""

from typing import Callable, List, Mapping, Optional

from .._pyro_compat import generate_graph_specification, plate_label
from ..objective import data_entropy_of, objective_from, summed_out_sites, trace_pair
from .colors import term_colors
from .folding import folded_sites
from .layout import direction, shared_levels
from .provenance import FIT, NATURE, plates_of, world_relations

REAL = "real"
DREAM = "dream"
WORLD_LABELS = {REAL: "Real world P (data + guide)", DREAM: "Dream world Q (model)"}
"""How each world is named in every picture: in words, never by a letter alone."""

GUIDE = "guide"
"""Edge kind: a guide density reads its source."""
MODEL = "model"
"""Edge kind: a model density reads its source."""

NO_TERM_COLOR = "white"
"""Fill colour of nodes that feed no term (nature's inputs the model does not
observe, deterministic sites, parameters)."""


def node_id(world: str, name: str) -> str:
    """The graph id of site ``name`` in ``world``: one id per world, so the
    same site can appear in both."""
    return f"{world}/{name}"


def _outer_to_inner(plates: List[str], plate_data: Mapping[str, dict]) -> List[str]:
    def depth(plate):
        d, parent = 0, plate_data[plate]["parent"]
        while parent is not None:
            d, parent = d + 1, plate_data[parent]["parent"]
        return d

    return sorted(plates, key=depth)


def _world(
    world: str,
    relations: dict,
    render_params: bool,
    term_of: Callable[[str], Optional[str]],
    shaded: Callable[[str], bool],
    colors: Mapping[str, str],
    summed_out: Callable[[str], bool],
    natures: Callable[[str], bool] = lambda name: False,
) -> dict:
    graph = generate_graph_specification(relations, render_params=render_params)
    plate_data = graph["plate_data"]
    plates = plates_of(
        {plate: names for plate, names in graph["plate_groups"].items() if plate is not None}
    )
    nodes = []
    for name, data in graph["node_data"].items():
        is_param = data["distribution"] is None
        term = None if is_param else term_of(name)
        distribution = data["distribution"]
        from_nature = distribution == "Deterministic" and natures(name)
        if from_nature:  # a record of nature's datum: drawn from p(x), as in the essay
            distribution = f"p({name})"
        nodes.append(
            {
                "id": node_id(world, name),
                "name": name,
                "world": world,
                "kind": "param" if is_param else ("data" if shaded(name) else "variable"),
                "term": term,
                "color": colors.get(term, NO_TERM_COLOR),
                "shaded": False if is_param else shaded(name),
                "summed_out": not is_param and summed_out(name),
                "distribution": distribution,
                "from_nature": from_nature,
                "plates": _outer_to_inner(plates.get(name, []), plate_data),
            }
        )
    kind = GUIDE if world == REAL else MODEL
    edges = [
        {"source": node_id(world, s), "target": node_id(world, t), "world": world, "kind": kind}
        for s, t in graph["edge_list"]
        if s != t
    ]
    plates_spec = {
        plate: {
            "id": f"cluster_{world}_{plate}",
            "label": plate_label(plate),
            "parent": data["parent"],
        }
        for plate, data in plate_data.items()
    }
    return {"label": WORLD_LABELS[world], "nodes": nodes, "edges": edges, "plates": plates_spec}


def _name(node_or_edge_end: str) -> str:
    return node_or_edge_end.split("/", 1)[1]


def worlds_spec(
    model: Callable,
    guide: Callable,
    model_args: tuple = (),
    model_kwargs: Optional[dict] = None,
    *,
    elbo=None,
    render_params: bool = False,
    render_deterministic: bool = False,
) -> dict:
    """Both worlds of a (model, guide) pair as a plain dict, ready to draw.

    The real world P is the data plus the guide; the dream world Q is the
    model. The result has the keys

    - ``"worlds"``: ``{"real": world, "dream": world}``, each world a dict with
      ``"label"`` (its name in words), ``"nodes"``, ``"edges"`` and ``"plates"``;
    - a node: ``id`` (namespaced by world), ``name`` (the site), ``world``,
      ``kind`` (``"data"``, ``"variable"`` or ``"param"``), ``term`` (the term
      it feeds, or ``None``), ``color`` (the term's colour, the same in both
      worlds), ``shaded`` (given by nature: data in the real world),
      ``summed_out`` (enumerated: summed exactly, not sampled),
      ``distribution``, ``from_nature`` (a dream-world record of nature's
      datum, ``q(x) = p(x)``, made with :func:`pyro.deterministic`: drawn as
      sampled from ``p(x)``, its distribution ``"p(x)"``, not as a
      deterministic site) and ``plates`` (outermost first);
    - an edge: ``source``, ``target`` (node ids), ``world``, ``kind``
      (``"guide"`` or ``"model"``: that density reads the source;
      ``"nature"``: nature's conditional between two data, ``x → y``;
      ``"fit"``: a global posterior fit to the data set, ``D → θ``),
      ``upward`` (drawn against the page's top-to-bottom order, so that each
      variable sits at the same height in both worlds) and ``level`` (both
      ends at one height);
    - a plate: ``id``, ``label``, ``parent`` (the enclosing plate or ``None``);
    - ``"levels"``: site name -> height (0 on top), shared by both worlds;
    - ``"legend"``: one row per term: ``term``, ``symbol``, ``color``,
      ``weight``, ``note`` (what a changing weight is, or ``None``), ``sites``;
    - ``"objective"``: ``equation``, ``relation`` (its line relating it to
      ``I[P;Q]``), ``text``, ``latex``, ``unit_weights`` and ``summed_out``
      of :func:`~pyro_kl.objective.derive_objective`.

    :param callable model: the model, the dream world Q.
    :param callable guide: the guide; with the data, the real world P.
    :param tuple model_args: positional arguments of model and guide.
    :param dict model_kwargs: keyword arguments of model and guide.
    :param elbo: the ELBO whose weights and ``site_terms`` map are used
        (``None``: default rule, unit weights).
    :param bool render_params: include ``pyro.param`` nodes and their edges.
    :param bool render_deterministic: include ``pyro.deterministic`` sites
        (those recording nature's inputs are drawn either way).
    :rtype: dict

    Example::

        spec = worlds_spec(vae.model, vae.guide, (x,))
        [(e["source"], e["target"]) for e in spec["worlds"]["real"]["edges"]]
        # [('real/x', 'real/z')]
    """
    if model_kwargs is None:
        model_kwargs = {}
    pair = trace_pair(model, guide, model_args, model_kwargs, elbo=elbo)
    objective = objective_from(pair, elbo, entropy=data_entropy_of(model))
    colors = term_colors(objective.sites_by_term)
    relations = world_relations(
        pair, model, guide, model_args, model_kwargs, render_deterministic=render_deterministic
    )
    data = set(relations.real["observed"])
    model_terms, guide_terms = pair.assignment.model, pair.assignment.guide
    summed = set(summed_out_sites(pair))

    # a site an autoguide's auxiliary latent produces feeds that latent's term
    folded_into = {site: aux for aux, sites in relations.folded.items() for site in sites}

    def real_term(name):
        if name in data:
            return model_terms.get(name)
        return guide_terms.get(folded_into.get(name), guide_terms.get(name))

    real = _world(
        REAL,
        relations.real,
        render_params,
        real_term,
        lambda name: name in data,
        colors,
        summed.__contains__,
    )
    dream = _world(
        DREAM, relations.dream, render_params, model_terms.get, lambda name: False, colors,
        summed.__contains__, data.__contains__,
    )
    for kind, pairs in ((NATURE, relations.nature_edges), (FIT, relations.fit_edges)):
        real["edges"].extend(
            {"source": node_id(REAL, s), "target": node_id(REAL, t), "world": REAL, "kind": kind}
            for s, t in pairs
        )

    def variable_edges(world_spec):
        params = {n["id"] for n in world_spec["nodes"] if n["kind"] == "param"}
        return [
            (_name(e["source"]), _name(e["target"]))
            for e in world_spec["edges"]
            if e["source"] not in params
        ]

    def variables(world_spec):
        return [n["name"] for n in world_spec["nodes"] if n["kind"] != "param"]

    levels = shared_levels(
        variable_edges(real), variable_edges(dream), variables(real), variables(dream)
    )
    for world_spec in (real, dream):
        for edge in world_spec["edges"]:
            way = direction(levels, _name(edge["source"]), _name(edge["target"]))
            edge["upward"] = way == "up"
            edge["level"] = way == "level"

    legend = [
        {
            "term": term,
            "symbol": objective.symbols[term],
            "color": colors[term],
            "weight": objective.weights[term],
            "note": objective.weight_notes.get(term),
            "sites": folded_sites(list(sites), relations.folded),
        }
        for term, sites in objective.sites_by_term.items()
    ]
    return {
        "worlds": {REAL: real, DREAM: dream},
        "levels": levels,
        "legend": legend,
        "objective": {
            "equation": objective.equation,
            "relation": objective.relation,
            "text": objective.text,
            "latex": objective.latex,
            "unit_weights": objective.unit_weights,
            "summed_out": list(objective.summed_out),
        },
    }


__all__ = [
    "DREAM",
    "NO_TERM_COLOR",
    "REAL",
    "WORLD_LABELS",
    "node_id",
    "worlds_spec",
]
