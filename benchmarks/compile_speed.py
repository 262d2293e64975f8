"""Compiled training speed: pyro_kl's CompiledSVI against hand-written PyTorch, Pyro and NumPyro.

Run ``python benchmarks/compile_speed.py`` (a few minutes on one CPU core);
``--help`` lists the options. On a GPU: ``--device cuda --batch 1024`` (the
compiled variants then use CUDA graphs, ``mode="reduce-overhead"``).

Every variant trains the same VAE (a Normal latent code, a Bernoulli decoder,
softplus hidden layers) with Adam, at two sizes: the benchmark VAE 64-128-8
(scikit-learn's digits, binarised) and 784-400-20 (binary data drawn once from
a fixed seed). Per size, in one process, interleaved in shuffled rounds:

* ``torch eager`` / ``torch compiled``: the loss written by hand, eager and
  under :func:`torch.compile` (the reference is ``torch eager``);
* ``Trace_ELBO eager`` / ``Trace_ELBO compiled``: Pyro's ``ELBOModule`` with a
  torch optimizer, eager and ``torch.compile``'d;
* ``pyro_kl eager`` / ``pyro_kl torch.compile(ELBOModule)``: the same with
  ``RateDistortionELBO(beta=0.5)``;
* ``pyro_kl CompiledSVI``: :class:`pyro_kl.compile.CompiledSVI`;
* ``numpyro jit``: NumPyro's ``jax.jit(svi.update)`` with the same networks
  (stax), when ``numpyro`` is importable (a benchmark-only extra).

Steps per second are the median over rounds, ratios are to ``torch eager``
(per round, then the median). The warm-up (the first steps, which trace and
compile) is timed separately, in wall time. Graph breaks of each compiled
Pyro/pyro_kl variant come from :func:`torch._dynamo.explain`, recompiles from
dynamo's counters over the timed steps. The result is written as JSON to
``benchmarks/results/compile_speed_<device>.json`` (atomically).
"""

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO
from torch import nn

