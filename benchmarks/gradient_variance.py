"""Gradient variance and step time of ``rao_blackwell=True`` against Pyro's TraceGraph_ELBO.

Run ``python benchmarks/gradient_variance.py`` (about two minutes on one
loaded CPU core; ``--help`` lists the options). It writes
``benchmarks/results/gradient_variance.json``.

On three models with non-reparameterised latents (two Bernoulli latents; a
two-layer sigmoid belief net in a data plate; a Gaussian mixture with a
Categorical per datapoint, sampled, not enumerated), at fixed parameters:

* the trace of the gradient covariance of the guide's parameters over
  ``--draws`` seeds (seed ``s`` for draw ``s`` in every estimator, so the
  draws are paired), for Pyro's ``Trace_ELBO`` and ``TraceGraph_ELBO``,
  ``WeightedELBO`` (Trace_ELBO's estimator, weighted) and
  ``WeightedELBO(rao_blackwell=True)``;
* at unit weights and at ``RateDistortionELBO(beta)``'s weights. Pyro has no
  weighted ELBO, but ``D + β·(R + S) = β·(D/β + R + S)``: Pyro's estimators on
  the model with its observed sites scaled by ``1/β`` (``poutine.scale``),
  their gradients times β, are the reference at β;
* steps per second of ``SVI`` with ``RateDistortionELBO(beta, rao_blackwell=True)``
  against ``TraceGraph_ELBO`` on the same model, interleaved in rounds (the
  order shuffled each round, CPU time of this process), and the median over
  rounds of the per-round ratio.
"""

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO
from pyro.optim import Adam
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure import Variant, interleaved_rates, median_ratio  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyro_kl import RateDistortionELBO  # noqa: E402


def two_bernoulli():
    """z1 ~ Bernoulli, z2 | z1 ~ Bernoulli, x | z1, z2 ~ Normal; the guide samples
    z1 then z2 | z1."""
    x = torch.tensor(1.5)

    def model(obs_scale=1.0):
        z1 = pyro.sample("z1", dist.Bernoulli(0.3))
        z2 = pyro.sample("z2", dist.Bernoulli(0.2 + 0.6 * z1))
        with poutine.scale(scale=obs_scale):
            pyro.sample("x", dist.Normal(z1 + 2.0 * z2, 1.0), obs=x)

    def guide(obs_scale=1.0):
        q1 = pyro.param("q1", torch.tensor(0.0))
        q2 = pyro.param("q2", torch.tensor([0.0, 0.5]))
        z1 = pyro.sample("z1", dist.Bernoulli(logits=q1))
        pyro.sample("z2", dist.Bernoulli(logits=q2[z1.long()]))

    return model, guide


class _SBN(nn.Module):
    def __init__(self, top: int, mid: int, data: int):
        super().__init__()
        self.decode_top = nn.Linear(top, mid)
        self.decode_mid = nn.Linear(mid, data)
        self.encode_mid = nn.Linear(data, mid)
        self.encode_top = nn.Linear(mid, top)


def sigmoid_belief_net(*, n: int = 8, top: int = 3, mid: int = 5,
                       data: int = 8):
    """A two-layer sigmoid belief net (Neal 1992) in a data plate: h2 -> h1 -> x,
    binary; the guide reads x -> h1 -> h2."""
    generator = torch.Generator().manual_seed(1)
    x = (torch.rand(n, data, generator=generator) < 0.4).float()
    net = _SBN(top, mid, data)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=generator))

    def model(obs_scale=1.0):
        pyro.module("sbn", net)
        with pyro.plate("data", n):
            h2 = pyro.sample("h2", dist.Bernoulli(torch.full((top,), 0.5)).to_event(1))
            h1 = pyro.sample("h1", dist.Bernoulli(logits=net.decode_top(h2)).to_event(1))
            with poutine.scale(scale=obs_scale):
                pyro.sample("x", dist.Bernoulli(logits=net.decode_mid(h1)).to_event(1), obs=x)

    def guide(obs_scale=1.0):
        pyro.module("sbn", net)
        with pyro.plate("data", n):
            h1 = pyro.sample("h1", dist.Bernoulli(logits=net.encode_mid(x)).to_event(1))
            pyro.sample("h2", dist.Bernoulli(logits=net.encode_top(h1)).to_event(1))

    return model, guide


