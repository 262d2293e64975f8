"""A broad harness of bad inputs and faults across the public API.

Every case is a row of a table: what is run, and the outcome it must have,

- ``Error(type, fragment)``: a clear error, an exception of that type whose
  message holds the fragment (a regular expression naming the problem or the fix);
- ``Warns(fragment)``: the input is legal but suspicious, a ``UserWarning`` says so;
- ``Right(check)``: handled right, the result passes ``check`` (a number that
  could come out wrong: a closed form, an invariant).

Cases that depend on Pyro's validation run with it on and off. Each run is
classified as ``clear`` (the error or warning expected), ``right`` (the right
value), ``unclear`` (an error of another type, or a message without the
fragment), ``silent`` (no error where one is due, or a wrong value), ``hang``
(past :data:`LIMIT` seconds) or ``data loss`` (a file the run should have kept
is gone or changed). The tests assert the expected class; ``python -m
tests.test_bad_inputs`` prints the totals.
"""

import contextlib
import io
import math
import os
import pickle
import re
import signal
import threading
import warnings
from datetime import timedelta
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

import pyro_kl
import pyro_kl.recipes
from pyro_kl import (
    GECO,
    BetaGammaELBO,
    CyclicalAnnealing,
    LinearWarmup,
    PIControl,
    RateDistortionELBO,
    Target,
    TherMLELBO,
    WeightedELBO,
    all_reduce_terms,
)
from pyro_kl import diagnostics as diag
from pyro_kl.distributed import set_collective_timeout

LIMIT = 20
"""Seconds a case may run before it counts as a hang."""

# ---- outcomes ---------------------------------------------------------------------------


class Error(NamedTuple):
    type: type
    fragment: str


class Warns(NamedTuple):
    fragment: str


class Right(NamedTuple):
    check: Callable[[Any], bool]


class DataLoss(Exception):
    """Raised by a case whose files were not kept."""


class Case(NamedTuple):
    id: str
    run: Callable[[], Any]
    expect: Any
    validation: Tuple[bool, ...] = (True, False)
    slow: bool = False


class _Timeout(BaseException):
    pass


