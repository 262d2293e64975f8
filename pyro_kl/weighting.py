"""Term weights: what a weight may be, its validation, and its value at a step.

A weight is one of

- a float ``>= 0``;
- a schedule: a callable of the step count returning such a float (see
  :mod:`pyro_kl.schedules`);
- a :class:`Controller`: a weight that responds to the term it weighs (see
  :mod:`pyro_kl.controllers`).

One rule gives every term its weight: a term the weights do not name has
weight 1 (:func:`weight_of`). :class:`TermWeights` holds the weights of one
step, evaluated, and resolves them against one particle's terms.
"""

import abc
import math
import numbers
from collections.abc import Mapping as MappingABC
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch

from .terms import JOINT, MARGINAL_TERM_JOIN, TermAssignment


class Controller(abc.ABC):
    """A weight that responds to the term it weighs.

    Pass one wherever a weight goes. The same instance given to several terms
    (as a preset's ``beta`` weighs both ``rate`` and ``complexity``) controls
    their sum. Estimates are in nats per datapoint: the terms divided by the
    number of datapoints (:func:`~pyro_kl.terms.num_datapoints`, the data
    plate's full size, so that subsampling changes nothing).

    Subclasses define :meth:`weight`, and may define :meth:`offset`,
    :meth:`update`, :meth:`describe`, :meth:`state_dict` and
    :meth:`load_state_dict`.
    """

    @abc.abstractmethod
    def weight(self, step: int, estimate: float) -> float:
        """The weight at ``step``, given this call's estimate of the
        controlled terms (nats per datapoint, mean over particles). It must be
        finite; unlike a fixed weight it may be negative (a
        :class:`~pyro_kl.controllers.Target` below its target pushes the
        term up)."""

    def offset(self, step: int, estimate: float) -> float:
        """A constant added to the loss, in nats per datapoint (default 0)."""
        return 0.0

    def update(self, step: int, estimate: float) -> None:
        """Called once after each training step with that step's estimate of
        the controlled terms (nats per datapoint; all-reduced across
        processes under :mod:`torch.distributed`)."""

    def describe(self, step: int, *, terms: Sequence[str] = ()) -> str:
        """What the controller is, in words, with its current state; ``terms``
        are the terms it weighs, if known (e.g. "GECO on D, target 3, now λ = 0.41")."""
        return repr(self)

    def state_dict(self) -> Dict[str, Any]:
        """The controller's state, saved in the ELBO's :meth:`state_dict`."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`."""


Schedule = Callable[[int], float]
Weight = Union[float, Schedule, Controller]
"""A term weight: a float ``>= 0``, a schedule of the step count, or a :class:`Controller`."""


def weight_of(term: str, weights: Mapping[str, float]) -> float:
    """The one rule for default weights: a term the weights do not name has weight 1."""
    return weights.get(term, 1.0)


def check_value(term: str, value, where: str = "") -> float:
    """``value`` as a float weight, or a :class:`ValueError` naming the term and the fix."""
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            raise TypeError(
                f"The weight of term '{term}'{where} is a tensor that requires grad; "
                "weights are constants, not parameters. Pass float(w), or w.item()."
            )
        if value.numel() == 1:
            value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"The weight of term '{term}'{where} is {value!r}; a weight must be a float "
            ">= 0, a callable of the step count returning one, or a pyro_kl controller."
        )
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"The weight of term '{term}'{where} is {value}; weights must be finite "
            "and >= 0. Use 0 to remove a term, and a positive float to keep it."
        )
    return value


