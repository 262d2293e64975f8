"""Supervised learning: the essay's Figure 4."""

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..elbo import WeightedELBO
from ..terms import CLASSIFICATION
from .base import check_sizes
from .data import LabelledBlobsRecipe


class SupervisedLearning(LabelledBlobsRecipe):
    r"""Supervised learning: a machine that applies the labels.

    - **Real world P (data + guide)**: nature draws images and their labels,
      ``(x, y) ~ p(x, y) = p(x) p(y|x)``; nothing is added, the guide is empty.
    - **Dream world Q (model)**: the images come from the same process,
      ``q(x) = p(x)`` (so ``x`` enters the model as given data), but the
      labels come from our classifier ``y ~ q_θ(y|x)``. The model records
      ``x`` with :func:`pyro.deterministic`, which feeds no term, so that the
      pictures draw ``x → y``.

    The essay's objective is ``<log p(x, y) / (p(x) q_θ(y|x))>_p =
    <log p(y|x) / q_θ(y|x)>_p``: up to nature's label entropy, the
    classification error ``C = <-log q_θ(y|x)>_p`` of the label site ``y``
    (sent to the ``classification`` term by :meth:`make_elbo`): the usual
    conditional maximum likelihood.

    :param int dim: dimension of the inputs ``x``.
    :param int num_classes: number of labels.
    :param int hidden_dim: width of the classifier's hidden layer.

    Example::

        recipe = SupervisedLearning()
        x, y = recipe.make_data(seed=0)
        recipe.fit(x, y, num_steps=200)
    """

    name = "supervised_learning"
    title = "Supervised learning"
    objective = "I[P;Q] = <log p(y|x) / q_θ(y|x)>_real = -H[Y|X] + C"
    objective_terms = (CLASSIFICATION,)
    data_entropy = "H[Y|X]"

    def __init__(self, *, dim: int = 4, num_classes: int = 3, hidden_dim: int = 16):
        super().__init__()
        check_sizes(dim=dim, num_classes=num_classes, hidden_dim=hidden_dim)
        self.dim, self.num_classes = dim, num_classes
        self.classifier = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, num_classes)
        )

    def model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The dream world Q: given nature's ``x``, our classifier draws ``y``."""
        self.module("classifier", self.classifier)
        with pyro.plate("data", x.shape[0]):
            x = pyro.deterministic("x", x, event_dim=1)  # q(x) = p(x): nature's, no term
            pyro.sample("y", dist.Categorical(logits=self.classifier(x)), obs=y)

    def guide(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The real world P adds nothing to nature's ``(x, y)``: no latent."""

    def make_elbo(self, **kwargs: Any) -> WeightedELBO:
        """:class:`~pyro_kl.WeightedELBO` with ``y`` sent to ``classification``."""
        kwargs.setdefault("site_terms", {"y": CLASSIFICATION})
        return WeightedELBO(**kwargs)
