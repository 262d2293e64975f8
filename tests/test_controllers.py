"""Controllers on the linear-Gaussian model, where the rate-distortion frontier is exact.

Dream world (model): z ~ N(0, 1), x | z ~ N(z, sx^2); real world: the data and the
encoder z | x ~ N(a x, s^2). The beta-VAE optimum is a = 1 / (1 + beta sx^2),
s^2 = beta sx^2 a (see tests/test_closed_form.py), which gives the frontier R(beta),
D(beta) per datapoint in closed form; beta(R) is found by bisection.
"""

import copy
import math
import os

import pyro
import pytest
import torch
import torch.distributed as torch_dist
from pyro.infer import SVI
from pyro.nn import PyroModule, PyroParam
from pyro.optim import Adam

from pyro_kl import GECO, LinearWarmup, PIControl, RateDistortionELBO, Target, WeightedELBO
from pyro_kl.weighting import describe_weight
from tests.test_closed_form import SX, X, exact_distortion, exact_rate, guide, model

N = len(X)
M2 = (X**2).mean().item()


def frontier(beta):
    """Rate and distortion per datapoint of the beta-VAE optimum."""
    a = 1 / (1 + beta * SX**2)
    v = beta * SX**2 * a
    rate = 0.5 * (v + a * a * M2 - 1 - math.log(v))
    distortion = 0.5 * math.log(2 * math.pi * SX**2) + ((1 - a) ** 2 * M2 + v) / (2 * SX**2)
    return rate, distortion


def beta_at(*, rate=None, distortion=None):
    """The beta whose optimum has the given rate (or distortion), by bisection on log beta."""
    lo, hi = -20.0, 20.0
    for _ in range(200):
        mid = (lo + hi) / 2
        r, d = frontier(math.exp(mid))
        too_low = r > rate if rate is not None else d < distortion
        lo, hi = (mid, hi) if too_low else (lo, mid)
    return math.exp((lo + hi) / 2)


def learned_point():
    a, s = pyro.param("a").item(), pyro.param("s").item()
    return exact_rate(a, s) / N, exact_distortion(a, s) / N


def train(elbo, steps, lr=0.02):
    svi = SVI(model, guide, Adam({"lr": lr}), loss=elbo)
    for _ in range(steps):
        svi.step(X)
    return learned_point()


def rate_elbo(weight, **kwargs):
    return WeightedELBO(weights={"rate": weight}, analytic_kl=True, num_particles=8,
                        vectorize_particles=True, **kwargs)


# ---- Target: closed forms in both directions ----------------------------------------


def test_target_above_the_beta_one_rate_is_reached_with_slope_one():
    target = 1.0
    assert target > frontier(1.0)[0] + 0.3
    rate, distortion = train(rate_elbo(Target(target)), 1500)
    assert rate == pytest.approx(target, abs=0.05)
    assert distortion == pytest.approx(frontier(beta_at(rate=target))[1], abs=0.02)


def test_target_below_the_beta_one_rate_needs_a_slope_steeper_than_the_curve():
    target = 0.25
    beta_star = beta_at(rate=target)  # the frontier's slope -dD/dR at the target
    assert beta_star > 2
    # slope 1: lowering the rate below the beta = 1 optimum costs more distortion than
    # it saves in penalty, so the rate stops there
    rate, distortion = train(rate_elbo(Target(target, slope=1.0)), 1500)
    rate_one, distortion_one = frontier(1.0)
    assert rate == pytest.approx(rate_one, abs=0.02)
    assert distortion == pytest.approx(distortion_one, abs=0.02)

    pyro.clear_param_store()
    rate, distortion = train(rate_elbo(Target(target, slope=2 * beta_star)), 1500)
    assert rate == pytest.approx(target, abs=0.05)
    assert distortion == pytest.approx(frontier(beta_star)[1], abs=0.02)


@pytest.mark.parametrize("a, s", [(0.3, 0.5), (0.9, 0.1)])  # rate below and above 1.0 nat
def test_target_loss_is_the_penalty_exactly(a, s):
    elbo = RateDistortionELBO(beta=Target(1.0, slope=3.0), analytic_kl=True)
    loss = elbo.loss_and_grads(model, guide, X, a=a, s=s)
    terms = elbo.last_terms
    assert terms["rate"] == pytest.approx(exact_rate(a, s), rel=1e-5)
    penalty = 3.0 * abs(terms["rate"] - N * 1.0)
    assert loss == pytest.approx(terms["distortion"] + penalty, rel=1e-6)
    sign = 1.0 if terms["rate"] > N else -1.0
    assert elbo.last_weights["rate"] == sign * 3.0


