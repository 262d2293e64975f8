"""Variational diffusion as a few-step hierarchical VAE: the essay's Figure 8."""

from typing import Any, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..elbo import WeightedELBO
from ..terms import DISTORTION, RATE
from .base import Recipe, check_num_data
from .data import curved_manifold
from .networks import mlp


class VariationalDiffusion(Recipe):
    r"""Variational diffusion: a fixed noising chain and a learned denoising chain.

    - **Real world P (data + guide)**: nature draws ``x ~ p(x)``; a fixed
      forward process, with no parameters, adds Gaussian noise step by step:
      ``x → z1 → z2 → ... → zT``, ``z_t = sqrt(1 - b_t) z_{t-1} + sqrt(b_t) ε``.
    - **Dream world Q (model)**: the reverse chain ``zT ~ N(0, I) → ... →
      z1 → x``, each step a learned Gaussian ``q(z_{t-1} | z_t)``.

    The essay's objective is the KL between the two joints,
    ``<log p(x) Π_t p(z_t|z_{t-1}) / (q(zT) Π_t q(z_{t-1}|z_t) q(x|z1))>_p``,
    a deep hierarchical VAE's ELBO: the distortion ``D = <-log q(x|z1)>_p``
    of the observed ``x`` plus the rate ``R`` of the noisy latents
    ``z1 .. zT`` (each a local latent: ``<log p(z_t|z_{t-1}) / q(z_t|z_{t+1})>``,
    the last one against the prior).

    :param int dim: dimension of ``x`` and of every ``z_t``.
    :param int num_steps: number ``T`` of noising steps.
    :param float noise: the per-step noise variance ``b_t`` (the same for all steps).
    :param int hidden_dim: width of each denoising network.

    Example::

        diffusion = VariationalDiffusion()
        (x,) = diffusion.make_data(seed=0)
        diffusion.fit(x, num_steps=200)
    """

    name = "variational_diffusion"
    title = "Variational diffusion"
    objective = (
        "I[P;Q] = <log p(x) Π p(z_t|z_t-1) / (q(zT) Π q(z_t-1|z_t) q(x|z1))>_real = -H + D + R"
    )
    objective_terms = (DISTORTION, RATE)

    def __init__(
        self, *, dim: int = 2, num_steps: int = 3, noise: float = 0.3, hidden_dim: int = 32
    ):
        super().__init__()
        if num_steps < 1 or not 0.0 < noise < 1.0:
            raise ValueError(
                f"num_steps={num_steps}, noise={noise}; use num_steps >= 1 and a "
                "per-step noise variance in (0, 1)."
            )
        self.dim, self.num_steps, self.noise = dim, num_steps, noise
        # denoisers[t] predicts the mean of level t from level t + 1 (level 0 is x)
        self.denoisers = nn.ModuleList(mlp(dim, hidden_dim, dim) for _ in range(num_steps))

    def site_names(self) -> Tuple[str, ...]:
        """``("x", "z1", ..., "zT")``, from the data to the noisiest level."""
        return ("x",) + tuple(f"z{t}" for t in range(1, self.num_steps + 1))

    def model(self, x: torch.Tensor) -> None:
        """The dream world Q: ``zT ~ N(0, I)``, then denoise level by level down to ``x``."""
        self.module("denoisers", self.denoisers)
        log_scales = self.param("log_scales", lambda: torch.full((self.num_steps,), -1.0))
        names = self.site_names()
        with pyro.plate("data", x.shape[0]):
            level = pyro.sample(names[-1], dist.Normal(x.new_zeros(self.dim), 1.0).to_event(1))
            for t in reversed(range(self.num_steps)):
                loc = level + self.denoisers[t](level)
                scale = log_scales[t].exp().expand(self.dim)
                obs = x if t == 0 else None
                level = pyro.sample(names[t], dist.Normal(loc, scale).to_event(1), obs=obs)

    def guide(self, x: torch.Tensor) -> None:
        """The real world's fixed forward process: add noise to ``x`` step by step."""
        keep, names = (1.0 - self.noise) ** 0.5, self.site_names()
        with pyro.plate("data", x.shape[0]):
            level = x
            for name in names[1:]:
                noisy = dist.Normal(keep * level, self.noise**0.5).to_event(1)
                level = pyro.sample(name, noisy)

    def make_data(self, num_data: Optional[int] = None, *, seed: int = 0) -> Tuple[torch.Tensor]:
        """Points near a curve in the plane (``dim`` 2 by default).

        :returns: ``(x,)``; default 256 examples.
        """
        num_data = check_num_data(256 if num_data is None else num_data)
        return (curved_manifold(num_data, dim=self.dim, latent_dim=1, seed=seed),)

    def make_elbo(self, **kwargs: Any) -> WeightedELBO:
        """:class:`~pyro_kl.WeightedELBO`; weigh the rate with ``weights={"rate": ...}``."""
        return WeightedELBO(**kwargs)
