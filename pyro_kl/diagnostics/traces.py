"""Vectorised traces of a (model, guide) pair, and log-densities per datapoint.

Every diagnostic in :mod:`pyro_kl.diagnostics` reads the same two things from
Pyro traces: the *layout* of a program (how many plates it nests, which plate
holds the data, whether every site lies inside it) and each site's
log-density reduced to one number per datapoint. Both live here.

Conventions shared by all diagnostics:

* the guide is run first and the model is replayed against it, as in
  :class:`~pyro.infer.Trace_ELBO`; ``K`` samples are drawn at once under a
  ``pyro.plate`` outside every plate of the program, as Pyro's
  ``vectorize_particles=True`` does, so the model and guide must work with
  vectorised particles;
* log-densities are those of the distributions: masks are applied, scales
  (``poutine.scale``, plate subsampling) are not, so that a bound is a bound
  on the dream world's own ``log model(x)``;
* a latent site of the model that the guide does not sample is drawn from the
  model itself, so its proposal equals its prior and it contributes nothing
  to an importance weight.
"""

import math
from typing import Callable, Iterator, NamedTuple, Optional, Tuple

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine import Trace
from pyro.poutine.util import site_is_subsample

from .._checks import whole_number
from .._pyro_compat import PARTICLE_PLATE, is_particle_plate, site_is_deterministic
from ..terms import data_plates, is_data_site
from ..tracing import sample_sites, trace_once

ELEMENT_BUDGET = 2**22
"""Elements per chunk of vectorised samples (values and log-densities of all
sites, times :data:`WORK_FACTOR` for the networks' intermediates)."""

WORK_FACTOR = 8


