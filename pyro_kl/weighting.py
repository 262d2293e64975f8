"""Term weights: validation at construction, evaluation at each step."""

import math
import numbers
from typing import Callable, Dict, Mapping, Optional, Union

import torch

from .terms import JOINT, TermAssignment

Weight = Union[float, Callable[[int], float]]
"""A term weight: a float ``>= 0``, or a schedule mapping the step count to one."""


def _check_value(term: str, value, where: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"The weight of term '{term}' {where} is {value!r}; a weight must be a "
            "float >= 0 or a callable of the step count returning one."
        )
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"The weight of term '{term}' {where} is {value}; weights must be finite "
            "and >= 0. Use 0 to remove a term, and a positive float to keep it."
        )
    return value


def check_weights(weights: Optional[Mapping[str, Weight]]) -> Dict[str, Weight]:
    """Validate a ``{term: weight}`` map, keeping schedules as they are.

    :raises ValueError: on a term name that is not a non-empty string, or a
        weight that is negative, NaN, infinite or not a number.
    """
    checked: Dict[str, Weight] = {}
    for term, weight in (weights or {}).items():
        if not isinstance(term, str) or not term:
            raise ValueError(f"Term names must be non-empty strings, got {term!r}.")
        checked[term] = weight if callable(weight) else _check_value(term, weight, "")
    return checked


def weights_at(weights: Mapping[str, Weight], step: int) -> Dict[str, float]:
    """Evaluate every weight at ``step``; a schedule's value is checked too."""
    return {
        term: _check_value(term, weight(step), f"at step {step} (from {weight!r})")
        if callable(weight)
        else weight
        for term, weight in weights.items()
    }


def joint_weight(assignment: TermAssignment, weights: Mapping[str, float]) -> Optional[float]:
    """The weight of the guide's joint log-density (:data:`~pyro_kl.terms.JOINT`).

    An explicit ``weights["joint"]`` wins; otherwise it is the common weight of
    the terms of the sites the joint stands for (1 when it stands for none), and
    ``None`` when those weights differ, so that it cannot be weighted.
    """
    if JOINT in weights:
        return weights[JOINT]
    spanned = {assignment.model[s] for sites in assignment.joint.values() for s in sites}
    values = {weights.get(term, 1.0) for term in spanned}
    if len(values) > 1:
        return None
    return values.pop() if values else 1.0