def check_weights(weights: Optional[Mapping[str, Weight]]) -> Dict[str, Weight]:
    """Validate a ``{term: weight}`` map, keeping schedules and controllers as they are.

    :raises TypeError: if ``weights`` is not a mapping (a list, say), or a
        weight is a tensor that requires grad.
    :raises ValueError: on a term name that is not a non-empty string, or a
        weight that is negative, NaN, infinite or not a number.
    """
    if weights is None:
        return {}
    if not isinstance(weights, MappingABC):
        raise TypeError(
            f"weights must be a dict {{term name: weight}}, got {type(weights).__name__} "
            f"{weights!r}; e.g. weights={{'rate': 0.5}}."
        )
    checked: Dict[str, Weight] = {}
    for term, weight in weights.items():
        if not isinstance(term, str) or not term:
            raise ValueError(f"Term names must be non-empty strings, got {term!r}.")
        if isinstance(weight, Controller) or callable(weight):
            checked[term] = weight
        else:
            checked[term] = check_value(term, weight)
    return checked


class ReadOnlyMap(MappingABC):
    """A read-only view of an ELBO's map (its :attr:`weights` or
    :attr:`site_terms`). Change it by assigning a new dict, which is
    validated: ``elbo.weights = {**elbo.weights, "rate": 0.5}``.
    """

    def __init__(self, mapping: Mapping, attribute: str):
        self._mapping = dict(mapping)
        self._attribute = attribute

    def __getitem__(self, key):
        return self._mapping[key]

    def __iter__(self) -> Iterator:
        return iter(self._mapping)

    def __len__(self) -> int:
        return len(self._mapping)

    def __setitem__(self, key, value):
        raise TypeError(
            f"elbo.{self._attribute} is read-only; assign a new dict, which is validated: "
            f"elbo.{self._attribute} = {{**elbo.{self._attribute}, {key!r}: {value!r}}}."
        )

    def __delitem__(self, key):
        raise TypeError(
            f"elbo.{self._attribute} is read-only; assign a new dict without {key!r}: "
            f"elbo.{self._attribute} = {{k: v for k, v in elbo.{self._attribute}.items() "
            f"if k != {key!r}}}."
        )

    def __repr__(self) -> str:
        return repr(self._mapping)


def weights_at(weights: Mapping[str, Weight], step: int) -> Dict[str, float]:
    """Every constant and schedule evaluated at ``step`` (a schedule's value is
    checked too); controllers are left out, since their value depends on the
    terms (see :class:`TermWeights`)."""
    return {
        term: weight
        if isinstance(weight, float)
        else check_value(term, weight(step), f" at step {step} (from {weight!r})")
        for term, weight in weights.items()
        if not isinstance(weight, Controller)
    }


def describe_weight(weight: Weight, step: int, *, terms: Sequence[str] = ()) -> Optional[str]:
    """What a weight is, in words, with its value now; ``None`` for a constant.
    ``terms`` are the terms it weighs, named by a controller's description.

    Example::

        describe_weight(LinearWarmup(1.0, steps=300), step=100)
        # 'warm-up 0→1 over 300 steps, now 0.333'
    """
    if isinstance(weight, Controller):
        return weight.describe(step, terms=tuple(terms))
    if isinstance(weight, float):
        return None
    what = weight.describe() if hasattr(weight, "describe") else repr(weight)
    return f"{what}, now {check_value('?', weight(step)):.3g}"


def joint_weight(assignment: TermAssignment, weights: Mapping[str, float]) -> Optional[float]:
    """The weight of the guide's joint log-density (:data:`~pyro_kl.terms.JOINT`).

    An explicit ``weights["joint"]`` wins; otherwise it is the common weight of
    the terms of the sites the joint stands for (1 when it stands for none), and
    ``None`` when those weights differ, so that it cannot be weighted.
    """
    if JOINT in weights:
        return weights[JOINT]
    values = {weight_of(term, weights) for term in assignment.joint_terms()}
    if len(values) > 1:
        return None
    return values.pop() if values else 1.0


def joint_span(assignment: TermAssignment, weights: Mapping[str, float]) -> Dict[str, float]:
    """Term -> weight of every term the guide's joint log-density spans."""
    return {term: weight_of(term, weights) for term in assignment.joint_terms()}


