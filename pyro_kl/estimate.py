"""One call of a weighted objective, as a pure function of its traced pairs.

:func:`estimate` takes the pairs of one call (see :mod:`pyro_kl.tracing`), a
:class:`~pyro_kl.weighting.Weighting` and the step count, and returns an
:class:`Estimate`: the loss, its surrogate and the terms, every number a
tensor, nothing read back to the host. The particle estimators beside it are
pure functions too: Monte Carlo in :mod:`pyro_kl.estimators`, enumeration
(Dice) in :mod:`pyro_kl.enumeration`, TraceGraph_ELBO's (Rao-Blackwellised,
with baselines) in :mod:`pyro_kl.tracegraph`.
"""

from typing import Any, Dict, Iterable, List, NamedTuple, Tuple, Union

import torch

from .enumeration import enumerated_particle
from .estimators import TermEstimates, mean_of, monte_carlo_particle, weighted_loss
from .terms import num_datapoints
from .tracegraph import baseline_surrogate, graph_particle
from .tracing import TracedPair, is_packed
from .weighting import Weighting


class Estimate(NamedTuple):
    """One call of an objective: the weighted loss, its surrogate and the terms.

    :ivar torch.Tensor loss: ``sum_t w_t T_t + offset``, a detached 0-d tensor.
    :ivar surrogate: a tensor whose gradient is the estimator's gradient of the
        loss (``0.0`` when nothing is differentiable).
    :ivar dict terms: term name -> unweighted estimate in nats (0-d tensors).
    :ivar dict weights: term name -> the weight used (a float, or a 0-d tensor
        from a controller).
    :ivar bool trainable: whether the traces hold parameters.
    :ivar int num_datapoints: the datapoints the terms sum over.
    :ivar list contributions: ``(site, term, value)`` of every summand.
    :ivar tuple params: the unconstrained parameters the traces read.
    """

    loss: torch.Tensor
    surrogate: Union[torch.Tensor, float]
    terms: Dict[str, torch.Tensor]
    weights: Dict[str, Any]
    trainable: bool
    num_datapoints: int
    contributions: List[Tuple[str, str, torch.Tensor]]
    params: Tuple[torch.Tensor, ...] = ()


def particle_terms(pair: TracedPair, *, use_analytic_kl: bool = False) -> TermEstimates:
    """The unweighted terms of one traced pair: by enumeration (Dice) when its
    sites were enumerated, else by Monte Carlo."""
    if is_packed(pair.guide_trace):
        return enumerated_particle(
            pair.model_trace, pair.guide_trace, pair.assignment, use_analytic_kl=use_analytic_kl
        )
    return monte_carlo_particle(
        pair.model_trace, pair.guide_trace, pair.assignment, use_analytic_kl=use_analytic_kl
    )


def _params(pair: TracedPair) -> List[torch.Tensor]:
    """The unconstrained parameters a pair read (``pyro.param`` and ``pyro.module`` sites)."""
    params = []
    for trace in (pair.model_trace, pair.guide_trace):
        for site in trace.nodes.values():
            if site["type"] == "param":
                value = site["value"]
                unconstrained = getattr(value, "unconstrained", None)
                params.append(unconstrained() if unconstrained is not None else value)
    return params


def estimate(
    pairs: Iterable[TracedPair],
    weighting: Weighting,
    step: int,
    *,
    num_particles: int,
    use_analytic_kl: bool = False,
    rao_blackwell: bool = False,
) -> Estimate:
    """One call of the weighted objective, as a pure function of its traced pairs.

    The particles' terms are averaged (Pyro's particle mean), the weights are
    resolved once against that mean (schedules at ``step``, controllers on the
    estimate), and the loss and its surrogate are formed. Every number stays a
    tensor: nothing is read back to the host.

    :param pairs: the call's traced pairs (one per particle; several per
        particle under sequential enumeration).
    :param Weighting weighting: the weights and site terms.
    :param int step: the step count, for schedules and controllers.
    :param int num_particles: the divisor of the particle mean.
    :param bool use_analytic_kl: closed-form KL divergences where registered.
    :param bool rao_blackwell: TraceGraph_ELBO's estimator (pairs traced by
        :func:`~pyro_kl.tracegraph.graph_pair`; see :mod:`pyro_kl.tracegraph`),
        with the baselines applied once the weights are resolved.
    :rtype: Estimate

    Example::

        from pyro_kl.tracing import importance_pair

        model_trace, guide_trace = importance_pair(vae.model, vae.guide, (x,), {}, 1)
        pairs = [TracedPair(model_trace, guide_trace, assign_terms(model_trace, guide_trace))]
        result = estimate(pairs, Weighting({"rate": 0.5}), step=0, num_particles=1)
        terms = result.terms  # {'rate': tensor(...), 'distortion': tensor(...)}
        assert torch.allclose(result.loss, terms["distortion"] + 0.5 * terms["rate"])
    """
    particles, params, baselined = [], {}, []
    first = None  # the structure's reference: its assignment and its datapoints
    for pair in pairs:
        first = pair if first is None else first
        if rao_blackwell:
            particle = graph_particle(pair.model_trace, pair.guide_trace, pair.assignment)
            particles.append(particle.terms)
            baselined.append(particle.baselined)
        else:
            particles.append(particle_terms(pair, use_analytic_kl=use_analytic_kl))
        params.update((id(p), p) for p in _params(pair))
    if first is None:
        raise ValueError("No traced pair to estimate from; num_particles must be >= 1.")
    terms = mean_of(particles, num_particles)
    num_data = num_datapoints(first.model_trace) if weighting.controllers else 1
    weights, offset = weighting.resolve(terms.values, first.assignment, step, num_data)
    loss, surrogate = weighted_loss(terms, weights, offset)
    if any(baselined):
        surrogate = surrogate + baseline_surrogate(baselined, weights, num_particles)
    return Estimate(
        loss.detach(), surrogate, terms.values, weights, bool(params), num_data,
        terms.contributions, tuple(params.values()),
    )
