"""Kingma et al.'s M2 semi-supervised VAE: the label is a latent cause, summed out exactly."""

from typing import Any, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from torch import nn

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


def join_label(inputs: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``inputs`` with the one-hot ``label`` appended, broadcast against each other.

    An enumerated label arrives with extra leading dimensions (one value per
    class, e.g. shape ``(num_classes, 1)`` for a batch of inputs ``(N, dim)``);
    the result then has shape ``(num_classes, N, dim + num_classes)``.
    """
    one_hot = nn.functional.one_hot(label, num_classes).to(inputs.dtype)
    batch = torch.broadcast_shapes(inputs.shape[:-1], one_hot.shape[:-1])
    return torch.cat(
        [inputs.expand(batch + inputs.shape[-1:]), one_hot.expand(batch + one_hot.shape[-1:])],
        dim=-1,
    )


class SemiSupervisedM2(Recipe):
    r"""Kingma et al.'s (2014) M2: the label ``y`` and a style ``z`` together generate ``x``.

    - **Real world P (data + guide)**: nature draws inputs ``x`` and shows the
      label ``y`` of some of them. Our classifier ``c(y|x)`` guesses the hidden
      labels, and an encoder ``e(z|x, y)`` adds a style code: ``x → y``,
      ``(x, y) → z``. The guess of ``y`` is **enumerated**: every class is
      weighted by ``c(y|x)`` exactly, nothing is sampled.
    - **Dream world Q (model)**: a label from its prior ``y ~ q(y)`` (uniform)
      and a style ``z ~ N(0, I)`` generate the input ``x ~ q(x|y, z)``:
      ``y → x``, ``z → x``.

    For a labelled example the objective is ``-log q(x|y, z) - log q(y) + log
    e(z|x, y)/q(z)``; for an unlabelled one the same, averaged over
    ``c(y|x)``, plus ``log c(y|x)/q(y)``. Nothing in it trains the classifier
    on the shown labels, so Kingma et al. add ``α <-log c(y|x)>`` over the
    labelled pairs: here the site ``label`` (the classifier read at the shown
    label, in the dream world's labelled plate), sent to ``classification``
    with weight ``γ`` (Kingma's ``α``).

    **What the terms are (M2 is beyond the essay).**

    - ``D``: ``-log q(x|y, z)`` of every input, *and* ``-log q(y)`` of each
      shown label under the dream world's prior (site ``y_labelled``; with the
      uniform prior a constant ``log num_classes`` per labelled example);
    - ``R``: ``log e(z|x, y)/q(z)`` of every style code and ``log c(y|x)/q(y)``
      of each guessed label (site ``y``, summed out exactly);
    - ``C``: ``-log c(y|x)`` of each shown label under the *real world's*
      classifier (site ``label``). This is Kingma's extra classification
      loss, **not the essay's C** ``= <-log q(y|z)>_p``, a dream-world factor
      that decodes the label from the code (as in
      :class:`~pyro_kl.recipes.SemiSupervisedVAE` and
      :class:`~pyro_kl.recipes.TherML`).

    The weighted objective is ``β·D + γ·C + R`` (:class:`~pyro_kl.BetaGammaELBO`).
    At unit weights the printed ``I[P;Q] = D + C + R + const`` is the KL of an
    **augmented pair**, not of M2's own two worlds: a real world that shows
    each labelled example's label twice (``y_labelled`` and its copy
    ``label``), against a dream world that draws the copy from the classifier
    reading the generated input, ``label ~ c(label|x)``, drawn as
    ``x_labelled → label``. M2's own KL is ``D + R + const``; the ``C`` term
    is the price of the copy.

    Sites: labelled examples live in the plate ``labelled`` (``y_labelled``
    observed, ``z_labelled``, ``x_labelled``, ``label``); unlabelled ones in
    the plate ``unlabelled`` (``y`` enumerated in the guide, ``z``, ``x``).

    :param int dim: dimension of ``x``.
    :param int num_classes: number of labels.
    :param int latent_dim: dimension of ``z``.
    :param int hidden_dim: width of the hidden layers.
    :param float labelled_fraction: share of examples whose label is shown
        (by :meth:`make_data`).
    :param total_count: if given, ``x`` holds counts out of ``total_count``
        (e.g. 16 for scikit-learn's digits) and the decoder is Binomial;
        otherwise it is Normal with a learned noise per dimension.

    Example::

        m2 = SemiSupervisedM2()
        x, y, labelled = m2.make_data(seed=0)
        m2.fit(x, y, labelled, num_steps=200, elbo=m2.make_elbo(gamma=10.0))
        accuracy = (m2.classify(x) == y).float().mean()
    """

    name = "semi_supervised_m2"
    title = "Semi-supervised VAE (M2)"
    objective = (
        "L = <-β log q(x|y,z) q(y) - γ log c(y|x) + log c(y|x) e(z|x,y)/(q(y) q(z))>_real"
        " = β·D + γ·C + R; C is Kingma's classifier loss on the shown labels (the real"
        " world's c(y|x)), not the essay's C = <-log q(y|z)>; at unit weights D + C + R is"
        " the KL of an augmented pair (the shown label copied into a dream-world c(label|x))"
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
        self.classifier = mlp(dim, hidden_dim, num_classes)
        self.encoder = GaussianHead(dim + num_classes, hidden_dim, latent_dim)
        self.decoder = mlp(latent_dim + num_classes, hidden_dim, dim)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """What the classifier and the encoder read: ``x``, or ``x / total_count``."""
        return x if self.total_count is None else x / self.total_count

    def _likelihood(self, y: torch.Tensor, z: torch.Tensor) -> dist.Distribution:
        out = self.decoder(join_label(z, y, self.num_classes))
        if self.total_count is not None:
            return dist.Binomial(self.total_count, logits=out).to_event(1)
        noise = self.param("log_noise", lambda: torch.full((self.dim,), -1.0)).exp()
        return dist.Normal(out, noise).to_event(1)

    def _generate(self, suffix: str, size: int, y_obs: Optional[torch.Tensor], x_obs) -> None:
        prior = dist.Categorical(logits=x_obs.new_zeros(self.num_classes))
        y = pyro.sample(f"y{suffix}", prior, obs=y_obs)
        z = pyro.sample(f"z{suffix}", dist.Normal(x_obs.new_zeros(self.latent_dim), 1.0)
                        .to_event(1))
        pyro.sample(f"x{suffix}", self._likelihood(y, z), obs=x_obs)

    def model(self, x: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor) -> None:
        """The dream world Q: ``y ~ q(y)``, ``z ~ N(0, I)``, ``x ~ q(x|y, z)``.

        :param labelled: a boolean mask of the examples whose label ``y`` is
            shown; the other entries of ``y`` are ignored.
        """
        self.module("decoder", self.decoder)
        self.module("classifier", self.classifier)
        labelled = _check_mask(labelled, x)
        x_l, y_l, x_u = x[labelled], y[labelled], x[~labelled]
        if len(x_l):
            with pyro.plate("labelled", len(x_l)):
                self._generate("_labelled", len(x_l), y_l, x_l)
                guess = dist.Categorical(logits=self.classifier(self._features(x_l)))
                pyro.sample("label", guess, obs=y_l)
        if len(x_u):
            with pyro.plate("unlabelled", len(x_u)):
                self._generate("", len(x_u), None, x_u)

    def guide(self, x: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor) -> None:
        """The real world's guesses: ``y ~ c(y|x)`` (enumerated) for the
        unlabelled examples, then ``z ~ e(z|x, y)`` for all."""
        self.module("encoder", self.encoder)
        self.module("classifier", self.classifier)
        labelled = _check_mask(labelled, x)
        x_l, y_l, x_u = x[labelled], y[labelled], x[~labelled]
        if len(x_l):
            with pyro.plate("labelled", len(x_l)):
                loc, scale = self.encoder(join_label(self._features(x_l), y_l, self.num_classes))
                pyro.sample("z_labelled", dist.Normal(loc, scale).to_event(1))
        if len(x_u):
            with pyro.plate("unlabelled", len(x_u)):
                guess = pyro.sample(
                    "y",
                    dist.Categorical(logits=self.classifier(self._features(x_u))),
                    infer={"enumerate": "parallel"},
                )
                loc, scale = self.encoder(join_label(self._features(x_u), guess, self.num_classes))
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's most probable label for each row of ``x``."""
        return self.classifier(self._features(x)).argmax(-1)

    def make_data(
        self, num_data: Optional[int] = None, *, seed: int = 0
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Labelled blobs of which a share ``labelled_fraction`` keep their label
        (at least one example is labelled and, below 1, one unlabelled).

        :returns: ``(x, y, labelled)``; default 256 examples.
        """
        num_data = check_num_data(256 if num_data is None else num_data)
        x, y = labelled_blobs(num_data, dim=self.dim, num_classes=self.num_classes, seed=seed)
        if self.total_count is not None:
            x = (x.sigmoid() * self.total_count).round()
        shown = torch.rand(num_data, generator=seeded_generator(seed + 1))
        labelled = shown < self.labelled_fraction
        labelled[0] = True
        if self.labelled_fraction < 1.0:
            labelled[-1] = False
        return x, y, labelled

    def make_elbo(self, beta: Weight = 1.0, gamma: Weight = 1.0, **kwargs: Any) -> BetaGammaELBO:
        """:class:`~pyro_kl.BetaGammaELBO` with ``label`` sent to
        ``classification`` and one plate (``max_plate_nesting=1``), so the
        guessed label is enumerated in dimension -2."""
        kwargs.setdefault("site_terms", {"label": CLASSIFICATION})
        kwargs.setdefault("max_plate_nesting", 1)
        return BetaGammaELBO(beta=beta, gamma=gamma, **kwargs)


def _check_mask(labelled: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if labelled.dtype != torch.bool or labelled.shape != x.shape[:1]:
        raise ValueError(
            f"labelled has dtype {labelled.dtype} and shape {tuple(labelled.shape)}; use a "
            f"boolean mask of shape ({x.shape[0]},), True where the label is shown."
        )
    return labelled
