"""Draw the spec of both worlds with graphviz (DOT), and write it to a file.

The real world P (data + guide) is drawn on the left, the dream world Q (the
model) on the right, each as a cluster holding its plates as clusters (as
:func:`pyro.render_model` draws them). Graphviz's global ranking
(``newrank``) puts each variable at the same height in both worlds; edges
that run against that order are drawn upward. The objective and the legend
of term colours sit under the panels.
"""

import html
import os
import shutil
from typing import Dict, List, Optional

from .._files import atomic_path
from .provenance import FIT, NATURE
from .spec import DREAM, REAL

_PLAIN = {"fontname": "Helvetica"}
EDGE_COLOR = "gray25"
EDGE_STYLES = {
    NATURE: {"style": "bold", "color": "#4a6fa5", "arrowhead": "empty"},
    FIT: {"style": "dashed", "color": "#7a5195", "minlen": "2"},
}
"""How nature's arrows are drawn: nature's conditional (``x → y``) bold with
an open head, a posterior fit to the data set (``D → θ``) dashed, from the
box of the data set."""
EDGE_MEANINGS = {
    NATURE: "nature's conditional: nature draws the head given the tail",
    FIT: "fit to the data set: a global posterior learned from all the data",
}
SUMMED_OUT = "summed out"
"""What an enumerated site's label says: it is summed exactly, not sampled."""


_ID_ESCAPES = {"%": "%25", ":": "%3A", "\\": "%5C", '"': "%22"}


def dot_id(spec_id: str) -> str:
    """A spec's id as a DOT id that graphviz reads back as one node: ``:``
    (which the graphviz package reads as a port), ``\\`` and ``"`` are
    %-encoded; plain ids such as ``real/z`` are kept."""
    return "".join(_ID_ESCAPES.get(char, char) for char in spec_id)


def literal(text: str) -> str:
    """``text`` drawn as it is: not an HTML-like label (``<z>``) and without
    DOT's escapes (``\\l``, ``\\G``, ``\\N`` ...); newlines still break lines."""
    import graphviz

    return graphviz.escape(str(text))


def _node_attrs(node: dict, render_distributions: bool) -> Dict[str, str]:
    label = node["name"]
    if render_distributions and node["distribution"]:
        label = f"{label}\n~ {node['distribution']}"
    if node["kind"] == "param":
        return {"label": label, "shape": "plain"}
    attrs = {"label": label, "shape": "ellipse", "style": "filled", "fillcolor": node["color"]}
    if node["shaded"]:  # given by nature: grey, with the colour of its term
        attrs.update(fillcolor=f"gray65:{node['color']}", gradientangle="90", penwidth="2")
    if node["distribution"] == "Deterministic":  # dashed, as pyro.render_model draws it
        attrs.update(style="filled,dashed")
    if node.get("summed_out"):  # enumerated: a double border
        attrs.update(label=f"{label}\n({SUMMED_OUT})", peripheries="2")
    return attrs


def _innermost(node: dict) -> Optional[str]:
    return node["plates"][-1] if node["plates"] else None


def _add_world(graph, world: dict, world_key: str, render_distributions: bool) -> None:
    import graphviz

    plates = world["plates"]
    clusters = {
        plate: graphviz.Digraph(name=dot_id(data["id"])) for plate, data in plates.items()
    }
    for plate, cluster in clusters.items():
        cluster.attr(
            label=literal(plates[plate]["label"]), labeljust="r", labelloc="b", style="solid"
        )
    panel = graphviz.Digraph(name=f"cluster_{world_key}")
    panel.attr(
        label=literal(world["label"]), labelloc="t", labeljust="c", style="rounded",
        color="gray40", fontsize="16", **_PLAIN,
    )
    for node in world["nodes"]:
        plate = _innermost(node)
        target = panel if plate is None else clusters[plate]
        attrs = _node_attrs(node, render_distributions)
        attrs["label"] = literal(attrs["label"])
        target.node(dot_id(node["id"]), **attrs, **_PLAIN)

    def nest(parent: Optional[str], into) -> None:
        for plate, data in plates.items():
            if data["parent"] == parent:
                nest(plate, clusters[plate])
                into.subgraph(clusters[plate])

    nest(None, panel)
    graph.subgraph(panel)


