"""The objective a (model, guide) pair derives: its terms, their sites and weights.

``I[P;Q] = KL(real world P || dream world Q)`` splits into one named term per
kind of site (see :mod:`pyro_kl.terms`); an ELBO weighs each term. This module
traces the pair once, sends every site to its term and writes the weighted sum
as data, as plain text and as LaTeX.
"""

from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

import pyro.poutine as poutine
import torch
from pyro.infer import ELBO
from pyro.poutine import Trace

from ..terms import (
    JOINT,
    ModelTags,
    TermAssignment,
    assign_terms,
    in_writing_order,
    term_symbol,
)
from ..weighting import joint_weight, weights_at


class Objective(NamedTuple):
    """The objective ``I[P;Q] = sum_t w_t T_t + const`` of one (model, guide) pair.

    The real world P is the data plus the guide, the dream world Q the model;
    ``const`` is the entropy of the data, which no parameter changes.

    :ivar dict terms: term name -> the names of the sites feeding it (model
        sites first, in trace order), in writing order (see :data:`~pyro_kl.terms.TERMS`).
    :ivar dict weights: term name -> its weight (a float; schedules evaluated
        at the ELBO's step; ``None`` for the ``joint`` term of a guide whose
        joint density spans terms of different weights).
    :ivar dict symbols: term name -> the letter it is written with (``D``,
        ``R``, ``C``, ``S``; ``F`` for factors, ``J`` for a joint guide
        density; other terms by their name).
    :ivar str equation: the weighted sum on one line, e.g.
        ``"I[P;Q] = D + 0.37·(R + S) + const"``.
    :ivar str text: the equation followed by one line per term with its weight
        and sites.
    :ivar str latex: the equation in LaTeX (for ``IPython.display.Math``).
    """

    terms: Dict[str, Tuple[str, ...]]
    weights: Dict[str, Optional[float]]
    symbols: Dict[str, str]
    equation: str
    text: str
    latex: str

    def __str__(self) -> str:
        return self.text


class TracedPair(NamedTuple):
    """One model trace replayed on one guide trace, with every site's term."""

    model_trace: Trace
    guide_trace: Trace
    assignment: TermAssignment


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


def _check_elbo(elbo) -> None:
    if elbo is not None and not isinstance(elbo, ELBO):
        raise ValueError(
            f"elbo must be a pyro.infer.ELBO (e.g. pyro_kl.RateDistortionELBO(beta=0.5)) "
            f"or None for unit weights, got {type(elbo).__name__}."
        )