@contextlib.contextmanager
def _time_limit(seconds: int):
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def outcome(case: Case, validation: bool) -> Tuple[str, str]:
    """The class of one run of ``case`` and what it said."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(validation)
    try:
        with warnings.catch_warnings(record=True) as caught, _time_limit(LIMIT):
            warnings.simplefilter("always")
            result = case.run()
    except _Timeout:
        return "hang", f"ran past {LIMIT} s"
    except DataLoss as error:
        return "data loss", str(error)
    except Exception as error:  # noqa: BLE001 (the harness classifies every error)
        said = f"{type(error).__name__}: {error}"
        expect = case.expect
        if isinstance(expect, Error) and isinstance(error, expect.type) and re.search(
            expect.fragment, str(error), re.S
        ):
            return "clear", said
        return "unclear", said
    finally:
        pyro.enable_validation(True)
    expect = case.expect
    if isinstance(expect, Warns):
        said = "; ".join(str(w.message) for w in caught)
        if any(re.search(expect.fragment, str(w.message), re.S) for w in caught):
            return "clear", said
        return "silent", f"no warning matching {expect.fragment!r}: {said}"
    if isinstance(expect, Right):
        return ("right", repr(result)) if expect.check(result) else ("silent", repr(result))
    return "silent", f"returned {result!r}"


def expected_class(case: Case) -> str:
    return "right" if isinstance(case.expect, Right) else "clear"


# ---- small programs ---------------------------------------------------------------------

X = torch.linspace(-2.0, 2.5, 6)
SX = 0.5


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, SX), obs=x)


def guide(x):
    a = pyro.param("a", torch.tensor(0.5))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(a * x, 0.7))


def exact_guide(x):
    """The exact posterior of ``model``: N(x / (1 + SX^2), SX^2 / (1 + SX^2))."""
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x / (1 + SX**2), (SX**2 / (1 + SX**2)) ** 0.5))


def no_guide(x):
    pass


def log_marginal(x):
    return dist.Normal(0.0, (1 + SX**2) ** 0.5).log_prob(x)


def exact_rate(x, a=0.5, s=0.7):
    """KL(N(a x, s^2) || N(0, 1)) of each datapoint."""
    return 0.5 * (s**2 + (a * x) ** 2 - 1 - 2 * math.log(s))


def bernoulli_model(x):
    p = pyro.param("p", torch.tensor(0.3))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Bernoulli(p), obs=x)


def enumerated(side: str, strategy: str = "parallel"):
    mark = {"enumerate": strategy}

    def m(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0), infer=mark if side == "model" else {})
            pyro.sample("x", dist.Normal(z, SX), obs=x)

    def g(x):
        if side == "guide":
            with pyro.plate("data", len(x)):
                pyro.sample("z", dist.Normal(0.0, 1.0), infer=mark)

    return m, g


def subsample_model(x, size=None, idx=None):
    with pyro.plate("data", len(x), subsample_size=size, subsample=idx) as i:
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, SX), obs=x[i])


def subsample_guide(x, size=None, idx=None):
    with pyro.plate("data", len(x), subsample_size=size, subsample=idx) as i:
        pyro.sample("z", dist.Normal(0.5 * x[i], 0.7))


def subsample_exact(x, size=None, idx=None):
    with pyro.plate("data", len(x), subsample_size=size, subsample=idx) as i:
        pyro.sample("z", dist.Normal(x[i] / (1 + SX**2), (SX**2 / (1 + SX**2)) ** 0.5))


def train(elbo, steps=2, m=model, g=guide, x=X):
    svi = SVI(m, g, Adam({"lr": 0.01}), elbo)
    for _ in range(steps):
        svi.step(x)
    return elbo


def close(value, expected, tol=1e-5):
    return abs(float(value) - float(expected)) <= tol * max(1.0, abs(float(expected)))


def nan_data():
    x = X.clone()
    x[2] = float("nan")
    return x


# ---- the table ----------------------------------------------------------------------------

CASES: List[Case] = []


def case(id: str, run: Callable[[], Any], expect, validation=(True, False), slow=False) -> None:
    CASES.append(Case(id, run, expect, tuple(validation), slow))


ONCE = (True,)

# ELBO options
for value in (0, -1, 2.5, "3", True, None):
    case(f"num_particles={value!r}", lambda v=value: WeightedELBO(num_particles=v),
         Error(ValueError, r"num_particles=.*whole number >= 1"))
for value in (-1, 1.5, "2"):
    case(f"max_plate_nesting={value!r}", lambda v=value: WeightedELBO(max_plate_nesting=v),
         Error(ValueError, r"max_plate_nesting=.*whole number >= 0"))
case("num_particles=np.int64(2)", lambda: WeightedELBO(num_particles=np.int64(2)).loss(
    model, exact_guide, X), Right(lambda loss: close(loss, -log_marginal(X).sum(), 1e-4)))

# weights
for value, fragment in ((-1.0, "finite and >= 0"), (math.nan, "finite and >= 0"),
                        (math.inf, "finite and >= 0"), ("big", "a weight must be a float"),
                        (None, "a weight must be a float"), ([0.5], "a weight must be a float")):
    for make, name in ((lambda w: WeightedELBO(weights={"rate": w}), "weights"),
                       (lambda w: RateDistortionELBO(beta=w), "beta"),
                       (lambda w: BetaGammaELBO(gamma=w), "gamma")):
        case(f"{name}={value!r}", lambda w=value, make=make: make(w),
             Error(ValueError, fragment), ONCE)
case("analytic_kl='yes'", lambda: WeightedELBO(analytic_kl="yes"),
     Error(TypeError, r"analytic_kl='yes'; pass True"), ONCE)
case("weights list", lambda: WeightedELBO(weights=[("rate", 1.0)]),
     Error(TypeError, r"weights must be a dict"), ONCE)
case("weights empty name", lambda: WeightedELBO(weights={"": 1.0}),
     Error(ValueError, "non-empty strings"), ONCE)
case("weights int name", lambda: WeightedELBO(weights={1: 1.0}),
     Error(ValueError, "non-empty strings"), ONCE)
case("weight requires grad", lambda: WeightedELBO(
    weights={"rate": torch.tensor(1.0, requires_grad=True)}),
    Error(TypeError, r"requires grad.*w.item\(\)"), ONCE)
case("weight 0-d tensor", lambda: train(WeightedELBO(weights={"rate": torch.tensor(0.25)}))
     .last_weights["rate"], Right(lambda w: w == 0.25))
case("weight numpy float", lambda: train(WeightedELBO(weights={"rate": np.float32(0.5)}))
     .last_weights["rate"], Right(lambda w: w == 0.5))
case("weight on 'x+y'", lambda: WeightedELBO(weights={"x+y": 2.0}),
     Error(ValueError, r"'\+'"), ONCE)
case("weight on 'factor' of a model without factors",
     lambda: WeightedELBO(weights={"factor": 5.0}).loss(model, guide, X),
     Warns(r"factor.*no effect"))
case("weight on 'joint' of a model without a joint",
     lambda: WeightedELBO(weights={"joint": 5.0}).loss(model, guide, X),
     Warns(r"joint.*no effect"))
case("weight on a misspelt term", lambda: WeightedELBO(weights={"rtae": 0.5}).loss(model, guide, X),
     Error(ValueError, r"\['rtae'\] that no site feeds.*Fix the term names"))
case("weights and weighting", lambda: WeightedELBO(
    weights={"rate": 1.0}, weighting=pyro_kl.weighting.Weighting()),
    Error(TypeError, "either weighting= or weights="), ONCE)
case("weighting a dict", lambda: WeightedELBO(weighting={"rate": 1.0}),
     Error(TypeError, "weighting must be a pyro_kl.weighting.Weighting"), ONCE)
case("preset with weights=", lambda: RateDistortionELBO(beta=1.0, weights={"rate": 2.0}),
     Error(TypeError, r"weights"), ONCE)
case("therml bad sigma", lambda: TherMLELBO(sigma=-1.0),
     Error(ValueError, "finite and >= 0"), ONCE)


def _set_item():
    WeightedELBO(weights={"rate": 0.5}).weights["rate"] = 1.0


def _del_item():
    del WeightedELBO(weights={"rate": 0.5}).weights["rate"]


def _knob_kept():
    elbo = RateDistortionELBO(beta=2.0)
    with contextlib.suppress(ValueError):
        elbo.beta = -1.0
    return elbo.beta


case("weights[...] = ...", _set_item, Error(TypeError, r"read-only.*elbo.weights = "), ONCE)
case("del weights[...]", _del_item, Error(TypeError, r"read-only"), ONCE)
case("preset knob set negative keeps the old", _knob_kept, Right(lambda b: b == 2.0), ONCE)


def _set_step(value):
    elbo = WeightedELBO()
    elbo.step = value
    return elbo.step


for value in (-1, 2.5, "3", math.nan, None):
    case(f"elbo.step = {value!r}", lambda v=value: _set_step(v),
         Error(ValueError, r"whole number >= 0"), ONCE)
case("elbo.step = np.int64(3)", lambda: _set_step(np.int64(3)), Right(lambda s: s == 3), ONCE)

# calls: data and programs
case("empty batch", lambda: WeightedELBO().loss(model, guide, X[:0]),
     Error(ValueError, r"the batch is empty.*drop_last"))
case("empty batch, vectorised particles", lambda: WeightedELBO(
    num_particles=4, vectorize_particles=True).loss(model, guide, X[:0]),
    Error(ValueError, r"the batch is empty"))
case("bool data under a Bernoulli", lambda: WeightedELBO().loss(
    bernoulli_model, no_guide, torch.tensor([True, False, True])),
    Error(TypeError, r"Site 'x' observes a bool tensor.*x.float\(\)"))
case("empty batch, rao_blackwell=True", lambda: WeightedELBO(rao_blackwell=True).loss(
    model, guide, X[:0]), Error(ValueError, r"the batch is empty.*drop_last"))
case("bool data under a Bernoulli, rao_blackwell=True", lambda: WeightedELBO(
    rao_blackwell=True).loss(bernoulli_model, no_guide, torch.tensor([True, False, True])),
    Error(TypeError, r"Site 'x' observes a bool tensor.*x.float\(\)"))
case("float data under a Bernoulli", lambda: WeightedELBO().loss(
    bernoulli_model, no_guide, torch.tensor([1.0, 0.0, 1.0])),
    Right(lambda loss: close(loss, -(2 * math.log(0.3) + math.log(0.7)))))
for side in ("model", "guide"):
    for strategy in ("parallel", "sequential"):
        case(f"enumerate a Normal in the {side} ({strategy})",
             lambda s=side, t=strategy: WeightedELBO().loss(*enumerated(s, t), X),
             Error(ValueError, r"Site 'z' is marked .*no finite support"))
case("NaN data", lambda: WeightedELBO().loss_and_grads(model, guide, nan_data()),
     Error(ValueError, r"site.* 'x'"))
case("NaN data, a guide that ignores it", lambda: WeightedELBO().loss_and_grads(
    model, lambda x: guide(X), nan_data()), Error(ValueError, r"site.* 'x'"))


def _nan_parameter_guide(x):
    a = pyro.param("a", torch.tensor(math.nan))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(a * x, 0.7))


case("a NaN parameter", lambda: WeightedELBO().loss_and_grads(model, _nan_parameter_guide, X),
     Error(ValueError, r"'z'.*[Cc]heck the"))


def _event_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)


def _batch_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(torch.zeros(2), 1.0))


def _unsafe_model(x):
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyro.sample("x", dist.Normal(z.expand(len(x)), 1.0).to_event(1), obs=x)


def _global_guide(x):
    pyro.sample("z", dist.Normal(pyro.param("q", torch.tensor(0.0)), 1.0))


def _sequential_model(x):
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Bernoulli(0.3), infer={"enumerate": "sequential"})
        pyro.sample("x", dist.Normal(c, 1.0), obs=x)


case("event shapes differ between model and guide", lambda: WeightedELBO().loss(
    _event_model, _batch_guide, X), Error(ValueError, r"site 'z'.*same"))
case("a model that is not vectorisation-safe", lambda: WeightedELBO(
    num_particles=4, vectorize_particles=True).loss(_unsafe_model, _global_guide, X),
    Error(RuntimeError, r"not vectorisation-safe.*vectorize_particles=False"))


def _against_pyro(elbo, pyro_elbo, *program):
    pyro.set_rng_seed(3)
    ours = elbo.loss(*program)
    pyro.set_rng_seed(3)
    return ours, pyro_elbo.loss(*program)


case("the same model without vectorised particles", lambda: _against_pyro(
    WeightedELBO(num_particles=4), Trace_ELBO(num_particles=4), _unsafe_model, _global_guide, X),
    Right(lambda r: close(*r, 1e-6)))


def _enumerated_analytic_complexity():
    def m(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(mu + c, 1.0), obs=x)

    def g(x):
        pyro.sample("mu", dist.Normal(0.5, 0.8))

    elbo = WeightedELBO(analytic_kl=True, max_plate_nesting=1)
    elbo.loss_and_grads(m, g, X)
    return elbo.last_terms["complexity"]


case("analytic complexity beside model-side enumeration", _enumerated_analytic_complexity,
     Right(lambda c: close(c, torch.distributions.kl_divergence(
         dist.Normal(0.5, 0.8), dist.Normal(0.0, 1.0)), 1e-5)))
case("model-side sequential enumeration", lambda: WeightedELBO().loss(
    _sequential_model, no_guide, X),
    Error((ValueError, NotImplementedError), r"sequential enumeration.*parallel"))
case("guide site missing from the model", lambda: WeightedELBO().loss(
    model, lambda x: (guide(x), pyro.sample("extra", dist.Normal(0.0, 1.0))), X),
    Warns(r"'extra'.*not in the model"))
case("exact posterior: loss is -log p(x)", lambda: WeightedELBO().loss(model, exact_guide, X),
     Right(lambda loss: close(loss, -log_marginal(X).sum(), 1e-4)))
case("analytic rate matches the closed form", lambda: train(
    WeightedELBO(analytic_kl=True), steps=1).last_terms["rate"],
    Right(lambda r: close(r, exact_rate(X).sum(), 1e-4)))
case("a controller on a term no site feeds", lambda: WeightedELBO(
    weights={"classification": GECO(1.0)}).loss_and_grads(model, guide, X),
    Error(ValueError, r"classification"))
case("a schedule returning NaN", lambda: WeightedELBO(
    weights={"rate": lambda step: math.nan}).loss(model, guide, X),
    Error(ValueError, r"at step 0"))
case("a schedule returning a negative weight", lambda: WeightedELBO(
    weights={"rate": lambda step: -1.0}).loss(model, guide, X),
    Error(ValueError, r"at step 0.*finite and >= 0"))
case("a schedule returning a string", lambda: WeightedELBO(
    weights={"rate": lambda step: "x"}).loss(model, guide, X),
    Error(ValueError, r"a weight must be a float"))
case("a Target schedule returning NaN", lambda: WeightedELBO(
    weights={"rate": Target(lambda step: math.nan)}).loss(model, guide, X),
    Error(ValueError, r"must give finite values"))
case("pickle after a fit", lambda: pickle.loads(pickle.dumps(train(WeightedELBO()))).step,
     Right(lambda step: step == 2))


def _accumulated():
    """Two backward passes per optimizer step, three optimizer steps."""
    elbo = WeightedELBO(weights={"rate": LinearWarmup(1.0, steps=10)})
    elbo.loss(model, guide, X)  # creates the parameter
    params = [p for _, p in pyro.get_param_store().named_parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01)
    for _ in range(3):
        optimizer.zero_grad()
        for _ in range(2):
            elbo.differentiable_loss(model, guide, X).backward()
        optimizer.step()
    return elbo.step, elbo.last_weights["rate"]


case("gradient accumulation counts optimizer steps", _accumulated,
     Right(lambda r: r == (3, 0.2)))


def _two_threads():
    inside, release = threading.Event(), threading.Event()

    def slow_guide(x):
        inside.set()
        release.wait(5)
        guide(x)

    elbo = WeightedELBO()
    worker = threading.Thread(target=lambda: elbo.loss_and_grads(model, slow_guide, X))
    worker.start()
    inside.wait(5)
    try:
        WeightedELBO().loss_and_grads(model, guide, X)
    finally:
        release.set()
        worker.join()


case("two threads training at once", _two_threads,
     Error(RuntimeError, r"one process per model"), ONCE)

# schedules
for args, kwargs in (((1.0,), {"steps": 0}), ((1.0,), {"steps": -1}), ((1.0,), {"steps": 2.5}),
                     ((math.nan,), {"steps": 10}), ((-1.0,), {"steps": 10}),
                     ((1.0,), {"steps": 10, "delay": -1}), (("a",), {"steps": 10})):
    case(f"LinearWarmup{args}{kwargs}", lambda a=args, k=kwargs: LinearWarmup(*a, **k),
         Error(ValueError, r"must be a (whole number|float|finite)"), ONCE)
for args, kwargs in (((0,), {}), ((10,), {"ratio": 0.0}), ((10,), {"ratio": 1.5}),
                     ((10,), {"low": -1.0}), ((10,), {"high": math.inf})):
    case(f"CyclicalAnnealing{args}{kwargs}", lambda a=args, k=kwargs: CyclicalAnnealing(*a, **k),
         Error(ValueError, r"must be|ratio"), ONCE)
for schedule, name in ((lambda: 0.5, "lambda: 0.5"), (lambda a, b: 0.5, "lambda a, b"),
                       (lambda *, step: 0.5, "lambda *, step")):
    case(f"schedule {name} as a weight", lambda f=schedule: WeightedELBO(weights={"rate": f}),
         Error(TypeError, r"called as f\(step\)"), ONCE)
    case(f"schedule {name} as beta", lambda f=schedule: RateDistortionELBO(beta=f),
         Error(TypeError, r"called as f\(step\)"), ONCE)
    case(f"schedule {name} as a GECO target", lambda f=schedule: GECO(f),
         Error(TypeError, r"called as f\(step\)"), ONCE)
case("LinearWarmup followed", lambda: [LinearWarmup(1.0, steps=4)(s) for s in (0, 2, 4, 9)],
     Right(lambda v: v == [0.0, 0.5, 1.0, 1.0]), ONCE)
case("a warm-up weight is used at its step", lambda: train(
    WeightedELBO(weights={"rate": LinearWarmup(1.0, steps=4)}), steps=3).last_weights["rate"],
    Right(lambda w: close(w, 0.5)))

# controllers
for make, fragment in (
    (lambda: GECO("a"), "target must be a number"),
    (lambda: GECO(math.nan), "target must be finite"),
    (lambda: GECO(1.0, step_size=0.0), "step size"),
    (lambda: GECO(1.0, smoothing=1.0), r"\[0, 1\)"),
    (lambda: GECO(1.0, init=0.0), "min_weight <= init"),
    (lambda: GECO(1.0, min_weight=2.0), "min_weight <= init"),
    (lambda: GECO(1.0, max_weight=math.inf), "must be finite"),
    (lambda: Target(1.0, slope=0.0), "slope must be > 0"),
    (lambda: Target(1.0, slope=-1.0), "slope must be > 0"),
    (lambda: Target(None), "target must be a number"),
    (lambda: PIControl(1.0, kp=0.0, ki=0.0), "not both 0"),
    (lambda: PIControl(1.0, kp=-1.0, ki=0.1), "must be >= 0"),
    (lambda: PIControl(1.0, kp=0.1, ki=0.1, max_weight=math.nan), "math.inf"),
    (lambda: PIControl(1.0, kp=0.1, ki=0.1, init=-1.0), "min_weight <= init"),
):
    case(f"controller {len(CASES)}: {fragment}", make, Error(ValueError, fragment), ONCE)


def _shared(controller, second=lambda c: WeightedELBO(weights={"distortion": c})):
    first = WeightedELBO(weights={"distortion": controller})
    second(controller)
    return first


case("one GECO for two ELBOs", lambda: _shared(GECO(1.0)),
     Error(ValueError, r"already weighs the terms of another ELBO.*deepcopy"), ONCE)
case("one PIControl for two ELBOs", lambda: _shared(PIControl(1.0, kp=0.1, ki=0.1)),
     Error(ValueError, r"already weighs"), ONCE)
case("one GECO for an ELBO and a preset", lambda: _shared(
    GECO(1.0), lambda c: RateDistortionELBO(beta=c)), Error(ValueError, "already weighs"), ONCE)
case("one Target for two ELBOs", lambda: _shared(Target(1.0)) is not None,
     Right(lambda ok: ok), ONCE)
case("GECO state without 'average'", lambda: GECO(1.0).load_state_dict({"multiplier": 2.0}),
     Error(ValueError, r"needs the key 'average'"), ONCE)
case("GECO state from a PIControl", lambda: GECO(1.0).load_state_dict(
    {"integral": 0.0, "output": 1.0}), Error(ValueError, r"needs the key 'multiplier'"), ONCE)
case("GECO state outside its bounds", lambda: GECO(1.0, max_weight=10.0).load_state_dict(
    {"multiplier": 100.0, "average": 0.0}), Error(ValueError, r"outside"), ONCE)
case("GECO state with a string", lambda: GECO(1.0).load_state_dict(
    {"multiplier": "2", "average": None}), Error(ValueError, r"must be a number"), ONCE)
case("PIControl state outside its bounds", lambda: PIControl(
    1.0, kp=0.1, ki=0.1, max_weight=2.0).load_state_dict({"integral": 0.0, "output": 5.0}),
    Error(ValueError, r"outside"), ONCE)


def _geco_rule():
    geco = GECO(0.0, step_size=0.5, smoothing=0.0)
    elbo = train(WeightedELBO(weights={"distortion": geco}), steps=2)
    excess = elbo.last_terms["distortion"] / len(X)  # the second step is still open
    before = geco.multiplier
    elbo.step  # noqa: B018  (the parameters moved: reading the count closes the step)
    return before, excess, geco.multiplier


case("GECO's update is the multiplicative rule", _geco_rule,
     Right(lambda r: r[2] == pytest.approx(r[0] * math.exp(0.5 * r[1]), rel=1e-6)))

# checkpoints


def _geco_elbo():
    return train(WeightedELBO(weights={"distortion": GECO(1.0)}), steps=2)


for state, fragment in (
    ([], r"needs the dict elbo.state_dict\(\) returned"),
    ({}, r"missing \['step'\]"),
    ({"step": 1, "stpe": 2}, r"unexpected \['stpe'\]"),
    ({"step": -1}, r"whole number >= 0"),
    ({"step": 2.5}, r"whole number >= 0"),
    ({"step": "3"}, r"whole number >= 0"),
    ({"step": None}, r"whole number >= 0"),
):
    case(f"load_state_dict({state!r})", lambda s=state: WeightedELBO().load_state_dict(s),
         Error(ValueError, fragment), ONCE)
for value in (np.int64(5), torch.tensor(5), 5.0):
    case(f"load_state_dict(step={value!r})",
         lambda v=value: (lambda e: (e.load_state_dict({"step": v}), e.step)[1])(WeightedELBO()),
         Right(lambda step: step == 5), ONCE)
case("GECO checkpoint without 'controllers'", lambda: _geco_elbo().load_state_dict({"step": 2}),
     Error(ValueError, r"missing \['controllers'\]"), ONCE)
case("GECO checkpoint with 'controller'", lambda: _geco_elbo().load_state_dict(
    {"step": 2, "controller": {}}), Error(ValueError, r"unexpected \['controller'\]"), ONCE)
case("GECO checkpoint for other terms", lambda: _geco_elbo().load_state_dict(
    {"step": 2, "controllers": {"rate": {"multiplier": 1.0, "average": None}}}),
    Error(ValueError, r"controllers for terms \['rate'\]"), ONCE)


def _resume():
    first = _geco_elbo()
    first.step  # noqa: B018
    state = first.state_dict()
    second = WeightedELBO(weights={"distortion": GECO(1.0)})
    second.load_state_dict(state)
    return second.state_dict() == state and second.weights["distortion"].multiplier != 1.0


case("a GECO checkpoint resumes", _resume, Right(lambda ok: ok), ONCE)

# diagnostics
for value in (0, -1, 2.5, True, "10"):
    case(f"iwae_bound(num_samples={value!r})", lambda v=value: diag.iwae_bound(
        model, guide, X, num_samples=v), Error(ValueError, r"num_samples=.*whole number >= 1"))
for value in (0, "2", -3):
    case(f"iwae_bound(chunk_size={value!r})", lambda v=value: diag.iwae_bound(
        model, guide, X, num_samples=4, chunk_size=v), Error(ValueError, r"chunk_size=.*>= 1"))
case("iwae_bound(data_plate='nope')", lambda: diag.iwae_bound(
    model, guide, X, num_samples=2, data_plate="nope"), Error(ValueError, r"data_plate='nope'"))
case("iwae_bound(max_plate_nesting=0) too small", lambda: diag.iwae_bound(
    model, guide, X, num_samples=2, max_plate_nesting=0), Error(ValueError, r"pass a larger"))
case("iwae_bound without data", lambda: diag.iwae_bound(
    guide, guide, X, num_samples=2), Error(ValueError, r"observes no data"))
case("iwae_bound on an enumerated guide", lambda: diag.iwae_bound(
    *enumerated("guide"), X, num_samples=2), Error((ValueError, NotImplementedError),
                                                   r"enumerat"))
case("iwae_bound on x.unsqueeze(-1)", lambda: diag.iwae_bound(
    model, exact_guide, X.unsqueeze(-1), num_samples=3),
    Error(ValueError, r"Site 'z' of the guide has batch shape \(6, 6\)"))
case("iwae_bound on x.unsqueeze(-1), fixed guide", lambda: diag.iwae_bound(
    model, lambda x: exact_guide(X), X.unsqueeze(-1), num_samples=3),
    Error(ValueError, r"Site 'x' of the model .*belong to no plate"))
case("iwae_bound on NaN data", lambda: diag.iwae_bound(
    model, lambda x: exact_guide(X), nan_data(), num_samples=3),
    Error(ValueError, r"site 'x' holds 1 value.*NaN"))
case("iwae_bound on a random subsample", lambda: diag.iwae_bound(
    subsample_model, subsample_exact, X, 3, num_samples=4, chunk_size=2),
    Error(ValueError, r"random subsample.*subsample=idx"))
case("iwae_bound on given indices, in chunks", lambda: diag.iwae_bound(
    subsample_model, subsample_exact, X, None, torch.tensor([1, 4]), num_samples=5,
    chunk_size=2), Right(lambda b: torch.allclose(b, log_marginal(X[[1, 4]]), atol=1e-5)))
case("iwae_bound exact posterior", lambda: diag.iwae_bound(model, exact_guide, X, num_samples=3),
     Right(lambda b: torch.allclose(b, log_marginal(X), atol=1e-5)))
case("evaluate on given subsampled batches", lambda: diag.evaluate(
    subsample_model, subsample_guide, [(X, None, torch.arange(i, i + 2)) for i in (0, 2, 4)],
    elbo=WeightedELBO(analytic_kl=True))["rate"],
    Right(lambda r: close(r, exact_rate(X).mean(), 1e-5)))
case("evaluate with no batches", lambda: diag.evaluate(model, guide, []),
     Error(ValueError, r"got no batches"))
case("evaluate with dict batches", lambda: diag.evaluate(model, guide, [{"x": X}]),
     Error(TypeError, r"batches as tuples"))
case("evaluate on NaN data", lambda: diag.evaluate(model, lambda x: exact_guide(X), [nan_data()]),
     Error(ValueError, r"site 'x' holds 1 value.*NaN"))
case("evaluate on an empty batch", lambda: diag.evaluate(model, guide, [X[:0]]),
     Error(ValueError, r"the batch is empty"))
case("evaluate(elbo=Trace_ELBO())", lambda: diag.evaluate(model, guide, [X], elbo=Trace_ELBO()),
     Error(TypeError, r"needs a pyro_kl ELBO"), ONCE)
case("evaluate(batches=None)", lambda: diag.evaluate(model, guide, None),
     Error(TypeError, r"iterable of batches.*x.split"), ONCE)
case("evaluate(batches=x), a tensor", lambda: diag.evaluate(model, guide, X),
     Error(TypeError, r"iterable of batches.*\[\(x,\)\]"), ONCE)
case("evaluate(batches=x.split(2))", lambda: diag.evaluate(
    model, guide, X.split(2), elbo=WeightedELBO(analytic_kl=True))["rate"],
    Right(lambda r: close(r, exact_rate(X).mean(), 1e-5)), ONCE)
case("elbo_surgery without a code", lambda: diag.elbo_surgery(model, no_guide, X),
     Error(ValueError, r"no code to measure"))
case("rate_per_dimension(num_samples=0)", lambda: diag.rate_per_dimension(
    model, guide, X, num_samples=0), Error(ValueError, r"num_samples=0; use a whole number >= 1"),
    ONCE)
for value in (math.nan, -1.0, math.inf, "0.1", None):
    case(f"active_units(threshold={value!r})", lambda v=value: diag.active_units(
        model, guide, X, threshold=v), Error(ValueError, r"threshold is a variance"), ONCE)
case("active_units on one datapoint", lambda: diag.active_units(model, guide, X[:1]),
     Error(ValueError, r"at least 2 datapoints"), ONCE)
case("active_units of a code that ignores the data", lambda: diag.active_units(
    model, lambda x: exact_guide(torch.zeros_like(x)), X), Right(lambda c: c == {"z": 0}), ONCE)
case("code_length without a bin width", lambda: diag.code_length(
    model, exact_guide, X, num_samples=2), Error(ValueError, r"bin_widths=\{'x'"))
for value in ("abc", [0.1], 0.0, -1.0, math.nan):
    case(f"bin width {value!r}", lambda v=value: diag.code_length(
        model, exact_guide, X, num_samples=2, bin_widths={"x": v}),
        Error(ValueError, r"bin width of site 'x' is .*positive number"), ONCE)
case("bin width on a latent site", lambda: diag.code_length(
    model, exact_guide, X, num_samples=2, bin_widths={"z": 0.1}),
    Error(ValueError, r"not observed data sites"), ONCE)
case("code length in any units", lambda: float(diag.code_length(
    model, exact_guide, X, num_samples=2, bin_widths={"x": 0.01}).sum()),
    Right(lambda c: close(c, -(log_marginal(X) + math.log(0.01)).sum(), 1e-5)), ONCE)

# distributed (no process group: a single process is the whole group)
for terms, fragment in (
    ({"rate": torch.ones(3)}, r"'rate' is a tensor of shape \(3,\)"),
    ({"rate": None}, r"'rate' is None"),
    ({"rate": "1.0"}, r"'rate' is '1.0'"),
    ([1.0, 2.0], r"takes a \{term name: value\} map"),
):
    case(f"all_reduce_terms({terms!r})", lambda t=terms: all_reduce_terms(t),
         Error(ValueError, fragment), ONCE)
case("all_reduce_terms(op='average')", lambda: all_reduce_terms({"rate": 1.0}, op="average"),
     Error(ValueError, r"op='mean' or op='sum'"), ONCE)
case("all_reduce_terms(timeout=0)", lambda: all_reduce_terms({"rate": 1.0}, timeout=0),
     Error(ValueError, r"finite number of seconds > 0"), ONCE)
for value in (0, -1, math.nan, "60", None, timedelta(0)):
    case(f"set_collective_timeout({value!r})", lambda v=value: set_collective_timeout(v),
         Error(ValueError, r"finite number of seconds > 0"), ONCE)
case("all_reduce_terms alone", lambda: all_reduce_terms(
    {"rate": torch.tensor(2.5), "distortion": np.float32(1.5)}),
    Right(lambda t: t == {"distortion": 1.5, "rate": 2.5}), ONCE)

# CompiledSVI (eager: compile=False, so that no compiler runs)


def _compiled(**kwargs):
    from pyro_kl.compile import CompiledSVI

    options = dict(loss=WeightedELBO(), compile=False)
    options.update(kwargs)
    return CompiledSVI(model, guide, Adam({"lr": 0.01}), **options)


case("CompiledSVI with Pyro's Trace_ELBO", lambda: _compiled(loss=Trace_ELBO()),
     Error(TypeError, r"WeightedELBO"), ONCE)
case("CompiledSVI(mode='fastest')", lambda: _compiled(mode="fastest"),
     Error(ValueError, r"mode='fastest'; use one of"), ONCE)
case("CompiledSVI with a torch optimizer", lambda: _compiled(loss=WeightedELBO()) and
     __import__("pyro_kl.compile").compile.CompiledSVI(
         model, guide, torch.optim.Adam, loss=WeightedELBO(), compile=False),
     Error(TypeError, r"optim"), ONCE)
case("CompiledSVI(max_structures=0)", lambda: _compiled(max_structures=0),
     Error(ValueError, r"max_structures=0; use a whole number >= 1"), ONCE)
case("CompiledSVI(backend=3)", lambda: _compiled(backend=3),
     Error(TypeError, r"backend=3; pass a torch.compile backend's name"), ONCE)

# recipes
case("VAE(likelihood='poisson')", lambda: pyro_kl.recipes.VAE(likelihood="poisson"),
     Error(ValueError, r"likelihood='poisson'; use one of"), ONCE)
case("VAE(total_count=0)", lambda: pyro_kl.recipes.VAE(likelihood="binomial", total_count=0),
     Error(ValueError, r"total_count=0; use a whole number >= 1"), ONCE)
case("VAE().make_data(1)", lambda: pyro_kl.recipes.VAE().make_data(1),
     Error(ValueError, r"num_data=1; use a whole number >= 2"), ONCE)
case("VAE().fit(num_steps=-1)", lambda: pyro_kl.recipes.VAE().fit(
    *pyro_kl.recipes.VAE().make_data(4), num_steps=-1),
    Error(ValueError, r"num_steps=-1; use a whole number >= 0"), ONCE)
case("VAE().fit(num_steps=2.5)", lambda: pyro_kl.recipes.VAE().fit(
    *pyro_kl.recipes.VAE().make_data(4), num_steps=2.5),
    Error(ValueError, r"num_steps=2.5; use a whole number >= 0"), ONCE)
for size in ("dim", "latent_dim", "hidden_dim"):
    for value in (0, -1, 2.5):
        case(f"VAE({size}={value!r})", lambda s=size, v=value: pyro_kl.recipes.VAE(**{s: v}),
             Error(ValueError, rf"{size}={value!r}; use a whole number >= 1 \(a size\)"), ONCE)
case("VIB(num_classes=0)", lambda: pyro_kl.recipes.VIB(num_classes=0),
     Error(ValueError, r"num_classes=0; use a whole number >= 1"), ONCE)
case("GaussianMixture(num_components=1.5)",
     lambda: pyro_kl.recipes.GaussianMixture(num_components=1.5),
     Error(ValueError, r"num_components=1.5; use a whole number >= 1"), ONCE)

# pictures and files


def _render(tmp, filename, model_=model, guide_=guide, args=(X,)):
    return pyro_kl.render_worlds(model_, guide_, args, filename=os.path.join(tmp, filename))


def _kept_after_failed_render(tmp):
    path = os.path.join(tmp, "w.gv")
    with open(path, "w") as f:
        f.write("the user's picture")
    with contextlib.suppress(Exception):
        _render(tmp, "w.gv", model_=lambda x: 1 / 0)
    with open(path) as f:
        if f.read() != "the user's picture":
            raise DataLoss("w.gv was changed by a render that failed")
    return True


def _literal_names(tmp):
    def odd(x):
        with pyro.plate("<p>", len(x)):
            z = pyro.sample("<b>z</b>", dist.Normal(0.0, 1.0))
            pyro.sample("a\\lb", dist.Normal(z, 1.0), obs=x)

    def odd_guide(x):
        with pyro.plate("<p>", len(x)):
            pyro.sample("<b>z</b>", dist.Normal(0.0, 1.0))

    _render(tmp, "odd.gv", odd, odd_guide)
    with open(os.path.join(tmp, "odd.gv")) as f:
        source = f.read()
    return "&lt;b&gt;z&lt;/b&gt;" in source or "<b>z</b>" in source


TMP = {}


def tmp_dir():
    import tempfile

    return tempfile.mkdtemp(prefix="pyro_kl_bad_inputs_")


def _kept_when_dot_fails(tmp):
    """A ``dot`` that fails must leave an existing picture as it was."""
    fake = os.path.join(tmp, "bin")
    os.mkdir(fake)
    with open(os.path.join(fake, "dot"), "w") as f:
        f.write("#!/bin/sh\necho 'dot: syntax error' >&2\nexit 1\n")
    os.chmod(os.path.join(fake, "dot"), 0o755)
    path = os.path.join(tmp, "w.svg")
    with open(path, "w") as f:
        f.write("<svg>the user's picture</svg>")
    previous = os.environ["PATH"]
    os.environ["PATH"] = fake + os.pathsep + previous
    try:
        _render(tmp, "w.svg")
    except RuntimeError as error:
        said = str(error)
    else:
        said = "no error"
    finally:
        os.environ["PATH"] = previous
    with open(path) as f:
        if f.read() != "<svg>the user's picture</svg>":
            raise DataLoss("w.svg was emptied by a dot that failed")
    if "dot" not in said:
        raise RuntimeError(f"unclear: {said}")
    return True


case("render_worlds keeps w.svg when dot fails", lambda: _kept_when_dot_fails(tmp_dir()),
     Right(lambda ok: ok), ONCE)
case("render_worlds into a missing folder", lambda: _render(tmp_dir(), "nope/w.gv"),
     Error(FileNotFoundError, r"the folder .*nope' does not exist.*os.makedirs"), ONCE)
case("render_worlds onto a folder", lambda: _render(tmp_dir(), ""),
     Error((IsADirectoryError, ValueError), r"folder|suffix"), ONCE)
case("render_worlds(model, guide, x)", lambda: pyro_kl.render_worlds(model, guide, X),
     Error(ValueError, r"model_args must be a tuple.*model_args=\(x,\)"), ONCE)
case("render_worlds to 'w.xyz'", lambda: _render(tmp_dir(), "w.xyz"),
     Error(ValueError, r"from its suffix '.xyz'.*e.g. .svg"), ONCE)
case("render_worlds to 'w' (no suffix)", lambda: _render(tmp_dir(), "w"),
     Error(ValueError, r"suffix"), ONCE)
case("render_worlds keeps a file when the model fails", lambda: _kept_after_failed_render(
    tmp_dir()), Right(lambda ok: ok), ONCE)
case("render_worlds draws odd names literally", lambda: _literal_names(tmp_dir()),
     Right(lambda ok: ok), ONCE)


def _cli(*argv, keep=("thesis.tex",)):
    """``python -m pyro_kl`` in-process, in a folder holding the user's files."""
    from pyro_kl.cli import main

    folder = tmp_dir()
    for name in keep:
        with open(os.path.join(folder, name), "w") as f:
            f.write("the user's work")
    stderr = io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(stderr):
            main(list(argv))
    except SystemExit as exit:
        message = stderr.getvalue().strip().splitlines()[-1:] or [""]
        if exit.code == 2:
            raise ValueError(message[0]) from None
        raise RuntimeError(f"exit {exit.code}: {message[0]}") from None
    finally:
        os.chdir(cwd)
        for name in keep:
            path = os.path.join(folder, name)
            if not os.path.exists(path) or open(path).read() != "the user's work":
                raise DataLoss(f"{name} in the working folder is gone or changed")
    return "ran"


