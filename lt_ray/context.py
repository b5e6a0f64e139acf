"""LTContext: the one way dataset facts reach losses, rules and methods."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class LTContext:
    num_classes: int
    class_counts: torch.Tensor  # int64 [C], training split
    device: torch.device
    data: Any = None  # the LTData being trained on; None when only restoring a checkpoint
    #: the stage's pooled features of every split [N, D] (a method's ``prepare`` product), or
    #: None: the method then encodes images itself
    features: dict[str, torch.Tensor] | None = None

    @property
    def prior(self) -> torch.Tensor:
        counts = self.class_counts.double()
        return (counts / counts.sum()).float()
