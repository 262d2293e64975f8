"""Discrete latents summed exactly: weighted enumeration for every pyro_kl ELBO.

Sites configured for enumeration (``@config_enumerate``,
``infer={"enumerate": "parallel"}`` or ``"sequential"``) are traced as
:class:`~pyro.infer.TraceEnum_ELBO` traces them, and the terms are computed
with Pyro's Dice estimator, one exact expectation per term:

- **Guide-side enumeration** (the real world sums over the guide's values):
  the expectation over enumerated guide values is linear in each cost, so
  every term ``T_t = E_guide[cost_t]`` is computed exactly and
  ``sum_t w_t T_t`` with its gradient equals brute-force enumeration,
  ``sum_values guide(values) * sum_t w_t cost_t(values)``, for any weights.
- **Model-side enumeration** (a latent the guide lacks, summed out in the
  dream world): the site is summed out together with the sites that depend on
  it. That marginal, ``-log sum_z model(z) model(x|z)``, is one summand,
  reported under the term of the sites it marginalises (``distortion`` for
  the observed ones). If those sites feed terms of different weights, the
  marginal cannot be split and the weighting raises a :class:`ValueError`
  naming the sites.

Without enumerated sites nothing here runs: the ELBO keeps the Monte Carlo
path of :mod:`pyro_kl.estimators`. The enumerating traces are built by
:class:`pyro_kl.tracing.PairTracer`, which learns whether a pair enumerates.

With ``analytic_kl=True``, a latent site the guide samples (not enumerates)
contributes the closed form ``kl_divergence(guide, model)`` in place of its
Monte Carlo ``log guide - log model``, where it is registered, as on the
Monte Carlo path; the Dice expectation then weights it by the probabilities
of the guide's enumerated values it depends on. Enumerated guide sites are
exact already. A latent whose model density depends on a site the model
sums out has no closed form (its model density is a mixture over the summed
values): it keeps its Monte Carlo cost inside the marginal, and a warning
names it.

The posterior of the model-side enumerated sites (:func:`compute_marginals`,
:func:`sample_posterior`) is a property of the trained model, not of the
objective: it is computed by a :class:`~pyro.infer.TraceEnum_ELBO` built with
the ELBO's options, so it is Pyro's, value for value and draw for draw.
"""

import warnings
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Set, Tuple

import torch
from pyro.infer import TraceEnum_ELBO as PyroTraceEnumELBO
from pyro.infer.util import Dice
from pyro.ops import packed
from pyro.ops.contract import contract_tensor_tree
from pyro.ops.rings import LogRing
from pyro.poutine.trace_struct import Trace

from ._pyro_compat import dim_to_symbol, is_enumerated_by_pyro, packed_dims
from .estimators import TermEstimates, analytic_kl
from .terms import MARGINAL_TERM_JOIN, TermAssignment


# ---- the weighted Dice estimator --------------------------------------------


def _ordinal(trace: Trace, site) -> frozenset:
    return frozenset(
        trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized
    )


class _Components:
    """Union-find of model sites that share summed-out dimensions."""

    def __init__(self):
        self.parent: Dict[str, str] = {}

    def find(self, name: str) -> str:
        while self.parent.setdefault(name, name) != name:
            name = self.parent[name]
        return name

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def _check_model_no_more_global_than_guide(summed, guide_trace: Trace, ordering) -> None:
    """A site summed out in the model must sit in every plate of the guide's
    enumerated sites, as :class:`~pyro.infer.TraceEnum_ELBO` requires."""
    innermost_shared = frozenset.intersection(*(ordering[site["name"]] for site in summed))
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or not is_enumerated_by_pyro(site):
            continue
        for frame in site["cond_indep_stack"]:
            if frame.vectorized and guide_trace.plate_to_symbol[frame.name] not in innermost_shared:
                raise ValueError(
                    "Expected model enumeration to be no more global than guide enumeration, "
                    f"but the model sums out {[s['name'] for s in summed]} outside "
                    f"plate('{frame.name}'), upstream of the guide's enumerated site '{name}'. "
                    "Enumerate these sites in the guide instead, or move the model's "
                    f"enumerated sites inside plate('{frame.name}')."
                )


def _marginal_term(sites: List[str], assignment: TermAssignment) -> str:
    terms = sorted({assignment.model[s] for s in sites if s in assignment.model})
    return MARGINAL_TERM_JOIN.join(terms)


