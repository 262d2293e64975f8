"""Every term and the bound, per datapoint, over a whole data set (Appendix B)."""

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Callable, Dict, Mapping, Optional

import torch

from ..elbo import WeightedELBO
from ..terms import DISTORTION
from .base_measure import data_dimension, log_bin_volume
from .bounds import importance_weighted_bound
from .traces import check_num_samples, probe, vectorised_traces


def _as_args(batch) -> tuple:
    if isinstance(batch, (tuple, list)):
        return tuple(batch)
    if isinstance(batch, Mapping):
        raise TypeError(
            "evaluate() got a batch that is a dict; give batches as tuples of the model's "
            "positional arguments (pass keyword arguments to evaluate() itself)."
        )
    return (batch,)


@torch.no_grad()
def evaluate(
    model: Callable,
    guide: Callable,
    batches: Iterable,
    *,
    elbo: Optional[WeightedELBO] = None,
    num_samples: int = 0,
    bin_widths: Optional[Mapping[str, float]] = None,
    max_plate_nesting: Optional[int] = None,
    data_plate: Optional[str] = None,
    **kwargs,
) -> Dict[str, float]:
    r"""Averages every term of the objective, and optionally the bound, per
    datapoint over a data set, in batches and without gradients.

    The essay's Appendix B: training on a fixed finite set of examples
    minimises the KL from the *empirical* distribution of that set to the
    dream world, not from the real world. Evaluating the same terms on
    examples held out of training estimates them under the real world; the
    gap between the two is overfitting, term by term.

    The terms are :meth:`WeightedELBO.estimate_terms
    <pyro_kl.WeightedELBO.estimate_terms>` of each batch (sums over the batch's
    data plate, in nats), summed over batches and divided by the number of
    datapoints. A subsampled data plate (``size`` the data set's, a
    ``subsample_size`` or ``subsample`` the batch) scales the terms to the
    whole data set; each batch counts its own share (the estimate times
    ``subsample_size / size``), so the result is the per-datapoint value of
    the batches evaluated. A term of global latents (``complexity``) is
    estimated once per batch: batches that cover the data set once (or whose
    plate is told the data set's size) count it once in all.

    :param model: the dream world Q.
    :param guide: the real world's added part.
    :param batches: an iterable of batches, each the model's positional
        arguments as a tuple (or one tensor): a list of tuples, or a
        :class:`torch.utils.data.DataLoader`.
    :param elbo: the objective whose terms to estimate; a plain
        :class:`~pyro_kl.WeightedELBO` if ``None``. Its ``num_particles`` sets
        the Monte Carlo samples, its ``analytic_kl`` the rate's estimator.
    :param int num_samples: importance samples of :func:`iwae_bound`; 0 (the
        default) skips the bound.
    :param dict bin_widths: bin widths of continuous data sites
        (:mod:`~pyro_kl.diagnostics.base_measure`); with them the result also
        holds code lengths and bits per dimension.
    :param max_plate_nesting: see :func:`iwae_bound`.
    :param data_plate: see :func:`iwae_bound`.
    :param kwargs: keyword arguments of the model and guide, the same for every batch.
    :returns: nats per datapoint: every term; ``"num_data"``; with
        ``num_samples``, ``"iwae_bound"`` (the mean of ``L_K``); with
        ``bin_widths``, ``"distortion_code_length"`` (``D - sum_s d_s log Δ_s``)
        and, with ``num_samples``, ``"code_length"`` (``-L_K - sum_s d_s log
        Δ_s``) and ``"bits_per_dim"``.
    :rtype: dict

    Example::

        train = evaluate(vae.model, vae.guide, [(x_train,)], num_samples=100)
        held_out = evaluate(vae.model, vae.guide, DataLoader(x_test, batch_size=256))
        held_out["distortion"] - train["distortion"]  # how much the decoder memorised
    """
    elbo = WeightedELBO() if elbo is None else elbo
    if not isinstance(elbo, WeightedELBO):
        raise TypeError(
            f"evaluate(elbo=...) needs a pyro_kl ELBO (WeightedELBO or a preset such as "
            f"RateDistortionELBO), got {type(elbo).__name__}; for Pyro's Trace_ELBO's "
            "figures pass WeightedELBO() (unit weights), which estimates the same loss by term."
        )
    if isinstance(batches, torch.Tensor) or not isinstance(batches, Iterable):
        raise TypeError(
            f"evaluate() takes an iterable of batches, got {type(batches).__name__}; pass "
            "[(x,)] for one batch, x.split(256) for batches of rows, or a DataLoader."
        )
    if num_samples:
        check_num_samples(num_samples)
    options = dict(max_plate_nesting=max_plate_nesting, data_plate=data_plate)
    sums: Dict[str, float] = defaultdict(float)
    num_data = 0
    log_volume = dims = None
    for batch in batches:
        args = _as_args(batch)
        layout = probe(model, guide, args, kwargs, **options)
        # the terms estimate the whole data set's (a subsampled plate scales them up):
        # the batch's own share is that estimate times the fraction it holds
        share = layout.subsample_fraction
        for term, value in elbo.estimate_terms(model, guide, *args, **kwargs).items():
            sums[term] += value * share
        model_trace = None
        if num_samples:
            bound = importance_weighted_bound(
                model, guide, args, kwargs, num_samples=num_samples,
                allow_random_subsample=True, **options
            )
            sums["iwae_bound"] += float(bound.value.sum())
            model_trace = bound.model_trace
        if bin_widths is not None and log_volume is None:
            if model_trace is None:
                model_trace, _ = vectorised_traces(model, guide, args, kwargs, 1, layout)
            log_volume = log_bin_volume(model_trace, layout, bin_widths)
            dims = data_dimension(model_trace, layout)
        num_data += layout.num_data
    if not num_data:
        raise ValueError("evaluate() got no batches; pass a non-empty iterable of batches.")
    result = {term: value / num_data for term, value in sums.items()}
    if log_volume is not None:
        result["distortion_code_length"] = result.get(DISTORTION, 0.0) - log_volume
        if num_samples:
            result["code_length"] = -result["iwae_bound"] - log_volume
            result["bits_per_dim"] = result["code_length"] / (dims * math.log(2.0))
    result["num_data"] = num_data
    return result
