"""Pure functions from one (model, guide) trace pair to the weighted loss.

Each estimator takes the traces of one particle and the term of every site
(:class:`~pyro_kl.terms.TermAssignment`) and returns its unweighted terms
(:class:`TermEstimates`): each term's value as a detached 0-d tensor and a
surrogate tensor whose gradient is the estimator's gradient of that term.
Every estimator is linear in the costs, so a weighted sum of the surrogates
is a surrogate of the weighted loss (:func:`weighted_loss`, after the
particles are averaged by :func:`mean_of`; one call is
:func:`pyro_kl.estimate.estimate`). Nothing is stored anywhere, as Pyro keeps ``_compute_log_r`` and
``_compute_dice_elbo`` apart from its ELBO classes.

- :func:`monte_carlo_particle`: Pyro's :class:`~pyro.infer.Trace_ELBO`
  estimator (pathwise gradients, score-function terms for
  non-reparameterized guide sites) with every site's cost weighted by its
  term's weight, optionally with closed-form KL divergences
  (:class:`~pyro.infer.TraceMeanField_ELBO`'s estimator).
- :func:`~pyro_kl.enumeration.enumerated_particle`: Pyro's
  :class:`~pyro.infer.TraceEnum_ELBO` estimator, weighted (see
  :mod:`pyro_kl.enumeration`).
"""

import math
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer.util import MultiFrameTensor, get_plate_stacks
from pyro.poutine import Trace
from torch.distributions import kl_divergence

from .terms import TermAssignment


class TermEstimates(NamedTuple):
    """The unweighted terms of one particle (or the mean over particles).

    :ivar dict values: term name -> estimate in nats (a detached 0-d tensor).
    :ivar dict surrogates: term name -> a tensor whose gradient is the
        estimator's gradient of that term (its value need not be the term's).
    :ivar list contributions: ``(site, term, value)`` of every summand (values
        as tensors), for error messages.
    """

    values: Dict[str, torch.Tensor]
    surrogates: Dict[str, torch.Tensor]
    contributions: List[Tuple[str, str, torch.Tensor]]


def _add(total, part):
    return part if total is None else total + part


def mean_of(particles: List[TermEstimates], num_particles: int) -> TermEstimates:
    """The sum of ``particles`` divided by ``num_particles`` (Pyro's particle mean;
    sequential enumeration yields several traces per particle)."""
    if len(particles) == 1 and num_particles == 1:
        return particles[0]
    values: Dict[str, Any] = {}
    surrogates: Dict[str, Any] = {}
    contributions = []
    for particle in particles:
        for term, value in particle.values.items():
            values[term] = _add(values.get(term), value / num_particles)
        for term, part in particle.surrogates.items():
            surrogates[term] = _add(surrogates.get(term), part / num_particles)
        contributions.extend(particle.contributions)
    return TermEstimates(values, surrogates, contributions)


def weigh(value, weight):
    """``weight * value``, the one rule for applying a term's weight: ``None`` for a
    constant weight 0 (the term is left out entirely, so an infinite value there
    cannot make a NaN), ``value`` itself for a constant 1."""
    if isinstance(weight, float):
        if weight == 0.0:
            return None
        if weight == 1.0:
            return value
    return weight * value


def weighted_loss(
    estimates: TermEstimates, weights: Mapping[str, Any], offset: Any = 0.0
) -> Tuple[torch.Tensor, Union[torch.Tensor, float]]:
    """``(loss, surrogate)``: ``sum_t w_t T_t + offset`` as a 0-d tensor, and the
    surrogate whose gradient is its gradient. A term of weight 0 is left out
    entirely, so an infinite log-density there cannot make a NaN. Nothing is
    read back to the host (see :func:`check_finite`)."""
    loss = None
    surrogate: Union[torch.Tensor, float] = 0.0
    for term, value in estimates.values.items():
        weight = weights[term]
        value = weigh(value, weight)
        if value is None:
            continue
        loss = _add(loss, value)
        part = estimates.surrogates.get(term)
        if part is not None:
            surrogate = surrogate + weigh(part, weight)
    if loss is None:
        loss = torch.zeros(())
    if not (isinstance(offset, float) and offset == 0.0):
        loss = loss + offset
    return loss, surrogate


def analytic_kl(model_site, guide_site, batch_shape=None) -> Optional[torch.Tensor]:
    """``KL(guide || model)`` of one latent site, scaled like its log-densities;
    ``None`` where no closed form is registered or it does not fit the site: its
    shape is not ``batch_shape`` (the guide's batch shape unless given)."""
    try:
        kl = kl_divergence(guide_site["fn"], model_site["fn"])
    except NotImplementedError:
        return None
    batch_shape = guide_site["fn"].batch_shape if batch_shape is None else batch_shape
    if not torch.is_tensor(kl) or kl.shape != batch_shape:
        return None
    return scale_and_mask(kl, guide_site["scale"], guide_site["mask"])


