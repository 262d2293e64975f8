"""How much the codes carry: ELBO surgery, active units and rate per dimension.

All three look at the *local latents*: the sites that both the dream world
(model) and the real world's guide sample inside the data plate, the codes
``z`` of each datapoint. Their rate is ``R = <log guide(z|x) - log model(z)>``
per datapoint. Global latents are drawn from the guide and held fixed.
"""

import math
from typing import Callable, Dict, Optional

import pyro
import torch
from pyro import poutine
from pyro.distributions import Delta, Independent
from pyro.infer.util import is_validation_enabled
from torch.distributions import kl_divergence

from .._checks import is_number
from .traces import (
    Layout,
    check_num_samples,
    local_auxiliaries,
    local_latents,
    per_datapoint,
    probe,
    site_log_prob,
    vectorised_traces,
)

SOURCE_PLATE = "_pyro_kl_code_sources"
"""The plate over the datapoints whose codes are evaluated under every guide
(a name of its own, so that replaying the sampling run leaves it alone)."""


def _codes(model, guide, args, kwargs, num_samples, max_plate_nesting, data_plate):
    layout = probe(
        model, guide, args, kwargs, max_plate_nesting=max_plate_nesting, data_plate=data_plate
    )
    model_trace, guide_trace = vectorised_traces(model, guide, args, kwargs, num_samples, layout)
    sites = local_latents(model_trace, guide_trace, layout.data_plate)
    if not sites:
        raise ValueError(
            f"No latent site lies inside the data plate '{layout.data_plate}' in both the "
            "model and the guide, so there is no code to measure."
        )
    return layout, model_trace, guide_trace, sites


def _to_source_axis(value: torch.Tensor, event_dim: int, layout: Layout) -> torch.Tensor:
    """Moves a one-sample value's data axis to the samples' axis (leaving size 1),
    so that a run of the guide over a plate there evaluates every datapoint's
    code under every datapoint's guide."""
    rank = layout.max_plate_nesting
    batch = value.dim() - event_dim
    value = value.reshape((1,) * (rank - batch) + tuple(value.shape))
    return value.unsqueeze(0).transpose(0, 1 + rank + layout.data_dim)


@torch.no_grad()
def elbo_surgery(
    model: Callable,
    guide: Callable,
    *args,
    num_samples: int = 10,
    max_plate_nesting: Optional[int] = None,
    data_plate: Optional[str] = None,
    **kwargs,
) -> Dict[str, float]:
    r"""Splits the rate into the information the code carries about *which*
    datapoint it came from and the mismatch of the codes' marginal with the
    prior (Hoffman & Johnson 2016, "ELBO surgery"):

    .. math:: \underbrace{\tfrac1N \textstyle\sum_n \mathrm{KL}(\mathrm{guide}(z|x_n)
        \,\|\, \mathrm{model}(z))}_{\text{rate}}
        = \underbrace{I(n; z)}_{\text{mutual information}}
        + \underbrace{\mathrm{KL}(\bar g(z) \,\|\, \mathrm{model}(z))}_{\text{marginal KL}},
        \qquad \bar g(z) = \tfrac1N \textstyle\sum_m \mathrm{guide}(z | x_m),

    treating the batch as the empirical data distribution (so ``I(n; z) <=
    log N``). All three are estimated from the same ``num_samples`` codes per
    datapoint, so the identity holds to float precision. The aggregate
    ``ḡ`` is evaluated by running the guide once more with every datapoint's
    code under every datapoint's input (an extra plate of size ``N``), which
    costs ``N^2`` evaluations per sample and is exact for any guide, including
    hierarchical ones whose later codes depend on earlier ones and autoguides
    (their auxiliary sites in the data plate count as part of the codes' density).

    :param model: the dream world Q.
    :param guide: the real world's added part.
    :param int num_samples: codes drawn per datapoint.
    :param max_plate_nesting: see :func:`~pyro_kl.diagnostics.iwae_bound`.
    :param data_plate: see :func:`~pyro_kl.diagnostics.iwae_bound`.
    :returns: ``{"rate", "mutual_information", "marginal_kl"}`` in nats per datapoint.
    :rtype: dict
    :raises ValueError: when no latent site lies in the data plate.

    Example::

        parts = elbo_surgery(vae.model, vae.guide, x)
        parts["mutual_information"] / parts["rate"]  # the share of the rate that is information
    """
    check_num_samples(num_samples)
    layout, model_trace, guide_trace, sites = _codes(
        model, guide, args, kwargs, 1, max_plate_nesting, data_plate
    )
    rate = information = marginal_kl = 0.0
    for sample in range(num_samples):
        if sample:
            model_trace, guide_trace = vectorised_traces(model, guide, args, kwargs, 1, layout)
        guide_sites = sites + local_auxiliaries(model_trace, guide_trace, layout.data_plate)
        own_guide = sum(
            per_datapoint(site_log_prob(guide_trace.nodes[s]), layout) for s in guide_sites
        )
        own_prior = sum(per_datapoint(site_log_prob(model_trace.nodes[s]), layout) for s in sites)
        own_guide, own_prior = own_guide.reshape(-1), own_prior.reshape(-1)
        cross = _cross_log_density(guide, args, kwargs, guide_trace, guide_sites, layout)
        if is_validation_enabled() and not torch.allclose(
            cross.diagonal(), own_guide, rtol=1e-4, atol=1e-4 * (1 + own_guide.abs().max())
        ):
            raise ValueError(
                "The guide gave a datapoint's code a different density when run over "
                "every datapoint's code at once; its networks must broadcast over a "
                "plate added outside its own (as for vectorize_particles=True)."
            )
        log_aggregate = torch.logsumexp(cross, dim=-1) - math.log(layout.num_data)
        rate += float((own_guide - own_prior).mean())
        information += float((own_guide - log_aggregate).mean())
        marginal_kl += float((log_aggregate - own_prior).mean())
    return {
        "rate": rate / num_samples,
        "mutual_information": information / num_samples,
        "marginal_kl": marginal_kl / num_samples,
    }


