"""Speed, memory and gradient variance of pyro_kl's objectives against Pyro and PyTorch.

Run ``python benchmarks/svi_speed.py`` (about two minutes on one CPU core);
``--help`` lists the options. One process times every variant in interleaved
rounds (the order shuffled each round) and reports the median over rounds of
each round's ratio of step rates, so that a busy shared machine slows every
variant alike. It prints a table and writes it as JSON to
``benchmarks/results/svi_speed_<device>.json``.

What is compared, on the same model (dream world), guide (real world's latent
part), data, optimizer and initial parameters:

* ``RateDistortionELBO`` (Monte Carlo rate) against Pyro's ``Trace_ELBO``, and
  ``RateDistortionELBO(analytic_kl=True)`` against ``TraceMeanField_ELBO``;
* on the VAE, the same loss written by hand in PyTorch (the limit), checked
  to give the same loss value as Pyro's under the same seed before timing;
* peak memory of one step, and the variance of the encoder's gradients over
  fresh noise at fixed parameters, Monte Carlo against analytic rate.
"""

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import Adam

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure import (  # noqa: E402
    Variant,
    gradient_variance,
    interleaved_rates,
    median_ratio,
    paired_overhead,
    peak_python_bytes,
    peak_tensor_bytes,
)
from models import (  # noqa: E402
    HierGuide,
    HierModel,
    VAEGuide,
    VAEModel,
    digits,
    vae_torch_loss,
)

from pyro_kl import RateDistortionELBO  # noqa: E402

LR = 1e-3
MC, ANALYTIC = "RateDistortionELBO", "RateDistortionELBO(analytic_kl)"


