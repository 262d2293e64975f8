"""Term names and the rule that sends each sample site to a term.

Every sample site of a (model, guide) pair contributes one summand to
``I[P;Q] = KL(real world || dream world)``, where the *real world* P is the
data together with the guide and the *dream world* Q is the model. The rule
below decides which named term each summand feeds:

======================================  =====================  ==================
site                                    contribution (nats)    default term
======================================  =====================  ==================
observed in the model                   ``-log model(x|..)``   ``distortion``
latent, under a plate holding data      ``log guide - log      ``rate``
                                        model``
latent, under no plate holding data     same                   ``complexity``
``pyro.factor``                         ``-log factor``        ``factor``
======================================  =====================  ==================

A plate "holds data" when some observed model site lies inside it; Pyro's own
particle plate never does. An explicit choice wins over the rule: a site tag
``infer={"kl_term": name}`` or an ELBO's ``site_terms={site: name}`` map (the map
wins over a tag).
"""

import warnings
from typing import Dict, Iterable, Iterator, Mapping, NamedTuple, Optional, Set, Tuple

import torch
from pyro import poutine
from pyro.distributions import Independent
from pyro.distributions.util import scale_and_mask, sum_rightmost
from pyro.infer.autoguide import AutoContinuous
from pyro.ops import packed
from pyro.poutine import Trace
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_factor, site_is_subsample

from ._pyro_compat import dim_to_symbol, is_particle_plate, site_is_deterministic, unpack_latent

DISTORTION = "distortion"
RATE = "rate"
CLASSIFICATION = "classification"
COMPLEXITY = "complexity"
FACTOR = "factor"
JOINT = "joint"
"""Key of the guide's joint log-density when it cannot be split per site."""

MARGINAL_TERM_JOIN = "+"
"""Joins the terms of the sites that one model-side marginal (a discrete site
summed out in the model with the sites that depend on it) stands for, when
those sites feed different terms: ``"classification+distortion"``."""

TAG = "kl_term"
"""The ``infer`` key with which a site chooses its term."""


class Term(NamedTuple):
    """One named term of the registry.

    :ivar str name: the term's name, as in ``weights`` and ``last_terms``.
    :ivar str symbol: the letter it is written with.
    :ivar str meaning: what it measures, in words.
    """

    name: str
    symbol: str
    meaning: str


TERMS: Dict[str, Term] = {
    term.name: term
    for term in (
        Term(DISTORTION, "D", "-log dream(data | latents): the data's code length"),
        Term(CLASSIFICATION, "C", "-log dream(label | ...): classification error"),
        Term(RATE, "R", "log real(z|x) - log dream(z) of local latents"),
        Term(COMPLEXITY, "S", "log real(θ|D) - log dream(θ) of global latents"),
        Term(FACTOR, "F", "-log of pyro.factor sites"),
        Term(JOINT, "J", "a guide log-density standing for several sites"),
    )
}
"""The term registry, in writing order (data terms first, then latent ones).
Terms named by users are written after these, by their name."""

STANDARD_TERMS = (DISTORTION, RATE, CLASSIFICATION, COMPLEXITY)
"""The essay's four information terms; a weight may name them even when no site feeds them."""


def term_symbol(term: str) -> str:
    """The letter a term is written with (a user's term: its name; a model-side
    marginal of several terms: their letters, e.g. ``"C+D"``)."""
    if term in TERMS:
        return TERMS[term].symbol
    if MARGINAL_TERM_JOIN in term:
        return MARGINAL_TERM_JOIN.join(term_symbol(part) for part in term.split(MARGINAL_TERM_JOIN))
    return term


def in_writing_order(terms: Iterable[str]) -> list:
    """The terms, registry terms first in registry order, then the others as given."""
    terms = list(dict.fromkeys(terms))
    return [t for t in TERMS if t in terms] + [t for t in terms if t not in TERMS]


