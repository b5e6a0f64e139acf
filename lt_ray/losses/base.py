"""The shared loss interface and the LOSSES registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lt_ray.config import hparam_defaults, resolve_hparams
from lt_ray.errors import ConfigError
from lt_ray.registry import Registry

LossFactory = Callable[..., "LTLoss"]
#: Every loss registers with two traits: ``head`` (the classifier head its logits assume:
#: ``linear`` raw logits or ``normed`` cosines) and ``class_weights`` (whether ``forward`` uses
#: a train rule's ``weight``), e.g. ``@LOSSES.register("ldam", head="normed", class_weights=True)``.
LOSSES: Registry[LossFactory] = Registry("loss")


@dataclass(frozen=True)
class LossTraits:
    """What a loss needs from the rest of the method (registry metadata, see ``LOSSES``)."""

    head: str  # the head whose outputs the loss expects: linear | normed
    class_weights: bool  # True when forward() applies a train rule's per-class weight


def loss_traits(name: str) -> LossTraits:
    """The declared head and class-weight use of loss ``name``."""
    meta = LOSSES.meta(name)
    return LossTraits(head=meta["head"], class_weights=meta["class_weights"])


class LTLoss(nn.Module):
    """Base of every loss: knows the training class counts, returns the batch-mean loss.

    Call as ``loss(logits, targets, features=None, weight=None)``:
    ``logits`` [B, C] (cosines for losses on a normed head), ``targets`` [B] int64,
    ``features`` [B, D] the pooled features (FeaBal needs them), ``weight`` [C] optional
    per-class weights from a train rule (reweight / DRW).
    """

    #: True when the loss reads ``features`` (the method then passes them).
    needs_features: bool = False

    def __init__(self, class_counts: torch.Tensor) -> None:
        super().__init__()
        counts = torch.as_tensor(class_counts, dtype=torch.float32).flatten()
        if counts.numel() == 0 or bool((counts <= 0).any()):
            raise ConfigError("every class needs at least one training sample for the loss")
        self.register_buffer("class_counts", counts, persistent=False)

    @property
    def num_classes(self) -> int:
        return int(self.class_counts.numel())

    @property
    def log_prior(self) -> torch.Tensor:
        """log(n_j / N), [C]."""
        return torch.log(self.class_counts / self.class_counts.sum())

    def set_epoch(self, epoch: int, num_epochs: int = 200) -> None:
        """Hook called by the engine at the start of every epoch (0-indexed) with the run's
        epoch count (default 200, the CIFAR-LT protocol). Default: no-op."""

    @property
    def logit_scale(self) -> float:
        """What turns the head's outputs into calibrated logits at test time: 1 for a linear
        head; LDAM's ``s`` for the cosines of a normed head (``predict`` returns ``s·cos``)."""
        return 1.0

    def last_change_epoch(self, num_epochs: int) -> int:
        """The 0-indexed epoch from which ``set_epoch`` no longer changes the loss (0: never
        does); a curriculum that moves every epoch returns ``num_epochs``."""
        return 0

    def forward(  # noqa: D102
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        features: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


def loss_hparams(name: str) -> dict[str, Any]:
    """Keyword hyper-parameters of loss ``name`` with their defaults."""
    return hparam_defaults(LOSSES.get(name))


def resolve_loss_args(name: str, given: Mapping[Any, Any]) -> dict[str, Any]:
    """Every hyper-parameter of loss ``name``: ``given`` coerced to the declared types (a
    ConfigError names ``method.loss_args.KEY`` and the expected type), the rest at defaults."""
    return resolve_hparams(
        LOSSES.get(name), given, section="method.loss_args", owner=f"loss {name!r}"
    )


def build_loss(name: str, class_counts: Any, **hparams: Any) -> LTLoss:
    """Build registered loss ``name`` for the given training class counts.

    Unknown hyper-parameter names and values of the wrong type raise a ConfigError naming them.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float32)
    return LOSSES.get(name)(counts, **resolve_loss_args(name, hparams))
