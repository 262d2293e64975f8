"""TraceGraph_ELBO's estimator, per term and weighted: Rao-Blackwellised score
functions and baselines for non-reparameterised, non-enumerated guide sites.

:func:`graph_pair` traces a pair as :class:`~pyro.infer.TraceGraph_ELBO` does:
each non-reparameterised latent's value carries its *provenance* (the set of
non-reparameterised sites it came from), so every log-density knows which of
them it depends on. :func:`graph_particle` then gives each term, for each such
site ``z``, the score function of ``z`` times only that term's costs
*downstream* of ``z``: the sites whose log-density depends on ``z`` (a site
that does not depend on ``z``, sampled before it or in another plate, has
mean zero against its score and is left out), summed to ``z``'s own plates (in
a plate, element ``i`` of ``z`` meets only element ``i`` of the costs). Each
term's surrogate is linear in its costs, so ``sum_t w_t surrogate_t`` has the
gradient of ``sum_t w_t T_t`` (:func:`~pyro_kl.estimators.weighted_loss`):
the score function of ``z`` meets the downstream costs each multiplied by the
weight of its term, the site's own term included.

Baselines (``infer={"baseline": {...}}`` on a guide site, with Pyro's options)
are control variates of that weighted cost, so they need the weights; the
ELBO applies them after the weights are resolved (:func:`baseline_surrogate`).
Like Pyro's they are in the ELBO's sign: a baseline estimates the weighted
downstream ELBO ``-sum_t w_t cost_t``, and its loss
``(weighted downstream ELBO - baseline)^2`` trains a neural baseline or
``baseline_value``. With unit weights the loss, the surrogate and every
gradient (model, guide and baseline parameters) are TraceGraph_ELBO's under the
same seed.

Why an option (``rao_blackwell=True`` on :class:`~pyro_kl.WeightedELBO`) and
not a sibling class: the estimator changes how a term's gradient is formed,
not what the terms or their weights are, exactly as ``analytic_kl=True``
gives TraceMeanField_ELBO's estimator. As a keyword it reaches every preset
(``RateDistortionELBO(beta=0.5, rao_blackwell=True)``, ``BetaGammaELBO``,
``TherMLELBO``) with their knobs, schedules and controllers, where a class
would need a twin of each preset. What it does not combine with
(enumeration, ``analytic_kl=True``, :class:`~pyro_kl.compile.CompiledSVI`) is
refused with an error naming the fix.

Example::

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)

    def guide(x):
        logits = pyro.param("logits", torch.zeros(len(x)))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(logits=logits),
                        infer={"baseline": {"use_decaying_avg_baseline": True}})

    x = torch.tensor([-1.2, 0.4, 1.9])
    elbo = RateDistortionELBO(beta=0.5, rao_blackwell=True)
    svi = SVI(model, guide, Adam({"lr": 0.1}), loss=elbo)
    svi.step(x)
    assert AVERAGE_PARAM_PREFIX + "z" in pyro.get_param_store()
"""

from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import pyro
import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer.util import MultiFrameTensor
from pyro.ops.provenance import detach_provenance, get_provenance

from ._pyro_compat import TrackNonReparam
from .estimators import TermEstimates, monte_carlo_particle, weigh
from .terms import TermAssignment, is_enumerated, sample_sites
from .tracing import importance_pair

BASELINE_KEY = "baseline"
"""The ``infer`` key of a guide site's baseline options (as in Pyro)."""

BASELINE_OPTIONS = (
    "use_decaying_avg_baseline",
    "baseline_beta",
    "nn_baseline",
    "nn_baseline_input",
    "baseline_value",
)
"""The baseline options Pyro's :class:`~pyro.infer.TraceGraph_ELBO` reads."""

AVERAGE_PARAM_PREFIX = "__baseline_avg_downstream_cost_"
"""Prefix of the param-store name of a site's decaying-average baseline (Pyro's name)."""


class Baseline(NamedTuple):
    """One guide site's baseline options, checked.

    :ivar bool decaying_average: subtract a decaying average of the weighted
        downstream ELBO (kept in the param store, as Pyro keeps it).
    :ivar float beta: the decay of that average (``baseline_beta``, 0.9 by default).
    :ivar module: a neural baseline (``nn_baseline``), called on ``input``.
    :ivar input: ``nn_baseline_input``, detached before the call.
    :ivar value: ``baseline_value``, a tensor on the user's baseline parameters.
    """

    decaying_average: bool
    beta: float
    module: Any
    input: Any
    value: Any

    @property
    def trained(self) -> bool:
        """Whether a baseline loss trains it (neural baseline or ``baseline_value``)."""
        return self.module is not None or self.value is not None


