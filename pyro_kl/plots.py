"""The rate–distortion plane of *Fixing a Broken ELBO* (Alemi et al., 2018), drawn.

Every encoder–decoder pair of a VAE sits at a point ``(R, D)``: its rate
``R = <log e(z|x) / prior(z)>`` and its distortion ``D = <-log d(x|z)>``, both
expectations in the real world P (data + encoder). Whatever the pair, ``R >= 0``,
``D >= 0`` (for discrete data, where ``D`` is a code length) and ``D + R >= H``,
the entropy of the data: the feasible region. Its corners on the axes are the
two limits, **auto-encoding** (``D = 0``, ``R = H``: the code holds everything)
and **auto-decoding** (``R = 0``, ``D = H``: the decoder alone models the data,
the code is silent). Training with ``D + β·R`` (a
:class:`~pyro_kl.RateDistortionELBO`) looks for the point where a line of slope
``-β`` touches the frontier of what the model family reaches; :func:`plot_rate_distortion`
draws each β's measured point (one per seed, and their mean) with that tangent line.

matplotlib is an optional dependency (``pip install pyro-kl[demo]``); it is
imported only when a figure is drawn.
"""

import math
from typing import Any, Mapping, Optional, Sequence, Tuple

Point = Tuple[float, float]

FEASIBLE_EDGE = "feasible-edge"
"""The ``gid`` of the line along the feasible region's edges (``R = 0``,
``D + R = H``, ``D = 0``)."""
INFEASIBLE = "infeasible"
"""The ``gid`` of the shaded triangle ``D + R < H`` that no model reaches."""
AUTO_ENCODING = "auto-encoding"
"""The ``gid`` of the auto-encoding limit's marker, at ``(R, D) = (H, 0)``."""
AUTO_DECODING = "auto-decoding"
"""The ``gid`` of the auto-decoding limit's marker, at ``(R, D) = (0, H)``."""


def tangent_gid(beta: float) -> str:
    """The ``gid`` of β's tangent line (slope ``-β``), e.g. ``"tangent β=0.5"``."""
    return f"tangent β={beta:g}"


def seeds_gid(beta: float) -> str:
    """The ``gid`` of β's measured points, one per seed."""
    return f"seeds β={beta:g}"


def mean_gid(beta: float) -> str:
    """The ``gid`` of β's mean point, through which its tangent line is drawn."""
    return f"mean β={beta:g}"


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "pyro_kl.plots draws with matplotlib, which is not installed; install it with "
            "`pip install matplotlib` (or `pip install pyro-kl[demo]`)."
        ) from error
    return plt


