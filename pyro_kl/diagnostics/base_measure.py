"""The base measure of the data: bin widths that turn log-densities into code lengths.

The essay's Appendix A: the log of a density is not a number of nats, for a
density has units (one over the data's units, per dimension). Choosing a base
measure ``m`` fixes that: ``<log m(x) / model(x)>`` is dimensionless and does
not change when the data are measured in other units. For data recorded to a
finite precision the natural choice is the bin width ``Δ`` of the recording
(``1/256`` for 8-bit pixels scaled to [0, 1]): a datapoint with ``d`` continuous
numbers then costs about

.. math:: -\\log \\mathrm{model}(x) - d \\log \\Delta \\;\\geq\\; 0 \\text{ nats}

to encode, ``-log`` of the dream world's probability of the bin ``x`` fell in
(exact as the density becomes flat at the scale of ``Δ``). Discrete sites
(counts, labels) already give probabilities: their base measure is the
counting measure, ``Δ = 1``.

A continuous observed site declares its bin width either where it is sampled,
``pyro.sample("x", ..., obs=x, infer={"bin_width": 1 / 256})``, or by a map
``bin_widths={"x": 1 / 256}`` passed to a diagnostic (the map wins).
"""

import math
from typing import Dict, Mapping, Optional

from pyro.poutine import Trace

from ..terms import is_data_site
from .traces import Layout, data_dimensions, sample_sites

BIN_WIDTH = "bin_width"
"""The ``infer`` key with which an observed site declares its bin width."""


def is_discrete(site: dict) -> bool:
    """Whether an observed site's distribution is over a discrete set."""
    return bool(getattr(site["fn"].support, "is_discrete", False))


def bin_widths_of(
    model_trace: Trace, bin_widths: Optional[Mapping[str, float]]
) -> Dict[str, float]:
    """Data site -> bin width ``Δ`` (1 for discrete sites).

    :raises ValueError: when ``bin_widths`` names a site that is not observed
        data, a width is not a positive finite number, or a continuous data site
        has no bin width.
    """
    given = dict(bin_widths or {})
    data_sites = {name: site for name, site in sample_sites(model_trace) if is_data_site(site)}
    unknown = sorted(set(given) - set(data_sites))
    if unknown:
        raise ValueError(
            f"bin_widths names {unknown}, which are not observed data sites of the model; "
            f"its data sites are {sorted(data_sites)}."
        )
    widths = {}
    for name, site in data_sites.items():
        width = given.get(name, site["infer"].get(BIN_WIDTH))
        if width is None:
            if not is_discrete(site):
                raise ValueError(
                    f"The observed site '{name}' is continuous, so -log model(x) is a "
                    "log-density, not a code length. Declare the precision its data were "
                    f"recorded to: bin_widths={{'{name}': 1 / 256}} or "
                    f"infer={{'{BIN_WIDTH}': ...}} at the site."
                )
            width = 1.0
        width = float(width)
        if not (math.isfinite(width) and width > 0):
            raise ValueError(f"bin width of site '{name}' is {width}; use a positive number.")
        widths[name] = width
    return widths


def log_bin_volume(
    model_trace: Trace, layout: Layout, bin_widths: Optional[Mapping[str, float]]
) -> float:
    """``sum_s d_s log Δ_s`` over the data sites: the log-volume of one
    datapoint's bin (nats, ``<= 0`` for bins narrower than 1).

    :param model_trace: a vectorised model trace (see
        :func:`~pyro_kl.diagnostics.traces.vectorised_traces`).
    """
    widths = bin_widths_of(model_trace, bin_widths)
    return sum(
        data_dimensions(model_trace.nodes[name], layout) * math.log(width)
        for name, width in widths.items()
    )


def data_dimension(model_trace: Trace, layout: Layout) -> int:
    """How many numbers one datapoint holds over all data sites."""
    return sum(
        data_dimensions(site, layout)
        for _, site in sample_sites(model_trace)
        if is_data_site(site)
    )
