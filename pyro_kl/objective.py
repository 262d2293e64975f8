"""The objective a (model, guide) pair derives: its terms, their sites and weights.

``I[P;Q] = KL(real world P || dream world Q)`` splits into one named term per
kind of site (see :mod:`pyro_kl.terms`). Pyro's :class:`~pyro.infer.Trace_ELBO`
loss is ``I[P;Q] + H``, with ``H`` the entropy of nature's data, so that

    ``I[P;Q] = D + R + ... + const``,  with ``const = -H``,

which no parameter changes. An ELBO weighs each term; with any weight other
than 1 the loss is a weighted objective (a Lagrangian) ``L = D + β·R + ...``,
which is ``I[P;Q] - const`` only at unit weights. This module traces a pair
once, sends every site to its term and writes the objective as data, as plain
text and as LaTeX. The weights come from one value, a
:class:`~pyro_kl.weighting.Weighting` (:func:`elbo_weighting` reads it from
any ELBO that holds one, such as a :class:`~pyro_kl.WeightedELBO`; any other
Pyro ELBO means unit weights), so the text never depends on the training class.
"""

from typing import Callable, Dict, Mapping, NamedTuple, Optional, Tuple

from pyro.infer import ELBO

from .terms import (
    JOINT,
    TermAssignment,
    assign_terms,
    factorise_joint,
    in_writing_order,
    is_data_site,
    is_enumerated,
    split_factorised,
    term_symbol,
)
from .tracing import TracedPair, trace_once
from .weighting import Controller, Weighting, describe_weight, joint_weight, weight_of


class Objective(NamedTuple):
    """The objective of one (model, guide) pair under an ELBO's weights.

    With every weight 1 it is ``I[P;Q] = D + R + ... + const``, where the real
    world P is the data plus the guide, the dream world Q the model, and
    ``const = -H`` is minus the entropy of nature's data (Pyro's
    :class:`~pyro.infer.Trace_ELBO` loss is ``I[P;Q] + H``). With any other
    weight it is the weighted objective ``L = sum_t w_t T_t`` (a Lagrangian),
    and :attr:`text` says how it relates to ``I[P;Q]``.

    :ivar dict sites_by_term: term name -> the names of the sites feeding it
        (model sites first, in trace order), in writing order (see
        :data:`~pyro_kl.terms.TERMS`).
    :ivar dict weights: term name -> its weight (a float; schedules evaluated
        at the ELBO's step, controllers at the value they gave at its last
        step; ``None`` for a controller that has not run yet, and for the
        ``joint`` term of a guide whose joint density spans terms of different
        weights).
    :ivar dict weight_notes: term name -> what its weight is, for weights that
        change during training, e.g. ``"warm-up 0→1 over 300 steps, now 0.33"``.
    :ivar dict symbols: term name -> the letter it is written with (``D``,
        ``R``, ``C``, ``S``; ``F`` for factors, ``J`` for a joint guide
        density; other terms by their name).
    :ivar tuple summed_out: the sites summed out exactly by enumeration
        (``infer={"enumerate": "parallel"}`` or ``"sequential"``), not sampled.
    :ivar bool unit_weights: whether every weight is 1, so that the objective
        is ``I[P;Q]`` up to ``const``.
    :ivar str equation: the objective on one line, e.g. ``"I[P;Q] = D + R +
        const"`` or ``"L = D + 0.37·(R + S)"``.
    :ivar str relation: one line relating the equation to ``I[P;Q]`` (what
        ``const`` is; or, for a weighted objective, the identity at unit weights).
    :ivar str text: the equation, the relation, then one
        line per term with its weight and sites.
    :ivar str latex: the equation in LaTeX; a notebook shows the objective as
        a formula (:meth:`_repr_latex_`).
    """

    sites_by_term: Dict[str, Tuple[str, ...]]
    weights: Dict[str, Optional[float]]
    weight_notes: Dict[str, str]
    symbols: Dict[str, str]
    summed_out: Tuple[str, ...]
    unit_weights: bool
    equation: str
    relation: str
    text: str
    latex: str

    def _repr_latex_(self) -> str:
        return f"${self.latex}$"

    def __str__(self) -> str:
        return self.text


