"""``python -m pyro_kl demo``: the VAE recipe on scikit-learn's handwritten digits.

The two worlds of the demo are those of :class:`pyro_kl.recipes.VAE` with a
binomial likelihood:

- **real world P (data + guide)**: a digit ``x`` drawn by nature (the 8x8
  images that scikit-learn ships, 17 grey levels 0..16), and an encoder, the
  guide, that draws a code ``z ~ encoder(z | x)``;
- **dream world Q (model)**: a code ``z ~ N(0, I)`` from the prior and a
  decoder that draws each pixel ``x_ij ~ Binomial(16, decoder(z)_ij)``.

Pixels are counts, so the distortion ``D = <-log decoder(x | z)>`` is a true
code length in nats, and the rate ``R = <log encoder(z | x) - log prior(z)>``
is the information the code carries about the image. The demo trains with
:class:`~pyro_kl.RateDistortionELBO` (``D + β·R``), then walks a β sweep
along the rate–distortion frontier, warm-starting each β from its
neighbour, and reports every figure per digit on the training digits and on
held-out digits.
"""

import copy
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pyro
import torch
from pyro import poutine

from .. import __version__
from ..diagnostics import iwae_bound
from ..presets import RateDistortionELBO
from ..recipes import VAE
from ..terms import DISTORTION, RATE

GREY_LEVELS = 16
"""The digits' pixels are counts ``0..16``: a Binomial with 16 trials each."""
NUM_HELD_OUT = 297
"""Digits kept out of training (of 1797), to report held-out figures."""
LATENT_DIM = 8
HIDDEN_DIM = 128

DEFAULT_STEPS = 1500
"""SVI steps of the main model."""
DEFAULT_SWEEP_STEPS = 250
"""SVI steps of each further β of the sweep, warm-started from its neighbour."""
DEFAULT_SWEEP_BETAS = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)
DEFAULT_BATCH_SIZE = 256
DEFAULT_LR = 4e-3
EVAL_PARTICLES = 8
"""Codes drawn per digit to estimate D (the rate is analytic)."""
IWAE_SAMPLES = 64
"""Importance samples per digit for the dream world's marginal code length."""