os.environ.setdefault(  # NumPyro on one thread, like torch
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from measure import Variant, interleaved_rates, median_ratio  # noqa: E402
from models import digits  # noqa: E402
from svi_speed import machine  # noqa: E402

from pyro_kl import RateDistortionELBO  # noqa: E402
from pyro_kl.compile import CompiledSVI, CompileFallbackWarning  # noqa: E402

LR = 1e-3
REFERENCE = "torch eager"


class Encoder(nn.Module):
    def __init__(self, x_dim: int, h_dim: int, z_dim: int):
        super().__init__()
        self.hidden = nn.Linear(x_dim, h_dim)
        self.loc = nn.Linear(h_dim, z_dim)
        self.log_scale = nn.Linear(h_dim, z_dim)

    def forward(self, x):
        h = F.softplus(self.hidden(x))
        return self.loc(h), self.log_scale(h).exp()


class Decoder(nn.Module):
    def __init__(self, x_dim: int, h_dim: int, z_dim: int):
        super().__init__()
        self.hidden = nn.Linear(z_dim, h_dim)
        self.out = nn.Linear(h_dim, x_dim)

    def forward(self, z):
        return self.out(F.softplus(self.hidden(z)))


class Model(nn.Module):
    """Dream world: ``z ~ Normal(0, 1)``, ``x ~ Bernoulli(decoder(z))``."""

    def __init__(self, name: str, dims):
        super().__init__()
        self.name, self.z_dim = name, dims[2]
        self.decoder = Decoder(*dims)

    def forward(self, x):
        pyro.module(f"{self.name}.decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0)
                            .to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)


class Guide(nn.Module):
    """Real world's latent part: ``z ~ Normal(encoder(x))``."""

    def __init__(self, name: str, dims):
        super().__init__()
        self.name = name
        self.encoder = Encoder(*dims)

    def forward(self, x):
        pyro.module(f"{self.name}.encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def torch_loss(encoder: Encoder, decoder: Decoder, x: torch.Tensor) -> torch.Tensor:
    """The negative ELBO by hand (Monte Carlo rate), the same random numbers as Pyro's."""
    loc, scale = encoder(x)
    eps = torch.empty_like(loc).normal_()
    z = loc + eps * scale
    distortion = F.binary_cross_entropy_with_logits(decoder(z), x, reduction="sum")
    rate = (0.5 * (z.pow(2) - eps.pow(2)) - scale.log()).sum()
    return distortion + rate


def data(dims, batch: int, device: str) -> torch.Tensor:
    if dims[0] == 64:
        return digits(batch, binary=True, device=device)
    generator = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.full((batch, dims[0]), 0.3), generator=generator).to(device)


def _pair(tag: str, dims, seed: int, device: str):
    torch.manual_seed(seed)
    model = Model(tag, dims).to(device)
    torch.manual_seed(seed + 1)
    guide = Guide(tag, dims).to(device)
    return model, guide


def _compile(fn, mode: Optional[str]):
    return torch.compile(fn, mode=mode) if mode else torch.compile(fn)


def build(dims, x, *, seed: int, device: str, mode: Optional[str], beta: float):
    """Every variant's step, and the compiled ones' module (for explain)."""
    steps: Dict[str, Callable[[], object]] = {}
    explain: Dict[str, Callable[[], object]] = {}

    model, guide = _pair("torch_eager", dims, seed, device)
    params = list(guide.encoder.parameters()) + list(model.decoder.parameters())
    opt_a = torch.optim.Adam(params, lr=LR)

    def torch_eager():
        opt_a.zero_grad()
        torch_loss(guide.encoder, model.decoder, x).backward()
        opt_a.step()

    steps[REFERENCE] = torch_eager

    model_c, guide_c = _pair("torch_compiled", dims, seed, device)
    opt_b = torch.optim.Adam(
        list(guide_c.encoder.parameters()) + list(model_c.decoder.parameters()), lr=LR
    )
    compiled_loss = _compile(torch_loss, mode)

    def torch_compiled():
        opt_b.zero_grad()
        compiled_loss(guide_c.encoder, model_c.decoder, x).backward()
        opt_b.step()

    steps["torch compiled"] = torch_compiled

    for label, make_elbo in (("Trace_ELBO", Trace_ELBO),
                             ("pyro_kl", lambda: RateDistortionELBO(beta))):
        for compiled in (False, True):
            m, g = _pair(f"{label}_{compiled}", dims, seed, device)
            module = make_elbo()(m, g)
            module(x)  # registers the parameters
            optim = torch.optim.Adam(module.parameters(), lr=LR)
            call = _compile(module, mode) if compiled else module
            name = f"{label} " + (
                ("compiled" if label == "Trace_ELBO" else "torch.compile(ELBOModule)")
                if compiled else "eager"
            )

            def module_step(call=call, optim=optim):
                optim.zero_grad()
                call(x).backward()
                optim.step()

            steps[name] = module_step
            if compiled:
                explain[name] = (lambda module=module: torch._dynamo.explain(module)(x))

    for fused in (False, True):
        m, g = _pair(f"compiled_svi_{fused}", dims, seed, device)
        with pyro.poutine.trace(param_only=True) as capture:  # registers the parameters
            m(x), g(x)
        params = [s["value"].unconstrained() for s in capture.trace.nodes.values()]
        svi = CompiledSVI(m, g, torch.optim.Adam(params, lr=LR, fused=fused),
                          RateDistortionELBO(beta), mode=mode)
        steps["pyro_kl CompiledSVI" + (" (fused Adam)" if fused else "")] = (
            lambda svi=svi: svi.step(x))
    for tag, fused_compile in (("torch eager (fused Adam)", False),
                               ("torch compiled (fused Adam)", True)):
        m, g = _pair(tag, dims, seed, device)
        opt = torch.optim.Adam(list(g.encoder.parameters()) + list(m.decoder.parameters()),
                               lr=LR, fused=True)
        loss_fn = compiled_loss if fused_compile else torch_loss

        def fused_step(opt=opt, loss_fn=loss_fn, m=m, g=g):
            opt.zero_grad()
            loss_fn(g.encoder, m.decoder, x).backward()
            opt.step()

        steps[tag] = fused_step
    return steps, explain, svi


def numpyro_step(dims, x: torch.Tensor, seed: int):
    """NumPyro's jitted SVI step on the same networks, or ``None`` without numpyro."""
    try:
        import jax
        import numpyro
        import numpyro.distributions as ndist
        from jax import numpy as jnp
        from jax.example_libraries import stax
        from numpyro.infer import SVI as NSVI
        from numpyro.infer import Trace_ELBO as NTrace_ELBO
    except ImportError:
        return None
    x_dim, h_dim, z_dim = dims
    enc_init, enc = stax.serial(stax.Dense(h_dim), stax.Softplus,
                                stax.FanOut(2), stax.parallel(stax.Dense(z_dim), stax.Dense(z_dim)))
    dec_init, dec = stax.serial(stax.Dense(h_dim), stax.Softplus, stax.Dense(x_dim))

    def model(batch):
        decoder = numpyro.module("decoder", (dec_init, dec), (batch.shape[0], z_dim))
        with numpyro.plate("data", batch.shape[0]):
            z = numpyro.sample("z", ndist.Normal(jnp.zeros((batch.shape[0], z_dim)), 1.0)
                               .to_event(1))
            numpyro.sample("x", ndist.Bernoulli(logits=decoder(z)).to_event(1), obs=batch)

    def guide(batch):
        encoder = numpyro.module("encoder", (enc_init, enc), batch.shape)
        with numpyro.plate("data", batch.shape[0]):
            loc, log_scale = encoder(batch)
            numpyro.sample("z", ndist.Normal(loc, jnp.exp(log_scale)).to_event(1))

    batch = jnp.asarray(x.cpu().numpy())
    svi = NSVI(model, guide, numpyro.optim.Adam(LR), NTrace_ELBO())
    state = svi.init(jax.random.PRNGKey(seed), batch)
    update = jax.jit(svi.update)
    holder = {"state": state}

    def step():
        holder["state"], loss = update(holder["state"], batch)
        loss.block_until_ready()

    return step


def warm_up(steps: Dict[str, Callable[[], object]], count: int, device: str) -> Dict[str, float]:
    """Wall seconds of each variant's first ``count`` steps (tracing and compiling)."""
    seconds = {}
    for name, step in steps.items():
        start = time.perf_counter()
        for _ in range(count):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds[name] = time.perf_counter() - start
    return seconds


def explain_breaks(explain: Dict[str, Callable[[], object]]) -> Dict[str, dict]:
    out = {}
    for name, run in explain.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run()
        out[name] = {
            "graph_breaks": result.graph_break_count,
            "graphs": result.graph_count,
            "reasons": sorted({str(b.reason).splitlines()[0][:160] for b in result.break_reasons}),
        }
    return out


def same_steps(dims, x, *, seed: int, mode: Optional[str], beta: float, steps: int = 4) -> dict:
    """CompiledSVI's losses against SVI's under the same seed (before timing anything)."""
    losses = {}
    for compiled in (False, True):
        m, g = _pair(f"check_{compiled}", dims, seed, str(x.device))
        elbo = RateDistortionELBO(beta)
        optim = pyro.optim.SGD({"lr": 1e-4})
        svi = (CompiledSVI(m, g, optim, elbo, mode=mode) if compiled
               else pyro.infer.SVI(m, g, optim, elbo))
        pyro.set_rng_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CompileFallbackWarning)
            losses[compiled] = [float(svi.step(x)) for _ in range(steps)]
    rel = max(abs(a - b) / abs(a) for a, b in zip(losses[False], losses[True]))
    return {"eager": losses[False], "compiled": losses[True], "max_relative_difference": rel}


