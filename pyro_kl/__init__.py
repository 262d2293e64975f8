"""pyro_kl: Pyro objectives as KL(real world || dream world), split into named terms."""

from .distributed import all_reduce_terms
from .elbo import WeightedELBO
from .presets import BetaGammaELBO, RateDistortionELBO, TherMLELBO
from .schedules import CyclicalAnnealing, LinearWarmup
from .terms import CLASSIFICATION, COMPLEXITY, DISTORTION, FACTOR, JOINT, RATE, assign_terms
from .objective import Objective, derive_objective
from .worlds import render_worlds

__version__ = "0.1.0"

__all__ = [
    "BetaGammaELBO",
    "CLASSIFICATION",
    "COMPLEXITY",
    "CyclicalAnnealing",
    "DISTORTION",
    "FACTOR",
    "JOINT",
    "LinearWarmup",
    "Objective",
    "RATE",
    "RateDistortionELBO",
    "TherMLELBO",
    "WeightedELBO",
    "all_reduce_terms",
    "assign_terms",
    "derive_objective",
    "render_worlds",
]