QUICK = ("--steps", "1", "--no-sweep", "--format", "gv", "--no-progress")
for argv, fragment in (
    (("demo", "--seed", "-1"), r"seed"),
    (("demo", "--seed", "4294967296"), r"seed"),
    (("demo", "--steps", "0"), r"not a positive integer"),
    (("demo", "--beta", "-1"), r"finite number >= 0"),
    (("demo", "--sweep-betas", "a,b"), r"beta"),
    (("demo", "--format", "bmp"), r"invalid choice"),
    (("demo", "--out", "", *QUICK), r"--out"),
    (("demo", "--out", ".", *QUICK), r"--out|folder"),
    (("demo", "--out", "thesis.tex/", *QUICK), r"--out|file|folder"),
    (("gallery", "--out", ""), r"--out"),
    (("nope",), r"invalid choice"),
):
    case("cli " + " ".join(repr(a) if a == "" else a for a in argv),
         lambda a=argv: _cli(*a), Error(ValueError, fragment), ONCE)


def _symlinked_out():
    """``--out latest``, a link to an earlier run's folder: written through, link kept;
    a file of the user's in it is never replaced (the run is refused)."""
    folder = tmp_dir()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        _cli_main("demo", "--out", "run1", *QUICK)
        os.symlink("run1", "latest")
        _cli_main("demo", "--out", "latest", *QUICK)
        left = sorted(os.listdir("."))
        if not os.path.islink("latest") or left != ["latest", "run1"]:
            raise DataLoss(f"the link or the folder was replaced: {left}")
        written = sorted(os.listdir("latest"))
        with open(os.path.join("run1", "notes.txt"), "w") as f:
            f.write("the user's notes")
        try:
            _cli_main("demo", "--out", "latest", *QUICK)
            refused = "no error"
        except RuntimeError as error:
            refused = str(error)
        with open(os.path.join("run1", "notes.txt")) as f:
            if f.read() != "the user's notes":
                raise DataLoss("notes.txt in the linked folder was replaced")
        return written, refused
    finally:
        os.chdir(cwd)


