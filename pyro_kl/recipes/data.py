"""Small generated data sets for the recipes (nothing is downloaded)."""

from typing import Optional, Tuple

import torch

from .base import Recipe, check_num_data, seeded_generator


def labelled_blobs(
    num_data: int, *, dim: int, num_classes: int, seed: int, spread: float = 0.6
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``x`` around one centre per class, and their labels ``y``.

    Nature draws a class ``y`` uniformly, then ``x ~ N(centre_y, spread^2 I)``
    with centres drawn once from ``N(0, I)`` (by the same seed).

    :returns: ``x`` of shape ``(num_data, dim)`` and ``y`` of shape ``(num_data,)``.
    """
    generator = seeded_generator(seed)
    centres = torch.randn(num_classes, dim, generator=generator) * 1.5
    y = torch.randint(num_classes, (num_data,), generator=generator)
    x = centres[y] + spread * torch.randn(num_data, dim, generator=generator)
    return x, y


def curved_manifold(num_data: int, *, dim: int, latent_dim: int, seed: int) -> torch.Tensor:
    """Points near a curved ``latent_dim``-dimensional surface in ``dim`` dimensions.

    Nature draws ``u ~ N(0, I)`` and returns ``tanh(u A) + 0.1 * noise`` for a
    fixed random matrix ``A`` (by the same seed).

    :returns: ``x`` of shape ``(num_data, dim)``.
    """
    generator = seeded_generator(seed)
    mixing = torch.randn(latent_dim, dim, generator=generator)
    u = torch.randn(num_data, latent_dim, generator=generator)
    return torch.tanh(u @ mixing) + 0.1 * torch.randn(num_data, dim, generator=generator)


class LabelledBlobsRecipe(Recipe):
    """A recipe whose nature draws labelled blobs ``(x, y)``, one blob per class.

    Subclasses set ``self.dim`` and ``self.num_classes``.
    """

    dim: int
    num_classes: int

    def make_data(
        self, num_data: Optional[int] = None, *, seed: int = 0
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Labelled blobs, one per class.

        :returns: ``(x, y)``; default 200 examples.
        """
        num_data = check_num_data(200 if num_data is None else num_data)
        return labelled_blobs(num_data, dim=self.dim, num_classes=self.num_classes, seed=seed)
