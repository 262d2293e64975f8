"""(Variational) Bayesian inference: the essay's Figure 9."""

from typing import Any, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ..presets import BetaGammaELBO
from ..terms import COMPLEXITY, DISTORTION
from ..weighting import Weight
from .base import Recipe, check_num_data, check_sizes, seeded_generator


class BayesianInference(Recipe):
    r"""Variational Bayesian inference of a Gaussian mean, whose posterior is exact.

    - **Real world P (data + guide)**: nature draws a whole data set ``D =
      (x_1 .. x_N) ~ p(D)``; we add a global summary of it, the guide's
      ``θ ~ e(θ|D)``: ``D → θ``.
    - **Dream world Q (model)**: the data are exchangeable: a summary from
      the prior ``θ ~ q(θ) = N(0, τ² I)`` generates each point
      ``x_i ~ q(x_i|θ) = N(θ, σ² I)``: ``θ → x_i``.

    The essay's objective is ``<log p(D) e(θ|D) / (q(θ) q(D|θ))>_p``; with a
    trade-off β it is generalized variational Bayes, ``<-β log q(D|θ) + log
    e(θ|D) / q(θ)>_p = β·D + S``: the distortion ``D`` of the data and the
    complexity ``S`` of the global ``θ`` (:class:`~pyro_kl.BetaGammaELBO`).
    The model is conjugate, so :meth:`exact_posterior` gives the optimum of
    that objective, the tempered posterior, in closed form; the guide, a
    diagonal Gaussian, can reach it exactly.

    :param int dim: dimension of ``θ`` and of each ``x_i``.
    :param float prior_scale: τ, the prior's standard deviation.
    :param float noise_scale: σ, the likelihood's standard deviation (known).

    Example::

        bayes = BayesianInference()
        (x,) = bayes.make_data(seed=0)
        bayes.fit(x, num_steps=500, lr=0.05)
        bayes.exact_posterior(x)  # Normal(loc, scale), compare with the guide's
    """

    name = "bayesian_inference"
    title = "Bayesian inference"
    objective = (
        "I[P;Q] = <log p(D) e(θ|D) / (q(θ) q(D|θ))>_real = D + S - H[D]; weighted: L = β·D + S"
    )
    objective_terms = (DISTORTION, COMPLEXITY)
    data_entropy = "H[D]"

    def __init__(self, *, dim: int = 2, prior_scale: float = 2.0, noise_scale: float = 1.0):
        super().__init__()
        check_sizes(dim=dim)
        self.dim, self.prior_scale, self.noise_scale = dim, prior_scale, noise_scale

    def model(self, x: torch.Tensor) -> None:
        """The dream world Q: ``θ ~ N(0, τ² I)``, then ``x_i ~ N(θ, σ² I)``."""
        prior = dist.Normal(x.new_zeros(self.dim), self.prior_scale).to_event(1)
        theta = pyro.sample("theta", prior)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(theta, self.noise_scale).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """The real world's summary of the data set: ``θ ~ N(loc, scale)``."""
        loc = self.param("theta_loc", lambda: torch.zeros(self.dim))
        scale = self.param(
            "theta_scale", lambda: torch.ones(self.dim), constraint=constraints.positive
        )
        pyro.sample("theta", dist.Normal(loc, scale).to_event(1))

    def exact_posterior(self, x: torch.Tensor, *, beta: float = 1.0) -> dist.Normal:
        """The optimum of ``β·D + S`` over all distributions of θ: the tempered
        posterior ``∝ q(θ) q(D|θ)^β``, here a Gaussian.

        :param torch.Tensor x: the data set, ``(N, dim)``.
        :param float beta: the weight β of the distortion.
        :returns: the exact (tempered) posterior of ``θ``.
        :rtype: ~pyro.distributions.Normal
        """
        precision = self.prior_scale**-2 + beta * x.shape[0] / self.noise_scale**2
        loc = beta * x.sum(0) / self.noise_scale**2 / precision
        return dist.Normal(loc, precision**-0.5 * torch.ones(self.dim))

    def make_data(self, num_data: Optional[int] = None, *, seed: int = 0) -> Tuple[torch.Tensor]:
        """Gaussian points around a mean drawn from the prior.

        :returns: ``(x,)`` with ``x`` of shape ``(num_data, dim)``; default 20 points.
        """
        num_data = check_num_data(20 if num_data is None else num_data, minimum=1)
        generator = seeded_generator(seed)
        theta = self.prior_scale * torch.randn(self.dim, generator=generator)
        noise = self.noise_scale * torch.randn(num_data, self.dim, generator=generator)
        return (theta + noise,)

    def make_elbo(self, beta: Weight = 1.0, **kwargs: Any) -> BetaGammaELBO:
        """:class:`~pyro_kl.BetaGammaELBO`: ``β·D + S`` (β = 1: the ELBO of variational Bayes)."""
        return BetaGammaELBO(beta=beta, **kwargs)
