"""pyro_kl: Pyro objectives as KL(real world || dream world), split into named terms."""

from .controllers import GECO, PIControl, Target
from .distributed import all_reduce_terms
from .elbo import WeightedELBO
from .presets import BetaGammaELBO, RateDistortionELBO, TherMLELBO
from .schedules import CyclicalAnnealing, LinearWarmup
from .terms import CLASSIFICATION, COMPLEXITY, DISTORTION, FACTOR, JOINT, RATE, assign_terms
from .worlds import Objective, derive_objective, render_worlds

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
    "all_reduce_terms",
    "assign_terms",
    "derive_objective",
    "render_worlds",
]
