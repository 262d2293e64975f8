"""``python -m pyro_kl demo``: a β-VAE on scikit-learn's handwritten digits.

The two worlds of the demo:

- **real world P (data + guide)**: a digit ``x`` drawn by nature (the 8x8
  images that scikit-learn ships, 17 grey levels 0..16), and an encoder, the
  guide, that draws a code ``z ~ encoder(z | x)``;
- **dream world Q (model)**: a code ``z ~ N(0, I)`` from the prior and a
  decoder that draws each pixel ``x_ij ~ Binomial(16, decoder(z)_ij)``.

Pixels are counts, so the likelihood is discrete and the distortion
``D = <-log decoder(x | z)>`` is a true cross-entropy in nats, and the
rate ``R = <log encoder(z | x) - log prior(z)>`` is the information the code
carries about the image. The demo trains with
:class:`~pyro_kl.RateDistortionELBO` (``D + β·R``), shows both terms per
example in a progress bar, and writes pictures into a folder.
"""

import json
import math
import os
import time
from typing import Dict, List, Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, RenyiELBO
from pyro.optim import ClippedAdam
from torch import nn

from .presets import RateDistortionELBO
from .terms import DISTORTION, RATE

GREY_LEVELS = 16
"""The digits' pixels are counts ``0..16``: a Binomial with 16 trials each."""

DEFAULT_STEPS = 3000
DEFAULT_SWEEP_BETAS = (0.25, 0.5, 1.0, 2.0, 4.0)


def load_digits_tensor() -> torch.Tensor:
    """The 1797 handwritten digits scikit-learn ships, as a ``(1797, 64)`` float tensor
    of pixel counts ``0..16`` (nothing is downloaded).

    :returns: the images, one flattened 8x8 image per row.
    :rtype: torch.Tensor
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - the demo extra installs it
        raise ImportError(
            "The demo needs scikit-learn; install it with `pip install pyro-kl[demo]`."
        ) from error
    return torch.tensor(load_digits().data, dtype=torch.get_default_dtype())


class DigitsVAE(nn.Module):
    """A VAE whose dream world (the model) is ``z ~ N(0, I)``, ``x ~ Binomial(16,
    decoder(z))`` per pixel, and whose real world adds the encoder (the guide)
    ``z ~ N(mu(x), sigma(x))`` to the data.

    :param int latent_dim: size of the code ``z``.
    :param int hidden_dim: width of the encoder's and decoder's hidden layer.
    :param int pixels: pixels per image.

    Example::

        vae = DigitsVAE(latent_dim=4)
        elbo = RateDistortionELBO(beta=1.0)
        svi = SVI(vae.model, vae.guide, ClippedAdam({"lr": 3e-3}), loss=elbo)
        svi.step(images)
    """

    def __init__(self, *, latent_dim: int = 4, hidden_dim: int = 128, pixels: int = 64):
        super().__init__()
        self.latent_dim = latent_dim
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.Softplus(), nn.Linear(hidden_dim, pixels)
        )
        self.encoder = nn.Sequential(
            nn.Linear(pixels, hidden_dim), nn.Softplus(), nn.Linear(hidden_dim, 2 * latent_dim)
        )

    def encode(self, x: torch.Tensor):
        """The encoder's location and scale for images ``x``."""
        loc, raw_scale = self.encoder(x / GREY_LEVELS).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw_scale) + 1e-3

    def model(self, x: torch.Tensor, *, batch_size: Optional[int] = None) -> None:
        """The dream world Q: prior code, decoded to pixel counts."""
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0], subsample_size=batch_size) as index:
            prior = dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1)
            z = pyro.sample("z", prior.expand([len(index)]))
            logits = self.decoder(z)
            pyro.sample(
                "x",
                dist.Binomial(GREY_LEVELS, logits=logits).to_event(1),
                obs=x[index],
            )

    def guide(self, x: torch.Tensor, *, batch_size: Optional[int] = None) -> None:
        """The real world's added part: the encoder draws a code for each image."""
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0], subsample_size=batch_size) as index:
            loc, scale = self.encode(x[index])
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean pixel counts the decoder gives for the encoder's mean code of ``x``."""
        loc, _ = self.encode(x)
        return GREY_LEVELS * torch.sigmoid(self.decoder(loc))


