"""The demo's pictures: both worlds, reconstructions, and the rate–distortion plane."""

import os
import shutil
from typing import Any, Dict

import torch

from ..presets import RateDistortionELBO
from ..recipes import VAE
from ..terms import DISTORTION, RATE
from ..worlds import render_worlds


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


def write_worlds(
    vae: VAE, images: torch.Tensor, beta: float, folder: str, picture_format: str
) -> Dict[str, str]:
    """``worlds.gv``, the DOT source of both worlds, and ``worlds.<picture_format>``
    when graphviz's ``dot`` program is installed.

    :returns: ``{"worlds_source": "worlds.gv", "worlds": "worlds.svg"}`` (file names).
    """
    import pyro

    elbo = RateDistortionELBO(beta=beta)
    files = {}
    names = [("worlds_source", "worlds.gv")]
    if picture_format != "gv" and shutil.which("dot") is not None:
        # the picture first: graphviz's render removes a .gv of the same stem
        names.insert(0, ("worlds", f"worlds.{picture_format}"))
    for key, name in names:
        with pyro.get_param_store().scope():
            render_worlds(vae.model, vae.guide, (images,), elbo=elbo,
                          filename=os.path.join(folder, name))
        files[key] = name
    return files


def plot_reconstructions(vae: VAE, images: torch.Tensor, folder: str) -> str:
    """Held-out digits above the dream world's mean for the encoder's mean code.

    :returns: the file name, ``reconstructions.png``.
    """
    plt = _pyplot()
    decoded = vae.reconstruct(images)
    columns = len(images)
    figure, axes = plt.subplots(2, columns, figsize=(columns, 2.4))
    for column in range(columns):
        for row, picture in enumerate((images, decoded)):
            axes[row, column].imshow(picture[column].reshape(8, 8).numpy(), cmap="gray_r",
                                     vmin=0, vmax=vae.total_count)
            axes[row, column].axis("off")
    axes[0, 0].set_title("real world: held-out digits x", loc="left", fontsize=9)
    axes[1, 0].set_title("dream world: the decoder's mean for the encoder's mean code",
                         loc="left", fontsize=9)
    name = "reconstructions.png"
    figure.savefig(os.path.join(folder, name), dpi=100, bbox_inches="tight")
    plt.close(figure)
    return name


def plot_rate_distortion(summary: Dict[str, Any], folder: str) -> str:
    """The β sweep in the rate–distortion plane, training and held-out digits,
    both axes in nats per digit, with the line ``D + R = const`` through the
    lowest training ``D + R`` of the sweep.

    :returns: the file name, ``rate_distortion.png``.
    """
    plt = _pyplot()
    points = summary["sweep"]["points"]
    figure, axis = plt.subplots(figsize=(6, 4.5))
    styles = (("training", "o-", "C0", "training digits"),
              ("held_out", "s--", "C1", "held-out digits"))
    for split, style, colour, label in styles:
        rates = [point[split][RATE] for point in points]
        distortions = [point[split][DISTORTION] for point in points]
        axis.plot(rates, distortions, style, color=colour, ms=4, label=label,
                  mfc="white" if split == "held_out" else colour)
    for point in points:
        figures = point["training"]
        axis.annotate(f"β={point['beta']:g}", (figures[RATE], figures[DISTORTION]),
                      textcoords="offset points", xytext=(4, 4), fontsize=7)
    best = min(point["training"][DISTORTION] + point["training"][RATE] for point in points)
    all_rates = [point[s][RATE] for point in points for s in ("training", "held_out")]
    all_distortions = [point[s][DISTORTION] for point in points for s in ("training", "held_out")]
    right = max(all_rates) * 1.1 + 1.0
    axis.plot([0.0, right], [best, best - right], "k:", lw=1,
              label=f"D + R = {best:.1f}: the lowest D + R (best ELBO)\n"
                    "of the training points; none lies below it")
    axis.set_xlim(0.0, right)
    axis.set_ylim(min(all_distortions) - 3.0, max(all_distortions) + 3.0)
    axis.set_xlabel("rate R = <log encoder(z|x) / prior(z)>  (nats per digit)")
    axis.set_ylabel("distortion D = <-log decoder(x|z)>  (nats per digit)")
    axis.set_title("The β sweep in the rate–distortion plane (digits VAE)", fontsize=10)
    axis.legend(fontsize=7)
    name = "rate_distortion.png"
    figure.savefig(os.path.join(folder, name), dpi=100, bbox_inches="tight")
    plt.close(figure)
    return name