def _model_marginals(
    model_trace: Trace, guide_trace: Trace, assignment: TermAssignment, ordering
) -> Tuple[Dict[str, "OrderedDict"], Set[str], Dict[str, Tuple[str, ...]]]:
    """Sum out the model-side enumerated sites with the sites that depend on them.

    :returns: ``(costs, marginalised, marginals)``: term -> ordinal -> ELBO-direction
        costs of the marginals, the names of the sites folded into them, and
        term -> the sites each marginal term stands for.
    """
    summed = [model_trace.nodes[name] for name in assignment.summed_out]
    if not summed:
        return {}, set(), {}
    _check_model_no_more_global_than_guide(summed, guide_trace, ordering)
    non_enum_dims: Set[str] = set().union(*ordering.values())  # plates
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample" and name in guide_trace.nodes:
            non_enum_dims.update(packed_dims(guide_trace.nodes[name]["packed"]["log_prob"]))
    enum_dims = set().union(*(packed_dims(s["packed"]["log_prob"]) for s in summed))
    enum_dims -= non_enum_dims

    factors: Dict[str, torch.Tensor] = {}
    for site in summed:
        factors[site["name"]] = site["packed"]["unscaled_log_prob"]
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or name in factors or name not in assignment.model:
            continue
        if enum_dims.isdisjoint(packed_dims(site["packed"]["log_prob"])):
            continue
        site_packed = site["packed"]
        if "masked_log_prob" not in site_packed:
            site_packed["masked_log_prob"] = packed.scale_and_mask(
                site_packed["unscaled_log_prob"], mask=site_packed["mask"]
            )
        factors[name] = site_packed["masked_log_prob"]

    components = _Components()
    owner_of_dim: Dict[str, str] = {}
    for name, factor in factors.items():
        components.find(name)
        for dim in enum_dims.intersection(packed_dims(factor)):
            if dim in owner_of_dim:
                components.union(name, owner_of_dim[dim])
            owner_of_dim[dim] = name
    groups: Dict[str, List[str]] = {}
    for name in factors:
        groups.setdefault(components.find(name), []).append(name)

    costs: Dict[str, OrderedDict] = {}
    marginals: Dict[str, Tuple[str, ...]] = {}
    for members in groups.values():
        scales = {float(model_trace.nodes[n]["scale"]) for n in members}
        if len(scales) > 1:
            raise ValueError(
                f"The model sums out {[n for n in members if n in assignment.summed_out]} "
                f"together with {sorted(n for n in members if n in assignment.model)}, "
                f"whose subsampling scales differ ({sorted(scales)}); a marginal needs one "
                "scale. Put these sites under the same subsampled plates, or enumerate the "
                "discrete site in the guide instead."
            )
        tree: OrderedDict = OrderedDict()
        dim_to_size: Dict[str, int] = {}
        for name in members:
            factor = factors[name]
            tree.setdefault(ordering[name], []).append(factor)
            dim_to_size.update(zip(packed_dims(factor), factor.shape))
        ring = LogRing(dim_to_size=dim_to_size)
        contracted = contract_tensor_tree(tree, enum_dims & set(dim_to_size), ring=ring)
        observed = [n for n in members if n in assignment.model]
        term = _marginal_term(observed, assignment)
        marginals[term] = marginals.get(term, ()) + tuple(observed)
        scale = scales.pop()
        term_costs = costs.setdefault(term, OrderedDict())
        for ordinal, tensors in contracted.items():
            for tensor in tensors:
                tensor = packed.scale_and_mask(tensor, scale=scale)
                term_costs.setdefault(ordinal, []).append(tensor)
    return costs, set(factors), marginals


def packed_analytic_kl(model_site, guide_site) -> Optional[torch.Tensor]:
    """``KL(guide || model)`` of one latent site of a packed trace pair, scaled and
    masked like its log-densities and packed like the model site's; ``None``
    where the guide enumerates the site (it is exact already), where no closed
    form is registered, or where it does not fit the site's shape.

    :param model_site: the model site, from a packed model trace.
    :param guide_site: the guide site it was replayed on.
    """
    if is_enumerated_by_pyro(guide_site):
        return None
    shape = torch.broadcast_shapes(guide_site["fn"].batch_shape, model_site["fn"].batch_shape)
    kl = analytic_kl(model_site, guide_site, shape)
    return None if kl is None else packed.pack(kl, dim_to_symbol(model_site))


def _analytic_kls(model_trace: Trace, guide_trace: Trace, assignment: TermAssignment,
                  marginalised: Set[str]) -> Dict[str, torch.Tensor]:
    kls = {}
    for name in assignment.model:
        if name not in assignment.guide:
            continue  # observed
        if name in marginalised:
            if not is_enumerated_by_pyro(guide_trace.nodes[name]):
                warnings.warn(
                    f"analytic_kl=True: site '{name}' keeps its Monte Carlo cost, as its "
                    "model density depends on a site the model sums out (a mixture has no "
                    "closed-form KL). Enumerate that site in the guide for a closed form "
                    "per value, or set analytic_kl=False to silence this.",
                    UserWarning,
                )
            continue
        kl = packed_analytic_kl(model_trace.nodes[name], guide_trace.nodes[name])
        if kl is not None:
            kls[name] = kl
    return kls


