"""Tracing (model, guide) pairs: the one place pyro_kl runs a model and its guide.

The ELBO, the objective derivation (:mod:`pyro_kl.objective`) and the
diagnostics (:mod:`pyro_kl.diagnostics`) all read traces built here:

- :func:`sample_sites`: the one iterator over a trace's sample sites;
- :func:`importance_pair`: the guide traced, the model replayed on it, the
  model's own ``kl_term`` tags kept, as :class:`~pyro.infer.Trace_ELBO` traces
  a particle (or, when sites were enumerated, as
  :class:`~pyro.infer.TraceEnum_ELBO` does, with its tensors packed);
- :func:`trace_once`: one pair without gradients and without touching the
  random state, for derivations and pictures;
- :class:`PairTracer`: the pairs of one ELBO call. It owns the enumeration
  strategy: whether a pair enumerates is learnt on its first call, from a pass
  that is also that call's first particle (or, with ``max_plate_nesting`` to be
  guessed, the guessing pass Pyro's own ELBOs make), so the random stream is
  that of :class:`~pyro.infer.Trace_ELBO` for plain pairs and of
  :class:`~pyro.infer.TraceEnum_ELBO` for enumerated ones. What it learns is
  kept in a bounded cache of weak references, so it never keeps a model alive.
"""

import contextlib
import inspect
import itertools
import queue
import re
import weakref
from collections import OrderedDict
from typing import Callable, Iterator, NamedTuple, Optional, Tuple

import pyro
import torch
from pyro import poutine
from pyro.infer.enum import get_importance_trace, iter_discrete_escape, iter_discrete_extend
from pyro.infer.util import is_validation_enabled
from pyro.poutine import Trace
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_traceenum_requirements

from ._pyro_compat import (
    finish_importance_pair,
    is_enumerated_by_pyro,
    is_particle_plate,
    vectorized_num_particles,
)
from .terms import ModelTags, TermAssignment, sample_sites

_MAX_CACHED_PAIRS = 64


class TracedPair(NamedTuple):
    """One model trace replayed on one guide trace, with every site's term."""

    model_trace: Trace
    guide_trace: Trace
    assignment: TermAssignment


def enumeration_state(*traces: Trace) -> Optional[bool]:
    """``None`` when no site is configured for enumeration; otherwise whether the
    configured sites were enumerated (by the enumerating path)."""
    configured = False
    for trace in traces:
        for site in trace.nodes.values():
            if site["type"] == "sample" and site["infer"].get("enumerate"):
                configured = True
                if is_enumerated_by_pyro(site):
                    return True
    return False if configured else None


def is_packed(guide_trace: Trace) -> bool:
    """Whether a trace pair came from the enumerating path (its tensors packed)."""
    return hasattr(guide_trace, "plate_to_symbol")


def importance_pair(model, guide, args: tuple, kwargs: dict, max_plate_nesting: float):
    """One (model, guide) trace pair, as :class:`~pyro.infer.Trace_ELBO` traces it,
    with the model's own ``kl_term`` tags kept; when sites were enumerated (the
    model and guide run under Pyro's enumeration handlers), as
    :class:`~pyro.infer.TraceEnum_ELBO` does, with its tensors packed.

    :returns: ``(model_trace, guide_trace)``.
    """
    tags = ModelTags()
    model_trace, guide_trace = get_importance_trace(
        "flat", max_plate_nesting, tags(model), guide, args, kwargs
    )
    tags.restore(model_trace)
    if enumeration_state(guide_trace, model_trace):
        if is_validation_enabled():
            check_traceenum_requirements(model_trace, guide_trace)
        guide_trace.pack_tensors()
        model_trace.pack_tensors(guide_trace.plate_to_symbol)
    return model_trace, guide_trace


def _raw_pair(model, guide, args: tuple, kwargs: dict) -> Tuple[Trace, Trace]:
    """The guide traced and the model replayed on it, nothing computed or checked:
    the pass Pyro's ELBOs make to guess ``max_plate_nesting``."""
    tags = ModelTags()
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(tags(model), trace=guide_trace)).get_trace(
        *args, **kwargs
    )
    tags.restore(model_trace)
    return model_trace, guide_trace


def trace_once(model, guide, args: tuple = (), kwargs: Optional[dict] = None):
    """One (model, guide) pair traced without gradients and without touching the
    global random state (CUDA's included, where it is in use), for derivations,
    pictures and diagnostics.

    :returns: ``(model_trace, guide_trace)``.
    """
    with fork_rng(), torch.no_grad(), explained_errors(model, guide, args, kwargs or {}):
        return _raw_pair(model, guide, args, kwargs or {})


