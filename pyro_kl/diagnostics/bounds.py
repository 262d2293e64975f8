"""Importance-weighted bounds on the dream world's marginal likelihood, and code lengths."""

import math
from typing import Callable, Mapping, NamedTuple, Optional

import torch
from pyro.poutine import Trace

from .base_measure import data_dimension, log_bin_volume
from .traces import (
    Layout,
    check_num_samples,
    log_weights,
    probe,
    subsample_sites,
    vectorised_traces,
)


class Bound(NamedTuple):
    """An importance-weighted bound and what was learned computing it."""

    value: torch.Tensor
    layout: Layout
    model_trace: Trace


@torch.no_grad()
def importance_weighted_bound(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    *,
    num_samples: int,
    chunk_size: Optional[int] = None,
    max_plate_nesting: Optional[int] = None,
    data_plate: Optional[str] = None,
    allow_random_subsample: bool = False,
) -> Bound:
    """:func:`iwae_bound` with the layout and the last model trace (for code lengths)."""
    check_num_samples(num_samples)
    layout = probe(
        model, guide, args, kwargs, max_plate_nesting=max_plate_nesting, data_plate=data_plate
    )
    if layout.random_subsample and not allow_random_subsample:
        raise ValueError(
            f"The data plate '{layout.data_plate}' draws a random subsample of "
            f"{layout.num_data} of its {layout.full_size} datapoints on every run, so the "
            "bound's values would belong to datapoints nobody knows. Pass the indices "
            f"(pyro.plate('{layout.data_plate}', {layout.full_size}, subsample=idx)) or the "
            "whole batch (no subsample_size); evaluate() averages over random subsamples."
        )
    chunk = layout.chunk_size(num_samples, chunk_size)
    log_mean = None
    model_trace = fixed = None
    for start in range(0, num_samples, chunk):
        size = min(chunk, num_samples - start)
        model_trace, guide_trace = vectorised_traces(
            model, guide, args, kwargs, size, layout, fixed
        )
        if fixed is None:  # every chunk weighs the first chunk's datapoints
            fixed = subsample_sites(guide_trace, model_trace)
        part = torch.logsumexp(log_weights(model_trace, guide_trace, layout), dim=0)
        log_mean = part if log_mean is None else torch.logaddexp(log_mean, part)
    return Bound(log_mean - math.log(num_samples), layout, model_trace)


def iwae_bound(
    model: Callable,
    guide: Callable,
    *args,
    num_samples: int = 1000,
    chunk_size: Optional[int] = None,
    max_plate_nesting: Optional[int] = None,
    data_plate: Optional[str] = None,
    **kwargs,
) -> torch.Tensor:
    r"""The importance-weighted lower bound ``L_K`` on ``log model(x)``, the
    dream world's marginal likelihood of each datapoint (Burda et al. 2016):

    .. math:: L_K(x) = \mathbb{E}\Big[\log \frac1K \sum_{k=1}^K
        \frac{\mathrm{model}(x, z_k)}{\mathrm{guide}(z_k \mid x)}\Big]
        \le \log \mathrm{model}(x), \qquad z_k \sim \mathrm{guide}(z \mid x).

    ``K = 1`` is the ELBO of each datapoint; ``L_K`` rises with ``K`` towards
    ``log model(x)``, and equals it for every ``K`` when the guide is the exact
    posterior. So ``D + R >= -L_K >= -log model(x)``, and on average over the
    real world ``-log model(x) >= H`` (on discrete data, or with a base
    measure: :func:`code_length`).

    The ``K`` samples are drawn vectorised (a ``pyro.plate`` outside the
    program's plates, as ``vectorize_particles=True`` does) in chunks of
    ``chunk_size`` to bound memory. Any Pyro model and guide work that run with
    vectorised particles, with several latent sites and nested plates. The
    datapoints are the plate holding every observed site (the outermost one if
    several do, or ``data_plate``); each site's log-density is summed over all
    other plates. Log-densities are masked but not scaled (see
    :mod:`pyro_kl.diagnostics.traces`). No gradients are recorded. A data
    plate that subsamples must be given its indices (``subsample=idx``), so
    that the values belong to known datapoints; one drawing a random
    ``subsample_size`` is refused (:func:`evaluate` averages over those).
    Observed data holding NaN, and sites inside the data plate with batch dims
    that no plate declares, are refused with a message naming the site.

    **Global latents.** When some sample site lies outside the data plate (a
    global latent, or a guide's joint auxiliary site) the importance weights do
    not factorise over datapoints: the result is then the bound on the whole
    batch, ``log model(x_1, ..., x_N)``, as a 0-d tensor.

    :param model: the dream world Q, a Pyro model with observed data.
    :param guide: the real world's added part, a Pyro guide.
    :param args: the model's and guide's positional arguments.
    :param int num_samples: ``K``, importance samples per datapoint.
    :param int chunk_size: samples drawn per vectorised run (default: as many
        as fit about 2**22 numbers of the program's sites).
    :param int max_plate_nesting: plates nested in the program; found by
        running it once if ``None``.
    :param str data_plate: name of the plate over datapoints, if not the
        outermost plate that holds every observed site.
    :param kwargs: the model's and guide's keyword arguments.
    :returns: ``L_K`` in nats, shape ``(N,)`` for a data plate of size ``N``
        (0-d with global latents).
    :rtype: torch.Tensor

    Example::

        def model(x):
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

        def guide(x):
            with pyro.plate("data", len(x)):
                pyro.sample("z", dist.Normal(x / 2, 0.5**0.5))  # the exact posterior

        x = torch.randn(5)
        bound = iwae_bound(model, guide, x, num_samples=10)  # shape (5,)
        assert torch.allclose(bound, dist.Normal(0.0, 2**0.5).log_prob(x), atol=1e-5)
    """
    return importance_weighted_bound(
        model,
        guide,
        args,
        kwargs,
        num_samples=num_samples,
        chunk_size=chunk_size,
        max_plate_nesting=max_plate_nesting,
        data_plate=data_plate,
    ).value


