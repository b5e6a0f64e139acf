"""LTContext: the one way dataset facts reach losses, rules and methods."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LTContext:
    num_classes: int
    class_counts: torch.Tensor  # int64 [C], training split
    device: torch.device

    @property
    def prior(self) -> torch.Tensor:
        counts = self.class_counts.double()
        return (counts / counts.sum()).float()
