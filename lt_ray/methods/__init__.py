"""Methods: the Method interface, the typed MethodSpec records and every registered method."""

from lt_ray.methods import gml, mislas, paco, ride, standard  # noqa: F401  (registration)
from lt_ray.methods.base import Method, StepOutput
from lt_ray.methods.spec import (
    BASE_FAMILY,
    FAMILIES,
    METHODS,
    MethodSpec,
    Output,
    Recipe,
    Row,
    Stage,
    outputs_declaration,
)
from lt_ray.methods.standard import StandardMethod

__all__ = ["BASE_FAMILY", "FAMILIES", "METHODS", "Method", "MethodSpec", "Output", "Recipe",
           "Row", "Stage", "StandardMethod", "StepOutput", "outputs_declaration"]