@contextlib.contextmanager
def explained_errors(model, guide, args: tuple, kwargs: dict, vectorized: bool = False):
    """Errors that Pyro or torch raise on bad inputs, said in terms of the inputs:
    a plate of size 0 (an empty batch) and bool data (torch's log-densities
    take floats), invalid values under validation, a batch dim no plate holds, and
    (``vectorized``) a program that is not vectorisation-safe. Costs nothing
    unless an error is raised."""
    try:
        yield
    except ZeroDivisionError as error:
        if "size cannot be zero" not in str(error):
            raise
        raise ValueError(
            "A pyro.plate got size 0: the batch is empty. Pass at least one datapoint, and "
            "skip empty batches (e.g. DataLoader(..., drop_last=True), or `if len(x):`)."
        ) from error
    except ValueError as error:
        text = str(error)
        if "invalid values" in text or "within the support" in text:
            found = _non_finite_sites(model, guide, args, kwargs)
            if found:
                first = text.strip().splitlines()[0]
                if any(where.startswith("data") for where in found):
                    fix = ("Data holding NaN or infinity make every term NaN: drop or impute "
                           "those datapoints, or mask them out (poutine.mask, or "
                           "pyro.sample(..., obs_mask=...)).")
                else:
                    fix = ("The data are finite, so a parameter or a computation of the guide "
                           "gives them: check the parameters (a learning rate too high, a scale "
                           "without a positive constraint) and the arguments.")
                raise ValueError(
                    f"{first}\nIn a pass without validation, non-finite values appear at "
                    f"{', '.join(found)}. {fix}"
                ) from error
        match = re.match(r"Shape mismatch inside plate\('([^']*)'\) at site (\S+) dim", text)
        if match:
            plate, name = match.groups()
            raise ValueError(
                f"{text.strip().splitlines()[0]}: site '{name}' has a batch dim that plate "
                f"'{plate}' does not hold. If the guide and the model give '{name}' different "
                "event shapes (one uses .to_event(n), the other not), give both the same; "
                "otherwise give its parameters the plate's size along the plate's dim."
            ) from error
        raise
    except RuntimeError as error:
        text = str(error)
        if "out of memory" in text:
            raise
        sites = _bool_observations(model, guide, args, kwargs) if "bool" in text.lower() else []
        if not sites:
            if vectorized and _runs_plainly(model, guide, args, kwargs):
                raise RuntimeError(
                    f"{str(error).strip().splitlines()[0]}\nThe model and guide run without "
                    "vectorised particles but fail with vectorize_particles=True, which runs "
                    "them once with the particles in a dim left of every plate: the program "
                    "is not vectorisation-safe (e.g. torch.stack or .expand(len(x)) on a "
                    "sampled value, or indexing with z.item()). Broadcast along the leftmost "
                    "dims (use ... in indexing, .expand(z.shape[:-1] + ...)), or train with "
                    "vectorize_particles=False."
                ) from error
            raise
        name, fn = sites[0]
        raise TypeError(
            f"Site '{name}' observes a bool tensor, but {type(fn).__name__}.log_prob needs "
            "numbers (torch's distributions do not take bool values): pass obs=x.float() "
            "(0. and 1. for a Bernoulli; x.long() for a Categorical)."
        ) from error


def _quiet_pair(model, guide, args: tuple, kwargs: dict, *, validation: Optional[bool] = None,
                log_prob: bool = False) -> Optional[Tuple[Trace, Trace]]:
    """One more plain pass, to say what went wrong in terms of the inputs: without
    gradients, the random state untouched, Pyro's validation as it is unless
    ``validation`` says; ``None`` when it fails too."""
    checking = (contextlib.nullcontext() if validation is None
                else pyro.validation_enabled(validation))
    try:
        with fork_rng(), torch.no_grad(), checking:
            model_trace, guide_trace = _raw_pair(model, guide, args, kwargs)
            if log_prob:
                model_trace.compute_log_prob()
                guide_trace.compute_log_prob()
    except Exception:  # the pass fails as well: nothing more to say
        return None
    return model_trace, guide_trace


def _runs_plainly(model, guide, args: tuple, kwargs: dict) -> bool:
    """Whether one pass without vectorised particles runs, log-densities included."""
    return _quiet_pair(model, guide, args, kwargs, log_prob=True) is not None


