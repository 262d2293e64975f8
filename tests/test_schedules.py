import io
import math

import pyro
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_kl import CyclicalAnnealing, LinearWarmup, RateDistortionELBO
from pyro_kl.weighting import describe_weight

from .model_zoo import MODELS


def test_linear_warmup_values():
    schedule = LinearWarmup(2.0, steps=4, start=0.5, delay=2)
    assert [schedule(t) for t in range(8)] == [0.5, 0.5, 0.5, 0.875, 1.25, 1.625, 2.0, 2.0]


def test_cyclical_annealing_values():
    schedule = CyclicalAnnealing(period=4, ratio=0.5, low=0.0, high=1.0)
    assert [schedule(t) for t in range(9)] == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: LinearWarmup(steps=0), "steps must be a whole number >= 1"),
        (lambda: LinearWarmup(steps=math.inf), "steps must be a whole number"),
        (lambda: LinearWarmup(steps="100"), "steps must be a whole number"),
        (lambda: LinearWarmup(steps=2.5), "steps must be a whole number"),
        (lambda: LinearWarmup(-1.0, steps=10), "end must be a finite weight >= 0"),
        (lambda: LinearWarmup(math.nan, steps=10), "end must be a finite weight"),
        (lambda: LinearWarmup(steps=10, delay=-1), "delay must be a whole number >= 0"),
        (lambda: CyclicalAnnealing(3, ratio=0), r"ratio must be in \(0, 1\]"),
        (lambda: CyclicalAnnealing(0), "period must be a whole number >= 1"),
        (lambda: CyclicalAnnealing(4, high=-2.0), "high must be a finite weight"),
    ],
)
def test_bad_schedule_arguments_fail_when_the_schedule_is_made(make, message):
    pyro.enable_validation(False)  # cheap checks always run
    with pytest.raises(ValueError, match=message):
        make()


def test_schedules_describe_themselves():
    assert LinearWarmup(1.0, steps=300).describe() == "warm-up 0→1 over 300 steps"
    assert describe_weight(LinearWarmup(1.0, steps=300), 100) == (
        "warm-up 0→1 over 300 steps, now 0.333"
    )
    assert describe_weight(0.5, 100) is None


def test_weights_follow_the_schedule_step_by_step():
    beta = LinearWarmup(1.0, steps=3)
    elbo = RateDistortionELBO(beta=beta)
    model, guide, args = MODELS["global_local"]()
    svi = SVI(model, guide, Adam({"lr": 0.01}), loss=elbo)
    for step in range(5):
        loss = svi.step(*args)
        assert elbo.last_weights["rate"] == beta(step)
        assert elbo.last_weights["complexity"] == beta(step)
        assert loss == pytest.approx(
            sum(elbo.last_weights[t] * v for t, v in elbo.last_terms.items()), rel=1e-6
        )
    assert elbo.step == 5
    svi.evaluate_loss(*args)  # evaluation does not advance the schedule
    elbo.estimate_terms(model, guide, *args)
    assert elbo.step == 5


def train(svi, args, steps):
    return [svi.step(*args) for _ in range(steps)]


def test_resumed_run_continues_bit_identically():
    """Checkpoint param store, optimizer, RNG and ELBO; resume; compare exactly."""
    model, guide, args = MODELS["global_local"]()

    def fresh_svi():
        elbo = RateDistortionELBO(beta=CyclicalAnnealing(period=4), num_particles=2)
        optim = Adam({"lr": 0.05})
        return SVI(model, guide, optim, loss=elbo), elbo, optim

    svi, elbo, optim = fresh_svi()
    train(svi, args, 5)
    saved = io.BytesIO()
    torch.save(
        {
            "params": pyro.get_param_store().get_state(),
            "optim": optim.get_state(),
            "rng": pyro.util.get_rng_state(),
            "elbo": elbo.state_dict(),
        },
        saved,
    )
    expected = train(svi, args, 6)
    expected_params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    pyro.clear_param_store()
    saved.seek(0)
    checkpoint = torch.load(saved, weights_only=False)
    svi, elbo, optim = fresh_svi()
    pyro.get_param_store().set_state(checkpoint["params"])
    optim.set_state(checkpoint["optim"])
    pyro.util.set_rng_state(checkpoint["rng"])
    elbo.load_state_dict(checkpoint["elbo"])
    assert train(svi, args, 6) == expected
    for name, value in pyro.get_param_store().items():
        assert torch.equal(value.detach(), expected_params[name])

    # without the ELBO's state the schedule restarts and the run differs
    saved.seek(0)
    checkpoint = torch.load(saved, weights_only=False)
    pyro.get_param_store().set_state(checkpoint["params"])
    pyro.util.set_rng_state(checkpoint["rng"])
    svi, elbo, optim = fresh_svi()
    optim.set_state(checkpoint["optim"])
    assert train(svi, args, 6) != expected