def train(
    vae: DigitsVAE,
    images: torch.Tensor,
    *,
    beta: float,
    steps: int,
    batch_size: int = 128,
    lr: float = 3e-3,
    progress: bool = True,
    description: str = "",
) -> List[Dict[str, float]]:
    """Trains ``vae`` with :class:`~pyro_kl.RateDistortionELBO` (``D + β·R``) on
    random minibatches, with a progress bar of the live terms per example.

    :param DigitsVAE vae: the model and guide; its parameters are trained in place.
    :param torch.Tensor images: all the data, ``(N, 64)`` pixel counts.
    :param float beta: the weight of the rate.
    :param int steps: number of SVI steps.
    :param int batch_size: images per step.
    :param float lr: learning rate of :class:`~pyro.optim.ClippedAdam`.
    :param bool progress: show a tqdm progress bar.
    :param str description: the progress bar's label.
    :returns: one record per step: ``loss``, ``distortion`` and ``rate``, in
        nats per example (the terms are sums over the data, so they are
        divided by ``N``).
    :rtype: list
    """
    pyro.clear_param_store()
    elbo = RateDistortionELBO(beta=beta, analytic_kl=True)
    svi = SVI(vae.model, vae.guide, ClippedAdam({"lr": lr}), loss=elbo)
    size = images.shape[0]
    bar = _progress_bar(steps, description, disable=not progress)
    history = []
    for _ in range(steps):
        loss = svi.step(images, batch_size=batch_size)
        record = {
            "loss": loss / size,
            "distortion": elbo.last_terms[DISTORTION] / size,
            "rate": elbo.last_terms[RATE] / size,
        }
        history.append(record)
        bar.set_postfix(
            D=f"{record['distortion']:.1f} nats", R=f"{record['rate']:.2f} nats", refresh=False
        )
        bar.update()
    bar.close()
    return history


@torch.no_grad()
def per_example_terms(
    vae: DigitsVAE, images: torch.Tensor, *, num_particles: int = 4
) -> Dict[str, float]:
    """Distortion and rate per example, in nats, over all of ``images``.

    :param DigitsVAE vae: a trained VAE.
    :param torch.Tensor images: the data.
    :param int num_particles: Monte Carlo samples of the code per image (the
        rate is analytic).
    :returns: ``{"distortion": D, "rate": R}``.
    :rtype: dict
    """
    elbo = RateDistortionELBO(
        beta=1.0, analytic_kl=True, num_particles=num_particles, vectorize_particles=True,
        max_plate_nesting=1,
    )
    terms = elbo.estimate_terms(vae.model, vae.guide, images)
    size = images.shape[0]
    return {DISTORTION: terms[DISTORTION] / size, RATE: terms[RATE] / size}


@torch.no_grad()
def marginal_nll(vae: DigitsVAE, images: torch.Tensor, *, num_particles: int = 64) -> float:
    """An importance-weighted estimate of ``-log decoder-marginal(x)`` per example,
    the dream world Q's own code length for the real data (Pyro's
    :class:`~pyro.infer.RenyiELBO` with ``alpha=0``, the IWAE bound). It lies
    below ``D + R`` and tightens as ``num_particles`` grows.

    :param DigitsVAE vae: a trained VAE.
    :param torch.Tensor images: the data.
    :param int num_particles: importance samples per image.
    :returns: nats per example.
    :rtype: float
    """
    iwae = RenyiELBO(alpha=0.0, num_particles=num_particles, vectorize_particles=True,
                     max_plate_nesting=1)
    return iwae.loss(vae.model, vae.guide, images) / images.shape[0]


