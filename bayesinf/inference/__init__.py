"""Inference drivers: thin, cached drivers over NumPyro's NUTS kernel and SVI.

Each returns plain numpy draws; ``bayesinf.posterior.Posterior`` wraps them.
"""

from .binding import BoundModel
from .nuts import run_nuts
from .svi import run_svi

__all__ = ["BoundModel", "run_nuts", "run_svi"]