def _non_finite_sites(model, guide, args: tuple, kwargs: dict):
    """Where one pass without validation meets NaN or infinite values."""
    pair = _quiet_pair(model, guide, args, kwargs, validation=False)
    if pair is None:
        return []
    model_trace, guide_trace = pair
    found = []
    for world, trace in (("data", model_trace), ("guide", guide_trace)):
        for name, site in sample_sites(trace):
            value = site["value"]
            if world == "data" and not site["is_observed"]:
                continue
            if torch.is_tensor(value) and value.is_floating_point():
                bad = int((~torch.isfinite(value)).sum())
                if bad:
                    found.append(f"{world} site '{name}' ({bad} value(s))")
    return found


def _bool_observations(model, guide, args: tuple, kwargs: dict):
    """The observed sites of one plain pass whose value is a bool tensor."""
    pair = _quiet_pair(model, guide, args, kwargs)
    if pair is None:
        return []
    model_trace, _ = pair
    return [
        (name, site["fn"])
        for name, site in sample_sites(model_trace)
        if site["is_observed"] and torch.is_tensor(site["value"])
        and site["value"].dtype == torch.bool
    ]


def fork_rng():
    """:func:`torch.random.fork_rng` over the CPU and, when in use, the current CUDA device."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    return torch.random.fork_rng(devices=devices)


def guessed_plate_nesting(model_trace: Trace, guide_trace: Trace, particle_plate: bool) -> int:
    """``max_plate_nesting`` as Pyro's ELBOs guess it from one plain pass: the
    deepest vectorised plate, plus one for the particle plate when particles
    are vectorised."""
    dims = [
        frame.dim
        for trace in (prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace))
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return (-min(dims) if dims else 0) + int(particle_plate)


class PlateNestingGuard(Messenger):
    """Refuses, at a parallel-enumerated site, a ``max_plate_nesting`` too small
    for the site's plates, before Pyro allocates its enumeration dimension."""

    def __init__(self, max_plate_nesting: int):
        super().__init__()
        self.max_plate_nesting = max_plate_nesting

    def _pyro_sample(self, msg) -> None:
        strategy = msg["infer"].get("enumerate")
        if not strategy or msg["is_observed"]:
            return
        if not getattr(msg["fn"], "has_enumerate_support", False):
            raise ValueError(
                f"Site '{msg['name']}' is marked infer={{'enumerate': {strategy!r}}}, but its "
                f"distribution {type(msg['fn']).__name__} has no finite support to sum over "
                "(has_enumerate_support is False). Only discrete distributions with finite "
                "support (Bernoulli, Categorical, OneHotCategorical, ...) can be enumerated: "
                "drop the mark at this site (pyro.infer.config_enumerate marks only sites that "
                "can be enumerated), and let the guide sample it."
            )
        if strategy != "parallel":
            return
        for frame in msg["cond_indep_stack"]:
            if frame.vectorized and not is_particle_plate(frame.name):
                if frame.dim is not None and frame.dim < -self.max_plate_nesting:
                    raise ValueError(
                        f"Site '{msg['name']}' is enumerated inside plate '{frame.name}' "
                        f"at dim {frame.dim}, but max_plate_nesting={self.max_plate_nesting} "
                        "leaves enumeration no room left of the plates. Give the ELBO "
                        f"max_plate_nesting={-frame.dim} or more (the number of nested "
                        "plates), or leave it out so that it is guessed."
                    )


def _weak(fn) -> Optional[weakref.ref]:
    if inspect.ismethod(fn):
        return weakref.WeakMethod(fn)
    try:
        return weakref.ref(fn)
    except TypeError:
        return None


class _PairCache:
    """(model, guide) -> whether the pair enumerates, held by weak references and
    bounded: the least recently used pair is forgotten first."""

    def __init__(self, size: int = _MAX_CACHED_PAIRS):
        self.size = size
        self._known: "OrderedDict[tuple, bool]" = OrderedDict()

    @staticmethod
    def key(model, guide) -> Optional[tuple]:
        refs = (_weak(model), _weak(guide))
        if None in refs:
            return None
        try:
            hash(refs)
        except TypeError:
            return None
        return refs

    def get(self, key) -> Optional[bool]:
        if key is None or key not in self._known:
            return None
        self._known.move_to_end(key)
        return self._known[key]

    def set(self, key, enumerates: bool) -> None:
        if key is None:
            return
        self._known[key] = enumerates
        self._known.move_to_end(key)
        while len(self._known) > self.size:
            self._known.popitem(last=False)


