"""Variational autoencoder: the essay's Figure 5."""

from typing import Any, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch

from ..presets import RateDistortionELBO
from ..terms import DISTORTION, RATE
from ..weighting import Weight
from .base import Recipe, check_num_data
from .data import curved_manifold
from .networks import GaussianHead, mlp


class VAE(Recipe):
    r"""Variational autoencoder: learn a representation that could have made the data.

    - **Real world P (data + guide)**: nature draws an image ``x ~ p(x)``; we
      add a representation drawn by our encoder, ``z ~ e(z|x)``: ``x → z``.
    - **Dream world Q (model)**: a code from the prior ``z ~ q(z) = N(0, I)``
      decoded into the image, ``x ~ q(x|z)``: ``z → x``.

    The essay's objective is the ELBO, ``<log p(x) e(z|x) / (q(z) q(x|z))>_p
    >= 0``, which splits into the distortion ``D = <-log q(x|z)>_p`` of the
    observed ``x`` and the rate ``R = <log e(z|x) / q(z)>_p`` of the local
    latent ``z``, with ``D + R >= L >= H``; a Lagrange multiplier gives the
    β-VAE objective ``D + β·R`` (:class:`~pyro_kl.RateDistortionELBO`).

    :param int dim: dimension of ``x``.
    :param int latent_dim: dimension of ``z``.
    :param int hidden_dim: width of the encoder's and decoder's hidden layer.

    Example::

        vae = VAE()
        (x,) = vae.make_data(seed=0)
        vae.fit(x, num_steps=200, elbo=vae.make_elbo(beta=0.5))
    """

    name = "vae"
    title = "Variational autoencoder"
    objective = "I[P;Q] = <log p(x) e(z|x) / (q(z) q(x|z))>_real = -H + D + β·R"
    objective_terms = (DISTORTION, RATE)

    def __init__(self, *, dim: int = 8, latent_dim: int = 2, hidden_dim: int = 32):
        super().__init__()
        self.dim, self.latent_dim = dim, latent_dim
        self.encoder = GaussianHead(dim, hidden_dim, latent_dim)
        self.decoder = mlp(latent_dim, hidden_dim, dim)

    def model(self, x: torch.Tensor) -> None:
        """The dream world Q: ``z ~ N(0, I)``, then ``x ~ N(decoder(z), noise)``."""
        self.module("decoder", self.decoder)
        noise = self.param("log_noise", lambda: torch.full((self.dim,), -1.0)).exp()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), noise).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """The real world's encoder: ``z ~ e(z|x)`` for each of nature's ``x``."""
        self.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def make_data(self, num_data: Optional[int] = None, *, seed: int = 0) -> Tuple[torch.Tensor]:
        """Points near a curved surface of dimension ``latent_dim``.

        :returns: ``(x,)``; default 256 examples.
        """
        num_data = check_num_data(256 if num_data is None else num_data)
        return (curved_manifold(num_data, dim=self.dim, latent_dim=self.latent_dim, seed=seed),)

    def make_elbo(self, beta: Weight = 1.0, **kwargs: Any) -> RateDistortionELBO:
        """:class:`~pyro_kl.RateDistortionELBO`: ``D + β·R``."""
        return RateDistortionELBO(beta=beta, **kwargs)