def _edge(graph, edge: dict, **attrs: str) -> None:
    attrs = {**EDGE_STYLES.get(edge.get("kind"), {}), **attrs}
    source, target = dot_id(edge["source"]), dot_id(edge["target"])
    if edge.get("upward"):  # laid out downward, drawn pointing up
        graph.edge(target, source, dir="back", **attrs)
    elif edge.get("level"):
        graph.edge(source, target, constraint="false", **attrs)
    else:
        graph.edge(source, target, **attrs)


def _draw_fit_edges(graph, world: dict) -> None:
    """One dashed edge per (box of data, latent): from the data set's plate,
    not from each datum; data outside every plate each get their own."""
    nodes = {n["id"]: n for n in world["nodes"]}
    drawn = set()
    for edge in world["edges"]:
        if edge.get("kind") != FIT:
            continue
        plate = _innermost(nodes[edge["source"]])
        key = (plate or edge["source"], edge["target"])
        if key in drawn:
            continue
        drawn.add(key)
        if plate is None:
            _edge(graph, edge)
        else:
            tail = dot_id(world["plates"][plate]["id"])
            attrs = {"ltail" if not edge.get("upward") else "lhead": tail}
            _edge(graph, edge, **attrs)


def _caption(spec: dict) -> str:
    """The objective, its relation to I[P;Q] and the legend, as a graphviz HTML label."""
    objective = spec["objective"]
    rows: List[str] = []
    for row in spec["legend"]:
        weight = "?" if row["weight"] is None else f"{row['weight']:.3g}"
        if row.get("note"):
            weight = f"{weight} ({row['note']})"
        rows.append(
            f'<TR><TD BGCOLOR="{row["color"]}" WIDTH="18" BORDER="1"> </TD>'
            f'<TD ALIGN="LEFT">{html.escape(row["symbol"])} = {html.escape(row["term"])}</TD>'
            f'<TD ALIGN="LEFT">weight {html.escape(weight)}</TD>'
            f'<TD ALIGN="LEFT">sites: {html.escape(", ".join(row["sites"]))}</TD></TR>'
        )
    rows.append(
        '<TR><TD BGCOLOR="gray65" WIDTH="18" BORDER="1"> </TD><TD COLSPAN="3" ALIGN="LEFT">'
        "shaded: data, given by nature (real world only)</TD></TR>"
    )
    kinds = {e.get("kind") for e in spec["worlds"][REAL]["edges"]}
    for kind, arrow in ((NATURE, "━▷"), (FIT, "╌╌▶")):
        if kind in kinds:
            color = EDGE_STYLES[kind]["color"]
            rows.append(
                f'<TR><TD><FONT COLOR="{color}">{arrow}</FONT></TD><TD COLSPAN="3" '
                f'ALIGN="LEFT">{html.escape(EDGE_MEANINGS[kind])}</TD></TR>'
            )
    if objective.get("summed_out"):
        rows.append(
            '<TR><TD> </TD><TD COLSPAN="3" ALIGN="LEFT">'
            + html.escape(
                "double border: summed out exactly (enumerated, not sampled): "
                + ", ".join(objective["summed_out"])
            )
            + "</TD></TR>"
        )
    legend = '<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="3">' + "".join(rows) + "</TABLE>"
    table = (
        '<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2">'
        f'<TR><TD ALIGN="LEFT"><B>{html.escape(objective["equation"])}</B></TD></TR>'
        f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="11">{html.escape(objective["relation"])}'
        "</FONT></TD></TR>"
        f'<TR><TD ALIGN="LEFT">{legend}</TD></TR></TABLE>'
    )
    return f"<{table}>"


def spec_to_digraph(spec: dict, *, render_distributions: bool = False):
    """Build the :class:`graphviz.Digraph` of a spec made by
    :func:`~pyro_kl.worlds.spec.worlds_spec`.

    :param dict spec: both worlds as plain data.
    :param bool render_distributions: add each site's distribution to its label.
    :rtype: graphviz.Digraph
    """
    try:
        import graphviz
    except ImportError as error:  # pragma: no cover - graphviz is a dependency
        raise ImportError(
            "Drawing both worlds needs the graphviz Python package: pip install graphviz"
        ) from error

    graph = graphviz.Digraph(name="worlds")
    graph.attr(
        newrank="true", compound="true", rankdir="TB", nodesep="0.4", ranksep="0.5", **_PLAIN
    )
    graph.attr("edge", color=EDGE_COLOR)
    for key in (REAL, DREAM):
        _add_world(graph, spec["worlds"][key], key, render_distributions)
    for key in (REAL, DREAM):
        for edge in spec["worlds"][key]["edges"]:
            if edge.get("kind") != FIT:
                _edge(graph, edge)
        _draw_fit_edges(graph, spec["worlds"][key])
    # the same variable at the same height in both worlds
    ids = {
        key: {n["name"]: n["id"] for n in spec["worlds"][key]["nodes"] if n["kind"] != "param"}
        for key in (REAL, DREAM)
    }
    for name in ids[REAL]:
        if name in ids[DREAM]:
            with graph.subgraph() as same:
                same.attr(rank="same")
                same.node(dot_id(ids[REAL][name]))
                same.node(dot_id(ids[DREAM][name]))
    # one left-to-right order for both worlds: the model's, then the guide's
    order: Dict[str, int] = {}
    for key in (DREAM, REAL):
        for node in spec["worlds"][key]["nodes"]:
            order.setdefault(node["name"], len(order))
    for key in (REAL, DREAM):
        _keep_trace_order(graph, spec["worlds"][key], spec["levels"], order)
    graph.attr(label=_caption(spec), labelloc="b", labeljust="l", fontsize="14")
    return graph