def plated_categorical(*, n: int = 10):
    """A Gaussian mixture: a global location (reparameterised) and a Categorical
    component per datapoint, sampled (not enumerated)."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(n, generator=generator) * 1.5
    locs = torch.tensor([-2.0, 0.0, 2.0])

    def model(obs_scale=1.0):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        with pyro.plate("data", n):
            c = pyro.sample("c", dist.Categorical(torch.ones(3) / 3))
            with poutine.scale(scale=obs_scale):
                pyro.sample("x", dist.Normal(mu + locs[c], 1.0), obs=x)

    def guide(obs_scale=1.0):
        m = pyro.param("m", torch.tensor(0.1))
        logits = pyro.param("logits", torch.zeros(n, 3))
        pyro.sample("mu", dist.Normal(m, 0.5))
        with pyro.plate("data", n):
            pyro.sample("c", dist.Categorical(logits=logits))

    return model, guide


MODELS: Dict[str, Callable] = {
    "two_bernoulli": two_bernoulli,
    "sigmoid_belief_net": sigmoid_belief_net,
    "plated_categorical": plated_categorical,
}


def _gradients(elbo, model, guide, seed: int, obs_scale: float) -> torch.Tensor:
    """One draw under ``seed``: every parameter's gradient, flattened; with the observed
    sites scaled by ``obs_scale`` and the gradient multiplied by ``1 / obs_scale``."""
    pyro.set_rng_seed(seed)
    factor = 1.0 / obs_scale
    with poutine.trace(param_only=True) as params:
        elbo.loss_and_grads(model, guide, obs_scale)
    flat = []
    for name in sorted(params.trace.nodes):
        value = params.trace.nodes[name]["value"].unconstrained()
        flat.append(torch.zeros_like(value).reshape(-1) if value.grad is None
                    else factor * value.grad.reshape(-1))
        value.grad = None
    return torch.cat(flat)


def variance_row(make_model, beta: float, draws: int, seed: int) -> dict:
    """Trace of the gradient covariance of each estimator at ``beta`` (1: unit weights)."""
    model, guide = make_model()
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    _gradients(Trace_ELBO(), model, guide, seed, 1.0)  # creates the parameters
    estimators = {
        "Trace_ELBO": (Trace_ELBO(), 1.0 / beta),
        "TraceGraph_ELBO": (TraceGraph_ELBO(), 1.0 / beta),
        "pyro_kl WeightedELBO": (RateDistortionELBO(beta), 1.0),
        "pyro_kl rao_blackwell": (RateDistortionELBO(beta, rao_blackwell=True), 1.0),
    }
    row: Dict[str, dict] = {}
    draws_of = {}
    for name, (elbo, obs_scale) in estimators.items():
        grads = torch.stack(
            [_gradients(elbo, model, guide, seed + s, obs_scale) for s in range(draws)]
        )
        draws_of[name] = grads
        row[name] = {
            "trace_cov": grads.var(dim=0).sum().item(),
            "mean_grad_norm": grads.mean(dim=0).norm().item(),
        }
    paired = draws_of["pyro_kl rao_blackwell"] - draws_of["TraceGraph_ELBO"]
    row["max |paired difference| rao_blackwell - TraceGraph_ELBO"] = paired.abs().max().item()
    graph = row["TraceGraph_ELBO"]["trace_cov"]
    row["ratio rao_blackwell / TraceGraph_ELBO"] = row["pyro_kl rao_blackwell"]["trace_cov"] / graph
    row["ratio Trace_ELBO / TraceGraph_ELBO"] = row["Trace_ELBO"]["trace_cov"] / graph
    return row


def speed_row(make_model, beta: float, rounds: int, steps: int, seed: int) -> dict:
    """Steps per second of SVI, pyro_kl's path against TraceGraph_ELBO, interleaved."""
    model, guide = make_model()
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    graph = SVI(model, guide, Adam({"lr": 1e-3}), TraceGraph_ELBO())
    ours = SVI(model, guide, Adam({"lr": 1e-3}), RateDistortionELBO(beta, rao_blackwell=True))
    variants = [
        Variant("TraceGraph_ELBO", lambda: graph.step(1.0 / beta)),
        Variant("pyro_kl rao_blackwell", lambda: ours.step(1.0)),
    ]
    rates = interleaved_rates(variants, rounds=rounds, steps=steps, seed=seed)
    return {
        "steps_per_second": {name: statistics.median(r) for name, r in rates.items()},
        "speed ratio rao_blackwell / TraceGraph_ELBO": median_ratio(
            rates, "pyro_kl rao_blackwell", "TraceGraph_ELBO"
        ),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=200, help="gradient draws (default: 200)")
    parser.add_argument("--beta", type=float, default=0.5,
                        help="the non-unit beta of RateDistortionELBO (default: 0.5)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default: 7)")
    parser.add_argument("--steps", type=int, default=20,
                        help="steps per variant per round (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    parser.add_argument("--out", default=None,
                        help="JSON path (default: benchmarks/results/gradient_variance.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    result: Dict[str, dict] = {
        "machine": {
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "pyro": pyro.__version__, "torch_threads": 1,
        },
        "settings": {**vars(args), "seeds": f"{args.seed}..{args.seed + args.draws - 1}"},
        "models": {},
    }
    for name, make_model in MODELS.items():
        entry = {
            f"variance beta={beta}": variance_row(make_model, beta, args.draws, args.seed)
            for beta in (1.0, args.beta)
        }
        entry["speed"] = speed_row(make_model, args.beta, args.rounds, args.steps, args.seed)
        result["models"][name] = entry
        print_model(name, entry)
    out = Path(args.out or Path(__file__).parent / "results" / "gradient_variance.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(f"\nwritten: {out}")
    return result


def print_model(name: str, entry: dict) -> None:
    print(f"\n{name}")
    for key, row in entry.items():
        if key == "speed":
            ratio = row["speed ratio rao_blackwell / TraceGraph_ELBO"]
            print(f"  step-rate ratio rao_blackwell / TraceGraph_ELBO: {ratio['median']:.3f} "
                  f"(rounds {ratio['min']:.3f}..{ratio['max']:.3f})")
            continue
        cells = ", ".join(
            f"{k} {v['trace_cov']:.4g}" for k, v in row.items() if isinstance(v, dict)
        )
        print(f"  {key}: {cells}; ratio rb/graph "
              f"{row['ratio rao_blackwell / TraceGraph_ELBO']:.4f}, max paired difference "
              f"{row['max |paired difference| rao_blackwell - TraceGraph_ELBO']:.2g}")


if __name__ == "__main__":
    main()