class ELBOWeighting(NamedTuple):
    """What an ELBO says about the terms: its weighting, its step and the weights
    it used last.

    :ivar Weighting weighting: the weights (floats, schedules, controllers) and
        the ``site_terms`` map.
    :ivar int step: the step at which schedules are evaluated.
    :ivar dict last_weights: term name -> the weight used at the last training
        call (where controllers' values are read).
    """

    weighting: Weighting
    step: int
    last_weights: Mapping[str, float] = {}


def elbo_weighting(elbo: Optional[ELBO]) -> ELBOWeighting:
    """The weighting of an ELBO: the :class:`~pyro_kl.weighting.Weighting` of an ELBO
    that holds one (its ``weighting`` attribute, as every pyro_kl ELBO has),
    unit weights for ``None`` or any other Pyro ELBO.

    :raises ValueError: if ``elbo`` is neither ``None`` nor a Pyro ELBO.
    """
    if elbo is None:
        return ELBOWeighting(Weighting(), 0)
    weighting = getattr(elbo, "weighting", None)
    if isinstance(weighting, Weighting):
        return ELBOWeighting(weighting, elbo.step, elbo.last_weights)
    if isinstance(elbo, ELBO):
        return ELBOWeighting(Weighting(), 0)
    raise ValueError(
        f"elbo must be a pyro.infer.ELBO (e.g. pyro_kl.RateDistortionELBO(beta=0.5)) "
        f"or None for unit weights, got {type(elbo).__name__}."
    )


def _check_args(model_args, model_kwargs) -> Tuple[tuple, dict]:
    if not isinstance(model_args, tuple):
        raise ValueError(
            f"model_args must be a tuple of positional arguments, got "
            f"{type(model_args).__name__}; pass e.g. model_args=(x,)."
        )
    if model_kwargs is None:
        model_kwargs = {}
    if not isinstance(model_kwargs, dict):
        raise ValueError(
            f"model_kwargs must be a dict of keyword arguments or None, got "
            f"{type(model_kwargs).__name__}."
        )
    return model_args, model_kwargs


def trace_pair(
    model: Callable,
    guide: Callable,
    model_args: tuple = (),
    model_kwargs: Optional[dict] = None,
    *,
    elbo: Optional[ELBO] = None,
) -> TracedPair:
    """Trace the guide, replay the model on it and send every site to its term.

    Runs without gradients and leaves the global random state untouched.

    :param callable model: the model (the dream world Q).
    :param callable guide: the guide (with the data, the real world P).
    :param tuple model_args: positional arguments of both.
    :param dict model_kwargs: keyword arguments of both.
    :param elbo: an ELBO whose ``site_terms`` map (if any) overrides the rule.
    :returns: the traces and the :class:`~pyro_kl.terms.TermAssignment`.
    :rtype: TracedPair

    Example::

        pair = trace_pair(vae.model, vae.guide, (x,))
        pair.assignment.model  # {'z': 'rate', 'x': 'distortion'}
    """
    model_args, model_kwargs = _check_args(model_args, model_kwargs)
    site_terms = elbo_weighting(elbo).weighting.site_terms
    model_trace, guide_trace = trace_once(model, guide, model_args, model_kwargs)
    assignment = factorise_joint(assign_terms(model_trace, guide_trace, site_terms), guide,
                                 guide_trace)
    if assignment.factorised:  # the latents take their shares, as in the ELBO's pairs
        guide_trace.compute_score_parts()
        split_factorised(assignment, guide, guide_trace)
    return TracedPair(model_trace, guide_trace, assignment)


def summed_out_sites(pair: TracedPair) -> Tuple[str, ...]:
    """The latent sites the pair sums out exactly: enumerated in the guide
    (guide-side enumeration, :func:`~pyro_kl.terms.is_enumerated`), or in the
    model and absent from the guide (model-side enumeration, the assignment's
    ``summed_out``). In trace order, guide sites first."""
    names = [
        name for name, site in pair.guide_trace.nodes.items()
        if site["type"] == "sample" and is_enumerated(site)
    ]
    names += [name for name in pair.assignment.summed_out if name not in names]
    return tuple(names)


def _has_data(pair: TracedPair) -> bool:
    return any(is_data_site(site) for site in pair.model_trace.nodes.values())


