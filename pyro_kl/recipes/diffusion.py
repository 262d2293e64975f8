"""Variational diffusion as a few-step hierarchical VAE: the essay's Figure 8."""

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..elbo import WeightedELBO
from ..terms import DISTORTION, RATE
from .base import Recipe, check_num_data, check_sizes
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

    **Per-step KLs.** The forward process is Gaussian, so the same real world
    can be drawn backwards: ``zT ~ p(zT | x)``, then ``z_{t-1} ~ p(z_{t-1} |
    z_t, x)``, each a Gaussian in closed form (:meth:`posterior_guide`). Drawn
    that way, the rate splits into one KL per level,

    .. math:: R = \mathrm{KL}(p(z_T|x) \,\|\, q(z_T))
        + \sum_{t=2}^{T} \big\langle \mathrm{KL}(p(z_{t-1}|z_t, x) \,\|\,
        q(z_{t-1}|z_t)) \big\rangle_p,

    each analytic. ``make_elbo(per_step=True)`` reports each level as its own
    term (``kl_z1`` .. ``kl_zT``, :meth:`step_terms`); with the distortion they
    sum to the loss.

    :param int dim: dimension of ``x`` and of every ``z_t``.
    :param int num_steps: number ``T`` of noising steps.
    :param noise: the per-step noise variance ``b_t``: one float for every
        step, or a sequence of ``T`` values in (0, 1) (a schedule).
    :param int hidden_dim: width of each denoising network.

    Example::

        diffusion = VariationalDiffusion()
        (x,) = diffusion.make_data(seed=0)
        diffusion.fit(x, num_steps=200)
        elbo = diffusion.make_elbo(per_step=True)
        elbo.estimate_terms(diffusion.model, diffusion.posterior_guide, x)
        # {'distortion': ..., 'kl_z3': ..., 'kl_z2': ..., 'kl_z1': ...}
    """

    name = "variational_diffusion"
    title = "Variational diffusion"
    objective = (
        "I[P;Q] = <log p(x) Π p(z_t|z_t-1) / (q(zT) Π q(z_t-1|z_t) q(x|z1))>_real = -H + D + R"
    )
    objective_terms = (DISTORTION, RATE)

    def __init__(
        self,
        *,
        dim: int = 2,
        num_steps: int = 3,
        noise: Union[float, Sequence[float]] = 0.3,
        hidden_dim: int = 32,
    ):
        super().__init__()
        check_sizes(dim=dim, num_steps=num_steps, hidden_dim=hidden_dim)
        schedule = torch.as_tensor(noise, dtype=torch.get_default_dtype()).reshape(-1)
        if schedule.numel() == 1 and num_steps >= 1:
            schedule = schedule.expand(num_steps)
        if (
            num_steps < 1
            or schedule.numel() != num_steps
            or not bool(((schedule > 0) & (schedule < 1)).all())
        ):
            raise ValueError(
                f"num_steps={num_steps}, noise={noise}; use num_steps >= 1 and a "
                "per-step noise variance in (0, 1) (one float, or num_steps of them)."
            )
        self.dim, self.num_steps = dim, num_steps
        self.noise = noise
        self.register_buffer("betas", schedule.clone())
        self.register_buffer("alpha_bars", torch.cumprod(1.0 - schedule, 0))
        # denoisers[t] predicts the mean of level t from level t + 1 (level 0 is x)
        self.denoisers = nn.ModuleList(mlp(dim, hidden_dim, dim) for _ in range(num_steps))

    def site_names(self) -> Tuple[str, ...]:
        """``("x", "z1", ..., "zT")``, from the data to the noisiest level."""
        return ("x",) + tuple(f"z{t}" for t in range(1, self.num_steps + 1))

    def step_terms(self) -> Dict[str, str]:
        """Site -> term for reporting each level's KL on its own: ``{"z1": "kl_z1", ...}``."""
        return {name: f"kl_{name}" for name in self.site_names()[1:]}

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
        names = self.site_names()
        with pyro.plate("data", x.shape[0]):
            level = x
            for t, name in enumerate(names[1:]):
                beta = self.betas[t]
                noisy = dist.Normal((1.0 - beta).sqrt() * level, beta.sqrt()).to_event(1)
                level = pyro.sample(name, noisy)

    def posterior_guide(self, x: torch.Tensor) -> None:
        r"""The same real world as :meth:`guide`, drawn from the noisiest level
        down: ``zT ~ p(zT | x) = N(sqrt(ā_T) x, 1 - ā_T)``, then
        ``z_{t-1} ~ p(z_{t-1} | z_t, x)``, the forward process's Gaussian
        posterior (``ā_t = Π_{s<=t} (1 - b_s)``):

        .. math:: \mathcal N\Big(\frac{\sqrt{\bar a_{t-1}}\, b_t}{1 - \bar a_t} x
            + \frac{\sqrt{1 - b_t}\,(1 - \bar a_{t-1})}{1 - \bar a_t} z_t,\;
            \frac{1 - \bar a_{t-1}}{1 - \bar a_t} b_t\Big).

        Each site's distribution is then the one the dream world's step
        ``q(z_{t-1} | z_t)`` is compared with, so its KL is analytic.
        """
        names = self.site_names()
        alpha_bars = self.alpha_bars
        with pyro.plate("data", x.shape[0]):
            top = self.num_steps
            level = pyro.sample(
                names[top],
                dist.Normal(alpha_bars[-1].sqrt() * x, (1.0 - alpha_bars[-1]).sqrt()).to_event(1),
            )
            for t in range(top, 1, -1):
                loc, variance = self.forward_posterior(x, level, t)
                level = pyro.sample(names[t - 1], dist.Normal(loc, variance.sqrt()).to_event(1))

    def forward_posterior(
        self, x: torch.Tensor, level: torch.Tensor, t: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of ``p(z_{t-1} | z_t = level, x)`` for ``2 <= t <= T``."""
        beta, bar, bar_before = self.betas[t - 1], self.alpha_bars[t - 1], self.alpha_bars[t - 2]
        loc = (bar_before.sqrt() * beta * x + (1.0 - beta).sqrt() * (1.0 - bar_before) * level) / (
            1.0 - bar
        )
        return loc, (1.0 - bar_before) / (1.0 - bar) * beta

    def make_data(self, num_data: Optional[int] = None, *, seed: int = 0) -> Tuple[torch.Tensor]:
        """Points near a curve in the plane (``dim`` 2 by default).

        :returns: ``(x,)``; default 256 examples.
        """
        num_data = check_num_data(256 if num_data is None else num_data)
        return (curved_manifold(num_data, dim=self.dim, latent_dim=1, seed=seed),)

    def make_elbo(self, *, per_step: bool = False, **kwargs: Any) -> WeightedELBO:
        """:class:`~pyro_kl.WeightedELBO`; weigh the rate with ``weights={"rate": ...}``.

        :param bool per_step: report each level's KL as its own term
            (:meth:`step_terms`) with analytic KLs; train and evaluate it with
            :meth:`posterior_guide`, whose sites are drawn in the dream world's
            order (with :meth:`guide` the analytic KLs would not be the rate).
        """
        if per_step:
            kwargs = {"site_terms": self.step_terms(), "analytic_kl": True, **kwargs}
        return WeightedELBO(**kwargs)
