"""Early stopping per grid cell, with rungs placed after each trial's last schedule phase.

ASHA compares trials at rungs (epochs). Two rules keep that comparison sound:

* **Per cell.** Cells are comparison axes (IF 10 vs IF 100 ...): their metrics differ by design,
  so each cell gets its own ASHA (:class:`CellScheduler`) and ``max_t`` = that cell's own
  ``train.epochs`` (a grid axis included). ``train.epochs`` searched in ``space:`` is refused:
  trials of one cell would reach a rung at different points of their schedules.
* **After the last phase.** A rung before the last lr decay or the DRW switch ranks trials on
  an unfinished schedule (at epoch 40 of 200 every LDAM-DRW trial still trains unweighted at
  the peak lr). :func:`lt_ray.tune.validate.check_rung` refuses a ``grace_period`` (the first
  rung) before the last phase of any trial the cell can run.

:func:`make_scheduler` builds the study's scheduler from its spec.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from lt_ray.tune.search import CELL_KEY
from lt_ray.tune.spec import SweepSpec


class CellScheduler(FIFOScheduler):
    """Routes every trial to its cell's scheduler (ASHA); trials run in submission order."""

    def __init__(self, schedulers: dict[int, TrialScheduler]) -> None:
        super().__init__()
        self._schedulers = schedulers

    def _of(self, trial: Any) -> TrialScheduler:
        return self._schedulers[int(trial.config[CELL_KEY])]

    def set_search_properties(self, metric: Any, mode: Any, **spec: Any) -> bool:
        return True  # fixed per cell at construction

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "; ".join(f"cell {i}: {s.debug_string()}" for i, s in self._schedulers.items())


def cell_asha(
    *, metric: str, mode: str, epochs: int, grace_period: int, reduction_factor: int
) -> ASHAScheduler:
    """ASHA on the ``epoch`` counter with ``max_t`` = the cell's epochs.

    ``stop_last_trials=False``: a trial that reaches its last epoch ends on its own (so only a
    real early stop is reported as one).
    """
    return ASHAScheduler(
        time_attr="epoch", max_t=epochs, metric=metric, mode=mode,
        grace_period=min(grace_period, epochs), reduction_factor=reduction_factor,
        stop_last_trials=False,
    )


def rungs(epochs: int, grace_period: int, reduction_factor: int) -> list[int]:
    """The epochs at which ASHA compares trials: ``grace * rf^k <= epochs``."""
    out, t = [], float(grace_period)
    while t <= epochs:
        out.append(int(math.ceil(t)))
        t *= reduction_factor
    return out


def make_scheduler(spec: SweepSpec) -> CellScheduler | None:
    """One ASHA per cell (ranking by the first objective), or None."""
    if spec.scheduler == "none":
        return None
    return CellScheduler({
        c.index: cell_asha(metric=spec.metrics[0], mode=spec.modes[0],
                           epochs=int(spec.resolve_cell(c).config.train.epochs),
                           grace_period=spec.grace_period,
                           reduction_factor=spec.reduction_factor)
        for c in spec.cells()
    })