def _term_weights(
    weighting: ELBOWeighting, sites_by_term: Mapping[str, Tuple[str, ...]],
    assignment: TermAssignment,
) -> Dict[str, Optional[float]]:
    evaluated: Dict[str, Optional[float]] = dict(weighting.weighting.at(weighting.step))
    for term, weight in weighting.weighting.weights.items():
        if isinstance(weight, Controller):  # its value depends on the terms: the last one used
            evaluated[term] = weighting.last_weights.get(term)
    weights: Dict[str, Optional[float]] = {
        term: weight_of(term, evaluated) for term in sites_by_term if term != JOINT
    }
    if JOINT in sites_by_term:
        weights[JOINT] = joint_weight(assignment, evaluated)
    return weights


def _weight_notes(weighting: ELBOWeighting, terms) -> Dict[str, str]:
    notes = {}
    weights = weighting.weighting.weights
    for term in terms:
        if term in weights:
            weight = weights[term]
            shared = [t for t, w in weights.items() if w is weight]  # one controller
            note = describe_weight(weight, weighting.step, terms=shared)
            if note:
                notes[term] = note
    return notes


def _format_weight(weight: Optional[float]) -> str:
    return "?" if weight is None else f"{weight:.3g}"


def _grouped(terms, weights) -> list:
    """``[(weight, [term, ...]), ...]``, terms of equal weight together, in order."""
    groups: Dict[object, list] = {}
    for term in terms:
        groups.setdefault(weights[term], []).append(term)
    return list(groups.items())


def _sum(groups, symbol, *, times: str, group: Callable[[str], str]) -> str:
    parts = []
    for weight, members in groups:
        inner = " + ".join(symbol(t) for t in members)
        if weight == 1.0:
            parts.append(inner)
        else:
            inner = group(inner) if len(members) > 1 else inner
            parts.append(f"{_format_weight(weight)}{times}{inner}")
    return " + ".join(parts) if parts else "0"


def _latex_symbol(term: str, symbols: Mapping[str, str]) -> str:
    symbol = symbols[term]
    if symbol == term and len(term) > 1:
        return r"\mathrm{" + term.replace("_", r"\_") + "}"
    return symbol


CONST_MEANING = "const = −H: minus the entropy of nature's data, which no parameter changes"
"""What ``const`` stands for in a derived objective that names no entropy."""

DATA_ENTROPY = "data_entropy"
"""The attribute with which a model (or the object whose method it is, e.g. a
:class:`~pyro_kl.recipes.Recipe`) names the entropy in its constant, e.g.
``"H[Y|X]"`` for supervised learning, ``"H[D]"`` for Bayesian inference."""


def data_entropy_of(model: Callable) -> Optional[str]:
    """The entropy ``model`` says its constant is (its ``data_entropy``, or its
    owner's for a bound method), or ``None``."""
    return getattr(model, DATA_ENTROPY, None) or getattr(
        getattr(model, "__self__", None), DATA_ENTROPY, None
    )


def const_meaning(entropy: Optional[str] = None) -> str:
    """The line saying what ``const`` is: ``const = −H[Y|X]: ...``."""
    if entropy is None:
        return CONST_MEANING
    return f"const = −{entropy}: minus nature's entropy {entropy}, which no parameter changes"