class TermAssignment(NamedTuple):
    """Which term each sample site of one (model, guide) trace pair feeds.

    :ivar dict model: model site name -> term, for every site that counts.
    :ivar dict guide: guide site name -> term, for every site that counts.
    :ivar dict joint: auxiliary guide site -> the latent sites it stands for,
        for the guide sites whose log-density cannot be split per site.
    :ivar tuple summed_out: latent model sites the guide lacks that are
        enumerated in the model: summed out with the sites that depend on
        them, they feed no term of their own.
    :ivar tuple unmatched: guide sites that are neither in the model nor
        marked ``infer={"is_auxiliary": True}``.
    :ivar tuple factorised: ``(auxiliary site, the latent sites it stands for)``
        of the guide's joint densities that factorise by coordinate (an
        :class:`~pyro.infer.autoguide.AutoDiagonalNormal`'s): each latent's
        share is added to that latent's own log-density (see
        :func:`split_factorised`), and the auxiliary site feeds no term.
    """

    model: Dict[str, str]
    guide: Dict[str, str]
    joint: Dict[str, Tuple[str, ...]]
    summed_out: Tuple[str, ...] = ()
    unmatched: Tuple[str, ...] = ()
    factorised: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()

    def joint_terms(self) -> Tuple[str, ...]:
        """The terms of the model sites the guide's joint log-densities stand for, sorted."""
        return tuple(sorted({self.model[s] for sites in self.joint.values() for s in sites}))

    def sites_by_term(self) -> Dict[str, Tuple[str, ...]]:
        """Term -> the site names feeding it, model sites first, in trace order."""
        result: Dict[str, list] = {}
        for term_map in (self.model, self.guide):
            for name, term in term_map.items():
                sites = result.setdefault(term, [])
                if name not in sites:
                    sites.append(name)
        return {term: tuple(sites) for term, sites in result.items()}


class ModelTags(Messenger):
    """Keeps the model's own ``infer={"kl_term": ...}`` tags of latent sites.

    When a model is replayed against a guide trace, Pyro replaces each latent
    site's ``infer`` dict by the guide's, so a tag the model puts on a latent
    would be lost. Wrap the model in this messenger before replaying it, then
    :meth:`restore` the tags into the model trace.

    Example::

        def model(x):
            z = pyro.sample("z", dist.Normal(0.0, 1.0), infer={"kl_term": "bits"})
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

        def guide(x):
            pyro.sample("z", dist.Normal(x / 2, 0.7))

        x = torch.tensor(0.5)
        guide_trace = poutine.trace(guide).get_trace(x)
        tags = ModelTags()
        model_trace = poutine.trace(poutine.replay(tags(model), guide_trace)).get_trace(x)
        tags.restore(model_trace)
        assert model_trace.nodes["z"]["infer"]["kl_term"] == "bits"
    """

    def __init__(self):
        super().__init__()
        self.tags: Dict[str, str] = {}

    def _pyro_sample(self, msg) -> None:
        if msg["infer"].get(TAG) is not None:
            self.tags[msg["name"]] = msg["infer"][TAG]

    def restore(self, model_trace: Trace) -> None:
        """Write the recorded tags back into the model trace's sites."""
        for name, tag in self.tags.items():
            site = model_trace.nodes.get(name)
            if site is not None and site["infer"].get(TAG) != tag:
                site["infer"] = {**site["infer"], TAG: tag}


def sample_sites(trace: Trace) -> Iterator[Tuple[str, dict]]:
    """The sample sites of a trace, without plate subsample sites: the one
    iterator every module uses."""
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site_is_subsample(site):
            yield name, site


def is_data_site(site) -> bool:
    """Whether a model site holds data given by nature: observed, and neither a
    ``pyro.factor``, a ``pyro.deterministic`` nor a subsample site. The term
    rule and the renderer share this one rule."""
    return (
        site["type"] == "sample"
        and site["is_observed"]
        and not site_is_factor(site)
        and not site_is_deterministic(site)
        and not site_is_subsample(site)
    )


def _plates(site) -> Set[str]:
    return {f.name for f in site["cond_indep_stack"] if not is_particle_plate(f.name)}


def data_plates(model_trace: Trace) -> Set[str]:
    """Names of the plates that hold at least one data site (:func:`is_data_site`)."""
    plates: Set[str] = set()
    for _, site in sample_sites(model_trace):
        if is_data_site(site):
            plates |= _plates(site)
    return plates


def num_datapoints(model_trace: Trace) -> int:
    """The number of datapoints a model trace's terms sum over: the full size
    (not the subsample size) of each outermost plate holding data, added over
    such plates; 1 when no plate holds data."""
    sizes: Dict[str, int] = {}
    for _, site in sample_sites(model_trace):
        if is_data_site(site):
            frames = [f for f in site["cond_indep_stack"] if not is_particle_plate(f.name)]
            if frames:
                outermost = min(frames, key=lambda f: f.dim if f.dim is not None else 0)
                sizes[outermost.name] = outermost.full_size or outermost.size
    return max(1, sum(sizes.values()))


