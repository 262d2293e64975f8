"""Weight schedules: callables of the step count, for any term weight.

The step count is the number of training steps an ELBO has taken (its
``step`` attribute; the first step is step 0; see
:class:`~pyro_kl.WeightedELBO` for what counts). Schedules hold no state of
their own, so a run resumed from ``elbo.state_dict()`` continues exactly.
"""

import inspect
from typing import Callable

from ._checks import is_number


def check_schedule(schedule: Callable, where: str) -> Callable:
    """``schedule`` if it can be called as ``f(step)``, else a :class:`TypeError`
    naming the expected signature (at construction, not at the first step).

    :param where: what the schedule is for, for the message ("the weight of term 'rate'").

    Example::

        check_schedule(lambda step: min(1.0, step / 100), "the weight of term 'rate'")
    """
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):  # a builtin or extension callable: nothing to check
        return schedule
    try:
        signature.bind(0)
    except TypeError:
        raise TypeError(
            f"{where} is the callable {schedule!r} with signature {signature}, but a schedule "
            "is called as f(step) with the step count, one positional argument: write "
            "lambda step: ... (or def f(step): ...), or pass a constant float."
        ) from None
    return schedule


def _whole(name: str, value, *, minimum: int) -> int:
    if not is_number(value):
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}.")
    if value != int(value) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}.")
    return int(value)


def _weight(name: str, value) -> float:
    if not is_number(value, finite=False):
        raise ValueError(f"{name} must be a float >= 0 (a weight), got {value!r}.")
    if not is_number(value) or value < 0:
        raise ValueError(f"{name} must be a finite weight >= 0, got {value!r}.")
    return float(value)


class LinearWarmup:
    """Linear warm-up from ``start`` to ``end`` over ``steps`` steps, then constant.

    :param float end: the value after the warm-up.
    :param int steps: number of steps the ramp lasts (``> 0``).
    :param float start: the value at the first step of the ramp.
    :param int delay: steps spent at ``start`` before the ramp begins.

    Example (KL warm-up of a β-VAE)::

        elbo = RateDistortionELBO(beta=LinearWarmup(1.0, steps=1000))
    """

    def __init__(self, end: float = 1.0, *, steps: int, start: float = 0.0, delay: int = 0):
        self.steps = _whole("LinearWarmup's steps", steps, minimum=1)
        self.delay = _whole("LinearWarmup's delay", delay, minimum=0)
        self.end = _weight("LinearWarmup's end", end)
        self.start = _weight("LinearWarmup's start", start)

    def __call__(self, step: int) -> float:
        progress = min(max(step - self.delay, 0) / self.steps, 1.0)
        return self.start + (self.end - self.start) * progress

    def describe(self) -> str:
        """The schedule in words, e.g. ``"warm-up 0→1 over 300 steps"``."""
        delay = f" after {self.delay} steps" if self.delay else ""
        return f"warm-up {self.start:g}→{self.end:g} over {self.steps} steps{delay}"

    def __repr__(self) -> str:
        return (
            f"LinearWarmup(end={self.end}, steps={self.steps}, start={self.start}, "
            f"delay={self.delay})"
        )


class CyclicalAnnealing:
    """Cyclical annealing: repeated linear ramps from ``low`` to ``high``.

    Each cycle of ``period`` steps rises linearly during its first
    ``ratio * period`` steps and stays at ``high`` for the rest (Fu et al.,
    2019, *Cyclical Annealing Schedule*).

    :param int period: steps per cycle (``> 0``).
    :param float ratio: fraction of a cycle spent rising, in ``(0, 1]``.
    :param float low: value at the start of each cycle.
    :param float high: value at the end of each ramp.

    Example::

        elbo = RateDistortionELBO(beta=CyclicalAnnealing(period=500, ratio=0.5))
    """

    def __init__(self, period: int, *, ratio: float = 0.5, low: float = 0.0, high: float = 1.0):
        self.period = _whole("CyclicalAnnealing's period", period, minimum=1)
        if not (is_number(ratio) and 0 < ratio <= 1):
            raise ValueError(f"CyclicalAnnealing's ratio must be in (0, 1], got {ratio!r}.")
        self.ratio = float(ratio)
        self.low = _weight("CyclicalAnnealing's low", low)
        self.high = _weight("CyclicalAnnealing's high", high)

    def __call__(self, step: int) -> float:
        progress = min((step % self.period) / (self.ratio * self.period), 1.0)
        return self.low + (self.high - self.low) * progress

    def describe(self) -> str:
        """The schedule in words, e.g. ``"cyclical 0→1, period 500 steps"``."""
        return f"cyclical {self.low:g}→{self.high:g}, period {self.period} steps"

    def __repr__(self) -> str:
        return (
            f"CyclicalAnnealing(period={self.period}, ratio={self.ratio}, "
            f"low={self.low}, high={self.high})"
        )
