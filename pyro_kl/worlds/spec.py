"""Both worlds of a (model, guide) pair as plain data: the spec the renderer draws.

The *real world P* is the data (given by nature) plus the guide; the *dream
world Q* is the model. The spec lists, per world, the nodes (with their term,
colour, shading and plates), the edges, the plates, and the derived objective.
It is a dict of lists, dicts, strings, numbers and booleans only, so it can be
tested and serialised without graphviz.

Dependencies come from Pyro's provenance tracking
(:func:`pyro.infer.inspect.get_model_relations`): the dream world's edges are
the ones :func:`pyro.render_model` draws; the real world's are those of the
guide run on data inputs that carry their own names, so that an edge from a
datum to a latent means the latent's guide density really reads that datum.
"""

import inspect
from typing import Callable, Dict, List, Mapping, Optional

import pyro
import pyro.distributions as dist
import torch

from .._pyro_compat import generate_graph_specification, get_model_relations, plate_label
from ..terms import is_data_site, term_colors
from .objective import TracedPair, objective_from, trace_pair

REAL = "real"
DREAM = "dream"
WORLD_LABELS = {REAL: "Real world P (data + guide)", DREAM: "Dream world Q (model)"}
"""How each world is named in every picture: in words, never by a letter alone."""

NO_TERM_COLOR = "white"
"""Fill colour of nodes that feed no term (guide inputs that the model does not
observe, parameters)."""

_DATA_PREFIX = "_pyro_kl_data:"


def node_id(world: str, name: str) -> str:
    """The graph id of site ``name`` in ``world``: one id per world, so the
    same site can appear in both."""
    return f"{world}/{name}"


