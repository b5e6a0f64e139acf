"""Resolution: the one step from the user's config to a run, done once per run.

``resolve(cfg)`` layers defaults < the method's recipe < YAML < ``--set``, runs the method's
``resolve`` hook (data-dependent defaults), fills every loss/rule hyper-parameter and the typed
``method.args``, resolves the ``pretrained:`` stage (inheriting ``data``, ``seed`` and
``model.arch``; or reading ``pretrained.checkpoint``), and checks everything that needs no
data: names in the registries, types and ranges, loss/head/rule compatibility, the method's
cross-section checks and its stage 1. The :class:`Resolved` it returns is what the orchestrator
runs, what artifacts are keyed by (:func:`config_hash`) and what every result records; nothing
downstream resolves again. Whether the requested device exists is checked at run time, on the
machine that trains.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lt_ray import storage
from lt_ray.checkpoint import load_checkpoint
from lt_ray.config import (
    CHECKPOINT_KEY,
    COMPILE_MODES,
    EVAL_PRECISIONS,
    PRECISIONS,
    DataConfig,
    ExperimentConfig,
    MethodConfig,
    deep_merge,
    from_dict,
    to_dict,
)
from lt_ray.data import SAMPLERS, expected_class_counts
from lt_ray.errors import ConfigError
from lt_ray.losses import LOSSES, build_loss, loss_traits, resolve_loss_args
from lt_ray.methods import BASE_FAMILY, METHODS, MethodSpec, Row
from lt_ray.models import HEADS, MODELS
from lt_ray.registry import Registry
from lt_ray.rules import RULES, build_rule, resolve_rule_args, rule_uses_class_weights
from lt_ray.schedules import last_change_epoch, validate_schedule

DEVICE_TYPES = ("cpu", "cuda")
#: Fields that do not change the trained model, left out of the hash: where and how a run is
#: executed or checkpointed, and where its data lies.
RUN_ONLY_FIELDS = (
    ("data", "root"), ("data", "download"), ("train", "device"), ("train", "eval_every"),
    ("train", "eval_batch_size"), ("train", "checkpoint_every"),
)
#: Run-only fields added later: left out of the hash in every stage (a base trained with or
#: without torch.compile is the same artifact).
EXECUTION_FIELDS = (("train", "compile"),)
#: Fields added after artifacts were first published, with their default: hashed only when
#: they differ from it, so the artifacts of earlier versions stay valid (no base is retrained).
LATER_FIELDS = (("optim", "milestone_lag_epochs", 0),)
#: ``method.args`` keys of earlier versions and where they live now.
MOVED_ARGS = {
    "checkpoint": "pretrained.checkpoint=PATH (a stage 1 trained elsewhere, for every stage-2 "
                  "method)",
    "base_head": "pretrained.method.name=ldam_drw for a cosine head (ce for a linear one), "
                 "beside pretrained.checkpoint",
    "base_scale": "pretrained.method.loss_args.s=SCALE, beside pretrained.checkpoint",
}
_HEAD_WHY = {
    "normed": "its logits are the cosines of the NormedLinear head",
    "linear": "it expects raw logits, not the unscaled cosines of the normed head",
}


@dataclass(frozen=True)
class Resolved:
    """A run, resolved: its config with every value explicit, its method's record and typed
    args, and its resolved stage 1 (the ``pretrained:`` model) when it has one.

    ``checkpoint`` is set on a stage read from a file trained elsewhere
    (``pretrained.checkpoint``) instead of trained as an artifact.
    """

    config: ExperimentConfig
    spec: MethodSpec
    args: Any
    stage: Resolved | None = None
    checkpoint: str | None = None

    @property
    def hash(self) -> str:
        return config_hash(self.config)

    def chain(self) -> Iterator[Resolved]:
        """The stages below this run, nearest first."""
        stage = self.stage
        while stage is not None:
            yield stage
            stage = stage.stage

    def primary_output(self) -> str | None:
        hook = self.spec.primary_output
        return None if hook is None else hook(self.args)

    def rows(self) -> dict[str, Row]:
        """How a comparison table names each output of this run (key ``""`` for a method with
        one): the method's title, or an output's row template over its stage's row."""
        own = Row(self.spec.title_for(self.config, self.args), self.spec.family)
        if not self.spec.outputs:
            return {"": own}
        base = own
        if self.stage is not None:
            below = self.stage.rows()
            base = below.get(self.stage.primary_output() or "", next(iter(below.values())))
        return {o.name: Row(o.row.format(base=base.name, method=own.name) if o.row else own.name,
                            base.family if o.family == BASE_FAMILY else o.family or own.family)
                for o in self.spec.outputs}


