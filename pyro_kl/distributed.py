"""Combine the term estimates of several processes, for logging distributed training.

With :class:`~torch.nn.parallel.DistributedDataParallel`, every process
estimates ``KL(real world P || dream world Q)`` on its own share of the data
and PyTorch averages the gradients. The terms each process reports in
``elbo.last_terms`` are estimates from its share alone; :func:`all_reduce_terms`
combines them into the estimate for the whole batch.

Stateful controllers (:class:`~pyro_kl.GECO`, :class:`~pyro_kl.PIControl`)
all-reduce their terms after every training call, so every process must run
the same training calls. A collective that one process joins alone would wait
forever; every all-reduce here waits at most :func:`get_collective_timeout`
seconds (60 by default; :func:`set_collective_timeout`, or the ``timeout``
keyword to change it) and then raises a :class:`RuntimeError` that says so.
"""

import datetime
import time
import zlib
from typing import Dict, Mapping, Optional, Union

import torch
import torch.distributed as torch_dist

from ._checks import is_number

__all__ = ["all_reduce_terms", "get_collective_timeout", "set_collective_timeout"]

_OPS = {
    "mean": "SUM",  # summed, then divided by the group's size
    "sum": "SUM",
    "min": "MIN",
    "max": "MAX",
}


_DEFAULT_TIMEOUT = 60.0
_timeout = _DEFAULT_TIMEOUT


def _seconds(value: Union[float, datetime.timedelta], where: str) -> float:
    """``value`` as a positive, finite number of seconds, or a clear error."""
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if not (is_number(value) and value > 0):
        raise ValueError(
            f"{where}: the collective timeout must be a finite number of seconds > 0 "
            f"(or a datetime.timedelta), got {value!r}; e.g. 60.0."
        )
    return float(value)


def set_collective_timeout(seconds: float) -> None:
    """Set how long pyro_kl's all-reduces (:func:`all_reduce_terms`, and the
    controllers' update after each training call) wait for the other
    processes before raising a :class:`RuntimeError`. The default is 60 s.

    Like the ``timeout`` of :func:`torch.distributed.init_process_group`, it
    bounds a collective that another process never joins (ranks out of step);
    raise it when some processes legitimately arrive much later than others
    (a slow first step, an evaluation run by rank 0 alone between steps).

    :param seconds: a finite number of seconds ``> 0``, or a
        ``datetime.timedelta``.

    Example::

        from pyro_kl.distributed import get_collective_timeout, set_collective_timeout

        set_collective_timeout(300)     # five minutes
        assert get_collective_timeout() == 300.0
        set_collective_timeout(60)      # back to the default
    """
    global _timeout
    _timeout = _seconds(seconds, f"set_collective_timeout({seconds!r})")


def get_collective_timeout() -> float:
    """The seconds pyro_kl's all-reduces wait (see :func:`set_collective_timeout`)."""
    return _timeout


def _all_reduce(tensor: torch.Tensor, op, group, timeout: float, what: str) -> None:
    """``torch.distributed.all_reduce`` that waits at most ``timeout`` seconds."""
    work = torch_dist.all_reduce(tensor, op=op, group=group, async_op=True)
    deadline = time.monotonic() + timeout
    pause = 1e-4
    while not work.is_completed():
        if time.monotonic() > deadline:
            rank = torch_dist.get_rank(group)
            size = torch_dist.get_world_size(group)
            raise RuntimeError(
                f"{what}: process {rank} of {size} waited {timeout:g} s for the other "
                "processes to join the all-reduce of the terms, and they did not: the ranks "
                "are out of step (one process ran a training call, with a GECO or PIControl "
                "weight, or all_reduce_terms, that the others did not). Every process must "
                "run the same training calls: give each the same number of batches "
                "(DistributedSampler(..., drop_last=True), or stop all ranks together), and "
                "do evaluation outside training calls (elbo.loss, or torch.no_grad()). If the "
                "others are only slow, raise the limit with "
                "pyro_kl.distributed.set_collective_timeout(seconds). This process group "
                "still holds the unfinished all-reduce: destroy it "
                "(torch.distributed.destroy_process_group()) before going on."
            )
        time.sleep(pause)
        pause = min(2 * pause, 0.01)
    work.wait()


def _check_scalar(name, value) -> None:
    """A clear error naming the term unless ``value`` is one number."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"all_reduce_terms: the term {name!r} is a tensor of shape "
                f"{tuple(value.shape)}; each term must be one number (as in "
                "elbo.last_terms). Reduce it first, e.g. value.sum(), or pass the "
                "elements as terms of their own."
            )
    elif not is_number(value, finite=False):
        raise ValueError(
            f"all_reduce_terms: the term {name!r} is {value!r} "
            f"({type(value).__name__}); each term must be one number, a float or a "
            "one-element tensor (as in elbo.last_terms). Leave out terms without a value."
        )


def _floats(terms: Mapping, names) -> Dict[str, float]:
    """The terms as floats, tensors read back to the host together (one sync)."""
    for name in names:
        _check_scalar(name, terms[name])
    tensors = [name for name in names if isinstance(terms[name], torch.Tensor)]
    values = {name: float(terms[name]) for name in names if name not in tensors}
    if tensors:
        devices = {terms[name].device for name in tensors}
        stacked = [terms[name].detach().reshape(()).double() for name in tensors]
        if len(devices) > 1:
            stacked = [tensor.cpu() for tensor in stacked]
        values.update(zip(tensors, torch.stack(stacked).tolist()))
    return {name: values[name] for name in names}


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
    timeout: Optional[float] = None,
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
    :param timeout: the most seconds (or a ``datetime.timedelta``) to
        wait for the other processes; default
        :func:`~pyro_kl.distributed.get_collective_timeout`.
    :returns: term name -> reduced value, the same on every process.
    :rtype: dict
    :raises ValueError: on an unknown ``op``, on a value that is not one
        number (a vector, ``None``, a string), or when the processes name
        different terms (checked always, with one small collective first, so
        that a mismatch fails on every process instead of hanging).
    :raises RuntimeError: when the other processes do not join within the
        timeout (the ranks are out of step).

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
    if not isinstance(terms, Mapping):
        raise ValueError(
            f"all_reduce_terms takes a {{term name: value}} map such as elbo.last_terms, "
            f"got {type(terms).__name__}."
        )
    limit = _timeout
    if timeout is not None:
        limit = _seconds(timeout, f"all_reduce_terms(timeout={timeout!r})")
    names = sorted(terms)
    values = _floats(terms, names)
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return values

    device = _group_device(group)
    # a fixed-size check first, always: tensors of different sizes would hang
    signature = _names_signature(names)
    bounds = torch.tensor([signature, -signature], dtype=torch.float64, device=device)
    _all_reduce(bounds, torch_dist.ReduceOp.MAX, group, limit, "all_reduce_terms")
    if bounds[0].item() != signature or -bounds[1].item() != signature:
        raise ValueError(
            f"all_reduce_terms: the processes name different terms (this one: {names}). "
            "Call it with the same model and guide on every process, or reduce "
            "only the terms they share: {t: terms[t] for t in common_names}."
        )
    if not names:
        return {}
    packed = torch.tensor([values[name] for name in names], dtype=torch.float64, device=device)
    _all_reduce(packed, getattr(torch_dist.ReduceOp, _OPS[op]), group, limit, "all_reduce_terms")
    if op == "mean":
        packed /= torch_dist.get_world_size(group)
    return dict(zip(names, packed.tolist()))
