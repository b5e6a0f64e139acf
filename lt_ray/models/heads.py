"""Classifier heads: a plain linear layer and the cosine (NormedLinear) head used by LDAM."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lt_ray.registry import Registry

HeadFactory = Callable[[int, int], nn.Module]
HEADS: Registry[HeadFactory] = Registry("head")


def reset_classifiers(module: nn.Module) -> None:
    """Initialise the classifiers inside a head ``module`` afresh: a linear layer as the
    ``linear`` head is at construction (kaiming-normal weight), every other part through its
    own ``reset_parameters`` (a cosine head; MiSLAS's LWS scale back to 1)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()
                nn.init.kaiming_normal_(m.weight)
            elif hasattr(m, "reset_parameters"):
                m.reset_parameters()


class NormedLinear(nn.Module):
    """Cosine classifier: ``cos_ij = <f_i/|f_i|, w_j/|w_j|>`` in [-1, 1] (LDAM-DRW ``use_norm``).

    The weight is stored as [in_features, num_classes] and initialised uniform(-1, 1) with every
    column renormalised to unit norm. The scale ``s`` is applied by the loss, not here.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, num_classes))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        weight = torch.empty_like(self.weight).uniform_(-1, 1)
        self.weight.copy_(weight.renorm(2, 1, 1e-5).mul(1e5))

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[1])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=1) @ F.normalize(self.weight, dim=0)


class CalibratedHead(nn.Module):
    """Features -> calibrated logits: ``scale · head(features)``, the head in fp32.

    What a softmax makes probabilities of: a linear head's logits (scale 1), or the ``s·cos``
    of a cosine head (LDAM's ``s``), so that temperatures mean the same for every base.
    """

    def __init__(self, head: nn.Module, scale: float = 1.0) -> None:
        super().__init__()
        self.head = head
        self.scale = float(scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.head(features.float()) * self.scale


@HEADS.register("linear")
def linear_head(in_features: int, num_classes: int) -> nn.Module:
    """Linear classifier (kaiming-normal weight, default bias): raw logits."""
    head = nn.Linear(in_features, num_classes)
    nn.init.kaiming_normal_(head.weight)
    return head


@HEADS.register("normed")
def normed_head(in_features: int, num_classes: int) -> nn.Module:
    """Cosine classifier (NormedLinear): outputs in [-1, 1], scaled by the loss (LDAM s=30)."""
    return NormedLinear(in_features, num_classes)