def is_enumerated(site) -> bool:
    """Whether a site is configured for enumeration (parallel or sequential)."""
    return site["infer"].get("enumerate") in ("parallel", "sequential")


def default_term(site, data_plate_names: Set[str]) -> Optional[str]:
    """The term a model site feeds by the default rule (``None``: no term)."""
    if site_is_deterministic(site):
        return None
    if site_is_factor(site):
        return FACTOR
    if site["is_observed"]:
        return DISTORTION
    return RATE if _plates(site) & data_plate_names else COMPLEXITY


def _explicit(name: str, site, terms: Mapping[str, str]) -> Optional[str]:
    return terms.get(name, site["infer"].get(TAG))


def assign_terms(
    model_trace: Trace, guide_trace: Trace, site_terms: Optional[Mapping[str, str]] = None
) -> TermAssignment:
    """Send every sample site of a model trace and its guide trace to a term.

    A latent site feeds the same term in both worlds. A guide site that the
    model lacks (an autoguide's auxiliary site) feeds the term of the model
    sites sampled after it, up to the next such site; when it stands for more
    than one model site its log-density cannot be split per site, and it is
    recorded under :data:`JOINT`.

    :param ~pyro.poutine.Trace model_trace: a trace of the model (dream world).
    :param ~pyro.poutine.Trace guide_trace: the guide trace it was replayed on
        (the real world's latent part).
    :param dict site_terms: optional map from site names to term names; it wins
        over ``infer={"kl_term": ...}`` tags, which win over the default rule.
    :raises ValueError: if ``terms`` names a site neither trace has, if the
        model and the guide tag a latent site with different terms, or if a
        latent model site is missing from the guide.

    Example::

        def model(x):
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

        def guide(x):
            with pyro.plate("data", len(x)):
                pyro.sample("z", dist.Normal(x / 2, 0.7))

        x = torch.randn(4)
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, guide_trace)).get_trace(x)
        assert assign_terms(model_trace, guide_trace).model == {"z": "rate", "x": "distortion"}
    """
    terms = {} if site_terms is None else site_terms
    model_sites = dict(sample_sites(model_trace))
    guide_sites = dict(sample_sites(guide_trace))
    unknown = [name for name in terms if name not in model_sites and name not in guide_sites]
    if unknown:
        raise ValueError(
            f"site_terms= names site(s) {unknown} that neither the model nor the guide "
            f"samples. Model sites: {sorted(model_sites)}; guide sites: "
            f"{sorted(guide_sites)}. Fix the names in the terms map."
        )

    model, summed_out = _model_terms(model_sites, guide_sites, terms, data_plates(model_trace))
    guide, joint, unmatched = _guide_terms(model_sites, guide_sites, model, terms)
    return TermAssignment(model, guide, joint, tuple(summed_out), tuple(unmatched))


def _latent_partner(name: str, site, guide_sites: Mapping[str, dict]) -> Optional[dict]:
    """The guide site of a latent model site; ``None`` when the model sums it out.

    :raises ValueError: when the guide lacks it and the model cannot sum it out.
    """
    guide_site = guide_sites.get(name)
    if guide_site is not None or site["infer"].get("enumerate") == "parallel":
        return guide_site
    if is_enumerated(site):
        raise ValueError(
            f"Model site '{name}' is configured for sequential enumeration, which "
            "only the guide supports; use infer={'enumerate': 'parallel'} in the "
            "model (and a max_plate_nesting), as Pyro's TraceEnum_ELBO requires."
        )
    raise ValueError(
        f"Latent model site '{name}' is missing from the guide. Sample "
        f"'{name}' in the guide, observe it in the model, or, if it is "
        "discrete, sum it out in the model with infer={'enumerate': "
        "'parallel'} (or @config_enumerate) and a max_plate_nesting."
    )


def _latent_tag(name: str, model_tag: Optional[str], guide_site, terms) -> Optional[str]:
    """A latent's explicit term: the map's, else the tags of both worlds, which must agree."""
    guide_tag = guide_site["infer"].get(TAG)
    if name in terms or guide_tag is None:
        return model_tag
    if model_tag is not None and model_tag != guide_tag:
        raise ValueError(
            f"Model and guide disagree on the term of site '{name}': the "
            f"model tags it '{model_tag}', the guide '{guide_tag}'. Use the "
            f"same infer={{'{TAG}': ...}} in both, or choose with "
            f"site_terms={{'{name}': ...}} on the ELBO."
        )
    return guide_tag


