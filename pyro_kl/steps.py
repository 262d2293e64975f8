"""The step count of an ELBO: one rule for SVI, torch optimizers, accumulation and DDP.

**A step is one optimizer update.** Every training call (``loss_and_grads``,
or ``differentiable_loss`` with gradients enabled) belongs to the step that is
open; the step closes when the parameters the calls read have been updated
in place (an optimizer's ``step()``; PyTorch counts every in-place change of a
tensor). So

- ``SVI.step`` (one ``loss_and_grads``, then the optimizer) is one step;
- a plain PyTorch loop over :class:`~pyro.infer.elbo.ELBOModule` is one step
  per ``optimizer.step()``;
- gradient accumulation (several backward passes, then one
  ``optimizer.step()``) is one step: the calls of the step are averaged for
  the controllers;
- under DDP every rank counts the same steps, and controllers update from
  terms all-reduced once per training call.

Nothing runs inside autograd: a step is closed (controllers updated, count
advanced) lazily, when the next training call starts or when the count is
read. A model without parameters has nothing to update, so each of its
training calls is a step of its own. :func:`~pyro_kl.estimate.estimate` and ``loss()`` never
touch the count.
"""

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch

from ._pyro_compat import tensor_version
from .distributed import all_reduce_terms
from .weighting import Controller, controlled_estimate


class _OpenStep:
    """The training calls of the step that is open: the parameters they read
    (with their versions then), and their summed terms for the controllers."""

    def __init__(self, params: Sequence[torch.Tensor]):
        self.params = tuple(params)
        self.versions = tuple(tensor_version(p) for p in self.params)
        self.sums: Dict[str, float] = {}
        self.calls = 0
        self.num_data = 1

    def updated(self) -> bool:
        return any(tensor_version(p) != v for p, v in zip(self.params, self.versions))

    def add(self, values: Mapping[str, float], num_data: int) -> None:
        for term, value in values.items():
            self.sums[term] = self.sums.get(term, 0.0) + value
        self.calls += 1
        self.num_data = num_data


class TrainingSteps:
    """Counts the optimizer steps of an ELBO (see the module doc for the rule) and
    updates its controllers once per step, outside autograd.

    Example::

        w = torch.zeros(3)
        steps = TrainingSteps()
        steps.record(params=[w], terms={}, num_data=1, controllers=())
        assert steps.count == 0   # the step is open until the parameters move
        with torch.no_grad():
            w.add_(1.0)       # what an optimizer does
        assert steps.count == 1
    """

    def __init__(self, count: int = 0):
        self._count = count
        self._open: Optional[_OpenStep] = None
        self._controllers: Tuple[Tuple[Controller, Tuple[str, ...]], ...] = ()

    def __getstate__(self):
        return {"count": self.count}

    def __setstate__(self, state):
        self.__init__(state["count"])

    @property
    def count(self) -> int:
        """Completed steps (closing the open step if its parameters were updated)."""
        if self._open is not None and self._open.updated():
            self._close()
        return self._count

    def reset(self, count: int) -> None:
        """Set the count (from a checkpoint); an open step is dropped."""
        self._count = count
        self._open = None

    def record(
        self,
        *,
        params: Sequence[torch.Tensor],
        terms: Mapping[str, torch.Tensor],
        num_data: int,
        controllers: Tuple[Tuple[Controller, Tuple[str, ...]], ...],
    ) -> None:
        """Add one training call to the open step (opening one if needed).

        :param params: the unconstrained parameters the call read.
        :param dict terms: the call's unweighted terms.
        :param int num_data: the datapoints the terms sum over.
        :param controllers: the controllers to update when the step closes,
            with the terms each weighs.
        """
        self.count  # close the previous step if the parameters moved since
        self._controllers = controllers
        if self._open is None:
            self._open = _OpenStep(params)
        if controllers:
            self._open.add(all_reduce_terms(terms), num_data)
        if not params:
            self._close()

    def _close(self) -> None:
        step, self._open = self._open, None
        if step.calls:
            mean = {term: value / step.calls for term, value in step.sums.items()}
            for controller, terms in self._controllers:
                controller.update(self._count, controlled_estimate(mean, terms, step.num_data))
        self._count += 1