def recipe_defaults(method: str) -> dict[str, Any]:
    """The config values method ``method`` sets by default (nested): its recipe's loss, rule
    and head and its further defaults; {} for an unknown name (resolution reports it)."""
    if method not in METHODS:
        return {}
    spec = METHODS.get(method)
    recipe: dict[str, Any] = {}
    if spec.recipe is not None:
        recipe = {"method": {"loss": spec.recipe.loss, "rule": spec.recipe.rule},
                  "model": {"head": spec.recipe.head}}
    return deep_merge(recipe, dict(spec.defaults))


def layered(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg``'s values (``cfg.explicit``) over its method's recipe over the defaults."""
    name = cfg.method.name
    merged = deep_merge(recipe_defaults(name), cfg.explicit)
    return dataclasses.replace(from_dict(ExperimentConfig, merged), explicit=cfg.explicit)


def _check_name(registry: Registry[Any], name: str, key: str) -> None:
    if name not in registry:
        raise ConfigError(f"{key}: {registry.unknown_message(name)}")


def resolve(cfg: ExperimentConfig) -> Resolved:
    """Resolve and validate ``cfg`` (see the module docstring); a ConfigError names the first
    problem found. Resolving a resolved config (a saved run's) gives it back unchanged."""
    expected_class_counts(cfg.data)  # long-tail settings; no class may be left empty
    _check_name(MODELS, cfg.model.arch, "model.arch")
    _check_name(METHODS, cfg.method.name, "method.name")
    spec = METHODS.get(cfg.method.name)
    full = layered(cfg)
    if spec.own_loss:
        full = dataclasses.replace(full, method=_own_loss_method(full),
                                   model=dataclasses.replace(full.model, head=None))
    else:
        full = _with_recipe(full, spec)
    if spec.resolve is not None:
        full = spec.resolve(full)
    m = full.method
    if not spec.own_loss:
        m = dataclasses.replace(m, loss_args=resolve_loss_args(m.loss, m.loss_args),
                                rule_args=resolve_rule_args(m.rule, m.rule_args))
    args = method_args(spec, m)
    full = dataclasses.replace(full, method=dataclasses.replace(m, args=to_dict(args)))
    _validate(full, spec)
    stage = _resolve_stage(full, spec)
    record = None
    if stage is not None:
        record = stage.config.to_dict()
        if stage.checkpoint is not None:
            record = {CHECKPOINT_KEY: stage.checkpoint, **record}
    return Resolved(dataclasses.replace(full, pretrained=record), spec, args, stage)


def _with_recipe(cfg: ExperimentConfig, spec: MethodSpec) -> ExperimentConfig:
    """``method.loss``, ``method.rule`` and ``model.head`` named (the recipe's unless set)."""
    assert spec.recipe is not None
    loss = cfg.method.loss or spec.recipe.loss
    rule = cfg.method.rule or spec.recipe.rule
    head = cfg.model.head or spec.recipe.head
    _check_name(LOSSES, loss, "method.loss")
    _check_name(RULES, rule, "method.rule")
    _check_name(HEADS, head, "model.head")
    return dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, loss=loss, rule=rule),
                               model=dataclasses.replace(cfg.model, head=head))


def _own_loss_method(cfg: ExperimentConfig) -> MethodConfig:
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


