"""Gaussian mixture: density estimation whose dream world sums over a discrete cause."""

from typing import Any, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ..elbo import WeightedELBO
from ..terms import DISTORTION
from .base import Recipe, check_num_data, check_sizes
from .data import labelled_blobs


class GaussianMixture(Recipe):
    r"""Gaussian mixture: the dream world picks a component, then draws the point from it.

    - **Real world P (data + guide)**: nature draws points ``x ~ p(x)``; we add
      nothing (the guide is empty).
    - **Dream world Q (model)**: a component ``k ~ Categorical(π)``, then
      ``x ~ N(μ_k, diag(σ_k²))``: ``k → x``. The assignment ``k`` is
      **enumerated**: the dream world's marginal of ``x`` is the mixture
      ``Σ_k π_k N(x | μ_k, σ_k²)``, computed exactly, nothing is sampled.

    The essay's objective is density estimation's, ``<-log q(x)>_p`` with the
    dream world's marginal ``q(x) = Σ_k π_k N(x | μ_k, σ_k²)``: the
    distortion ``D`` of the observed ``x`` (``I[P;Q] = -H + D``). The
    assignment has no term of its own: it is summed out with ``x``, and that
    marginal is one summand reported under ``x``'s term. The mixture weights,
    locations and scales are point estimates (:func:`pyro.param`), so training
    is maximum likelihood.

    :param int dim: dimension of ``x``.
    :param int num_components: number of mixture components.

    Example::

        mixture = GaussianMixture()
        (x,) = mixture.make_data(seed=0)
        mixture.fit(x, num_steps=200, lr=0.05)
    """

    name = "gaussian_mixture"
    title = "Gaussian mixture"
    objective = "I[P;Q] = <-log Σ_k π_k q(x|k)>_real = -H + D"
    objective_terms = (DISTORTION,)

    def __init__(self, *, dim: int = 2, num_components: int = 3):
        super().__init__()
        check_sizes(dim=dim, num_components=num_components)
        if not isinstance(num_components, int) or num_components < 1:
            raise ValueError(f"num_components={num_components!r}; use a positive integer.")
        self.dim, self.num_components = dim, num_components

    def mixture_params(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The mixture weights ``π``, locations ``μ`` and scales ``σ``.

        At first use the locations start at ``num_components`` points of ``x``
        spread through the data set, the scales at 1 and the weights uniform.

        :returns: ``(weights, locs, scales)`` of shapes ``(K,)``, ``(K, dim)``, ``(K, dim)``.
        """
        k = self.num_components
        weights = self.param(
            "weights", lambda: x.new_full((k,), 1.0 / k), constraint=constraints.simplex
        )
        spread = torch.linspace(0, x.shape[0] - 1, k).long()
        locs = self.param("locs", lambda: x[spread].detach().clone())
        scales = self.param(
            "scales", lambda: x.new_ones(k, self.dim), constraint=constraints.positive
        )
        return weights, locs, scales

    def model(self, x: torch.Tensor) -> None:
        """The dream world Q: ``k ~ Categorical(π)`` (enumerated), ``x ~ N(μ_k, σ_k²)``."""
        weights, locs, scales = self.mixture_params(x)
        with pyro.plate("data", x.shape[0]):
            k = pyro.sample(
                "assignment", dist.Categorical(weights), infer={"enumerate": "parallel"}
            )
            pyro.sample("x", dist.Normal(locs[k], scales[k]).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """The real world adds nothing to nature's ``x``: the assignment is summed
        out in the dream world, not guessed."""

    @torch.no_grad()
    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """The dream world's marginal ``log Σ_k π_k N(x | μ_k, σ_k²)`` of each row of ``x``."""
        weights, locs, scales = self.mixture_params(x)
        components = dist.Normal(locs, scales).to_event(1).log_prob(x.unsqueeze(-2))
        return torch.logsumexp(weights.log() + components, dim=-1)

    def make_data(self, num_data: Optional[int] = None, *, seed: int = 0) -> Tuple[torch.Tensor]:
        """Points around ``num_components`` centres (their labels are dropped).

        :returns: ``(x,)``; default 300 examples.
        """
        num_data = check_num_data(300 if num_data is None else num_data)
        x, _ = labelled_blobs(
            num_data, dim=self.dim, num_classes=self.num_components, seed=seed, spread=0.5
        )
        return (x,)

    def make_elbo(self, beta: float = 1.0, **kwargs: Any) -> WeightedELBO:
        """The ELBO of ``β·D`` with one plate (``max_plate_nesting=1``), so the
        assignment is enumerated in dimension -2."""
        kwargs.setdefault("max_plate_nesting", 1)
        return WeightedELBO(weights={DISTORTION: beta}, **kwargs)
