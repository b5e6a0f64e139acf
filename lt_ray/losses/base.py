"""The shared loss interface and the LOSSES registry."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lt_ray.errors import ConfigError
from lt_ray.registry import Registry

LossFactory = Callable[..., "LTLoss"]
LOSSES: Registry[LossFactory] = Registry("loss")


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
    factory = LOSSES.get(name)
    params = inspect.signature(factory).parameters
    return {p.name: p.default for p in params.values() if p.kind is p.KEYWORD_ONLY}


def _python_name(key: str) -> str:
    """``lambda`` is a Python keyword: the parameter is spelled ``lambda_``."""
    import keyword

    return f"{key}_" if keyword.iskeyword(key) else key


def build_loss(name: str, class_counts: Any, **hparams: Any) -> LTLoss:
    """Build registered loss ``name`` for the given training class counts.

    Unknown hyper-parameter names raise a ConfigError listing the valid ones.
    """
    hparams = {_python_name(k): v for k, v in hparams.items()}
    known = loss_hparams(name)
    unknown = sorted(set(hparams) - set(known))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in known.items()) or "none"
        raise ConfigError(
            f"loss {name!r} has no hyper-parameter {', '.join(map(repr, unknown))} "
            f"(valid: {valid}); set them as method.loss_args.NAME"
        )
    counts = torch.as_tensor(class_counts, dtype=torch.float32)
    return LOSSES.get(name)(counts, **hparams)