def test_target_gradient_is_the_penalty_gradient():
    a = torch.tensor(0.3, requires_grad=True)
    s = torch.tensor(0.5, requires_grad=True)
    elbo = WeightedELBO(weights={"rate": Target(1.0, slope=3.0), "distortion": 0.0},
                        analytic_kl=True)
    elbo.differentiable_loss(model, guide, X, a=a, s=s).backward()
    exact = 3.0 * (0.5 * (s**2 + a**2 * X**2 - 1 - torch.log(s**2)).sum() - N).abs()
    expected = torch.autograd.grad(exact, [a, s])
    assert a.grad.item() == pytest.approx(expected[0].item(), rel=1e-5)
    assert s.grad.item() == pytest.approx(expected[1].item(), rel=1e-5)


def test_schedule_as_target_is_followed():
    schedule = LinearWarmup(1.0, start=0.4, steps=600)
    elbo = rate_elbo(Target(schedule))
    svi = SVI(model, guide, Adam({"lr": 0.02}), loss=elbo)
    for step in range(1200):
        loss = svi.step(X)
        if step in (300, 1199):  # the loss is the penalty on the schedule's value at this step
            penalty = abs(elbo.last_terms["rate"] - N * schedule(step))
            assert loss == pytest.approx(elbo.last_terms["distortion"] + penalty, rel=1e-6)
        if step == 599:
            midway = learned_point()[0]
    assert midway == pytest.approx(1.0, abs=0.1)
    rate, distortion = learned_point()
    assert rate == pytest.approx(1.0, abs=0.05)
    assert distortion == pytest.approx(frontier(beta_at(rate=1.0))[1], abs=0.02)


# ---- GECO and PI control -----------------------------------------------------------


def test_geco_update_is_the_multiplicative_rule():
    geco = GECO(2.0, init=1.0, step_size=0.1, smoothing=0.5, min_weight=0.5, max_weight=4.0)
    multiplier, average = 1.0, None
    for estimate in [5.0, 3.0, 1.0, 40.0, 40.0, -50.0, -50.0, -50.0]:
        geco.update(0, estimate)
        excess = estimate - 2.0
        average = excess if average is None else 0.5 * average + 0.5 * excess
        multiplier = min(max(multiplier * math.exp(0.1 * average), 0.5), 4.0)
        assert geco.weight(0, 123.0) == pytest.approx(multiplier, rel=1e-12)
        assert geco.offset(0, 123.0) == pytest.approx(-2.0 * multiplier, rel=1e-12)
    assert geco.weight(0, 0.0) == 0.5  # clamped


def test_geco_reaches_a_distortion_target_at_the_closed_form_multiplier():
    target = 0.9  # nats per datapoint, below the beta = 1 distortion
    beta_star = beta_at(distortion=target)
    geco = GECO(target, step_size=0.05, smoothing=0.9)
    elbo = WeightedELBO(weights={"distortion": geco}, analytic_kl=True, num_particles=8,
                        vectorize_particles=True)
    rate, distortion = train(elbo, 2000)
    # lambda D + R has the optimum of the beta-VAE with beta = 1 / lambda
    assert distortion == pytest.approx(target, abs=0.03)
    assert rate == pytest.approx(frontier(beta_star)[0], abs=0.05)
    assert 1 / geco.multiplier == pytest.approx(beta_star, rel=0.15)
    assert describe_weight(geco, elbo.step, terms=["distortion"]) == (
        f"GECO on D, target 0.9, now λ = {geco.multiplier:.2g}"
    )


def test_pi_control_update_with_anti_windup():
    pi = PIControl(1.0, kp=0.2, ki=0.1, init=0.5, min_weight=0.0, max_weight=1.0)
    integral = 0.5 - 0.1  # the output at zero error starts at init
    assert pi.weight(0, 9.0) == 0.5
    for estimate in [3.0, 3.0, 30.0, 30.0, -20.0]:
        pi.update(0, estimate)
        error = estimate - 1.0
        proportional = 0.2 / (1 + math.exp(-error))
        integral = min(max(integral + 0.1 * error, -proportional), 1.0 - proportional)
        expected = proportional + integral
        assert pi.weight(0, 9.0) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert pi.integral == pytest.approx(integral, rel=1e-12)
    # the integral did not wind up while the weight was pinned at 1 (it would be
    # 0.8 + 2 * 2.9 = 6.6): one step of error -21 brings the weight to the bottom
    assert pi.weight(0, 9.0) == 0.0


def test_pi_control_reaches_a_rate_target_at_the_closed_form_beta():
    target = 0.35
    beta_star = beta_at(rate=target)
    pi = PIControl(target, kp=0.5, ki=0.02)
    rate, distortion = train(rate_elbo(pi), 2000)
    assert rate == pytest.approx(target, abs=0.05)
    assert distortion == pytest.approx(frontier(beta_star)[1], abs=0.05)
    assert pi.output == pytest.approx(beta_star, rel=0.15)
    assert "PI control on R, target 0.35" in describe_weight(pi, 0, terms=["rate"])


