"""The Method interface: what the one training loop (engine.fit) calls.

A method owns its networks and loss. The engine calls, in order: ``on_epoch_start`` once per
epoch, ``sampler`` to pick the epoch's sampler, ``training_step`` per batch (then backward and
the optimizer step), and ``predict`` for every evaluation. Methods never run a loop of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from lt_ray.context import LTContext
from lt_ray.registry import Registry

MethodFactory = Callable[..., "Method"]
METHODS: Registry[MethodFactory] = Registry("method")


class StepOutput(NamedTuple):
    loss: torch.Tensor  # scalar to back-propagate
    logits: torch.Tensor  # [B, C] for the running train accuracy
    extras: dict[str, torch.Tensor]  # scalars for logging only


class Method(nn.Module):
    """Base class. Subclasses implement :meth:`training_step`; the rest has sensible defaults."""

    def __init__(self, ctx: LTContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.epoch = 0
        self.num_epochs = 1

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Called before every epoch (0-indexed): DRW switches, curricula, schedules."""
        self.epoch, self.num_epochs = epoch, num_epochs

    def sampler(self) -> tuple[str, dict[str, Any]] | None:
        """The sampler for the current epoch, or None for ``train.sampler``."""
        return None

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups; a group may carry ``lr_scale`` (multiplies the lr)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def training_step(self, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation logits [B, C]; argmax is the prediction."""
        raise NotImplementedError