def load_digits_split(
    num_held_out: int = NUM_HELD_OUT,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The 1797 handwritten digits that scikit-learn ships (nothing is downloaded), as
    pixel counts ``0..16``, split by a fixed shuffle into training and held-out digits.

    :param int num_held_out: how many digits to hold out.
    :returns: ``(training, held_out)``, one flattened 8x8 image per row.
    :rtype: tuple

    Example::

        training, held_out = load_digits_split()
        training.shape, held_out.shape  # (torch.Size([1500, 64]), torch.Size([297, 64]))
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - the demo extra installs it
        raise ImportError(
            "The demo needs scikit-learn; install it with `pip install pyro-kl[demo]`."
        ) from error
    images = torch.tensor(load_digits().data, dtype=torch.get_default_dtype())
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    return images[order[num_held_out:]], images[order[:num_held_out]]


def digits_vae() -> VAE:
    """The demo's model and guide: :class:`~pyro_kl.recipes.VAE` on 64 pixels
    with a ``Binomial(16)`` likelihood, an 8-dimensional code and hidden layers
    of 128 units."""
    return VAE(
        dim=64,
        latent_dim=LATENT_DIM,
        hidden_dim=HIDDEN_DIM,
        likelihood="binomial",
        total_count=GREY_LEVELS,
    )


def train(
    vae: VAE,
    images: torch.Tensor,
    *,
    beta: float,
    steps: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    generator: Optional[torch.Generator] = None,
    on_step: Optional[Callable[[Dict[str, float]], None]] = None,
) -> List[Dict[str, float]]:
    """Trains ``vae`` in place with :class:`~pyro_kl.RateDistortionELBO` (``D + β·R``,
    analytic rate) on random minibatches, through Pyro's ``ELBOModule`` and one
    :class:`torch.optim.Adam` over the parameters.

    Pyro's global parameter store is left as it was: the training runs in a
    scope of its own, so the store holds exactly ``vae``'s own parameters and a
    copy of a trained ``vae`` (a warm start) trains its own. Pyro's validation is
    on for the first step and off for the rest (it costs about a sixth of a step).

    :param VAE vae: the model and guide.
    :param torch.Tensor images: the training digits, ``(N, 64)`` pixel counts.
    :param float beta: the weight of the rate.
    :param int steps: number of optimizer steps.
    :param int batch_size: digits per step.
    :param float lr: Adam's learning rate.
    :param torch.Generator generator: draws the minibatches.
    :param on_step: called after each step with its record.
    :returns: one record per step: ``loss``, ``distortion`` and ``rate`` in nats
        per digit of the minibatch (the terms are sums over it).
    :rtype: list

    Example::

        training, _ = load_digits_split()
        history = train(digits_vae(), training, beta=0.5, steps=5)
    """
    elbo = RateDistortionELBO(beta=beta, analytic_kl=True)
    loss_fn = elbo(vae.model, vae.guide)
    size = min(batch_size, len(images))
    history = []
    with pyro.get_param_store().scope():
        with poutine.trace(param_only=True) as captured, torch.no_grad():
            loss_fn(images[:size])  # validated; creates the parameters
        params = [site["value"].unconstrained() for site in captured.trace.nodes.values()]
        optimizer = torch.optim.Adam(params, lr=lr)
        with pyro.validation_enabled(False):
            for _ in range(steps):
                index = torch.randint(len(images), (size,), generator=generator)
                optimizer.zero_grad()
                loss = loss_fn(images[index])
                loss.backward()
                optimizer.step()
                record = {
                    "loss": loss.item() / size,
                    DISTORTION: elbo.last_terms[DISTORTION] / size,
                    RATE: elbo.last_terms[RATE] / size,
                }
                history.append(record)
                if on_step is not None:
                    on_step(record)
    return history


@torch.no_grad()
def per_digit_terms(
    vae: VAE, images: torch.Tensor, *, num_particles: int = EVAL_PARTICLES
) -> Dict[str, float]:
    """Distortion and rate per digit, in nats, over all of ``images``, from
    :meth:`~pyro_kl.WeightedELBO.estimate_terms`.

    :param VAE vae: a trained VAE.
    :param torch.Tensor images: the digits.
    :param int num_particles: codes drawn per digit to estimate D (R is analytic).
    :returns: ``{"distortion": D, "rate": R}``.
    :rtype: dict
    """
    elbo = RateDistortionELBO(
        analytic_kl=True, num_particles=num_particles, vectorize_particles=True,
        max_plate_nesting=1,
    )
    with pyro.get_param_store().scope():
        terms = elbo.estimate_terms(vae.model, vae.guide, images)
    return {DISTORTION: terms[DISTORTION] / len(images), RATE: terms[RATE] / len(images)}


@torch.no_grad()
def dream_marginal_code_length(
    model: Callable, guide: Callable, *args: Any, num_samples: int = IWAE_SAMPLES
) -> torch.Tensor:
    """The dream world's code length ``-log (dream world's marginal of x)`` for each
    example, estimated by importance sampling with the guide as proposal: minus
    :func:`pyro_kl.diagnostics.iwae_bound` (Burda et al. 2016),
    ``-log (1/K) sum_k model(x, z_k) / guide(z_k | x)``.

    Its expectation lies above the true code length and below ``D + R``, and
    tightens as ``num_samples`` grows. Pyro's parameter store is left as it was.

    :param model: the dream world Q.
    :param guide: the real world's guide.
    :param args: the arguments of both; the first holds the examples.
    :param int num_samples: importance samples ``K`` per example.
    :returns: nats, one per example.
    :rtype: torch.Tensor

    Example::

        vae = digits_vae()
        _, held_out = load_digits_split()
        lengths = dream_marginal_code_length(vae.model, vae.guide, held_out, num_samples=8)
        lengths.shape  # torch.Size([297])
    """
    with pyro.get_param_store().scope():
        return -iwae_bound(model, guide, *args, num_samples=num_samples)


def sweep(
    start: VAE,
    images: torch.Tensor,
    *,
    start_beta: float,
    betas: Sequence[float],
    steps: int,
    generator: Optional[torch.Generator] = None,
    on_step: Optional[Callable[[Dict[str, float]], None]] = None,
    on_beta: Optional[Callable[[float], None]] = None,
    **train_options: Any,
) -> Dict[float, VAE]:
    """A β sweep along the rate–distortion frontier, by warm starts.

    From the trained ``start`` (at ``start_beta``), each larger β in turn is
    trained for ``steps`` from a copy of the model of the next smaller one, and
    each smaller β from a copy of the next larger one. Neighbouring models then
    differ by what their β asks for, not by their random initialisation.

    :param VAE start: a model trained at ``start_beta``; it is not changed.
    :param torch.Tensor images: the training digits.
    :param float start_beta: the β of ``start``.
    :param betas: the β values of the sweep.
    :param int steps: optimizer steps per further β.
    :param on_beta: called with each β before it trains.
    :returns: β -> its trained VAE, including ``start_beta`` -> ``start``.
    :rtype: dict

    Example::

        training, _ = load_digits_split()
        start = digits_vae()
        train(start, training, beta=1.0, steps=20)
        models = sweep(start, training, start_beta=1.0, betas=[0.5, 2.0], steps=10)
        list(models)  # [0.5, 1.0, 2.0]
    """
    models = {float(start_beta): start}
    larger = sorted(b for b in betas if b > start_beta)
    smaller = sorted((b for b in betas if b < start_beta), reverse=True)
    for chain in (larger, smaller):
        previous = start
        for beta in chain:
            if on_beta is not None:
                on_beta(beta)
            member = copy.deepcopy(previous)
            train(member, images, beta=beta, steps=steps, generator=generator,
                  on_step=on_step, **train_options)
            models[float(beta)] = previous = member
    return dict(sorted(models.items()))


def is_monotone(points: Sequence[Dict[str, float]]) -> bool:
    """Whether the points, in increasing β, trade rate for distortion: the rate
    never increases and the distortion never decreases.

    Example::

        is_monotone([{"rate": 9.0, "distortion": 60.0}, {"rate": 7.0, "distortion": 62.0}])
    """
    return all(
        later[RATE] <= earlier[RATE] and later[DISTORTION] >= earlier[DISTORTION]
        for earlier, later in zip(points, points[1:])
    )


def _progress_bar(total: int, *, disable: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError as error:  # pragma: no cover - the demo extra installs it
        raise ImportError(
            "The demo needs tqdm; install it with `pip install pyro-kl[demo]`."
        ) from error
    return tqdm(total=total, disable=disable, unit="step", dynamic_ncols=True)


def _figures(vae: VAE, images: torch.Tensor, num_samples: int) -> Dict[str, float]:
    terms = per_digit_terms(vae, images)
    return {
        DISTORTION: terms[DISTORTION],
        RATE: terms[RATE],
        "d_plus_r": terms[DISTORTION] + terms[RATE],
        "dream_marginal_code_length": dream_marginal_code_length(
            vae.model, vae.guide, images, num_samples=num_samples
        ).mean().item(),
    }


def run_demo(
    staging: str,
    *,
    steps: int = DEFAULT_STEPS,
    beta: float = 1.0,
    sweep_betas: Sequence[float] = DEFAULT_SWEEP_BETAS,
    sweep_steps: int = DEFAULT_SWEEP_STEPS,
    seed: int = 0,
    picture_format: str = "svg",
    progress: bool = True,
    echo: Callable[[str], None] = print,
    command: Optional[str] = None,
) -> Dict[str, Any]:
    """Trains the digits VAE, walks the β sweep and writes what it learned into ``staging``.

    Writes ``worlds.gv`` (and ``worlds.<picture_format>`` when graphviz's ``dot``
    program is installed), the real world P (data + guide) beside the dream world Q
    (model); ``reconstructions.png``; ``rate_distortion.png``; and ``summary.json``
    with every figure printed.

    :param str staging: an existing, empty folder to write into (the command line
        publishes it as ``--out`` when the run is complete).
    :param int steps: optimizer steps of the main model.
    :param float beta: the weight of the rate of the main model.
    :param sweep_betas: the further β values of the sweep; empty to skip it.
    :param int sweep_steps: optimizer steps per further β.
    :param int seed: seed of the initialisation, the minibatches and the codes.
    :param str picture_format: the worlds picture's format besides ``gv``.
    :param bool progress: show a progress bar.
    :param echo: where the report's lines go.
    :param str command: the command line that reruns this, kept in the summary.
    :returns: the summary (also in ``summary.json``).
    :rtype: dict

    Example::

        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            summary = run_demo(folder, steps=20, sweep_steps=5, progress=False)
        summary["main"]["held_out"]["distortion"]  # nats per held-out digit
    """
    from . import figures

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}; pass a positive number of steps, e.g. --steps 500.")
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta={beta}; pass a finite weight >= 0 for the rate, e.g. --beta 0.5.")
    if any(not (math.isfinite(b) and b >= 0) for b in sweep_betas):
        raise ValueError(f"sweep betas {list(sweep_betas)}; each must be finite and >= 0.")
    if isinstance(sweep_steps, bool) or not isinstance(sweep_steps, int) or sweep_steps < 1:
        raise ValueError(f"sweep_steps={sweep_steps!r}; pass a positive number of steps.")
    wall, cpu = time.perf_counter(), time.process_time()
    pyro.set_rng_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    training, held_out = load_digits_split()
    further = sorted({float(b) for b in sweep_betas} - {float(beta)})
    total_steps = steps + sweep_steps * len(further)

    echo(f"Real world P (data + guide): {len(training)} training digits from scikit-learn "
         f"({len(held_out)} held out), and an encoder that draws a code z for each.")
    echo(f"Dream world Q (model): z ~ N(0, I) in {LATENT_DIM} dimensions; each pixel ~ "
         f"Binomial({GREY_LEVELS}, decoder(z)).")
    echo(f"Training {steps} steps at beta = {beta:g}"
         + (f", then {sweep_steps} steps for each of {len(further)} further betas."
            if further else "."))
    bar = _progress_bar(total_steps, disable=not progress)
    live = {}

    def on_step(record: Dict[str, float]) -> None:
        for key in (DISTORTION, RATE):
            live[key] = 0.9 * live.get(key, record[key]) + 0.1 * record[key]
        bar.update()
        if bar.n % 10 == 0:
            bar.set_postfix_str(
                f"D={live[DISTORTION]:.1f} R={live[RATE]:.2f} nats/digit", refresh=False
            )

    try:
        bar.set_description(f"beta={beta:g}")
        vae = digits_vae()
        train(vae, training, beta=beta, steps=steps, generator=generator, on_step=on_step)
        models = sweep(
            vae, training, start_beta=beta, betas=further, steps=sweep_steps,
            generator=generator, on_step=on_step,
            on_beta=lambda b: bar.set_description(f"sweep beta={b:g}"),
        )
    finally:
        bar.close()

    summary: Dict[str, Any] = {
        "command": command,
        "pyro_kl": __version__,
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "data": {"training_digits": len(training), "held_out_digits": len(held_out)},
        "model": {"recipe": "pyro_kl.recipes.VAE", "likelihood": vae.likelihood,
                  "total_count": vae.total_count, "latent_dim": vae.latent_dim,
                  "hidden_dim": HIDDEN_DIM},
        "units": "nats per digit",
        "beta": beta,
        "steps": steps,
        "batch_size": DEFAULT_BATCH_SIZE,
        "learning_rate": DEFAULT_LR,
        "iwae_samples": IWAE_SAMPLES,
        "main": {
            "training": _figures(vae, training, IWAE_SAMPLES),
            "held_out": _figures(vae, held_out, IWAE_SAMPLES),
        },
    }
    if further:
        main_terms = {split: {t: summary["main"][split][t] for t in (DISTORTION, RATE)}
                      for split in ("training", "held_out")}
        points = [
            {"beta": b, **main_terms} if m is vae else
            {"beta": b, "training": per_digit_terms(m, training),
             "held_out": per_digit_terms(m, held_out)}
            for b, m in models.items()
        ]
        summary["sweep"] = {
            "steps_per_beta": sweep_steps,
            "points": points,
            "monotone": {
                split: is_monotone([point[split] for point in points])
                for split in ("training", "held_out")
            },
        }

    files = figures.write_worlds(vae, training[:16], beta, staging, picture_format)
    files["reconstructions"] = figures.plot_reconstructions(vae, held_out[:10], staging)
    if further:
        files["rate_distortion"] = figures.plot_rate_distortion(summary, staging)
    files["summary"] = "summary.json"
    summary["files"] = files
    summary["seconds"] = {
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
    }
    with open(os.path.join(staging, "summary.json"), "w", encoding="utf-8") as summary_file:
        json.dump(summary, summary_file, indent=2)
        summary_file.write("\n")
    for line in report_lines(summary):
        echo(line)
    return summary


def report_lines(summary: Dict[str, Any]) -> List[str]:
    """The lines the demo prints, made from its summary alone (so that every
    figure printed is in ``summary.json``)."""
    main = summary["main"]
    lines = [
        f"beta = {summary['beta']:g}, nats per digit:   distortion D   rate R    D + R   "
        f"dream world's code length for x (IWAE, {summary['iwae_samples']} samples)",
    ]
    for split, label in (("training", "training digits"), ("held_out", "held-out digits")):
        figures = main[split]
        lines.append(
            f"  {label:<28}{figures[DISTORTION]:>10.2f}{figures[RATE]:>9.2f}"
            f"{figures['d_plus_r']:>9.2f}{figures['dream_marginal_code_length']:>9.2f}"
        )
    if "sweep" in summary:
        sweep_ = summary["sweep"]
        lines.append("Rate-distortion sweep, nats per digit (training | held-out):")
        for point in sweep_["points"]:
            train_, held = point["training"], point["held_out"]
            lines.append(
                f"  beta = {point['beta']:<5g} R = {train_[RATE]:6.2f}  D = "
                f"{train_[DISTORTION]:7.2f}  |  R = {held[RATE]:6.2f}  D = {held[DISTORTION]:7.2f}"
            )
        monotone = sweep_["monotone"]
        lines.append(
            "  as beta grows, R falls and D rises at every point: training "
            f"{'yes' if monotone['training'] else 'NO'}, held-out "
            f"{'yes' if monotone['held_out'] else 'NO'}"
        )
    for name, path in summary["files"].items():
        lines.append(f"{name}: {path}")
    seconds = summary["seconds"]
    lines.append(
        f"Finished in {seconds['wall']:.0f} s wall ({seconds['cpu']:.0f} s CPU, "
        f"torch threads: {summary['torch_threads']})."
    )
    return lines
