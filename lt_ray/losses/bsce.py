"""Balanced Softmax cross-entropy (Ren et al., NeurIPS 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lt_ray.losses.base import LOSSES, LTLoss


class BalancedSoftmaxLoss(LTLoss):
    """Balanced Softmax, BALMS ``loss/BalancedSoftmaxLoss.py`` (METHODS.md §6).

    ``L_BS = CE(z + log n, y)``, with ``n`` the training counts per class added to every sample's
    logits, i.e. ``p̃_j = n_j e^{z_j} / Σ_c n_c e^{z_c}``. Inference uses the raw ``z``. Optional
    class weights are applied as in ``F.cross_entropy(weight=w)`` (rarely wanted: the count term
    already corrects for the prior). No hyper-parameters.
    """

    def __init__(self, class_counts: torch.Tensor) -> None:
        super().__init__(class_counts)
        self.register_buffer("log_counts", torch.log(self.class_counts), persistent=False)

    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        features: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        w = None if weight is None else weight.float()
        return F.cross_entropy(logits.float() + self.log_counts, targets, weight=w)


@LOSSES.register("bsce", head="linear", class_weights=True)
def bsce(class_counts: torch.Tensor) -> LTLoss:
    """Balanced Softmax cross-entropy for the given training class counts."""
    return BalancedSoftmaxLoss(class_counts)
