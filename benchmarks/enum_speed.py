"""Speed of pyro_kl's ELBOs with enumerated discrete latents against Pyro's TraceEnum_ELBO.

Run ``python benchmarks/enum_speed.py`` (a minute or two on one CPU core);
``--help`` lists the options. As in ``svi_speed.py``, one process times every
variant in interleaved rounds (the order shuffled each round) and reports the
median over rounds of each round's ratio of step rates. It prints a table and
writes it as JSON to ``benchmarks/results/enum_speed_<device>.json``.

What is compared, on the same model (dream world), guide, data, optimizer and
initial parameters:

* **model side**: the :class:`~pyro_kl.recipes.GaussianMixture` recipe on
  scikit-learn's digits (10 components in 64 dimensions, the assignment
  enumerated in the dream world): ``WeightedELBO`` at unit weights and at
  weight 2 on the distortion against ``TraceEnum_ELBO``;
* **guide side**: the :class:`~pyro_kl.recipes.SemiSupervisedM2` recipe on the
  digits (the hidden label enumerated in the real world):
  ``BetaGammaELBO`` at unit weights and at ``(β, γ) = (0.5, 10)`` against
  ``TraceEnum_ELBO``;
* **no enumeration**: the Figure 7 recipe (``SemiSupervisedVAE``), whose
  masked label needs none: ``BetaGammaELBO`` against ``Trace_ELBO``.

Before timing, each pyro_kl ELBO at unit weights must give Pyro's loss under
the same seed and parameters; the script stops with an error otherwise.
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.optim import Adam

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure import Variant, interleaved_rates, median_ratio  # noqa: E402
from svi_speed import machine  # noqa: E402

from pyro_kl import BetaGammaELBO, WeightedELBO  # noqa: E402
from pyro_kl.recipes import GaussianMixture, SemiSupervisedM2, SemiSupervisedVAE  # noqa: E402

LR = 1e-3
SITE_TERMS = {"label": "classification"}


def digits_counts(batch: int, device: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """``batch`` of scikit-learn's digits as pixel counts (0..16) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.as_tensor(digits.data, dtype=torch.float32)[:batch]
    y = torch.as_tensor(digits.target)[:batch]
    return x.to(device), y.to(device)


def labelled_mask(batch: int, device: str, fraction: float = 0.1) -> torch.Tensor:
    """Every ``1/fraction``-th example keeps its label."""
    return (torch.arange(batch) % round(1 / fraction) == 0).to(device)


class Problem:
    """One recipe with its data, rebuilt from the same seed for every variant,
    its parameters kept apart by a prefix."""

    def __init__(self, family: str, factory: Callable, data: Tuple[torch.Tensor, ...], seed: int):
        self.family, self.factory, self.data, self.seed = family, factory, data, seed

    def build(self, tag: str):
        torch.manual_seed(self.seed)
        recipe = self.factory()
        recipe.name = f"{self.family}.{tag}"  # its own parameters in the store
        recipe.guide(*self.data)
        recipe.model(*self.data)
        return recipe

    def variant(self, tag: str, elbo) -> Variant:
        recipe = self.build(tag)
        svi = SVI(recipe.model, recipe.guide, Adam({"lr": LR}), loss=elbo)
        return Variant(f"{self.family}/{tag}", lambda: svi.step(*self.data))

    def check(self, ours, theirs) -> Dict[str, float]:
        """Same seed, same parameters: the two losses must agree."""
        recipe = self.build("check")
        values = []
        for elbo in (theirs, ours):
            pyro.set_rng_seed(self.seed)
            values.append(float(elbo.loss(recipe.model, recipe.guide, *self.data)))
        if abs(values[0] - values[1]) > 1e-4 * abs(values[0]):
            raise RuntimeError(
                f"{self.family}: {type(ours).__name__} gives loss {values[1]} where "
                f"{type(theirs).__name__} gives {values[0]} at unit weights; the timing would "
                "compare different objectives (does WeightedELBO enumerate yet?)."
            )
        return {type(theirs).__name__: values[0], type(ours).__name__: values[1]}


def problems(batch: int, device: str, seed: int) -> Dict[str, Problem]:
    x, y = digits_counts(batch, device)
    labelled = labelled_mask(batch, device)
    return {
        "mixture": Problem(
            "mixture",
            lambda: GaussianMixture(dim=64, num_components=10).to(device),
            (x / 16,),
            seed,
        ),
        "m2": Problem(
            "m2",
            lambda: SemiSupervisedM2(
                dim=64, num_classes=10, latent_dim=16, hidden_dim=128, total_count=16
            ).to(device),
            (x, y, labelled),
            seed,
        ),
        "figure7": Problem(
            "figure7",
            lambda: SemiSupervisedVAE(
                dim=64, num_classes=10, latent_dim=16, hidden_dim=128, total_count=16
            ).to(device),
            (x, y, labelled),
            seed,
        ),
    }


