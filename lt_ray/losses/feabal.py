"""Feature-balanced loss, FBL (FeaBal; repo juyongjiang/FBL ``loss.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lt_ray.errors import ConfigError
from lt_ray.losses.base import LOSSES, LTLoss

RAMP_FRACTION = 0.95  # curr reaches 1 at 95 % of the epochs (FBL: epoch 190 of 200)


class FeaBalLoss(LTLoss):
    """FeaBal, the FBL paper's loss (METHODS.md §4).

    Per-class strength ``δ_j = (log n_max − log n_j)/(log n_max − log n_min)`` (0 for the head,
    1 for the rarest class; all 0 when every count is equal). Every logit is shifted by the
    sample's feature norm, ``z'_ij = z_ij − curr·λ·δ_j/‖f_i‖₂``, and the loss is
    ``CE(z', y, weight)`` (train-rule class weights as in ``F.cross_entropy``). Gradients flow
    through ``‖f_i‖₂`` too; the norm is clamped at 1e-12 so all-zero features stay finite.

    Curriculum (FBL ``train.py``): ``set_epoch(e, E)`` sets ``curr = (e/(0.95·E))²`` for the
    0-indexed epoch ``e``. FBL writes ``(e/(E − 10))²`` with its fixed E = 200, i.e. the same
    curve (1 at 95 % of the run, 1.097 at the last epoch); scaling the 10 epochs with E keeps that
    curve in shorter runs, where ``E − 10`` would push ``curr`` to 3.6 at E = 20 (like the LR
    steps and DRW, which also scale with E). ``curr`` starts at 0 (FBL's epoch 0). Without the
    curriculum ``curr = 1`` always. At inference use the raw logits (FBL's ``curr = 0``).

    Args:
        class_counts: training samples per class, [C].
        lambda_: strength λ of the feature-norm margin, in logit units × feature-norm units
            (YAML key ``lambda``).
        curriculum: ramp ``curr`` quadratically over the epochs (True) or keep it at 1 (False).
    """

    needs_features = True

    def __init__(self, class_counts: torch.Tensor, *, lambda_: float, curriculum: bool) -> None:
        super().__init__(class_counts)
        if lambda_ < 0:
            raise ConfigError(f"feabal loss: method.loss_args.lambda must be >= 0, got {lambda_}")
        log_n = torch.log(self.class_counts)
        span = log_n.max() - log_n.min()
        delta = (log_n.max() - log_n) / span if bool(span > 0) else torch.zeros_like(log_n)
        self.register_buffer("delta", delta, persistent=False)
        self.lambda_ = float(lambda_)
        self.curriculum = bool(curriculum)
        self.curr = 0.0 if self.curriculum else 1.0

    def set_epoch(self, epoch: int, num_epochs: int = 200) -> None:
        """Set ``curr = (epoch / (RAMP_FRACTION·num_epochs))²`` (1 without the curriculum)."""
        if self.curriculum:
            self.curr = (epoch / (RAMP_FRACTION * num_epochs)) ** 2

    def last_change_epoch(self, num_epochs: int) -> int:
        """``curr`` grows every epoch until the last one (with the curriculum)."""
        return num_epochs if self.curriculum else 0

    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        features: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if features is None:
            raise ValueError(
                "feabal loss needs the pooled features: call loss(logits, targets, "
                "features=f) with f of shape [B, D]"
            )
        norms = features.float().flatten(1).norm(p=2, dim=1, keepdim=True).clamp_min(1e-12)
        adjusted = logits.float() - (self.curr * self.lambda_) * self.delta / norms
        w = None if weight is None else weight.float()
        return F.cross_entropy(adjusted, targets, weight=w)


@LOSSES.register("feabal", head="linear", class_weights=True)
def feabal(
    class_counts: torch.Tensor, *, lambda_: float = 60.0, curriculum: bool = True
) -> LTLoss:
    """FeaBal with FBL's default λ = 60 and its quadratic curriculum."""
    return FeaBalLoss(class_counts, lambda_=lambda_, curriculum=curriculum)