def run_size(dims, args, mode) -> dict:
    pyro.clear_param_store()
    x = data(dims, args.batch, args.device)
    check = same_steps(dims, x, seed=args.seed, mode=mode, beta=args.beta)
    print(f"{'-'.join(map(str, dims))}: CompiledSVI vs SVI, same seed, max relative loss "
          f"difference over {len(check['eager'])} steps: {check['max_relative_difference']:.2e}")
    steps, explain, svi = build(dims, x, seed=args.seed, device=args.device, mode=mode,
                                beta=args.beta)
    skip = [s for s in args.skip.split(",") if s]
    for name in [n for n in steps if n in skip]:
        del steps[name]
        explain.pop(name, None)
    nstep = numpyro_step(dims, x, args.seed) if args.device == "cpu" else None
    if nstep is not None:
        steps["numpyro jit"] = nstep
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompileFallbackWarning)
        warm = warm_up(steps, args.warmup, args.device)
        from torch._dynamo.utils import counters

        before = {k: dict(v) for k, v in counters.items()}
        rates = interleaved_rates(
            [Variant(name, step) for name, step in steps.items()],
            rounds=args.rounds, steps=args.steps, device=args.device, clock=args.clock,
            seed=args.seed,
        )
        after = {k: dict(v) for k, v in counters.items()}
    recompiles = {
        key: after.get("stats", {}).get(key, 0) - before.get("stats", {}).get(key, 0)
        for key in ("unique_graphs", "calls_captured")
    }
    breaks = explain_breaks(explain)
    traced = [t for t in svi._traced.values() if t is not None]  # the last CompiledSVI
    breaks["pyro_kl CompiledSVI (fused Adam)"] = {
        "graph_breaks": 0 if traced else None,
        "graphs": len(traced),
        "reasons": [] if traced else ["fell back to the eager path"],
    }
    return {
        "dims": list(dims),
        "same_steps_check": check,
        "steps_per_second": {n: statistics.median(r) for n, r in rates.items()},
        "ratio_to_torch_eager": {n: median_ratio(rates, n, REFERENCE) for n in rates},
        **{
            f"ratio_CompiledSVI_to_{other.replace(' ', '_')}": median_ratio(
                rates, "pyro_kl CompiledSVI (fused Adam)", other)
            for other in ("Trace_ELBO compiled", "pyro_kl eager") if other in rates
        },
        "warmup_seconds": warm,
        "warmup_steps": args.warmup,
        "dynamo_during_timed_steps": recompiles,
        "graph_breaks": breaks,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="default 128 (1024 on CUDA)")
    parser.add_argument("--sizes", default="64-128-8,784-400-20",
                        help="comma-separated x-h-z sizes (default: 64-128-8,784-400-20)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    parser.add_argument("--mode", default=None,
                        help="torch.compile mode (default: reduce-overhead on CUDA, none on CPU)")
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--skip", default="",
                        help="comma-separated variant names not to time (e.g. the slow-to-compile "
                        "'Trace_ELBO compiled,pyro_kl torch.compile(ELBOModule)')")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["process", "wall"], default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA build of torch and a visible GPU.")
    torch.set_num_threads(args.threads)
    args.batch = args.batch or (1024 if on_gpu else 128)
    args.clock = args.clock or ("wall" if on_gpu else "process")
    mode = args.mode or ("reduce-overhead" if on_gpu else None)
    sizes = [tuple(int(n) for n in s.split("-")) for s in args.sizes.split(",")]
    result = {
        "machine": machine(args.device),
        "load_average": os.getloadavg(),
        "settings": {**vars(args), "mode": mode},
        "sizes": {},
    }
    out = Path(args.out or Path(__file__).parent / "results" / f"compile_speed_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for dims in sizes:  # written after each size, so that a cut-off run keeps what it measured
        label = "-".join(map(str, dims))
        result["sizes"][label] = run_size(dims, args, mode)
        print_size(label, result["sizes"][label])
        result["load_average_after"] = os.getloadavg()
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
        os.replace(tmp, out)
    print(f"\nwritten: {out}")
    return result


def print_size(label: str, r: dict) -> None:
    print(f"\n{label}: {'variant':<36} {'steps/s':>8} {'/ torch eager':>14} {'warm-up s':>10} "
          f"{'breaks':>7}")
    for name, rate in r["steps_per_second"].items():
        ratio = r["ratio_to_torch_eager"][name]["median"]
        breaks = r["graph_breaks"].get(name, {}).get("graph_breaks", "")
        print(f"{'':<{len(label) + 1}} {name:<36} {rate:>8.1f} {ratio:>14.3f} "
              f"{r['warmup_seconds'][name]:>10.2f} {breaks!s:>7}")
    ratios = {k: v["median"] for k, v in r.items() if k.startswith("ratio_CompiledSVI_to_")}
    print(f"CompiledSVI (fused Adam) ratios: {ratios}; "
          f"dynamo during timed steps: {r['dynamo_during_timed_steps']}")


if __name__ == "__main__":
    main()
