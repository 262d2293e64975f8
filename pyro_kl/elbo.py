"""The weighted ELBO: ``loss = sum_t w_t * T_t`` over named information terms.

:class:`WeightedELBO` is a thin adapter between Pyro's ELBO seams and the pure
core: :class:`~pyro_kl.tracing.PairTracer` builds a call's traced pairs,
:func:`~pyro_kl.estimate.estimate` turns them and the
:class:`~pyro_kl.weighting.Weighting` into an
:class:`~pyro_kl.estimate.Estimate`, and the ELBO records it (on training
calls only) and counts steps by the rule of :mod:`pyro_kl.steps`.
"""

import contextlib
import math
import numbers
import threading
import warnings
from collections import OrderedDict
from typing import Any, Dict, Mapping, NamedTuple, Optional

import torch
from pyro.infer import Trace_ELBO
from pyro.infer.util import is_validation_enabled

from . import enumeration
from ._checks import whole_number
from .estimate import Estimate, estimate
from .estimators import check_finite
from .steps import TrainingSteps
from .terms import (
    TermAssignment,
    assign_terms,
    factorise_joint,
    split_factorised,
    structure_key,
    warn_joint,
)
from .tracegraph import check_rao_blackwell, graph_pair
from .tracing import PairTracer, TracedPair, explained_errors, importance_pair
from .weighting import Controller, ReadOnlyMap, Weight, Weighting

