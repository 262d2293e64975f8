"""Term weights: what a weight may be, its validation, and its value at a step.

A weight is one of

- a float ``>= 0``;
- a schedule: a callable of the step count returning such a float (see
  :mod:`pyro_kl.schedules`);
- a :class:`Controller`: a weight that responds to the term it weighs (see
  :mod:`pyro_kl.controllers`).

One rule gives every term its weight: a term the weights do not name has
weight 1 (:func:`weight_of`). :class:`Weighting` holds the weights, the
``site_terms`` map and the controllers as one immutable, validated value, and
resolves them against a call's terms.
"""

import abc
import warnings
import weakref
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

from ._checks import is_number
from .schedules import check_schedule
from .terms import JOINT, MARGINAL_TERM_JOIN, TERMS, TermAssignment


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

    **A controller belongs to one ELBO.** Its state (a multiplier, a moving
    average, an integral) is the state of one training run, so an instance
    given to a second ELBO while the first is alive is refused; build one per
    ELBO, or pass ``copy.deepcopy(controller)``. A controller that holds no
    state (``shareable = True``, as :class:`~pyro_kl.controllers.Target`) may
    weigh several ELBOs.
    """

    shareable: bool = False
    """Whether one instance may weigh the terms of several ELBOs (it holds no state)."""

    def bind(self, owner: object) -> None:
        """Make ``owner`` (an ELBO) the one whose terms this controller weighs.

        :raises ValueError: if another ELBO that is still alive owns it.
        """
        if self.shareable:
            return
        ref = self.__dict__.get("_owner")
        current = ref() if ref is not None else None
        if current is not None and current is not owner:
            raise ValueError(
                f"{self!r} already weighs the terms of another ELBO "
                f"({type(current).__name__} at {id(current):#x}). A controller holds the "
                "state of one training run, so sharing it would mix the two runs' statistics: "
                "give each ELBO its own controller (build it again, or pass "
                "copy.deepcopy(controller)); to copy an ELBO with its controllers, use "
                "copy.deepcopy(elbo), not copy.copy(elbo)."
            )
        self.__dict__["_owner"] = weakref.ref(owner)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_owner", None)  # a copy belongs to the copied ELBO, or to none yet
        return state

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
    if not is_number(value, finite=False):
        raise ValueError(
            f"The weight of term '{term}'{where} is {value!r}; a weight must be a float "
            ">= 0, a callable of the step count returning one, or a pyro_kl controller."
        )
    value = float(value)
    if not is_number(value) or value < 0:
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
        if isinstance(weight, Controller):
            checked[term] = weight
        elif callable(weight):
            checked[term] = check_schedule(weight, f"The weight of term '{term}'")
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
    terms (see :meth:`Weighting.resolve`)."""
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


def controlled_estimate(values: Mapping[str, Any], terms: Tuple[str, ...], num_data: int):
    """The sum of ``terms`` among ``values`` in nats per datapoint: a controller's estimate
    (a tensor when the values are tensors)."""
    total = sum((values[t] for t in terms if t in values), 0.0)
    return total / num_data


def check_site_terms(site_terms: Optional[Mapping[str, str]]) -> Dict[str, str]:
    """Validate a ``{site name: term name}`` map.

    :raises TypeError: if it is not a mapping.
    :raises ValueError: on a term name that is not a non-empty string, or one
        holding :data:`~pyro_kl.terms.MARGINAL_TERM_JOIN` (reserved for marginals).
    """
    if site_terms is not None and not isinstance(site_terms, MappingABC):
        raise TypeError(
            f"site_terms must be a dict {{site name: term name}}, got "
            f"{type(site_terms).__name__}; e.g. site_terms={{'y': 'classification'}}."
        )
    checked = dict(site_terms or {})
    for site, term in checked.items():
        if not isinstance(term, str) or not term:
            raise ValueError(f"site_terms['{site}'] = {term!r}; term names are non-empty strings.")
        check_term_name(term, f"site_terms['{site}']")
    return checked


