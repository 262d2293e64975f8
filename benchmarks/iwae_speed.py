"""Speed of :func:`pyro_kl.diagnostics.iwae_bound` on the demo's VAE over all 1797 digits.

Run ``python benchmarks/iwae_speed.py`` (about a minute on one CPU core).
The issue's target: ``iwae_bound`` with ``K = 1000`` importance samples for
every one of scikit-learn's 1797 digits, with the demo's VAE
(:func:`pyro_kl.cli.demo.digits_vae`: the VAE recipe with a code
``z ~ N(0, I)`` in the dream world,
each pixel ``~ Binomial(16, decoder(z))``, the encoder as the real world's
guide), within a minute on one CPU core. A trained model is not needed to
time it; the networks keep their initial weights.

Timed in interleaved rounds against the same bound written by hand in
PyTorch (the same networks and distributions, the same chunks of samples):
the ratio says what running through Pyro's traces costs. The two estimates
use different random draws, so they agree to Monte Carlo error only; the
script reports the difference of their means. Results go to
``benchmarks/results/iwae_speed_cpu.json``.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from svi_speed import machine  # noqa: E402

from pyro_kl.cli.demo import GREY_LEVELS, digits_vae, load_digits_split  # noqa: E402
from pyro_kl.diagnostics import iwae_bound  # noqa: E402
from pyro_kl.diagnostics.traces import probe  # noqa: E402


@torch.no_grad()
def torch_iwae(vae, x: torch.Tensor, num_samples: int, chunk: int) -> torch.Tensor:
    """The same bound by hand: encoder once, then chunks of samples of the code."""
    loc, scale = vae.encode(x)
    guide = dist.Normal(loc, scale).to_event(1)
    prior = dist.Normal(torch.zeros_like(loc), 1.0).to_event(1)
    log_mean = None
    for start in range(0, num_samples, chunk):
        z = guide.sample((min(chunk, num_samples - start),))
        likelihood = dist.Binomial(GREY_LEVELS, logits=vae.decoder(z)).to_event(1)
        log_w = likelihood.log_prob(x) + prior.log_prob(z) - guide.log_prob(z)
        part = torch.logsumexp(log_w, 0)
        log_mean = part if log_mean is None else torch.logaddexp(log_mean, part)
    return log_mean - math.log(num_samples)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    options = parser.parse_args(argv)
    torch.set_num_threads(options.threads)
    pyro.set_rng_seed(options.seed)
    images = torch.cat(load_digits_split())  # all 1797 digits
    vae = digits_vae()
    layout = probe(vae.model, vae.guide, (images,), {})
    chunk = layout.chunk_size(options.num_samples)

    variants = {
        "pyro_kl.iwae_bound": lambda: iwae_bound(
            vae.model, vae.guide, images, num_samples=options.num_samples
        ),
        "hand-written PyTorch": lambda: torch_iwae(vae, images, options.num_samples, chunk),
    }
    seconds = {name: [] for name in variants}
    means = {}
    for round_ in range(options.rounds):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            start = time.process_time()
            bound = variants[name]()
            seconds[name].append(time.process_time() - start)
            means[name] = float(bound.mean())
            assert bound.shape == (len(images),)
    ratios = [a / b for a, b in zip(seconds["pyro_kl.iwae_bound"], seconds["hand-written PyTorch"])]
    result = {
        "machine": machine("cpu"),
        "settings": {**vars(options), "num_data": len(images), "chunk_size": chunk,
                     "clock": "process"},
        "seconds": {name: statistics.median(values) for name, values in seconds.items()},
        "seconds_all_rounds": seconds,
        "time_ratio_pyro_kl_to_torch": {
            "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)
        },
        "mean_bound_nats": means,
    }
    print(f"iwae_bound, K={options.num_samples}, {len(images)} digits, "
          f"{options.threads} thread(s), chunks of {chunk}:")
    for name, value in result["seconds"].items():
        print(f"  {name:22s} {value:6.2f} s   mean L_K = {means[name]:.3f} nats")
    ratio = result["time_ratio_pyro_kl_to_torch"]
    print(f"  time ratio pyro_kl / PyTorch: {ratio['median']:.2f} "
          f"(rounds: {ratio['min']:.2f}..{ratio['max']:.2f})")
    out = options.out or Path(__file__).parent / "results" / "iwae_speed_cpu.json"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