def build_variants(probs: Dict[str, Problem]) -> Tuple[List[Variant], list, dict]:
    """Every timed variant, the ratios to report and the loss checks."""
    enum = dict(max_plate_nesting=1)
    checks = {
        "mixture": probs["mixture"].check(WeightedELBO(**enum), TraceEnum_ELBO(**enum)),
        "m2": probs["m2"].check(BetaGammaELBO(site_terms=SITE_TERMS, **enum),
                                TraceEnum_ELBO(**enum)),
        "figure7": probs["figure7"].check(BetaGammaELBO(site_terms={"y": "classification"}),
                                          Trace_ELBO()),
    }
    variants = [
        probs["mixture"].variant("TraceEnum_ELBO", TraceEnum_ELBO(**enum)),
        probs["mixture"].variant("WeightedELBO", WeightedELBO(**enum)),
        probs["mixture"].variant("WeightedELBO(D x2)", WeightedELBO(
            weights={"distortion": 2.0}, **enum)),
        probs["m2"].variant("TraceEnum_ELBO", TraceEnum_ELBO(**enum)),
        probs["m2"].variant("BetaGammaELBO", BetaGammaELBO(site_terms=SITE_TERMS, **enum)),
        probs["m2"].variant("BetaGammaELBO(0.5, 10)", BetaGammaELBO(
            0.5, 10.0, site_terms=SITE_TERMS, **enum)),
        probs["figure7"].variant("Trace_ELBO", Trace_ELBO()),
        probs["figure7"].variant("BetaGammaELBO", BetaGammaELBO(
            site_terms={"y": "classification"})),
    ]
    ratios = [
        ("mixture (model side): WeightedELBO / TraceEnum_ELBO",
         "mixture/WeightedELBO", "mixture/TraceEnum_ELBO"),
        ("mixture (model side): WeightedELBO(D x2) / TraceEnum_ELBO",
         "mixture/WeightedELBO(D x2)", "mixture/TraceEnum_ELBO"),
        ("m2 (guide side): BetaGammaELBO / TraceEnum_ELBO",
         "m2/BetaGammaELBO", "m2/TraceEnum_ELBO"),
        ("m2 (guide side): BetaGammaELBO(0.5, 10) / TraceEnum_ELBO",
         "m2/BetaGammaELBO(0.5, 10)", "m2/TraceEnum_ELBO"),
        ("figure7 (no enumeration): BetaGammaELBO / Trace_ELBO",
         "figure7/BetaGammaELBO", "figure7/Trace_ELBO"),
    ]
    return variants, ratios, checks


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--batch", type=int, default=256,
                        help="digits per step (default: 256; at most 1797)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (default: 15)")
    parser.add_argument("--steps", type=int, default=10,
                        help="steps per variant per round (default: 10)")
    parser.add_argument("--clock", choices=["process", "wall"], default=None,
                        help="process CPU time (default on CPU) or wall time (default on CUDA)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path (default: "
                        "benchmarks/results/enum_speed_<device>.json)")
    args = parser.parse_args(argv)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA build of torch and a visible GPU.")
    if not 1 <= args.batch <= 1797:
        parser.error(f"--batch {args.batch}; use 1 to 1797 (the digits there are).")
    torch.set_num_threads(args.threads)
    args.clock = args.clock or ("wall" if args.device.startswith("cuda") else "process")
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()

    variants, ratio_specs, checks = build_variants(problems(args.batch, args.device, args.seed))
    rates = interleaved_rates(
        variants, rounds=args.rounds, steps=args.steps, device=args.device, clock=args.clock
    )
    result = {
        "machine": machine(args.device),
        "settings": vars(args),
        "loss_check": checks,
        "steps_per_second": {name: statistics.median(r) for name, r in rates.items()},
        "ratios": {label: median_ratio(rates, a, b) for label, a, b in ratio_specs},
    }
    print_table(result)
    out = Path(args.out or Path(__file__).parent / "results" / f"enum_speed_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return result


def print_table(result: dict) -> None:
    m, s = result["machine"], result["settings"]
    print(f"machine: {m['cpu']} ({m['cpu_count']} cores), torch {m['torch']}, pyro {m['pyro']}, "
          f"torch threads {m['torch_threads']}, device {m['device']}")
    print(f"batch {s['batch']}, {s['rounds']} rounds x {s['steps']} steps, clock {s['clock']}")
    print(f"\n{'variant':<40} {'steps/s':>9}")
    for name, rate in result["steps_per_second"].items():
        print(f"{name:<40} {rate:>9.1f}")
    print(f"\n{'speed ratio (median over rounds)':<62} {'median':>7} {'min':>6} {'max':>6}")
    for label, r in result["ratios"].items():
        print(f"{label:<62} {r['median']:>7.3f} {r['min']:>6.3f} {r['max']:>6.3f}")


if __name__ == "__main__":
    main()