def run_demo(
    out: str = "pyro_kl_demo",
    steps: Optional[int] = None,
    beta: float = 1.0,
    *,
    sweep_betas: Sequence[float] = DEFAULT_SWEEP_BETAS,
    seed: int = 0,
    progress: bool = True,
) -> Dict[str, str]:
    """Trains a β-VAE on the digits and writes what it learned into ``out``.

    Writes ``worlds.svg`` (or ``worlds.gv`` when the ``dot`` binary is missing),
    the real world P (data + guide) beside the dream world Q (model);
    ``rate_distortion.png``, a short β sweep in the rate–distortion plane
    with the line ``D + R = const`` through the best point; ``reconstructions.png``;
    and ``summary.json`` with the numbers.

    :param str out: output folder (created if missing).
    :param int steps: SVI steps of the main run (default 3000); the sweep runs
        use half as many each. A handful (e.g. 20) gives a quick smoke run.
    :param float beta: the weight of the rate in the main run.
    :param sweep_betas: the β values of the rate–distortion sweep.
    :param int seed: random seed.
    :param bool progress: show progress bars.
    :returns: what was written: name -> path.
    :rtype: dict

    Example::

        paths = run_demo(out="demo_out", steps=200, beta=0.5)
        paths["rate_distortion"]  # 'demo_out/rate_distortion.png'
    """
    if steps is None:
        steps = DEFAULT_STEPS
    if steps < 1:
        raise ValueError(f"steps={steps}; pass a positive number of SVI steps, e.g. --steps 200.")
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta={beta}; pass a finite weight >= 0 for the rate, e.g. --beta 0.5.")
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    pyro.set_rng_seed(seed)
    images = load_digits_tensor()
    paths: Dict[str, str] = {}

    print(f"Real world P (data + guide): {len(images)} digits from scikit-learn, encoder z|x.")
    print("Dream world Q (model): z ~ N(0, I), each pixel ~ Binomial(16, decoder(z)).")
    vae = DigitsVAE()
    history = train(vae, images, beta=beta, steps=steps, progress=progress,
                    description=f"beta={beta:g}")
    final = per_example_terms(vae, images)
    summary = {
        "beta": beta,
        "steps": steps,
        "last_step": history[-1],
        "distortion": final[DISTORTION],
        "rate": final[RATE],
        "marginal_nll": marginal_nll(vae, images),
    }
    print(
        f"beta={beta:g}: distortion D = {final[DISTORTION]:.2f} nats, rate R = "
        f"{final[RATE]:.2f} nats per digit; D + R = {final[DISTORTION] + final[RATE]:.2f} "
        f">= -log q(x) (dream world's marginal, importance-weighted) = "
        f"{summary['marginal_nll']:.2f} nats."
    )
    paths.update(_write_worlds(vae, images, beta, out))
    paths["reconstructions"] = _plot_reconstructions(vae, images, out)

    sweep = []
    for sweep_beta in sweep_betas:
        pyro.set_rng_seed(seed)
        member = DigitsVAE()
        train(member, images, beta=sweep_beta, steps=max(steps // 2, 1), progress=progress,
              description=f"sweep beta={sweep_beta:g}")
        sweep.append({"beta": sweep_beta, **per_example_terms(member, images)})
    summary["sweep"] = sweep
    paths["rate_distortion"] = _plot_rate_distortion(sweep, out)

    summary["seconds"] = time.perf_counter() - started
    paths["summary"] = os.path.join(out, "summary.json")
    with open(paths["summary"], "w") as f:
        json.dump(summary, f, indent=2)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return paths


def _progress_bar(total: int, description: str, *, disable: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError as error:  # pragma: no cover - the demo extra installs it
        raise ImportError(
            "The demo needs tqdm; install it with `pip install pyro-kl[demo]`."
        ) from error
    return tqdm(total=total, desc=description, disable=disable, leave=True)


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - the demo extra installs it
        raise ImportError(
            "The demo needs matplotlib; install it with `pip install pyro-kl[demo]`."
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _write_worlds(vae: DigitsVAE, images: torch.Tensor, beta: float, out: str) -> Dict[str, str]:
    """The two-worlds diagram; the DOT source alone when ``dot`` is missing."""
    import shutil

    from .worlds import render_worlds

    graph = render_worlds(
        vae.model, vae.guide, (images[:16],), elbo=RateDistortionELBO(beta=beta)
    )
    source = os.path.join(out, "worlds.gv")
    with open(source, "w") as f:
        f.write(graph.source)
    if shutil.which("dot") is None:
        print("The graphviz `dot` binary is missing: wrote the diagram's DOT source "
              f"to {source}; render it with `dot -Tsvg {source}` once graphviz is installed.")
        return {"worlds_source": source}
    picture = graph.render(os.path.join(out, "worlds"), format="svg", cleanup=True)
    return {"worlds_source": source, "worlds": picture}


def _plot_reconstructions(vae: DigitsVAE, images: torch.Tensor, out: str) -> str:
    plt = _pyplot()
    originals = images[:10]
    decoded = vae.reconstruct(originals)
    figure, axes = plt.subplots(2, 10, figsize=(10, 2.4))
    for column in range(10):
        for row, picture in enumerate((originals, decoded)):
            axes[row, column].imshow(picture[column].reshape(8, 8), cmap="gray_r",
                                     vmin=0, vmax=GREY_LEVELS)
            axes[row, column].axis("off")
    axes[0, 0].set_title("real world: data x", loc="left", fontsize=9)
    axes[1, 0].set_title("dream world: decoder mean for the encoder's code", loc="left",
                         fontsize=9)
    path = os.path.join(out, "reconstructions.png")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def _plot_rate_distortion(sweep: List[Dict[str, float]], out: str) -> str:
    plt = _pyplot()
    rates = [point[RATE] for point in sweep]
    distortions = [point[DISTORTION] for point in sweep]
    best = min(d + r for d, r in zip(distortions, rates))
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.plot(rates, distortions, "o-", label="β sweep (trained encoder + decoder)")
    for point in sweep:
        axis.annotate(f"β={point['beta']:g}", (point[RATE], point[DISTORTION]),
                      textcoords="offset points", xytext=(5, 5), fontsize=8)
    line = [0.0, max(rates) * 1.15 + 0.5]
    axis.plot(line, [best - r for r in line], "k--", lw=1,
              label=f"D + R = {best:.1f} nats (best ELBO of the sweep)")
    axis.set_xlim(0, max(rates) * 1.15 + 0.5)
    axis.set_ylim(min(distortions) - 5, max(distortions) + 5)
    axis.set_xlabel("rate R = <log encoder(z|x) / prior(z)> (nats per digit)")
    axis.set_ylabel("distortion D = <-log decoder(x|z)> (nats)")
    axis.set_title("Rate–distortion plane of the digits VAE")
    axis.legend(fontsize=8)
    path = os.path.join(out, "rate_distortion.png")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path
