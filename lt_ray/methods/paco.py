"""PaCo: parametric contrastive learning (Cui et al. ICCV 2021; METHODS.md §11).

A MoCo pair of ResNets (:mod:`lt_ray.models.paco`) trained with the PaCo loss on two views of
every image, made on the training device from the raw uint8 batch
(:class:`lt_ray.data.views.PaCoViews`): the query view with crop, flip, AutoAugment's CIFAR-10
policy and a black 16-px cutout; the key view SimCLR-style. Batches are whole
(``drop_last``), so the queue (``queue_size``, a multiple of the batch) advances in steps. The
prediction is the linear classifier's raw logits on the query encoder's pooled feature.

Recipe (official ``paco_cifar.py`` and ``sh/CIFAR100_train_imb0.01.sh``): SGD lr 0.05,
momentum 0.9, wd 5e-4, batch 128, 400 epochs; 10 warm-up epochs, x0.1 after 80 % and x0.01
after 90 % of the epochs: the official ``epoch > 320`` / ``epoch > 360`` on 0-indexed epochs,
so epoch 320 still runs at the full lr and 321 is the first reduced one
(``optim.milestone_lag_epochs: 1``, scaled with ``train.epochs``). The official warm-up also
runs epoch 10 at 1.1x lr (its ``epoch <= warmup`` test); here the warm-up ends at epoch 10.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import nn

from lt_ray.config import ExperimentConfig
from lt_ray.context import LTContext
from lt_ray.data import Batch
from lt_ray.errors import ConfigError
from lt_ray.losses.paco import PaCoLoss
from lt_ray.methods.base import Method, StepOutput
from lt_ray.methods.spec import FAMILIES, MethodSpec, register
from lt_ray.models import CalibratedHead
from lt_ray.models.paco import PaCoNet

if TYPE_CHECKING:  # torchvision's v2 transforms take ~1 s to import: only when PaCo trains
    from lt_ray.data.views import PaCoViews


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaCoArgs:
    """``method.args`` of ``paco``."""

    alpha: float = 0.01  # weight of same-class contrast entries as positives
    beta: float = 1.0  # weight of the class centre as positive
    gamma: float = 1.0  # weight of the contrast entries in the denominator
    temperature: float = 0.05  # contrast temperature (moco-t)
    supt: float = 1.0  # temperature of the class-centre logits
    queue_size: int = 1024  # keys in the queue (moco-k); a multiple of train.batch_size
    dim: int = 32  # projection dimension (moco-dim)
    momentum: float = 0.999  # key encoder momentum (moco-m)
    cutout: int = 16  # side of the query view's black square (0: none)

    def __post_init__(self) -> None:
        if self.queue_size < 1 or self.dim < 1 or self.cutout < 0:
            raise ConfigError("method.args.queue_size and dim must be >= 1 and cutout >= 0, "
                              f"got {self.queue_size}, {self.dim}, {self.cutout}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"method.args.momentum must be in [0, 1), got {self.momentum}")
        PaCoLoss(torch.ones(2), alpha=self.alpha, beta=self.beta, gamma=self.gamma,
                 temperature=self.temperature, supt=self.supt)  # range checks


class PaCoMethod(Method):
    raw_images = True
    drop_last = True
    compilable = False  # the key view's kornia draws from torch's global RNG in Python

    def __init__(self, ctx: LTContext, net: PaCoNet, loss: PaCoLoss, views: PaCoViews,
                 channels_last: bool) -> None:
        super().__init__(ctx)
        self.net = net
        self.loss = loss
        self.views = views
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def training_step(self, batch: Batch) -> StepOutput:
        device = batch.x.device.type
        with torch.no_grad(), torch.autocast(device_type=device, enabled=False):  # fp32 views
            im_q = self.views.query(batch.x).contiguous(memory_format=self.memory_format)
            im_k = self.views.key(batch.x).contiguous(memory_format=self.memory_format)
        features, labels, logits = self.net.contrast(im_q, im_k, batch.y)
        return StepOutput(self.loss(features, labels, logits), logits, {})

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    def heads(self) -> dict[str, nn.Module]:
        return {"main": CalibratedHead(self.net.classifier)}

    def predict(self, x: torch.Tensor | None, *, split: str | None = None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


def check_paco(cfg: ExperimentConfig) -> None:
    """The queue advances a whole batch per step: its size must be a multiple of the batch."""
    queue, batch = int(cfg.method.args["queue_size"]), cfg.train.batch_size
    if queue % batch:
        raise ConfigError(
            f"method.args.queue_size={queue} is not a multiple of train.batch_size={batch}: "
            f"the queue takes a whole batch of keys per step; use e.g. queue_size="
            f"{max(1, round(queue / batch)) * batch} or a batch size that divides {queue}"
        )


def build_paco(cfg: ExperimentConfig, ctx: LTContext, args: PaCoArgs,
               base: Method | None) -> Method:
    """PaCo: MoCo encoders + label queue, parametric contrastive loss, two on-device views."""
    from lt_ray.data.views import PaCoViews  # ~1 s (torchvision v2): only when PaCo is built

    net = PaCoNet(cfg.model.arch, ctx.num_classes, dim=args.dim, queue_size=args.queue_size,
                  momentum=args.momentum)
    loss = PaCoLoss(ctx.class_counts, alpha=args.alpha, beta=args.beta, gamma=args.gamma,
                    temperature=args.temperature, supt=args.supt)
    data = ctx.data
    mean, std = (data.mean, data.std) if data is not None else ((0.0,) * 3, (1.0,) * 3)
    views = PaCoViews(mean, std, crop_padding=cfg.train.crop_padding, cutout=args.cutout)
    return PaCoMethod(ctx, net, loss, views, cfg.train.channels_last)


register(MethodSpec(
    name="paco", build=build_paco, args=PaCoArgs, doc=build_paco.__doc__.splitlines()[0],
    title="PaCo", family=FAMILIES[1],
    validate=check_paco,
    defaults={
        "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "step",
                  "milestones": [0.8, 0.9], "milestone_lag_epochs": 1, "decay": [0.1, 0.01],
                  "warmup_epochs": 10},
        "train": {"epochs": 400, "batch_size": 128},
    },
))
