"""Semi-supervised variational autoencoder: the essay's Figure 7."""

from typing import Any, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch

from ..presets import BetaGammaELBO
from ..terms import CLASSIFICATION, DISTORTION, RATE
from ..weighting import Weight
from .base import (
    Recipe,
    check_num_data,
    check_semi_supervised_options,
    check_sizes,
    seeded_generator,
)
from .data import labelled_blobs
from .networks import GaussianHead, mlp


class SemiSupervisedVAE(Recipe):
    r"""Semi-supervised VAE: one representation that recreates the input and predicts the label.

    - **Real world P (data + guide)**: nature draws pairs ``(x, y) ~ p(x, y)``,
      of which only some labels are shown to us; we add a representation of
      the input, ``z ~ e(z|x)``: ``x → z``.
    - **Dream world Q (model)**: ``z ~ q(z) = N(0, I)`` generates both the
      input ``x ~ q(x|z)`` and the label ``y ~ q(y|z)``: ``z → x``, ``z → y``.

    The essay's objective is ``<-β log q(x|z) - γ log q(y|z) + log e(z|x) /
    q(z)>_p``, that is ``β·D + γ·C + R``: the distortion ``D`` of the inputs,
    the classification error ``C`` of the labels that are shown (the label
    site ``y`` is sent to ``classification``; unlabelled examples are masked
    out of it), and the rate ``R`` of ``z`` (:class:`~pyro_kl.BetaGammaELBO`).
    As in the essay's drawing the encoder sees ``x`` only, so unlabelled
    examples need no guess of their label: they feed ``D`` and ``R`` only.

    **Why masking is the exact objective here.** In the dream world the label
    is a leaf: ``y`` is drawn from ``z`` and nothing is drawn from ``y``. For
    an example whose label is hidden, the dream world's marginal of what we
    see is ``Σ_y q(x, y|z) = q(x|z) Σ_y q(y|z) = q(x|z)``: summing out the
    hidden label contributes ``log 1 = 0``, so dropping its site (the mask)
    *is* the exact marginal, with no enumeration and no guess of ``y`` in the
    real world. This is not so in :class:`SemiSupervisedM2`, where the label
    is a cause of ``x``: there the hidden label must be summed over, weighted
    by the classifier (enumeration).

    :param int dim: dimension of ``x``.
    :param int num_classes: number of labels.
    :param int latent_dim: dimension of ``z``.
    :param int hidden_dim: width of the hidden layers.
    :param float labelled_fraction: share of examples whose label is shown.
    :param total_count: if given, ``x`` holds counts out of ``total_count``
        (e.g. 16 for scikit-learn's digits), the encoder reads ``x /
        total_count`` and the decoder is Binomial; otherwise it is Normal with
        a learned noise per dimension.

    Example::

        ssvae = SemiSupervisedVAE()
        x, y, labelled = ssvae.make_data(seed=0)
        ssvae.fit(x, y, labelled, num_steps=200, elbo=ssvae.make_elbo(gamma=10.0))
    """

    name = "semi_supervised_vae"
    title = "Semi-supervised VAE"
    objective = (
        "L = <-β log q(x|z) - γ log q(y|z) + log e(z|x)/q(z)>_real = β·D + γ·C + R"
    )
    objective_terms = (DISTORTION, CLASSIFICATION, RATE)

    def __init__(
        self,
        *,
        dim: int = 6,
        num_classes: int = 3,
        latent_dim: int = 2,
        hidden_dim: int = 32,
        labelled_fraction: float = 0.2,
        total_count: Optional[int] = None,
    ):
        super().__init__()
        check_sizes(dim=dim, num_classes=num_classes, latent_dim=latent_dim, hidden_dim=hidden_dim)
        check_semi_supervised_options(labelled_fraction, total_count)
        self.dim, self.num_classes, self.latent_dim = dim, num_classes, latent_dim
        self.labelled_fraction, self.total_count = labelled_fraction, total_count
        self.encoder = GaussianHead(dim, hidden_dim, latent_dim)
        self.decoder = mlp(latent_dim, hidden_dim, dim)
        self.classifier = mlp(latent_dim, hidden_dim, num_classes)

    def model(self, x: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor) -> None:
        """The dream world Q: ``z ~ N(0, I)`` generates ``x`` and ``y``.

        :param labelled: a boolean mask of the examples whose label ``y`` is
            shown; the other entries of ``y`` are ignored.
        """
        self.module("decoder", self.decoder)
        self.module("classifier", self.classifier)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", self._likelihood(z), obs=x)
            labels = dist.Categorical(logits=self.classifier(z)).mask(labelled)
            pyro.sample("y", labels, obs=y)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.total_count is None else x / self.total_count

    def _likelihood(self, z: torch.Tensor) -> dist.Distribution:
        out = self.decoder(z)
        if self.total_count is not None:
            return dist.Binomial(self.total_count, logits=out).to_event(1)
        noise = self.param("log_noise", lambda: torch.full((self.dim,), -1.0)).exp()
        return dist.Normal(out, noise).to_event(1)

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable label of each row of ``x``, read from the encoder's mean code."""
        loc, _ = self.encoder(self._features(x))
        return self.classifier(loc).argmax(-1)

    def guide(self, x: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor) -> None:
        """The real world's encoder: ``z ~ e(z|x)``, from the input alone."""
        self.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(self._features(x))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def make_data(
        self, num_data: Optional[int] = None, *, seed: int = 0
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Labelled blobs of which a share ``labelled_fraction`` keep their label.

        :returns: ``(x, y, labelled)``; default 256 examples.
        """
        num_data = check_num_data(256 if num_data is None else num_data)
        x, y = labelled_blobs(num_data, dim=self.dim, num_classes=self.num_classes, seed=seed)
        shown = torch.rand(num_data, generator=seeded_generator(seed + 1))
        labelled = shown < self.labelled_fraction
        labelled[0] = True  # at least one label is shown
        return x, y, labelled

    def make_elbo(self, beta: Weight = 1.0, gamma: Weight = 1.0, **kwargs: Any) -> BetaGammaELBO:
        """:class:`~pyro_kl.BetaGammaELBO` with ``y`` sent to ``classification``."""
        kwargs.setdefault("site_terms", {"y": CLASSIFICATION})
        return BetaGammaELBO(beta=beta, gamma=gamma, **kwargs)