def baseline_of(site) -> Optional[Baseline]:
    """The checked baseline options of a guide site, ``None`` when it has none.

    :raises ValueError: on an unknown option, ``nn_baseline`` together with
        ``baseline_value``, or ``nn_baseline`` without ``nn_baseline_input``.
    """
    options = site["infer"].get(BASELINE_KEY)
    if not options:
        return None
    name = site["name"]
    unknown = sorted(set(options) - set(BASELINE_OPTIONS))
    if unknown:
        raise ValueError(
            f"Site '{name}' has unknown baseline option(s) {unknown}; the options are "
            f"{list(BASELINE_OPTIONS)}, as in Pyro's TraceGraph_ELBO."
        )
    module, value = options.get("nn_baseline"), options.get("baseline_value")
    if module is not None and value is not None:
        raise ValueError(
            f"Site '{name}' gives both nn_baseline and baseline_value; give one of them "
            "(a decaying average may be added to either)."
        )
    if module is not None and options.get("nn_baseline_input") is None:
        raise ValueError(
            f"Site '{name}' gives nn_baseline without nn_baseline_input; pass the tensor the "
            "network reads as infer={'baseline': {'nn_baseline': net, 'nn_baseline_input': x}}."
        )
    decaying = bool(options.get("use_decaying_avg_baseline", False))
    if not (decaying or module is not None or value is not None):
        return None
    beta = float(options.get("baseline_beta", 0.9))
    if not 0.0 <= beta < 1.0:
        raise ValueError(
            f"Site '{name}' has baseline_beta={beta}; the decay of the average must lie in "
            "[0, 1) (Pyro's default is 0.9)."
        )
    return Baseline(decaying, beta, module, options.get("nn_baseline_input"), value)


class ScoredSite(NamedTuple):
    """A non-reparameterised guide site with a baseline, as one particle left it.

    :ivar str name: the site's name.
    :ivar score: its score function, of the site's batch shape.
    :ivar dict costs: term -> the term's downstream cost of the site (loss
        sign, detached, summed to the site's plates).
    :ivar Baseline baseline: its baseline options.
    :ivar device: where its average lives.
    """

    name: str
    score: torch.Tensor
    costs: Dict[str, torch.Tensor]
    baseline: Baseline
    device: torch.device


class GraphParticle(NamedTuple):
    """One particle of the Rao-Blackwellised estimator: its terms and the sites
    whose baselines wait for the weights."""

    terms: TermEstimates
    baselined: List[ScoredSite]


def graph_pair(model, guide, args: tuple, kwargs: dict, max_plate_nesting: float):
    """One (model, guide) trace pair traced as :class:`~pyro.infer.TraceGraph_ELBO`
    traces it: non-reparameterised latents carry their provenance.

    :returns: ``(model_trace, guide_trace)``.
    :raises ValueError: if a site is configured for enumeration.
    """
    with TrackNonReparam():
        model_trace, guide_trace = importance_pair(
            model, guide, args, kwargs, max_plate_nesting
        )
    enumerated = [
        name
        for trace in (guide_trace, model_trace)
        for name, site in sample_sites(trace)
        if is_enumerated(site)
    ]
    if enumerated:
        raise ValueError(
            f"Site(s) {sorted(set(enumerated))} are configured for enumeration, which "
            "rao_blackwell=True (TraceGraph_ELBO's estimator) does not combine with. Leave "
            "rao_blackwell off to sum them out (TraceEnum_ELBO's Dice estimator, which already "
            "Rao-Blackwellises the other sites by their plates), or remove "
            "infer={'enumerate': ...} / @config_enumerate to sample them."
        )
    return model_trace, guide_trace


def _plain(value):
    return detach_provenance(value) if torch.is_tensor(value) else value


def downstream_costs(
    model_trace, guide_trace, assignment: TermAssignment
) -> Dict[str, Dict[str, MultiFrameTensor]]:
    """Guide site -> term -> the term's costs whose log-density depends on the
    site (its provenance), loss sign and detached, each with its plates.

    Model sites cost ``-log model``, guide sites ``log guide``; only
    non-reparameterised latents have provenance, so only they appear.
    """
    costs: Dict[str, Dict[str, MultiFrameTensor]] = {}
    for trace, terms, in_model in (
        (model_trace, assignment.model, True),
        (guide_trace, assignment.guide, False),
    ):
        for name, term in terms.items():
            site = trace.nodes[name]
            upstream = get_provenance(site["log_prob_sum"])
            if not upstream:
                continue
            log_prob = detach_provenance(site["log_prob"]).detach()
            item = (site["cond_indep_stack"], -log_prob if in_model else log_prob)
            for key in upstream:
                by_term = costs.setdefault(key, {})
                if term in by_term:
                    by_term[term].add(item)
                else:
                    by_term[term] = MultiFrameTensor(item)
    return costs


