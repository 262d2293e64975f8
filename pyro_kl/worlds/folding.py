"""An autoguide's auxiliary latent, folded into the sites it produces.

:class:`~pyro.infer.autoguide.AutoDiagonalNormal`,
:class:`~pyro.infer.autoguide.AutoMultivariateNormal`,
:class:`~pyro.infer.autoguide.AutoLowRankMultivariateNormal` (and every
:class:`~pyro.infer.autoguide.AutoContinuous`) draw one joint latent
(``_AutoMultivariateNormal_latent``) and hand each model site its piece
through a :class:`~pyro.distributions.Delta` site;
:class:`~pyro.infer.autoguide.AutoNormal` draws ``z_unconstrained`` for each
site ``z``. The real world is drawn over the model's variables: each
auxiliary latent (a guide latent the model does not have, read by ``Delta``
sites the model has) is folded into the sites it produces, which take its
distribution, its parents and its arrows from the data set.
"""

from typing import Collection, Dict, List, Tuple

Edge = Tuple[str, str]


def auxiliary_latents(relations: dict, model_sites: Collection[str]) -> Dict[str, List[str]]:
    """Auxiliary latent -> the model sites it produces, in trace order.

    :param dict relations: the real world's relations (as
        :func:`pyro.infer.inspect.get_model_relations` writes them).
    :param model_sites: the names of the model's sites.
    """
    observed = set(relations["observed"])
    produced: Dict[str, List[str]] = {}
    for name, ups in relations["sample_sample"].items():
        if name not in model_sites or relations["sample_dist"].get(name) != "Delta":
            continue
        for up in ups:
            if up not in model_sites and up not in observed and up in relations["sample_dist"]:
                produced.setdefault(up, []).append(name)
    return produced


def fold(
    relations: dict, fit_edges: List[Edge], produced: Dict[str, List[str]]
) -> Tuple[dict, List[Edge]]:
    """The real world's relations and fit arrows with each auxiliary latent
    of ``produced`` replaced by the sites it produces.

    :returns: ``(relations, fit_edges)``, new objects.
    """
    if not produced:
        return relations, fit_edges

    def replaced(names: List[str], own: str = "") -> List[str]:
        result: List[str] = []
        for name in names:
            result.extend(s for s in produced.get(name, [name]) if s != own)
        return list(dict.fromkeys(result))

    upstream = relations["sample_sample"]
    sample_sample, sample_param, sample_dist = {}, {}, {}
    for name, ups in upstream.items():
        if name in produced:
            continue
        sources = [a for a in produced if name in produced[a]]
        inherited = [up for a in sources for up in upstream.get(a, [])]
        sample_sample[name] = replaced(
            [up for up in ups if up not in sources] + inherited, own=name
        )
        params = list(relations["sample_param"].get(name, []))
        for a in sources:
            params += relations["sample_param"].get(a, [])
        sample_param[name] = list(dict.fromkeys(params))
        sample_dist[name] = (
            relations["sample_dist"][sources[0]] if sources else relations["sample_dist"][name]
        )
    plate_sample = {
        plate: [n for n in names if n not in produced]
        for plate, names in relations["plate_sample"].items()
    }
    folded = {
        **relations,
        "sample_sample": sample_sample,
        "sample_param": sample_param,
        "sample_dist": sample_dist,
        "plate_sample": {plate: names for plate, names in plate_sample.items() if names},
    }
    fit: List[Edge] = []
    for source, target in fit_edges:
        fit.extend((source, t) for t in produced.get(target, [target]))
    return folded, list(dict.fromkeys(fit))


def folded_sites(sites: List[str], produced: Dict[str, List[str]]) -> List[str]:
    """``sites`` with each auxiliary latent replaced by the sites it produces.

    Example::

        folded_sites(["_AutoDiagonalNormal_latent"], {"_AutoDiagonalNormal_latent": ["mu", "z"]})
        # ['mu', 'z']
    """
    result: List[str] = []
    for name in sites:
        result.extend(produced.get(name, [name]))
    return list(dict.fromkeys(result))


__all__ = ["auxiliary_latents", "fold", "folded_sites"]