def _cli_main(*argv):
    from pyro_kl.cli import main

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            main(list(argv))
    except SystemExit as exit:
        raise RuntimeError(f"exit {exit.code}: {stderr.getvalue()[-300:]}") from None


case("cli demo --out a symlink to an earlier run", _symlinked_out,
     Right(lambda r: "summary.json" in r[0] and "exit 2" in r[1] and "notes.txt" in r[1]),
     ONCE, slow=True)


# ---- the tests ------------------------------------------------------------------------------

RUNS = [
    pytest.param(c, v, id=f"{c.id}-{'validation' if v else 'no_validation'}",
                 marks=[pytest.mark.slow] if c.slow else [])
    for c in CASES
    for v in c.validation
]


@pytest.mark.parametrize("case, validation", RUNS)
def test_bad_input(case, validation):
    kind, said = outcome(case, validation)
    assert kind == expected_class(case), f"{case.id}: {kind}: {said}"


def test_the_harness_is_broad():
    assert len(RUNS) >= 200
    assert len({c.id for c in CASES}) == len(CASES), "every case has its own name"


def totals(cases: Optional[List[Case]] = None) -> dict:
    """Every run classified: ``{class: count}``, and the runs not as expected."""
    counts: dict = {}
    misses = []
    for c in cases or CASES:
        for v in c.validation:
            kind, said = outcome(c, v)
            counts[kind] = counts.get(kind, 0) + 1
            if kind != expected_class(c):
                misses.append((c.id, v, kind, said[:300]))
    return {"counts": counts, "misses": misses}


if __name__ == "__main__":
    result = totals()
    for miss in result["misses"]:
        print(*miss, sep=" | ")
    print(len(RUNS), "runs:", result["counts"])
