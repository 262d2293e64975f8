"""Density estimation: the essay's first drawing (its Figure 3)."""

from typing import Any, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ..elbo import WeightedELBO
from .base import Recipe, check_num_data, check_sizes, seeded_generator


class DensityEstimation(Recipe):
    r"""Density estimation: fit a parametric density to nature's samples.

    - **Real world P (data + guide)**: a black box draws samples ``x ~ p(x)``;
      nothing is added to it, so the guide is empty.
    - **Dream world Q (model)**: our own box with knobs θ draws
      ``x ~ q_θ(x)``, here a full-covariance Gaussian whose mean and Cholesky
      factor are parameters (point estimates, not latents).

    The essay's objective is ``I[p;q] = <log p(x) / q_θ(x)>_p = -H[p] +
    <-log q_θ(x)>_p``: up to the entropy of nature's data, which nobody
    controls, a single term, the distortion (cross-entropy)
    ``D = <-log q_θ(x)>_p`` of the observed site ``x``. Minimising it is
    maximum likelihood, whose optimum here is the sample mean and covariance.

    :param int dim: dimension of ``x``.

    Example::

        recipe = DensityEstimation()
        (x,) = recipe.make_data(seed=0)
        recipe.fit(x, num_steps=300, lr=0.05)
    """

    name = "density_estimation"
    title = "Density estimation"
    objective = "I[P;Q] = <log p(x) / q_θ(x)>_real = -H[X] + D"
    objective_terms = ("distortion",)

    def __init__(self, *, dim: int = 2):
        super().__init__()
        check_sizes(dim=dim)
        self.dim = dim

    def model(self, x: torch.Tensor) -> None:
        """The dream world Q: ``x ~ N(loc, L L^T)`` with learned ``loc`` and ``L``."""
        loc = self.param("loc", lambda: torch.zeros(self.dim))
        scale_tril = self.param(
            "scale_tril", lambda: torch.eye(self.dim), constraint=constraints.lower_cholesky
        )
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.MultivariateNormal(loc, scale_tril=scale_tril), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """The real world P adds nothing to nature's samples: no latent."""

    def make_data(self, num_data: Optional[int] = None, *, seed: int = 0) -> Tuple[torch.Tensor]:
        """Nature's black box: a correlated Gaussian with an unknown mean.

        :returns: ``(x,)`` with ``x`` of shape ``(num_data, dim)`` (default 200 rows).
        """
        num_data = check_num_data(200 if num_data is None else num_data)
        generator = seeded_generator(seed)
        mixing = torch.randn(self.dim, self.dim, generator=generator)
        shift = torch.randn(self.dim, generator=generator)
        return (torch.randn(num_data, self.dim, generator=generator) @ mixing + shift,)

    def make_elbo(self, **kwargs: Any) -> WeightedELBO:
        """:class:`~pyro_kl.WeightedELBO` with unit weights: the objective is ``D``."""
        return WeightedELBO(**kwargs)
