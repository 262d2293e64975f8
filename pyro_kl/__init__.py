"""pyro_kl: Pyro objectives as KL(real world || dream world), split into named terms."""

from .controllers import GECO, PIControl, Target
from .diagnostics import (
    active_units,
    bits_per_dimension,
    code_length,
    elbo_surgery,
    evaluate,
    iwae_bound,
    rate_per_dimension,
)
from .distributed import all_reduce_terms
from .elbo import WeightedELBO
from .objective import Objective, derive_objective
from .plots import plot_rate_distortion
from .presets import BetaGammaELBO, RateDistortionELBO, TherMLELBO
from .schedules import CyclicalAnnealing, LinearWarmup
from .terms import CLASSIFICATION, COMPLEXITY, DISTORTION, FACTOR, JOINT, RATE, assign_terms
from .worlds import render_worlds

__version__ = "0.1.0"

__all__ = [
    "BetaGammaELBO",
    "CLASSIFICATION",
    "COMPLEXITY",
    "CyclicalAnnealing",
    "DISTORTION",
    "FACTOR",
    "GECO",
    "JOINT",
    "LinearWarmup",
    "Objective",
    "PIControl",
    "RATE",
    "RateDistortionELBO",
    "Target",
    "TherMLELBO",
    "WeightedELBO",
    "active_units",
    "all_reduce_terms",
    "assign_terms",
    "bits_per_dimension",
    "code_length",
    "derive_objective",
    "elbo_surgery",
    "evaluate",
    "iwae_bound",
    "plot_rate_distortion",
    "rate_per_dimension",
    "render_worlds",
]
