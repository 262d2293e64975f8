"""The essay's drawings as ready (model, guide) pairs, each with its ELBO and data.

Every recipe is a :class:`Recipe`: its guide with the data is the **real
world P (data + guide)**, its model the **dream world Q (model)**, and
:meth:`Recipe.make_elbo` the pyro_kl ELBO of the objective the essay derives
from the two drawings. :data:`RECIPES` maps each registry name to its class,
in the essay's order.

Example::

    from pyro_kl.recipes import RECIPES

    for name, recipe_class in RECIPES.items():
        recipe = recipe_class()
        data = recipe.make_data(seed=0)
        losses = recipe.fit(*data, num_steps=50)
"""

from typing import Dict, Type

from .base import Recipe
from .bayes import BayesianInference
from .bnn import BayesianNeuralNetwork
from .density import DensityEstimation
from .diffusion import VariationalDiffusion
from .m2 import SemiSupervisedM2
from .mixture import GaussianMixture
from .prediction import VariationalPrediction
from .semi_supervised import SemiSupervisedVAE
from .supervised import SupervisedLearning
from .therml import TherML
from .vae import VAE
from .vib import VIB

RECIPES: Dict[str, Type[Recipe]] = {
    recipe.name: recipe
    for recipe in (
        DensityEstimation,
        GaussianMixture,
        SupervisedLearning,
        VAE,
        VIB,
        SemiSupervisedVAE,
        SemiSupervisedM2,
        VariationalDiffusion,
        BayesianInference,
        BayesianNeuralNetwork,
        TherML,
        VariationalPrediction,
    )
}
"""Registry name -> recipe class, in the order of the essay's sections."""

__all__ = [
    "BayesianInference",
    "BayesianNeuralNetwork",
    "DensityEstimation",
    "GaussianMixture",
    "RECIPES",
    "Recipe",
    "SemiSupervisedM2",
    "SemiSupervisedVAE",
    "SupervisedLearning",
    "TherML",
    "VAE",
    "VIB",
    "VariationalDiffusion",
    "VariationalPrediction",
]
