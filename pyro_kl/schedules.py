"""Weight schedules: callables of the step count, for any term weight.

The step count is the number of gradient steps an ELBO has taken (its
``step`` attribute; the first step is step 0). Schedules hold no state of
their own, so a run resumed from ``elbo.state_dict()`` continues exactly.
"""


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
        if steps <= 0 or delay < 0:
            raise ValueError("LinearWarmup needs steps > 0 and delay >= 0.")
        self.start, self.end, self.steps, self.delay = start, end, steps, delay

    def __call__(self, step: int) -> float:
        progress = min(max(step - self.delay, 0) / self.steps, 1.0)
        return self.start + (self.end - self.start) * progress

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
        if period <= 0 or not 0 < ratio <= 1:
            raise ValueError("CyclicalAnnealing needs period > 0 and 0 < ratio <= 1.")
        self.period, self.ratio, self.low, self.high = period, ratio, low, high

    def __call__(self, step: int) -> float:
        progress = min((step % self.period) / (self.ratio * self.period), 1.0)
        return self.low + (self.high - self.low) * progress

    def __repr__(self) -> str:
        return (
            f"CyclicalAnnealing(period={self.period}, ratio={self.ratio}, "
            f"low={self.low}, high={self.high})"
        )
