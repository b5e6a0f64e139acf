"""Loss functions: one module per loss, each registers itself in ``LOSSES`` on import."""

from lt_ray.losses import bsce, ce, feabal, focal, gml, lade, las, ldam  # noqa: F401
from lt_ray.losses.base import (
    LOSSES,
    LossTraits,
    LTLoss,
    build_loss,
    loss_hparams,
    loss_traits,
    resolve_loss_args,
)

__all__ = [
    "LOSSES",
    "LTLoss",
    "LossTraits",
    "build_loss",
    "loss_hparams",
    "loss_traits",
    "resolve_loss_args",
]
