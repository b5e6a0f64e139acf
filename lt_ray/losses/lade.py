"""LADE: label-distribution-disentangling loss (Hong et al., CVPR 2021)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lt_ray.errors import ConfigError
from lt_ray.losses.base import LOSSES, LTLoss


class LADELoss(LTLoss):
    """PriorCE + α·LADE, LADE repo ``loss/PriorCELoss.py``, ``loss/LADELoss.py`` (METHODS.md §8).

    ``L = CE(z + log π, y) + α·L_LADE`` with ``π_j = n_j/N`` and, over the batch ``B``,

    - ``A_y = (1/(|B_y| + 1e-8)) Σ_{i∈B_y} z_{i,y}`` (0 for a class absent from the batch),
    - ``Bt_y = logsumexp_{i∈B}(z_{i,y} − log π_y + log(1/C)) − log|B|`` (all samples),
    - ``est_y = A_y − Bt_y − λ·Bt_y²`` (the regularised Donsker–Varadhan / ReMINE bound),
    - ``L_LADE = −Σ_y π_y·est_y`` (every class, absent ones included).

    The repo's ``+1e-9`` inside ``log π`` is omitted (all counts are positive). Train-rule class
    weights are ignored: the loss already models the training prior. Inference uses raw ``z``.

    Args:
        class_counts: training samples per class, [C].
        alpha: weight α of the LADE term relative to PriorCE (dimensionless; 0 gives BSCE).
        remine_lambda: ReMINE regulariser λ on ``Bt_y²`` (dimensionless).
    """

    def __init__(
        self, class_counts: torch.Tensor, *, alpha: float, remine_lambda: float
    ) -> None:
        super().__init__(class_counts)
        if alpha < 0:
            raise ConfigError(f"lade loss: method.loss_args.alpha must be >= 0, got {alpha}")
        if remine_lambda < 0:
            raise ConfigError(
                f"lade loss: method.loss_args.remine_lambda must be >= 0, got {remine_lambda}"
            )
        self.register_buffer("prior", self.class_counts / self.class_counts.sum(), persistent=False)
        self.alpha = float(alpha)
        self.remine_lambda = float(remine_lambda)

    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        features: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        z = logits.float()
        batch, num_classes = z.shape
        log_prior = torch.log(self.prior)
        prior_ce = F.cross_entropy(z + log_prior, targets)
        if self.alpha == 0:
            return prior_ce
        onehot = F.one_hot(targets, num_classes).to(z.dtype)  # [B, C]
        first = (z * onehot).sum(0) / (onehot.sum(0) + 1e-8)  # A_y, [C]
        shifted = z - log_prior - math.log(num_classes)  # z − log π_y + log(1/C)
        second = torch.logsumexp(shifted, dim=0) - math.log(batch)  # Bt_y, [C]
        estimate = first - second - self.remine_lambda * second**2
        return prior_ce + self.alpha * -(self.prior * estimate).sum()


@LOSSES.register("lade", head="linear", class_weights=False)
def lade(
    class_counts: torch.Tensor, *, alpha: float = 0.1, remine_lambda: float = 0.1
) -> LTLoss:
    """LADE with the repo's config defaults (its CIFAR-100 README run uses remine_lambda=0.01)."""
    return LADELoss(class_counts, alpha=alpha, remine_lambda=remine_lambda)
