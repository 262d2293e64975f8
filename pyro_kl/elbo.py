"""The weighted ELBO: ``loss = sum_t w_t * T_t`` over named information terms."""

import warnings
from typing import Any, Dict, Mapping, NamedTuple, Optional, Union

import torch
from pyro.infer import Trace_ELBO

from . import enumeration
from .distributed import all_reduce_terms
from .estimators import TermEstimates, mean_of, monte_carlo_particle, weighted_loss
from .terms import (
    STANDARD_TERMS,
    TERMS,
    TermAssignment,
    assign_terms,
    num_datapoints,
    structure_key,
)
from .weighting import (
    Controller,
    ReadOnlyMap,
    TermWeights,
    controller_groups,
    per_datapoint,
    Weight,
    check_weights,
    weight_of,
)

_MAX_CACHED_STRUCTURES = 64


class CallEstimate(NamedTuple):
    """The result of one call: the weighted loss, its surrogate, the terms."""

    loss: float
    surrogate: Union[torch.Tensor, float]
    terms: TermEstimates
    weights: Dict[str, float]
    trainable: bool
    num_datapoints: int


class WeightedELBO(Trace_ELBO):
    r"""
    ``KL(real world || dream world)`` split into named terms, each with a weight.

    Pyro's model is the *dream world* Q, the guide together with the data is
    the *real world* P, and Pyro's :class:`~pyro.infer.Trace_ELBO` loss is
    ``I[P;Q] + H``, ``I[P;Q] = KL(P || Q)`` plus the entropy H of the data.
    Every sample site contributes one summand, which feeds one term (see
    :mod:`pyro_kl.terms`): observed sites feed ``distortion``, latents in a
    data plate ``rate``, other latents ``complexity``. This class minimises

    .. math:: \mathcal{L} = \sum_t w_t \, T_t

    with Pyro's estimators: Monte Carlo with score-function terms for
    non-reparameterized guide sites (the downstream cost is weighted); with
    ``analytic_kl=True``, ``kl_divergence(guide, model)`` per latent site
    where it is registered; and, for discrete sites configured for
    enumeration, exact sums (see :mod:`pyro_kl.enumeration`). With no
    weights it gives :class:`~pyro.infer.Trace_ELBO`'s loss and gradients
    (:class:`~pyro.infer.TraceMeanField_ELBO`'s with ``analytic_kl=True``,
    :class:`~pyro.infer.TraceEnum_ELBO`'s for enumerated sites).

    After each call, :attr:`last_terms` holds the unweighted term estimates
    (nats, summed over the data and scaled for subsampling like the loss,
    averaged over particles) and :attr:`last_weights` the weights used, so
    that ``loss == sum(last_weights[t] * last_terms[t])`` (plus a
    controller's constant, see :mod:`pyro_kl.controllers`).

    :param elbo_args: :class:`~pyro.infer.ELBO`'s positional options in
        Pyro's order (``num_particles``, ``max_plate_nesting``, ...).
    :param dict weights: term name -> weight; a float ``>= 0``, a schedule
        (a callable of the step count, see :mod:`pyro_kl.schedules`) or a
        controller (see :mod:`pyro_kl.controllers`). Terms not named have
        weight 1. A weight of 0 removes its term's sites from the loss (an
        infinite log-density there cannot make a NaN); the term is still
        reported. Weights are constants: a tensor that requires grad is refused.
    :param dict site_terms: site name -> term name; overrides the default
        rule and ``infer={"kl_term": ...}`` tags, so a model need not be edited.
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

    .. note:: The step count :attr:`step` (used by schedules and
        controllers) counts training steps: it advances once per
        :meth:`loss_and_grads` (each ``SVI.step``) and once per backward pass
        through a :meth:`differentiable_loss` (a training loop over
        :meth:`~pyro.infer.ELBO.__call__`'s module), so a forward pass that is
        never differentiated (such as the module's initialising call) does not
        count. Save and restore it with :meth:`state_dict` /
        :meth:`load_state_dict`.
    """

    _weight_groups: tuple = ()
    """Terms a preset weighs with one knob, e.g. ``(("rate", "complexity"),)``: a
    weight on a term no site feeds is silent while another term of its group is fed."""

    def __init__(
        self,
        *elbo_args: Any,
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
        super().__init__(*elbo_args, **elbo_kwargs)
        self.weights = weights
        self.site_terms = site_terms
        self.analytic_kl = analytic_kl
        self.step = 0
        self.last_terms: Dict[str, float] = {}
        self.last_weights: Dict[str, float] = {}
        self._enumerated_pairs: Dict[Any, bool] = {}  # (model, guide) -> enumerates?

    # ---- configuration --------------------------------------------------

    @property
    def weights(self) -> ReadOnlyMap:
        """Term name -> weight, read-only; assign a new dict to change them
        (it is validated): ``elbo.weights = {**elbo.weights, "rate": 0.5}``."""
        return self._weights

    @weights.setter
    def weights(self, weights: Optional[Mapping[str, Weight]]) -> None:
        self._weights = ReadOnlyMap(check_weights(weights), "weights")
        self._assignments: Dict[tuple, TermAssignment] = {}  # checked against these weights

    @property
    def site_terms(self) -> Mapping[str, str]:
        """Site name -> term name, read-only; assign a new dict to change it."""
        return self._site_terms

    @site_terms.setter
    def site_terms(self, site_terms: Optional[Mapping[str, str]]) -> None:
        if site_terms is not None and not isinstance(site_terms, Mapping):
            raise TypeError(
                f"site_terms must be a dict {{site name: term name}}, got "
                f"{type(site_terms).__name__}; e.g. site_terms={{'y': 'classification'}}."
            )
        checked = dict(site_terms or {})
        for site, term in checked.items():
            if not isinstance(term, str) or not term:
                raise ValueError(
                    f"site_terms['{site}'] = {term!r}; term names are non-empty strings."
                )
        self._site_terms = ReadOnlyMap(checked, "site_terms")
        self._assignments = {}

    # ---- public API -----------------------------------------------------

    def loss(self, model, guide, *args, **kwargs) -> float:
        """
        :returns: an estimate of the weighted loss ``sum_t w_t T_t``.
        :rtype: float
        """
        with torch.no_grad():
            estimate = self._estimate(model, guide, args, kwargs)
        self._record(estimate)
        return estimate.loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """Estimates the weighted loss and backpropagates its surrogate.

        Gradients are computed once, after every particle's loss is known to
        be finite, so a failing particle leaves no gradient behind.

        :returns: an estimate of the weighted loss.
        :rtype: float
        """
        estimate = self._estimate(model, guide, args, kwargs)
        surrogate = estimate.surrogate
        if estimate.trainable and getattr(surrogate, "requires_grad", False):
            surrogate.backward(retain_graph=self.retain_graph)
        self._record(estimate)
        self._finish_step(estimate)
        return estimate.loss

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The weighted loss as a tensor whose gradient is the estimator's.

        A backward pass through it counts as one training step.
        """
        estimate = self._estimate(model, guide, args, kwargs)
        self._record(estimate)
        surrogate = estimate.surrogate
        if not torch.is_tensor(surrogate):
            return torch.tensor(estimate.loss)
        loss = estimate.loss + (surrogate - surrogate.detach())
        if loss.requires_grad:
            loss.register_hook(lambda grad: self._finish_step(estimate))
        return loss

    def estimate_terms(self, model, guide, *args, **kwargs) -> Dict[str, float]:
        """Estimates the unweighted terms without gradients or side effects:
        :attr:`last_terms`, :attr:`last_weights` and :attr:`step` are kept.

        :returns: term name -> estimate in nats.
        :rtype: dict
        """
        with torch.no_grad():
            return dict(self._estimate(model, guide, args, kwargs).terms.values)

    def terms(self, model, guide, *args, **kwargs) -> Dict[str, float]:
        """Deprecated spelling of :meth:`estimate_terms`."""
        warnings.warn(
            "WeightedELBO.terms() is renamed estimate_terms()", FutureWarning, stacklevel=2
        )
        return self.estimate_terms(model, guide, *args, **kwargs)

    def state_dict(self) -> Dict[str, Any]:
        """The ELBO's state (its step count and its controllers' state), for checkpoints."""
        state: Dict[str, Any] = {"step": self.step}
        controllers = {
            term: weight.state_dict()
            for term, weight in self._weights.items()
            if isinstance(weight, Controller)
        }
        if controllers:
            state["controllers"] = controllers
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`, so schedules and controllers continue where they were.

        :raises ValueError: if the step is missing, negative or not a whole number.
        """
        step = state.get("step") if isinstance(state, Mapping) else None
        if isinstance(step, torch.Tensor) and step.numel() == 1:
            step = step.item()
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step != int(step):
            raise ValueError(
                f"load_state_dict needs {{'step': a whole number >= 0}}, got {state!r}; "
                "pass what elbo.state_dict() returned."
            )
        if step < 0:
            raise ValueError(f"load_state_dict got step={step}; the step count is >= 0.")
        self.step = int(step)
        for term, controller_state in state.get("controllers", {}).items():
            weight = self._weights.get(term)
            if not isinstance(weight, Controller):
                raise ValueError(
                    f"The state holds a controller for term '{term}', but this ELBO's "
                    f"weight there is {weight!r}; build the ELBO with the same weights."
                )
            weight.load_state_dict(controller_state)

    # ---- one call -------------------------------------------------------

    def _estimate(self, model, guide, args, kwargs) -> CallEstimate:
        particles = []
        assignment = None
        trainable = False
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            assignment = self._assignment(model_trace, guide_trace)
            if enumeration.is_packed(guide_trace):
                particle = enumeration.enumerated_particle(model_trace, guide_trace, assignment)
            else:
                particle = monte_carlo_particle(
                    model_trace, guide_trace, assignment, use_analytic_kl=self.analytic_kl
                )
            particles.append(particle)
            trainable = trainable or any(
                site["type"] == "param"
                for trace in (model_trace, guide_trace)
                for site in trace.nodes.values()
            )
        terms = mean_of(particles, self.num_particles)
        step_weights = TermWeights(self._weights, self.step)
        num_data = num_datapoints(model_trace) if step_weights.controllers else 1
        weights, offset = step_weights.resolve(terms.values, assignment, num_data)
        loss, surrogate = weighted_loss(terms, weights, offset)
        return CallEstimate(loss, surrogate, terms, weights, trainable, num_data)

    def _record(self, estimate: CallEstimate) -> None:
        self.last_terms = dict(estimate.terms.values)
        self.last_weights = dict(estimate.weights)

    def _finish_step(self, estimate: CallEstimate) -> None:
        """After a training step: update the controllers, count the step."""
        groups = controller_groups(self._weights)
        if groups:
            values = all_reduce_terms(estimate.terms.values)
            for controller, terms in groups:
                controller.update(self.step, per_datapoint(values, terms, estimate.num_datapoints))
        self.step += 1

    # ---- traces and terms (Pyro's seams) --------------------------------

    def _get_traces(self, model, guide, args, kwargs):
        yield from enumeration.traces(self, super()._get_traces, model, guide, args, kwargs)

    def _get_trace(self, model, guide, args, kwargs):
        return enumeration.trace_pair(self, model, guide, args, kwargs)

    def _assignment(self, model_trace, guide_trace) -> TermAssignment:
        """The term of every site, computed and checked against the weights once per
        trace structure (new weights or a new ``site_terms`` map empty the cache)."""
        key = (structure_key(model_trace), structure_key(guide_trace))
        assignment = self._assignments.get(key)
        if assignment is None:
            assignment = assign_terms(model_trace, guide_trace, self._site_terms)
            self._check_weights_against(assignment)
            if len(self._assignments) >= _MAX_CACHED_STRUCTURES:
                self._assignments.clear()  # a model whose structure keeps changing
            self._assignments[key] = assignment
        return assignment

    def _check_weights_against(self, assignment: TermAssignment) -> None:
        """Cheap checks of the weights against the terms a model feeds, once per
        structure and whether or not Pyro's validation is on."""
        fed = set(assignment.model.values()) | set(assignment.guide.values())
        unknown = sorted(
            t for t in self._weights if t not in fed and t not in TERMS
        )
        if unknown:
            raise ValueError(
                f"weights name term(s) {unknown} that no site feeds; this model's terms "
                f"are {sorted(fed)}. Fix the term names, or send sites to them with "
                "site_terms={site: term} or infer={'kl_term': term}."
            )
        for term, weight in self._weights.items():
            group = next((g for g in self._weight_groups if term in g), (term,))
            if any(t in fed for t in group):
                continue
            if isinstance(weight, Controller):
                raise ValueError(
                    f"A controller weighs term '{term}', which no site of this model "
                    f"feeds (its terms are {sorted(fed)}). Send sites to it with "
                    "site_terms={site: term} or infer={'kl_term': term}."
                )
            if term not in STANDARD_TERMS or (isinstance(weight, float) and weight == 1.0):
                continue
            warnings.warn(
                f"The weight {weight!r} on term '{term}' has no effect: no site of this "
                f"model feeds '{term}' (its terms are {sorted(fed)}). Send sites to it "
                f"with site_terms={{site: '{term}'}} or infer={{'kl_term': '{term}'}}.",
                UserWarning,
                stacklevel=4,
            )
        if assignment.unmatched:
            warnings.warn(
                f"Guide site(s) {list(assignment.unmatched)} are not in the model and not "
                "marked infer={'is_auxiliary': True}. Their log-density still enters the "
                "loss, as in Pyro's ELBOs, and is reported under the term of the model "
                "sites sampled after them ('joint' when there are several). Remove them "
                "from the guide, or mark them auxiliary if they stand for model sites.",
                UserWarning,
                stacklevel=4,
            )
        if assignment.joint:
            spanned = assignment.joint_terms()
            fixed = {t: w for t, w in self._weights.items() if not callable(w)}
            if len({weight_of(t, fixed) for t in spanned}) > 1 and "joint" in self._weights:
                warnings.warn(
                    f"The guide's joint log-density at {sorted(assignment.joint)} spans "
                    f"terms {list(spanned)} of different weights; it is weighted by "
                    f"weights['joint'] = {self._weights['joint']!r} as a whole.",
                    UserWarning,
                    stacklevel=4,
                )
