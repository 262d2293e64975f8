"""One height per variable, shared by both worlds, so each sits level with itself.

The real world P (data + guide) sets the heights: the longest path from
nature's data down through the guide. The dream world Q (the model) follows,
and its edges that run against that order are drawn pointing up.
"""

from typing import Dict, Iterable, List, Sequence, Tuple

Edge = Tuple[str, str]


def longest_paths(nodes: Iterable[str], edges: Iterable[Edge], levels: Dict[str, int]) -> None:
    """Give every node of ``nodes`` not yet in ``levels`` one more than its
    highest parent (0 without parents); a cycle puts the rest at the top.
    ``levels`` is updated in place."""
    nodes = list(nodes)
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


def shared_levels(
    real_edges: Sequence[Edge],
    dream_edges: Sequence[Edge],
    real_nodes: Sequence[str],
    dream_nodes: Sequence[str],
) -> Dict[str, int]:
    """Height of every variable, shared by both worlds, 0 on top.

    The real world sets it: the longest path from the data down through the
    guide. A variable the real world leaves unconnected (a latent the guide
    draws from nothing) sits just above its children in the dream world;
    variables only the dream world has sit under their parents. The heights
    are shifted so that the highest is 0.

    :returns: site name -> height.
    """
    connected = {n for edge in real_edges for n in edge}
    isolated = [
        n for n in real_nodes
        if n not in connected and any(s == n for s, _ in dream_edges)
        and not any(t == n for _, t in dream_edges)
    ]
    levels: Dict[str, int] = {}
    longest_paths([n for n in real_nodes if n not in isolated], real_edges, levels)
    for n in isolated:
        children = [levels[t] for s, t in dream_edges if s == n and t in levels]
        levels[n] = min(children, default=1) - 1
    longest_paths(dream_nodes, dream_edges, levels)
    top = min(levels.values(), default=0)
    return {n: level - top for n, level in levels.items()}


def direction(levels: Dict[str, int], source: str, target: str) -> str:
    """How an edge is laid out: ``"down"`` (the source is higher on the page,
    or either end has no height), ``"up"`` (drawn against the page's order)
    or ``"level"`` (both ends at one height)."""
    a, b = levels.get(source), levels.get(target)
    if a is None or b is None or a < b:
        return "down"
    return "up" if a > b else "level"


__all__ = ["direction", "longest_paths", "shared_levels"]
