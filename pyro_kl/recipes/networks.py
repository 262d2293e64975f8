"""Small networks shared by the recipes."""

from typing import Tuple

import torch
from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """A one-hidden-layer perceptron with a Tanh nonlinearity."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, out_dim))


class GaussianHead(nn.Module):
    """A network returning the location and scale of a diagonal Gaussian.

    :param int in_dim: input size.
    :param int hidden_dim: hidden width.
    :param int out_dim: size of the Gaussian.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.net = mlp(in_dim, hidden_dim, 2 * out_dim)

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.net(inputs).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw_scale) + 1e-3