def _input_names(guide: Callable, args: tuple, kwargs: dict) -> Dict[object, str]:
    """Slot (argument index or keyword) -> the parameter's name in the guide's
    signature (``arg{i}`` where it has none)."""
    names: Dict[object, str] = {key: key for key in kwargs}
    try:
        parameters = list(inspect.signature(guide).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    positional = [
        p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    for i in range(len(args)):
        names[i] = positional[i] if i < len(positional) else f"arg{i}"
    return names


def _same_data(a: torch.Tensor, b) -> bool:
    if a is b:
        return True
    if not torch.is_tensor(b) or a.numel() != b.numel() or a.dtype != b.dtype:
        return False
    return bool(torch.equal(a.reshape(-1), b.reshape(-1)))


def _data_inputs(pair: TracedPair, guide, args: tuple, kwargs: dict) -> Dict[object, str]:
    """Slot -> data name for every tensor input of the guide: the name of the
    observed model site holding the same values, else the argument's name."""
    observed = [
        (name, site["value"])
        for name, site in pair.model_trace.nodes.items()
        if is_data_site(site)
    ]
    arg_names = _input_names(guide, args, kwargs)
    slots = [(i, a) for i, a in enumerate(args)] + list(kwargs.items())
    result: Dict[object, str] = {}
    for slot, value in slots:
        if not torch.is_tensor(value):
            continue
        match = next((name for name, obs in observed if _same_data(value, obs)), None)
        result[slot] = match if match is not None else arg_names[slot]
    return result


def _guide_reading_named_data(guide: Callable, inputs: Mapping[object, str]) -> Callable:
    """The guide, run on inputs that carry provenance: each tensor input first
    passes through an observed sample site named after its datum, which
    :func:`~pyro.infer.inspect.get_model_relations` tracks like any site."""

    def guide_with_data(*args, **kwargs):
        args = list(args)
        for slot, name in inputs.items():
            value = args[slot] if isinstance(slot, int) else kwargs[slot]
            nature = dist.ImproperUniform(dist.constraints.real, (), value.shape)
            tracked = pyro.sample(_DATA_PREFIX + name, nature, obs=value)
            if isinstance(slot, int):
                args[slot] = tracked
            else:
                kwargs[slot] = tracked
        return guide(*args, **kwargs)

    return guide_with_data


def _unprefix(name: str) -> str:
    return name[len(_DATA_PREFIX):] if name.startswith(_DATA_PREFIX) else name


def _real_relations(pair: TracedPair, guide, args, kwargs, model_relations) -> dict:
    """Relations of the real world: data nodes, guide latents, their edges and plates."""
    inputs = _data_inputs(pair, guide, args, kwargs)
    wrapped = _guide_reading_named_data(guide, inputs)
    guide_rel = get_model_relations(wrapped, args, kwargs)
    data_sites = {_DATA_PREFIX + name for name in inputs.values()}

    latents = [name for name in guide_rel["sample_sample"] if name not in data_sites]
    sample_sample = {
        name: [_unprefix(up) for up in guide_rel["sample_sample"][name]] for name in latents
    }
    # data: what the guide reads, then the model's other observed sites
    data: List[str] = []
    for name in list(inputs.values()) + list(model_relations["observed"]):
        site = pair.model_trace.nodes.get(name)
        if name not in data and (site is None or is_data_site(site)):
            data.append(name)
    plate_sample: Dict[str, List[str]] = {
        plate: [n for n in names if n not in data_sites]
        for plate, names in guide_rel["plate_sample"].items()
    }
    model_plates_of = _plates_of(model_relations["plate_sample"])
    guide_plates_of = _plates_of(plate_sample)
    for name in data:
        if name in model_relations["observed"]:
            plates = model_plates_of.get(name, [])
        else:  # a guide input the model does not observe: the plates of its readers
            readers = [guide_plates_of.get(n, []) for n in latents if name in sample_sample[n]]
            plates = [p for p in readers[0] if all(p in r for r in readers)] if readers else []
        for plate in plates:
            plate_sample.setdefault(plate, []).insert(0, name)
    return {
        "sample_sample": {**{name: [] for name in data}, **sample_sample},
        "sample_param": {
            _unprefix(k): v for k, v in guide_rel["sample_param"].items() if k not in data_sites
        },
        "sample_dist": {
            **{name: "data" for name in data},
            **{name: guide_rel["sample_dist"][name] for name in latents},
        },
        "param_constraint": guide_rel["param_constraint"],
        "plate_sample": {plate: names for plate, names in plate_sample.items() if names},
        "observed": data,
    }


def _plates_of(plate_sample: Mapping[str, List[str]]) -> Dict[str, List[str]]:
    result: Dict[str, List[str]] = {}
    for plate, names in plate_sample.items():
        for name in names:
            result.setdefault(name, []).append(plate)
    return result


def _outer_to_inner(plates: List[str], plate_data: Mapping[str, dict]) -> List[str]:
    def depth(plate):
        d, parent = 0, plate_data[plate]["parent"]
        while parent is not None:
            d, parent = d + 1, plate_data[parent]["parent"]
        return d

    return sorted(plates, key=depth)


def _longest_paths(nodes, edges, levels: Dict[str, int]) -> None:
    """Give every node of ``nodes`` not yet in ``levels`` one more than its
    highest parent (0 without parents); a cycle puts the rest at the top."""
    parents: Dict[str, List[str]] = {n: [] for n in nodes}
    for source, target in edges:
        if target in parents and source != target:
            parents[target].append(source)
    pending = [n for n in nodes if n not in levels]
    while pending:
        ready = [n for n in pending if all(p in levels for p in parents[n])]
        if not ready:
            ready = pending[:1]
            parents[ready[0]] = [p for p in parents[ready[0]] if p in levels]
        for n in ready:
            levels[n] = 1 + max((levels[p] for p in parents[n]), default=-1)
            pending.remove(n)


def _levels(real_edges, dream_edges, real_nodes, dream_nodes) -> Dict[str, int]:
    """Height of every variable, shared by both worlds (0 on top).

    The real world sets it: the longest path from the data down through the
    guide. A variable the real world leaves unconnected (a global latent the
    guide draws without reading data) sits just above its children in the
    dream world; variables only the dream world has sit under their parents.
    """
    connected = {n for edge in real_edges for n in edge}
    isolated = [
        n for n in real_nodes
        if n not in connected and any(s == n for s, _ in dream_edges)
        and not any(t == n for _, t in dream_edges)
    ]
    levels: Dict[str, int] = {}
    _longest_paths([n for n in real_nodes if n not in isolated], real_edges, levels)
    for n in isolated:
        children = [levels[t] for s, t in dream_edges if s == n and t in levels]
        levels[n] = min(children, default=1) - 1
    _longest_paths(dream_nodes, dream_edges, levels)
    top = min(levels.values(), default=0)
    return {n: level - top for n, level in levels.items()}


def _world(
    world: str,
    relations: dict,
    render_params: bool,
    term_of: Callable[[str], Optional[str]],
    shaded: Callable[[str], bool],
    colors: Mapping[str, str],
) -> dict:
    graph = generate_graph_specification(relations, render_params=render_params)
    plate_data = graph["plate_data"]
    plates_of = _plates_of(
        {plate: names for plate, names in graph["plate_groups"].items() if plate is not None}
    )
    nodes = []
    for name, data in graph["node_data"].items():
        is_param = data["distribution"] is None
        term = None if is_param else term_of(name)
        nodes.append(
            {
                "id": node_id(world, name),
                "name": name,
                "world": world,
                "kind": "param" if is_param else ("data" if shaded(name) else "variable"),
                "term": term,
                "color": colors.get(term, NO_TERM_COLOR),
                "shaded": False if is_param else shaded(name),
                "distribution": data["distribution"],
                "plates": _outer_to_inner(plates_of.get(name, []), plate_data),
            }
        )
    edges = [
        {"source": node_id(world, s), "target": node_id(world, t), "world": world}
        for s, t in graph["edge_list"]
        if s != t
    ]
    plates = {
        plate: {
            "id": f"cluster_{world}_{plate}",
            "label": plate_label(plate),
            "parent": data["parent"],
        }
        for plate, data in plate_data.items()
    }
    return {"label": WORLD_LABELS[world], "nodes": nodes, "edges": edges, "plates": plates}


def worlds_spec(
    model: Callable,
    guide: Callable,
    model_args: tuple = (),
    model_kwargs: Optional[dict] = None,
    *,
    elbo=None,
    render_params: bool = False,
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
      ``distribution`` and ``plates`` (outermost first);
    - an edge: ``source``, ``target`` (node ids), ``world`` and ``upward``
      (drawn against the page's top-to-bottom order, so that each variable
      sits at the same height in both worlds);
    - a plate: ``id``, ``label``, ``parent`` (the enclosing plate or ``None``);
    - ``"levels"``: site name -> height (0 on top), shared by both worlds;
    - ``"legend"``: one row per term: ``term``, ``symbol``, ``color``,
      ``weight``, ``sites``;
    - ``"objective"``: ``equation``, ``text`` and ``latex`` of
      :func:`~pyro_kl.worlds.derive_objective`.

    :param callable model: the model, the dream world Q.
    :param callable guide: the guide; with the data, the real world P.
    :param tuple model_args: positional arguments of model and guide.
    :param dict model_kwargs: keyword arguments of model and guide.
    :param elbo: the ELBO whose weights and ``terms`` map are used (``None``:
        default rule, unit weights).
    :param bool render_params: include ``pyro.param`` nodes and their edges.
    :rtype: dict

    Example::

        spec = worlds_spec(vae.model, vae.guide, (x,))
        [e["source"] for e in spec["worlds"]["real"]["edges"]]  # ['real/x']
    """
    if model_kwargs is None:
        model_kwargs = {}
    pair = trace_pair(model, guide, model_args, model_kwargs, elbo=elbo)
    objective = objective_from(pair.assignment, elbo)
    colors = term_colors(objective.terms)

    model_rel = get_model_relations(model, model_args, model_kwargs, include_deterministic=True)
    real_rel = _real_relations(pair, guide, model_args, model_kwargs, model_rel)
    data = set(real_rel["observed"])
    model_terms, guide_terms = pair.assignment.model, pair.assignment.guide

    real = _world(
        REAL,
        real_rel,
        render_params,
        lambda name: model_terms.get(name) if name in data else guide_terms.get(name),
        lambda name: name in data,
        colors,
    )
    dream = _world(
        DREAM, model_rel, render_params, model_terms.get, lambda name: False, colors
    )

    def variable_edges(world_spec):
        params = {n["id"] for n in world_spec["nodes"] if n["kind"] == "param"}
        return [
            (e["source"].split("/", 1)[1], e["target"].split("/", 1)[1])
            for e in world_spec["edges"]
            if e["source"] not in params
        ]

    def variables(world_spec):
        return [n["name"] for n in world_spec["nodes"] if n["kind"] != "param"]

    levels = _levels(
        variable_edges(real), variable_edges(dream), variables(real), variables(dream)
    )
    for world_spec in (real, dream):
        for edge in world_spec["edges"]:
            source = levels.get(edge["source"].split("/", 1)[1])
            target = levels.get(edge["target"].split("/", 1)[1])
            edge["upward"] = source is not None and target is not None and source > target
            edge["level"] = source is not None and source == target

    legend = [
        {
            "term": term,
            "symbol": objective.symbols[term],
            "color": colors[term],
            "weight": objective.weights[term],
            "sites": list(sites),
        }
        for term, sites in objective.terms.items()
    ]
    return {
        "worlds": {REAL: real, DREAM: dream},
        "levels": levels,
        "legend": legend,
        "objective": {
            "equation": objective.equation,
            "text": objective.text,
            "latex": objective.latex,
        },
    }
