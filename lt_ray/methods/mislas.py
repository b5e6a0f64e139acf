"""MiSLAS (Zhong et al. CVPR 2021; METHODS.md §9): mixup training, then a classifier re-training
with shifted BN, learnable weight scaling and label-aware smoothing.

* ``mislas_stage1``: ResNet + linear classifier, CE with mixup (alpha 1) on every batch, step lr
  x0.1 at 80 % and x0.01 at 90 % of the epochs (160/180 of 200), 5 warm-up epochs, weight decay
  5e-4 (the MiSLAS README's advice for CIFAR-LT; its config files say 2e-4).
* ``mislas`` (stage 2, its ``pretrained:`` stage defaults to ``mislas_stage1``): the backbone's
  weights frozen and run under ``no_grad``; with ``shift_bn`` it stays in train mode, so its BN
  statistics are re-estimated on the class-balanced stage-2 batches (BN affine weights are not
  trained). The stage-1 classifier is re-trained together with LWS, a per-class scale
  initialised to 1 that multiplies the logits (at test time too), with label-aware smoothing
  (``las``). Sampler: class-aware (4 images per class turn), ``ceil(N / batch)`` full batches
  per epoch. 10 epochs, lr 0.1 with a cosine to 0, the classifier's group at ``lr_factor`` x lr.
  Smoothing, ``lr_factor`` and ``shift_bn`` default to the official configs of the run's
  dataset (``config/cifar10``, ``config/cifar100``) for its imbalance factor (the nearest of
  100, 50, 10 on a log scale), recorded resolved (:data:`PER_DATASET`):

  ======== ==== ============== ========= ========
  dataset   IF  smooth h / t   lr_factor shift_bn
  ======== ==== ============== ========= ========
  CIFAR-100 100  0.4 / 0.1      0.2       on
  CIFAR-100  50  0.3 / 0.0      0.1       on
  CIFAR-100  10  0.2 / 0.0      0.1       on
  CIFAR-10  100  0.3 / 0.0      0.5       off
  CIFAR-10   50  0.2 / 0.0      0.2       off
  CIFAR-10   10  0.1 / 0.0      0.2       off
  ======== ==== ============== ========= ========

  A dataset without an official table (``synthetic``) takes CIFAR-100's, the paper's main
  setting.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
from torch import nn

from lt_ray.config import ExperimentConfig
from lt_ray.context import LTContext
from lt_ray.data import Batch
from lt_ray.errors import ConfigError
from lt_ray.losses import LTLoss, build_loss
from lt_ray.methods.base import Method, StepOutput
from lt_ray.methods.spec import FAMILIES, METHODS, MethodSpec, Recipe, Stage, register
from lt_ray.methods.stages import base_checker
from lt_ray.methods.standard import StandardMethod, register_recipe
from lt_ray.models import CalibratedHead
from lt_ray.models.resnet_cifar import run_head

#: dataset -> imbalance factor -> (smooth_head, smooth_tail, lr_factor, shift_bn): the official
#: stage-2 configs, MiSLAS ``config/<dataset>/<dataset>_imb0*_stage2_mislas.yaml``
PER_DATASET: dict[str, dict[float, tuple[float, float, float, bool]]] = {
    "cifar100": {100.0: (0.4, 0.1, 0.2, True), 50.0: (0.3, 0.0, 0.1, True),
                 10.0: (0.2, 0.0, 0.1, True)},
    "cifar10": {100.0: (0.3, 0.0, 0.5, False), 50.0: (0.2, 0.0, 0.2, False),
                10.0: (0.1, 0.0, 0.2, False)},
}
FALLBACK_DATASET = "cifar100"  # the table of a dataset without an official one


@dataclasses.dataclass(frozen=True, kw_only=True)
class MiSLASArgs:
    """``method.args`` of ``mislas`` (stage 2)."""

    lr_factor: float = 0.2  # the classifier's lr / the LWS lr (default: per dataset and IF)
    shift_bn: bool = True  # re-estimate the frozen backbone's BN statistics on stage-2 batches
    # (default: per dataset: on for CIFAR-100, off for CIFAR-10)
    lws: bool = True  # learnable per-class logit scale
    samples_per_class: int = 4  # class-aware sampler: images per class turn

    def __post_init__(self) -> None:
        if not self.lr_factor > 0 or not math.isfinite(self.lr_factor):
            raise ConfigError(f"method.args.lr_factor must be > 0, got {self.lr_factor}")
        if self.samples_per_class < 1:
            raise ConfigError("method.args.samples_per_class must be >= 1, got "
                              f"{self.samples_per_class}")


def per_if_defaults(dataset: str, imb_factor: float) -> tuple[float, float, float, bool]:
    """The official stage-2 values of ``dataset`` (CIFAR-100's for a dataset without a table)
    for the tabulated imbalance factor nearest ``imb_factor``: smooth_head, smooth_tail,
    lr_factor, shift_bn."""
    table = PER_DATASET.get(dataset, PER_DATASET[FALLBACK_DATASET])
    nearest = min(table, key=lambda f: abs(math.log(f) - math.log(max(imb_factor, 1.0))))
    return table[nearest]


def resolve_mislas(cfg: ExperimentConfig) -> ExperimentConfig:
    """Fill smoothing, ``lr_factor`` and ``shift_bn`` the user left unset from the dataset's
    official table for the imbalance factor."""
    head, tail, factor, shift_bn = per_if_defaults(cfg.data.dataset, cfg.data.imb_factor)
    method = cfg.method
    loss_args = dict(method.loss_args)
    if method.loss == "las":
        loss_args = {"smooth_head": head, "smooth_tail": tail, **loss_args}
    args = {"lr_factor": factor, "shift_bn": shift_bn, **method.args}
    return dataclasses.replace(cfg, method=dataclasses.replace(method, loss_args=loss_args,
                                                               args=args))


class LWSHead(nn.Module):
    """``scale * classifier(features)``: the classifier with MiSLAS's per-class scale."""

    def __init__(self, classifier: nn.Module, scale: nn.Parameter) -> None:
        super().__init__()
        self.head = classifier
        self.scale = scale

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The scale back to 1 (the classifier is reset on its own)."""
        self.scale.fill_(1.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return run_head(self.head, features) * self.scale


class MiSLASStage2(Method):
    """Frozen stage-1 backbone (shifted BN) + re-trained classifier with LWS."""

    def __init__(self, ctx: LTContext, base: StandardMethod, loss: LTLoss, args: MiSLASArgs,
                 batch_size: int) -> None:
        super().__init__(ctx)
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.head = copy.deepcopy(base.model.head)
        for p in self.head.parameters():
            p.requires_grad_(True)
        self.lws = nn.Parameter(torch.ones(ctx.num_classes), requires_grad=args.lws)
        self.loss = loss
        self.args = args
        n = int(ctx.class_counts.sum())
        self.epoch_samples = math.ceil(n / batch_size) * batch_size

    def set_mode(self, epoch: int) -> None:
        self.train()
        self.base.train(self.args.shift_bn)

    def sampler(self) -> tuple[str, dict[str, Any]]:
        return "class_aware", {"samples_per_class": self.args.samples_per_class,
                               "num_samples": self.epoch_samples}

    def param_groups(self) -> list[dict[str, Any]]:
        groups = [{"params": list(self.head.parameters()),
                   "lr_scale": self.args.lr_factor}]
        if self.args.lws:
            groups.append({"params": [self.lws], "lr_scale": 1.0})
        return groups

    def training_step(self, batch: Batch) -> StepOutput:
        with torch.no_grad():
            features = self.base.model.features(batch.x)
        logits = run_head(self.head, features) * self.lws
        return StepOutput(self.loss(logits, batch.y), logits, {})

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.model.features(x)

    def heads(self) -> dict[str, nn.Module]:
        return {"main": CalibratedHead(LWSHead(self.head, self.lws))}

    def predict(self, x: torch.Tensor | None, *, split: str | None = None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        return run_head(self.head, self.base.model.features(x)) * self.lws


def _single_linear(stage: ExperimentConfig) -> bool:
    return METHODS.get(stage.method.name).standard and stage.model.head == "linear"


def build_mislas(cfg: ExperimentConfig, ctx: LTContext, args: MiSLASArgs,
                 base: Method | None) -> Method:
    """MiSLAS stage 2: shifted BN, LWS and label-aware smoothing on a frozen stage-1 model."""
    assert isinstance(base, StandardMethod)
    loss = build_loss(cfg.method.loss, ctx.class_counts, **cfg.method.loss_args)
    return MiSLASStage2(ctx, base, loss, args, cfg.train.batch_size)


register_recipe(
    "mislas_stage1", loss="ce", title="MiSLAS stage 1 (mixup)", family=FAMILIES[1],
    doc="MiSLAS stage 1: CE with mixup (alpha 1) on every batch; lr x0.1 / x0.01 at 80/90 %.",
    defaults={"method": {"mixup_alpha": 1.0},
              "optim": {"weight_decay": 5e-4, "decay": [0.1, 0.01]}},
)
register(MethodSpec(
    name="mislas", build=build_mislas, args=MiSLASArgs, recipe=Recipe(loss="las"),
    doc=build_mislas.__doc__.splitlines()[0], resolve=resolve_mislas, title="MiSLAS",
    family=FAMILIES[1],
    stage=Stage(hint="mislas_stage1", check=base_checker(
        _single_linear, "a single ResNet with a linear classifier (mislas_stage1, ce, bsce, ...)")),
    defaults={
        "pretrained": {"method": {"name": "mislas_stage1"}},
        "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4, "schedule": "cosine",
                  "warmup_epochs": 0},
        "train": {"epochs": 10, "batch_size": 128},
    },
))
