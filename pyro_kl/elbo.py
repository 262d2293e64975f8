"""The weighted ELBO: ``loss = sum_t w_t * T_t`` over named information terms."""

import math
import warnings
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Dict, Mapping, Optional

import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import Trace_ELBO
from pyro.infer.util import MultiFrameTensor, get_plate_stacks, is_validation_enabled, torch_item
from torch.distributions import kl_divergence

from .terms import (
    FACTOR,
    JOINT,
    STANDARD_TERMS,
    ModelTags,
    TermAssignment,
    assign_terms,
    structure_key,
)
from .weighting import Weight, check_weights, joint_weight, weights_at

_MAX_CACHED_STRUCTURES = 64


class _CallRecord:
    """What one call of an ELBO method accumulates over its particles."""

    def __init__(self, weights: Dict[str, float], num_particles: int):
        self.weights = weights
        self.scale = 1.0 / num_particles
        self.terms: Dict[str, float] = defaultdict(float)
        self.loss = 0.0
        self.used_weights: Dict[str, float] = dict(weights)


def _analytic_kl(model_site, guide_site) -> Optional[torch.Tensor]:
    """``KL(guide || model)`` of one latent site, scaled like its log-densities;
    ``None`` where no closed form is registered or it does not fit the site."""
    try:
        kl = kl_divergence(guide_site["fn"], model_site["fn"])
    except NotImplementedError:
        return None
    if not torch.is_tensor(kl) or kl.shape != guide_site["fn"].batch_shape:
        return None
    return scale_and_mask(kl, guide_site["scale"], guide_site["mask"])


