"""Small (model, guide, args) triples covering the Pyro features the ELBOs must keep."""

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.testing.fakes import NonreparameterizedNormal
from pyro.infer.autoguide import AutoNormal
from torch import nn

DATA = torch.linspace(-2.0, 2.5, 6)


def global_local():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        m = pyro.param("m", torch.tensor(0.3))
        s = pyro.param("s", torch.tensor(0.7), constraint=dist.constraints.positive)
        a = pyro.param("a", torch.tensor(0.5))
        b = pyro.param("b", torch.tensor(0.6), constraint=dist.constraints.positive)
        pyro.sample("mu", dist.Normal(m, s))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(a * x, b))

    return model, guide, (DATA,)


def nonreparameterized():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        m = pyro.param("m", torch.tensor(0.3))
        a = pyro.param("a", torch.tensor(0.5))
        pyro.sample("mu", NonreparameterizedNormal(m, 0.8))
        with pyro.plate("data", len(x)):
            pyro.sample("z", NonreparameterizedNormal(a * x, 0.6))

    return model, guide, (DATA,)


class Encoder(nn.Module):
    def __init__(self, data_dim=5, latent_dim=2):
        super().__init__()
        self.net = nn.Linear(data_dim, 2 * latent_dim)

    def forward(self, x):
        loc, log_scale = self.net(x).chunk(2, dim=-1)
        return loc, log_scale.exp()


def vae():
    torch.manual_seed(1)
    encoder, decoder = Encoder(), nn.Linear(2, 5)
    x = torch.randn(8, 5)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return model, guide, (x,)


def subsampled():
    x_all = torch.linspace(-1.0, 3.0, 20)

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        with pyro.plate("data", len(x_all), subsample_size=5) as idx:
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x[idx])

    def guide(x):
        m = pyro.param("m", torch.tensor(0.3))
        a = pyro.param("a", torch.tensor(0.5))
        pyro.sample("mu", dist.Normal(m, 0.8))
        with pyro.plate("data", len(x_all), subsample_size=5) as idx:
            pyro.sample("z", dist.Normal(a * x[idx], 0.6))

    return model, guide, (x_all,)


def autonormal():
    def model(x):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.LogNormal(w, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    return model, AutoNormal(model), (DATA.abs(),)


def with_factor():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        pyro.factor("penalty", -0.3 * mu**2)
        pyro.deterministic("mu2", mu * 2)
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 0.5), obs=x)

    def guide(x):
        m = pyro.param("m", torch.tensor(0.3))
        pyro.sample("mu", dist.Normal(m, 0.8))

    return model, guide, (DATA,)


def scaled_and_masked():
    mask = torch.tensor([True, False, True, True, False, True])

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        with pyro.plate("data", len(x)), pyro.poutine.scale(scale=3.0):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            with pyro.poutine.mask(mask=mask):
                pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        m = pyro.param("m", torch.tensor(0.3))
        a = pyro.param("a", torch.tensor(0.5))
        pyro.sample("mu", dist.Normal(m, 0.8))
        with pyro.plate("data", len(x)), pyro.poutine.scale(scale=3.0):
            pyro.sample("z", dist.Normal(a * x, 0.6))

    return model, guide, (DATA,)


def obs_mask():
    mask = torch.tensor([True, True, False, True, True, False])

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 0.5), obs=x, obs_mask=mask)

    def guide(x):
        m = pyro.param("m", torch.tensor(0.3))
        pyro.sample("mu", dist.Normal(m, 0.8))
        with pyro.plate("data", len(x)):
            pyro.sample("x_unobserved", dist.Normal(m, 0.5))

    return model, guide, (DATA,)


MODELS = {
    "global_local": global_local,
    "nonreparameterized": nonreparameterized,
    "vae": vae,
    "subsampled": subsampled,
    "autonormal": autonormal,
    "factor": with_factor,
    "scale_mask": scaled_and_masked,
    "obs_mask": obs_mask,
}
REPARAMETERIZED = [name for name in MODELS if name != "nonreparameterized"]
