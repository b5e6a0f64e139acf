"""From a config to a trained method: validation, building, one run on disk.

``validate`` checks everything that can be checked without data (names in registries,
hyper-parameter names, ranges), so a bad input fails before any work starts. ``run`` is what
``lt-ray train`` and the Ray trainable both call.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lt_ray import __version__
from lt_ray.config import ExperimentConfig
from lt_ray.context import LTContext
from lt_ray.data import SAMPLERS, LTData, build_dataset, validate_data_config
from lt_ray.engine import EVAL_PRECISIONS, PRECISIONS, FitResult, Reporter, fit, resolve_device
from lt_ray.errors import ConfigError
from lt_ray.losses import LOSSES, build_loss
from lt_ray.methods import METHODS, Method
from lt_ray.models import HEADS, MODELS
from lt_ray.rules import RULES, build_rule
from lt_ray.schedules import validate_schedule

log = logging.getLogger(__name__)
METRICS_FILE, CHECKPOINT_FILE, CONFIG_FILE = "metrics.json", "checkpoint.pt", "config.yaml"


def recipe(cfg: ExperimentConfig) -> dict[str, str]:
    """The method's effective loss, rule and head (config overrides the recipe defaults)."""
    meta = METHODS.meta(cfg.method.name)
    return {
        "loss": cfg.method.loss or meta.get("loss", "ce"),
        "rule": cfg.method.rule or meta.get("rule", "none"),
        "head": cfg.model.head or meta.get("head", "linear"),
    }


def validate(cfg: ExperimentConfig) -> None:
    """Raise ConfigError for anything wrong in ``cfg`` that needs no data to find."""
    validate_data_config(cfg.data)
    MODELS.get(cfg.model.arch)
    parts = recipe(cfg)
    HEADS.get(parts["head"])
    LOSSES.get(parts["loss"])
    RULES.get(parts["rule"])
    dummy_counts = torch.tensor([10, 5])
    build_loss(parts["loss"], dummy_counts, **cfg.method.loss_args)
    build_rule(parts["rule"], dummy_counts, **cfg.method.rule_args)
    if cfg.method.mixup_alpha < 0:
        raise ConfigError(f"method.mixup_alpha must be >= 0, got {cfg.method.mixup_alpha}")
    validate_schedule(cfg.optim)
    if not cfg.optim.lr > 0 or not math.isfinite(cfg.optim.lr):
        raise ConfigError(f"optim.lr must be a positive number, got {cfg.optim.lr}")
    t = cfg.train
    for key in ("epochs", "batch_size", "eval_batch_size", "eval_every", "checkpoint_every"):
        if getattr(t, key) <= 0:
            raise ConfigError(f"train.{key} must be > 0, got {getattr(t, key)}")
    if t.precision not in ("auto", *PRECISIONS):
        raise ConfigError(f"train.precision={t.precision!r} is unknown (auto, fp32, bf16, fp16)")
    if t.eval_precision not in EVAL_PRECISIONS:
        raise ConfigError(
            f"train.eval_precision={t.eval_precision!r} is unknown "
            f"({', '.join(EVAL_PRECISIONS)})"
        )
    SAMPLERS.get(t.sampler)
    resolve_device(t.device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_method(cfg: ExperimentConfig, data: LTData, device: torch.device) -> Method:
    ctx = LTContext(data.num_classes, data.class_counts.cpu(), device)
    return METHODS.get(cfg.method.name)(cfg, ctx)


def run(
    cfg: ExperimentConfig,
    out_dir: Path | None,
    *,
    data_root: str | None = None,
    report: Reporter | None = None,
    resume: bool = False,
    data: LTData | None = None,
) -> FitResult:
    """Validate, build data and method, train, and write results into ``out_dir``.

    ``out_dir`` receives ``checkpoint.pt`` (resumable, updated during training),
    ``config.yaml`` and, at the end, ``metrics.json``.
    """
    validate(cfg)
    if data is None:
        data = build_dataset(cfg.data, data_root)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.seed)
    method = build_method(cfg, data, device)
    checkpoint = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        checkpoint = out_dir / CHECKPOINT_FILE
    result = fit(method, data, cfg, report=report, checkpoint_path=checkpoint, resume=resume)
    if out_dir is not None:
        write_metrics(out_dir / METRICS_FILE, cfg, data, result)
    return result


def write_metrics(path: Path, cfg: ExperimentConfig, data: LTData, result: FitResult) -> None:
    payload: dict[str, Any] = {
        **{k: _json_number(v) for k, v in result.metrics.items()},
        "per_class_recall": {k: [_json_number(x) for x in v] for k, v in result.per_class.items()},
        "train_class_counts": data.class_counts.tolist(),
        "class_names": list(data.class_names),
        "num_train_images": int(data.class_counts.sum()),
        "history": [{k: _json_number(v) for k, v in r.items()} for r in result.history],
        "config": cfg.to_dict(),
        "lt_ray_version": __version__,
        "torch_version": torch.__version__,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


def _json_number(value: Any) -> Any:
    """NaN (an empty shot group) becomes null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
