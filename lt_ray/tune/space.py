"""The Optuna define-by-run space of one grid cell: its searched parameters, sampled in order,
a conditional one only when its ``when`` holds. Imports no Optuna (the trial is passed in).
"""

from __future__ import annotations

from typing import Any

from lt_ray.tune.spec import Param


class DefineByRun:
    """Optuna define-by-run space of one cell (a picklable callable, so Tune can resume it)."""

    def __init__(self, params: list[Param]) -> None:
        self.params = params

    def __call__(self, trial: Any) -> None:
        chosen: dict[str, Any] = {}
        for p in self.params:
            if any(chosen.get(k) != v for k, v in p.when.items()):
                continue
            chosen[p.key] = suggest(trial, p)


def suggest(trial: Any, p: Param) -> Any:
    """Sample ``p`` from an Optuna trial. ``randint`` bounds are inclusive on both ends."""
    a = p.args
    calls = {
        "choice": lambda: trial.suggest_categorical(p.key, list(a[0])),
        "uniform": lambda: trial.suggest_float(p.key, a[0], a[1]),
        "loguniform": lambda: trial.suggest_float(p.key, a[0], a[1], log=True),
        "randint": lambda: trial.suggest_int(p.key, int(a[0]), int(a[1])),
        "quniform": lambda: trial.suggest_float(p.key, a[0], a[1], step=a[2]),
    }
    return calls[p.dist]()