class WeightedELBO(Trace_ELBO):
    r"""
    ``KL(real world || dream world)`` split into named terms, each with a weight.

    Pyro's model is the *dream world* Q, the guide together with the data is
    the *real world* P, and Pyro's :class:`~pyro.infer.Trace_ELBO` loss is
    ``I[P;Q] = KL(P || Q)`` up to the entropy of the data. Every sample site
    contributes one summand, which feeds one term (see :mod:`pyro_kl.terms`):
    observed sites feed ``distortion``, latents in a data plate ``rate``,
    other latents ``complexity``. This class minimises

    .. math:: \mathcal{L} = \sum_t w_t \, T_t

    with the same estimators as Pyro: Monte Carlo with score-function terms
    for non-reparameterized guide sites (the downstream cost is weighted), or,
    with ``analytic_kl=True``, ``kl_divergence(guide, model)`` per latent site
    where it is registered, falling back per site to Monte Carlo. With no
    weights it gives :class:`~pyro.infer.Trace_ELBO`'s loss and gradients
    (:class:`~pyro.infer.TraceMeanField_ELBO`'s with ``analytic_kl=True``).

    After each call, :attr:`last_terms` holds the unweighted term estimates
    (nats, summed over the data and scaled for subsampling like the loss,
    averaged over particles) and :attr:`last_weights` the weights used, so
    that ``loss == sum(last_weights[t] * last_terms[t])``.

    :param dict weights: term name -> weight; a float ``>= 0`` or a schedule,
        a callable of the step count (see :mod:`pyro_kl.schedules`). Terms not
        named have weight 1. A weight of 0 removes its term's sites from the
        loss (masked, so an infinite log-density cannot make a NaN); the term
        is still reported.
    :param dict site_terms: site name -> term name; overrides the default rule and
        ``infer={"kl_term": ...}`` tags, so a model need not be edited.
    :param bool analytic_kl: use closed-form KL divergences where registered.
    :param elbo_kwargs: any :class:`~pyro.infer.ELBO` option:
        ``num_particles``, ``vectorize_particles``, ``max_plate_nesting``,
        ``retain_graph``, ...

    Example::

        elbo = WeightedELBO(weights={"rate": 0.5}, site_terms={"y": "classification"})
        svi = SVI(model, guide, Adam({"lr": 1e-3}), loss=elbo)
        for x, y in batches:
            svi.step(x, y)
            print(elbo.last_terms)  # {'rate': ..., 'distortion': ..., ...}

    .. note:: The step count :attr:`step` (used by schedules) advances on
        every call that computes gradients: :meth:`loss_and_grads` (each
        ``SVI.step``) and :meth:`differentiable_loss` with grad enabled (a
        training loop over :meth:`~pyro.infer.ELBO.__call__`'s module).
        Save and restore it with :meth:`state_dict` / :meth:`load_state_dict`.
    """

    def __init__(
        self,
        *,
        weights: Optional[Mapping[str, Weight]] = None,
        site_terms: Optional[Mapping[str, str]] = None,
        analytic_kl: bool = False,
        terms: Optional[Mapping[str, str]] = None,
        **elbo_kwargs: Any,
    ):
        if terms is not None:
            warnings.warn(
                "WeightedELBO(terms=...) is renamed site_terms=...", FutureWarning, stacklevel=2
            )
            site_terms = terms if site_terms is None else site_terms
        super().__init__(**elbo_kwargs)
        self.weights = check_weights(weights)
        self.site_terms = dict(site_terms or {})
        for site, term in self.site_terms.items():
            if not isinstance(term, str) or not term:
                raise ValueError(f"terms['{site}'] = {term!r}; term names are non-empty strings.")
        self.analytic_kl = analytic_kl
        self.step = 0
        self.last_terms: Dict[str, float] = {}
        self.last_weights: Dict[str, float] = {}
        self._record: Optional[_CallRecord] = None
        self._warned_joint = False
        self._assignments: Dict[tuple, TermAssignment] = {}

    # ---- public API -----------------------------------------------------

    def loss(self, model, guide, *args, **kwargs) -> float:
        """
        :returns: an estimate of the weighted loss ``sum_t w_t T_t``.
        :rtype: float
        """
        with self._recording(advance=False) as record, torch.no_grad():
            super().differentiable_loss(model, guide, *args, **kwargs)
        return record.loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """Estimates the weighted loss and backpropagates its surrogate.

        :returns: an estimate of the weighted loss.
        :rtype: float
        """
        with self._recording(advance=True):
            return super().loss_and_grads(model, guide, *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The weighted loss as a tensor whose gradient is the estimator's."""
        with self._recording(advance=torch.is_grad_enabled()):
            return super().differentiable_loss(model, guide, *args, **kwargs)

    def terms(self, model, guide, *args, **kwargs) -> Dict[str, float]:
        """Deprecated spelling of :meth:`estimate_terms`."""
        warnings.warn(
            "WeightedELBO.terms() is renamed estimate_terms()", FutureWarning, stacklevel=2
        )
        return self.estimate_terms(model, guide, *args, **kwargs)

    def estimate_terms(self, model, guide, *args, **kwargs) -> Dict[str, float]:
        """Estimates the unweighted terms without gradients or side effects.

        :returns: term name -> estimate in nats.
        :rtype: dict
        """
        last = self.last_terms, self.last_weights, self.step
        try:
            with self._recording(advance=False) as record, torch.no_grad():
                super().differentiable_loss(model, guide, *args, **kwargs)
        finally:
            self.last_terms, self.last_weights, self.step = last
        return dict(record.terms)

    def state_dict(self) -> Dict[str, int]:
        """The ELBO's state (its step count), for checkpoints."""
        return {"step": self.step}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Restores :meth:`state_dict`, so schedules continue where they were."""
        self.step = int(state["step"])

    # ---- bookkeeping ----------------------------------------------------

    @contextmanager
    def _recording(self, advance: bool):
        record = _CallRecord(weights_at(self.weights, self.step), self.num_particles)
        outer, self._record = self._record, record
        try:
            yield record
        finally:
            self._record = outer
        self.last_terms = dict(record.terms)
        self.last_weights = record.used_weights
        if advance:
            self.step += 1

    def _weights_of(
        self, assignment: TermAssignment, weights: Dict[str, float]
    ) -> Dict[str, float]:
        """Term -> weight for every term of this trace pair."""
        used = {term: weights.get(term, 1.0) for term in assignment.model.values()}
        for term in assignment.guide.values():
            used.setdefault(term, weights.get(term, 1.0))
        if assignment.joint:
            if not self._warned_joint:
                self._warned_joint = True
                warnings.warn(
                    f"The guide's log-density at {sorted(assignment.joint)} stands for "
                    "several sites at once and cannot be split per site; it is reported "
                    f"under the term '{JOINT}' and the total stays exact. For a per-site "
                    "split use a guide that samples each site on its own (e.g. AutoNormal).",
                    UserWarning,
                )
            used[JOINT] = joint_weight(assignment, weights)
            if used[JOINT] is None:
                joint_sites = [s for sites in assignment.joint.values() for s in sites]
                spanned = sorted({assignment.model[s] for s in joint_sites})
                raise ValueError(
                    f"The guide's joint log-density spans terms {spanned} whose weights "
                    f"differ ({ {t: used[t] for t in spanned} }), so it cannot be weighted. "
                    "Use a guide that samples each site on its own (e.g. AutoNormal), "
                    f"equal weights, or set weights['{JOINT}'] explicitly."
                )
        if is_validation_enabled():
            unused = set(weights) - set(used) - set(STANDARD_TERMS) - {FACTOR, JOINT}
            if unused:
                raise ValueError(
                    f"weights name term(s) {sorted(unused)} that no site feeds; this "
                    f"model's terms are {sorted(used)}. Fix the term names, or send "
                    "sites to them with site_terms={site: term} or infer={'kl_term': term}."
                )
        return used

    # ---- the estimator (Pyro's seams) ------------------------------------

    def _get_trace(self, model, guide, args, kwargs):
        tags = ModelTags()
        model_trace, guide_trace = super()._get_trace(tags(model), guide, args, kwargs)
        tags.restore(model_trace)
        return model_trace, guide_trace

    def _assignment(self, model_trace, guide_trace) -> TermAssignment:
        """The term of every site, computed once per trace structure."""
        key = (structure_key(model_trace), structure_key(guide_trace))
        assignment = self._assignments.get(key)
        if assignment is None:
            assignment = assign_terms(model_trace, guide_trace, self.site_terms)
            if len(self._assignments) >= _MAX_CACHED_STRUCTURES:
                self._assignments.clear()  # a model whose structure keeps changing
            self._assignments[key] = assignment
        return assignment

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        record = self._record
        assignment = self._assignment(model_trace, guide_trace)
        weights = self._weights_of(assignment, record.weights)
        record.used_weights.update(weights)

        guide_nodes = guide_trace.nodes
        score_sites = [
            guide_nodes[name]
            for name in assignment.guide
            if not is_identically_zero(guide_nodes[name]["score_parts"].score_function)
        ]
        # plate stacks and downstream costs only feed score-function terms
        stacks = get_plate_stacks(model_trace) if score_sites else None
        values: Dict[str, float] = {}  # term -> unweighted estimate (float)
        pathwise: Dict[str, Any] = {}  # term -> unweighted pathwise part (tensor)
        contributions = []  # (site, term, value) for error messages
        costs = []  # (frames, weighted ELBO-direction cost) for score functions
        analytic = set()

        def add(name, term, value, part):
            values[term] = values.get(term, 0.0) + value
            contributions.append((name, term, value))
            if not is_identically_zero(part):
                pathwise[term] = pathwise[term] + part if term in pathwise else part

        for name, term in assignment.model.items():
            site = model_trace.nodes[name]
            guide_site = None if site["is_observed"] else guide_nodes[name]
            kl = _analytic_kl(site, guide_site) if guide_site and self.analytic_kl else None
            if kl is not None:
                analytic.add(name)
                kl_sum = kl.sum()
                add(name, term, torch_item(kl_sum), kl_sum)
                if score_sites and weights[term]:
                    costs.append((stacks[name], weights[term] * kl.detach()))
            else:
                lp_sum = site["log_prob_sum"]
                add(name, term, -torch_item(lp_sum), -lp_sum)
                if score_sites and weights[term]:
                    log_r = site["log_prob"].detach()
                    if guide_site is not None:
                        log_r = log_r - guide_site["log_prob"].detach()
                    costs.append((stacks[name], -weights[term] * log_r))

        for name, term in assignment.guide.items():
            if name in analytic:
                continue
            site = guide_nodes[name]
            entropy_term = site["score_parts"].entropy_term
            if torch.is_tensor(entropy_term):
                entropy_term = entropy_term.sum()
            add(name, term, torch_item(site["log_prob_sum"]), entropy_term)

        loss = 0.0  # sum_t w_t T_t, as a float
        surrogate = 0.0  # its pathwise part, as a tensor: one multiply per term
        for term, value in values.items():
            record.terms[term] += value * record.scale
            weight = weights[term]
            if weight == 0.0:
                continue
            part = pathwise.get(term)
            if weight != 1.0:
                value = weight * value
                part = None if part is None else weight * part
            loss = loss + value
            if part is not None:
                surrogate = surrogate + part

        if score_sites:
            downstream_cost = MultiFrameTensor(*costs)
            for site in score_sites:
                cost = downstream_cost.sum_to(site["cond_indep_stack"])
                surrogate = surrogate + (cost * site["score_parts"].score_function).sum()

        if not math.isfinite(loss):
            bad = [f"'{n}' (term '{t}': {v})" for n, t, v in contributions if not math.isfinite(v)]
            raise ValueError(
                f"The loss is {loss}; non-finite contributions come from site(s) "
                f"{', '.join(bad) or 'none alone (overflow in the sum)'}. Check these "
                "sites' parameters and support, or give their term weight 0."
            )
        record.loss += loss * record.scale
        return loss, surrogate
