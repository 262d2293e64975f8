"""The shape every recipe shares: a model, a guide, an ELBO and its own data."""

from typing import Any, ClassVar, List, Optional, Tuple

import pyro
import torch
from pyro.infer import SVI
from pyro.optim import Adam
from torch import nn

from .._checks import whole_number
from ..elbo import WeightedELBO


class Recipe(nn.Module):
    """One of the essay's drawings as a runnable (model, guide) pair.

    - :meth:`guide`, together with the data it is given, is the **real world P
      (data + guide)**: nature's data plus whatever the drawing adds to it
      (an encoder, a posterior over weights, ...);
    - :meth:`model` is the **dream world Q (model)**: the story we wish were
      true;
    - :meth:`make_elbo` returns the pyro_kl ELBO whose terms are the essay's
      objective for this drawing, and :attr:`objective_terms` names those terms;
    - :meth:`make_data` generates a small seeded data set, returned as the
      positional arguments of both :meth:`model` and :meth:`guide`.

    Neural networks are registered with :func:`pyro.module` and parameters
    with :func:`pyro.param` under names prefixed by :attr:`name` (the
    registry key), so different recipes never share entries of Pyro's global
    parameter store. Two instances of the same recipe do share them: call
    :func:`pyro.clear_param_store` between them.

    Example::

        from pyro_kl.recipes import VAE

        recipe = VAE()
        data = recipe.make_data(seed=0)
        losses = recipe.fit(*data, num_steps=100)
    """

    name: ClassVar[str] = "recipe"
    """The registry key; also the prefix of this recipe's parameter names."""
    title: ClassVar[str] = "Recipe"
    """A human title, as in the essay's section heading."""
    objective: ClassVar[str] = ""
    """The essay's objective for this drawing, in plain text."""
    objective_terms: ClassVar[Tuple[str, ...]] = ()
    """The term names the objective is made of (see :mod:`pyro_kl.terms`)."""
    data_entropy: ClassVar[str] = "H[data]"
    """The entropy nature's part of the objective is: the derived objective's
    constant is minus it (``"H[Y|X]"`` where the inputs are given in both
    worlds, ``"H[D]"`` for a whole data set). :func:`~pyro_kl.derive_objective`
    and the pictures read it from the recipe's :meth:`model`."""

    def _param_name(self, name: str) -> str:
        return f"{self.name}.{name}"

    def module(self, name: str, network: nn.Module) -> nn.Module:
        """Register ``network`` with Pyro under this recipe's prefix."""
        return pyro.module(self._param_name(name), network)

    def param(self, name: str, init: Any, **kwargs: Any) -> torch.Tensor:
        """:func:`pyro.param` under this recipe's prefix; ``init`` may be a
        tensor or a zero-argument callable returning one."""
        return pyro.param(self._param_name(name), init, **kwargs)

    def model(self, *data: torch.Tensor) -> None:  # pragma: no cover - abstract
        """The dream world Q: the generative story we wish were true."""
        raise NotImplementedError

    def guide(self, *data: torch.Tensor) -> None:  # pragma: no cover - abstract
        """The real world P's added part, given nature's data."""
        raise NotImplementedError

    def make_data(
        self, num_data: Optional[int] = None, *, seed: int = 0
    ) -> Tuple[torch.Tensor, ...]:  # pragma: no cover - abstract
        """A small data set, seeded, as the positional arguments of
        :meth:`model` and :meth:`guide`."""
        raise NotImplementedError

    def make_elbo(self, **kwargs: Any) -> WeightedELBO:  # pragma: no cover - abstract
        """The pyro_kl ELBO of this drawing's objective."""
        raise NotImplementedError

    def fit(
        self,
        *data: torch.Tensor,
        num_steps: int = 200,
        lr: float = 1e-2,
        elbo: Optional[WeightedELBO] = None,
    ) -> List[float]:
        """Train the model and the guide with SVI and :class:`~pyro.optim.Adam`.

        :param data: the positional arguments of :meth:`model` and :meth:`guide`,
            e.g. ``*recipe.make_data()``.
        :param int num_steps: number of SVI steps.
        :param float lr: Adam's learning rate.
        :param elbo: the objective; :meth:`make_elbo` with its defaults if ``None``.
        :returns: the loss of every step (nats, summed over the data).
        :rtype: list
        """
        whole_number("num_steps", num_steps, minimum=0, meaning="SVI steps")
        elbo = self.make_elbo() if elbo is None else elbo
        svi = SVI(self.model, self.guide, Adam({"lr": lr}), loss=elbo)
        return [svi.step(*data) for _ in range(num_steps)]


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU random generator for data sets, leaving Pyro's global seed alone."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def check_num_data(num_data: int, minimum: int = 2) -> int:
    """:raises ValueError: when ``num_data`` is too small to make a data set."""
    return whole_number("num_data", num_data, minimum=minimum)


def check_sizes(**sizes: int) -> None:
    """A recipe's layer sizes and counts (``dim=``, ``latent_dim=``, ...), each a
    whole number >= 1.

    :raises ValueError: naming the first size that is not.
    """
    for name, value in sizes.items():
        whole_number(name, value, minimum=1, meaning="a size")


def check_semi_supervised_options(labelled_fraction: float, total_count) -> None:
    """The options the semi-supervised recipes share.

    :raises ValueError: when ``labelled_fraction`` is not in ``(0, 1]`` or
        ``total_count`` is neither ``None`` nor a positive integer.
    """
    if not 0.0 < labelled_fraction <= 1.0:
        raise ValueError(
            f"labelled_fraction={labelled_fraction}; use a share in (0, 1] of "
            "examples whose label is shown."
        )
    if total_count is not None and (not isinstance(total_count, int) or total_count < 1):
        raise ValueError(f"total_count={total_count!r}; use a positive integer or None.")
