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

from typing import Dict, Iterable, Iterator, Mapping, NamedTuple, Optional, Set, Tuple

from pyro.poutine import Trace
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_factor, site_is_subsample

from ._pyro_compat import is_particle_plate, site_is_deterministic

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
    """

    model: Dict[str, str]
    guide: Dict[str, str]
    joint: Dict[str, Tuple[str, ...]]
    summed_out: Tuple[str, ...] = ()
    unmatched: Tuple[str, ...] = ()

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