def check_term_name(term: str, where: str) -> None:
    """Refuse a user's term name holding the character that joins the terms of a
    model-side marginal (``"+"``).

    :raises ValueError: naming the term and a name to use instead.
    """
    if MARGINAL_TERM_JOIN in term:
        raise ValueError(
            f"{where} names the term {term!r}; '{MARGINAL_TERM_JOIN}' is reserved for the "
            "marginal of several terms (e.g. 'classification+distortion'). Rename the term, "
            f"e.g. {term.replace(MARGINAL_TERM_JOIN, '_')!r}."
        )


class Weighting:
    """What an objective weighs, as one immutable, validated value: the weights
    (floats, schedules, controllers), the ``site_terms`` map, and the
    controllers grouped with the terms they weigh.

    A :class:`~pyro_kl.WeightedELBO` holds one; the presets are factories of
    it; :func:`~pyro_kl.derive_objective` and :func:`~pyro_kl.render_worlds`
    read it. Change it with :meth:`replace`, which validates again.

    :param dict weights: term name -> weight (see :data:`Weight`); terms not
        named have weight 1.
    :param dict site_terms: site name -> term name, overriding the default rule.
    :raises TypeError, ValueError: on weights or a map that are not valid.

    Example::

        weighting = Weighting({"rate": 0.5}, site_terms={"y": "classification"})
        weighting.at(step=0)                 # {'rate': 0.5}
        weighting.replace(weights={"rate": 2.0}).weights  # {'rate': 2.0}
    """

    __slots__ = ("_weights", "_site_terms", "_knobs", "_controllers", "_constant")

    def __init__(
        self,
        weights: Optional[Mapping[str, Weight]] = None,
        site_terms: Optional[Mapping[str, str]] = None,
        *,
        knobs: Optional[Mapping[str, Tuple[str, ...]]] = None,
    ):
        checked = check_weights(weights)
        for term in checked:
            check_term_name(term, "weights")
        self._weights = ReadOnlyMap(checked, "weights")
        self._site_terms = ReadOnlyMap(check_site_terms(site_terms), "site_terms")
        self._knobs = dict(knobs or {})
        self._controllers = tuple(controller_groups(checked))
        self._constant = all(isinstance(w, float) for w in checked.values())

    def __getstate__(self):
        return (dict(self._weights), dict(self._site_terms), self._knobs)

    def __setstate__(self, state):
        weights, site_terms, knobs = state
        self.__init__(weights, site_terms, knobs=knobs)

    @property
    def weights(self) -> ReadOnlyMap:
        """Term name -> weight, read-only."""
        return self._weights

    @property
    def site_terms(self) -> ReadOnlyMap:
        """Site name -> term name, read-only."""
        return self._site_terms

    @property
    def controllers(self) -> Tuple[Tuple[Controller, Tuple[str, ...]], ...]:
        """Each controller with the terms it weighs (one instance on several terms
        controls their sum)."""
        return self._controllers

    def replace(self, **changes: Any) -> "Weighting":
        """A new weighting with ``weights=`` and/or ``site_terms=`` replaced (validated)."""
        unknown = set(changes) - {"weights", "site_terms"}
        if unknown:
            raise TypeError(f"Weighting.replace takes weights= and site_terms=, not {unknown}.")
        return Weighting(
            changes.get("weights", self._weights),
            changes.get("site_terms", self._site_terms),
            knobs=self._knobs,
        )

    @property
    def knobs(self) -> Dict[str, Tuple[str, ...]]:
        """Knob name -> the terms it weighs together (a preset's ``beta``: rate and
        complexity)."""
        return dict(self._knobs)

    def knob(self, name: str) -> Weight:
        """The weight a knob set, read back from the weights.

        :raises AttributeError: if the weights no longer have the knob's shape
            (its terms carry different weights), naming them.
        """
        terms = self._knobs[name]
        weights = [self._weights.get(t, 1.0) for t in terms]
        first = weights[0]
        if all(w is first or (isinstance(w, float) and w == first) for w in weights[1:]):
            return first
        shown = ", ".join(f"{t}={w!r}" for t, w in zip(terms, weights))
        raise AttributeError(
            f"'{name}' weighs {' and '.join(terms)} together, but the weights now differ "
            f"({shown}); read elbo.weights instead, or set '{name}' to give them one value."
        )

    def with_knob(self, name: str, value: Weight) -> "Weighting":
        """A new weighting with every term of knob ``name`` weighted ``value`` (validated)."""
        return self.replace(weights={**self._weights, **{t: value for t in self._knobs[name]}})

    def at(self, step: int) -> Dict[str, float]:
        """Constants and schedules evaluated at ``step``; controllers left out."""
        if self._constant:
            return dict(self._weights)
        return weights_at(self._weights, step)

    def resolve(
        self, values: Mapping[str, Any], assignment: TermAssignment, step: int, num_data: int = 1
    ) -> Tuple[Dict[str, Any], Any]:
        """Term -> weight for every term of ``values``, and the loss's constant offset.

        :param dict values: the call's unweighted terms (mean over particles).
        :param assignment: the sites' terms (for the ``joint`` weight).
        :param int step: the step count (for schedules and controllers).
        :param int num_data: the number of datapoints (for controllers, whose
            estimates are per datapoint).
        :returns: ``(weights, offset)``; the loss is
            ``sum_t weights[t] * values[t] + offset``.
        :raises ValueError: if the guide's joint log-density spans terms of
            different weights and ``weights["joint"]`` is not given, or a
            model-side marginal stands for sites of terms of different weights.
        """
        resolved: Dict[str, Any] = self.at(step)
        offset: Any = 0.0
        for controller, terms in self._controllers:
            estimate = controlled_estimate(values, terms, num_data)
            weight = _controller_weight(controller, terms, step, estimate)
            resolved.update((t, weight) for t in terms)
            offset = offset + num_data * controller.offset(step, estimate)
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

    def check_against(self, assignment: TermAssignment) -> None:
        """Cheap checks of the weights against the terms one model structure feeds,
        run once per structure whether or not Pyro's validation is on.

        :raises ValueError: on a weight naming a term no site feeds and that is
            not one of the registry's, or a controller on a term no site feeds.
        """
        fed = set(assignment.model.values()) | set(assignment.guide.values())
        unknown = sorted(t for t in self._weights if t not in fed and t not in TERMS)
        if unknown:
            raise ValueError(
                f"weights name term(s) {unknown} that no site feeds; this model's terms "
                f"are {sorted(fed)}. Fix the term names, or send sites to them with "
                "site_terms={site: term} or infer={'kl_term': term}."
            )
        groups = [set(terms) for terms in self._knobs.values()]
        groups += [set(terms) for _, terms in self._controllers]
        for term, weight in self._weights.items():
            if term in fed or any(term in g and g & fed for g in groups):
                continue
            if isinstance(weight, Controller):
                raise ValueError(
                    f"A controller weighs term '{term}', which no site of this model "
                    f"feeds (its terms are {sorted(fed)}). Send sites to it with "
                    "site_terms={site: term} or infer={'kl_term': term}."
                )
            if isinstance(weight, float) and weight == 1.0:
                continue
            warnings.warn(
                f"The weight {weight!r} on term '{term}' has no effect: no site of this "
                f"model feeds '{term}' (its terms are {sorted(fed)}). Send sites to it "
                f"with site_terms={{site: '{term}'}} or infer={{'kl_term': '{term}'}}.",
                UserWarning,
                stacklevel=5,
            )
        if assignment.joint and JOINT in self._weights:
            fixed = {t: w for t, w in self._weights.items() if not callable(w)}
            if len({weight_of(t, fixed) for t in assignment.joint_terms()}) > 1:
                warnings.warn(
                    f"The guide's joint log-density at {sorted(assignment.joint)} spans "
                    f"terms {list(assignment.joint_terms())} of different weights; it is "
                    f"weighted by weights['joint'] = {self._weights['joint']!r} as a whole.",
                    UserWarning,
                    stacklevel=5,
                )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Weighting)
            and dict(self._weights) == dict(other._weights)
            and dict(self._site_terms) == dict(other._site_terms)
            and self._knobs == other._knobs
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        site_terms = f", site_terms={self._site_terms!r}" if self._site_terms else ""
        return f"Weighting({self._weights!r}{site_terms})"


def _controller_weight(controller: Controller, terms: Tuple[str, ...], step: int, estimate):
    """A controller's weight: finite, but possibly negative (a float, or a 0-d tensor)."""
    weight = controller.weight(step, estimate)
    if isinstance(weight, torch.Tensor) and weight.numel() == 1:
        return weight
    if not is_number(weight):
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
