"""The essay's named objectives: :class:`WeightedELBO` with preset weights."""

from typing import Any

from .elbo import WeightedELBO
from .terms import CLASSIFICATION, COMPLEXITY, DISTORTION, RATE
from .weighting import Weight


def _weight_property(*terms: str) -> property:
    """A preset's weight attribute (``beta``, ...): reads the weight of
    ``terms[0]``; setting it validates the value and weighs all ``terms``."""

    def get(self) -> Weight:
        return self.weights[terms[0]]

    def set(self, value: Weight) -> None:
        self.weights = {**self.weights, **{term: value for term in terms}}

    return property(get, set, doc=f"The weight of {' and '.join(terms)}; settable.")


class RateDistortionELBO(WeightedELBO):
    r"""The β-VAE objective ``D + β·(R + S)``.

    All latent information counts as rate: local latents feed ``rate``, global
    ones ``complexity``, and both carry β. With β = 1 this is Pyro's ELBO.
    With the label as the only observed site, sent to ``classification``
    (``site_terms={"y": "classification"}``), it is the variational
    information bottleneck (VIB) ``C + β·R``: the label's ``-log q(y|z)`` is
    the classification error C, as the essay's VIB and TherML name it.

    :param beta: the weight of rate and complexity, a float ``>= 0`` or a
        schedule of the step count.
    :param kwargs: any :class:`WeightedELBO` or :class:`~pyro.infer.ELBO`
        option (``site_terms``, ``analytic_kl``, ``num_particles``, ...).

    Example::

        elbo = RateDistortionELBO(beta=0.5, analytic_kl=True)
        svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), loss=elbo)
    """

    _weight_groups = ((RATE, COMPLEXITY),)
    beta = _weight_property(RATE, COMPLEXITY)

    def __init__(self, beta: Weight = 1.0, **kwargs: Any):
        super().__init__(weights={RATE: beta, COMPLEXITY: beta}, **kwargs)


class BetaGammaELBO(WeightedELBO):
    r"""The semi-supervised objective ``β·D + γ·C + R + S``.

    From the essay's semi-supervised VAE: β weighs the distortion of the
    inputs, γ the classification of the labels (send the label site to
    ``classification`` with ``site_terms={"y": "classification"}`` or a site tag).
    Alone, β on the likelihood gives generalized variational Bayes and Bayes
    by Backprop with a tempered likelihood.

    :param beta: the weight of ``distortion``.
    :param gamma: the weight of ``classification``.
    :param kwargs: any :class:`WeightedELBO` or :class:`~pyro.infer.ELBO` option.

    Example::

        elbo = BetaGammaELBO(beta=1.0, gamma=10.0, site_terms={"y": "classification"})
    """

    beta = _weight_property(DISTORTION)
    gamma = _weight_property(CLASSIFICATION)

    def __init__(self, beta: Weight = 1.0, gamma: Weight = 1.0, **kwargs: Any):
        super().__init__(weights={DISTORTION: beta, CLASSIFICATION: gamma}, **kwargs)


class TherMLELBO(WeightedELBO):
    r"""The TherML four-term objective ``γ·C + δ·D + σ·S + R``.

    Classification error C, distortion D of the inputs, complexity S of the
    global parameters and rate R of the representation, as in Alemi &
    Fischer's *TherML: Thermodynamics of Machine Learning*.

    :param gamma: the weight of ``classification``.
    :param delta: the weight of ``distortion``.
    :param sigma: the weight of ``complexity``.
    :param kwargs: any :class:`WeightedELBO` or :class:`~pyro.infer.ELBO` option.

    Example::

        elbo = TherMLELBO(gamma=1.0, delta=0.1, sigma=1e-3, site_terms={"y": "classification"})
    """

    gamma = _weight_property(CLASSIFICATION)
    delta = _weight_property(DISTORTION)
    sigma = _weight_property(COMPLEXITY)

    def __init__(
        self, gamma: Weight = 1.0, delta: Weight = 1.0, sigma: Weight = 1.0, **kwargs: Any
    ):
        weights = {CLASSIFICATION: gamma, DISTORTION: delta, COMPLEXITY: sigma}
        super().__init__(weights=weights, **kwargs)
