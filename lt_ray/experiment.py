"""From a config to a trained method: resolution, validation, building, one run on disk.

``resolve`` makes the method's recipe explicit (loss, rule, head and every hyper-parameter);
``validate`` checks everything that can be checked without data (names in registries,
hyper-parameter names, types and ranges, loss/head/rule compatibility), so a bad input fails
before any work starts. Whether the requested device exists is a run-time check (``run``): a
study's driver may validate on a CPU-only head node while its trials run on GPU workers.
``run`` is what ``lt-ray train`` and the Ray trainable both call.
"""

from __future__ import annotations

import dataclasses
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
from lt_ray.config import ExperimentConfig, from_dict, to_dict
from lt_ray.context import LTContext
from lt_ray.data import SAMPLERS, LTData, build_dataset, expected_class_counts
from lt_ray.engine import EVAL_PRECISIONS, PRECISIONS, FitResult, Reporter, fit, resolve_device
from lt_ray.errors import ConfigError
from lt_ray.losses import LOSSES, build_loss
from lt_ray.losses.base import loss_traits, resolve_loss_args
from lt_ray.methods import METHODS, Method
from lt_ray.methods.base import NoArgs
from lt_ray.models import HEADS, MODELS
from lt_ray.registry import Registry
from lt_ray.rules import RULES, build_rule, resolve_rule_args, rule_uses_class_weights
from lt_ray.schedules import last_change_epoch, validate_schedule

log = logging.getLogger(__name__)
METRICS_FILE, CHECKPOINT_FILE, CONFIG_FILE = "metrics.json", "checkpoint.pt", "config.yaml"
DEVICE_TYPES = ("cpu", "cuda")
_HEAD_WHY = {
    "normed": "its logits are the cosines of the NormedLinear head",
    "linear": "it expects raw logits, not the unscaled cosines of the normed head",
}


def recipe(cfg: ExperimentConfig) -> dict[str, str]:
    """The method's effective loss, rule and head (config overrides the recipe defaults)."""
    meta = METHODS.meta(cfg.method.name)
    return {
        "loss": cfg.method.loss or meta.get("loss", "ce"),
        "rule": cfg.method.rule or meta.get("rule", "none"),
        "head": cfg.model.head or meta.get("head", "linear"),
    }


def _check_name(registry: Registry[Any], name: str, key: str) -> None:
    if name not in registry:
        raise ConfigError(f"{key}: {registry.unknown_message(name)}")


