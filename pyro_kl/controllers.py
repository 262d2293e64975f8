r"""Controllers: term weights that respond to the terms they weigh.

A fixed β has no meaning in nats: which rate a β-VAE ends at depends on the
model, the data and the optimiser. A controller instead takes a *target* in
nats and sets the weight of a term so that the term reaches it. Pass one
wherever a weight goes::

    WeightedELBO(weights={"rate": Target(4.0)})
    RateDistortionELBO(beta=Target(4.0))               # rate + complexity
    WeightedELBO(weights={"distortion": GECO(30.0)})

**Targets are in nats per datapoint**: the term (a sum over the data, scaled
for subsampling like the loss) divided by the number of datapoints it sums
over, the full size of the model's outermost data plate
(:func:`~pyro_kl.terms.num_datapoints`), so subsampling changes nothing. A
controller passed for several terms (as a preset's ``beta`` weighs rate and
complexity) controls their sum.

- :class:`Target` adds ``slope * |T - N * value|`` to the loss, with ``value``
  a number or a schedule (capacity annealing). It holds no state.
- :class:`GECO` is a Lagrange multiplier λ on the term, updated after each step
  from a moving average of ``T - target``.
- :class:`PIControl` sets the weight with a proportional-integral controller on
  ``T - target``, with anti-windup.

A controller's state is part of the ELBO's :meth:`~pyro_kl.WeightedELBO.state_dict`,
the weight it gave is in :attr:`~pyro_kl.WeightedELBO.last_weights`; a
stateful controller belongs to one ELBO (a second ELBO is refused it: build
one per ELBO, or pass ``copy.deepcopy(controller)``), and
:meth:`~pyro_kl.weighting.Controller.describe` says in words what it is
("GECO on D, target 3.0, now λ = 0.41"). Stateful controllers update from the
terms all-reduced over the processes of :mod:`torch.distributed`, so every
process holds the same weight.
"""

import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

from ._checks import is_number
from .schedules import check_schedule
from .terms import term_symbol
from .weighting import Controller

TargetValue = Union[float, Callable[[int], float]]
"""A target in nats per datapoint: a number, or a schedule (a callable of the step count)."""


def _number(owner: str, name: str, value: Any, *, fix: str) -> float:
    """``value`` as a finite float, or a :class:`ValueError` naming ``owner``'s option."""
    if not is_number(value, finite=False):
        raise ValueError(f"{owner}({name}={value!r}): {name} must be a number; {fix}.")
    if not is_number(value):
        raise ValueError(f"{owner}({name}={value}): {name} must be finite; {fix}.")
    return float(value)


def _check_target(owner: str, target: TargetValue) -> TargetValue:
    if callable(target):
        return check_schedule(target, f"The target of {owner}")
    return _number(
        owner, "target", target,
        fix="pass the target in nats per datapoint, or a schedule of the step count",
    )


def _target_at(owner: str, target: TargetValue, step: int) -> float:
    """The target at ``step`` (a schedule's value is checked)."""
    if not callable(target):
        return target
    return _number(
        owner, "target", target(step),
        fix=f"the schedule {target!r} gave this at step {step}; it must give finite "
        "values in nats per datapoint",
    )


def _describe_target(target: TargetValue, step: int) -> str:
    if not callable(target):
        return f"{target:g}"
    what = target.describe() if hasattr(target, "describe") else repr(target)
    return f"{what}, now {target(step):.3g}"


def _on(terms: Sequence[str]) -> str:
    return " on " + " + ".join(term_symbol(t) for t in terms) if terms else ""


def _finite_estimate(owner: str, estimate: float) -> float:
    if not math.isfinite(estimate):
        raise ValueError(
            f"{owner} got the estimate {estimate} nats per datapoint of the term it "
            "controls; it can only update from finite terms."
        )
    return estimate


def _state_number(owner: str, state: Mapping[str, Any], key: str) -> float:
    if not isinstance(state, Mapping) or key not in state:
        raise ValueError(
            f"{owner}.load_state_dict needs the key {key!r}, got {state!r}; pass what "
            f"{owner}.state_dict() returned."
        )
    return _number(owner, key, state[key], fix="pass what state_dict() returned")