def _finite(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {number}.")
    return number


def _check_points(points: Mapping[float, Sequence[Point]]) -> dict:
    if not isinstance(points, Mapping) or not points:
        raise ValueError(
            "points must be a non-empty mapping from β to its measured (rate, distortion) "
            "pairs, one per seed, e.g. {0.5: [(3.1, 2.4), (3.0, 2.5)], 1.0: [(2.2, 3.3)]}."
        )
    checked = {}
    for beta, pairs in points.items():
        beta = _finite(beta, "β")
        if beta < 0:
            raise ValueError(f"β must be >= 0 (a price per nat of rate), got {beta}.")
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or not pairs:
            raise ValueError(
                f"points[{beta:g}] must be a non-empty list of (rate, distortion) pairs, one per "
                f"seed, got {pairs!r}; a single run is [(rate, distortion)]."
            )
        measured = []
        for pair in pairs:
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(
                    f"each measured point of β={beta:g} must be a (rate, distortion) pair, "
                    f"got {pair!r}."
                )
            rate = _finite(pair[0], f"the rate of a β={beta:g} point")
            distortion = _finite(pair[1], f"the distortion of a β={beta:g} point")
            measured.append((rate, distortion))
        checked[beta] = measured
    return checked


def plot_rate_distortion(
    points: Mapping[float, Sequence[Point]],
    *,
    entropy: Optional[float] = None,
    ax: Any = None,
    unit: str = "nats",
    title: Optional[str] = None,
) -> Any:
    """Draw the rate–distortion plane: the feasible region's edges, the two limits,
    each β's measured points with their mean and its tangent line of slope ``-β``.

    - the feasible region's edges, ``R >= 0``, ``D >= 0`` and, when the data's
      entropy ``H`` is known, ``D + R >= H``; the triangle below ``D + R = H``
      is shaded: no encoder and decoder reach it;
    - the **auto-encoding** limit ``(R, D) = (H, 0)`` and the **auto-decoding**
      limit ``(0, H)``, when ``H`` is known;
    - for each β: the measured points (small, one per seed), their mean (large),
      and through the mean the line ``D + β·R = const`` of slope ``-β``, the
      level set of the objective β trains: at the optimum every point the model
      family reaches lies on or above it.

    Every artist has a ``gid`` (:data:`~pyro_kl.plots.FEASIBLE_EDGE`,
    :data:`~pyro_kl.plots.INFEASIBLE`, :data:`~pyro_kl.plots.AUTO_ENCODING`,
    :data:`~pyro_kl.plots.AUTO_DECODING`, :func:`~pyro_kl.plots.tangent_gid`,
    :func:`~pyro_kl.plots.seeds_gid`, :func:`~pyro_kl.plots.mean_gid`) so that a
    figure can be read back.

    :param dict points: β -> its measured ``(rate, distortion)`` pairs, one per
        seed (per data point or per image, the same unit as ``entropy``).
    :param float entropy: the entropy ``H`` of the data, when known (a source
        written down, or a closed form); ``None`` draws only ``R >= 0, D >= 0``.
    :param ax: a matplotlib ``Axes`` to draw in; ``None`` makes a new figure.
    :param str unit: the unit of both axes, for the labels.
    :param str title: the Axes' title; ``None`` for a default one.
    :returns: the matplotlib ``Axes``.
    :raises ValueError: for an empty or malformed ``points``, a negative β, a
        non-finite value, or a negative or non-finite ``entropy``.
    :raises ImportError: when matplotlib is not installed, naming the fix.

    Example::

        ax = plot_rate_distortion(
            {0.5: [(3.8, 2.5), (3.7, 2.6)], 1.0: [(2.7, 3.4), (2.6, 3.4)],
             2.0: [(1.7, 4.9), (1.8, 4.8)]},
            entropy=5.2,
        )
        [line.get_gid() for line in ax.lines][:2]  # ['feasible-edge', 'auto-encoding']
    """
    measured = _check_points(points)
    if entropy is not None:
        entropy = _finite(entropy, "entropy")
        if entropy < 0:
            raise ValueError(
                f"entropy must be >= 0 (the data's entropy H in {unit}), got {entropy}; "
                "pass entropy=None when it is unknown."
            )
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.8))

    rates = [r for pairs in measured.values() for r, _ in pairs]
    distortions = [d for pairs in measured.values() for _, d in pairs]
    known = [entropy] if entropy is not None else []
    right = 1.15 * max(rates + known + [0.0]) + 0.5
    top = 1.15 * max(distortions + known + [0.0]) + 0.5
    bottom = min(0.0, min(distortions))
    left = min(0.0, min(rates))

    if entropy is not None:
        edge = [(0.0, top), (0.0, entropy), (entropy, 0.0), (right, 0.0)]
        ax.fill([0.0, entropy, 0.0], [0.0, 0.0, entropy], color="0.85", zorder=0,
                gid=INFEASIBLE, label=f"D + R < H = {entropy:.3g}: no model reaches it")
    else:
        edge = [(0.0, top), (0.0, 0.0), (right, 0.0)]
    ax.plot([x for x, _ in edge], [y for _, y in edge], "k-", lw=1.2, gid=FEASIBLE_EDGE,
            label="edge of the feasible region: R ≥ 0, D ≥ 0"
            + (", D + R ≥ H" if entropy is not None else ""))
    if entropy is not None:
        ax.plot([entropy], [0.0], "k>", ms=8, clip_on=False, gid=AUTO_ENCODING,
                label="auto-encoding limit: D = 0, R = H")
        ax.plot([0.0], [entropy], "k^", ms=8, clip_on=False, gid=AUTO_DECODING,
                label="auto-decoding limit: R = 0, D = H")

    for number, (beta, pairs) in enumerate(sorted(measured.items())):
        colour = f"C{number % 10}"
        rate = sum(r for r, _ in pairs) / len(pairs)
        distortion = sum(d for _, d in pairs) / len(pairs)
        ax.plot([r for r, _ in pairs], [d for _, d in pairs], "o", color=colour, ms=3.5,
                alpha=0.6, gid=seeds_gid(beta))
        seeds = f", mean of {len(pairs)} seeds" if len(pairs) > 1 else ""
        ax.plot([rate], [distortion], "o", color=colour, ms=7, mec="k", gid=mean_gid(beta),
                label=f"β = {beta:g}{seeds}; dashed: slope −β")
        xs = [left, right]
        ax.plot(xs, [distortion - beta * (x - rate) for x in xs], "--", color=colour, lw=0.9,
                gid=tangent_gid(beta))

    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_xlabel(f"rate R = ⟨log e(z|x) / prior(z)⟩  ({unit})")
    ax.set_ylabel(f"distortion D = ⟨−log d(x|z)⟩  ({unit})")
    ax.set_title(title if title is not None else "The rate–distortion plane", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


__all__ = [
    "AUTO_DECODING",
    "AUTO_ENCODING",
    "FEASIBLE_EDGE",
    "INFEASIBLE",
    "mean_gid",
    "plot_rate_distortion",
    "seeds_gid",
    "tangent_gid",
]