class PairTracer:
    """The trace pairs of each ELBO call, and the enumeration strategy behind them.

    A pair known to be plain takes Pyro's own particle loop (``plain_traces``,
    :class:`~pyro.infer.Trace_ELBO`'s ``_get_traces``); a pair known to
    enumerate takes :class:`~pyro.infer.TraceEnum_ELBO`'s construction; a new
    pair is learnt from its first pass (see the module doc). The tracer holds
    no reference to its ELBO and none that keeps a model alive; it pickles as
    an empty cache.

    Example::

        elbo = Trace_ELBO()
        tracer = PairTracer()
        pairs = list(tracer.pairs(elbo, elbo._get_traces, vae.model, vae.guide, (x,), {}))
        assert len(pairs) == elbo.num_particles
    """

    def __init__(self):
        self._cache = _PairCache()

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()

    def pairs(self, elbo, plain_traces: Callable, model, guide, args: tuple, kwargs: dict):
        """The (model_trace, guide_trace) pairs of one call of ``elbo``.

        :param elbo: the ELBO whose options (``num_particles``,
            ``vectorize_particles``, ``max_plate_nesting``) shape the call; a
            guessed ``max_plate_nesting`` is set on it, as Pyro's ELBOs do.
        :param plain_traces: Pyro's particle loop for plain pairs.
        """
        key = self._cache.key(model, guide)
        known = self._cache.get(key)
        if known is False:
            plain = plain_traces(model, guide, args, kwargs)
            first = next(plain)
            if enumeration_state(*first) is not False:
                yield first
                yield from plain
                return
            known = None  # the pair started to configure enumeration: learn it again
        if known is None and isinstance(poutine.unwrap(guide), Messenger):
            self._cache.set(key, False)  # a GuideMessenger never enumerates
            yield from plain_traces(model, guide, args, kwargs)
            return
        if known is None and elbo.max_plate_nesting == float("inf"):
            first = _raw_pair(model, guide, args, kwargs)
            if enumeration_state(*first) is None:
                self._cache.set(key, False)
                yield from self._plain_after_first_pass(elbo, plain_traces, first, model, guide,
                                                        args, kwargs)
                return
            elbo.max_plate_nesting = guessed_plate_nesting(
                *first, elbo.vectorize_particles and elbo.num_particles > 1
            )
        for index, pair in enumerate(self._enumerating(elbo, model, guide, args, kwargs)):
            if index == 0:
                self._cache.set(key, is_packed(pair[1]))
            yield pair

    @staticmethod
    def _plain_after_first_pass(elbo, plain_traces, first, model, guide, args, kwargs):
        if elbo.vectorize_particles:  # the first pass was the guess of Pyro's own ELBOs
            elbo.max_plate_nesting = guessed_plate_nesting(*first, elbo.num_particles > 1)
            yield from plain_traces(model, guide, args, kwargs)
            return
        yield finish_importance_pair(*first, elbo.max_plate_nesting)
        yield from itertools.islice(plain_traces(model, guide, args, kwargs),
                                    elbo.num_particles - 1)

    @staticmethod
    def _enumerating(elbo, model, guide, args, kwargs) -> Iterator[Tuple[Trace, Trace]]:
        """:class:`~pyro.infer.TraceEnum_ELBO`'s pairs: parallel enumeration with the
        model's dims left of the guide's, sequential enumeration by a queue."""
        nesting = elbo.max_plate_nesting
        if elbo.vectorize_particles:
            model = vectorized_num_particles(elbo, model)
            guide = vectorized_num_particles(elbo, guide)
        model = EnumMessenger()(PlateNestingGuard(nesting)(model))
        guide = EnumMessenger(first_available_dim=-1 - nesting)(PlateNestingGuard(nesting)(guide))
        pending: queue.LifoQueue = queue.LifoQueue()
        guide = poutine.queue(
            guide, pending, escape_fn=iter_discrete_escape, extend_fn=iter_discrete_extend
        )
        for _ in range(1 if elbo.vectorize_particles else elbo.num_particles):
            pending.put(Trace())
            while not pending.empty():
                yield importance_pair(model, guide, args, kwargs, nesting)


__all__ = [
    "PairTracer",
    "TracedPair",
    "enumeration_state",
    "explained_errors",
    "fork_rng",
    "guessed_plate_nesting",
    "importance_pair",
    "is_packed",
    "sample_sites",
    "trace_once",
]
