"""What a user sees while a study runs: one line per finished trial and a progress bar.

Ray Tune's own per-iteration status tables, its repeated warnings and the trials' log lines
are off by default (``lt-ray sweep --verbose`` brings them back, :func:`quiet_ray`). Instead
:class:`StudyConsole` prints, for every trial that ends, its cell, its id, its objective and the
best objective of its cell so far, above a progress bar over all the study's trials with the
elapsed time and an ETA (tqdm, which Optuna already depends on).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

from lt_ray.tune.search import CELL_KEY, FAILED_KEY, REPEAT_KEY, STOPPED_KEY

#: Loggers that print Ray's and Optuna's routine messages (a study's console stays readable).
NOISY_LOGGERS = ("ray", "ray.tune", "ray.train", "ray._private", "optuna")


def quiet_ray(verbose: bool) -> None:
    """Ray's and Optuna's loggers at WARNING (verbose) or ERROR (default)."""
    level = logging.WARNING if verbose else logging.ERROR
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


class StudyConsole(Callback):
    """One line per finished trial, and a progress bar over the whole study.

    It is part of the Tuner's run config, so a resumed study (``--resume``) reports with it too;
    the count of finished trials comes from Tune's trial list.

    Args:
        total: trials in the study (search trials and seed repeats).
        labels: the label of each grid cell, by index.
        metric, mode: the objective reported (the first one of a multi-objective study).
        write: where the lines go (None: ``tqdm.write``, above the bar).
    """

    def __init__(self, total: int, labels: dict[int, str], metric: str, mode: str, *,
                 write: Callable[[str], None] | None = None) -> None:
        self.total, self.labels, self.metric, self.mode = total, labels, metric, mode
        self.best: dict[int, float] = {}
        self._write = write
        self._bar: Any = None

    def setup(self, **info: Any) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=self.total, unit="trial", file=sys.stderr, dynamic_ncols=True,
                         desc="study")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_bar": None}  # Tune pickles its callbacks: not the bar

    def _line(self, text: str) -> None:
        if self._write is not None:
            self._write(text)
        else:
            from tqdm import tqdm

            tqdm.write(text)

    def _finish(self, trial: Any, trials: list, error: str | None) -> None:
        cell = int(trial.config.get(CELL_KEY, 0))
        result = trial.last_result or {}
        value = result.get(self.metric)
        where = self.labels.get(cell) or "study"
        kind = " (repeat)" if trial.config.get(REPEAT_KEY) else ""
        error = error or result.get(FAILED_KEY)
        if error:
            text = f"FAILED: {str(error).strip().splitlines()[-1][:160]}"
        else:
            scored = isinstance(value, (int, float)) and not math.isnan(value)
            if scored and not kind:
                better = max if self.mode == "max" else min
                self.best[cell] = better(self.best.get(cell, value), value)
            stopped = " (stopped early)" if result.get(STOPPED_KEY) else ""
            shown = f"{value:.4f}" if scored else "-"
            best = self.best.get(cell)
            text = (f"{self.metric} {shown}{stopped}"
                    + (f" | best in cell {best:.4f}" if best is not None else ""))
        done = 1 + sum(t.status in ("TERMINATED", "ERROR") for t in trials if t is not trial)
        self._line(f"[{done}/{self.total}] {where} | trial {trial.trial_id}{kind} | {text}")
        if self._bar is not None:
            self._bar.n = done
            self._bar.refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, trials, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, trials, "the trial's worker was lost and its retries are spent")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._bar is not None:
            self._bar.close()