def _cross_log_density(guide, args, kwargs, guide_trace, sites, layout) -> torch.Tensor:
    """``[n, m] -> log guide(z_n | x_m)`` for one sampled code ``z_n`` per datapoint."""
    values = {}
    for name in sites:
        site = guide_trace.nodes[name]
        value = site["value"][0] if _has_sample_axis(site, layout) else site["value"]
        values[name] = _to_source_axis(value, site["fn"].event_dim, layout)
    nesting = layout.max_plate_nesting

    def crossed(*a, **k):
        with pyro.plate(SOURCE_PLATE, layout.num_data, dim=-nesting - 1):
            return poutine.condition(guide, data=values)(*a, **k)

    trace = poutine.trace(poutine.replay(crossed, trace=guide_trace)).get_trace(*args, **kwargs)
    total = sum(per_datapoint(site_log_prob(trace.nodes[name]), layout) for name in sites)
    return total.expand(layout.num_data, layout.num_data)


def _has_sample_axis(site, layout) -> bool:
    return site["value"].dim() - site["fn"].event_dim == layout.max_plate_nesting + 1


def _per_datapoint_mean(value: torch.Tensor, event_dim: int, layout: Layout) -> torch.Tensor:
    """A vectorised site's tensor -> shape ``(N, D)``: averaged over samples,
    the data axis first, every other plate and event dim flattened into ``D``."""
    rank = layout.max_plate_nesting + 1
    batch = value.dim() - event_dim
    value = value.reshape((1,) * (rank - batch) + tuple(value.shape))
    value = value.mean(0).movedim(rank - 1 + layout.data_dim, 0)
    return value.reshape(value.shape[0], -1)


@torch.no_grad()
def active_units(
    model: Callable,
    guide: Callable,
    *args,
    threshold: float = 0.01,
    num_samples: int = 10,
    max_plate_nesting: Optional[int] = None,
    data_plate: Optional[str] = None,
    **kwargs,
) -> Dict[str, int]:
    r"""Counts the dimensions of each code that the data move (Burda et al. 2016):

    .. math:: A_z = \#\{d : \mathrm{Var}_n\big(\mathbb{E}_{\mathrm{guide}}[z_d \mid x_n]\big)
        > \text{threshold}\}

    over the datapoints ``n`` of the batch (unbiased variance). The guide's
    mean of each site is its distribution's ``mean`` averaged over
    ``num_samples`` draws of the sites it depends on (exact for a site that
    depends on the data only), or the draws themselves where ``mean`` is not
    implemented.

    :param float threshold: the variance above which a dimension is active
        (Burda et al.'s 0.01, for codes whose prior has unit variance).
    :param int num_samples: draws per datapoint.
    :returns: local latent site -> number of active dimensions.
    :rtype: dict

    Example::

        active_units(vae.model, vae.guide, x)  # {'z': 3}
    """
    if not (is_number(threshold) and threshold >= 0):
        raise ValueError(
            f"active_units(threshold={threshold!r}): the threshold is a variance, a finite "
            "number >= 0; Burda et al. use 0.01 for codes whose prior has unit variance."
        )
    check_num_samples(num_samples)
    layout, _, guide_trace, sites = _codes(
        model, guide, args, kwargs, num_samples, max_plate_nesting, data_plate
    )
    if layout.num_data < 2:
        raise ValueError("active_units needs a batch of at least 2 datapoints.")
    counts = {}
    for name in sites:
        site = guide_trace.nodes[name]
        try:
            mean = site["fn"].mean.expand(site["value"].shape)
        except NotImplementedError:
            mean = site["value"]
        means = _per_datapoint_mean(mean, site["fn"].event_dim, layout)
        counts[name] = int((means.var(dim=0) > threshold).sum())
    return counts


