"""TherML: the essay's four-term drawing (its second Figure 10)."""

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ..presets import TherMLELBO
from ..terms import CLASSIFICATION, COMPLEXITY, DISTORTION, RATE
from ..weighting import Weight
from .base import check_sizes
from .data import LabelledBlobsRecipe
from .networks import mlp


class TherML(LabelledBlobsRecipe):
    r"""TherML: honest about the weights, the representation, the inputs and the labels.

    - **Real world P (data + guide)**: nature draws the data set ``D`` of pairs
      ``(x, y)``; our learning algorithm draws the encoder's weights from
      them, ``θ ~ e(θ|D)``, and the encoder draws each representation
      ``z ~ e(z|x, θ)``: ``D → θ``, ``x → z``, ``θ → z``.
    - **Dream world Q (model)**: weights from a prior ``θ ~ q(θ)``, codes
      ``z ~ q(z) = N(0, I)``, and from each code both the input
      ``x ~ q(x|z)`` and the label ``y ~ q(y|z)``.

    The essay's objective is ``<γ·(-log q(y|z)) + δ·(-log q(x|z)) + σ·log
    e(θ|D) / q(θ) + log e(z|x, θ) / q(z)>_p = γ·C + δ·D + σ·S + R``: the
    classification error ``C`` of the labels (site ``y``, sent to
    ``classification``), the distortion ``D`` of the inputs, the complexity
    ``S`` of the global weights ``θ`` and the rate ``R`` of the local
    representation ``z`` (:class:`~pyro_kl.TherMLELBO`). The essay writes
    the rate as ``log p(z|x, θ) / q(θ)``, a typo: the rate compares the
    encoder with the dream world's prior of the *code*, ``R = <log e(z|x, θ)
    / q(z)>_p``, which is what this recipe computes (the model's site ``z``
    has prior ``q(z) = N(0, I)``; ``q(θ)`` belongs to ``S``). At γ = δ = σ = 1 it is
    ``I[P;Q] - const``, with ``const = -H``, minus the entropy of nature's data;
    otherwise it is a weighted objective, a Lagrangian ``L``.

    :param int dim: dimension of ``x``.
    :param int num_classes: number of labels.
    :param int latent_dim: dimension of ``z``.
    :param int hidden_dim: width of the decoder's and classifier's hidden layer.

    Example::

        therml = TherML()
        x, y = therml.make_data(seed=0)
        therml.fit(x, y, num_steps=200, elbo=therml.make_elbo(delta=0.5, sigma=1.0))
    """

    name = "therml"
    title = "TherML"
    objective = (
        "L = <γ(-log q(y|z)) + δ(-log q(x|z)) + σ log e(θ|D)/q(θ) + log e(z|x,θ)/q(z)>_real"
        " = γ·C + δ·D + σ·S + R"
    )
    objective_terms = (CLASSIFICATION, DISTORTION, COMPLEXITY, RATE)

    def __init__(
        self, *, dim: int = 4, num_classes: int = 3, latent_dim: int = 2, hidden_dim: int = 16
    ):
        super().__init__()
        check_sizes(dim=dim, num_classes=num_classes, latent_dim=latent_dim, hidden_dim=hidden_dim)
        self.dim, self.num_classes, self.latent_dim = dim, num_classes, latent_dim
        self.decoder = mlp(latent_dim, hidden_dim, dim)
        self.classifier = mlp(latent_dim, hidden_dim, num_classes)

    def model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The dream world Q: ``θ ~ N(0, I)``; ``z ~ N(0, I)`` generates ``x`` and ``y``."""
        self.module("decoder", self.decoder)
        self.module("classifier", self.classifier)
        pyro.sample("theta", dist.Normal(x.new_zeros(self.dim, self.latent_dim), 1.0).to_event(2))
        noise = self.param("log_noise", lambda: torch.full((self.dim,), -1.0)).exp()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), noise).to_event(1), obs=x)
            pyro.sample("y", dist.Categorical(logits=self.classifier(z)), obs=y)

    def guide(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The real world: weights ``θ ~ e(θ|D)``, then codes ``z ~ N(x θ, s)``."""
        shape = (self.dim, self.latent_dim)
        loc = self.param("theta_loc", lambda: 0.3 * torch.randn(shape))
        scale = self.param(
            "theta_scale", lambda: torch.full(shape, 0.05), constraint=constraints.positive
        )
        theta = pyro.sample("theta", dist.Normal(loc, scale).to_event(2))
        code_scale = self.param(
            "z_scale", lambda: torch.full((self.latent_dim,), 0.5), constraint=constraints.positive
        )
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ theta, code_scale).to_event(1))

    def make_elbo(
        self, gamma: Weight = 1.0, delta: Weight = 1.0, sigma: Weight = 1.0, **kwargs: Any
    ) -> TherMLELBO:
        """:class:`~pyro_kl.TherMLELBO` with ``y`` sent to ``classification``."""
        kwargs.setdefault("site_terms", {"y": CLASSIFICATION})
        return TherMLELBO(gamma=gamma, delta=delta, sigma=sigma, **kwargs)
