"""Focal loss (Lin et al., ICCV 2017) in the LDAM-DRW form."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lt_ray.errors import ConfigError
from lt_ray.losses.base import LOSSES, LTLoss


class FocalLoss(LTLoss):
    """Focal loss as in LDAM-DRW ``losses.py`` (METHODS.md §5).

    Per sample ``FL_i = (1 − exp(−CE_i))^γ · CE_i`` with
    ``CE_i = w_{y_i}·(−log softmax(z_i)_{y_i})``, then the plain batch mean ``(1/B) Σ_i FL_i``.
    With class weights ``w`` the term ``exp(−CE_i)`` is not the true target probability and the
    mean is not normalised by ``Σ w``: both are LDAM-DRW's quirks, kept for parity. ``γ = 0``
    without weights is CE.

    Args:
        class_counts: training samples per class, [C] (only validated).
        gamma: focusing exponent γ ≥ 0 (dimensionless); larger down-weights easy samples more.
    """

    def __init__(self, class_counts: torch.Tensor, *, gamma: float) -> None:
        super().__init__(class_counts)
        if gamma < 0:
            raise ConfigError(f"focal loss: method.loss_args.gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        features: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        w = None if weight is None else weight.float()
        ce = F.cross_entropy(logits.float(), targets, weight=w, reduction="none")
        p = torch.exp(-ce)
        return ((1.0 - p) ** self.gamma * ce).mean()


@LOSSES.register("focal", head="linear", class_weights=True)
def focal(class_counts: torch.Tensor, *, gamma: float = 1.0) -> LTLoss:
    """Focal loss; ``gamma`` = 1 as in FBL and LDAM-DRW."""
    return FocalLoss(class_counts, gamma=gamma)