def graph_particle(model_trace, guide_trace, assignment: TermAssignment) -> GraphParticle:
    """The unweighted terms of one particle with TraceGraph_ELBO's estimator.

    The values and pathwise parts are :func:`~pyro_kl.estimators.monte_carlo_particle`'s;
    each term's score-function part is, for every non-reparameterised guide
    site, its score function times that term's downstream cost (see the
    module doc). Under :func:`torch.no_grad` the score parts are left out
    (they carry no value) and no baseline is touched.

    :param model_trace: the model (dream world) trace from :func:`graph_pair`.
    :param guide_trace: the guide trace from :func:`graph_pair`.
    :param assignment: every site's term.
    :rtype: GraphParticle
    """
    pathwise = monte_carlo_particle(model_trace, guide_trace, assignment, score_function=False)
    values = {term: _plain(value) for term, value in pathwise.values.items()}
    surrogates = {term: _plain(part) for term, part in pathwise.surrogates.items()}
    contributions = [(name, term, _plain(value)) for name, term, value in pathwise.contributions]
    baselined: List[ScoredSite] = []
    if torch.is_grad_enabled():
        for name, by_term in downstream_costs(model_trace, guide_trace, assignment).items():
            site = guide_trace.nodes.get(name)
            if site is None or site["type"] != "sample":
                continue
            score = _plain(site["score_parts"].score_function)
            if is_identically_zero(score):
                continue
            stack = site["cond_indep_stack"]
            costs = {term: cost.sum_to(stack) for term, cost in by_term.items()}
            for term, cost in costs.items():
                part = (score * cost).sum()
                surrogates[term] = surrogates[term] + part if term in surrogates else part
            baseline = baseline_of(site)
            if baseline is not None:
                baselined.append(
                    ScoredSite(name, score, costs, baseline, _plain(site["value"]).device)
                )
    return GraphParticle(TermEstimates(values, surrogates, contributions), baselined)


def weighted_downstream_elbo(costs: Mapping[str, torch.Tensor], weights: Mapping[str, Any]):
    """``-sum_t w_t cost_t``: the weighted downstream ELBO a baseline estimates
    (terms of weight 0 left out, so an infinite cost there cannot make a NaN)."""
    total = None
    for term, cost in costs.items():
        cost = weigh(cost, weights[term])
        if cost is not None:
            total = cost if total is None else total + cost
    return None if total is None else -total


def _baseline_value(site: ScoredSite, elbo: torch.Tensor) -> Tuple[Any, Any]:
    """``(baseline, baseline loss)`` of one site, given its weighted downstream ELBO;
    updates a decaying average in the param store."""
    options = site.baseline
    baseline: Any = 0.0
    if options.decaying_average:
        name = AVERAGE_PARAM_PREFIX + site.name
        with torch.no_grad():
            average = pyro.param(name, lambda: torch.zeros(elbo.shape, device=site.device))
            updated = (1.0 - options.beta) * elbo + options.beta * average
        pyro.get_param_store()[name] = updated
        baseline = baseline + average
    if options.module is not None:
        baseline = baseline + options.module(_plain(options.input).detach())
    elif options.value is not None:
        baseline = baseline + options.value
    if not torch.is_tensor(baseline) or baseline.shape != elbo.shape:
        shape = tuple(baseline.shape) if torch.is_tensor(baseline) else "a number"
        raise ValueError(
            f"The baseline of site '{site.name}' has shape {shape}, but the site's downstream "
            f"cost has shape {tuple(elbo.shape)} (the site's plates); return one value per "
            "element of the site's batch."
        )
    loss = 0.0
    if options.trained:
        loss = (elbo - baseline).pow(2.0).sum()
    return baseline, loss


def baseline_surrogate(
    particles: List[List[ScoredSite]], weights: Mapping[str, Any], num_particles: int
):
    """The baselines' part of the surrogate loss: for each particle and each site with
    a baseline, the score function times the baseline (subtracted from the
    weighted downstream ELBO, Pyro's sign), plus the baseline loss that trains it;
    divided by ``num_particles`` as Pyro's particle mean. ``0.0`` when no site has
    a baseline.

    :param particles: each particle's :attr:`GraphParticle.baselined`.
    :param weights: term -> the weight this call resolved.
    :param int num_particles: the divisor of the particle mean.
    """
    total: Any = 0.0
    for sites in particles:
        for site in sites:
            elbo = weighted_downstream_elbo(site.costs, weights)
            if elbo is None:
                continue
            baseline, loss = _baseline_value(site, elbo)
            total = total + (site.score * baseline.detach()).sum() + loss
    if torch.is_tensor(total) and num_particles != 1:
        total = total / num_particles
    return total


def check_rao_blackwell(rao_blackwell: bool, *, analytic_kl: bool) -> bool:
    """The ELBO's ``rao_blackwell`` option, checked against the others.

    :raises TypeError: if it is not a bool.
    :raises ValueError: with ``analytic_kl=True``.
    """
    if not isinstance(rao_blackwell, bool):
        raise TypeError(f"rao_blackwell={rao_blackwell!r}; pass True or False.")
    if rao_blackwell and analytic_kl:
        raise ValueError(
            "rao_blackwell=True (TraceGraph_ELBO's estimator) and analytic_kl=True "
            "(TraceMeanField_ELBO's) do not combine: choose one. Closed-form KL already "
            "removes the score function of the sites it covers; Rao-Blackwellisation "
            "is for the non-reparameterised sites that keep one."
        )
    return rao_blackwell


__all__ = [
    "AVERAGE_PARAM_PREFIX",
    "BASELINE_KEY",
    "BASELINE_OPTIONS",
    "Baseline",
    "GraphParticle",
    "ScoredSite",
    "baseline_of",
    "baseline_surrogate",
    "check_rao_blackwell",
    "downstream_costs",
    "graph_pair",
    "graph_particle",
    "weighted_downstream_elbo",
]
