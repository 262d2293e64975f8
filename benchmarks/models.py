"""The benchmark's models, each as a dream world (the model) and a real world (data + guide).

Two families are timed:

* :class:`VAEModel` / :class:`VAEGuide`: a VAE on binarised 8x8 digits (64-dim
  binary input, hidden 128, latent 8), with its hand-written PyTorch twin
  :func:`vae_torch_loss` (same networks, same loss, same random numbers);
* :class:`HierModel` / :class:`HierGuide`: two local latents per example (a
  chain ``z1 -> z2``) and two global latents (an offset ``w`` and a noise scale
  ``tau``), so that both ``rate`` and ``complexity`` are non-empty.

Data comes from scikit-learn's bundled digits; nothing is downloaded.
"""

import math
from typing import Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from torch import nn

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
INPUT_DIM, HIDDEN_DIM, LATENT_DIM = 64, 128, 8


def digits(batch_size: int, *, binary: bool, device: str = "cpu") -> torch.Tensor:
    """A batch of scikit-learn's 8x8 digits (64 features), in [0, 1].

    :param int batch_size: number of rows; rows repeat when it exceeds 1797.
    :param bool binary: threshold at 0.5 (for a Bernoulli likelihood).
    :returns: a ``(batch_size, 64)`` float tensor.
    """
    from sklearn.datasets import load_digits

    x = torch.as_tensor(load_digits().data, dtype=torch.float32) / 16.0
    x = x.repeat(math.ceil(batch_size / len(x)), 1)[:batch_size]
    if binary:
        x = (x > 0.5).float()
    return x.to(device)


class Encoder(nn.Module):
    """``x -> (loc, scale)`` of the guide's Normal over the latent code (real world)."""

    def __init__(self, latent_dim: int = LATENT_DIM):
        super().__init__()
        self.hidden = nn.Linear(INPUT_DIM, HIDDEN_DIM)
        self.loc = nn.Linear(HIDDEN_DIM, latent_dim)
        self.log_scale = nn.Linear(HIDDEN_DIM, latent_dim)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = F.softplus(self.hidden(x))
        return self.loc(h), self.log_scale(h).exp()


class Decoder(nn.Module):
    """``z -> logits`` of the model's Bernoulli over the 64 pixels (dream world)."""

    def __init__(self, latent_dim: int = LATENT_DIM):
        super().__init__()
        self.hidden = nn.Linear(latent_dim, HIDDEN_DIM)
        self.out = nn.Linear(HIDDEN_DIM, INPUT_DIM)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(F.softplus(self.hidden(z)))


class VAEModel(nn.Module):
    """Dream world Q: ``z ~ Normal(0, 1)``, ``x ~ Bernoulli(decoder(z))``.

    :param str name: prefix of the decoder's parameters in Pyro's param store,
        so that several copies can be timed side by side.
    """

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.decoder = Decoder()

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(f"{self.name}.decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            zeros = x.new_zeros(x.shape[0], LATENT_DIM)
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)


class VAEGuide(nn.Module):
    """Real world P's latent part: ``z ~ Normal(encoder(x))``."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.encoder = Encoder()

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(f"{self.name}.encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def vae_torch_loss(
    encoder: Encoder, decoder: Decoder, x: torch.Tensor, *, analytic_kl: bool
) -> torch.Tensor:
    """The VAE's negative ELBO written by hand in PyTorch: the speed limit.

    It draws its noise exactly as ``Normal.rsample`` does, so under the same
    seed and parameters it returns the value of Pyro's ``Trace_ELBO`` (Monte
    Carlo rate) or ``TraceMeanField_ELBO`` (analytic rate), with the same
    gradients.

    :param bool analytic_kl: closed-form ``KL(encoder || prior)`` instead of
        the one-sample Monte Carlo rate.
    :returns: distortion + rate, summed over the batch, in nats.
    """
    loc, scale = encoder(x)
    eps = torch.empty_like(loc).normal_()
    z = loc + eps * scale
    distortion = F.binary_cross_entropy_with_logits(decoder(z), x, reduction="sum")
    if analytic_kl:
        rate = (0.5 * (loc.pow(2) + scale.pow(2) - 1.0) - scale.log()).sum()
    else:  # log guide(z) - log prior(z); the log(2 pi) constants cancel
        rate = (0.5 * (z.pow(2) - eps.pow(2)) - scale.log()).sum()
    return distortion + rate


class HierModel(nn.Module):
    """Dream world Q with several latents: globals ``w`` (offset) and ``tau``
    (noise scale), locals ``z1 -> z2`` per example, ``x ~ Normal(dec(z2) + w, tau)``."""

    LOCAL_DIM = 4

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.link = nn.Linear(self.LOCAL_DIM, self.LOCAL_DIM)
        self.decoder = nn.Sequential(
            nn.Linear(self.LOCAL_DIM, HIDDEN_DIM), nn.Softplus(), nn.Linear(HIDDEN_DIM, INPUT_DIM)
        )

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(f"{self.name}.link", self.link)
        pyro.module(f"{self.name}.decoder", self.decoder)
        w = pyro.sample("w", dist.Normal(x.new_zeros(INPUT_DIM), 1.0).to_event(1))
        tau = pyro.sample("tau", dist.LogNormal(x.new_zeros(()), 1.0))
        with pyro.plate("data", x.shape[0]):
            zeros = x.new_zeros(x.shape[0], self.LOCAL_DIM)
            z1 = pyro.sample("z1", dist.Normal(zeros, 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(self.link(z1), 1.0).to_event(1))
            loc = self.decoder(z2) + w
            pyro.sample("x", dist.Normal(loc, tau).to_event(1), obs=x)


class HierGuide(nn.Module):
    """Real world P's latent part for :class:`HierModel`: mean-field Normal
    globals and an amortised Normal for both locals."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.encoder = Encoder(latent_dim=2 * HierModel.LOCAL_DIM)

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(f"{self.name}.encoder", self.encoder)
        w_loc = pyro.param(f"{self.name}.w_loc", lambda: x.new_zeros(INPUT_DIM))
        w_scale = pyro.param(
            f"{self.name}.w_scale", lambda: x.new_full((INPUT_DIM,), 0.1),
            constraint=constraints.positive,
        )
        tau_loc = pyro.param(f"{self.name}.tau_loc", lambda: x.new_zeros(()))
        tau_scale = pyro.param(
            f"{self.name}.tau_scale", lambda: x.new_full((), 0.1), constraint=constraints.positive
        )
        pyro.sample("w", dist.Normal(w_loc, w_scale).to_event(1))
        pyro.sample("tau", dist.LogNormal(tau_loc, tau_scale))
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            d = HierModel.LOCAL_DIM
            pyro.sample("z1", dist.Normal(loc[:, :d], scale[:, :d]).to_event(1))
            pyro.sample("z2", dist.Normal(loc[:, d:], scale[:, d:]).to_event(1))
