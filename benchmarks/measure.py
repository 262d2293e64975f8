"""Measurements: interleaved step rates, peak memory of one step, gradient variance."""

import os
import random
import statistics
import time
import tracemalloc
from contextlib import contextmanager, nullcontext
from typing import Callable, Dict, Iterable, List, Mapping, Sequence, Tuple

import pyro
import torch
from torch.profiler import ProfilerActivity, profile

Step = Callable[[], object]


class Variant:
    """One way of taking a training step, timed against the others.

    :param str name: row label in the table.
    :param step: a callable taking one optimisation step.
    :param bool validation: run with Pyro's (and torch's) argument
        validation on (Pyro's default) or off.
    """

    def __init__(self, name: str, step: Step, *, validation: bool = True):
        self.name = name
        self._step = step
        self.validation = validation

    def __call__(self) -> None:
        with nullcontext() if self.validation else pyro.validation_enabled(False):
            self._step()


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved_rates(
    variants: Sequence[Variant],
    *,
    rounds: int,
    steps: int,
    device: str = "cpu",
    clock: str = "process",
    seed: int = 0,
) -> Dict[str, List[float]]:
    """Steps per second of each variant in each round, the variants' order
    shuffled every round so that slow spells of a shared machine hit all alike.

    :param int rounds: number of timed rounds (one untimed warm-up round runs first).
    :param int steps: steps of each variant per round.
    :param str clock: ``"process"`` (CPU time of this process,
        :func:`time.process_time`: with one torch thread it ignores the time
        other processes take from a shared machine) or ``"wall"``
        (:func:`time.perf_counter`; needed on a GPU, whose work is not CPU time).
    :returns: variant name -> list of ``rounds`` step rates.
    """
    if clock not in ("process", "wall"):
        raise ValueError(f"clock={clock!r}; use clock='process' or clock='wall'.")
    now = time.process_time if clock == "process" else time.perf_counter
    order = list(variants)
    shuffle = random.Random(seed).shuffle
    rates: Dict[str, List[float]] = {v.name: [] for v in variants}
    for round_ in range(rounds + 1):
        shuffle(order)
        for variant in order:
            _synchronize(device)
            start = now()
            for _ in range(steps):
                variant()
            _synchronize(device)
            elapsed = now() - start
            if round_ > 0:
                rates[variant.name].append(steps / elapsed)
    return rates


def median_ratio(rates: Mapping[str, List[float]], numerator: str, denominator: str) -> dict:
    """Median, over rounds, of the per-round ratio of two variants' step rates.

    :returns: ``{"median": m, "min": lo, "max": hi}`` of the ratios.
    """
    ratios = [a / b for a, b in zip(rates[numerator], rates[denominator])]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def peak_tensor_bytes(step: Step, *, device: str = "cpu", repeats: int = 3) -> int:
    """Peak bytes of tensor memory that one step holds above its starting level.

    On CUDA: ``torch.cuda.max_memory_allocated`` after resetting the peak.
    On CPU: ``torch.profiler`` with ``profile_memory=True``; the running sum of
    the allocations and frees it records, in event order, and its maximum
    (allocations freed inside a single operator are netted out, so this is a
    slight under-estimate). The median over ``repeats`` steps is returned.
    """
    peaks = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step()
            torch.cuda.synchronize()
            peaks.append(torch.cuda.max_memory_allocated() - base)
            continue
        with _quiet_stderr(), profile(
            activities=[ProfilerActivity.CPU], profile_memory=True
        ) as prof:
            step()
        peaks.append(_running_peak(
            (event.time_range.start, event.self_cpu_memory_usage)
            for event in prof.profiler.function_events
        ))
    return int(statistics.median(peaks))


@contextmanager
def _quiet_stderr():
    """Silence the profiler's start/stop lines, which its C++ side writes to fd 2."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _running_peak(deltas: Iterable[Tuple[float, int]]) -> int:
    level = peak = 0
    for _, delta in sorted(deltas, key=lambda pair: pair[0]):
        level += delta
        peak = max(peak, level)
    return peak


def peak_python_bytes(step: Step, *, repeats: int = 3) -> int:
    """Peak bytes of Python objects (traces, dicts, messengers) that one step
    allocates, from :mod:`tracemalloc`; tensor storage is not included.
    The median over ``repeats`` steps is returned."""
    peaks = []
    for _ in range(repeats):
        tracemalloc.start()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        step()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peaks.append(peak - base)
    return int(statistics.median(peaks))


def gradient_variance(
    loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], *, draws: int
) -> dict:
    """Variance of the gradient estimator at fixed parameters, over fresh noise.

    :param loss_fn: returns a differentiable loss drawn with new noise.
    :param params: the parameters whose gradients are measured (the encoder's).
    :param int draws: number of independent gradient draws.
    :returns: ``total_variance`` (trace of the gradients' covariance: the sum
        over coordinates of their variance), ``mean_sq_norm`` (squared norm of
        the mean gradient) and ``snr`` (their ratio, mean_sq_norm /
        total_variance).
    """
    grads = []
    for _ in range(draws):
        loss = loss_fn()
        flat = torch.autograd.grad(loss, list(params))
        grads.append(torch.cat([g.reshape(-1) for g in flat]))
    stacked = torch.stack(grads)
    total_variance = stacked.var(dim=0).sum().item()
    mean_sq_norm = stacked.mean(dim=0).pow(2).sum().item()
    return {
        "total_variance": total_variance,
        "mean_sq_norm": mean_sq_norm,
        "snr": mean_sq_norm / total_variance if total_variance > 0 else float("inf"),
    }


def paired_overhead(baseline: Step, candidate: Step, *, rounds: int, repeats: int) -> dict:
    """Extra CPU time of ``candidate`` over ``baseline``, paired round by round.

    Each round times ``repeats`` calls of each (the order alternating between
    rounds) with :func:`time.process_time`; the median over rounds of the
    difference is far steadier than a ratio of whole training steps.

    :returns: ``{"baseline_us": b, "extra_us": d}``, medians per call.
    """
    now = time.process_time
    base, extra = [], []
    for round_ in range(rounds):
        spent = {}
        for name, fn in ((("b", baseline), ("c", candidate)) if round_ % 2 == 0
                         else (("c", candidate), ("b", baseline))):
            start = now()
            for _ in range(repeats):
                fn()
            spent[name] = (now() - start) / repeats * 1e6
        base.append(spent["b"])
        extra.append(spent["c"] - spent["b"])
    return {"baseline_us": statistics.median(base), "extra_us": statistics.median(extra)}
