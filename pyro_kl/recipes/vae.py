"""Variational autoencoder: the essay's Figure 5."""

from typing import Any, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch

from ..presets import RateDistortionELBO
from ..terms import DISTORTION, RATE
from ..weighting import Weight
from .._checks import whole_number
from .base import Recipe, check_num_data, check_sizes, seeded_generator
from .data import curved_manifold
from .networks import GaussianHead, mlp

LIKELIHOODS = ("normal", "binomial")
"""The dream world's likelihoods for ``x`` that :class:`VAE` offers."""


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

    The decoder's likelihood is a diagonal ``Normal`` with a learned noise
    scale (``likelihood="normal"``), or, for counts such as grey levels,
    ``Binomial(total_count, logits=decoder(z))`` per coordinate
    (``likelihood="binomial"``); then ``x`` is discrete, so the distortion is a
    true code length in nats, and the encoder reads ``x / total_count``.

    :param int dim: dimension of ``x``.
    :param int latent_dim: dimension of ``z``.
    :param int hidden_dim: width of the encoder's and decoder's hidden layer.
    :param str likelihood: ``"normal"`` or ``"binomial"``.
    :param int total_count: the number of trials of the binomial likelihood,
        so that each coordinate of ``x`` is a count ``0..total_count``.

    Example::

        vae = VAE()
        (x,) = vae.make_data(seed=0)
        vae.fit(x, num_steps=200, elbo=vae.make_elbo(beta=0.5))

        pyro.clear_param_store()  # a second VAE recipe would share the first's names
        counts = VAE(dim=64, latent_dim=4, likelihood="binomial", total_count=16)
        (x,) = counts.make_data(seed=0)  # integers 0..16, as float
        counts.fit(x, num_steps=20)
    """

    name = "vae"
    title = "Variational autoencoder"
    objective = (
        "I[P;Q] = <log p(x) e(z|x) / (q(z) q(x|z))>_real = D + R - H; weighted: L = D + β·R"
    )
    objective_terms = (DISTORTION, RATE)

    def __init__(
        self,
        *,
        dim: int = 8,
        latent_dim: int = 2,
        hidden_dim: int = 32,
        likelihood: str = "normal",
        total_count: int = 16,
    ):
        super().__init__()
        check_sizes(dim=dim, latent_dim=latent_dim, hidden_dim=hidden_dim)
        if likelihood not in LIKELIHOODS:
            raise ValueError(
                f"likelihood={likelihood!r}; use one of {LIKELIHOODS} (binomial for counts "
                "0..total_count, such as grey levels)."
            )
        whole_number("total_count", total_count, minimum=1, meaning="the largest count")
        self.dim, self.latent_dim = dim, latent_dim
        self.likelihood, self.total_count = likelihood, total_count
        self.encoder = GaussianHead(dim, hidden_dim, latent_dim)
        self.decoder = mlp(latent_dim, hidden_dim, dim)

    def model(self, x: torch.Tensor) -> None:
        """The dream world Q: ``z ~ N(0, I)``, then ``x ~ N(decoder(z), noise)``
        (or ``Binomial(total_count, logits=decoder(z))``)."""
        self.module("decoder", self.decoder)
        if self.likelihood == "normal":
            noise = self.param("log_noise", lambda: torch.full((self.dim,), -1.0)).exp()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            if self.likelihood == "normal":
                likelihood = dist.Normal(self.decoder(z), noise)
            else:
                likelihood = dist.Binomial(self.total_count, logits=self.decoder(z))
            pyro.sample("x", likelihood.to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """The real world's encoder: ``z ~ e(z|x)`` for each of nature's ``x``."""
        self.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encode(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The encoder's location and scale of ``z`` for each row of ``x``."""
        if self.likelihood == "binomial":
            x = x / self.total_count
        return self.encoder(x)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The dream world's mean of ``x`` given the encoder's mean code for ``x``.

        :returns: a tensor shaped like ``x``.
        """
        loc, _ = self.encode(x)
        output = self.decoder(loc)
        if self.likelihood == "binomial":
            return self.total_count * torch.sigmoid(output)
        return output

    def make_data(self, num_data: Optional[int] = None, *, seed: int = 0) -> Tuple[torch.Tensor]:
        """Points near a curved surface of dimension ``latent_dim``; with the
        binomial likelihood, counts ``0..total_count`` whose success
        probabilities lie near such a surface.

        :returns: ``(x,)``; default 256 examples.
        """
        num_data = check_num_data(256 if num_data is None else num_data)
        x = curved_manifold(num_data, dim=self.dim, latent_dim=self.latent_dim, seed=seed)
        if self.likelihood == "binomial":
            probs = torch.sigmoid(3.0 * x)
            trials = torch.full_like(probs, float(self.total_count))
            x = torch.binomial(trials, probs, generator=seeded_generator(seed + 1))
        return (x,)

    def make_elbo(self, beta: Weight = 1.0, **kwargs: Any) -> RateDistortionELBO:
        """:class:`~pyro_kl.RateDistortionELBO`: ``D + β·R``."""
        return RateDistortionELBO(beta=beta, **kwargs)
