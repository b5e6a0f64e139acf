"""Model + loss + train rule: every single-stage baseline (CE, BSCE, Focal, LDAM-DRW, LADE,
FBL, re-weighting, re-sampling) is one recipe line, not a loop of its own."""

from __future__ import annotations

from typing import Any

import torch

from lt_ray.config import ExperimentConfig
from lt_ray.context import LTContext
from lt_ray.data import Batch, mixup
from lt_ray.losses import LTLoss, build_loss
from lt_ray.methods.base import Method, StepOutput
from lt_ray.methods.spec import FAMILIES, MethodSpec, Recipe, register
from lt_ray.models import CalibratedHead, CifarResNet, build_model
from lt_ray.rules import TrainRule, build_rule


class StandardMethod(Method):
    """One network trained end to end with ``loss``; ``rule`` sets weights / sampler per epoch.

    ``mixup_alpha > 0`` mixes every batch (MiSLAS stage 1): ``lam*L(z, y_a) + (1-lam)*L(z, y_b)``.
    Prediction is the network's calibrated logits: raw logits for a linear head, ``s·cos`` for
    the cosine head of LDAM (``loss.logit_scale``); the argmax is the same either way.
    """

    def __init__(
        self,
        ctx: LTContext,
        model: CifarResNet,
        loss: LTLoss,
        rule: TrainRule,
        mixup_alpha: float = 0.0,
    ) -> None:
        super().__init__(ctx)
        self.model = model
        self.loss = loss
        self.rule = rule
        self.mixup_alpha = mixup_alpha
        self._weight: torch.Tensor | None = None

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        super().on_epoch_start(epoch, num_epochs)
        self.loss.set_epoch(epoch, num_epochs)
        weight = self.rule.class_weights(epoch, num_epochs)
        self._weight = None if weight is None else weight.to(self.ctx.device)

    def sampler(self) -> tuple[str, dict[str, Any]] | None:
        return self.rule.sampler(self.epoch, self.num_epochs)

    def training_step(self, batch: Batch) -> StepOutput:
        x, y = batch.x, batch.y
        if self.mixup_alpha > 0:
            x, y_a, y_b, lam = mixup(x, y, self.mixup_alpha)
        features = self.model.features(x)
        logits = self.model.classify(features)
        kwargs = {
            "features": features if self.loss.needs_features else None,
            "weight": self._weight,
        }
        if self.mixup_alpha > 0:
            loss = lam * self.loss(logits, y_a, **kwargs) + (1 - lam) * self.loss(
                logits, y_b, **kwargs
            )
        else:
            loss = self.loss(logits, y, **kwargs)
        return StepOutput(loss, logits, {})

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)

    def heads(self) -> dict[str, torch.nn.Module]:
        return {"main": CalibratedHead(self.model.head, self.loss.logit_scale)}

    def predict(self, x: torch.Tensor | None, *, split: str | None = None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x) * self.loss.logit_scale


def build_standard(cfg: ExperimentConfig, ctx: LTContext, args: Any,
                   base: Method | None) -> Method:
    """A StandardMethod of the resolved ``cfg``: its loss, rule and head as resolution set them."""
    model = build_model(cfg.model.arch, ctx.num_classes, head=cfg.model.head,
                        fp32_head=cfg.train.fp32_head)
    counts = ctx.class_counts
    return StandardMethod(
        ctx,
        model,
        build_loss(cfg.method.loss, counts, **cfg.method.loss_args),
        build_rule(cfg.method.rule, counts, **cfg.method.rule_args),
        mixup_alpha=cfg.method.mixup_alpha,
    )


def register_recipe(name: str, *, loss: str, rule: str = "none", head: str = "linear", doc: str,
                    title: str, family: str = FAMILIES[0],
                    defaults: dict[str, Any] | None = None) -> MethodSpec:
    """Register method ``name``: a StandardMethod with this loss, rule and head and these
    further config ``defaults`` (YAML and --set override all of them), named ``title`` in the
    ``family`` group of a comparison table."""
    return register(MethodSpec(name=name, build=build_standard, doc=doc,
                               recipe=Recipe(loss=loss, rule=rule, head=head),
                               defaults=defaults or {}, standard=True, title=title,
                               family=family))


register_recipe("ce", loss="ce", title="CE", doc="Cross-entropy, instance sampling (ERM baseline).")
register_recipe("bsce", loss="bsce", title="BSCE",
                doc="Balanced softmax CE (Ren et al. 2020): CE(z + log n, y).")
register_recipe("focal", loss="focal", title="Focal",
                doc="Focal loss (Lin et al. 2017), gamma=1 as in LDAM-DRW.")
register_recipe(
    "ldam_drw",
    loss="ldam",
    rule="drw",
    head="normed",
    title="LDAM-DRW",
    family=FAMILIES[1],
    doc="LDAM margins on a cosine head + deferred re-weighting (Cao et al. 2019).",
)
register_recipe(
    "lade",
    loss="lade",
    title="LADE",
    family=FAMILIES[1],
    doc="LADE (Hong et al. 2021): PriorCE + alpha * ReMINE term, on the standard ResNet-32.",
)
register_recipe("feabal", loss="feabal", title="FBL", family=FAMILIES[1],
                doc="Feature-balanced loss (FBL) with its curriculum.")
register_recipe("reweight_ce", loss="ce", rule="reweight", title="CE + re-weighting",
                doc="CE with effective-number weights.")
register_recipe("resample_ce", loss="ce", rule="resample", title="CE + re-sampling",
                doc="CE with effective-number resampling.")