class Target(Controller):
    r"""Pull a term to a target: adds ``slope * |T - N * value|`` to the loss.

    ``T`` is the term (or the sum of the terms) this controller weighs and
    ``N`` the number of datapoints, so ``value`` is in nats per datapoint.
    The weight is ``+slope`` when this step's estimate is at or above the
    target and ``-slope`` below it, and the loss gets the constant
    ``-weight * N * value``, so that the loss equals the penalty exactly
    (Alemi et al., 2018, *Fixing a Broken ELBO*: ``D + |R - σ|``). With a
    schedule as ``value`` it is the capacity annealing of Burgess et al.
    (2018): ``γ |R - C(t)|``.

    **When slope 1 is enough.** Along the rate–distortion frontier ``D(R)``
    the β-VAE optimum of rate R has ``-dD/dR = β``: the curve is steeper than
    1 below the β = 1 rate and flatter above it. ``D + slope·|R - value|`` is
    minimised at ``R = value`` when the penalty is steeper than the curve
    there. A target above the β = 1 rate is reached with any slope ``>= 1``;
    a target below it needs ``slope`` larger than the β whose optimum has that
    rate: with slope 1 the rate stops at the β = 1 optimum, since lowering it
    further costs more distortion than it saves in penalty.

    Under :mod:`torch.distributed` each process takes the sign from its own
    estimate (the target holds no state), so its loss is exactly the penalty
    on its share of the data.

    :param value: the target in nats per datapoint, a number or a schedule
        (a callable of the step count, see :mod:`pyro_kl.schedules`).
    :param float slope: the penalty's slope, ``> 0``.

    Example::

        elbo = RateDistortionELBO(beta=Target(4.0), analytic_kl=True)
        # capacity annealing: the rate target rises from 0 to 25 nats per image
        elbo = RateDistortionELBO(beta=Target(LinearWarmup(25.0, steps=5000), slope=100.0))
    """

    shareable = True  # it holds no state, so several ELBOs may use one instance

    def __init__(self, value: TargetValue, *, slope: float = 1.0):
        self.value = _check_target("Target", value)
        self.slope = _number("Target", "slope", slope, fix="pass a slope > 0, e.g. slope=1.0")
        if self.slope <= 0:
            raise ValueError(
                f"Target(slope={slope}): the slope must be > 0 (it is the penalty "
                "slope·|T - value|); to remove a term, give it weight 0 instead."
            )

    def target(self, step: int) -> float:
        """The target at ``step``, in nats per datapoint."""
        return _target_at("Target", self.value, step)

    def weight(self, step: int, estimate: float) -> float:
        """``+slope`` at or above the target, ``-slope`` below it."""
        return self.slope if estimate >= self.target(step) else -self.slope

    def offset(self, step: int, estimate: float) -> float:
        """``-weight * value``, so that the loss is ``slope * |T - N * value|``."""
        return -self.weight(step, estimate) * self.target(step)

    def describe(self, step: int, *, terms: Sequence[str] = ()) -> str:
        target = _describe_target(self.value, step)
        return f"Target{_on(terms)}, target {target}, slope {self.slope:g}"

    def __repr__(self) -> str:
        return f"Target({self.value!r}, slope={self.slope!r})"