def objective_from(
    pair: TracedPair, elbo: Optional[ELBO] = None, *, entropy: Optional[str] = None
) -> Objective:
    """The :class:`Objective` of a traced pair under an ELBO's weights.

    :param TracedPair pair: the traces and every site's term (:func:`trace_pair`).
    :param elbo: a :class:`~pyro_kl.WeightedELBO` whose ``weights`` (schedules
        evaluated at its ``step``) weigh the terms; terms it does not weigh,
        and every term when it is ``None`` or a plain Pyro ELBO, have weight 1.
    :param str entropy: the entropy the constant is minus (``"H[Y|X]"``,
        ``"H[D]"``, ...); ``None``: nature's data, ``H``.
    :rtype: Objective
    """
    weighting = elbo_weighting(elbo)
    sites = pair.assignment.sites_by_term()
    sites = {term: sites[term] for term in in_writing_order(sites)}
    weights = _term_weights(weighting, sites, pair.assignment)
    notes = _weight_notes(weighting, sites)
    symbols = {term: term_symbol(term) for term in sites}
    summed_out = summed_out_sites(pair)
    unit = all(w == 1.0 for w in weights.values())
    const = _has_data(pair)

    def plain(groups):
        return _sum(groups, symbols.__getitem__, times="·", group=lambda s: f"({s})")

    def latex(groups):
        return _sum(
            groups,
            lambda t: _latex_symbol(t, symbols),
            times=r"\,",
            group=lambda s: rf"\left({s}\right)",
        )

    groups = _grouped(sites, weights)
    unit_groups = [(1.0, list(sites))]
    if unit:
        equation = f"I[P;Q] = {plain(groups)}" + (" + const" if const else "")
        latex_text = f"I[P;Q] = {latex(groups)}" + (r" + \mathrm{const}" if const else "")
        relation = const_meaning(entropy) if const else "no data: I[P;Q] is exactly this sum"
    else:
        equation = f"L = {plain(groups)}"
        latex_text = rf"\mathcal{{L}} = {latex(groups)}"
        identity = f"I[P;Q] = {plain(unit_groups)}" + (" + const" if const else "")
        relation = (
            f"weighted (a Lagrangian), not I[P;Q]; with every weight 1 it is {identity}"
            + (f", const = −{entropy or 'H[data]'}" if const else "")
        )
    width = max((len(t) for t in sites), default=0)
    lines = [equation, f"  {relation}"]
    for term, names in sites.items():
        weight = _format_weight(weights[term])
        if term in notes:
            weight = f"{weight} ({notes[term]})"
        lines.append(
            f"  {symbols[term]:>2} = {term:<{width}}  weight {weight:<6}  sites: {', '.join(names)}"
        )
    if summed_out:
        lines.append(f"  summed out exactly (enumerated, not sampled): {', '.join(summed_out)}")
    return Objective(
        sites, weights, notes, symbols, summed_out, unit, equation, relation,
        "\n".join(lines), latex_text,
    )


def derive_objective(
    model: Callable,
    guide: Callable,
    model_args: tuple = (),
    model_kwargs: Optional[dict] = None,
    elbo: Optional[ELBO] = None,
) -> Objective:
    r"""Derive the objective of a model and guide: ``I[P;Q] = KL(real world P ||
    dream world Q)`` split into terms, under an ELBO's weights.

    The real world P is the data plus the guide, the dream world Q is the
    model. Every sample site feeds one term (observed sites ``distortion``,
    local latents ``rate``, global latents ``complexity``, tagged sites their
    tag, see :mod:`pyro_kl.terms`); the ELBO weighs each term. At unit
    weights the result reads ``I[P;Q] = D + R + const`` with ``const = -H``,
    minus the entropy of nature's data; otherwise it is the weighted objective
    ``L = D + β·R``. The pair is traced once, without gradients and without
    touching the random state. A model that names its entropy (a
    ``data_entropy`` attribute, as every :class:`~pyro_kl.recipes.Recipe`
    has, e.g. ``"H[Y|X]"``) gets ``const = −H[Y|X]`` in the text.

    :param callable model: the model, the dream world Q.
    :param callable guide: the guide; with the data, the real world P.
    :param tuple model_args: positional arguments of model and guide.
    :param dict model_kwargs: keyword arguments of model and guide.
    :param elbo: a :class:`~pyro_kl.WeightedELBO` (or preset) whose weights
        and ``site_terms`` map are used; ``None`` or a plain Pyro ELBO means
        the default rule with unit weights.
    :returns: terms with their sites and weights, as text and as LaTeX.
    :rtype: Objective
    :raises ValueError: for arguments of the wrong type, or a pair whose
        sites cannot be sent to terms (see :func:`~pyro_kl.terms.assign_terms`).

    Example::

        derive_objective(vae.model, vae.guide, (x,)).equation  # 'I[P;Q] = D + R + const'
        objective = derive_objective(vae.model, vae.guide, (x,), elbo=RateDistortionELBO(0.37))
        objective.equation       # 'L = D + 0.37·R'
        objective.latex          # '\\mathcal{L} = D + 0.37\\,R'; a notebook shows the formula
        objective.sites_by_term  # {'distortion': ('x',), 'rate': ('z',)}
    """
    pair = trace_pair(model, guide, model_args, model_kwargs, elbo=elbo)
    return objective_from(pair, elbo, entropy=data_entropy_of(model))


__all__ = [
    "CONST_MEANING",
    "DATA_ENTROPY",
    "ELBOWeighting",
    "Objective",
    "TracedPair",
    "derive_objective",
    "const_meaning",
    "data_entropy_of",
    "elbo_weighting",
    "objective_from",
    "summed_out_sites",
    "trace_pair",
]
