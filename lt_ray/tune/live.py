"""A study's trials as they stand, read from its storage (the web UI's Studies tab).

Tune's own ExperimentAnalysis reads the experiment state and the trials' results that the
study's driver keeps writing into ``<study>/tune/``: no Ray client, no connection to the
cluster that runs the study, so any machine that sees the storage can watch it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from lt_ray import storage
from lt_ray.tune.export import trial_status
from lt_ray.tune.search import CELL_KEY
from lt_ray.tune.study_folder import TUNE_DIR, read_study_file

UNFINISHED = {"RUNNING": "running", "PENDING": "pending", "PAUSED": "paused"}  # Tune's -> ours


def trial_progress(study_dir: str) -> pd.DataFrame | None:
    """A row per trial: id, status (a finished trial's as ``trials.parquet`` has it), cell,
    epochs done, the study's first objective, the searched hyper-parameters; None when Tune has
    not saved the experiment yet."""
    from ray.tune import ExperimentAnalysis
    from ray.tune.error import TuneError

    study_dir = storage.normalize(study_dir)
    study = read_study_file(study_dir)
    metric = (study.get("metric") or ["val_hm"])[0]
    space = list((study.get("spec") or {}).get("space") or {})
    labels = {int(c["index"]): c.get("label", "") for c in study.get("cells") or []}
    try:
        analysis = ExperimentAnalysis(storage.join(study_dir, TUNE_DIR))
    except (TuneError, ValueError, FileNotFoundError, OSError):
        return None
    rows = []
    for trial in analysis.trials:
        config: dict[str, Any] = dict(trial.config or {})
        result = trial.last_result or {}
        cell = config.get(CELL_KEY)
        status = UNFINISHED.get(trial.status) or trial_status(result, trial.status)
        row = {"trial_id": trial.trial_id, "status": status,
               "cell": labels.get(int(cell), str(cell)) if isinstance(cell, int) else "",
               "epoch": result.get("epoch"), metric: result.get(metric)}
        row.update({key: config.get(key) for key in space})
        rows.append(row)
    return pd.DataFrame(rows)


def describe(frame: pd.DataFrame) -> str:
    """``12 trials: 3 running, 9 completed`` and whether the study is still going."""
    counts = frame["status"].value_counts()
    parts = ", ".join(f"{n} {status}" for status, n in counts.items())
    return f"{len(frame)} trials: {parts}"


def is_running(frame: pd.DataFrame | None) -> bool:
    """Whether a trial of ``frame`` is still to finish."""
    return frame is not None and bool(frame["status"].isin(UNFINISHED.values()).any())
