"""The GML plug-in ("No One Left Behind", Du & Wu, CVPR 2023; METHODS.md §12, DESIGN.md §5).

Take a pretrained long-tailed model of any method (the *base*), keep its backbone frozen, and
re-train its classifier with the geometric-mean loss (``method.loss``, ``gml`` by default; any
registered loss works, ``bsce`` gives a cRT-style re-training). Every evaluation reports three
outputs: ``old`` (the base's head), ``new`` (the re-trained head) and ``ens``, their ensemble
with temperatures ``t1`` (new) and ``t2`` (old):

* ``prob`` (default formula): ``P = softmax(z_new / t1) + softmax(z_old / t2)``, reported as
  ``log P`` (the argmax is the prediction);
* ``logit``: ``z_new / t1 + z_old / t2``.

Both heads give calibrated logits (a cosine head's ``s·cos``), so the temperatures mean the
same for every base. ``method.args.ensemble`` picks the output that the plain metric names
(``val_hm``...) report: ``new`` for ``none``, ``ens`` otherwise.

With a frozen backbone the features of every split are computed once per base (no
augmentation) and cached beside its artifact; the head then trains on them, so a trial costs
seconds on a CPU. ``freeze: all`` re-trains nothing: its base is itself a GML run, whose two
heads it ensembles with new temperatures (an evaluation of cached logits).

Project defaults (the paper's protocol is not public; METHODS.md §12.3): SGD lr 0.05, momentum
0.9, weight decay 5e-4, cosine over 30 epochs without warmup, batch 128, instance sampling,
the new head initialised from the old one, BN of the frozen backbone in eval mode.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lt_ray.config import ExperimentConfig
from lt_ray.context import LTContext
from lt_ray.data import Batch
from lt_ray.errors import ConfigError
from lt_ray.losses import LTLoss, build_loss
from lt_ray.methods.base import METHODS, Method, StepOutput
from lt_ray.methods.stages import load_base_weights
from lt_ray.models.heads import reset_classifiers

log = logging.getLogger(__name__)

FREEZE = ("features", "all")
INIT = ("old", "scratch")
ENSEMBLE = ("none", "prob", "logit")
HEAD_TYPES = ("linear", "normed")
DEFAULT_NORMED_SCALE = 30.0  # LDAM's s: the scale of an external cosine head


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"method.args.{name}={value!r} is not one of {', '.join(allowed)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GMLArgs:
    """``method.args`` of ``gml``."""

    freeze: str = "features"  # features: re-train a head on the frozen backbone; all: nothing
    init: str = "old"  # the new head starts as a copy of the old one, or from scratch
    ensemble: str = "none"  # which output the plain metrics report: none=new, prob/logit=ens
    t1: float = 1.0  # temperature of the new head in the ensemble (> 0)
    t2: float = 1.0  # temperature of the old head in the ensemble (> 0)
    cache_features: bool = True  # train on cached features (no augmentation); False: images
    checkpoint: str | None = None  # a base trained elsewhere, instead of pretrained:
    base_head: str = "linear"  # head of an external base: linear | normed
    base_scale: float | None = None  # its logit scale (None: 30 for normed, 1 for linear)

    def __post_init__(self) -> None:
        _choice("freeze", self.freeze, FREEZE)
        _choice("init", self.init, INIT)
        _choice("ensemble", self.ensemble, ENSEMBLE)
        _choice("base_head", self.base_head, HEAD_TYPES)
        for name in ("t1", "t2"):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
                raise ConfigError(f"method.args.{name} must be a temperature > 0, got {value}")
        if self.base_scale is not None and not self.base_scale > 0:
            raise ConfigError(f"method.args.base_scale must be > 0, got {self.base_scale}")
        if self.freeze == "all" and self.ensemble == "none":
            raise ConfigError(
                "method.args.freeze=all re-trains nothing and ensemble=none combines nothing: "
                "set method.args.ensemble=prob (or logit) to search the temperatures, or "
                "freeze=features to re-train the head"
            )


def ensemble(new: torch.Tensor, old: torch.Tensor, mode: str, t1: float,
             t2: float) -> torch.Tensor:
    """The ensemble's logits: ``log(softmax(new/t1) + softmax(old/t2))`` for ``prob`` (and
    ``none``, which still reports it), ``new/t1 + old/t2`` for ``logit``."""
    if mode == "logit":
        return new / t1 + old / t2
    return torch.log(F.softmax(new / t1, dim=1) + F.softmax(old / t2, dim=1))


class GMLMethod(Method):
    """A frozen base (backbone + old head) and a new head re-trained with ``loss``."""

    def __init__(self, ctx: LTContext, base: Method, old: nn.Module, new: nn.Module,
                 loss: LTLoss, args: GMLArgs, features: dict[str, torch.Tensor] | None) -> None:
        super().__init__(ctx)
        self.base = base
        self.old = old
        self.new = new
        self.loss = loss
        self.args = args
        self.cached = tuple(features or {})  # splits with cached features [N, D]
        for split, values in (features or {}).items():  # buffers follow .to(); not saved
            self.register_buffer(f"cache_{split}", values.float(), persistent=False)
        self.needs_images = features is None  # type: ignore[misc]
        for p in [*self.base.parameters(), *self.old.parameters()]:
            p.requires_grad_(False)
        if args.freeze == "all":
            for p in self.new.parameters():
                p.requires_grad_(False)

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("old", "new", "ens")

    @property
    def primary_output(self) -> str:
        return "new" if self.args.ensemble == "none" else "ens"

    def set_mode(self, epoch: int) -> None:
        self.eval()  # the frozen backbone keeps its BN statistics
        self.new.train()

    def _features(self, x: torch.Tensor | None, split: str | None,
                  index: torch.Tensor | None) -> torch.Tensor:
        if split in self.cached and index is not None:
            return getattr(self, f"cache_{split}")[index]
        if x is None:
            raise RuntimeError("gml: no cached features for this batch and no images")
        with torch.no_grad():
            return self.base.encode(x)

    def training_step(self, batch: Batch) -> StepOutput:
        logits = self.new(self._features(batch.x, "train", batch.index))
        return StepOutput(self.loss(logits, batch.y), logits, {})

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.encode(x)

    def heads(self) -> dict[str, nn.Module]:
        return {"old": self.old, "new": self.new}

    def predict(self, x: torch.Tensor | None, *, split: str | None = None,
                index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        f = self._features(x, split, index)
        old, new = self.old(f), self.new(f)
        a = self.args
        return {"old": old, "new": new, "ens": ensemble(new, old, a.ensemble, a.t1, a.t2)}


# --- the base ------------------------------------------------------------------------------


def base_config(cfg: ExperimentConfig, args: GMLArgs) -> ExperimentConfig:
    """The config of the base: the ``pretrained:`` section, or what an external checkpoint is
    (its own config for an lt-ray checkpoint; else ``model.arch`` with ``base_head``)."""
    from lt_ray.artifacts import pretrained_config
    from lt_ray.checkpoint import load_checkpoint
    from lt_ray.experiment import resolve

    stage = pretrained_config(cfg)
    if stage is not None:
        return stage
    assert args.checkpoint is not None
    saved = load_checkpoint(args.checkpoint)
    if saved.get("config"):
        return resolve(ExperimentConfig.from_dict(saved["config"]))
    normed = args.base_head == "normed"
    scale = args.base_scale or (DEFAULT_NORMED_SCALE if normed else 1.0)
    raw: dict[str, Any] = {
        "data": cfg.to_dict()["data"], "model": {"arch": cfg.model.arch},
        "method": {"name": "ldam_drw" if normed else "ce"},
    }
    if normed:
        raw["method"]["loss_args"] = {"s": scale}
    return resolve(ExperimentConfig.from_dict(raw))


def backbone_stage(stage_cfg: ExperimentConfig) -> ExperimentConfig:
    """The stage whose run trained the backbone of ``stage_cfg``: a GML run keeps its base's
    backbone frozen (BN included), so a chain of GML stages shares one feature cache, that of
    the first non-GML stage."""
    from lt_ray.artifacts import pretrained_config

    while stage_cfg.method.name == "gml" and stage_cfg.pretrained is not None:
        stage_cfg = pretrained_config(stage_cfg)
    return stage_cfg


def load_base(cfg: ExperimentConfig, args: GMLArgs, ctx: LTContext) -> tuple[Method, str]:
    """The base method, with its weights when ``ctx.load_base``; and the folder where its
    feature cache lives."""
    from lt_ray import artifacts, storage
    from lt_ray.experiment import build_method

    stage_cfg = base_config(cfg, args)
    base = build_method(stage_cfg, None, ctx.device, class_counts=ctx.class_counts,
                        artifacts=ctx.artifacts, load_base=False)
    if cfg.pretrained is not None:
        root = artifacts.resolve_root(ctx.artifacts)
        path = artifacts.local_copy(artifacts.require(root, stage_cfg)) if ctx.load_base else None
        folder = artifacts.artifact_dir(root, backbone_stage(stage_cfg))
    else:
        assert args.checkpoint is not None
        digest = hashlib.sha256(str(args.checkpoint).encode()).hexdigest()[:16]
        folder = storage.join(artifacts.resolve_root(ctx.artifacts), "external", digest)
        path = args.checkpoint
    if ctx.load_base:
        load_base_weights(base, path, ctx.num_classes)
    return base, folder


def feature_cache(base: Method, data: Any, folder: str, cfg: ExperimentConfig,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """The base's pooled features of every split (no augmentation, evaluation precision),
    computed once and stored as ``<folder>/features-<data hash>.pt``."""
    from lt_ray import storage
    from lt_ray.artifacts import data_key
    from lt_ray.data import DeviceLoader
    from lt_ray.engine import autocast, resolve_precision

    precision = "fp32" if cfg.train.eval_precision == "fp32" else cfg.train.precision
    path = storage.join(folder, f"features-{data_key(cfg.data)}-{precision}.pt")
    if storage.is_file(path):
        cached = torch.load(io.BytesIO(storage.read_bytes(path)), weights_only=True)
        if all(len(cached[s]) == len(getattr(data, s)) for s in cached):
            return cached
    dtype = None if precision == "fp32" else resolve_precision(precision, device)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    base.to(device=device, memory_format=memory_format).eval()  # as the engine evaluates
    out = {}
    with torch.no_grad(), autocast(device, dtype):
        for name in ("train", "val", "test", "fulltest"):
            split = getattr(data, name).to(device)
            loader = DeviceLoader(split, batch_size=cfg.train.eval_batch_size, mean=data.mean,
                                  std=data.std, train=False,
                                  channels_last=cfg.train.channels_last)
            out[name] = torch.cat([base.encode(b.x).float().cpu() for b in loader])
    buffer = io.BytesIO()
    torch.save(out, buffer)
    storage.write_bytes(path, buffer.getvalue())
    log.info("cached %s features of %d images in %s", base.__class__.__name__,
             sum(len(v) for v in out.values()), path)
    return out


def _fresh_head(old: nn.Module) -> nn.Module:
    """A head of the same structure as ``old`` (any base's: linear, cosine, RIDE's experts,
    MiSLAS's LWS), its classifiers initialised afresh."""
    new = copy.deepcopy(old)
    reset_classifiers(new)
    return new


def build_gml(cfg: ExperimentConfig, ctx: LTContext) -> Method:
    """GML plug-in: re-train a pretrained model's classifier with the geometric-mean loss;
    reports its old head, new head and their t1/t2 ensemble (Du & Wu 2023)."""
    from lt_ray.experiment import method_args

    args = method_args(cfg)
    base, folder = load_base(cfg, args, ctx)
    heads = base.heads()
    if args.freeze == "all":
        if "new" not in heads:
            raise ConfigError(
                "method.args.freeze=all re-trains nothing: its base must be a gml run whose "
                "old and new heads it ensembles (pretrained.method.name=gml); a "
                f"{base_config(cfg, args).method.name} base has one head"
            )
        old, new = heads["old"], heads["new"]
    else:
        old = heads["main"] if "main" in heads else heads["old"]
        new = copy.deepcopy(old) if args.init == "old" else _fresh_head(old)
    features = None
    if args.cache_features and ctx.data is not None and ctx.load_base:
        features = feature_cache(base, ctx.data, folder, cfg, ctx.device)
    loss = build_loss(cfg.method.loss or "gml", ctx.class_counts, **cfg.method.loss_args)
    return GMLMethod(ctx, base, old, new, loss, args, features)


METHODS.add(
    "gml", build_gml, args=GMLArgs, needs_base=True, loss="gml", rule="none", head="linear",
    defaults={
        "method": {"loss": "gml", "rule": "none"}, "model": {"head": "linear"},
        "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine",
                  "warmup_epochs": 0},
        "train": {"epochs": 30, "batch_size": 128, "sampler": "instance"},
    },
)
