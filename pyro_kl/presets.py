"""The essay's named objectives: factories of a :class:`~pyro_kl.weighting.Weighting`,
and :class:`~pyro_kl.WeightedELBO` subclasses built on them.

Each preset names its knobs (``beta``, ``gamma``, ...) and the terms each
weighs. A knob reads back the weight it set; once the weights no longer have
its shape (``weights={"rate": 0.1, "complexity": 3}`` under one ``beta``),
reading it raises an error that says so. Pyro's own ELBO options follow a
preset's knobs, positionally in Pyro's order (``num_particles``,
``max_plate_nesting``, ...) or by keyword.
"""

from typing import Any, Dict, Optional, Tuple

from .elbo import WeightedELBO
from .terms import CLASSIFICATION, COMPLEXITY, DISTORTION, RATE
from .weighting import Weight, Weighting

RATE_DISTORTION_KNOBS: Dict[str, Tuple[str, ...]] = {"beta": (RATE, COMPLEXITY)}
BETA_GAMMA_KNOBS: Dict[str, Tuple[str, ...]] = {"beta": (DISTORTION,), "gamma": (CLASSIFICATION,)}
THERML_KNOBS: Dict[str, Tuple[str, ...]] = {
    "gamma": (CLASSIFICATION,), "delta": (DISTORTION,), "sigma": (COMPLEXITY,)
}


def preset_weighting(
    knobs: Dict[str, Tuple[str, ...]],
    values: Dict[str, Weight],
    site_terms: Optional[Dict[str, str]] = None,
) -> Weighting:
    """A :class:`~pyro_kl.weighting.Weighting` that gives each knob's terms its value.

    Example::

        weighting = preset_weighting(RATE_DISTORTION_KNOBS, {"beta": 0.5})
        weighting.weights  # {'rate': 0.5, 'complexity': 0.5}
        weighting.knob("beta")  # 0.5
    """
    weights = {term: values[knob] for knob, terms in knobs.items() for term in terms}
    return Weighting(weights, site_terms, knobs=knobs)


def rate_distortion(beta: Weight = 1.0, **options: Any) -> Weighting:
    """The weighting of ``D + β·(R + S)`` (see :class:`RateDistortionELBO`)."""
    return preset_weighting(RATE_DISTORTION_KNOBS, {"beta": beta}, **options)


def beta_gamma(beta: Weight = 1.0, gamma: Weight = 1.0, **options: Any) -> Weighting:
    """The weighting of ``β·D + γ·C + R + S`` (see :class:`BetaGammaELBO`)."""
    return preset_weighting(BETA_GAMMA_KNOBS, {"beta": beta, "gamma": gamma}, **options)


def therml(
    gamma: Weight = 1.0, delta: Weight = 1.0, sigma: Weight = 1.0, **options: Any
) -> Weighting:
    """The weighting of ``γ·C + δ·D + σ·S + R`` (see :class:`TherMLELBO`)."""
    return preset_weighting(
        THERML_KNOBS, {"gamma": gamma, "delta": delta, "sigma": sigma}, **options
    )


def _knob(name: str) -> property:
    def get(self) -> Weight:
        return self.weighting.knob(name)

    def set(self, value: Weight) -> None:
        self.weighting = self.weighting.with_knob(name, value)

    return property(get, set, doc=f"The weight ``{name}`` sets; settable (validated).")


class PresetELBO(WeightedELBO):
    """A :class:`~pyro_kl.WeightedELBO` whose weighting a preset's factory makes, from its
    knobs; the base of the presets below."""

    def __init__(self, weighting: Weighting, elbo_args: tuple, kwargs: Dict[str, Any]):
        if "weights" in kwargs or "weighting" in kwargs:
            raise TypeError(
                f"{type(self).__name__} sets its weights from its knobs "
                f"({', '.join(weighting.knobs)}); use WeightedELBO(weights=...) for others."
            )
        site_terms = kwargs.pop("site_terms", None)
        if site_terms is not None:
            weighting = weighting.replace(site_terms=site_terms)
        super().__init__(*elbo_args, weighting=weighting, **kwargs)


