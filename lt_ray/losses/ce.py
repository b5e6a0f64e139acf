"""Plain cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lt_ray.losses.base import LOSSES, LTLoss


class CELoss(LTLoss):
    """Softmax cross-entropy, ``L = −(1/Σ_i w_{y_i}) Σ_i w_{y_i} log softmax(z_i)_{y_i}``.

    The baseline of LDAM-DRW (Cao et al., NeurIPS 2019, ``cifar_train.py``) and FBL. With a
    train rule's class weights ``w`` (reweight / DRW) the mean is weighted as in
    ``F.cross_entropy(weight=w)``; without them ``w = 1``. No hyper-parameters.
    """

    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        features: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        w = None if weight is None else weight.float()
        return F.cross_entropy(logits.float(), targets, weight=w)


@LOSSES.register("ce", head="linear", class_weights=True)
def ce(class_counts: torch.Tensor) -> LTLoss:
    """Cross-entropy; ``class_counts`` is only validated."""
    return CELoss(class_counts)
