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
augmentation; the spec's ``prepare`` step, run by the orchestrator) and cached beside its
artifact; the head then trains on them, so a trial costs seconds on a CPU. ``freeze: all``
re-trains nothing: its base is itself a GML run, whose two heads it ensembles with new
temperatures (an evaluation of cached logits).

Project defaults (the paper's protocol is not public; METHODS.md §12.3): SGD lr 0.05, momentum
0.9, weight decay 5e-4, cosine over 30 epochs without warmup, batch 128, instance sampling,
the new head initialised from the old one, BN of the frozen backbone in eval mode.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from lt_ray.config import ExperimentConfig
from lt_ray.context import LTContext
from lt_ray.data import Batch
from lt_ray.errors import ConfigError
from lt_ray.losses import LTLoss, build_loss
from lt_ray.methods.base import Method, StepOutput
from lt_ray.methods.spec import (
    BASE_FAMILY,
    FAMILIES,
    METHODS,
    MethodSpec,
    Output,
    Recipe,
    Stage,
    register,
)
from lt_ray.models.heads import reset_classifiers

FREEZE = ("features", "all")
INIT = ("old", "scratch")
ENSEMBLE = ("none", "prob", "logit")


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

    def __post_init__(self) -> None:
        _choice("freeze", self.freeze, FREEZE)
        _choice("init", self.init, INIT)
        _choice("ensemble", self.ensemble, ENSEMBLE)
        for name in ("t1", "t2"):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
                raise ConfigError(f"method.args.{name} must be a temperature > 0, got {value}")
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


def _fresh_head(old: nn.Module) -> nn.Module:
    """A head of the same structure as ``old`` (any base's: linear, cosine, RIDE's experts,
    MiSLAS's LWS), its classifiers initialised afresh."""
    new = copy.deepcopy(old)
    reset_classifiers(new)
    return new


def build_gml(cfg: ExperimentConfig, ctx: LTContext, args: GMLArgs,
              base: Method | None) -> Method:
    """GML plug-in: re-train a pretrained model's classifier with the geometric-mean loss;
    reports its old head, new head and their t1/t2 ensemble (Du & Wu 2023)."""
    assert base is not None, "gml builds on its stage-1 model"
    heads = base.heads()
    if args.freeze == "all":
        if "new" not in heads:
            stage = (cfg.pretrained or {}).get("method", {}).get("name")
            raise ConfigError(
                "method.args.freeze=all re-trains nothing: its base must be a gml run whose "
                "old and new heads it ensembles (pretrained.method.name=gml); a "
                f"{stage} base has one head"
            )
        old, new = heads["old"], heads["new"]
    else:
        old = heads["main"] if "main" in heads else heads["old"]
        new = copy.deepcopy(old) if args.init == "old" else _fresh_head(old)
    loss = build_loss(cfg.method.loss, ctx.class_counts, **cfg.method.loss_args)
    return GMLMethod(ctx, base, old, new, loss, args, ctx.features)


def gml_title(cfg: ExperimentConfig, args: GMLArgs) -> str:
    """"GML" for the geometric-mean loss, else a cRT-style "BSCE re-train" (the re-training
    loss as its method is titled)."""
    loss = cfg.method.loss
    if loss == "gml":
        return "GML"
    title = METHODS.get(loss).title if loss in METHODS else ""
    return f"{title if isinstance(title, str) and title else loss.upper()} re-train"


register(MethodSpec(
    name="gml", build=build_gml, args=GMLArgs, recipe=Recipe(loss="gml"),
    doc=build_gml.__doc__.splitlines()[0],
    stage=Stage(hint="ce", shares_backbone=True),
    outputs=(Output(name="old", label="old head", meaning="the base model's head",
                    row="{base}", family=BASE_FAMILY),
             Output(name="new", label="new head", meaning="the re-trained head",
                    row="{base} + {method}"),
             Output(name="ens", label="ensemble",
                    meaning="their ensemble (t1 for the new head, t2 for the old); the plain "
                            "metrics and the selection use `new`, or `ens` when "
                            "`method.args.ensemble` is set",
                    row="{base} + {method} (ensemble)")),
    title=gml_title, family=FAMILIES[2],
    primary_output=lambda args: "new" if args.ensemble == "none" else "ens",
    prepare=lambda args: args.cache_features,
    defaults={
        "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine",
                  "warmup_epochs": 0},
        "train": {"epochs": 30, "batch_size": 128, "sampler": "instance"},
    },
))
