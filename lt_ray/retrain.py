"""Re-train the classifier of a trained base and re-weigh the ensemble (the GML plug-in, as the
web UI's Compare tab drives it).

:func:`compare_config` turns a base checkpoint (any method's run folder or stage artifact)
into the ``gml`` run that re-trains its classifier on the base's cached features with a chosen
loss; its data, seed and architecture are the base's own, so a base cannot meet data of another
dataset. :func:`retrain` runs it through the orchestrator's own steps (stages, the features
cache, ``engine.fit``) and keeps the test logits of the old and new heads, so that
:func:`ensemble_scores` can re-compute the ensemble for any ``t1``/``t2`` without training again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lt_ray.checkpoint import checkpoint_file, load_checkpoint
from lt_ray.config import ExperimentConfig
from lt_ray.engine import eval_dtype, fit, split_logits
from lt_ray.errors import CheckpointError, ConfigError
from lt_ray.experiment import build_run, runtime_device
from lt_ray.methods.gml import ENSEMBLE, ensemble
from lt_ray.metrics import split_metrics
from lt_ray.resolution import resolve
from lt_ray.results import schema as S

SPLIT = "test"  # what the comparison shows, as `lt-ray analyze` does
OUTPUTS = ("old", "new", "ens")
COMPARE_METRICS = ("acc", "gm", "hm", "lr", "many", "medium", "few")


@dataclass(frozen=True)
class Retrained:
    """A re-trained base: the run's config and final metrics, and what the ensemble needs."""

    cfg: ExperimentConfig  # resolved
    base: str  # the base's method name
    metrics: dict[str, float]  # the run's last-epoch metrics (val, test, fulltest)
    old: torch.Tensor  # float32 [N, C] test logits of the base's head (cpu)
    new: torch.Tensor  # float32 [N, C] test logits of the re-trained head (cpu)
    targets: torch.Tensor  # int64 [N] test labels
    class_counts: torch.Tensor  # int64 [C] training images per class
    class_names: tuple[str, ...]


def compare_config(base: str | Path, *, loss: str = "gml", epochs: int = 30,
                   ensemble_mode: str = "prob", t1: float = 1.0, t2: float = 1.0,
                   overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """The ``gml`` run that re-trains the classifier of the checkpoint ``base`` (a file or a run
    folder/artifact holding ``checkpoint.pt``) with ``loss`` for ``epochs``; ``overrides``
    (dotted keys) go on top. A CheckpointError when ``base`` is not an lt-ray checkpoint."""
    path = checkpoint_file(base)
    saved = load_checkpoint(path)
    own = saved.get("config") if saved["format_version"] is not None else None
    if not isinstance(own, dict) or not isinstance(own.get("data"), dict):
        raise CheckpointError(f"{path} is not an lt-ray checkpoint with a config; pick the "
                              "checkpoint.pt of an `lt-ray train` run or a stage artifact")
    if ensemble_mode not in ENSEMBLE[1:]:
        raise ConfigError(f"ensemble {ensemble_mode!r} is not one of {', '.join(ENSEMBLE[1:])}")
    model = own.get("model") if isinstance(own.get("model"), dict) else {}
    raw = {
        "data": own["data"], "seed": own.get("seed", 0),
        "model": {"arch": model.get("arch")} if model.get("arch") else {},
        "method": {"name": "gml", "loss": loss,
                   "args": {"ensemble": ensemble_mode, "t1": t1, "t2": t2}},
        "train": {"epochs": epochs},
        "pretrained": {"checkpoint": str(path.resolve())},
    }
    cfg = ExperimentConfig.from_dict(raw)
    return cfg.replace(overrides) if overrides else cfg


def retrain(cfg: ExperimentConfig, *, data_root: str | None = None,
            artifacts: str | None = None) -> Retrained:
    """Train the ``gml`` run ``cfg`` (of :func:`compare_config`) in this process, nothing
    written but the base's features cache; keep its heads' test logits."""
    resolved = resolve(cfg)
    cfg = resolved.config
    if cfg.method.name != "gml":
        raise ConfigError(f"method.name={cfg.method.name!r}: the comparison re-trains with gml")
    device = runtime_device(cfg)
    method, data = build_run(resolved, device, data_root=data_root, artifacts=artifacts)
    result = fit(method, data, cfg)
    method.eval()
    logits = split_logits(method, SPLIT, data.to(device), cfg.train, device,
                          eval_dtype(cfg.train, device))
    return Retrained(
        cfg=cfg, base=resolved.stage.config.method.name if resolved.stage else "base",
        metrics=dict(result.metrics),
        old=logits["old"].float().cpu(), new=logits["new"].float().cpu(),
        targets=getattr(data, SPLIT).y.cpu(), class_counts=data.class_counts.cpu(),
        class_names=tuple(data.class_names),
    )


def ensemble_scores(run: Retrained, t1: float, t2: float,
                    mode: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The test metrics (%, a row per output: old, new, ens) and the per-class recall (rows of
    ``per_class_figure``'s frame) with the ensemble at temperatures ``t1`` (new) and ``t2``
    (old); ``mode`` defaults to the run's ``method.args.ensemble``."""
    for name, value in (("t1", t1), ("t2", t2)):
        if not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
    mode = mode or run.cfg.method.args.get("ensemble", "prob")
    logits = {"old": run.old, "new": run.new, "ens": ensemble(run.new, run.old, mode, t1, t2)}
    rows, recall_rows = [], []
    for output in OUTPUTS:
        values, recall = split_metrics(SPLIT, logits[output].argmax(dim=1), run.targets,
                                       run.class_counts)
        rows.append({"output": output,
                     **{m: 100 * values[f"{SPLIT}_{m}"] for m in COMPARE_METRICS}})
        recall_rows += [{S.OUTPUT: output, S.CLASS_INDEX: i, S.CLASS_NAME: run.class_names[i],
                         S.TRAIN_COUNT: int(run.class_counts[i]), "mean": 100 * float(r),
                         "std": float("nan")} for i, r in enumerate(recall)]
    return pd.DataFrame(rows), pd.DataFrame(recall_rows)

