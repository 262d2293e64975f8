"""The colours of the terms in pictures of both worlds."""

from typing import Dict, Iterable

from ..terms import CLASSIFICATION, COMPLEXITY, DISTORTION, FACTOR, JOINT, RATE

TERM_COLORS: Dict[str, str] = {
    DISTORTION: "#9ecae1",
    CLASSIFICATION: "#a1d99b",
    RATE: "#fdae6b",
    COMPLEXITY: "#bcbddc",
    FACTOR: "#fbb4ae",
    JOINT: "#e5d8bd",
}
"""The fill colour of the nodes feeding each registry term."""

USER_TERM_COLORS = ("#ccebc5", "#ffffb3", "#fddaec", "#d9d9d9", "#b3e2cd", "#f1e2cc")
"""Colours for terms named by users, in order of appearance."""


def term_colors(terms: Iterable[str]) -> Dict[str, str]:
    """Term -> fill colour: :data:`TERM_COLORS`, then :data:`USER_TERM_COLORS` in turn.

    Example::

        term_colors(["rate", "bits"])  # {'rate': '#fdae6b', 'bits': '#ccebc5'}
    """
    colors, extra = {}, 0
    for term in terms:
        if term in TERM_COLORS:
            colors[term] = TERM_COLORS[term]
        else:
            colors[term] = USER_TERM_COLORS[extra % len(USER_TERM_COLORS)]
            extra += 1
    return colors