def code_length(
    model: Callable,
    guide: Callable,
    *args,
    bin_widths: Optional[Mapping[str, float]] = None,
    num_samples: int = 1000,
    chunk_size: Optional[int] = None,
    max_plate_nesting: Optional[int] = None,
    data_plate: Optional[str] = None,
    **kwargs,
) -> torch.Tensor:
    r"""The dream world's code length of each datapoint relative to the base
    measure of its recording precision, in nats (Appendix A of the essay):

    .. math:: -L_K(x) - \sum_s d_s \log \Delta_s \;\ge\; -\log \mathrm{model}(x)
        - \sum_s d_s \log \Delta_s

    where ``d_s`` is how many numbers a datapoint holds at observed site ``s``
    and ``Δ_s`` its bin width (:mod:`pyro_kl.diagnostics.base_measure`; 1 for
    discrete sites). It is an upper bound (through :func:`iwae_bound`) on the
    cost of coding the data quantised to those bins, it is ``>= 0`` up to the
    flatness of the density inside a bin, and it is the same number whatever
    units the data are measured in, as long as the bin widths are measured in
    the same units.

    :param dict bin_widths: data site -> bin width ``Δ``; a continuous data
        site must have one, here or as ``infer={"bin_width": Δ}``.
    :param num_samples: see :func:`iwae_bound`, as are the other options.
    :returns: nats per datapoint, shape ``(N,)`` (0-d with global latents:
        the batch's code length).
    :rtype: torch.Tensor
    :raises ValueError: when a continuous data site has no bin width.

    Example::

        vae = pyro_kl.recipes.VAE()
        (x,) = vae.make_data(seed=0)  # recorded, say, to two decimals
        nats = code_length(vae.model, vae.guide, x, num_samples=100, bin_widths={"x": 0.01})
    """
    options = dict(
        chunk_size=chunk_size, max_plate_nesting=max_plate_nesting, data_plate=data_plate
    )
    nats, _ = _code_length(model, guide, args, kwargs, bin_widths, num_samples, options)
    return nats


def bits_per_dimension(
    model: Callable,
    guide: Callable,
    *args,
    bin_widths: Optional[Mapping[str, float]] = None,
    num_samples: int = 1000,
    chunk_size: Optional[int] = None,
    max_plate_nesting: Optional[int] = None,
    data_plate: Optional[str] = None,
    **kwargs,
) -> torch.Tensor:
    """:func:`code_length` in bits per number of the data: divided by ``log 2``
    and by how many numbers a datapoint holds over all observed sites.

    :returns: bits per dimension, shape ``(N,)`` (0-d with global latents).
    :rtype: torch.Tensor

    Example::

        bits = bits_per_dimension(vae.model, vae.guide, x, num_samples=100,
                                  bin_widths={"x": 0.01})
        bits.mean()  # against log2(number of bins) for storing the values raw
    """
    options = dict(
        chunk_size=chunk_size, max_plate_nesting=max_plate_nesting, data_plate=data_plate
    )
    nats, dims = _code_length(model, guide, args, kwargs, bin_widths, num_samples, options)
    return nats / (dims * math.log(2.0))


def _code_length(model, guide, args, kwargs, bin_widths, num_samples, options):
    """Code lengths (nats) and how many numbers they code, per datapoint or for the batch."""
    bound = importance_weighted_bound(
        model, guide, args, kwargs, num_samples=num_samples, **options
    )
    layout = bound.layout
    volume = log_bin_volume(bound.model_trace, layout, bin_widths)
    dims = data_dimension(bound.model_trace, layout)
    if not layout.per_datapoint:
        volume, dims = volume * layout.num_data, dims * layout.num_data
    return -bound.value - volume, dims