# ---- state, rendering, distributed ---------------------------------------------------


def _controlled_elbo():
    return WeightedELBO(
        weights={"distortion": GECO(0.9, step_size=0.05), "rate": PIControl(0.5, kp=0.1, ki=0.01)},
        num_particles=2,
    )


def _continue(elbo, optim, steps):
    svi = SVI(model, guide, optim, loss=elbo)
    history = []
    for _ in range(steps):
        loss = svi.step(X)
        history.append((loss, dict(elbo.last_weights), pyro.param("a").item()))
    return history


def test_state_round_trip_resumes_bit_identically():
    elbo, optim = _controlled_elbo(), Adam({"lr": 0.02})
    _continue(elbo, optim, 20)
    checkpoint = {
        "elbo": copy.deepcopy(elbo.state_dict()),
        "params": copy.deepcopy(pyro.get_param_store().get_state()),
        "optim": copy.deepcopy(optim.get_state()),
        "rng": pyro.util.get_rng_state(),
    }
    assert set(checkpoint["elbo"]["controllers"]) == {"distortion", "rate"}
    straight = _continue(elbo, optim, 15)

    pyro.clear_param_store()
    resumed_elbo, resumed_optim = _controlled_elbo(), Adam({"lr": 0.02})
    resumed_elbo.load_state_dict(checkpoint["elbo"])
    pyro.get_param_store().set_state(checkpoint["params"])
    resumed_optim.set_state(checkpoint["optim"])
    pyro.util.set_rng_state(checkpoint["rng"])
    assert resumed_elbo.state_dict() == checkpoint["elbo"]
    assert _continue(resumed_elbo, resumed_optim, 15) == straight  # bit-identical

    fresh = _controlled_elbo()
    assert _continue(fresh, Adam({"lr": 0.02}), 1)[0][1] != straight[0][1]


def test_controller_used_for_two_terms_controls_their_sum():
    target = Target(3.0, slope=2.0)
    elbo = RateDistortionELBO(beta=target)
    elbo.loss_and_grads(model, guide, X)
    assert elbo.last_weights["rate"] == 2.0 * (1 if elbo.last_terms["rate"] >= 3.0 * N else -1)
    assert describe_weight(target, 0, terms=["rate", "complexity"]) == (
        "Target on R + S, target 3, slope 2"
    )


DDP_STEPS, DDP_N = 4, 8