def machine(device: str) -> Dict[str, object]:
    """Where the figures come from."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _seeded(factory, seed: int):
    torch.manual_seed(seed)
    return factory()


def svi_variant(name, model, guide, elbo, x) -> Variant:
    svi = SVI(model, guide, Adam({"lr": LR}), loss=elbo)
    return Variant(name, lambda: svi.step(x))


def module_variant(name, model, guide, elbo, x) -> Variant:
    """The loop of :meth:`pyro.infer.ELBO.__call__`: an ``ELBOModule`` and a
    plain ``torch.optim.Adam`` over all its parameters."""
    module = elbo(model, guide)
    optim = torch.optim.Adam(module.parameters(), lr=LR)

    def step():
        optim.zero_grad()
        module(x).backward()
        optim.step()

    return Variant(name, step)


def torch_variant(name, guide: VAEGuide, model: VAEModel, x, *, analytic_kl: bool) -> Variant:
    params = list(guide.encoder.parameters()) + list(model.decoder.parameters())
    optim = torch.optim.Adam(params, lr=LR)

    def step():
        optim.zero_grad()
        vae_torch_loss(guide.encoder, model.decoder, x, analytic_kl=analytic_kl).backward()
        optim.step()

    return Variant(name, step)


def _pair(family: str, tag: str, seed: int, device: str):
    model_cls, guide_cls = (VAEModel, VAEGuide) if family == "vae" else (HierModel, HierGuide)
    model = _seeded(lambda: model_cls(f"{family}.{tag}"), seed).to(device)
    guide = _seeded(lambda: guide_cls(f"{family}.{tag}"), seed + 1).to(device)
    return model, guide


def check_vae_losses(x: torch.Tensor, seed: int, device: str, beta: float) -> Dict[str, float]:
    """The hand-written loss must equal Pyro's and pyro_kl's (at beta=1) under
    the same seed and parameters, or the comparison would be unfair."""
    model, guide = _pair("vae", "check", seed, device)
    out = {}
    for analytic, pyro_elbo in ((False, Trace_ELBO()), (True, TraceMeanField_ELBO())):
        values = []
        for compute in (
            lambda: vae_torch_loss(guide.encoder, model.decoder, x, analytic_kl=analytic).item(),
            lambda: pyro_elbo.loss(model, guide, x),
            lambda: RateDistortionELBO(1.0, analytic_kl=analytic).loss(model, guide, x),
        ):
            torch.manual_seed(seed)
            with torch.no_grad():
                values.append(float(compute()))
        spread = max(values) - min(values)
        if spread > 1e-4 * abs(values[0]):
            raise RuntimeError(f"losses disagree (analytic_kl={analytic}): {values}")
        out["analytic" if analytic else "monte_carlo"] = values[0]
    return out


def build_variants(x_binary, x_real, *, seed, device, beta) -> Tuple[List[Variant], list]:
    """Every timed variant, and the ratios to report as (label, numerator, denominator)."""
    variants = []

    def pair(family, tag):
        return _pair(family, tag, seed, device)

    m, g = pair("vae", "torch_mc")
    variants.append(torch_variant("vae/torch (MC)", g, m, x_binary, analytic_kl=False))
    m, g = pair("vae", "torch_an")
    variants.append(torch_variant("vae/torch (analytic)", g, m, x_binary, analytic_kl=True))
    for family, x in (("vae", x_binary), ("hier", x_real)):
        for tag, elbo in (
            ("Trace_ELBO", Trace_ELBO()),
            (MC, RateDistortionELBO(beta)),
            ("TraceMeanField_ELBO", TraceMeanField_ELBO()),
            (ANALYTIC, RateDistortionELBO(beta, analytic_kl=True)),
        ):
            variants.append(svi_variant(f"{family}/{tag}", *pair(family, tag), elbo, x))
    for tag, elbo in (("Trace_ELBO", Trace_ELBO()), (MC, RateDistortionELBO(beta))):
        m, g = pair("vae", f"module_{tag}")
        variants.append(module_variant(f"vae/{tag} [ELBOModule+torch.optim]", m, g, elbo, x_binary))
    m, g = pair("vae", "module_noval")
    noval = module_variant(
        "vae/Trace_ELBO [ELBOModule+torch.optim, no validation]", m, g, Trace_ELBO(), x_binary
    )
    noval.validation = False
    variants.append(noval)
    m, g = pair("vae", "noval")
    noval = svi_variant("vae/Trace_ELBO [no validation]", m, g, Trace_ELBO(), x_binary)
    noval.validation = False
    variants.append(noval)
    m, g = pair("vae", "noval_rd")
    noval = svi_variant(f"vae/{MC} [no validation]", m, g, RateDistortionELBO(beta), x_binary)
    noval.validation = False
    variants.append(noval)

    ratios = [
        ("vae: RateDistortionELBO / Trace_ELBO", f"vae/{MC}", "vae/Trace_ELBO"),
        ("vae: analytic / TraceMeanField_ELBO", f"vae/{ANALYTIC}", "vae/TraceMeanField_ELBO"),
        ("hier: RateDistortionELBO / Trace_ELBO", f"hier/{MC}", "hier/Trace_ELBO"),
        ("hier: analytic / TraceMeanField_ELBO", f"hier/{ANALYTIC}", "hier/TraceMeanField_ELBO"),
        ("vae: Trace_ELBO / torch (MC)", "vae/Trace_ELBO", "vae/torch (MC)"),
        ("vae: RateDistortionELBO / torch (MC)", f"vae/{MC}", "vae/torch (MC)"),
        ("vae: TraceMeanField_ELBO / torch (analytic)", "vae/TraceMeanField_ELBO",
         "vae/torch (analytic)"),
        ("vae: analytic / torch (analytic)", f"vae/{ANALYTIC}", "vae/torch (analytic)"),
        ("vae: Trace_ELBO [ELBOModule+torch.optim] / torch (MC)",
         "vae/Trace_ELBO [ELBOModule+torch.optim]", "vae/torch (MC)"),
        ("vae: RateDistortionELBO [ELBOModule+torch.optim] / torch (MC)",
         f"vae/{MC} [ELBOModule+torch.optim]", "vae/torch (MC)"),
        ("vae: Trace_ELBO [ELBOModule+torch.optim, no validation] / torch (MC)",
         "vae/Trace_ELBO [ELBOModule+torch.optim, no validation]", "vae/torch (MC)"),
        ("vae: Trace_ELBO [no validation] / torch (MC)",
         "vae/Trace_ELBO [no validation]", "vae/torch (MC)"),
        ("vae: RateDistortionELBO [no validation] / Trace_ELBO [no validation]",
         f"vae/{MC} [no validation]", "vae/Trace_ELBO [no validation]"),
    ]
    return variants, ratios


def bookkeeping_table(x_binary, x_real, *, seed, device, beta, rounds) -> Dict[str, dict]:
    """What pyro_kl's term bookkeeping costs per step: the extra CPU time of
    ``differentiable_loss`` (trace the guide and the model, compute the loss
    and terms; no backward, no optimizer) over Pyro's own, paired round by round."""
    table = {}
    for family, x in (("vae", x_binary), ("hier", x_real)):
        model, guide = _pair(family, "bookkeeping", seed, device)
        for label, pyro_elbo, ours in (
            (MC, Trace_ELBO(), RateDistortionELBO(beta)),
            (ANALYTIC, TraceMeanField_ELBO(), RateDistortionELBO(beta, analytic_kl=True)),
        ):
            table[f"{family}/{label}"] = paired_overhead(
                lambda: pyro_elbo.differentiable_loss(model, guide, x),
                lambda: ours.differentiable_loss(model, guide, x),
                rounds=rounds, repeats=5,
            )
    return table