def _model_terms(model_sites, guide_sites, terms, plates) -> Tuple[Dict[str, str], list]:
    """Model site -> term, and the latents the model sums out."""
    model: Dict[str, str] = {}
    summed_out = []
    for name, site in model_sites.items():
        term = _explicit(name, site, terms)
        if not site["is_observed"]:
            guide_site = _latent_partner(name, site, guide_sites)
            if guide_site is None:
                summed_out.append(name)
                continue
            term = _latent_tag(name, term, guide_site, terms)
        if term is None:
            term = default_term(site, plates)
        if term is not None:
            model[name] = term
    return model, summed_out


def _guide_terms(model_sites, guide_sites, model, terms):
    """Guide site -> term; an auxiliary site the model lacks takes the term of the
    latents sampled after it (``joint`` when they are several)."""
    guide: Dict[str, str] = {}
    joint: Dict[str, Tuple[str, ...]] = {}
    unmatched = []
    pending: Optional[str] = None  # the auxiliary site waiting for its latents
    pending_for: list = []

    def close_pending():
        if pending is None or pending in guide:
            return
        if len(pending_for) == 1:
            guide[pending] = model[pending_for[0]]
        else:
            guide[pending] = JOINT
            joint[pending] = tuple(pending_for)

    for name, site in guide_sites.items():
        if name in model_sites:
            if name in model:
                guide[name] = model[name]
                if pending is not None:
                    pending_for.append(name)
            continue
        term = _explicit(name, site, terms)
        if term is None and site_is_factor(site):
            term = FACTOR
        if term is not None:
            guide[name] = term
            continue
        if not site["infer"].get("is_auxiliary", False):
            unmatched.append(name)
        close_pending()
        pending, pending_for = name, []
    close_pending()
    return guide, joint, unmatched


def structure_key(trace: Trace) -> tuple:
    """What :func:`assign_terms` reads from a trace, as a hashable key: two
    traces with the same key get the same terms (for any ``terms`` map), so
    an ELBO can compute the assignment once per model structure.
    """
    key = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        infer = site["infer"]
        key.append(
            (
                name,
                site["is_observed"],
                type(site["fn"]).__name__,  # tells factor and subsample sites
                infer.get(TAG),
                infer.get("is_auxiliary", False),
                infer.get("enumerate"),
                site_is_deterministic(site),
                tuple(frame.name for frame in site["cond_indep_stack"]),
            )
        )
    return tuple(key)


# ---- guides whose joint density factorises by site ----------------------------------


def _continuous_autoguide(guide) -> Optional[AutoContinuous]:
    guide = poutine.unwrap(guide)
    return guide if isinstance(guide, AutoContinuous) else None


def _is_product_over_coordinates(fn) -> bool:
    """Whether a distribution over a flat vector is a product of one-dimensional
    factors (``Normal(loc, scale).to_event(1)``, AutoDiagonalNormal's posterior)."""
    return (
        type(fn) is Independent
        and fn.reinterpreted_batch_ndims == 1
        and fn.base_dist.event_shape == ()
    )


def factorise_joint(assignment: TermAssignment, guide, guide_trace: Trace) -> TermAssignment:
    """The assignment with every joint density of ``guide`` that is a product over
    its coordinates split by site: a :class:`~pyro.infer.autoguide.AutoContinuous`
    guide (e.g. :class:`~pyro.infer.autoguide.AutoDiagonalNormal`) whose
    posterior over the packed latent vector is an ``Independent`` product of
    one-dimensional factors. Each latent then has its own guide log-density
    and feeds its own term, exactly as with
    :class:`~pyro.infer.autoguide.AutoNormal` at the same locations and
    scales; the auxiliary site feeds no term. Apply :func:`split_factorised`
    to every trace pair of that structure. Other joint densities (a
    ``MultivariateNormal``, a normalising flow) stay under :data:`JOINT`.

    :param assignment: :func:`assign_terms`'s assignment of one trace pair.
    :param guide: the guide the pair was traced from (it may be wrapped in
        ``poutine`` handlers).
    :param guide_trace: its guide trace.
    :rtype: TermAssignment

    Example::

        from pyro.infer.autoguide import AutoDiagonalNormal

        def model(x):
            theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", dist.Normal(theta, 1.0))
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

        x = torch.randn(5)
        guide = AutoDiagonalNormal(model)
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, guide_trace)).get_trace(x)
        assignment = assign_terms(model_trace, guide_trace)
        assert assignment.guide["_AutoDiagonalNormal_latent"] == "joint"
        split = factorise_joint(assignment, guide, guide_trace)
        assert split.joint == {} and split.guide == {"theta": "complexity", "z": "rate"}
    """
    autoguide = _continuous_autoguide(guide)
    if autoguide is None or not assignment.joint or autoguide.prototype_trace is None:
        return assignment
    order = tuple(name for name, _ in autoguide.prototype_trace.iter_stochastic_nodes())
    factorised = []
    for aux, sites in assignment.joint.items():
        if sites == order and _is_product_over_coordinates(guide_trace.nodes[aux]["fn"]):
            factorised.append((aux, sites))
    if not factorised:
        return assignment
    split = {aux for aux, _ in factorised}
    return assignment._replace(
        guide={name: term for name, term in assignment.guide.items() if name not in split},
        joint={aux: sites for aux, sites in assignment.joint.items() if aux not in split},
        factorised=assignment.factorised + tuple(factorised),
    )