def check_finite(loss: float, contributions: List[Tuple[str, str, Any]]) -> None:
    """Raise a :class:`ValueError` naming the sites when ``loss`` is not finite.

    :param float loss: the loss, read back to the host.
    :param list contributions: ``(site, term, value)`` of every summand.
    """
    if math.isfinite(loss):
        return
    bad = []
    for name, term, value in contributions:
        value = float(value)
        if not math.isfinite(value):
            bad.append(f"'{name}' (term '{term}': {value})")
    raise ValueError(
        f"The loss is {loss}; non-finite contributions come from site(s) "
        f"{', '.join(bad) or 'none alone (overflow in the sum)'}. Check these "
        "sites' parameters and support, or give their term weight 0."
    )


def monte_carlo_particle(
    model_trace: Trace,
    guide_trace: Trace,
    assignment: TermAssignment,
    *,
    use_analytic_kl: bool = False,
    score_function: bool = True,
) -> TermEstimates:
    """The unweighted terms of one particle, by Monte Carlo.

    Every site contributes one summand to its term: ``-log model(x)`` for
    observed sites, ``log guide(z) - log model(z)`` for latent ones (or the
    closed-form KL with ``use_analytic_kl``). Each term's surrogate is its
    pathwise part plus, for every non-reparameterized guide site upstream, the
    score function times the term's downstream cost, so that any weighted sum
    ``sum_t w_t surrogate_t`` has the gradient of ``sum_t w_t T_t``. With unit
    weights this is exactly :class:`~pyro.infer.Trace_ELBO`'s estimator
    (:class:`~pyro.infer.TraceMeanField_ELBO`'s with ``use_analytic_kl``).

    :param ~pyro.poutine.Trace model_trace: the model (dream world) trace,
        replayed on ``guide_trace``, with log-densities computed.
    :param ~pyro.poutine.Trace guide_trace: the guide trace, with score parts.
    :param ~pyro_kl.terms.TermAssignment assignment: every site's term.
    :param bool use_analytic_kl: use ``kl_divergence(guide, model)`` per latent
        site where it is registered.
    :param bool score_function: add Trace_ELBO's score-function parts; ``False``
        leaves the pathwise parts only (:mod:`pyro_kl.tracegraph` adds its own,
        Rao-Blackwellised ones).
    :rtype: TermEstimates
    """
    guide_nodes = guide_trace.nodes
    summands = []  # (site, term, value as a 0-d tensor)
    parts: Dict[str, list] = {}  # term -> the surrogate parts of its summands
    own_parts = set()  # terms with a summand whose part is not its value
    costs: Dict[str, list] = {}  # term -> [(site, analytic KL or -log ratio)]
    analytic = set()
    score_sites = [
        guide_nodes[name]
        for name in assignment.guide
        if score_function
        and not is_identically_zero(guide_nodes[name]["score_parts"].score_function)
    ]

    def add(name: str, term: str, value: torch.Tensor, part) -> None:
        summands.append((name, term, value))
        if part is not value:
            own_parts.add(term)
        if not is_identically_zero(part):
            parts.setdefault(term, []).append(part)

    for name, term in assignment.model.items():
        site = model_trace.nodes[name]
        guide_site = None if site["is_observed"] else guide_nodes[name]
        kl = analytic_kl(site, guide_site) if guide_site and use_analytic_kl else None
        if kl is not None:
            analytic.add(name)
            kl_sum = kl.sum()
            add(name, term, kl_sum, kl_sum)
            if score_sites:
                costs.setdefault(term, []).append((name, kl.detach()))
        else:
            lp_sum = site["log_prob_sum"]
            add(name, term, -lp_sum, -lp_sum)
            if score_sites:
                log_r = site["log_prob"].detach()
                if guide_site is not None:
                    log_r = log_r - guide_site["log_prob"].detach()
                costs.setdefault(term, []).append((name, -log_r))

    for name, term in assignment.guide.items():
        if name in analytic:
            continue
        site = guide_nodes[name]
        entropy_term = site["score_parts"].entropy_term
        if entropy_term is site["log_prob"]:  # reparameterised: the part is the value
            entropy_term = site["log_prob_sum"]
        elif torch.is_tensor(entropy_term):
            entropy_term = entropy_term.sum()
        add(name, term, site["log_prob_sum"], entropy_term)

    totals: Dict[str, Any] = {}
    for _, term, value in summands:
        totals[term] = _add(totals.get(term), value)
    values = {term: total.detach() for term, total in totals.items()}
    surrogates: Dict[str, Any] = {}
    for term, term_parts in parts.items():
        if term not in own_parts:  # every part is its summand's value: the total
            surrogates[term] = totals[term]
            continue
        for part in term_parts:
            surrogates[term] = _add(surrogates.get(term), part)

    if score_sites:
        _add_score_function_parts(surrogates, costs, score_sites, model_trace)
    return TermEstimates(values, surrogates, summands)


def _add_score_function_parts(surrogates, costs, score_sites, model_trace: Trace) -> None:
    """Add to each term's surrogate, for every non-reparameterized guide site, the
    score function times that term's cost in the site's plates (Trace_ELBO's rule)."""
    stacks = get_plate_stacks(model_trace)
    for term, term_costs in costs.items():
        downstream_cost = MultiFrameTensor(*((stacks[n], c) for n, c in term_costs))
        for site in score_sites:
            cost = downstream_cost.sum_to(site["cond_indep_stack"])
            score = (cost * site["score_parts"].score_function).sum()
            surrogates[term] = _add(surrogates.get(term), score)