class RateDistortionELBO(PresetELBO):
    r"""The β-VAE objective ``D + β·(R + S)``.

    All latent information counts as rate: local latents feed ``rate``, global
    ones ``complexity``, and both carry β. With β = 1 this is Pyro's ELBO.
    With the label as the only observed site, sent to ``classification``
    (``site_terms={"y": "classification"}``), it is the variational
    information bottleneck (VIB) ``C + β·R``: the label's ``-log q(y|z)`` is
    the classification error C, as the essay's VIB and TherML name it.

    :param beta: the weight of rate and complexity, a float ``>= 0``, a
        schedule of the step count or a controller.
    :param elbo_args: Pyro's ELBO options after ``beta``, in Pyro's order
        (``num_particles``, ``max_plate_nesting``, ...).
    :param kwargs: any :class:`WeightedELBO` or :class:`~pyro.infer.ELBO`
        option (``site_terms``, ``analytic_kl``, ``num_particles``, ...).

    Example::

        elbo = RateDistortionELBO(0.5, 4)  # beta = 0.5, num_particles = 4
        assert (elbo.beta, elbo.num_particles) == (0.5, 4)
        svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), loss=elbo)
    """

    beta = _knob("beta")

    def __init__(self, beta: Weight = 1.0, *elbo_args: Any, **kwargs: Any):
        super().__init__(rate_distortion(beta), elbo_args, kwargs)


class BetaGammaELBO(PresetELBO):
    r"""The semi-supervised objective ``β·D + γ·C + R + S``.

    From the essay's semi-supervised VAE: β weighs the distortion of the
    inputs, γ the classification of the labels (send the label site to
    ``classification`` with ``site_terms={"y": "classification"}`` or a site tag).
    Alone, β on the likelihood gives generalized variational Bayes and Bayes
    by Backprop with a tempered likelihood.

    :param beta: the weight of ``distortion``.
    :param gamma: the weight of ``classification``.
    :param elbo_args: Pyro's ELBO options after the knobs, in Pyro's order.
    :param kwargs: any :class:`WeightedELBO` or :class:`~pyro.infer.ELBO` option.

    Example::

        elbo = BetaGammaELBO(beta=1.0, gamma=10.0, site_terms={"y": "classification"})
    """

    beta = _knob("beta")
    gamma = _knob("gamma")

    def __init__(self, beta: Weight = 1.0, gamma: Weight = 1.0, *elbo_args: Any, **kwargs: Any):
        super().__init__(beta_gamma(beta, gamma), elbo_args, kwargs)


class TherMLELBO(PresetELBO):
    r"""The TherML four-term objective ``γ·C + δ·D + σ·S + R``.

    Classification error C, distortion D of the inputs, complexity S of the
    global parameters and rate R of the representation, as in Alemi &
    Fischer's *TherML: Thermodynamics of Machine Learning*.

    :param gamma: the weight of ``classification``.
    :param delta: the weight of ``distortion``.
    :param sigma: the weight of ``complexity``.
    :param elbo_args: Pyro's ELBO options after the knobs, in Pyro's order.
    :param kwargs: any :class:`WeightedELBO` or :class:`~pyro.infer.ELBO` option.

    Example::

        elbo = TherMLELBO(gamma=1.0, delta=0.1, sigma=1e-3, site_terms={"y": "classification"})
    """

    gamma = _knob("gamma")
    delta = _knob("delta")
    sigma = _knob("sigma")

    def __init__(
        self,
        gamma: Weight = 1.0,
        delta: Weight = 1.0,
        sigma: Weight = 1.0,
        *elbo_args: Any,
        **kwargs: Any,
    ):
        super().__init__(therml(gamma, delta, sigma), elbo_args, kwargs)
