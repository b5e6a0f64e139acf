"""Label-distribution-aware margin loss (Cao et al., NeurIPS 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lt_ray.errors import ConfigError
from lt_ray.losses.base import LOSSES, LTLoss


class LDAMLoss(LTLoss):
    """LDAM, LDAM-DRW ``losses.py`` (METHODS.md §7).

    The logits must be cosines from a NormedLinear head. Per-class margins
    ``m_j = K / n_j^{1/4}`` with ``K`` such that ``max_j m_j = max_m`` (the rarest class); the loss
    is ``CE(s·(cos − m_y·1[j = y]), y, weight)``: only the target cosine loses its margin. Class
    weights (DRW) are applied as in ``F.cross_entropy(weight=w)``. Inference: ``argmax cos``.

    Args:
        class_counts: training samples per class, [C].
        max_m: the largest margin, in cosine units (0 disables margins: plain scaled CE).
        s: the scale applied to the margin-adjusted cosines (an inverse temperature).
    """

    def __init__(self, class_counts: torch.Tensor, *, max_m: float, s: float) -> None:
        super().__init__(class_counts)
        if max_m < 0:
            raise ConfigError(f"ldam loss: method.loss_args.max_m must be >= 0, got {max_m}")
        if s <= 0:
            raise ConfigError(f"ldam loss: method.loss_args.s must be > 0, got {s}")
        inv_root4 = self.class_counts.pow(-0.25)
        self.register_buffer("margins", inv_root4 * (max_m / inv_root4.max()), persistent=False)
        self.max_m = float(max_m)
        self.s = float(s)

    @property
    def logit_scale(self) -> float:
        return self.s

    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        features: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cos = logits.float()
        onehot = F.one_hot(targets, cos.shape[1]).to(cos.dtype)
        adjusted = self.s * (cos - onehot * self.margins[targets].unsqueeze(1))
        w = None if weight is None else weight.float()
        return F.cross_entropy(adjusted, targets, weight=w)


@LOSSES.register("ldam", head="normed", class_weights=True)
def ldam(class_counts: torch.Tensor, *, max_m: float = 0.5, s: float = 30.0) -> LTLoss:
    """LDAM with the paper's CIFAR defaults ``max_m`` = 0.5, ``s`` = 30."""
    return LDAMLoss(class_counts, max_m=max_m, s=s)
