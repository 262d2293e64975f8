"""Bounds and information measures of any Pyro (model, guide) pair.

The essay's claims, measured: the importance-weighted bound ``L_K`` on the
dream world's marginal likelihood (so that ``D + R >= -L_K >= -log
model(x)``), the split of the rate into mutual information and marginal KL
(ELBO surgery), active units and the rate of each dimension of a code, code
lengths relative to a base measure (Appendix A), and every term averaged over
held-out data (Appendix B).

Values are in nats per datapoint, where a datapoint is an index of the plate
that holds the model's observed sites.
"""

from .base_measure import BIN_WIDTH, with_base_density
from .bounds import bits_per_dimension, code_length, iwae_bound
from .evaluation import evaluate
from .information import active_units, elbo_surgery, rate_per_dimension

__all__ = [
    "BIN_WIDTH",
    "active_units",
    "bits_per_dimension",
    "code_length",
    "elbo_surgery",
    "evaluate",
    "iwae_bound",
    "rate_per_dimension",
    "with_base_density",
]
