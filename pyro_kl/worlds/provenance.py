"""Which variable depends on which, in both worlds: Pyro's provenance tracking.

Dependencies come from :func:`pyro.infer.inspect.get_model_relations`, run on
the guide and on the model with every tensor input first passing through an
observed site named after its datum, so that an edge from a datum means the
density really reads it. The *real world P* is the data (given by nature)
plus the guide; the *dream world Q* is the model. Besides the guide's own
edges, the real world holds nature's arrows:

- **nature's conditional** (``x → y``): nature draws a datum given another
  one; drawn into a label (a datum feeding ``classification``) from the other
  data in its plates, and into an observed site from the inputs the model
  reads without generating them (``q(x) = p(x)``);
- **fit to the data set** (``D → θ``): a global guide latent that reads no
  datum (a posterior over weights, ``θ ~ e(θ|D)``) still comes from the data
  set, through the parameters fit to it.

Boolean tensors (masks) and tensors that no site reads are not data. An
input the model observes in pieces is drawn as those pieces
(:mod:`~pyro_kl.worlds.parts`), and an autoguide's auxiliary latent is folded
into the sites it produces (:mod:`~pyro_kl.worlds.folding`).
"""

import inspect
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

import pyro
import pyro.distributions as dist
import torch

from .._pyro_compat import get_model_relations, site_is_deterministic
from ..objective import TracedPair
from ..terms import CLASSIFICATION, is_data_site
from .folding import auxiliary_latents, fold
from .parts import Part, PartReader, find_parts

_DATA_PREFIX = "_pyro_kl_data:"

NATURE = "nature"
"""Edge kind: nature's conditional between two data (``x → y``)."""
FIT = "fit"
"""Edge kind: a global posterior fit to the data set (``D → θ``)."""


class Relations(NamedTuple):
    """The relations of both worlds, in the format of
    :func:`pyro.infer.inspect.get_model_relations`.

    :ivar dict real: the real world: data nodes, guide latents, their edges
        and plates; ``"observed"`` lists the data.
    :ivar dict dream: the dream world: the model's graph.
    :ivar list nature_edges: ``(input, datum)`` pairs of nature's conditionals.
    :ivar list fit_edges: ``(datum, latent)`` pairs: a global latent fit to the data set.
    :ivar dict folded: an autoguide's auxiliary latent -> the model sites it
        produces, into which it is folded (:mod:`~pyro_kl.worlds.folding`).
    """

    real: dict
    dream: dict
    nature_edges: List[Tuple[str, str]]
    fit_edges: List[Tuple[str, str]]
    folded: Dict[str, List[str]]