def _keep_trace_order(
    graph, world: dict, levels: Dict[str, int], order: Dict[str, int]
) -> None:
    """The variables at one height in one plate, left to right in the order
    the model draws them (``x_0, x_1, ...``; ``order``: name -> position):
    one rank, chained by invisible edges, so that a chain is not drawn
    shuffled with its arrows crossing, and both worlds agree."""
    rows: Dict[tuple, List[dict]] = {}
    for node in world["nodes"]:
        if node["kind"] != "param" and node["name"] in levels:
            key = (levels[node["name"]], _innermost(node))
            rows.setdefault(key, []).append(node)
    for nodes in rows.values():
        if len(nodes) < 2:
            continue
        row = [dot_id(n["id"]) for n in sorted(nodes, key=lambda n: order[n["name"]])]
        with graph.subgraph() as same:
            same.attr(rank="same")
            for left, right in zip(row, row[1:]):
                same.edge(left, right, style="invis")


DOT_SOURCE_FORMATS = ("gv", "dot")
"""Suffixes written as the DOT text itself, which needs no ``dot`` program."""


def write(graph, filename: str) -> str:
    """Write ``graph`` to ``filename`` in the format its suffix names.

    ``.gv`` and ``.dot`` get the DOT source as text, with or without
    graphviz's ``dot`` program; every other format graphviz writes (``.svg``,
    ``.png``, ``.pdf``, ...) is laid out by ``dot``. The file is written
    atomically: to a temporary name beside it, renamed on success, so an
    existing ``filename`` is left as it was when ``dot`` fails.

    :returns: the path written.
    :raises ValueError: if the suffix is missing or not a graphviz format.
    :raises RuntimeError: if the format needs ``dot`` and it is not installed,
        or ``dot`` cannot lay the graph out (its message is included).

    Example::

        write(render_worlds(model, guide, batches[0]), "worlds.gv")
    """
    import graphviz

    filename = os.fspath(filename)
    stem, suffix = os.path.splitext(filename)
    fmt = suffix[1:].lower()
    if fmt in DOT_SOURCE_FORMATS:
        with atomic_path(filename) as temporary:
            with open(temporary, "w", encoding="utf-8") as dot_file:
                dot_file.write(graph.source)
        return filename
    if fmt not in graphviz.FORMATS:
        raise ValueError(
            f"Cannot tell the format of {filename!r} from its suffix {suffix!r}; end the "
            f"file name with one graphviz writes, e.g. .svg, .png, .pdf, or .gv for the "
            "DOT source."
        )
    if shutil.which("dot") is None:
        raise RuntimeError(
            f"Writing {filename!r} needs graphviz's `dot` program, which is not on PATH. "
            "Install it (apt install graphviz, brew install graphviz or conda install "
            "graphviz), or write the DOT source with a .gv suffix, which needs no `dot`."
        )
    try:
        picture = graph.pipe(format=fmt)  # laid out before the file is touched
    except graphviz.CalledProcessError as error:
        stderr = error.stderr.decode(errors="replace") if error.stderr else ""
        reason = " ".join(stderr.split()) or f"exit status {error.returncode}"
        raise RuntimeError(
            f"graphviz's `dot` could not write {filename!r}: {reason}. "
            f"{filename!r} is left as it was; write the DOT source with a .gv suffix "
            "to look at it."
        ) from None
    with atomic_path(filename) as temporary:
        with open(temporary, "wb") as picture_file:
            picture_file.write(picture)
    return filename