def _ddp_worker(rank, store_path, out_dir):
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                                  world_size=2)
    try:
        pyro.set_rng_seed(rank)  # each process draws its own noise
        x = torch.randn(DDP_N, generator=torch.Generator().manual_seed(3))
        idx = torch.arange(rank * DDP_N // 2, (rank + 1) * DDP_N // 2)

        class Model(PyroModule):
            def forward(self, x):
                with pyro.plate("data", size=DDP_N, subsample=idx):
                    z = pyro.sample("z", pyro.distributions.Normal(0.0, 1.0))
                    pyro.sample("x", pyro.distributions.Normal(z, SX), obs=x)

        class Guide(PyroModule):
            def __init__(self):
                super().__init__()
                self.a = PyroParam(torch.tensor(0.1))

            def forward(self, x):
                with pyro.plate("data", size=DDP_N, subsample=idx):
                    pyro.sample("z", pyro.distributions.Normal(self.a * x, 0.5))

        geco = GECO(0.5, step_size=0.2, smoothing=0.5)
        pi = PIControl(0.2, kp=0.3, ki=0.1)
        elbo = WeightedELBO(weights={"distortion": geco, "rate": pi})
        with pyro.settings.context(module_local_params=True):
            module = elbo(Model(), Guide())
            ddp = DistributedDataParallel(module)
            optim = torch.optim.SGD(module.parameters(), lr=0.01)
            records = []
            for _ in range(DDP_STEPS):
                optim.zero_grad()
                ddp(x[idx]).backward()
                optim.step()
                records.append({"terms": dict(elbo.last_terms), "weights": dict(elbo.last_weights),
                                "state": copy.deepcopy(elbo.state_dict())})
        torch.save(records, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not torch_dist.is_available(), reason="no torch.distributed in this build")
def test_ddp_processes_hold_the_same_weights(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(str(tmp_path / "store"), str(tmp_path)),
                                nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # each process's own terms differ (different halves, different noise) ...
    assert ranks[0][0]["terms"]["distortion"] != ranks[1][0]["terms"]["distortion"]
    # ... yet every process holds the same weights and state at every step
    for first, second in zip(*ranks):
        assert first["weights"] == second["weights"]
        assert first["state"] == second["state"]
    # and that state is the controllers' update from the mean of the processes' terms
    geco, pi = GECO(0.5, step_size=0.2, smoothing=0.5), PIControl(0.2, kp=0.3, ki=0.1)
    for step, (first, second) in enumerate(zip(*ranks)):
        assert first["weights"]["distortion"] == pytest.approx(geco.multiplier, rel=1e-12)
        assert first["weights"]["rate"] == pytest.approx(pi.output, rel=1e-12)
        for controller, term in ((geco, "distortion"), (pi, "rate")):
            mean = (first["terms"][term] + second["terms"][term]) / 2
            controller.update(step, mean / DDP_N)
        assert first["state"]["controllers"]["distortion"]["multiplier"] == pytest.approx(
            geco.multiplier, rel=1e-6
        )


# ---- bad settings --------------------------------------------------------------------


@pytest.mark.parametrize("validation", [True, False])
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Target(1.0, slope=-1.0), "slope must be > 0"),
        (lambda: Target(float("nan")), "target must be finite"),
        (lambda: Target(math.inf), "target must be finite"),
        (lambda: Target("4"), "target must be a number"),
        (lambda: GECO(1.0, init=0.0), "0 < min_weight <= init"),
        (lambda: GECO(1.0, smoothing=1.0), r"decay must be in \[0, 1\)"),
        (lambda: GECO(1.0, step_size=-0.1), "step size"),
        (lambda: PIControl(1.0, kp=-1.0, ki=0.1), "gains must be >= 0"),
        (lambda: PIControl(1.0, kp=0.1, ki=0.1, init=2.0, max_weight=1.0), "init <= max_weight"),
    ],
)
def test_bad_settings_get_clear_errors(validation, make, match):
    pyro.enable_validation(validation)
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("validation", [True, False])
def test_controller_on_a_term_no_site_feeds_is_an_error(validation):
    pyro.enable_validation(validation)
    elbo = WeightedELBO(weights={"classification": Target(1.0)})
    with pytest.raises(ValueError, match="controller weighs term 'classification'"):
        elbo.loss_and_grads(model, guide, X)


@pytest.mark.parametrize("validation", [True, False])
def test_schedule_giving_a_non_finite_target_is_an_error(validation):
    pyro.enable_validation(validation)
    elbo = rate_elbo(Target(lambda step: float("nan")))
    with pytest.raises(ValueError, match="must give finite values"):
        elbo.loss_and_grads(model, guide, X)


def test_load_state_dict_rejects_a_foreign_state():
    geco = GECO(1.0, max_weight=10.0)
    with pytest.raises(ValueError, match="needs the key 'multiplier'"):
        geco.load_state_dict({"integral": 0.0, "output": 1.0})
    with pytest.raises(ValueError, match="outside"):
        geco.load_state_dict({"multiplier": 100.0, "average": 0.0})


def test_targets_are_per_datapoint_of_the_full_data_set():
    """A subsampled plate scales the terms to the whole data set, so the per-datapoint
    estimate a controller sees, and its weight, do not depend on the subsample."""

    def subsampled_model(x, idx, **encoder):
        with pyro.plate("data", size=N, subsample=idx):
            z = pyro.sample("z", pyro.distributions.Normal(0.0, 1.0))
            pyro.sample("x", pyro.distributions.Normal(z, SX), obs=x[idx])

    def subsampled_guide(x, idx, a, s):
        with pyro.plate("data", size=N, subsample=idx):
            pyro.sample("z", pyro.distributions.Normal(a * x[idx], s))

    rate = exact_rate(0.9, 0.3) / N  # about 0.98 nats per datapoint
    for target, sign in ((rate - 0.02, 1.0), (rate + 0.02, -1.0)):
        elbo = WeightedELBO(weights={"rate": Target(target)}, analytic_kl=True)
        elbo.loss_and_grads(subsampled_model, subsampled_guide, X, torch.arange(N), a=0.9, s=0.3)
        assert elbo.last_weights["rate"] == sign
        geco = GECO(target, step_size=1.0, smoothing=0.0)
        elbo = WeightedELBO(weights={"rate": geco}, analytic_kl=True)
        half = torch.arange(0, N, 2)  # every other point: the same second moment, nearly
        estimate = exact_rate(0.9, 0.3, X[half]) * 2 / N
        svi = SVI(subsampled_model, subsampled_guide, Adam({"lr": 0.0}), loss=elbo)
        svi.step(X, half, a=0.9, s=0.3)
        assert math.log(geco.multiplier) == pytest.approx(estimate - target, rel=1e-4)
