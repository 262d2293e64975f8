"""Variational information bottleneck: the essay's Figure 6."""

from typing import Any

import pyro
import pyro.distributions as dist
import torch

from ..presets import RateDistortionELBO
from ..terms import CLASSIFICATION, RATE
from ..weighting import Weight
from .base import check_sizes
from .data import LabelledBlobsRecipe
from .networks import GaussianHead, mlp


class VIB(LabelledBlobsRecipe):
    r"""Variational information bottleneck: a representation that predicts the label.

    - **Real world P (data + guide)**: nature draws pairs ``(x, y) ~ p(x, y)``;
      we add a representation of the input only, ``z ~ e(z|x)``: ``x → z``
      (the label is not needed to compute it).
    - **Dream world Q (model)**: ``z ~ q(z) = N(0, I)`` and the label drawn
      from the representation alone, ``y ~ q(y|z)``: ``z → y``; the inputs
      come from nature's own process, ``x ~ p(x)``, apart from ``(z, y)`` (the
      model records them with :func:`pyro.deterministic`, which feeds no term).

    The essay's objective is ``<log p(y|x) e(z|x) / (q(y|z) q(z))>_p``: up
    to nature's label entropy given the input (``const = -H[Y|X]``), the
    classification error ``C = <-log q(y|z)>_p`` of the label (site ``y``,
    sent to ``classification`` by :meth:`make_elbo`, as the essay's VIB and
    TherML name it) plus the rate ``R = <log e(z|x) / q(z)>_p``; a multiplier
    gives ``C + β·R`` (:class:`~pyro_kl.RateDistortionELBO`, as the VIB
    paper's β).

    **The bound, for this dream world.** Here ``x`` is independent of
    ``(z, y)`` in the dream world (``q(x) = p(x)``, drawn unconnected), so
    marginalising ``z`` out (monotonicity of KL) gives ``I[P;Q] >= <log p(y|x)
    / q(y)>_p = I(X;Y) + KL(p(y) || q(y)) >= I(X;Y)``, with ``q(y) = ∫ q(z)
    q(y|z) dz`` -- not the essay's ``<log p(y|x) / q(y|x)>_p``, which needs a
    dream world in which ``y`` reads ``x``. In terms: ``C + R >= H[Y|X] +
    I(X;Y) = H(Y)``, with equality for a code that carries nothing
    (``e(z|x) = q(z)``, ``R = 0``, ``q(y|z) = p(y)``, ``C = H(Y)``).

    **So β = 1 sits at the degenerate point.** The default
    ``make_elbo(beta=1.0)`` is the unweighted KL ``I[P;Q]``, whose optimum is
    that silent code: no informative code does better than ``C + R = H(Y)``
    (when the label is a function of the input, a code holding the label and
    nothing else ties with it). A useful code needs ``β < 1``: a code that
    names the label costs ``R ≈ H(Y)`` and saves ``ΔC ≈ H(Y)``, so ``L = C +
    β·R`` prefers it as soon as ``β < 1``; the VIB paper's values are
    ``β ~ 1e-3 .. 1e-1`` (tutorial 04: on the digits, β from 1e-4 to 0.3 give
    test accuracy 0.97-0.98, β = 1 gives the silent code at ``C ≈ ln 10``).
    The default stays 1 because it is the essay's objective itself; pass
    ``beta`` below 1 to learn a representation.

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
        "I[P;Q] = <log p(y|x) e(z|x) / (q(y|z) q(z))>_real = C + R - H[Y|X]"
        " >= I(X;Y) + KL(p(y)||q(y)), i.e. C + R >= H(Y) (equal for a silent code);"
        " weighted: L = C + β·R, useful for β < 1"
    )
    objective_terms = (CLASSIFICATION, RATE)
    data_entropy = "H[Y|X]"

    def __init__(
        self, *, dim: int = 4, num_classes: int = 3, latent_dim: int = 2, hidden_dim: int = 16
    ):
        super().__init__()
        check_sizes(dim=dim, num_classes=num_classes, latent_dim=latent_dim, hidden_dim=hidden_dim)
        self.dim, self.num_classes, self.latent_dim = dim, num_classes, latent_dim
        self.encoder = GaussianHead(dim, hidden_dim, latent_dim)
        self.classifier = mlp(latent_dim, hidden_dim, num_classes)

    def model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The dream world Q: ``x ~ p(x)`` apart; ``z ~ N(0, I)``, then
        ``y ~ Categorical(classifier(z))``."""
        self.module("classifier", self.classifier)
        with pyro.plate("data", y.shape[0]):
            pyro.deterministic("x", x, event_dim=1)  # q(x) = p(x), apart from (z, y): no term
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
        ``classification``: ``C + β·R``.

        :param beta: the price of a nat of rate. The default 1 is the
            unweighted ``I[P;Q]``, whose optimum is the silent code (``C + R >=
            H(Y)``, equal for a code that carries nothing); use ``beta < 1``
            (e.g. 1e-3 .. 0.3) for a code that predicts the label.
        """
        kwargs.setdefault("site_terms", {"y": CLASSIFICATION})
        return RateDistortionELBO(beta=beta, **kwargs)
