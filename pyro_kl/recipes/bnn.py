"""Bayesian neural network, trained by Bayes by Backprop: the essay's Figure 10."""

import math
from typing import Any, Dict, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ..presets import BetaGammaELBO
from ..terms import COMPLEXITY, DISTORTION
from ..weighting import Weight
from .base import Recipe, check_num_data, check_sizes, seeded_generator


class BayesianNeuralNetwork(Recipe):
    r"""Bayesian neural network: a posterior over a regression network's weights.

    - **Real world P (data + guide)**: nature draws the data set ``D`` of
      pairs ``(x_i, y_i)``; we add a global summary, a distribution over the
      network's weights ``θ ~ e(θ|D)`` (mean-field Gaussian): ``D → θ``.
    - **Dream world Q (model)**: weights from the prior ``θ ~ q(θ) = N(0, I)``
      and, given the inputs, the targets drawn by the network,
      ``y_i ~ q(y|x_i, θ) = N(net_θ(x_i), σ²)``: ``θ → y_i``, ``x_i → y_i``
      (the inputs are nature's in both worlds: the model records them with
      :func:`pyro.deterministic`, which feeds no term).

    The essay's objective is ``<-β log q(y|x, θ) + log e(θ|D) / q(θ)>_p``,
    Bayes by Backprop with a tempered likelihood: ``β·D + S``, the
    distortion ``D`` of the targets and the complexity ``S`` of the global
    weights, which lie outside the data plate
    (:class:`~pyro_kl.BetaGammaELBO`).

    :param int dim: dimension of the inputs ``x``.
    :param int hidden_dim: width of the network's hidden layer.

    Example::

        bnn = BayesianNeuralNetwork()
        x, y = bnn.make_data(seed=0)
        bnn.fit(x, y, num_steps=300, elbo=bnn.make_elbo(beta=1.0))
    """

    name = "bayesian_neural_network"
    title = "Bayesian neural network"
    objective = (
        "I[P;Q] = <-log q(y|x,θ) + log e(θ|D) / q(θ)>_real - H[Y|X] = D + S - H[Y|X];"
        " weighted: L = β·D + S"
    )
    objective_terms = (DISTORTION, COMPLEXITY)
    data_entropy = "H[Y|X]"

    def __init__(self, *, dim: int = 1, hidden_dim: int = 16):
        super().__init__()
        check_sizes(dim=dim, hidden_dim=hidden_dim)
        self.dim, self.hidden_dim = dim, hidden_dim

    def weight_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Site name -> shape of each weight of the network (all global latents)."""
        return {
            "w1": (self.dim, self.hidden_dim),
            "b1": (self.hidden_dim,),
            "w2": (self.hidden_dim, 1),
            "b2": (1,),
        }

    def predict(self, x: torch.Tensor, weights: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The network's mean prediction for inputs ``x`` under the given weights."""
        hidden = torch.tanh(x @ weights["w1"] + weights["b1"])
        return (hidden @ weights["w2"] + weights["b2"]).squeeze(-1)

    def model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The dream world Q: weights from the prior, then ``y_i ~ N(net(x_i), σ²)``."""
        weights = {
            name: pyro.sample(name, dist.Normal(x.new_zeros(shape), 1.0).to_event(len(shape)))
            for name, shape in self.weight_shapes().items()
        }
        noise = self.param("log_noise", lambda: torch.tensor(math.log(0.3))).exp()
        with pyro.plate("data", x.shape[0]):
            x = pyro.deterministic("x", x, event_dim=1)  # nature's inputs, no term
            pyro.sample("y", dist.Normal(self.predict(x, weights), noise), obs=y)

    def guide(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The real world's posterior over weights: a mean-field Gaussian per weight."""
        for name, shape in self.weight_shapes().items():
            loc = self.param(f"{name}_loc", lambda: 0.5 * torch.randn(shape))
            scale = self.param(
                f"{name}_scale", lambda: torch.full(shape, 0.05), constraint=constraints.positive
            )
            pyro.sample(name, dist.Normal(loc, scale).to_event(len(shape)))

    def make_data(
        self, num_data: Optional[int] = None, *, seed: int = 0
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """A noisy sine wave on ``[-3, 3]`` (the first input coordinate).

        :returns: ``(x, y)``: ``x`` of shape ``(num_data, dim)``, ``y`` of shape
            ``(num_data,)``; default 64 examples.
        """
        num_data = check_num_data(64 if num_data is None else num_data)
        generator = seeded_generator(seed)
        x = 6 * torch.rand(num_data, self.dim, generator=generator) - 3
        y = torch.sin(x[:, 0]) + 0.2 * torch.randn(num_data, generator=generator)
        return x, y

    def make_elbo(self, beta: Weight = 1.0, **kwargs: Any) -> BetaGammaELBO:
        """:class:`~pyro_kl.BetaGammaELBO`: ``β·D + S`` (β the likelihood's temperature)."""
        return BetaGammaELBO(beta=beta, **kwargs)
