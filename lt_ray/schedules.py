"""Learning-rate schedules as functions of the epoch and the total epoch count.

The original code bases hard-code steps at epochs 160/180 of 200, which never fire in shorter
runs; here milestones are fractions of ``num_epochs``. LR is set per epoch, as in LDAM-DRW/FBL.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

from lt_ray.config import OptimConfig
from lt_ray.errors import ConfigError

SCHEDULES: dict[str, Callable[[int, int, OptimConfig, int], float]] = {}


def warmup_length(cfg: OptimConfig, num_epochs: int) -> int:
    """Warmup epochs, capped at a tenth of the run so short runs are not all warmup."""
    return min(cfg.warmup_epochs, num_epochs // 10)


def step_epochs(cfg: OptimConfig, num_epochs: int) -> list[int]:
    """The 0-indexed epochs from which each step of a step schedule applies: the milestone
    fraction of ``num_epochs``, plus ``milestone_lag_epochs`` (LDAM-DRW: lr * 0.01 once
    epoch+1 > 160 of 200, i.e. from epoch 160 on; PaCo: once epoch > 320 of 400, from 321 on)."""
    return [int(round(m * num_epochs)) + cfg.milestone_lag_epochs for m in cfg.milestones]


def _step(epoch: int, num_epochs: int, cfg: OptimConfig, warmup: int) -> float:
    passed = bisect.bisect_right(step_epochs(cfg, num_epochs), epoch)
    return 1.0 if passed == 0 else cfg.decay[passed - 1]


def _cosine(epoch: int, num_epochs: int, cfg: OptimConfig, warmup: int) -> float:
    span = max(num_epochs - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / span))


def _constant(epoch: int, num_epochs: int, cfg: OptimConfig, warmup: int) -> float:
    return 1.0


SCHEDULES.update(step=_step, cosine=_cosine, constant=_constant)


def lr_factor(epoch: int, num_epochs: int, cfg: OptimConfig) -> float:
    """Multiplier of ``cfg.lr`` for 0-indexed ``epoch``: linear warmup ``(epoch+1)/warmup``,
    then the named schedule."""
    warmup = warmup_length(cfg, num_epochs)
    if epoch < warmup:
        return (epoch + 1) / warmup
    return SCHEDULES[cfg.schedule](epoch, num_epochs, cfg, warmup)


def last_change_epoch(cfg: OptimConfig, num_epochs: int) -> int:
    """The 0-indexed epoch from which the lr no longer changes: the end of the warmup, the last
    step of a step schedule, or ``num_epochs`` for cosine (it decays until the last epoch)."""
    warmup = warmup_length(cfg, num_epochs)
    if cfg.schedule == "cosine":
        return num_epochs
    if cfg.schedule == "step":
        steps = step_epochs(cfg, num_epochs)
        return max([warmup, *(b for b in steps if b < num_epochs)])
    return warmup


def validate_schedule(cfg: OptimConfig) -> None:
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(
            f"optim.schedule={cfg.schedule!r} is unknown (known: {', '.join(SCHEDULES)})"
        )
    if len(cfg.milestones) != len(cfg.decay):
        raise ConfigError(
            "optim.milestones and optim.decay need the same length "
            f"(got {len(cfg.milestones)} and {len(cfg.decay)})"
        )
    if any(not (0 < d < math.inf) for d in cfg.decay):
        raise ConfigError(f"optim.decay must hold lr multipliers > 0, got {cfg.decay}")
    if cfg.warmup_epochs < 0:
        raise ConfigError(f"optim.warmup_epochs must be >= 0, got {cfg.warmup_epochs}")
    if cfg.milestone_lag_epochs < 0:
        raise ConfigError("optim.milestone_lag_epochs must be >= 0 (epochs a step waits after "
                          f"its milestone), got {cfg.milestone_lag_epochs}")
    if list(cfg.milestones) != sorted(cfg.milestones) or any(
        not 0 < m <= 1 for m in cfg.milestones
    ):
        raise ConfigError(
            f"optim.milestones must be increasing fractions in (0, 1], got {cfg.milestones}"
        )