class Layout(NamedTuple):
    """What the diagnostics need to know about a program's plates.

    :ivar int max_plate_nesting: plates nested in the program (the samples'
        plate goes at ``dim = -max_plate_nesting - 1``).
    :ivar str data_plate: name of the plate holding the data.
    :ivar int data_dim: its ``dim`` (negative).
    :ivar int num_data: datapoints in the batch (its size in the trace).
    :ivar bool per_datapoint: whether every counted site lies inside the data
        plate, so that importance weights factorise over datapoints.
    :ivar int elements: elements one sample of the whole program holds.
    :ivar int full_size: the data plate's full size (``size``, which a
        subsampled plate's ``subsample_size`` or ``subsample`` is drawn from).
    :ivar bool random_subsample: whether the data plate draws a random
        subsample (``subsample_size`` without ``subsample``) on every run.
    """

    max_plate_nesting: int
    data_plate: str
    data_dim: int
    num_data: int
    per_datapoint: bool
    elements: int
    full_size: int = 0
    random_subsample: bool = False

    @property
    def subsample_fraction(self) -> float:
        """``num_data / full_size``: the share of the data set the batch holds
        (1 without subsampling)."""
        return self.num_data / self.full_size if self.full_size else 1.0

    def chunk_size(self, num_samples: int, chunk_size: Optional[int] = None) -> int:
        """Samples per vectorised run: ``chunk_size``, or what fits :data:`ELEMENT_BUDGET`."""
        if chunk_size is not None:
            if not isinstance(chunk_size, int) or chunk_size < 1:
                raise ValueError(f"chunk_size={chunk_size!r}; use an integer >= 1 or None.")
            return min(chunk_size, num_samples)
        per_sample = max(1, WORK_FACTOR * self.elements)
        return max(1, min(num_samples, ELEMENT_BUDGET // per_sample))


def check_num_samples(num_samples: int, minimum: int = 1) -> int:
    """:raises ValueError: unless ``num_samples`` is an integer ``>= minimum``."""
    return whole_number("num_samples", num_samples, minimum=minimum)


def counted_model_sites(model_trace: Trace, guide_trace: Trace) -> Iterator[Tuple[str, dict]]:
    """Model sites whose log-density enters an importance weight: observed
    sites and latents the guide samples (a latent the guide lacks was drawn
    from the model and cancels)."""
    for name, site in sample_sites(model_trace):
        if site_is_deterministic(site):
            continue  # a pyro.deterministic site has no density
        if site["is_observed"] or name in guide_trace.nodes:
            yield name, site


def local_latents(model_trace: Trace, guide_trace: Trace, data_plate: str) -> Tuple[str, ...]:
    """Latent sites that both worlds sample inside the data plate (the codes)."""
    return tuple(
        name
        for name, site in sample_sites(model_trace)
        if not site["is_observed"]
        and name in guide_trace.nodes
        and any(f.name == data_plate for f in site["cond_indep_stack"])
    )


def local_auxiliaries(model_trace: Trace, guide_trace: Trace, data_plate: str) -> Tuple[str, ...]:
    """Guide sites the model lacks (an autoguide's auxiliary draws) inside the
    data plate: part of the guide's density of the codes."""
    return tuple(
        name
        for name, site in sample_sites(guide_trace)
        if name not in model_trace.nodes
        and any(f.name == data_plate for f in site["cond_indep_stack"])
    )


def site_log_prob(site: dict) -> torch.Tensor:
    """The site's log-density with its mask applied and its scale not."""
    log_prob = site["fn"].log_prob(site["value"])
    return scale_and_mask(log_prob, 1.0, site["mask"])


def per_datapoint(value: torch.Tensor, layout: Layout, *, keep_data: bool = True) -> torch.Tensor:
    """Sums a per-sample tensor over every plate except the data plate.

    :param torch.Tensor value: shaped like a batch of a vectorised trace:
        the samples' dim at ``-max_plate_nesting - 1`` (or absent), plates to
        its right.
    :param Layout layout: the program's layout.
    :param bool keep_data: keep the data plate's dim (else sum it too).
    :returns: shape ``(K, N)`` (``(K,)`` with ``keep_data=False``); ``K`` or
        ``N`` may be 1 where ``value`` does not vary along them.
    """
    rank = layout.max_plate_nesting + 1
    if value.dim() > rank:
        raise ValueError(
            f"A log-density of shape {tuple(value.shape)} has more batch dims than the "
            f"{layout.max_plate_nesting} plates found; pass max_plate_nesting= (the "
            "number of nested plates, counting batch dims of distributions)."
        )
    value = value.reshape((1,) * (rank - value.dim()) + value.shape)
    data_axis = rank + layout.data_dim
    dims = [d for d in range(1, rank) if not (keep_data and d == data_axis)]
    value = value.sum(dims) if dims else value
    return value if keep_data else value.reshape(value.shape[0])


def _nesting(*traces: Trace) -> int:
    nesting = 0
    for trace in traces:
        for _, site in sample_sites(trace):
            dims = [-f.dim for f in site["cond_indep_stack"] if f.dim is not None]
            nesting = max([nesting, len(site["fn"].batch_shape)] + dims)
    return nesting


def _check_no_enumeration(*traces: Trace) -> None:
    for trace in traces:
        for name, site in sample_sites(trace):
            if site["infer"].get("enumerate"):
                raise NotImplementedError(
                    f"Site '{name}' is marked for enumeration; the diagnostics draw "
                    "samples and do not sum enumerated sites out. Sample it instead "
                    "(drop infer={'enumerate': ...}) or marginalise it in the model."
                )


def _choose_data_plate(
    model_trace: Trace, requested: Optional[str]
) -> Tuple[str, int, int, int]:
    frames = {}
    common = None
    for name, site in sample_sites(model_trace):
        if not is_data_site(site):
            continue
        names = []
        for frame in site["cond_indep_stack"]:
            if frame.vectorized and not is_particle_plate(frame.name):
                frames[frame.name] = frame
                names.append(frame.name)
        common = names if common is None else [n for n in common if n in names]
    if common is None:
        raise ValueError(
            "The model observes no data (no site with obs=...), so there is no "
            "datapoint to measure. Pass the data to the model as observed sites."
        )
    if requested is not None:
        if requested not in frames:
            raise ValueError(
                f"data_plate='{requested}' holds no observed site; plates holding data: "
                f"{sorted(data_plates(model_trace))}."
            )
        chosen = requested
    elif common:
        chosen = common[0]  # outermost: cond_indep_stack lists outer plates first
    else:
        raise ValueError(
            "The observed sites share no vectorised plate, so there is no axis of "
            "datapoints. Put them in one pyro.plate over the data, or name the plate "
            "with data_plate=."
        )
    frame = frames[chosen]
    size = _plate_size(model_trace, chosen, frame.dim)
    return chosen, frame.dim, size, frame.full_size or size


def _plate_size(trace: Trace, plate: str, dim: int) -> int:
    for _, site in sample_sites(trace):
        if any(f.name == plate for f in site["cond_indep_stack"]):
            shape = site["fn"].batch_shape
            if len(shape) >= -dim:
                return shape[dim]
    raise AssertionError(f"no site in plate {plate}")  # pragma: no cover


def probe(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    *,
    max_plate_nesting: Optional[int] = None,
    data_plate: Optional[str] = None,
) -> Layout:
    """Runs the guide and the model once, without gradients and without
    touching the random state, to learn the program's :class:`Layout`.

    :raises ValueError: when no plate holds the data, or ``data_plate`` names
        a plate that holds none.
    :raises NotImplementedError: for sites marked for enumeration.
    """
    model_trace, guide_trace = trace_once(model, guide, args, kwargs)
    _check_no_enumeration(model_trace, guide_trace)
    nesting = _nesting(model_trace, guide_trace)
    if max_plate_nesting is not None:
        if max_plate_nesting < nesting:
            raise ValueError(
                f"max_plate_nesting={max_plate_nesting} but the program nests {nesting} "
                "batch dims; pass a larger value or None."
            )
        nesting = max_plate_nesting
    name, dim, size, full_size = _choose_data_plate(model_trace, data_plate)
    counted = list(counted_model_sites(model_trace, guide_trace)) + list(sample_sites(guide_trace))
    _check_finite_data(model_trace)
    for trace, world in ((guide_trace, "guide"), (model_trace, "model")):
        _check_declared_dims(trace, world, name)
    inside = all(any(f.name == name for f in s["cond_indep_stack"]) for _, s in counted)
    elements = sum(
        site["fn"].batch_shape.numel() * (1 + site["fn"].event_shape.numel())
        for _, site in counted
    )
    return Layout(
        nesting, name, dim, size, inside, elements, full_size,
        _draws_subsample(model_trace, guide_trace, name),
    )


def _draws_subsample(model_trace: Trace, guide_trace: Trace, plate: str) -> bool:
    """Whether ``plate`` draws its indices at random (``subsample_size`` < ``size``
    without ``subsample=``): Pyro records a subsample site for every sized plate."""
    for trace in (guide_trace, model_trace):
        site = trace.nodes.get(plate)
        if site is not None and site["type"] == "sample" and site_is_subsample(site):
            fn = site["fn"]
            drawn = getattr(fn, "subsample_size", None)
            return drawn is not None and drawn < getattr(fn, "size", drawn)
    return False


def subsample_sites(*traces: Trace) -> Trace:
    """A trace holding only the plate subsample sites of ``traces`` (the guide's
    and the model's: a plate may be the model's alone; not the samples' own
    plate, whose size changes between chunks), to replay the same indices in
    later runs."""
    fixed = Trace()
    for trace in traces:
        for name, site in trace.nodes.items():
            if (site["type"] == "sample" and site_is_subsample(site)
                    and not is_particle_plate(name) and name not in fixed.nodes):
                fixed.add_node(name, **site)
    return fixed


def _check_finite_data(model_trace: Trace) -> None:
    """Observed data holding NaN or infinity (where not masked out) gives a NaN
    bound; say which site, whatever Pyro's validation setting."""
    for name, site in sample_sites(model_trace):
        value = site["value"]
        if not (is_data_site(site) and torch.is_tensor(value) and value.is_floating_point()):
            continue
        bad = ~torch.isfinite(value)
        event_dim = site["fn"].event_dim
        if event_dim:
            bad = bad.reshape(bad.shape[: bad.dim() - event_dim] + (-1,)).any(-1)
        mask = site["mask"]
        if isinstance(mask, torch.Tensor):
            try:
                bad, mask = torch.broadcast_tensors(bad, mask)
            except RuntimeError:  # a mask Pyro will refuse itself: leave it to Pyro
                continue
            bad = bad & mask
        elif mask is False:
            continue
        if bad.any():
            where = bad.nonzero()[:3].tolist()
            raise ValueError(
                f"The observed site '{name}' holds {int(bad.sum())} value(s) that are NaN or "
                f"infinite (at batch index {where}{' ...' if bad.sum() > 3 else ''}), so "
                "every bound on it would be NaN. Drop or impute those datapoints, or mask "
                "them out (poutine.mask, or pyro.sample(..., obs_mask=...))."
            )


def _check_declared_dims(trace: Trace, world: str, data_plate: str) -> None:
    """A site inside the data plate whose log-density has batch dims left of the
    data plate that no plate declares (a value of the wrong shape broadcast
    against the plate) would mix datapoints; refuse it, naming the site and the
    shapes. Undeclared dims right of the data plate lie within a datapoint."""
    for name, site in sample_sites(trace):
        frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None]
        if not any(f.name == data_plate for f in frames):
            continue
        batch_shape = tuple(site["fn"].batch_shape)
        value = site["value"]
        value_shape = tuple(value.shape) if torch.is_tensor(value) else ()
        event_dim = site["fn"].event_dim
        try:
            shape = tuple(torch.broadcast_shapes(
                batch_shape, value_shape[: max(0, len(value_shape) - event_dim)]
            ))
        except RuntimeError:
            raise ValueError(
                f"Site '{name}' of the {world}: its value of shape {value_shape} does not "
                f"broadcast with its distribution's batch shape {batch_shape} and event "
                f"shape {tuple(site['fn'].event_shape)}; give the value (or the "
                "distribution's parameters) the plate's shape."
            ) from None
        declared = {f.dim: f for f in frames}
        data_dim = next(f.dim for f in frames if f.name == data_plate)
        extra = [  # dims right of the data plate lie within a datapoint, as Pyro allows
            (axis - len(shape), size)
            for axis, size in enumerate(shape)
            if size != 1 and (axis - len(shape)) not in declared
            and axis - len(shape) < data_dim
        ]
        if extra:
            plates = ", ".join(f"'{f.name}' (dim {f.dim}, size {f.size})" for f in frames)
            raise ValueError(
                f"Site '{name}' of the {world} has batch shape {shape} (its distribution's "
                f"{batch_shape} broadcast with its value's {value_shape}), but its plates "
                f"{plates} declare only dims {sorted(declared)};"
                f" dims {[d for d, _ in extra]} of size "
                f"{[n for _, n in extra]} belong to no plate, so the datapoints cannot be "
                "told apart. Usually an argument or observed value has the wrong shape "
                "(e.g. x.unsqueeze(-1) against a plate of len(x)): reshape it, declare the "
                "dim with a pyro.plate, or move it into the event with .to_event()."
            )


def _vectorised(fn: Callable, num_samples: int, nesting: int) -> Callable:
    def wrapped(*args, **kwargs):
        with pyro.plate(PARTICLE_PLATE, num_samples, dim=-nesting - 1):
            return fn(*args, **kwargs)

    return wrapped


def vectorised_traces(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    num_samples: int,
    layout: Layout,
    fixed: Optional[Trace] = None,
) -> Tuple[Trace, Trace]:
    """``num_samples`` draws of the guide at once, and the model replayed on them
    (with ``fixed``, a trace of subsample sites, on those indices).

    The samples' plate is Pyro's own particle plate, so it never counts as a
    data plate (:func:`pyro_kl.terms.data_plates`).

    :returns: ``(model_trace, guide_trace)``.
    """
    nesting = layout.max_plate_nesting
    if fixed is not None:  # the indices of an earlier run's random subsample, in both
        guide, model = poutine.replay(guide, trace=fixed), poutine.replay(model, trace=fixed)
    guide_trace = poutine.trace(_vectorised(guide, num_samples, nesting)).get_trace(
        *args, **kwargs
    )
    replayed = poutine.replay(_vectorised(model, num_samples, nesting), trace=guide_trace)
    model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
    return model_trace, guide_trace


def log_weights(model_trace: Trace, guide_trace: Trace, layout: Layout) -> torch.Tensor:
    """``log model(x, z) - log guide(z | x)`` of every sample: shape ``(K, N)``
    when :attr:`Layout.per_datapoint`, else ``(K,)`` for the whole batch."""
    keep = layout.per_datapoint
    total = 0.0
    for _, site in counted_model_sites(model_trace, guide_trace):
        total = total + per_datapoint(site_log_prob(site), layout, keep_data=keep)
    for _, site in sample_sites(guide_trace):
        total = total - per_datapoint(site_log_prob(site), layout, keep_data=keep)
    num_samples = _num_samples(guide_trace, model_trace)
    shape = (num_samples, layout.num_data) if keep else (num_samples,)
    return torch.as_tensor(total).expand(shape)


def _num_samples(*traces: Trace) -> int:
    for trace in traces:
        for _, site in sample_sites(trace):
            for frame in site["cond_indep_stack"]:
                if is_particle_plate(frame.name):
                    return frame.size
    return 1


def data_dimensions(site: dict, layout: Layout) -> int:
    """How many numbers one datapoint holds at a site of a vectorised trace:
    its event size times the sizes of the plates other than the data plate."""
    rank = layout.max_plate_nesting + 1
    shape = tuple(site["fn"].batch_shape)
    shape = (1,) * (rank - len(shape)) + shape
    inner = [size for axis, size in enumerate(shape) if axis not in (0, rank + layout.data_dim)]
    return int(math.prod(inner)) * site["fn"].event_shape.numel()
