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
path of :mod:`pyro_kl.estimators`. Whether a (model, guide) pair enumerates is
learnt on its first call, from a pass that is also that call's first
particle, so the random stream matches Pyro's own ELBOs.
"""

import queue
from collections import OrderedDict
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import torch
from pyro import poutine
from pyro.infer.enum import get_importance_trace, iter_discrete_escape, iter_discrete_extend
from pyro.infer.util import Dice, is_validation_enabled
from pyro.ops import packed
from pyro.ops.contract import contract_tensor_tree
from pyro.ops.rings import LogRing
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.util import check_traceenum_requirements

from .estimators import TermEstimates, to_floats
from ._pyro_compat import guess_max_plate_nesting, is_particle_plate, vectorized_num_particles
from .terms import MARGINAL_TERM_JOIN, ModelTags, TermAssignment

_MAX_CACHED_PAIRS = 64


class _NeedsEnumeration(Exception):
    """A pair cached as plain turned out to configure enumeration."""


class _NeedsPlateNesting(Exception):
    """An enumerated site appeared before ``max_plate_nesting`` was known."""


class _PlateNestingGuard(Messenger):
    """Checks ``max_plate_nesting`` at every parallel-enumerated site, before
    Pyro allocates its enumeration dimension: unknown (``inf``) stops the pass
    so that it can be guessed; too small raises an error that says so."""

    def __init__(self, max_plate_nesting: float):
        super().__init__()
        self.max_plate_nesting = max_plate_nesting

    def _pyro_sample(self, msg) -> None:
        if msg["infer"].get("enumerate") != "parallel" or msg["is_observed"]:
            return
        if self.max_plate_nesting == float("inf"):
            raise _NeedsPlateNesting()
        for frame in msg["cond_indep_stack"]:
            if frame.vectorized and not is_particle_plate(frame.name):
                if frame.dim is not None and frame.dim < -self.max_plate_nesting:
                    raise ValueError(
                        f"Site '{msg['name']}' is enumerated inside plate '{frame.name}' "
                        f"at dim {frame.dim}, but max_plate_nesting={self.max_plate_nesting} "
                        "leaves enumeration no room left of the plates. Give the ELBO "
                        f"max_plate_nesting={-frame.dim} or more (the number of nested "
                        "plates), or leave it out so that it is guessed."
                    )


def _pair_key(model, guide):
    key = (model, guide)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def is_packed(guide_trace: Trace) -> bool:
    """Whether a trace pair came from the enumerating path (its tensors packed)."""
    return hasattr(guide_trace, "plate_to_symbol")


def _enumeration_state(*traces: Trace) -> Optional[bool]:
    """``None`` when no site is configured for enumeration; otherwise whether the
    configured sites were enumerated (by the enumerating path)."""
    configured = False
    for trace in traces:
        for site in trace.nodes.values():
            if site["type"] == "sample" and site["infer"].get("enumerate"):
                configured = True
                infer = site["infer"]
                if infer.get("_enumerate_dim") is not None or "_enum_total" in infer:
                    return True
    return False if configured else None


def trace_pair(elbo, model, guide, args, kwargs) -> Tuple[Trace, Trace]:
    """One (model, guide) trace pair, as :class:`~pyro.infer.Trace_ELBO` traces it
    (the model's own ``kl_term`` tags kept), or, when sites were enumerated, as
    :class:`~pyro.infer.TraceEnum_ELBO` does, with its tensors packed."""
    tags = ModelTags()
    model_trace, guide_trace = get_importance_trace(
        "flat", elbo.max_plate_nesting, tags(model), guide, args, kwargs
    )
    tags.restore(model_trace)
    enumerated = _enumeration_state(guide_trace, model_trace)
    if enumerated:
        if is_validation_enabled():
            check_traceenum_requirements(model_trace, guide_trace)
        guide_trace.pack_tensors()
        model_trace.pack_tensors(guide_trace.plate_to_symbol)
    elif enumerated is False:
        raise _NeedsEnumeration()
    return model_trace, guide_trace


def traces(elbo, plain_traces: Callable, model, guide, args, kwargs) -> Iterator:
    """The trace pairs of one ELBO call: Pyro's plain particle traces for a pair
    known not to enumerate, otherwise enumerating traces (see module doc)."""
    key = _pair_key(model, guide)
    if key is not None and elbo._enumerated_pairs.get(key) is False:
        yielded = False
        try:
            for pair in plain_traces(model, guide, args, kwargs):
                yielded = True
                yield pair
            return
        except _NeedsEnumeration:
            if yielded:
                raise ValueError(
                    "The model or guide started to configure enumeration in the middle "
                    "of a call; configure the same sites for enumeration on every call."
                ) from None
    if isinstance(poutine.unwrap(guide), Messenger):  # a GuideMessenger never enumerates
        _remember(elbo, key, False)
        yield from plain_traces(model, guide, args, kwargs)
        return
    yield from _enumerating_traces(elbo, model, guide, args, kwargs, key)


def _enumerating_traces(elbo, model, guide, args, kwargs, key) -> Iterator:
    if elbo.vectorize_particles:
        if elbo.max_plate_nesting == float("inf"):
            guess_max_plate_nesting(elbo, model, guide, args, kwargs)
        model = vectorized_num_particles(elbo, model)
        guide = vectorized_num_particles(elbo, guide)
    for attempt in range(2):
        nesting = elbo.max_plate_nesting
        wrapped_model = _PlateNestingGuard(nesting)(model)
        wrapped_guide = _PlateNestingGuard(nesting)(guide)
        if nesting != float("inf"):  # the model allocates its dims left of the guide's
            wrapped_model = EnumMessenger()(wrapped_model)
            wrapped_guide = EnumMessenger(first_available_dim=-1 - nesting)(wrapped_guide)
        pending: queue.LifoQueue = queue.LifoQueue()
        wrapped_guide = poutine.queue(
            wrapped_guide, pending, escape_fn=iter_discrete_escape, extend_fn=iter_discrete_extend
        )
        try:
            for _ in range(1 if elbo.vectorize_particles else elbo.num_particles):
                pending.put(Trace())
                while not pending.empty():
                    pair = elbo._get_trace(wrapped_model, wrapped_guide, args, kwargs)
                    _remember(elbo, key, is_packed(pair[1]))
                    yield pair
            return
        except _NeedsPlateNesting:
            if attempt:
                raise
            guess_max_plate_nesting(elbo, model, guide, args, kwargs)


def _remember(elbo, key, enumerated: bool) -> None:
    if key is None:
        return
    pairs = elbo._enumerated_pairs
    if key not in pairs and len(pairs) >= _MAX_CACHED_PAIRS:
        pairs.clear()
    pairs[key] = enumerated


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
        if site["type"] != "sample" or site["infer"].get("_enumerate_dim") is None:
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
            non_enum_dims.update(guide_trace.nodes[name]["packed"]["log_prob"]._pyro_dims)
    enum_dims = set().union(*(s["packed"]["log_prob"]._pyro_dims for s in summed))
    enum_dims -= non_enum_dims

    factors: Dict[str, torch.Tensor] = {}
    for site in summed:
        factors[site["name"]] = site["packed"]["unscaled_log_prob"]
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or name in factors or name not in assignment.model:
            continue
        if enum_dims.isdisjoint(site["packed"]["log_prob"]._pyro_dims):
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
        for dim in enum_dims.intersection(factor._pyro_dims):
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
            dim_to_size.update(zip(factor._pyro_dims, factor.shape))
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


def enumerated_particle(
    model_trace: Trace, guide_trace: Trace, assignment: TermAssignment
) -> TermEstimates:
    """The exact unweighted terms of one enumerating particle (Pyro's Dice estimator).

    Each term is the exact expectation, over the guide's enumerated values
    (and Monte Carlo over its sampled ones), of the costs of its sites; model
    sites summed out in the dream world enter through their marginal (see the
    module doc). The surrogates are Dice expectations, so any weighted sum of
    them has the gradient of the weighted loss. With unit weights the terms
    add up to :class:`~pyro.infer.TraceEnum_ELBO`'s loss.

    :param model_trace: a packed model trace (see :func:`trace_pair`).
    :param guide_trace: its packed guide trace.
    :param assignment: every site's term.
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
    for name, term in assignment.model.items():
        if name not in marginalised:
            cost = model_trace.nodes[name]["packed"]["log_prob"]
            costs.setdefault(term, OrderedDict()).setdefault(ordering[name], []).append(cost)
    for name, term in assignment.guide.items():
        cost = packed.neg(guide_trace.nodes[name]["packed"]["log_prob"])
        costs.setdefault(term, OrderedDict()).setdefault(ordering[name], []).append(cost)

    dice = Dice(guide_trace, ordering)
    surrogates: Dict[str, torch.Tensor] = {}
    for term, term_costs in costs.items():
        expected = dice.compute_expectation(term_costs)
        surrogates[term] = -expected if torch.is_tensor(expected) else torch.tensor(-expected)
    # one host synchronisation for all the terms
    values = dict(zip(surrogates, to_floats(list(surrogates.values()))))
    sites_of = {**assignment.model, **assignment.guide}
    contributions = [
        (", ".join(marginals.get(term) or [n for n, t in sites_of.items() if t == term]), term, v)
        for term, v in values.items()
    ]
    return TermEstimates(values, surrogates, contributions)


__all__ = ["enumerated_particle", "is_packed", "trace_pair", "traces"]