def split_factorised(assignment: TermAssignment, guide, guide_trace: Trace) -> None:
    """Moves each factorised joint density of :func:`factorise_joint` into the
    sites it stands for: every latent's coordinates of the auxiliary site's
    log-density (scaled and masked as the auxiliary site is) are added to that
    latent's log-density, score parts and, for enumerating traces, packed
    tensors. The guide's total log-density is unchanged.

    :param assignment: an assignment returned by :func:`factorise_joint`.
    :param guide: the guide the trace was traced from.
    :param guide_trace: a guide trace with its log-densities computed; updated in place.
    """
    if not assignment.factorised:
        return
    autoguide = _continuous_autoguide(guide)
    for aux, _ in assignment.factorised:
        aux_site = guide_trace.nodes[aux]
        per_coordinate = aux_site["fn"].base_dist.log_prob(aux_site["value"])
        mask = aux_site["mask"]
        if torch.is_tensor(mask):
            mask = mask.unsqueeze(-1)
        per_coordinate = scale_and_mask(per_coordinate, aux_site["scale"], mask)
        for site, share in unpack_latent(autoguide, per_coordinate):
            _add_log_density(guide_trace.nodes[site["name"]], share)


def _add_log_density(site, share: torch.Tensor) -> None:
    log_prob = site["log_prob"]
    share = sum_rightmost(share, share.dim() - log_prob.dim())
    site["log_prob"] = log_prob = log_prob + share
    site["log_prob_sum"] = log_prob.sum()
    score_parts = site.get("score_parts")
    if score_parts is not None:
        site["score_parts"] = score_parts._replace(
            log_prob=log_prob, entropy_term=score_parts.entropy_term + share
        )
    site_packed = site.get("packed")
    if site_packed is not None and "log_prob" in site_packed:
        symbols = dim_to_symbol(site)
        site_packed["log_prob"] = packed.pack(log_prob, symbols)
        if "score_parts" in site_packed:
            parts = site["score_parts"]
            site_packed["score_parts"] = parts._replace(
                log_prob=site_packed["log_prob"],
                score_function=packed.pack(parts.score_function, symbols),
                entropy_term=packed.pack(parts.entropy_term, symbols),
            )


def warn_joint(assignment: TermAssignment, guide_trace: Trace) -> None:
    """Warns, naming what :data:`JOINT` holds and how to weight it, when a guide's
    joint density does not factorise by site (``MultivariateNormal``,
    low-rank, flows): its log-density is one summand for several latents."""
    for aux, sites in assignment.joint.items():
        fn = guide_trace.nodes[aux]["fn"]
        terms = sorted({assignment.model[s] for s in sites if s in assignment.model})
        warnings.warn(
            f"The guide's density at '{aux}' ({type(fn).__name__}) does not factorise by "
            f"site, so its log-density, log guide({', '.join(sites)}), is the term "
            f"'{JOINT}'; the model's log-density of each of these latents stays in its "
            f"term ({', '.join(terms)}). '{JOINT}' takes the common weight of those terms; "
            f"give it its own with weights={{'{JOINT}': w}}, or use a guide that factorises "
            "by site (AutoNormal, AutoDiagonalNormal) for per-site rate and complexity.",
            UserWarning,
            stacklevel=6,
        )
