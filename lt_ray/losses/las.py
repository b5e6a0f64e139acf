"""Label-aware smoothing (MiSLAS stage 2, Zhong et al. CVPR 2021; METHODS.md §9)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lt_ray.errors import ConfigError
from lt_ray.losses.base import LOSSES, LTLoss

SHAPES = ("concave", "linear", "convex")


def smoothing_per_class(class_counts: torch.Tensor, smooth_head: float, smooth_tail: float,
                        shape: str = "concave") -> torch.Tensor:
    """Per-class smoothing ``eps_j`` from ``smooth_tail`` (rarest class) to ``smooth_head``
    (most frequent), as a function of ``x_j = (n_j - n_min) / (n_max - n_min)``:

    * concave: ``tail + (head - tail) * sin(pi/2 * x)`` (the MiSLAS default);
    * linear: ``tail + (head - tail) * x``;
    * convex: ``head + (head - tail) * sin(3pi/2 + pi/2 * x)``.

    Balanced counts (n_max = n_min) give ``smooth_head`` for every class.
    """
    if shape not in SHAPES:
        raise ConfigError(f"las loss: method.loss_args.shape={shape!r} is not one of "
                          f"{', '.join(SHAPES)}")
    n = torch.as_tensor(class_counts, dtype=torch.float64)
    spread = float(n.max() - n.min())
    if spread == 0:
        return torch.full_like(n, smooth_head).float()
    x = (n - n.min()) / spread
    if shape == "concave":
        eps = smooth_tail + (smooth_head - smooth_tail) * torch.sin(math.pi / 2 * x)
    elif shape == "linear":
        eps = smooth_tail + (smooth_head - smooth_tail) * x
    else:
        eps = smooth_head + (smooth_head - smooth_tail) * torch.sin(1.5 * math.pi + math.pi / 2 * x)
    return eps.float()


class LabelAwareSmoothing(LTLoss):
    """``(1 - eps_y) * (-log p_y) + eps_y * (-(1/C) sum_k log p_k)``, batch mean, with the
    per-class ``eps`` of :func:`smoothing_per_class`: frequent classes are smoothed more, which
    calibrates them down (MiSLAS ``methods.LabelAwareSmoothing``)."""

    def __init__(self, class_counts: torch.Tensor, *, smooth_head: float, smooth_tail: float,
                 shape: str) -> None:
        super().__init__(class_counts)
        for name, value in (("smooth_head", smooth_head), ("smooth_tail", smooth_tail)):
            if not 0 <= value < 1:
                raise ConfigError(f"las loss: method.loss_args.{name} must be in [0, 1), "
                                  f"got {value}")
        eps = smoothing_per_class(self.class_counts, smooth_head, smooth_tail, shape)
        self.register_buffer("epsilon", eps, persistent=False)

    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        features: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1)
        eps = self.epsilon[targets]
        nll = -logp.gather(1, targets.unsqueeze(1)).squeeze(1)
        return ((1 - eps) * nll - eps * logp.mean(dim=1)).mean()


@LOSSES.register("las", head="linear", class_weights=False)
def las(class_counts: torch.Tensor, *, smooth_head: float = 0.4, smooth_tail: float = 0.1,
        shape: str = "concave") -> LTLoss:
    """Label-aware smoothing; defaults are MiSLAS's CIFAR IF 100 values (0.4 -> 0.1)."""
    return LabelAwareSmoothing(class_counts, smooth_head=smooth_head, smooth_tail=smooth_tail,
                               shape=shape)
