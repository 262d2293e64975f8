"""Interim: term weights under Pyro's TraceEnum_ELBO, until pyro_kl's ELBOs enumerate.

Each model site's log-probability is scaled (:func:`pyro.poutine.scale`) by the
weight of the term it feeds: ``site_terms`` first, then observed sites to
``distortion``, latent ones to ``rate``, except that a latent site enumerated
in the model goes with the observed sites it is summed with (``distortion``).
Guide sites keep weight 1. This is exact for guide-side enumeration and for
model-side enumeration at equal weights within each enumerated group; it
keeps no ``last_terms``.
"""

from typing import Any, Dict, Mapping, Optional

from pyro.infer import TraceEnum_ELBO
from pyro.poutine.messenger import Messenger

from ..terms import DISTORTION, RATE


class _ScaleByTerm(Messenger):
    def __init__(self, weights: Mapping[str, float], site_terms: Mapping[str, str]):
        super().__init__()
        self.weights, self.site_terms = weights, site_terms

    def _process_message(self, msg):
        if msg["type"] != "sample":
            return
        summed = msg["infer"].get("enumerate") == "parallel"
        default = DISTORTION if msg["is_observed"] or summed else RATE
        term = self.site_terms.get(msg["name"], default)
        weight = float(self.weights.get(term, 1.0))
        if weight != 1.0:
            msg["scale"] = weight * msg["scale"]


class InterimEnumELBO(TraceEnum_ELBO):
    """:class:`~pyro.infer.TraceEnum_ELBO` with each model site scaled by its term's weight.

    :param weights: term name -> weight (missing terms weigh 1).
    :param site_terms: site name -> term name.
    """

    def __init__(
        self,
        *,
        weights: Optional[Mapping[str, float]] = None,
        site_terms: Optional[Mapping[str, str]] = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.weights: Dict[str, float] = dict(weights or {})
        self.site_terms: Dict[str, str] = dict(site_terms or {})

    def _scaled(self, model):
        return _ScaleByTerm(self.weights, self.site_terms)(model)

    def loss(self, model, guide, *args, **kwargs):
        return super().loss(self._scaled(model), guide, *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        return super().loss_and_grads(self._scaled(model), guide, *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return super().differentiable_loss(self._scaled(model), guide, *args, **kwargs)