def method_args(spec: MethodSpec, method: MethodConfig) -> Any:
    """``method.args`` as the method's typed argument dataclass (defaults filled in); unknown
    names, wrong types and out-of-range values are ConfigErrors naming ``method.args.NAME``."""
    for key, where in MOVED_ARGS.items():
        if key in method.args and key not in {f.name for f in dataclasses.fields(spec.args)}:
            raise ConfigError(f"method.args.{key} is no longer a method argument: give "
                              f"{where}")
    for key, value in method.args.items():  # before the args' own range checks see a NaN
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"method.args.{key} must be a finite number, got {value}")
    return from_dict(spec.args, method.args, "method.args")


def check_compatible(cfg: ExperimentConfig) -> None:
    """Refuse a loss on the wrong head, and a re-weighting rule with a loss that ignores class
    weights (``cfg`` has its recipe filled in; ``cfg.explicit`` improves the message)."""
    m, head = cfg.method, cfg.model.head
    assert m.loss is not None and m.rule is not None and head is not None
    traits = loss_traits(m.loss)
    if head != traits.head:
        source = ""
        if "head" not in (cfg.explicit.get("model") or {}):
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
    """Syntax of ``train.device`` (auto, cpu, cuda, cuda:N); its availability is checked at
    run time, on the machine that trains."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ConfigError(f"train.device={name!r} is not a device (auto, cpu, cuda, cuda:N)")


def _validate(cfg: ExperimentConfig, spec: MethodSpec) -> None:
    """Everything of ``cfg`` (recipe and args resolved) that needs no data and no stage."""
    m = cfg.method
    dummy_counts = torch.tensor([10, 5])
    if not spec.own_loss:
        check_compatible(cfg)
        build_loss(m.loss, dummy_counts, **m.loss_args)  # range checks live in the constructors
        build_rule(m.rule, dummy_counts, **m.rule_args)
    if spec.validate is not None:  # checks across sections (PaCo: queue size vs batch)
        spec.validate(cfg)
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
    if t.compile not in COMPILE_MODES:
        raise ConfigError(
            f"train.compile={t.compile!r} is unknown ({', '.join(COMPILE_MODES)}; auto compiles "
            "where it pays)"
        )
    if t.sampler not in SAMPLERS:
        raise ConfigError(f"train.sampler: {SAMPLERS.unknown_message(t.sampler)}")
    check_device_name(t.device)


def _resolve_stage(cfg: ExperimentConfig, spec: MethodSpec) -> Resolved | None:
    """The resolved ``pretrained:`` stage of ``cfg`` (None for a method without one): the
    section inherits ``cfg``'s ``data``, ``seed`` and ``model.arch`` unless it sets them; with
    ``checkpoint: PATH`` it describes a file trained elsewhere (an lt-ray checkpoint describes
    itself)."""
    section = cfg.pretrained
    if section is not None and spec.stage is None:
        raise ConfigError(
            f"method {cfg.method.name!r} trains from scratch and uses no pretrained model; "
            "remove the pretrained: section (a plug-in such as gml builds on one)"
        )
    if spec.stage is None:
        return None
    if section is None:
        raise ConfigError(
            f"method {cfg.method.name!r} builds on a stage-1 model and has none: describe it "
            f"in the pretrained: section (e.g. --set pretrained.method.name={spec.stage.hint} "
            "--set pretrained.train.epochs=200) or give pretrained.checkpoint=PATH"
        )
    section = dict(section)
    checkpoint = section.pop(CHECKPOINT_KEY, None)
    inherited: dict[str, Any] = {"data": cfg.to_dict()["data"], "seed": cfg.seed,
                                 "model": {"arch": cfg.model.arch}}
    path = None
    if checkpoint is not None:
        if not isinstance(checkpoint, str) or not checkpoint.strip():
            raise ConfigError(f"pretrained.checkpoint must be a file path, got {checkpoint!r}")
        path = checkpoint if storage.is_uri(checkpoint) else str(
            Path(checkpoint).expanduser().resolve())
        saved = load_checkpoint(path)
        own = saved.get("config") if saved["format_version"] is not None else None
        if isinstance(own, dict):
            inherited = own  # an lt-ray checkpoint records what it is: the method's default
            # stage (e.g. ride_distill's 6-expert teacher) must not override it, only the
            # user's own pretrained: keys
            section = dict(cfg.explicit.get("pretrained") or {})
            section.pop(CHECKPOINT_KEY, None)
    try:
        stage = resolve(ExperimentConfig.from_dict(deep_merge(inherited, section)))
    except ConfigError as exc:
        raise ConfigError(f"pretrained: {exc}") from None
    if spec.stage.check is not None:
        spec.stage.check(cfg, stage.config)
    if path is not None:
        _check_base_dataset(cfg, stage.config, path)
    return dataclasses.replace(stage, checkpoint=path)


def _dataset_name(data: Any) -> str:
    if data.dataset != "synthetic":
        return data.dataset
    return f"synthetic ({data.synthetic.num_classes} classes of {data.synthetic.image_size}px)"


def _check_base_dataset(cfg: ExperimentConfig, stage: ExperimentConfig, path: str) -> None:
    """A base read from ``pretrained.checkpoint`` is re-trained on its own dataset: another one
    (other classes, however many) is refused before anything runs."""
    ours, theirs = cfg.data, stage.data
    if ours.dataset == theirs.dataset and (
            ours.dataset != "synthetic" or ours.synthetic == theirs.synthetic):
        return
    fix = (f"set data.dataset={theirs.dataset}" if ours.dataset != theirs.dataset else
           "set the base's data.synthetic values")
    raise ConfigError(
        f"pretrained.checkpoint={path} was trained on {_dataset_name(theirs)}, but this run's "
        f"data is {_dataset_name(ours)}: a base is re-trained on its own dataset; {fix}, or "
        f"pick a base of {_dataset_name(ours)}"
    )


def last_phase_start(run: Resolved) -> int:
    """The 0-indexed epoch from which nothing in the recipe changes any more: the last lr step
    (or the end of the warmup), the DRW switch, the end of a loss curriculum; ``train.epochs``
    when something changes until the end (a cosine lr, FeaBal's curriculum). Metrics compared
    before it rank trials on an unfinished schedule."""
    cfg = run.config
    epochs = cfg.train.epochs
    if run.spec.own_loss:
        own = run.spec.phase_end(cfg) if run.spec.phase_end is not None else 0
        return max(last_change_epoch(cfg.optim, epochs), own)
    counts = torch.tensor([10, 5])  # the phase boundaries do not depend on the counts
    loss = build_loss(cfg.method.loss, counts, **cfg.method.loss_args)
    rule = build_rule(cfg.method.rule, counts, **cfg.method.rule_args)
    return max(last_change_epoch(cfg.optim, epochs), rule.last_change_epoch(epochs),
               loss.last_change_epoch(epochs))


def config_hash(cfg: ExperimentConfig) -> str:
    """16 hex digits of the SHA-256 of a resolved config, without :data:`RUN_ONLY_FIELDS`,
    without :data:`LATER_FIELDS` at their default and without :data:`EXECUTION_FIELDS` (these
    two in its stages too)."""
    raw = cfg.to_dict()
    for section, key in RUN_ONLY_FIELDS:
        raw.get(section, {}).pop(key, None)
    stage = raw
    while isinstance(stage, dict):
        for section, key, default in LATER_FIELDS:
            if stage.get(section, {}).get(key, default) == default:
                stage.get(section, {}).pop(key, None)
        for section, key in EXECUTION_FIELDS:
            stage.get(section, {}).pop(key, None)
        stage = stage.get("pretrained")
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_key(data: DataConfig) -> str:
    """A hash of what defines a dataset's splits (not where its files lie)."""
    raw = {k: v for k, v in dataclasses.asdict(data).items() if k not in ("root", "download")}
    text = json.dumps(raw, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