def resolve(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with its method's recipe made explicit; idempotent.

    ``method.loss``, ``method.rule`` and ``model.head`` are filled from the method's recipe
    (``METHODS.meta``) unless set; ``method.loss_args`` and ``method.rule_args`` hold every
    hyper-parameter of the resolved loss and rule: given values coerced to their declared types,
    the others at their defaults. A hyper-parameter the resolved loss/rule does not have, or a
    value of the wrong type, is a ConfigError naming ``method.loss_args.KEY``. A method with a
    ``resolve`` hook fills data-dependent defaults first (MiSLAS: per-IF smoothing); a method
    with its own loss (``own_loss``: RIDE, PaCo) has no loss, rule or head to choose: those keys
    stay empty, and setting them is a ConfigError. This is what a run records (config.yaml,
    metrics.json, the checkpoint).
    """
    _check_name(METHODS, cfg.method.name, "method.name")
    meta = METHODS.meta(cfg.method.name)
    if meta.get("resolve"):
        cfg = meta["resolve"](cfg)
    if meta.get("own_loss"):
        method = _own_loss_method(cfg)
        model = dataclasses.replace(cfg.model, head=None)
    else:
        parts = recipe(cfg)
        _check_name(LOSSES, parts["loss"], "method.loss")
        _check_name(RULES, parts["rule"], "method.rule")
        _check_name(HEADS, parts["head"], "model.head")
        method = dataclasses.replace(
            cfg.method,
            loss=parts["loss"],
            rule=parts["rule"],
            loss_args=resolve_loss_args(parts["loss"], cfg.method.loss_args),
            rule_args=resolve_rule_args(parts["rule"], cfg.method.rule_args),
        )
        model = dataclasses.replace(cfg.model, head=parts["head"])
    method = dataclasses.replace(method, args=to_dict(method_args(cfg)))
    from lt_ray.artifacts import pretrained_config

    stage = pretrained_config(cfg)  # recorded resolved: what the artifact's hash stands for
    pretrained = None if stage is None else stage.to_dict()
    return dataclasses.replace(cfg, method=method, model=model, pretrained=pretrained)


def _own_loss_method(cfg: ExperimentConfig) -> Any:
    """The method section of a method with its own loss: refuses loss, rule and head keys."""
    m = cfg.method
    given = [key for key, value in (("method.loss", m.loss), ("method.rule", m.rule),
                                    ("method.loss_args", m.loss_args),
                                    ("method.rule_args", m.rule_args),
                                    ("model.head", cfg.model.head)) if value]
    if given:
        raise ConfigError(
            f"method {m.name!r} has its own loss and heads, so {', '.join(given)} would do "
            f"nothing; remove it and set the method's hyper-parameters as method.args.NAME "
            "(see `lt-ray list`)"
        )
    return dataclasses.replace(m, loss=None, rule=None, loss_args={}, rule_args={})


def method_args(cfg: ExperimentConfig) -> Any:
    """``method.args`` as the method's typed argument dataclass (defaults filled in); unknown
    names, wrong types and out-of-range values are ConfigErrors naming ``method.args.NAME``."""
    _check_name(METHODS, cfg.method.name, "method.name")
    args_cls = METHODS.meta(cfg.method.name).get("args", NoArgs)
    return from_dict(args_cls, cfg.method.args, "method.args")


def check_compatible(cfg: ExperimentConfig, raw: ExperimentConfig | None = None) -> None:
    """Refuse a loss on the wrong head, and a re-weighting rule with a loss that ignores class
    weights. ``cfg`` is resolved; ``raw`` (the user's config) only improves the message."""
    m, head = cfg.method, cfg.model.head
    assert m.loss is not None and m.rule is not None and head is not None
    traits = loss_traits(m.loss)
    if head != traits.head:
        source = ""
        explicit = (raw or cfg).explicit
        if raw is not None and "head" not in (explicit.get("model") or {}):
            source = f" (the head of method {m.name!r})"
        raise ConfigError(
            f"loss {m.loss!r} needs model.head={traits.head} ({_HEAD_WHY[traits.head]}), but "
            f"model.head is {head!r}{source}; set model.head={traits.head}"
        )
    if not traits.class_weights and rule_uses_class_weights(m.rule):
        raise ConfigError(
            f"loss {m.loss!r} ignores class weights, so train rule {m.rule!r} would do nothing; "
            "use rule none or resample (set method.rule=none or method.rule=resample)"
        )


def check_device_name(name: str) -> None:
    """Syntax of ``train.device`` (auto, cpu, cuda, cuda:N); availability is checked at run time
    (:func:`runtime_device`), on the machine that trains."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ConfigError(f"train.device={name!r} is not a device (auto, cpu, cuda, cuda:N)")


def runtime_device(cfg: ExperimentConfig) -> torch.device:
    """The training device on this machine; a ConfigError when ``train.device`` asks for CUDA
    (or a CUDA device index) this machine does not have."""
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            raise ConfigError(
                f"train.device={cfg.train.device!r} but this machine has {count} CUDA "
                f"device(s) (cuda:0..cuda:{count - 1}); use cuda or auto"
            )
    return device


def validate(cfg: ExperimentConfig) -> None:
    """Raise ConfigError for anything wrong in ``cfg`` (raw or resolved) that needs no data to
    find. Device availability is not checked here (see :func:`runtime_device`)."""
    expected_class_counts(cfg.data)  # long-tail settings; no class may be left empty
    _check_name(MODELS, cfg.model.arch, "model.arch")
    resolved = resolve(cfg)
    m = resolved.method
    dummy_counts = torch.tensor([10, 5])
    if not METHODS.meta(m.name).get("own_loss"):
        check_compatible(resolved, cfg)
        build_loss(m.loss, dummy_counts, **m.loss_args)  # range checks live in the constructors
        build_rule(m.rule, dummy_counts, **m.rule_args)
    check_method = METHODS.meta(m.name).get("validate")
    if check_method is not None:  # checks across sections (PaCo: queue size vs batch)
        check_method(resolved)
    if not m.mixup_alpha >= 0 or not math.isfinite(m.mixup_alpha):
        raise ConfigError(f"method.mixup_alpha must be >= 0, got {m.mixup_alpha}")
    for key, value in (("seed", cfg.seed), ("data.split_seed", cfg.data.split_seed)):
        if not 0 <= value < 2**32:
            raise ConfigError(f"{key} must be in [0, 2**32 - 1] (a numpy seed), got {value}")
    validate_schedule(cfg.optim)
    o = cfg.optim
    if not o.lr > 0 or not math.isfinite(o.lr):
        raise ConfigError(f"optim.lr must be a positive number, got {o.lr}")
    if not 0 <= o.momentum < 1:
        raise ConfigError(f"optim.momentum must be in [0, 1), got {o.momentum}")
    if not 0 <= o.weight_decay < math.inf:
        raise ConfigError(f"optim.weight_decay must be a number >= 0, got {o.weight_decay}")
    if o.nesterov and o.momentum == 0:
        raise ConfigError("optim.nesterov needs optim.momentum > 0")
    t = cfg.train
    for key in ("epochs", "batch_size", "eval_batch_size", "eval_every", "checkpoint_every"):
        if getattr(t, key) <= 0:
            raise ConfigError(f"train.{key} must be > 0, got {getattr(t, key)}")
    for key in ("crop_padding", "cutout"):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key} must be >= 0 (0 disables it), got {getattr(t, key)}")
    if t.precision not in ("auto", *PRECISIONS):
        raise ConfigError(f"train.precision={t.precision!r} is unknown (auto, fp32, bf16, fp16)")
    if t.eval_precision not in EVAL_PRECISIONS:
        raise ConfigError(
            f"train.eval_precision={t.eval_precision!r} is unknown "
            f"({', '.join(EVAL_PRECISIONS)})"
        )
    if t.sampler not in SAMPLERS:
        raise ConfigError(f"train.sampler: {SAMPLERS.unknown_message(t.sampler)}")
    check_device_name(t.device)
    check_stages(resolved)


def check_stages(cfg: ExperimentConfig) -> None:
    """A method built on a pretrained model gets one (``pretrained:`` or
    ``method.args.checkpoint``); the ``pretrained:`` section is itself a valid config."""
    from lt_ray.artifacts import pretrained_config

    needs_base = METHODS.meta(cfg.method.name).get("needs_base", False)
    checkpoint = cfg.method.args.get("checkpoint")
    if cfg.pretrained is not None and not needs_base:
        raise ConfigError(
            f"method {cfg.method.name!r} trains from scratch and uses no pretrained model; "
            "remove the pretrained: section (a plug-in such as gml builds on one)"
        )
    if not needs_base:
        return
    if cfg.pretrained is None and not checkpoint:
        meta = METHODS.meta(cfg.method.name)
        base = meta.get("base_hint", "ce")
        external = " or give method.args.checkpoint=PATH" if "checkpoint" in {
            f.name for f in dataclasses.fields(meta.get("args", NoArgs))} else ""
        raise ConfigError(
            f"method {cfg.method.name!r} builds on a stage-1 model and has none: describe it "
            f"in the pretrained: section (e.g. --set pretrained.method.name={base} --set "
            f"pretrained.train.epochs=200){external}"
        )
    if cfg.pretrained is not None and checkpoint:
        raise ConfigError("give either the pretrained: section or method.args.checkpoint, "
                          "not both")
    if cfg.pretrained is not None:
        stage = pretrained_config(cfg)
        try:
            validate(stage)
        except ConfigError as exc:
            raise ConfigError(f"pretrained: {exc}") from None
        check_base = METHODS.meta(cfg.method.name).get("check_base")
        if check_base is not None:
            check_base(cfg, stage)


def last_phase_start(cfg: ExperimentConfig) -> int:
    """The 0-indexed epoch from which nothing in the recipe changes any more: the last lr step
    (or the end of the warmup), the DRW switch, the end of a loss curriculum; ``train.epochs``
    when something changes until the end (a cosine lr, FeaBal's curriculum). Metrics compared
    before it rank trials on an unfinished schedule."""
    cfg = resolve(cfg)
    epochs = cfg.train.epochs
    meta = METHODS.meta(cfg.method.name)
    if meta.get("own_loss"):
        own = meta["phase_end"](cfg) if "phase_end" in meta else 0
        return max(last_change_epoch(cfg.optim, epochs), own)
    counts = torch.tensor([10, 5])  # the phase boundaries do not depend on the counts
    loss = build_loss(cfg.method.loss, counts, **cfg.method.loss_args)
    rule = build_rule(cfg.method.rule, counts, **cfg.method.rule_args)
    return max(last_change_epoch(cfg.optim, epochs), rule.last_change_epoch(epochs),
               loss.last_change_epoch(epochs))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_method(cfg: ExperimentConfig, data: LTData | None, device: torch.device, *,
                 num_classes: int | None = None, class_counts: torch.Tensor | None = None,
                 artifacts: str | None = None, load_base: bool = True) -> Method:
    """The method of ``cfg`` for ``data`` (or, restoring a checkpoint without data, for the
    given class counts). ``artifacts`` is where stage-1 runs live; ``load_base=False`` builds
    the structure only, for a state dict loaded next."""
    counts = data.class_counts.cpu() if data is not None else torch.as_tensor(class_counts)
    ctx = LTContext(num_classes or len(counts), counts, device, data=data, artifacts=artifacts,
                    load_base=load_base)
    return METHODS.get(cfg.method.name)(cfg, ctx)


def run(
    cfg: ExperimentConfig,
    out_dir: Path | None,
    *,
    data_root: str | None = None,
    report: Reporter | None = None,
    resume: bool = False,
    data: LTData | None = None,
    artifacts: str | None = None,
    build_artifacts: bool = True,
) -> FitResult:
    """Validate and resolve ``cfg``, check the device, build data and method, train, and write
    results into ``out_dir``.

    A ``pretrained:`` section is trained first into the artifact root ``artifacts`` (default
    :func:`lt_ray.artifacts.default_root`), unless it is there already; with
    ``build_artifacts=False`` (a Ray trial: the driver built them) a missing one is an error.

    ``out_dir`` receives ``checkpoint.pt`` (resumable, updated during training),
    ``config.yaml`` and, at the end, ``metrics.json``; all three record the resolved config
    (:func:`resolve`). A ``train.device`` this machine lacks is a ConfigError raised here,
    before any data is read or file written.
    """
    validate(cfg)
    cfg = resolve(cfg)
    device = runtime_device(cfg)
    if data is None:
        data = build_dataset(cfg.data, data_root)
    root = ensure_stages(cfg, artifacts, data_root=data_root, data=data, build=build_artifacts)
    seed_everything(cfg.seed)
    method = build_method(cfg, data, device, artifacts=root)
    checkpoint = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        checkpoint = out_dir / CHECKPOINT_FILE
    result = fit(method, data, cfg, report=report, checkpoint_path=checkpoint, resume=resume)
    if out_dir is not None:
        write_metrics(out_dir / METRICS_FILE, cfg, data, result)
    return result


def ensure_stages(cfg: ExperimentConfig, artifacts: str | None, *, data_root: str | None,
                  data: LTData | None, build: bool) -> str:
    """The artifact root, with the stage-1 run of ``cfg`` (and its own stages) in it."""
    from lt_ray import artifacts as A

    root = A.resolve_root(artifacts)
    stage = A.pretrained_config(cfg)
    if stage is None:
        return root
    if not build:
        A.require(root, stage)
        return root
    same_data = data is not None and A.data_key(stage.data) == A.data_key(cfg.data)
    A.build(root, stage, data_root=data_root, data=data if same_data else None)
    return root


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
