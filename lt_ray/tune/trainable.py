"""The Ray Tune function trainable: one trial = one ``experiment.run`` with Tune reporting.

Every evaluated epoch is reported with ``tune.report`` (flat ``{split}_{metric}`` values) and
the resumable checkpoint; the last report also carries ``final.json`` (per-class recall, class
names, train counts, provenance) inside its checkpoint, which the Parquet export reads.
A trial restarted by Tune continues from ``tune.get_checkpoint()``.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from lt_ray.config import ExperimentConfig
from lt_ray.data import build_dataset
from lt_ray.experiment import CHECKPOINT_FILE, run

FINAL_FILE = "final.json"


def train_trial(
    config: dict[str, Any],
    *,
    base: dict[str, Any],
    cell: dict[str, Any],
    data_root: str | None,
    resources: dict[str, float],
) -> None:
    """Tune entry point. ``config`` holds the searched dotted keys; ``base`` and ``cell`` are
    the study's fixed config and grid values (paths already absolute)."""
    from lt_ray.results.provenance import collect_provenance

    cfg = ExperimentConfig.from_dict(base).replace({**cell, **config})
    work = Path(tempfile.mkdtemp(prefix="lt-ray-trial-"))
    resume = False
    previous = tune.get_checkpoint()
    if previous is not None:
        with previous.as_directory() as folder:
            shutil.copy2(Path(folder) / CHECKPOINT_FILE, work / CHECKPOINT_FILE)
        resume = True

    data = build_dataset(cfg.data, data_root)

    def report(record: dict[str, Any], checkpoint: Path | None,
               per_class: dict[str, list[float]]) -> None:
        metrics = {k: v for k, v in record.items() if isinstance(v, (int, float))}
        if checkpoint is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="lt-ray-ckpt-") as folder:
            shutil.copy2(checkpoint, Path(folder) / CHECKPOINT_FILE)
            if record["epoch"] == cfg.train.epochs:
                final = {
                    "per_class": {k: [_none_if_nan(x) for x in v] for k, v in per_class.items()},
                    "class_names": list(data.class_names),
                    "train_class_counts": data.class_counts.tolist(),
                    "provenance": collect_provenance(resources),
                }
                (Path(folder) / FINAL_FILE).write_text(json.dumps(final))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        run(cfg, work, data=data, report=report, resume=resume)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _none_if_nan(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x
