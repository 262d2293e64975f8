"""Combine the term estimates of several processes, for logging distributed training.

With :class:`~torch.nn.parallel.DistributedDataParallel`, every process
estimates ``KL(real world P || dream world Q)`` on its own share of the data
and PyTorch averages the gradients. The terms each process reports in
``elbo.last_terms`` are estimates from its share alone; :func:`all_reduce_terms`
combines them into the estimate for the whole batch.
"""

import zlib
from typing import Dict, Mapping, Optional, Union

import torch
import torch.distributed as torch_dist

_OPS = {
    "mean": "SUM",  # summed, then divided by the group's size
    "sum": "SUM",
    "min": "MIN",
    "max": "MAX",
}


def _group_device(group) -> torch.device:
    if torch_dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _names_signature(names) -> float:
    """A number every process computes alike from its term names (order-free)."""
    return float(zlib.crc32("\x1f".join(names).encode()) % (1 << 24)) + len(names) * (1 << 24)


def all_reduce_terms(
    terms: Mapping[str, Union[float, torch.Tensor]],
    *,
    group: Optional[object] = None,
    op: str = "mean",
) -> Dict[str, float]:
    """All-reduce a ``{term: value}`` map, such as :attr:`WeightedELBO.last_terms`,
    across the processes of a :mod:`torch.distributed` group.

    Every process must call it with the same term names (as it does for the
    same model and guide). With each process's model scaled for the whole data
    set (a :class:`~pyro.plate` with ``size`` set to the data set's size and
    ``subsample_size`` or ``subsample`` to the process's share), each process's
    terms estimate the whole data set's and ``op="mean"`` combines them into
    one estimate, matching the gradients that ``DistributedDataParallel``
    averages. With each process's model scaled for its share alone,
    ``op="sum"`` adds the shares.

    When :mod:`torch.distributed` is not initialised, a single process is the
    whole group and a copy of ``terms`` (as floats) is returned, so the same
    logging code runs with and without distribution.

    :param dict terms: term name -> value in nats (float or one-element tensor).
    :param group: the process group (default: the world).
    :param str op: ``"mean"`` (default), ``"sum"``, ``"min"`` or ``"max"``.
    :returns: term name -> reduced value, the same on every process.
    :rtype: dict
    :raises ValueError: on an unknown ``op``, or when the processes name
        different terms (checked always, with one small collective first, so
        that a mismatch fails on every process instead of hanging).

    Example (needs torch.distributed, one process per rank)::

        elbo = RateDistortionELBO(beta=0.5)
        loss_fn = DistributedDataParallel(elbo(model, guide))
        for x in loader:  # each process loads its own share
            optim.zero_grad()
            loss_fn(x).backward()
            optim.step()
            terms = all_reduce_terms(elbo.last_terms)  # whole-batch estimate
            if torch.distributed.get_rank() == 0:
                print(terms)
    """
    if op not in _OPS:
        raise ValueError(f"op={op!r} is not one of {sorted(_OPS)}; use op='mean' or op='sum'.")
    names = sorted(terms)
    values = {name: float(terms[name]) for name in names}
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return values

    device = _group_device(group)
    # a fixed-size check first, always: tensors of different sizes would hang
    signature = _names_signature(names)
    bounds = torch.tensor([signature, -signature], dtype=torch.float64, device=device)
    torch_dist.all_reduce(bounds, op=torch_dist.ReduceOp.MAX, group=group)
    if bounds[0].item() != signature or -bounds[1].item() != signature:
        raise ValueError(
            f"all_reduce_terms: the processes name different terms (this one: {names}). "
            "Call it with the same model and guide on every process, or reduce "
            "only the terms they share: {t: terms[t] for t in common_names}."
        )
    if not names:
        return {}
    packed = torch.tensor([values[name] for name in names], dtype=torch.float64, device=device)
    torch_dist.all_reduce(packed, op=getattr(torch_dist.ReduceOp, _OPS[op]), group=group)
    if op == "mean":
        packed /= torch_dist.get_world_size(group)
    return dict(zip(names, packed.tolist()))