def trace_pair(
    model: Callable, guide: Callable, model_args: tuple = (), model_kwargs=None, *, elbo=None
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
    """
    model_args, model_kwargs = _check_args(model_args, model_kwargs)
    _check_elbo(elbo)
    tags = ModelTags()
    with torch.random.fork_rng(), torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(*model_args, **model_kwargs)
        replayed = poutine.replay(tags(model), trace=guide_trace)
        model_trace = poutine.trace(replayed).get_trace(*model_args, **model_kwargs)
    tags.restore(model_trace)
    assignment = assign_terms(model_trace, guide_trace, getattr(elbo, "site_terms", None))
    return TracedPair(model_trace, guide_trace, assignment)


def _term_weights(
    elbo, sites_by_term: Mapping[str, Tuple[str, ...]], assignment: TermAssignment
) -> Dict[str, Optional[float]]:
    raw = getattr(elbo, "weights", None) or {}
    evaluated = weights_at(raw, getattr(elbo, "step", 0))
    weights: Dict[str, Optional[float]] = {
        term: evaluated.get(term, 1.0) for term in sites_by_term if term != JOINT
    }
    if JOINT in sites_by_term:
        weights[JOINT] = joint_weight(assignment, evaluated)
    return weights


def _ordered(sites_by_term: Mapping[str, Tuple[str, ...]]) -> Dict[str, Tuple[str, ...]]:
    return {term: sites_by_term[term] for term in in_writing_order(sites_by_term)}


def _number(weight: Optional[float]) -> str:
    return "?" if weight is None else f"{weight:g}"


def _grouped(terms, weights) -> list:
    """``[(weight, [term, ...]), ...]``, terms of equal weight together, in order."""
    groups: Dict[Any, list] = {}
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
            parts.append(f"{_number(weight)}{times}{group(inner) if len(members) > 1 else inner}")
    return " + ".join(parts) if parts else "0"


def _latex_symbol(term: str, symbols: Mapping[str, str]) -> str:
    symbol = symbols[term]
    if symbol == term and len(term) > 1:
        return r"\mathrm{" + term.replace("_", r"\_") + "}"
    return symbol


def objective_from(
    assignment: TermAssignment, elbo: Optional[ELBO] = None
) -> Objective:
    """The :class:`Objective` of a term assignment under an ELBO's weights.

    :param ~pyro_kl.terms.TermAssignment assignment: every site's term.
    :param elbo: the ELBO whose ``weights`` (schedules evaluated at its
        ``step``) weigh the terms; terms it does not weigh, and every term
        when it is ``None`` or a plain Pyro ELBO, have weight 1.
    :rtype: Objective
    """
    terms = _ordered(assignment.sites_by_term())
    weights = _term_weights(elbo, terms, assignment)
    symbols = {term: term_symbol(term) for term in terms}
    groups = _grouped(terms, weights)
    body = _sum(groups, symbols.__getitem__, times="·", group=lambda s: f"({s})")
    equation = f"I[P;Q] = {body} + const"
    latex_body = _sum(
        groups,
        lambda t: _latex_symbol(t, symbols),
        times=r"\,",
        group=lambda s: rf"\left({s}\right)",
    )
    latex = rf"I[P;Q] = {latex_body} + \mathrm{{const}}"
    width = max((len(t) for t in terms), default=0)
    lines = [equation]
    for term, sites in terms.items():
        lines.append(
            f"  {symbols[term]:>2} = {term:<{width}}  weight {_number(weights[term]):<6}"
            f"sites: {', '.join(sites)}"
        )
    return Objective(terms, weights, symbols, equation, "\n".join(lines), latex)


def derive_objective(
    model: Callable,
    guide: Callable,
    model_args: tuple = (),
    model_kwargs: Optional[dict] = None,
    elbo: Optional[ELBO] = None,
) -> Objective:
    r"""Derive ``I[P;Q] = KL(real world P || dream world Q)`` for a model and guide.

    The real world P is the data plus the guide, the dream world Q is the
    model. Every sample site feeds one term (observed sites ``distortion``,
    local latents ``rate``, global latents ``complexity``, tagged sites their
    tag, see :mod:`pyro_kl.terms`); the ELBO weighs each term. The pair is
    traced once, without gradients and without touching the random state.

    :param callable model: the model, the dream world Q.
    :param callable guide: the guide; with the data, the real world P.
    :param tuple model_args: positional arguments of model and guide.
    :param dict model_kwargs: keyword arguments of model and guide.
    :param elbo: a :class:`~pyro_kl.WeightedELBO` (or preset) whose weights
        and ``terms`` map are used; ``None`` means the default rule with unit
        weights.
    :returns: terms with their sites and weights, as text and as LaTeX.
    :rtype: Objective
    :raises ValueError: for arguments of the wrong type, or a pair whose
        sites cannot be sent to terms (see :func:`~pyro_kl.terms.assign_terms`).

    Example::

        objective = derive_objective(vae.model, vae.guide, (x,), elbo=RateDistortionELBO(0.37))
        objective.equation   # 'I[P;Q] = D + 0.37·(R + S) + const' (S only with globals)
        objective.terms      # {'distortion': ('x',), 'rate': ('z',)}
        IPython.display.Math(objective.latex)
    """
    pair = trace_pair(model, guide, model_args, model_kwargs, elbo=elbo)
    return objective_from(pair.assignment, elbo)


__all__ = [
    "Objective",
    "TracedPair",
    "derive_objective",
    "objective_from",
    "trace_pair",
]