def _elementwise(fn):
    reinterpreted = 0
    while isinstance(fn, (Independent, torch.distributions.Independent)):
        reinterpreted += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    return fn, reinterpreted


@torch.no_grad()
def rate_per_dimension(
    model: Callable,
    guide: Callable,
    *args,
    num_samples: int = 10,
    max_plate_nesting: Optional[int] = None,
    data_plate: Optional[str] = None,
    **kwargs,
) -> Dict[str, torch.Tensor]:
    r"""The rate of each dimension of each code, ``<log guide(z_d|x) - log
    model(z_d)>``, in nats per datapoint.

    Where both worlds' distributions of a site factorise over its dimensions
    (an ``Independent`` of a univariate distribution), each dimension's KL is
    computed in closed form where ``kl_divergence`` is registered (averaged
    over ``num_samples`` draws of the sites it depends on), else by Monte Carlo
    over the same draws. A site whose distributions do not factorise (e.g.
    ``MultivariateNormal``) has no rate per dimension: its whole rate is
    returned as a 0-d tensor.

    :param int num_samples: draws per datapoint.
    :returns: local latent site -> tensor of its dimensions' rates, shaped
        like one datapoint's value of the site (inner plates first, then the
        event); the sum over it is the site's rate.
    :rtype: dict

    Example::

        rates = rate_per_dimension(vae.model, vae.guide, x)
        rates["z"]  # tensor([2.31, 1.95, 0.01, 0.00])
    """
    check_num_samples(num_samples)
    layout, model_trace, guide_trace, sites = _codes(
        model, guide, args, kwargs, num_samples, max_plate_nesting, data_plate
    )
    rates = {}
    for name in sites:
        guide_site, model_site = guide_trace.nodes[name], model_trace.nodes[name]
        if isinstance(_elementwise(guide_site["fn"])[0], Delta):
            raise ValueError(
                f"The guide draws site '{name}' as a function of auxiliary site(s) (as "
                "autoguides do), so its rate per dimension is not defined by a density of "
                f"its own. Use a guide that samples '{name}' from a distribution, e.g. "
                "dist.Normal(loc, scale).to_event(1); iwae_bound, elbo_surgery and "
                "active_units work with autoguides."
            )
        guide_fn, guide_dims = _elementwise(guide_site["fn"])
        model_fn, model_dims = _elementwise(model_site["fn"])
        value = guide_site["value"]
        if guide_fn.event_dim or model_fn.event_dim or guide_dims != model_dims:
            total = per_datapoint(site_log_prob(guide_site) - site_log_prob(model_site), layout)
            rates[name] = total.mean()
            continue
        try:
            kl = kl_divergence(guide_fn, model_fn)
            if kl.shape != value.shape:
                kl = None
        except NotImplementedError:
            kl = None
        if kl is None:
            kl = guide_fn.log_prob(value) - model_fn.log_prob(value)
        mask = guide_site["mask"]
        if mask is not None:
            mask = torch.as_tensor(mask)
            kl = kl * mask.reshape(mask.shape + (1,) * guide_dims)
        rates[name] = _per_datapoint_mean(kl, guide_dims, layout).mean(0).reshape(
            _datapoint_shape(value, guide_dims, layout)
        )
    return rates


def _datapoint_shape(value: torch.Tensor, event_dim: int, layout: Layout) -> tuple:
    rank = layout.max_plate_nesting + 1
    batch = value.dim() - event_dim
    shape = (1,) * (rank - batch) + tuple(value.shape)
    plates = [s for axis, s in enumerate(shape[1:rank]) if axis != rank - 1 + layout.data_dim]
    while plates and plates[0] == 1:
        plates.pop(0)
    return tuple(plates) + tuple(shape[rank:])
