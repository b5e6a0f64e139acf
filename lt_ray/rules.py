"""Train rules (LDAM-DRW, FBL): how class imbalance is corrected during training.

A rule answers two questions for every epoch: which per-class loss weights to use (or None) and
which sampler to draw the epoch with (or None for the configured one). Hyper-parameters are
config fields (``method.rule_args``), never literals in the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from lt_ray.config import hparam_defaults, resolve_hparams
from lt_ray.errors import ConfigError
from lt_ray.registry import Registry

RuleFactory = Callable[..., "TrainRule"]
#: Every rule registers with ``class_weights``: True when it acts through per-class loss weights
#: (so it does nothing with a loss that ignores them, such as LADE or GML).
RULES: Registry[RuleFactory] = Registry("train rule")


def effective_number_weights(class_counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Class-balanced weights ``(1 - beta) / (1 - beta^n_j)`` normalised to sum to C (Cui 2019).

    ``beta = 0`` gives uniform weights (all ones).
    """
    counts = class_counts.double()
    weights = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (weights / weights.sum() * len(counts)).float()


class TrainRule:
    """Base rule: no weights, no sampler change."""

    def class_weights(self, epoch: int, num_epochs: int) -> torch.Tensor | None:
        return None

    def sampler(self, epoch: int, num_epochs: int) -> tuple[str, dict[str, Any]] | None:
        return None

    def last_change_epoch(self, num_epochs: int) -> int:
        """The 0-indexed epoch from which the rule no longer changes (0: it never does)."""
        return 0


@RULES.register("none", class_weights=False)
def none_rule(class_counts: torch.Tensor) -> TrainRule:
    """Plain training: instance sampling and unweighted loss."""
    return TrainRule()


@dataclass(frozen=True)
class Reweight(TrainRule):
    class_counts: torch.Tensor
    beta: float

    def class_weights(self, epoch: int, num_epochs: int) -> torch.Tensor | None:
        return effective_number_weights(self.class_counts, self.beta)


@dataclass(frozen=True)
class Resample(TrainRule):
    beta: float

    def sampler(self, epoch: int, num_epochs: int) -> tuple[str, dict[str, Any]] | None:
        return ("effective", {"beta": self.beta})


@dataclass(frozen=True)
class DeferredReweight(TrainRule):
    class_counts: torch.Tensor
    beta: float
    start_fraction: float

    def start_epoch(self, num_epochs: int) -> int:
        return int(round(self.start_fraction * num_epochs))

    def last_change_epoch(self, num_epochs: int) -> int:
        return min(self.start_epoch(num_epochs), num_epochs)

    def class_weights(self, epoch: int, num_epochs: int) -> torch.Tensor | None:
        if epoch < self.start_epoch(num_epochs):
            return None
        return effective_number_weights(self.class_counts, self.beta)


@RULES.register("reweight", class_weights=True)
def reweight(class_counts: torch.Tensor, *, beta: float = 0.9999) -> TrainRule:
    """Effective-number class weights in the loss from the first epoch (beta: 0 = uniform)."""
    return Reweight(class_counts, beta)


@RULES.register("resample", class_weights=False)
def resample(class_counts: torch.Tensor, *, beta: float = 0.9999) -> TrainRule:
    """Draw each epoch with replacement, sample weight (1-beta)/(1-beta^n_y).

    Deviation from LDAM-DRW: its script builds this sampler but never passes it to the loader,
    so the official "Resample" trains like "None". Here it is really applied.
    """
    return Resample(beta)


@RULES.register("drw", class_weights=True)
def drw(
    class_counts: torch.Tensor, *, beta: float = 0.9999, start_fraction: float = 0.8
) -> TrainRule:
    """Deferred re-weighting: uniform weights, then effective-number weights from
    ``start_fraction`` of the epochs on (epoch 160 of 200 in LDAM-DRW)."""
    return DeferredReweight(class_counts, beta, start_fraction)


def rule_hparams(name: str) -> dict[str, Any]:
    """Keyword hyper-parameters of train rule ``name`` with their defaults."""
    return hparam_defaults(RULES.get(name))


def rule_uses_class_weights(name: str) -> bool:
    """True when train rule ``name`` acts through per-class loss weights (reweight, drw)."""
    return bool(RULES.meta(name)["class_weights"])


def resolve_rule_args(name: str, given: Mapping[Any, Any]) -> dict[str, Any]:
    """Every hyper-parameter of rule ``name``: ``given`` coerced to the declared types (a
    ConfigError names ``method.rule_args.KEY`` and the expected type), the rest at defaults."""
    return resolve_hparams(
        RULES.get(name), given, section="method.rule_args", owner=f"train rule {name!r}"
    )


def build_rule(name: str, class_counts: torch.Tensor, **hparams: Any) -> TrainRule:
    """Build train rule ``name``; unknown, mistyped or out-of-range hyper-parameters raise a
    ConfigError naming ``method.rule_args.KEY``."""
    args = resolve_rule_args(name, hparams)
    if "beta" in args and not 0.0 <= args["beta"] < 1.0:
        raise ConfigError(
            f"method.rule_args.beta must be in [0, 1) (0 = uniform weights), got {args['beta']}"
        )
    if "start_fraction" in args and not 0.0 <= args["start_fraction"] <= 1.0:
        raise ConfigError(
            "method.rule_args.start_fraction must be in [0, 1] (the share of the epochs before "
            f"re-weighting starts, e.g. 0.8), got {args['start_fraction']}"
        )
    return RULES.get(name)(torch.as_tensor(class_counts), **args)