class GECO(Controller):
    r"""A Lagrange multiplier λ constraining a term to a target (Rezende & Viola,
    2018, *Taming VAEs*).

    Typically on the distortion: ``weights={"distortion": GECO(30.0)}``
    minimises the rate subject to ``D <= 30`` nats per datapoint. The loss is
    the Lagrangian ``... + λ (T - N * target)``; after each step

    .. math:: c \leftarrow \alpha c + (1 - \alpha)(T/N - \mathrm{target}),
              \qquad \lambda \leftarrow \mathrm{clamp}(\lambda\, e^{\nu c},
              \lambda_{\min}, \lambda_{\max})

    (the moving average ``c`` starts at the first step's value), so λ grows
    while the term is above its target and shrinks while it is below. The
    multiplier used at a step is the one left by the steps before it.

    :param target: the target in nats per datapoint, a number or a schedule.
    :param float init: the initial multiplier λ, in ``[min_weight, max_weight]``.
    :param float step_size: ν, the step of ``log λ`` per nat of average excess, ``> 0``.
    :param float smoothing: α, the moving average's decay, in ``[0, 1)``.
    :param float min_weight: the smallest λ, ``> 0``.
    :param float max_weight: the largest λ, finite.

    Example::

        elbo = WeightedELBO(weights={"distortion": GECO(30.0, step_size=0.01)})
    """

    def __init__(
        self,
        target: TargetValue,
        *,
        init: float = 1.0,
        step_size: float = 1e-2,
        smoothing: float = 0.99,
        min_weight: float = 1e-6,
        max_weight: float = 1e6,
    ):
        self.target_value = _check_target("GECO", target)
        fix = "see help(pyro_kl.controllers.GECO)"
        self.init = _number("GECO", "init", init, fix=fix)
        self.step_size = _number("GECO", "step_size", step_size, fix=fix)
        self.smoothing = _number("GECO", "smoothing", smoothing, fix=fix)
        self.min_weight = _number("GECO", "min_weight", min_weight, fix=fix)
        self.max_weight = _number("GECO", "max_weight", max_weight, fix=fix)
        if self.step_size <= 0:
            raise ValueError(f"GECO(step_size={step_size}): the step size ν must be > 0.")
        if not 0 <= self.smoothing < 1:
            raise ValueError(
                f"GECO(smoothing={smoothing}): the moving average's decay must be in "
                "[0, 1); 0 uses each step's value alone."
            )
        if not 0 < self.min_weight <= self.init <= self.max_weight:
            raise ValueError(
                f"GECO needs 0 < min_weight <= init <= max_weight, got min_weight="
                f"{min_weight}, init={init}, max_weight={max_weight}; λ is multiplied "
                "by exp(ν c), so it must start positive."
            )
        self.multiplier = self.init
        self.average: Optional[float] = None

    def weight(self, step: int, estimate: float) -> float:
        """The current multiplier λ."""
        return self.multiplier

    def offset(self, step: int, estimate: float) -> float:
        """``-λ * target``: the loss is the Lagrangian."""
        return -self.multiplier * _target_at("GECO", self.target_value, step)

    def update(self, step: int, estimate: float) -> None:
        excess = _finite_estimate("GECO", estimate) - _target_at("GECO", self.target_value, step)
        if self.average is None:
            self.average = excess
        else:
            self.average = self.smoothing * self.average + (1 - self.smoothing) * excess
        log_multiplier = math.log(self.multiplier) + self.step_size * self.average
        log_multiplier = min(max(log_multiplier, math.log(self.min_weight)),
                             math.log(self.max_weight))
        self.multiplier = math.exp(log_multiplier)

    def describe(self, step: int, *, terms: Sequence[str] = ()) -> str:
        return (
            f"GECO{_on(terms)}, target {_describe_target(self.target_value, step)}, "
            f"now λ = {self.multiplier:.2g}"
        )

    def state_dict(self) -> Dict[str, Any]:
        return {"multiplier": self.multiplier, "average": self.average}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        multiplier = _state_number("GECO", state, "multiplier")
        if not self.min_weight <= multiplier <= self.max_weight:
            raise ValueError(
                f"GECO.load_state_dict got λ = {multiplier}, outside [min_weight, "
                f"max_weight] = [{self.min_weight}, {self.max_weight}]; build the GECO "
                "with the settings the state was saved with."
            )
        if "average" not in state:
            raise ValueError(
                f"GECO.load_state_dict needs the key 'average' (the moving average of "
                f"T/N - target, None before the first step), got the keys {sorted(state)}; "
                "without it the average would restart and λ jump. Pass what "
                "GECO.state_dict() returned."
            )
        average = state["average"]
        self.average = None if average is None else _state_number("GECO", state, "average")
        self.multiplier = multiplier

    def __repr__(self) -> str:
        return (
            f"GECO({self.target_value!r}, init={self.init!r}, step_size={self.step_size!r}, "
            f"smoothing={self.smoothing!r}, min_weight={self.min_weight!r}, "
            f"max_weight={self.max_weight!r})"
        )


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))


