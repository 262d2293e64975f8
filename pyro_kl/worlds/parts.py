"""Inputs split into several data sites: which part each density reads.

A model often observes an input in pieces: ``x[labelled]`` and
``x[~labelled]`` in two plates, or ``xs[t]`` at each step of a chain. The
input as a whole is then no variable of either world; its parts are. Pyro's
provenance tracking follows a tensor, not its elements, so a density reading
``x[labelled]`` is seen reading all of ``x``. This module finds each input's
parts (the data sites holding a masked, indexed or sliced piece of it) and,
which part a density reads: where the plates do not already tell, and
provenance may be wrong (``x.new_zeros(d)`` reads no value of ``x``), the
part's entries are changed and the densities that change read it.
"""

from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set

import pyro
import pyro.poutine as poutine
import torch

from ..tracing import fork_rng


class Part(NamedTuple):
    """A data site holding a piece of an input.

    :ivar str site: the data site.
    :ivar torch.Tensor positions: boolean mask over the input's first
        dimension: the rows the site holds.
    """

    site: str
    positions: torch.Tensor


def _matches(value: torch.Tensor, piece: torch.Tensor) -> bool:
    return (
        piece.numel() > 0 and value.dtype == piece.dtype and value.shape == piece.shape
        and bool(torch.equal(value, piece))
    )


def _rows_equal_to(whole: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """Boolean per row of ``whole``: equal to ``row``."""
    return (whole == row).reshape(whole.shape[0], -1).all(-1)


def locate(value: torch.Tensor, whole: torch.Tensor, masks: Sequence[torch.Tensor]):
    """The rows of ``whole`` that ``value`` holds, as a boolean mask over
    ``whole``'s first dimension, or ``None``.

    Tried in turn: ``whole[m]`` and ``whole[~m]`` for each boolean mask ``m``
    (an argument of the call), one row ``whole[k]``, a run of rows
    ``whole[k:k + n]``; a row or run found at more than one place is ambiguous
    and not taken.

    Example::

        xs = torch.tensor([[0.5, 1.0], [2.0, 3.0], [4.0, 5.0]])
        locate(xs[1], xs, [])  # tensor([False,  True, False])
    """
    if not torch.is_tensor(value) or whole.dim() == 0 or value.numel() == 0:
        return None
    size = whole.shape[0]
    for mask in masks:
        if mask.shape == whole.shape[:1]:
            for rows in (mask, ~mask):
                if _matches(value, whole[rows]):
                    return rows.clone()
    if value.dtype != whole.dtype:
        return None
    found: List[torch.Tensor] = []
    if value.shape == whole.shape[1:]:
        for k in _rows_equal_to(whole, value).nonzero().flatten().tolist():
            rows = torch.zeros(size, dtype=torch.bool, device=whole.device)
            rows[k] = True
            found.append(rows)
    elif value.dim() == whole.dim() and 0 < value.shape[0] < size:
        n = value.shape[0]
        starts = _rows_equal_to(whole[: size - n + 1], value[0]).nonzero().flatten().tolist()
        for k in starts:
            if _matches(value, whole[k:k + n]):
                rows = torch.zeros(size, dtype=torch.bool, device=whole.device)
                rows[k:k + n] = True
                found.append(rows)
    return found[0] if len(found) == 1 else None


def find_parts(
    whole: torch.Tensor,
    sites: Mapping[str, torch.Tensor],
    masks: Sequence[torch.Tensor],
) -> List[Part]:
    """The data sites (name -> value, in trace order) holding a piece of ``whole``."""
    parts = []
    for name, value in sites.items():
        rows = locate(value, whole, masks)
        if rows is not None:
            parts.append(Part(name, rows))
    return parts


def distinct(parts: Sequence[Part]) -> List[Part]:
    """The first part of each set of rows: a piece held by two sites (a label
    and its copy) is read once, from the first."""
    result: List[Part] = []
    for part in parts:
        if not any(torch.equal(part.positions, kept.positions) for kept in result):
            result.append(part)
    return result


def _densities(trace) -> Dict[str, torch.Tensor]:
    return {
        name: site["fn"].log_prob(site["value"])
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
    }


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def changed_readers(
    fn: Callable, args: tuple, kwargs: dict, slot, rows: torch.Tensor
) -> Optional[Set[str]]:
    """The sample sites of ``fn`` whose density changes when the rows
    ``rows`` of input ``slot`` (an index into ``args`` or a key of ``kwargs``)
    change (by one), every sampled value held as in an unchanged run and the
    random state the same in both runs (dropout draws the same mask).
    ``None`` when the input is not floating point or ``fn`` fails on it.
    The random state outside is left as it was."""
    value = args[slot] if isinstance(slot, int) else kwargs[slot]
    if not torch.is_floating_point(value):
        return None
    changed = value.clone()
    changed[rows] = changed[rows] + 1.0
    new_args, new_kwargs = list(args), dict(kwargs)
    if isinstance(slot, int):
        new_args[slot] = changed
    else:
        new_kwargs[slot] = changed
    try:
        with fork_rng(), torch.no_grad(), pyro.validation_enabled(False):
            base = poutine.trace(fn).get_trace(*args, **kwargs)
            runs = []
            for run_args, run_kwargs in ((args, kwargs), (tuple(new_args), new_kwargs)):
                torch.manual_seed(0)
                replayed = poutine.trace(poutine.replay(fn, trace=base))
                runs.append(_densities(replayed.get_trace(*run_args, **run_kwargs)))
            before, after = runs
            return {
                name for name, density in after.items()
                if name in before and not _same(before[name], density)
            }
    except Exception:  # a function that cannot run on the changed input: no answer
        return None


class PartReader:
    """Which parts of a split input each density of one function reads.

    :param callable fn: the function (a guide or a model, with its inputs
        passing through provenance sites or not).
    :param tuple args: its positional inputs.
    :param dict kwargs: its keyword inputs.
    :param dict plates: site name -> its plates.
    """

    def __init__(self, fn: Callable, args: tuple, kwargs: dict, plates: Mapping[str, List[str]]):
        self.fn, self.args, self.kwargs, self.plates = fn, args, kwargs, plates
        self._changed: Dict[tuple, Optional[Set[str]]] = {}

    def _readers_of(self, slot, part: Part) -> Optional[Set[str]]:
        key = (slot, part.site)
        if key not in self._changed:
            self._changed[key] = changed_readers(
                self.fn, self.args, self.kwargs, slot, part.positions
            )
        return self._changed[key]

    def read_by(self, reader: str, slot, parts: Sequence[Part]) -> List[str]:
        """The parts that site ``reader`` reads, of an input it is seen to read
        as a whole: not its own rows (an observed site holding a part reads
        its own value); those sharing one of its plates, if any do; one site
        per set of rows; then those whose change changes its density, where
        that can be told (a floating-point input): provenance
        follows a tensor through shape-only operations such as
        ``x.new_zeros(d)``, which read no value."""
        own = [p.positions for p in parts if p.site == reader]
        candidates = [
            p for p in parts if not any(torch.equal(p.positions, rows) for rows in own)
        ]
        mine = set(self.plates.get(reader, []))
        shared = [p for p in candidates if mine & set(self.plates.get(p.site, []))]
        candidates = distinct(shared or candidates)
        results = [(p, self._readers_of(slot, p)) for p in candidates]
        if all(readers is not None for _, readers in results):
            candidates = [p for p, readers in results if reader in readers]
        return [p.site for p in candidates]


__all__ = ["Part", "PartReader", "changed_readers", "distinct", "find_parts", "locate"]
