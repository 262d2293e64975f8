"""Variational information bottleneck: the essay's Figure 6."""

from typing import Any

import pyro
import pyro.distributions as dist
import torch

from ..presets import RateDistortionELBO
from ..terms import CLASSIFICATION, RATE
from ..weighting import Weight
from .data import LabelledBlobsRecipe
from .networks import GaussianHead, mlp


class VIB(LabelledBlobsRecipe):
    r"""Variational information bottleneck: a representation that predicts the label.

    - **Real world P (data + guide)**: nature draws pairs ``(x, y) ~ p(x, y)``;
      we add a representation of the input only, ``z ~ e(z|x)``: ``x → z``
      (the label is not needed to compute it).
    - **Dream world Q (model)**: ``z ~ q(z) = N(0, I)`` and the label drawn
      from the representation alone, ``y ~ q(y|z)``: ``z → y``. The model
      never generates ``x``; ``x`` reaches the guide as data only.

    The essay's objective is ``<log p(y|x) e(z|x) / (q(y|z) q(z))>_p >=
    <log p(y|x) / q(y|x)>_p >= 0``: up to nature's label entropy, the
    classification error ``C = <-log q(y|z)>_p`` of the label (site ``y``,
    sent to ``classification`` by :meth:`make_elbo`, as the essay's VIB and
    TherML name it) plus the rate ``R = <log e(z|x) / q(z)>_p``; a multiplier
    gives ``C + β·R`` (:class:`~pyro_kl.RateDistortionELBO`, as the VIB
    paper's β).

    :param int dim: dimension of ``x``.
    :param int num_classes: number of labels.
    :param int latent_dim: dimension of ``z``.
    :param int hidden_dim: width of the hidden layers.

    Example::

        vib = VIB()
        x, y = vib.make_data(seed=0)
        vib.fit(x, y, num_steps=200, elbo=vib.make_elbo(beta=0.1))
    """

    name = "vib"
    title = "Variational information bottleneck"
    objective = (
        "I[P;Q] = <log p(y|x) e(z|x) / (q(y|z) q(z))>_real = C + R - H[Y|X]; weighted: L = C + β·R"
    )
    objective_terms = (CLASSIFICATION, RATE)

    def __init__(
        self, *, dim: int = 4, num_classes: int = 3, latent_dim: int = 2, hidden_dim: int = 16
    ):
        super().__init__()
        self.dim, self.num_classes, self.latent_dim = dim, num_classes, latent_dim
        self.encoder = GaussianHead(dim, hidden_dim, latent_dim)
        self.classifier = mlp(latent_dim, hidden_dim, num_classes)

    def model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The dream world Q: ``z ~ N(0, I)``, then ``y ~ Categorical(classifier(z))``."""
        self.module("classifier", self.classifier)
        with pyro.plate("data", y.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("y", dist.Categorical(logits=self.classifier(z)), obs=y)

    def guide(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The real world's encoder: ``z ~ e(z|x)``, from the input alone."""
        self.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def make_elbo(self, beta: Weight = 1.0, **kwargs: Any) -> RateDistortionELBO:
        """:class:`~pyro_kl.RateDistortionELBO` with ``y`` sent to
        ``classification``: ``C + β·R``."""
        kwargs.setdefault("site_terms", {"y": CLASSIFICATION})
        return RateDistortionELBO(beta=beta, **kwargs)