def enumerated_particle(
    model_trace: Trace,
    guide_trace: Trace,
    assignment: TermAssignment,
    *,
    use_analytic_kl: bool = False,
) -> TermEstimates:
    """The exact unweighted terms of one enumerating particle (Pyro's Dice estimator).

    Each term is the exact expectation, over the guide's enumerated values
    (and Monte Carlo over its sampled ones), of the costs of its sites; model
    sites summed out in the dream world enter through their marginal (see the
    module doc). The surrogates are Dice expectations, so any weighted sum of
    them has the gradient of the weighted loss. With unit weights the terms
    add up to :class:`~pyro.infer.TraceEnum_ELBO`'s loss.

    :param model_trace: a packed model trace (see :func:`pyro_kl.tracing.importance_pair`).
    :param guide_trace: its packed guide trace.
    :param assignment: every site's term.
    :param bool use_analytic_kl: closed-form KL divergences for the latent sites
        the guide samples, where registered (see the module doc).
    :rtype: ~pyro_kl.estimators.TermEstimates
    """
    ordering = {
        name: _ordinal(trace, site)
        for trace in (model_trace, guide_trace)
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
    }
    costs, marginalised, marginals = _model_marginals(
        model_trace, guide_trace, assignment, ordering
    )
    kls = (
        _analytic_kls(model_trace, guide_trace, assignment, marginalised)
        if use_analytic_kl else {}
    )
    for name, term in assignment.model.items():
        if name in kls:
            cost = packed.neg(kls[name])
            costs.setdefault(term, OrderedDict()).setdefault(ordering[name], []).append(cost)
        elif name not in marginalised:
            cost = model_trace.nodes[name]["packed"]["log_prob"]
            costs.setdefault(term, OrderedDict()).setdefault(ordering[name], []).append(cost)
    for name, term in assignment.guide.items():
        if name in kls:
            continue
        cost = packed.neg(guide_trace.nodes[name]["packed"]["log_prob"])
        costs.setdefault(term, OrderedDict()).setdefault(ordering[name], []).append(cost)

    dice = Dice(guide_trace, ordering)
    surrogates: Dict[str, torch.Tensor] = {}
    for term, term_costs in costs.items():
        expected = dice.compute_expectation(term_costs)
        surrogates[term] = -expected if torch.is_tensor(expected) else torch.tensor(-expected)
    values = {term: surrogate.detach() for term, surrogate in surrogates.items()}
    sites_of = {**assignment.model, **assignment.guide}
    contributions = [
        (", ".join(marginals.get(term) or [n for n, t in sites_of.items() if t == term]), term, v)
        for term, v in values.items()
    ]
    return TermEstimates(values, surrogates, contributions)


# ---- the model's posterior over its enumerated sites ---------------------------

ELBO_OPTIONS = (
    "num_particles",
    "max_plate_nesting",
    "vectorize_particles",
    "strict_enumeration_warning",
    "ignore_jit_warnings",
    "jit_options",
    "retain_graph",
    "tail_adaptive_beta",
)
"""The :class:`~pyro.infer.ELBO` options an ELBO passes on to the
:class:`~pyro.infer.TraceEnum_ELBO` that computes its posterior marginals."""


def traceenum_elbo(elbo) -> PyroTraceEnumELBO:
    """A :class:`~pyro.infer.TraceEnum_ELBO` with ``elbo``'s options (particles,
    plate nesting, vectorisation, warnings); weights play no part in it.

    Pyro's class is bound here under its own name at import, so that code
    which later replaces ``pyro.infer.TraceEnum_ELBO`` by a pyro_kl class
    (``scripts/pyro_suite.py`` does) still reaches Pyro's."""
    return PyroTraceEnumELBO(**{name: getattr(elbo, name) for name in ELBO_OPTIONS})


def _delegate(elbo, method: str, model, guide, args, kwargs):
    pyro_elbo = traceenum_elbo(elbo)
    try:
        return getattr(pyro_elbo, method)(model, guide, *args, **kwargs)
    finally:
        if elbo.max_plate_nesting == float("inf"):
            elbo.max_plate_nesting = pyro_elbo.max_plate_nesting  # guessed, as Pyro keeps it


def compute_marginals(elbo, model, guide, *args, **kwargs) -> Dict[str, Any]:
    """The model's posterior marginal of each model-side enumerated site, given
    the data and one draw of the guide: :meth:`pyro.infer.TraceEnum_ELBO.compute_marginals`
    with ``elbo``'s options.

    :returns: site name -> marginal distribution (``Categorical``, ``Bernoulli``, ...).
    :raises NotImplementedError: with several particles or guide-side enumeration,
        as Pyro's.
    """
    return _delegate(elbo, "compute_marginals", model, guide, args, kwargs)


def sample_posterior(elbo, model, guide, *args, **kwargs):
    """A draw of every model-side enumerated site from the model's joint posterior,
    given the data and one draw of the guide (forward filtering, backward sampling):
    :meth:`pyro.infer.TraceEnum_ELBO.sample_posterior` with ``elbo``'s options, so
    the same seed gives the same draw.

    :returns: what the model returns, run on the posterior draw.
    :raises NotImplementedError: with several particles or guide-side enumeration,
        as Pyro's.
    """
    return _delegate(elbo, "sample_posterior", model, guide, args, kwargs)


__all__ = [
    "compute_marginals",
    "enumerated_particle",
    "packed_analytic_kl",
    "sample_posterior",
    "traceenum_elbo",
]