_MAX_CACHED_STRUCTURES = 64
_ACTIVE = threading.local()
_TRAINING_THREAD = {"ident": None}
_TRAINING_LOCK = threading.Lock()


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

    After each *training* call (:meth:`loss_and_grads`, or
    :meth:`differentiable_loss` with gradients enabled), :attr:`last_terms`
    holds the unweighted term estimates (nats, summed over the data and scaled
    for subsampling like the loss, averaged over particles) and
    :attr:`last_weights` the weights used, so that
    ``loss == sum(last_weights[t] * last_terms[t])`` (plus a controller's
    constant, see :mod:`pyro_kl.controllers`). They are kept as tensors and read
    back only when read. :meth:`loss` (and so ``SVI.evaluate_loss``) records
    nothing; :meth:`estimate_terms` returns the terms of any data.

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
    :param bool rao_blackwell: :class:`~pyro.infer.TraceGraph_ELBO`'s estimator
        for non-reparameterised guide sites: each term's score function meets
        only that term's costs downstream of the site (provenance and plates),
        and Pyro's baselines (``infer={"baseline": {...}}``) are read, weighted
        (see :mod:`pyro_kl.tracegraph`). With unit weights, TraceGraph_ELBO's
        loss and gradients under the same seed. It is an option, not a class,
        so that every preset takes it; sites configured for enumeration and
        ``analytic_kl=True`` are refused with it.
    :param weighting: a :class:`~pyro_kl.weighting.Weighting` in place of
        ``weights`` and ``site_terms`` (the presets pass theirs).
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
        controllers) counts optimizer steps: the training calls between two
        updates of the parameters are one step, whether they come from
        ``SVI.step``, a PyTorch loop over :meth:`~pyro.infer.ELBO.__call__`'s
        module, gradient accumulation or DDP (see :mod:`pyro_kl.steps`). Save
        and restore it with :meth:`state_dict` / :meth:`load_state_dict`.
    """

    def __init__(
        self,
        *elbo_args: Any,
        weights: Optional[Mapping[str, Weight]] = None,
        site_terms: Optional[Mapping[str, str]] = None,
        analytic_kl: bool = False,
        rao_blackwell: bool = False,
        weighting: Optional[Weighting] = None,
        **elbo_kwargs: Any,
    ):
        super().__init__(*elbo_args, **elbo_kwargs)
        check_elbo_options(self)
        if weighting is None:
            weighting = Weighting(weights, site_terms)
        elif weights is not None or site_terms is not None:
            raise TypeError("Pass either weighting= or weights=/site_terms=, not both.")
        elif not isinstance(weighting, Weighting):
            raise TypeError(
                f"weighting must be a pyro_kl.weighting.Weighting, got {type(weighting).__name__}."
            )
        self.weighting = weighting
        if analytic_kl not in (True, False):
            raise TypeError(
                f"analytic_kl={analytic_kl!r}; pass True (closed-form KL where registered) "
                "or False (Monte Carlo)."
            )
        self.analytic_kl = bool(analytic_kl)
        self.rao_blackwell = check_rao_blackwell(rao_blackwell, analytic_kl=analytic_kl)
        self._steps = TrainingSteps()
        self._tracer = PairTracer()
        self._last = _Recorded({}, {})

    # ---- configuration --------------------------------------------------

    @property
    def weighting(self) -> Weighting:
        """The weights and site terms, as one immutable :class:`~pyro_kl.weighting.Weighting`;
        assign a new one (or new :attr:`weights` / :attr:`site_terms`) to change them."""
        return self._weighting

    @weighting.setter
    def weighting(self, weighting: Weighting) -> None:
        for controller, _ in weighting.controllers:  # one ELBO per controller
            controller.bind(self)
        self._weighting = weighting
        self._assignments: "OrderedDict[tuple, TermAssignment]" = OrderedDict()

    @property
    def weights(self) -> ReadOnlyMap:
        """Term name -> weight, read-only; assign a new dict to change them
        (it is validated): ``elbo.weights = {**elbo.weights, "rate": 0.5}``."""
        return self._weighting.weights

    @weights.setter
    def weights(self, weights: Optional[Mapping[str, Weight]]) -> None:
        self.weighting = self._weighting.replace(weights=weights)

    @property
    def site_terms(self) -> ReadOnlyMap:
        """Site name -> term name, read-only; assign a new dict to change it."""
        return self._weighting.site_terms

    @site_terms.setter
    def site_terms(self, site_terms: Optional[Mapping[str, str]]) -> None:
        self.weighting = self._weighting.replace(site_terms=site_terms)

    @property
    def step(self) -> int:
        """Optimizer steps taken so far (the rule is in :mod:`pyro_kl.steps`)."""
        return self._steps.count

    @step.setter
    def step(self, step: int) -> None:
        self._steps.reset(_whole_step(step))

    @property
    def last_terms(self) -> Dict[str, float]:
        """The last training call's unweighted terms in nats, read back to the host
        when read (``{}`` before the first). :meth:`loss` and ``SVI.evaluate_loss``
        do not change them; use :meth:`estimate_terms` for the terms of other data."""
        return _floats(self._last.terms)

    @property
    def last_weights(self) -> Dict[str, float]:
        """The weights the last training call used."""
        return _floats(self._last.weights)

    @property
    def last_term_tensors(self) -> Dict[str, torch.Tensor]:
        """:attr:`last_terms` as the 0-d tensors they were computed as (no host sync)."""
        return dict(self._last.terms)

    # ---- public API -----------------------------------------------------

    def loss(self, model, guide, *args, **kwargs) -> float:
        """
        An estimate of the weighted loss ``sum_t w_t T_t``, without gradients
        and without recording anything (:attr:`last_terms` and :attr:`step` are kept).

        :rtype: float
        """
        with torch.no_grad():
            result = self._estimate(model, guide, args, kwargs, self._steps.count)
        loss = result.loss.item()
        check_finite(loss, result.contributions)
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """Estimates the weighted loss and backpropagates its surrogate: one
        training call (see :mod:`pyro_kl.steps`).

        Gradients are computed once, after the loss is known to be finite, so a
        failing particle leaves no gradient behind.

        :returns: an estimate of the weighted loss.
        :rtype: float
        """
        with _training_call():
            result = self._estimate(model, guide, args, kwargs, self._steps.count)
            loss = result.loss.item()
            check_finite(loss, result.contributions)
            surrogate = result.surrogate
            if result.trainable and getattr(surrogate, "requires_grad", False):
                surrogate.backward(retain_graph=self.retain_graph)
            self._record(result)
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The weighted loss as a tensor whose gradient is the estimator's.

        With gradients enabled it is a training call (see :mod:`pyro_kl.steps`);
        under :func:`torch.no_grad` nothing is recorded. Under Pyro's validation
        a non-finite loss raises an error naming the sites.
        """
        training = torch.is_grad_enabled()
        with _training_call() if training else contextlib.nullcontext():
            result = self._estimate(model, guide, args, kwargs, self._steps.count)
            if is_validation_enabled() and not torch.compiler.is_compiling():
                check_finite(result.loss.item(), result.contributions)
            surrogate = result.surrogate
            if not torch.is_tensor(surrogate):
                loss = result.loss
            else:
                loss = result.loss + (surrogate - surrogate.detach())
            if training:
                self._record(result)
        return loss

    def estimate_terms(self, model, guide, *args, **kwargs) -> Dict[str, float]:
        """Estimates the unweighted terms without gradients or side effects:
        :attr:`last_terms`, :attr:`last_weights` and :attr:`step` are kept.

        :returns: term name -> estimate in nats.
        :rtype: dict
        """
        with torch.no_grad():
            return _floats(self._estimate(model, guide, args, kwargs, self._steps.count).terms)

    def state_dict(self) -> Dict[str, Any]:
        """The ELBO's state (its step count and its controllers' state), for checkpoints."""
        state: Dict[str, Any] = {"step": self.step}
        controllers = {
            term: weight.state_dict()
            for term, weight in self.weights.items()
            if isinstance(weight, Controller)
        }
        if controllers:
            state["controllers"] = controllers
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`, so schedules and controllers continue where they were.

        :raises ValueError: if the keys are not those :meth:`state_dict` writes
            for this ELBO's weights, or the step is not a whole number ``>= 0``.
        """
        if not isinstance(state, Mapping):
            raise ValueError(
                f"load_state_dict needs the dict elbo.state_dict() returned "
                f"({{'step': ...}}), got {type(state).__name__}."
            )
        expected = set(self.state_dict())
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or extra:
            raise ValueError(
                f"load_state_dict: the state's keys {sorted(state)} are not those this ELBO "
                f"writes ({sorted(expected)}): missing {missing}, unexpected {extra}. Pass "
                "what elbo.state_dict() returned, from an ELBO built with the same weights."
            )
        self._steps.reset(_whole_step(state["step"]))
        controllers = state.get("controllers", {})
        owned = {t for t, w in self.weights.items() if isinstance(w, Controller)}
        if set(controllers) != owned:
            raise ValueError(
                f"The state holds controllers for terms {sorted(controllers)}, but this ELBO's "
                f"controllers weigh {sorted(owned)}; build the ELBO with the same weights."
            )
        for term, controller_state in controllers.items():
            self.weights[term].load_state_dict(controller_state)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_assignments"] = OrderedDict()
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        for controller, _ in self._weighting.controllers:  # the copies are this copy's
            controller.bind(self)

    # ---- one call -------------------------------------------------------

    def _estimate(self, model, guide, args, kwargs, step: int) -> Estimate:
        return estimate(
            self._traced_pairs(model, guide, args, kwargs),
            self._weighting,
            step,
            num_particles=self.num_particles,
            use_analytic_kl=self.analytic_kl,
            rao_blackwell=self.rao_blackwell,
        )

    def _traced_pairs(self, model, guide, args, kwargs):
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            assignment = self._assignment(model_trace, guide_trace, guide)
            split_factorised(assignment, guide, guide_trace)
            yield TracedPair(model_trace, guide_trace, assignment)

    def _record(self, result: Estimate) -> None:
        self._last = _Recorded(result.terms, result.weights)
        self._steps.record(
            params=result.params,
            terms=result.terms,
            num_data=result.num_datapoints,
            controllers=self._weighting.controllers,
        )

    # ---- traces and terms (Pyro's seams) --------------------------------

    def _get_traces(self, model, guide, args, kwargs):
        vectorized = bool(self.vectorize_particles and self.num_particles > 1)
        with explained_errors(model, guide, args, kwargs, vectorized):
            if self.rao_blackwell:  # TraceGraph_ELBO's particle loop: never enumerates
                yield from super()._get_traces(model, guide, args, kwargs)
            else:
                yield from self._tracer.pairs(self, super()._get_traces, model, guide, args,
                                              kwargs)

    def _get_trace(self, model, guide, args, kwargs):
        if self.rao_blackwell:
            return graph_pair(model, guide, args, kwargs, self.max_plate_nesting)
        return importance_pair(model, guide, args, kwargs, self.max_plate_nesting)

    def _assignment(self, model_trace, guide_trace, guide=None) -> TermAssignment:
        """The term of every site, computed and checked against the weights once per
        trace structure (a new weighting empties the cache). A guide's joint density
        that factorises by site is split (:func:`~pyro_kl.terms.factorise_joint`)."""
        key = (structure_key(model_trace), structure_key(guide_trace))
        assignment = self._assignments.get(key)
        if assignment is None:
            assignment = assign_terms(model_trace, guide_trace, self._weighting.site_terms)
            assignment = factorise_joint(assignment, guide, guide_trace)
            warn_joint(assignment, guide_trace)
            self._weighting.check_against(assignment)
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
            self._assignments[key] = assignment
            if len(self._assignments) > _MAX_CACHED_STRUCTURES:
                self._assignments.popitem(last=False)  # a structure that keeps changing
        return assignment

    # ---- the posterior of model-side enumerated sites --------------------

    def compute_marginals(self, model, guide, *args, **kwargs) -> Dict[str, Any]:
        """The posterior marginal of each model-side enumerated site, as
        :meth:`pyro.infer.TraceEnum_ELBO.compute_marginals` computes it with this
        ELBO's options (equal to it value for value).

        They are the *model's* (the dream world's) posterior marginals given the
        data and one draw of the guide, so they do not depend on the weights: a
        weight scales a model-side marginal as a whole (see
        :mod:`pyro_kl.enumeration`), it never tempers the sum inside it. The
        weights shape the model that training reaches; the marginals describe
        that model.

        :returns: site name -> marginal distribution.
        :rtype: dict (an ``OrderedDict``, as Pyro returns)
        :raises NotImplementedError: with ``num_particles > 1`` or sites
            enumerated in the guide, as Pyro's.

        Example::

            @pyro.infer.config_enumerate
            def mixture(x):
                with pyro.plate("data", len(x)):
                    c = pyro.sample("c", dist.Categorical(torch.tensor([0.5, 0.5])))
                    pyro.sample("x", dist.Normal(torch.tensor([-2.0, 2.0])[c], 1.0), obs=x)

            elbo = WeightedELBO(weights={"distortion": 0.5}, max_plate_nesting=1)
            marginals = elbo.compute_marginals(mixture, lambda x: None, torch.tensor([-2.0, 2.0]))
            assert marginals["c"].probs.argmax(-1).tolist() == [0, 1]
        """
        return enumeration.compute_marginals(self, model, guide, *args, **kwargs)

    def sample_posterior(self, model, guide, *args, **kwargs):
        """Runs the model on a draw of its model-side enumerated sites from their
        joint posterior (forward filtering, backward sampling), as
        :meth:`pyro.infer.TraceEnum_ELBO.sample_posterior` does with this ELBO's
        options: the same seed gives the same draw.

        Like :meth:`compute_marginals`, this is the model's posterior, which
        the weights do not change.

        :returns: what the model returns.
        :raises NotImplementedError: with ``num_particles > 1`` or sites
            enumerated in the guide, as Pyro's.
        """
        return enumeration.sample_posterior(self, model, guide, *args, **kwargs)


class _Recorded(NamedTuple):
    """What a training call leaves for logging: the terms (detached) and the weights."""

    terms: Mapping[str, torch.Tensor]
    weights: Mapping[str, Any]


def _floats(values: Mapping[str, Any]) -> Dict[str, float]:
    return {k: float(v) for k, v in values.items()}


def _whole_step(step) -> int:
    if isinstance(step, torch.Tensor) and step.numel() == 1:
        step = step.item()
    if isinstance(step, bool) or not isinstance(step, numbers.Real) or not (
        math.isfinite(step) and step == int(step) and step >= 0
    ):
        raise ValueError(
            f"load_state_dict got step={step!r}; the step count is a whole number >= 0. "
            "Pass what elbo.state_dict() returned."
        )
    return int(step)


def check_elbo_options(elbo) -> None:
    """Pyro's ELBO options, checked with messages that name the fix (Pyro's own
    checks are assertions, or none)."""
    whole_number("num_particles", elbo.num_particles, minimum=1,
                 meaning="the number of samples the loss averages")
    if elbo.max_plate_nesting != float("inf"):
        whole_number("max_plate_nesting", elbo.max_plate_nesting, minimum=0,
                     meaning="how many plates nest, counting a distribution's batch dims; or "
                     "leave it out to have it guessed")


class _training_call:
    """Marks a training call: refuses a second thread training at the same time
    (Pyro's effect handlers live on one global stack, so two threads would mix
    their traces)."""

    def __enter__(self):
        ident = threading.get_ident()
        with _TRAINING_LOCK:
            owner = _TRAINING_THREAD["ident"]
            if owner is not None and owner != ident:
                raise RuntimeError(
                    "Another thread is in a pyro_kl training call. Pyro keeps its effect "
                    "handlers on one global stack, so two models cannot train in two threads "
                    "of one process: run one process per model (e.g. multiprocessing or "
                    "torch.multiprocessing)."
                )
            depth = getattr(_ACTIVE, "depth", 0)
            _ACTIVE.depth = depth + 1
            _TRAINING_THREAD["ident"] = ident
        return self

    def __exit__(self, *exc):
        with _TRAINING_LOCK:
            _ACTIVE.depth -= 1
            if _ACTIVE.depth == 0:
                _TRAINING_THREAD["ident"] = None
        return False