def controller_groups(weights: Mapping[str, Weight]) -> List[Tuple[Controller, Tuple[str, ...]]]:
    """Each controller among ``weights`` with the terms it weighs (one instance
    given to several terms controls their sum)."""
    groups: Dict[int, Tuple[Controller, Tuple[str, ...]]] = {}
    for term, weight in weights.items():
        if isinstance(weight, Controller):
            _, terms = groups.get(id(weight), (weight, ()))
            groups[id(weight)] = (weight, terms + (term,))
    return list(groups.values())


def per_datapoint(values: Mapping[str, float], terms: Tuple[str, ...], num_data: int) -> float:
    """The sum of ``terms`` among ``values``, in nats per datapoint: a controller's estimate."""
    return sum(values.get(t, 0.0) for t in terms) / num_data


class TermWeights:
    """The weights of one step: constants and schedules evaluated, controllers
    kept, ready to be resolved against each particle's terms.

    :param dict weights: term -> weight (as validated by :func:`check_weights`).
    :param int step: the step count.
    """

    def __init__(self, weights: Mapping[str, Weight], step: int):
        self.step = step
        self.fixed = weights_at(weights, step)
        self.controllers = controller_groups(weights)

    def resolve(
        self, values: Mapping[str, float], assignment: TermAssignment, num_data: int = 1
    ) -> Tuple[Dict[str, float], float]:
        """Term -> weight for every term of ``values``, and the constant offset.

        :param dict values: the call's unweighted terms (mean over particles).
        :param assignment: the sites' terms (for the ``joint`` weight).
        :param int num_data: the number of datapoints (for controllers, whose
            estimates are per datapoint).
        :returns: ``(weights, offset)``; the loss is
            ``sum_t weights[t] * values[t] + offset``.
        :raises ValueError: if the guide's joint log-density spans terms of
            different weights and ``weights["joint"]`` is not given, or a
            model-side marginal stands for sites of terms of different weights.
        """
        resolved = dict(self.fixed)
        offset = 0.0
        for controller, terms in self.controllers:
            estimate = per_datapoint(values, terms, num_data)
            weight = _controller_weight(controller, terms, self.step, estimate)
            resolved.update((t, weight) for t in terms)
            offset += num_data * controller.offset(self.step, estimate)
        used = {term: weight_of(term, resolved) for term in values}
        for term in values:
            if MARGINAL_TERM_JOIN in term and term not in resolved:
                used[term] = _marginal_weight(term, resolved)
        if JOINT in values:
            used[JOINT] = joint_weight(assignment, resolved)
            if used[JOINT] is None:
                raise ValueError(
                    f"The guide's joint log-density at {sorted(assignment.joint)} spans "
                    f"terms whose weights differ ({joint_span(assignment, resolved)}), so it "
                    "cannot be split between them. Use a guide that samples each site on "
                    "its own (e.g. AutoNormal), equal weights, or set weights['joint']."
                )
        return used, offset


def _controller_weight(controller: Controller, terms: Tuple[str, ...], step: int,
                       estimate: float) -> float:
    """A controller's weight as a float: finite, but possibly negative."""
    weight = controller.weight(step, estimate)
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(
        weight
    ):
        raise ValueError(
            f"The controller {controller!r} on {list(terms)} gave the weight {weight!r} at "
            f"step {step}; a controller's weight must be a finite number."
        )
    return float(weight)


def _marginal_weight(term: str, weights: Mapping[str, float]) -> float:
    """The common weight of the terms a model-side marginal stands for."""
    parts = term.split(MARGINAL_TERM_JOIN)
    values = {part: weight_of(part, weights) for part in parts}
    if len(set(values.values())) > 1:
        raise ValueError(
            f"A discrete site summed out in the model (the dream world) is marginalised "
            f"together with sites of the terms {parts}, whose weights differ ({values}). "
            "That marginal, -log sum_z model(z) model(x|z), is one summand and cannot be "
            "split between terms. Give these terms equal weights, or enumerate the discrete "
            f"site in the guide instead, where each term can be weighted (last_terms['{term}'] "
            "names the marginal)."
        )
    return values[parts[0]]