class PIControl(Controller):
    r"""The weight from a proportional-integral controller on ``T/N - target``
    (Shao et al., 2020, *ControlVAE*).

    With the error ``e = T/N - target`` of the last step, the weight is

    .. math:: w = \mathrm{clamp}\big(k_p\, \sigma(e) + I + w_{\min},\;
              w_{\min}, w_{\max}\big), \qquad I \leftarrow I + k_i\, e

    (ControlVAE's bounded proportional term, σ the logistic function), so the
    weight rises while the term is above its target and falls while it is
    below. Anti-windup: the integral is clamped so that the output stays
    within ``[min_weight, max_weight]``; it never accumulates beyond a bound,
    so the weight leaves a bound as soon as the error changes sign. The
    integral starts
    where the output at zero error is ``init``; the weight used at a step is
    the one the steps before it left.

    :param target: the target in nats per datapoint, a number or a schedule.
    :param float kp: the proportional gain, ``>= 0``.
    :param float ki: the integral gain, ``>= 0`` (per nat of error per step).
    :param float init: the weight before the first update.
    :param float min_weight: the smallest weight, ``>= 0``.
    :param float max_weight: the largest weight (may be ``math.inf``).

    Example::

        elbo = RateDistortionELBO(beta=PIControl(4.0, kp=0.01, ki=0.001))
    """

    def __init__(
        self,
        target: TargetValue,
        *,
        kp: float,
        ki: float,
        init: float = 1.0,
        min_weight: float = 0.0,
        max_weight: float = math.inf,
    ):
        self.target_value = _check_target("PIControl", target)
        fix = "see help(pyro_kl.controllers.PIControl)"
        self.kp = _number("PIControl", "kp", kp, fix=fix)
        self.ki = _number("PIControl", "ki", ki, fix=fix)
        self.init = _number("PIControl", "init", init, fix=fix)
        self.min_weight = _number("PIControl", "min_weight", min_weight, fix=fix)
        if not is_number(max_weight, finite=False) or math.isnan(max_weight):
            raise ValueError(f"PIControl(max_weight={max_weight!r}): pass a number or math.inf.")
        self.max_weight = float(max_weight)
        if self.kp < 0 or self.ki < 0 or self.kp == self.ki == 0:
            raise ValueError(
                f"PIControl(kp={kp}, ki={ki}): the gains must be >= 0 and not both 0, "
                "e.g. kp=0.01, ki=0.001."
            )
        if not 0 <= self.min_weight <= self.init <= self.max_weight:
            raise ValueError(
                f"PIControl needs 0 <= min_weight <= init <= max_weight, got min_weight="
                f"{min_weight}, init={init}, max_weight={max_weight}."
            )
        self.integral = self.init - self.min_weight - 0.5 * self.kp
        self.output = self.init

    def weight(self, step: int, estimate: float) -> float:
        """The weight the steps before this one left."""
        return self.output

    def update(self, step: int, estimate: float) -> None:
        error = _finite_estimate("PIControl", estimate) - _target_at(
            "PIControl", self.target_value, step
        )
        proportional = self.kp * _sigmoid(error)
        # anti-windup: the integral stays where the output is within its bounds
        span = self.max_weight - self.min_weight
        integral = min(max(self.integral + self.ki * error, -proportional), span - proportional)
        self.integral = integral
        self.output = min(max(proportional + integral + self.min_weight, self.min_weight),
                          self.max_weight)

    def describe(self, step: int, *, terms: Sequence[str] = ()) -> str:
        return (
            f"PI control{_on(terms)}, target {_describe_target(self.target_value, step)}, "
            f"now weight {self.output:.2g}"
        )

    def state_dict(self) -> Dict[str, Any]:
        return {"integral": self.integral, "output": self.output}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        integral = _state_number("PIControl", state, "integral")
        output = _state_number("PIControl", state, "output")
        if not self.min_weight <= output <= self.max_weight:
            raise ValueError(
                f"PIControl.load_state_dict got the weight {output}, outside "
                f"[{self.min_weight}, {self.max_weight}]; build the controller with the "
                "settings the state was saved with."
            )
        self.integral, self.output = integral, output

    def __repr__(self) -> str:
        return (
            f"PIControl({self.target_value!r}, kp={self.kp!r}, ki={self.ki!r}, "
            f"init={self.init!r}, min_weight={self.min_weight!r}, max_weight={self.max_weight!r})"
        )