def _signature_of(fn: Callable):
    """The signature of what ``fn`` runs: a :class:`torch.nn.Module`'s
    (a :class:`~pyro.nn.PyroModule`, an autoguide) ``forward``; else ``fn``'s
    own (bound methods and :func:`functools.partial` drop their bound
    arguments). ``None`` where there is none to read."""
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def _positional_names(fn: Callable) -> Tuple[List[str], Optional[str]]:
    signature = _signature_of(fn)
    if signature is None:
        return [], None
    parameters = list(signature.parameters.values())
    positional = [
        p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    varargs = next((p.name for p in parameters if p.kind == p.VAR_POSITIONAL), None)
    return positional, varargs


def _input_names(fns: Sequence[Callable], args: tuple, kwargs: dict) -> Dict[object, str]:
    """Slot (argument index or keyword) -> the parameter's name in the first
    signature of ``fns`` that names it (the guide's, then the model's: an
    autoguide takes ``*args``); else ``data[k]`` for the ``k``-th value
    caught by a ``*data`` parameter (the model's first), and ``input i``
    where no signature names the ``i``-th argument."""
    names: Dict[object, str] = {key: key for key in kwargs}
    signatures = [_positional_names(fn) for fn in fns]
    for i in range(len(args)):
        name = next((positional[i] for positional, _ in signatures if i < len(positional)), None)
        if name is None:
            varargs = next(  # the model's first: an autoguide's is a bare *args
                ((v, len(positional)) for positional, v in reversed(signatures) if v is not None),
                None,
            )
            name = f"{varargs[0]}[{i - varargs[1]}]" if varargs else f"input {i}"
        names[i] = name
    return names


def same_data(a: torch.Tensor, b) -> bool:
    """Whether tensor ``a`` holds the same values as ``b`` (any shape)."""
    if a is b:
        return True
    if not torch.is_tensor(b) or a.numel() != b.numel() or a.dtype != b.dtype:
        return False
    return bool(torch.equal(a.reshape(-1), b.reshape(-1)))


def _is_mask(value: torch.Tensor) -> bool:
    return value.dtype == torch.bool


def candidate_inputs(
    pair: TracedPair, guide: Callable, args: tuple, kwargs: dict, model: Optional[Callable] = None
) -> Dict[object, str]:
    """Slot -> data name for every tensor input that may be data (masks are
    not): the name of the observed (or deterministic) model site holding the
    same values, else the argument's name in the guide's signature (or the
    model's, an autoguide's being a bare ``*args``; ``input i`` where none
    names it), followed by ``" (argument)"`` where a site of that name holds
    other values (e.g. a part of it)."""
    observed = _data_values(pair)
    arg_names = _input_names([guide] if model is None else [guide, model], args, kwargs)
    sites = set(pair.model_trace.nodes) | set(pair.guide_trace.nodes)
    result: Dict[object, str] = {}
    for slot, value in _slots(args, kwargs):
        if not torch.is_tensor(value) or _is_mask(value):
            continue
        match = next((name for name, obs in observed.items() if same_data(value, obs)), None)
        if match is None:
            match = arg_names[slot]
            if match in sites:  # a site of that name holds other values (a part of it)
                match = f"{match} (argument)"
        result[slot] = match
    return result


def _slots(args: tuple, kwargs: dict) -> list:
    return [(i, a) for i, a in enumerate(args)] + list(kwargs.items())


def _data_values(pair: TracedPair) -> Dict[str, torch.Tensor]:
    """Data site -> value, in trace order: the model's observed sites and its
    deterministic records (of data, or of a part of them)."""
    return {
        name: site["value"]
        for name, site in pair.model_trace.nodes.items()
        if is_data_site(site) or (site["type"] == "sample" and site_is_deterministic(site))
    }


def split_inputs(
    pair: TracedPair, inputs: Mapping[object, str], args: tuple, kwargs: dict
) -> Dict[object, List[Part]]:
    """Slot -> its parts, for each input that no single data site holds but
    several (or one) hold pieces of (``x[labelled]``, ``xs[t]``): it is drawn
    as those parts, not as itself."""
    values = _data_values(pair)
    whole = set(inputs.values()) & set(values)
    pieces = {name: value for name, value in values.items() if name not in whole}
    masks = [v for _, v in _slots(args, kwargs) if torch.is_tensor(v) and _is_mask(v)]
    result: Dict[object, List[Part]] = {}
    for slot, value in _slots(args, kwargs):
        if slot in inputs and inputs[slot] not in values:
            parts = find_parts(value, pieces, masks)
            if parts:
                result[slot] = parts
    return result


def reading_named_data(fn: Callable, inputs: Mapping[object, str]) -> Callable:
    """``fn``, run on inputs that carry provenance: each tensor input first
    passes through an observed sample site named after its datum, which
    :func:`~pyro.infer.inspect.get_model_relations` tracks like any site."""

    def fn_with_data(*args, **kwargs):
        args = list(args)
        for slot, name in inputs.items():
            value = args[slot] if isinstance(slot, int) else kwargs[slot]
            nature = dist.ImproperUniform(dist.constraints.real, (), value.shape)
            tracked = pyro.sample(_DATA_PREFIX + name, nature, obs=value)
            if isinstance(slot, int):
                args[slot] = tracked
            else:
                kwargs[slot] = tracked
        return fn(*args, **kwargs)

    return fn_with_data


def _is_wrapper(name: str) -> bool:
    return name.startswith(_DATA_PREFIX)


def _unprefix(name: str) -> str:
    return name[len(_DATA_PREFIX):] if _is_wrapper(name) else name


def _readers(relations: dict, datum: str) -> List[str]:
    """The sites of ``relations`` whose density reads input ``datum``, directly
    or through the site of that name (a ``pyro.deterministic`` record of it,
    or the observed site holding it)."""
    keys = {_DATA_PREFIX + datum, datum}
    return [
        name for name, ups in relations["sample_sample"].items()
        if keys & set(ups) and not _is_wrapper(name) and name != datum
    ]


def _without_wrappers(relations: dict, keep_deterministic: Callable[[str], bool]) -> dict:
    """The relations with the input sites removed, and the deterministic sites
    that ``keep_deterministic`` rejects."""
    dropped = {
        name for name, d in relations["sample_dist"].items()
        if _is_wrapper(name) or (d == "Deterministic" and not keep_deterministic(name))
    }
    upstream = relations["sample_sample"]

    def through(ups: List[str], seen: Set[str]) -> List[str]:
        """``ups`` with each dropped deterministic site replaced by what it reads."""
        result: List[str] = []
        for up in ups:
            if up not in dropped:
                result.append(up)
            elif not _is_wrapper(up) and up not in seen:
                result.extend(through(upstream.get(up, []), seen | {up}))
        return list(dict.fromkeys(result))

    return {
        "sample_sample": {
            name: through(ups, {name})
            for name, ups in upstream.items() if name not in dropped
        },
        "sample_param": {
            name: ps for name, ps in relations["sample_param"].items() if name not in dropped
        },
        "sample_dist": {
            name: d for name, d in relations["sample_dist"].items() if name not in dropped
        },
        "param_constraint": relations["param_constraint"],
        "plate_sample": {
            plate: [n for n in names if n not in dropped]
            for plate, names in relations["plate_sample"].items()
            if any(n not in dropped for n in names)
        },
        "observed": [n for n in relations["observed"] if n not in dropped],
    }


def plates_of(plate_sample: Mapping[str, List[str]]) -> Dict[str, List[str]]:
    """Site name -> the plates it lies in, from a ``plate_sample`` map."""
    result: Dict[str, List[str]] = {}
    for plate, names in plate_sample.items():
        for name in names:
            result.setdefault(name, []).append(plate)
    return result


def _common(plate_lists: List[List[str]]) -> List[str]:
    if not plate_lists:
        return []
    return [p for p in plate_lists[0] if all(p in r for r in plate_lists)]


def _read_parts(
    relations: dict,
    split: Mapping[object, List[Part]],
    inputs: Mapping[object, str],
    reader: PartReader,
    as_name: Callable[[str], str],
) -> dict:
    """``relations`` with each read of a split input replaced by reads of the
    parts the reader reads (named by ``as_name``)."""
    slot_of = {_DATA_PREFIX + inputs[slot]: slot for slot in split}
    sample_sample = {}
    for name, ups in relations["sample_sample"].items():
        resolved: List[str] = []
        for up in ups:
            if up in slot_of and not _is_wrapper(name):
                slot = slot_of[up]
                resolved.extend(as_name(site) for site in reader.read_by(name, slot, split[slot]))
            elif up not in slot_of:
                resolved.append(up)
        sample_sample[name] = [up for up in dict.fromkeys(resolved) if up != name]
    return {**relations, "sample_sample": sample_sample}


def world_relations(
    pair: TracedPair,
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    *,
    render_deterministic: bool = False,
) -> Relations:
    """The relations of both worlds of a traced (model, guide) pair.

    :param TracedPair pair: the traces and every site's term.
    :param bool render_deterministic: keep ``pyro.deterministic`` sites; those
        recording nature's inputs (``x = pyro.deterministic("x", x)``) are
        kept either way.
    :rtype: Relations
    """
    inputs = candidate_inputs(pair, guide, args, kwargs, model)
    split = split_inputs(pair, inputs, args, kwargs)
    guide_rel, model_rel = _both_relations(model, guide, args, kwargs, inputs, split,
                                           render_deterministic)
    model_sites = pair.model_trace.nodes
    observed = [name for name, site in model_sites.items() if is_data_site(site)]
    split_names = {inputs[slot] for slot in split}
    input_names = [n for n in dict.fromkeys(inputs.values()) if n not in split_names]
    guide_readers = {name: _readers(guide_rel, name) for name in input_names}
    model_readers = {name: _readers(model_rel, name) for name in input_names}
    # an input is data when it is an observed site's value, a deterministic
    # record of it in the model, or some density of either world reads it
    data = [
        name for name in input_names
        if name in observed or name in model_sites or guide_readers[name] or model_readers[name]
    ]
    data += [name for name in observed if name not in data]
    data_set = set(data)

    dream = _without_wrappers(model_rel, lambda name: render_deterministic or name in data_set)
    wrapped = {_DATA_PREFIX + name for name in inputs.values()}
    latents = [name for name in guide_rel["sample_sample"] if name not in wrapped]
    sample_sample = {
        name: [_unprefix(up) for up in guide_rel["sample_sample"][name] if _unprefix(up) != name
               and (not _is_wrapper(up) or _unprefix(up) in data_set)]
        for name in latents
    }
    plate_sample: Dict[str, List[str]] = {
        plate: [n for n in names if n not in wrapped]
        for plate, names in guide_rel["plate_sample"].items()
    }
    model_plates = plates_of(model_rel["plate_sample"])
    guide_plates = plates_of(plate_sample)
    data_plates = _plates_of_data(data, model_plates, guide_plates, guide_readers, model_readers)
    for name, plates in data_plates.items():
        for plate in plates:
            plate_sample.setdefault(plate, []).insert(0, name)

    nature = _nature_edges(pair, data, observed, model_readers, data_plates)
    fit = _dataset_fit_edges(latents, sample_sample, guide_plates, data, observed, data_plates)
    real = {
        "sample_sample": {**{name: [] for name in data}, **sample_sample},
        "sample_param": {
            _unprefix(k): v for k, v in guide_rel["sample_param"].items() if k not in wrapped
        },
        "sample_dist": {
            **{name: "data" for name in data},
            **{name: guide_rel["sample_dist"][name] for name in latents},
        },
        "param_constraint": guide_rel["param_constraint"],
        "plate_sample": {plate: names for plate, names in plate_sample.items() if names},
        "observed": data,
    }
    produced = auxiliary_latents(real, model_sites)
    real, fit = fold(real, fit, produced)
    return Relations(real, dream, nature, fit, produced)


def _both_relations(model, guide, args: tuple, kwargs: dict, inputs, split,
                    render_deterministic: bool):
    """Pyro's relations of the guide and of the model, inputs read as named data
    sites, and a split input's readers sent to the parts they read."""
    guide_rel = get_model_relations(
        reading_named_data(guide, inputs), args, kwargs, include_deterministic=render_deterministic
    )
    model_rel = get_model_relations(
        reading_named_data(model, inputs), args, kwargs, include_deterministic=True
    )
    if split:  # a density reading a split input reads some of its parts
        model_plates = plates_of(model_rel["plate_sample"])
        guide_plates = {**model_plates, **plates_of(guide_rel["plate_sample"])}
        guide_rel = _read_parts(
            guide_rel, split, inputs, PartReader(guide, args, kwargs, guide_plates),
            lambda site: _DATA_PREFIX + site,
        )
        model_rel = _read_parts(
            model_rel, split, inputs, PartReader(model, args, kwargs, model_plates), str
        )
    return guide_rel, model_rel


def _plates_of_data(data, model_plates, guide_plates, guide_readers, model_readers):
    """Each datum's plates: the model's where it records the datum, else those its
    readers in both worlds share."""
    data_plates: Dict[str, List[str]] = {}
    for name in data:
        if name in model_plates:
            data_plates[name] = model_plates[name]
        else:  # a guide input the model does not record: the plates of its readers
            readers = [guide_plates.get(n, []) for n in guide_readers.get(name, [])]
            readers += [model_plates.get(n, []) for n in model_readers.get(name, [])]
            data_plates[name] = _common(readers)
    return data_plates


def _nature_edges(
    pair: TracedPair,
    data: List[str],
    observed: List[str],
    model_readers: Mapping[str, List[str]],
    data_plates: Mapping[str, List[str]],
) -> List[Tuple[str, str]]:
    """Nature's conditionals: inputs the model does not generate into the
    observed sites that read them, and into those in their plates (the guide
    reads ``x``, the model observes ``y`` beside it: nature drew ``y`` given
    ``x``, as the essay draws it); the other data in a label's plates into
    the label."""
    edges: List[Tuple[str, str]] = []
    for source in data:
        if source in observed:
            continue  # the model generates it: its readers are the model's own story
        for target in model_readers.get(source, []):
            if target in observed:
                edges.append((source, target))
        plates = set(data_plates.get(source, []))
        for target in observed:
            mine = set(data_plates.get(target, []))
            if mine and mine <= plates:
                edges.append((source, target))
    labels = [n for n in observed if pair.assignment.model.get(n) == CLASSIFICATION]
    for label in labels:
        for source in data:
            if source in labels or source == label:
                continue
            if set(data_plates.get(label, [])) <= set(data_plates.get(source, [])):
                edges.append((source, label))
    return list(dict.fromkeys(edges))


def _dataset_fit_edges(
    latents: List[str],
    sample_sample: Mapping[str, List[str]],
    guide_plates: Mapping[str, List[str]],
    data: List[str],
    observed: List[str],
    data_plates: Mapping[str, List[str]],
) -> List[Tuple[str, str]]:
    """The data set into every global guide latent that reads neither a datum
    nor a latent already fit to the data set (an autoguide's sites read its
    joint latent): the data of the model's observed sites and those sharing
    their plates."""
    holding: Set[str] = {p for name in observed for p in data_plates.get(name, [])}
    data_set = [
        name for name in data
        if name in observed or set(data_plates.get(name, [])) & holding
    ]
    edges: List[Tuple[str, str]] = []
    fit: Set[str] = set()
    for latent in latents:
        if set(guide_plates.get(latent, [])) & holding:
            continue  # a local latent, one per datum
        if any(up in data or up in fit for up in sample_sample[latent]):
            continue  # it reads the data, or a latent already fit to them
        fit.add(latent)
        edges.extend((datum, latent) for datum in data_set)
    return edges


__all__ = [
    "FIT",
    "NATURE",
    "Relations",
    "candidate_inputs",
    "plates_of",
    "reading_named_data",
    "same_data",
    "split_inputs",
    "world_relations",
]