def variance_table(x_binary, x_real, *, seed, device, draws, train_steps) -> Dict[str, dict]:
    """Encoder-gradient variance, Monte Carlo against analytic rate, at the
    parameters reached after ``train_steps`` steps of Trace_ELBO."""
    table = {}
    for family, x in (("vae", x_binary), ("hier", x_real)):
        model, guide = _pair(family, "variance", seed, device)
        svi = SVI(model, guide, Adam({"lr": LR}), loss=Trace_ELBO())
        for _ in range(train_steps):
            svi.step(x)
        params = list(guide.encoder.parameters())
        torch.manual_seed(seed)
        for label, elbo in (
            ("monte_carlo", RateDistortionELBO(1.0)),
            ("analytic", RateDistortionELBO(1.0, analytic_kl=True)),
        ):
            table[f"{family}/{label}"] = gradient_variance(
                lambda: elbo.differentiable_loss(model, guide, x), params, draws=draws
            )
        mc, an = table[f"{family}/monte_carlo"], table[f"{family}/analytic"]
        table[f"{family}/variance_ratio_mc_over_analytic"] = {
            "value": mc["total_variance"] / an["total_variance"]
        }
    return table


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--batch", type=int, default=None,
                        help="batch size (default: 128 on CPU, 1024 on CUDA)")
    parser.add_argument("--rounds", type=int, default=15,
                        help="timed rounds (default: 15)")
    parser.add_argument("--steps", type=int, default=20,
                        help="steps per variant per round (default: 20)")
    parser.add_argument("--bookkeeping-rounds", type=int, default=100,
                        help="paired rounds for the bookkeeping cost (default: 100)")
    parser.add_argument("--beta", type=float, default=0.5,
                        help="beta of RateDistortionELBO (default: 0.5, so weighting is timed)")
    parser.add_argument("--draws", type=int, default=200,
                        help="gradient draws for the variance (default: 200)")
    parser.add_argument("--train-steps", type=int, default=300,
                        help="steps before measuring variance (default: 300)")
    parser.add_argument("--clock", choices=["process", "wall"], default=None,
                        help="process CPU time (default on CPU) or wall time (default on CUDA)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path (default: "
                        "benchmarks/results/svi_speed_<device>.json)")
    args = parser.parse_args(argv)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA build of torch and a visible GPU.")
    torch.set_num_threads(args.threads)
    on_gpu = args.device.startswith("cuda")
    batch = args.batch or (1024 if on_gpu else 128)
    args.clock = args.clock or ("wall" if on_gpu else "process")
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    x_binary = digits(batch, binary=True, device=args.device)
    x_real = digits(batch, binary=False, device=args.device)

    checked = check_vae_losses(x_binary, args.seed, args.device, args.beta)
    variants, ratio_specs = build_variants(
        x_binary, x_real, seed=args.seed, device=args.device, beta=args.beta
    )
    rates = interleaved_rates(
        variants, rounds=args.rounds, steps=args.steps, device=args.device, clock=args.clock
    )
    bookkeeping = bookkeeping_table(
        x_binary, x_real, seed=args.seed, device=args.device, beta=args.beta,
        rounds=args.bookkeeping_rounds,
    )
    memory = {
        v.name: {
            "tensor_peak_bytes": peak_tensor_bytes(v, device=args.device),
            "python_peak_bytes": peak_python_bytes(v),
        }
        for v in variants
    }
    variance = variance_table(
        x_binary, x_real, seed=args.seed, device=args.device,
        draws=args.draws, train_steps=args.train_steps,
    )
    result = {
        "machine": machine(args.device),
        "settings": {**vars(args), "batch": batch},
        "loss_check": checked,
        "steps_per_second": {
            name: statistics.median(r) for name, r in rates.items()
        },
        "ratios": {label: median_ratio(rates, a, b) for label, a, b in ratio_specs},
        "bookkeeping": bookkeeping,
        "memory": memory,
        "gradient_variance": variance,
    }
    print_table(result)
    out = Path(args.out or Path(__file__).parent / "results" / f"svi_speed_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return result


def print_table(result: dict) -> None:
    m, s = result["machine"], result["settings"]
    print(f"machine: {m['cpu']} ({m['cpu_count']} cores), {m['platform']}, torch {m['torch']}, "
          f"pyro {m['pyro']}, torch threads {m['torch_threads']}, device {m['device']}"
          + (f" ({m['gpu']})" if "gpu" in m else ""))
    print(f"batch {s['batch']}, {s['rounds']} rounds x {s['steps']} steps, beta {s['beta']}")
    print(f"\n{'variant':<50} {'steps/s':>9} {'tensor peak':>12} {'python peak':>12}")
    for name, rate in result["steps_per_second"].items():
        mem = result["memory"][name]
        print(f"{name:<50} {rate:>9.1f} {mem['tensor_peak_bytes'] / 2**20:>9.2f} MiB "
              f"{mem['python_peak_bytes'] / 2**10:>8.1f} KiB")
    print(f"\n{'speed ratio (median over rounds)':<68} {'median':>7} {'min':>6} {'max':>6}")
    for label, r in result["ratios"].items():
        print(f"{label:<68} {r['median']:>7.3f} {r['min']:>6.3f} {r['max']:>6.3f}")
    print(f"\n{'bookkeeping: extra CPU time of differentiable_loss':<52} {'Pyro':>9} "
          f"{'extra':>8} {'of a step':>9}")
    for name, b in result["bookkeeping"].items():
        family, label = name.split("/", 1)
        pyro_name = "Trace_ELBO" if label == MC else "TraceMeanField_ELBO"
        step_us = 1e6 / result["steps_per_second"][f"{family}/{pyro_name}"]
        print(f"{name:<52} {b['baseline_us']:>7.0f}us {b['extra_us']:>6.1f}us "
              f"{100 * b['extra_us'] / step_us:>8.2f}%")
    print(f"\n{'encoder-gradient variance':<30} {'total variance':>15} {'|mean|^2':>12} "
          f"{'SNR':>8}")
    for name, v in result["gradient_variance"].items():
        if "value" in v:
            print(f"{name:<30} MC / analytic = {v['value']:.2f}")
        else:
            print(f"{name:<30} {v['total_variance']:>15.4g} {v['mean_sq_norm']:>12.4g} "
                  f"{v['snr']:>8.3g}")


if __name__ == "__main__":
    main()
