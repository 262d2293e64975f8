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

A bin width makes ``<log m/model>`` minus a discretised entropy. For the
essay's own statement, ``<log p/m> = KL(P || M) >= 0`` with a *normalised*
base density ``m(x)``, :func:`with_base_density` inserts any
:class:`torch.distributions.Distribution` as ``m`` beside a data site; it
changes the loss by a constant and the path gradients not at all.
"""

import math
from typing import Callable, Dict, Mapping, Optional

import pyro
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine import Trace
from torch.distributions import Distribution

from .._checks import is_number
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
        if isinstance(width, torch.Tensor) and width.numel() == 1:
            width = width.item()
        if not is_number(width, finite=False):
            raise ValueError(
                f"The bin width of site '{name}' is {width!r} ({type(width).__name__}); "
                f"use a positive number, the precision the data were recorded to "
                f"(e.g. bin_widths={{'{name}': 1 / 256}})."
            )
        if not (is_number(width) and width > 0):
            raise ValueError(f"bin width of site '{name}' is {width}; use a positive number.")
        widths[name] = float(width)
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


class _ObservedValues(Messenger):
    """Records the value and event dimension of the named observed sites."""

    def __init__(self, names):
        super().__init__()
        self.names, self.values = names, {}

    def _postprocess_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"] and msg["name"] in self.names:
            self.values[msg["name"]] = (msg["value"], msg["fn"].event_dim)


BASE_MEASURE_PREFIX = "_base_measure:"
"""The prefix of the factor sites :func:`with_base_density` adds to a model."""


def with_base_density(model: Callable, base_densities: Mapping[str, Distribution]) -> Callable:
    r"""``model`` with a normalised base density ``m(x)`` inserted for data sites.

    The essay's Appendix A: ``<log p(x)/q(x)>_p = <log p(x)/m(x)>_p + <log
    m(x)/q(x)>_p``. The first part is ``KL(P || M) >= 0``, fixed by nature and
    by the choice of ``m`` (a proper density, e.g. ``Normal(0, 10)`` per
    dimension); the second, which this model's loss becomes, is the weight of
    evidence the data give for ``m`` against the dream world: a number of
    nats that does not change when the data are measured in other units.
    Beside each observed site named in ``base_densities`` the returned model
    adds a factor ``-log m(x)`` (site ``"_base_measure:<name>"``, which feeds
    the ``factor`` term), so that Pyro's loss becomes

    .. math:: \langle -\log q(x) + \log m(x) \rangle_p = I[P;Q] - \mathrm{KL}(P\|M).

    ``m`` holds no parameter and the data are fixed, so the path gradient of
    every parameter is exactly what it was without ``m``: only the reported
    number changes (checked in the tests). Use :data:`BIN_WIDTH` instead for
    data recorded to a finite precision (``m = Δ^-d``, mass one per bin).

    :param callable model: the model (the dream world Q).
    :param dict base_densities: data site name -> a
        :class:`torch.distributions.Distribution` over one value of that site
        (its batch and event shape broadcast against the site's value).
    :returns: the model with the base density inserted; same signature.
    :raises ValueError: when a name is not an observed site of the model, or a
        value is not a Distribution.

    Example::

        import torch.distributions as td
        model_m = with_base_density(model, {"x": td.Normal(0.0, 10.0)})
        svi = SVI(model_m, guide, Adam({"lr": 1e-2}), loss=WeightedELBO())
    """
    for name, base in base_densities.items():
        if not isinstance(base, Distribution):
            raise ValueError(
                f"base_densities[{name!r}] is {type(base).__name__}; use a normalised "
                "torch.distributions.Distribution, e.g. torch.distributions.Normal(0., 10.)."
            )

    def model_with_base(*args, **kwargs):
        recorder = _ObservedValues(set(base_densities))
        with recorder:
            result = model(*args, **kwargs)
        missing = sorted(set(base_densities) - set(recorder.values))
        if missing:
            raise ValueError(
                f"base_densities names {missing}, which are not observed sites of the "
                f"model; it observed {sorted(recorder.values)} of them."
            )
        for name, base in base_densities.items():
            value, event_dim = recorder.values[name]
            log_m = base.log_prob(value)
            extra = log_m.dim() - (value.dim() - event_dim)
            if extra > 0:  # the base density is per number: sum over the site's event
                log_m = log_m.sum(tuple(range(-extra, 0)))
            pyro.factor(BASE_MEASURE_PREFIX + name, -log_m.detach().sum())
        return result

    return model_with_base
