"""The rate–distortion figure, read back from its Axes."""

import builtins
import math

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyro_kl import plots  # noqa: E402
from pyro_kl.plots import plot_rate_distortion  # noqa: E402

POINTS = {0.5: [(3.8, 2.5), (3.6, 2.7)], 2.0: [(1.7, 4.9), (1.9, 4.7), (1.8, 4.8)]}


@pytest.fixture
def axes():
    figure, axis = plt.subplots()
    yield axis
    plt.close(figure)


def _line(axis, gid):
    (line,) = [line for line in axis.lines if line.get_gid() == gid]
    return line


def _xy(line):
    return list(zip(map(float, line.get_xdata()), map(float, line.get_ydata())))


def test_the_feasible_region_and_the_limits(axes):
    plot_rate_distortion(POINTS, entropy=5.0, ax=axes)
    right, top = axes.get_xlim()[1], axes.get_ylim()[1]
    edge = [(0.0, top), (0.0, 5.0), (5.0, 0.0), (right, 0.0)]
    assert _xy(_line(axes, plots.FEASIBLE_EDGE)) == edge
    assert _xy(_line(axes, plots.AUTO_ENCODING)) == [(5.0, 0.0)]
    assert _xy(_line(axes, plots.AUTO_DECODING)) == [(0.0, 5.0)]
    (triangle,) = [patch for patch in axes.patches if patch.get_gid() == plots.INFEASIBLE]
    vertices = {tuple(map(float, v)) for v in triangle.get_xy()}
    assert vertices == {(0.0, 0.0), (5.0, 0.0), (0.0, 5.0)}
    # the window holds every point and both limits
    assert right > max(5.0, 3.8) and top > max(5.0, 4.9)


def test_without_the_entropy_only_the_axes_bound_the_region(axes):
    plot_rate_distortion(POINTS, ax=axes)
    right, top = axes.get_xlim()[1], axes.get_ylim()[1]
    assert _xy(_line(axes, plots.FEASIBLE_EDGE)) == [(0.0, top), (0.0, 0.0), (right, 0.0)]
    gids = {line.get_gid() for line in axes.lines} | {p.get_gid() for p in axes.patches}
    assert not gids & {plots.AUTO_ENCODING, plots.AUTO_DECODING, plots.INFEASIBLE}


@pytest.mark.parametrize("beta", sorted(POINTS))
def test_each_tangent_has_slope_minus_beta_through_the_mean(axes, beta):
    plot_rate_distortion(POINTS, entropy=5.0, ax=axes)
    (x0, y0), (x1, y1) = _xy(_line(axes, plots.tangent_gid(beta)))
    assert (y1 - y0) / (x1 - x0) == pytest.approx(-beta)
    ((rate, distortion),) = _xy(_line(axes, plots.mean_gid(beta)))
    pairs = POINTS[beta]
    assert rate == pytest.approx(sum(r for r, _ in pairs) / len(pairs))
    assert distortion == pytest.approx(sum(d for _, d in pairs) / len(pairs))
    assert y0 + (rate - x0) * (y1 - y0) / (x1 - x0) == pytest.approx(distortion)
    assert sorted(_xy(_line(axes, plots.seeds_gid(beta)))) == sorted(pairs)


def test_a_new_figure_when_no_axes_is_given():
    axis = plot_rate_distortion({1.0: [(1.0, 2.0)]}, entropy=2.5, title="one point")
    try:
        assert axis.get_title() == "one point"
        assert "rate R" in axis.get_xlabel() and "distortion D" in axis.get_ylabel()
    finally:
        plt.close(axis.figure)


@pytest.mark.parametrize("points, entropy, message", [
    ({}, None, "non-empty mapping"),
    ([(1.0, 2.0)], None, "non-empty mapping"),
    ({1.0: []}, None, "non-empty list"),
    ({1.0: (1.0, 2.0)}, None, r"\(rate, distortion\) pair"),
    ({1.0: [(1.0, 2.0, 3.0)]}, None, r"\(rate, distortion\) pair"),
    ({-1.0: [(1.0, 2.0)]}, None, "β must be >= 0"),
    ({1.0: [(math.nan, 2.0)]}, None, "must be finite"),
    ({1.0: [("a", 2.0)]}, None, "must be a number"),
    ({1.0: [(1.0, 2.0)]}, -1.0, "entropy must be >= 0"),
    ({1.0: [(1.0, 2.0)]}, math.inf, "entropy must be finite"),
])
def test_bad_input_names_the_fix(points, entropy, message):
    with pytest.raises(ValueError, match=message):
        plot_rate_distortion(points, entropy=entropy)


def test_without_matplotlib_the_error_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_rate_distortion({1.0: [(1.0, 2.0)]})
