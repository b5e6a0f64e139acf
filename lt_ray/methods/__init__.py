"""Methods: the registered recipes and the Method interface."""

from lt_ray.methods import gml, mislas, paco, ride, standard  # noqa: F401  (registration)
from lt_ray.methods.base import METHODS, Method, StepOutput
from lt_ray.methods.standard import StandardMethod

__all__ = ["METHODS", "Method", "StandardMethod", "StepOutput"]
