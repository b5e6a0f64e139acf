"""LTContext: the one way dataset facts (and stage artifacts) reach losses, rules, methods."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class LTContext:
    num_classes: int
    class_counts: torch.Tensor  # int64 [C], training split
    device: torch.device
    data: Any = None  # the LTData being trained on (feature caches); None when only restoring
    artifacts: str | None = None  # root of the stage artifacts (lt_ray.artifacts)
    load_base: bool = True  # False: a state dict will be loaded over the method (restoring)

    @property
    def prior(self) -> torch.Tensor:
        counts = self.class_counts.double()
        return (counts / counts.sum()).float()
