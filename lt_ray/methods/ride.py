"""RIDE: long-tailed recognition by routing diverse distribution-aware experts (Wang et al.
ICLR 2021; METHODS.md §10).

* ``ride``: the multi-expert ResNet (:mod:`lt_ray.models.ride`) trained with the RIDE loss
  (per-expert LDAM-DRW + the diversity term); SGD with Nesterov momentum, wd 5e-4, lr x0.01 /
  x1e-4 at 80/90 % of the epochs, 5 warm-up epochs. Prediction: the mean of the experts.
* ``ride_distill``: the same student, plus ``distill_factor * T^2 KL(teacher || student)`` on
  the mean logits, from a frozen RIDE teacher (its ``pretrained:`` stage, by default a 6-expert
  ``ride``), 20 warm-up epochs. As the official ``RIDELossWithDistill``, the whole loss (RIDE
  loss + distillation) is added once per expert, i.e. multiplied by K.
* ``ride_ea``: stage 2, the expert-assignment router on a frozen ``ride``/``ride_distill``
  model (BN in eval mode): trained with BCE (pos_weight 100) towards "call the next expert iff
  the experts so far are wrong and a later cumulative prediction is right", 5 epochs, batch
  512, class-balanced sampling, lr 0.01 Nesterov, cosine. At test time an image goes on to the
  next expert while the router says sigmoid > 0.5; the prediction is the mean of the experts
  it used, and ``{split}_experts`` reports the mean number of experts per image. Named outputs:
  ``routed`` (reported by the plain metrics) and ``all`` (every expert).

GML on RIDE re-trains the combined output: the experts' cosine classifiers together, on the
concatenated expert features, through their mean (``heads()["main"]``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from lt_ray.config import ExperimentConfig
from lt_ray.context import LTContext
from lt_ray.data import Batch
from lt_ray.errors import ConfigError
from lt_ray.losses.ride import RIDELoss, distill_kl, router_loss, router_targets, switch_epoch
from lt_ray.methods.base import Method, StepOutput
from lt_ray.methods.spec import BASE_FAMILY, FAMILIES, MethodSpec, Output, Stage, register
from lt_ray.methods.stages import base_checker
from lt_ray.models.ride import DEPTHS, ExpertRouter, RideResNet, route


@dataclasses.dataclass(frozen=True, kw_only=True)
class RIDEArgs:
    """``method.args`` of ``ride``."""

    num_experts: int = 3  # experts (>= 1)
    reduce_dimension: bool = True  # experts' stages 24/48 channels wide instead of 32/64
    s: float = 30.0  # cosine scale of the experts' classifiers
    max_m: float = 0.5  # the largest LDAM margin
    diversity_factor: float = -0.45  # weight of the diversity KL (negative: rewards diversity)
    diversity_temperature: float = 1.0  # base temperature of the diversity term
    reweight: bool = True  # per-class diversity temperature after the switch
    reweight_fraction: float = 0.8  # DRW switch at this fraction of the epochs (160 of 200)
    reweight_factor: float = 0.05  # strength of the per-class temperature
    beta: float = 0.9999  # effective-number beta of the DRW weights

    def __post_init__(self) -> None:
        if self.num_experts < 1:
            raise ConfigError(f"method.args.num_experts must be >= 1, got {self.num_experts}")
        if not 0 <= self.reweight_fraction <= 1:
            raise ConfigError("method.args.reweight_fraction must be in [0, 1], got "
                              f"{self.reweight_fraction}")
        self.loss(torch.ones(2))  # the loss's range checks (s, max_m, temperature, beta, ...)

    def loss(self, class_counts: torch.Tensor) -> RIDELoss:
        return RIDELoss(
            class_counts, max_m=self.max_m, s=self.s, diversity_factor=self.diversity_factor,
            diversity_temperature=self.diversity_temperature, reweight=self.reweight,
            reweight_fraction=self.reweight_fraction, reweight_factor=self.reweight_factor,
            beta=self.beta,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class RIDEDistillArgs(RIDEArgs):
    """``method.args`` of ``ride_distill``: RIDE's plus the distillation's."""

    distill_temperature: float = 1.5
    distill_factor: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.distill_temperature > 0 or self.distill_factor < 0:
            raise ConfigError("method.args.distill_temperature must be > 0 and distill_factor "
                              f">= 0, got {self.distill_temperature}, {self.distill_factor}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RouterArgs:
    """``method.args`` of ``ride_ea``."""

    top_k: int = 30  # top logits the router sees (at most the class count)
    pos_weight: float = 100.0  # BCE weight of "call the next expert"
    hidden: int = 16  # width of the router's hidden layer

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.hidden < 1 or not self.pos_weight > 0:
            raise ConfigError("method.args.top_k and hidden must be >= 1 and pos_weight > 0, "
                              f"got {self.top_k}, {self.hidden}, {self.pos_weight}")


def build_network(cfg: ExperimentConfig, args: RIDEArgs, num_classes: int) -> RideResNet:
    if cfg.model.arch not in DEPTHS:
        raise ConfigError(f"ride: model.arch={cfg.model.arch!r} has no RIDE variant "
                          f"({', '.join(DEPTHS)})")
    return RideResNet(DEPTHS[cfg.model.arch], num_classes, args.num_experts,
                      args.reduce_dimension, args.s)


class RIDEMethod(Method):
    """A multi-expert network trained with the RIDE loss (and optionally distilled)."""

    def __init__(self, ctx: LTContext, model: RideResNet, loss: RIDELoss,
                 teacher: Method | None = None, distill_temperature: float = 1.5,
                 distill_factor: float = 1.0) -> None:
        super().__init__(ctx)
        self.model = model
        self.loss = loss
        self.teacher = teacher
        if teacher is not None:
            for p in teacher.parameters():
                p.requires_grad_(False)
        self.distill_temperature = distill_temperature
        self.distill_factor = distill_factor

    def set_mode(self, epoch: int) -> None:
        self.train()
        if self.teacher is not None:
            self.teacher.eval()

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        super().on_epoch_start(epoch, num_epochs)
        self.loss.set_epoch(epoch, num_epochs)

    def training_step(self, batch: Batch) -> StepOutput:
        experts = self.model.expert_logits(self.model.features(batch.x))
        mean = experts.mean(0)
        loss = self.loss(experts, batch.y)
        extras: dict[str, torch.Tensor] = {}
        if self.teacher is not None:
            with torch.no_grad():
                teacher = self.teacher.predict(batch.x)
            distill = distill_kl(mean, teacher, self.distill_temperature)
            extras["distill"] = distill.detach()
            # official RIDELossWithDistill: the whole loss once per expert
            loss = len(experts) * (loss + self.distill_factor * distill)
        return StepOutput(loss, mean, extras)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)

    def heads(self) -> dict[str, nn.Module]:
        return {"main": self.model.head}

    def predict(self, x: torch.Tensor | None, *, split: str | None = None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x)


class RIDERouter(Method):
    """Stage 2: the expert router on a frozen RIDE model."""

    def __init__(self, ctx: LTContext, base: RIDEMethod, args: RouterArgs) -> None:
        super().__init__(ctx)
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        model = base.model
        self.router = ExpertRouter(model.num_experts, model.expert_dim,
                                   min(args.top_k, ctx.num_classes), args.hidden)
        self.pos_weight = args.pos_weight
        self._experts_used = 0.0
        self._images = 0

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("routed", "all")

    @property
    def primary_output(self) -> str:
        return "routed"

    def set_mode(self, epoch: int) -> None:
        self.eval()  # frozen experts, BN in eval mode
        self.router.train()

    def _experts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            features = self.base.model.features(x)
            return features, self.base.model.expert_logits(features)

    def training_step(self, batch: Batch) -> StepOutput:
        features, experts = self._experts(batch.x)
        running = experts.cumsum(0)
        correct = (running.argmax(-1) == batch.y).T  # [B, K]
        logits = self.router(features, experts)
        loss = router_loss(logits, router_targets(correct), self.pos_weight)
        return StepOutput(loss, experts.mean(0), {})

    def reset_eval_stats(self) -> None:
        self._experts_used, self._images = 0.0, 0

    def eval_stats(self) -> dict[str, float]:
        return {"experts": self._experts_used / max(self._images, 1)}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.encode(x)

    def heads(self) -> dict[str, nn.Module]:
        return self.base.heads()

    def predict(self, x: torch.Tensor | None, *, split: str | None = None,
                index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        features, experts = self._experts(x)
        routed, count = route(experts, self.router(features, experts))
        self._experts_used += float(count.sum())
        self._images += len(count)
        return {"routed": routed, "all": experts.mean(0)}


def build_ride(cfg: ExperimentConfig, ctx: LTContext, args: RIDEArgs,
               base: Method | None) -> Method:
    """RIDE: multi-expert ResNet, per-expert LDAM-DRW + distribution-aware diversity loss."""
    model = build_network(cfg, args, ctx.num_classes)
    return RIDEMethod(ctx, model, args.loss(ctx.class_counts))


def build_ride_distill(cfg: ExperimentConfig, ctx: LTContext, args: RIDEDistillArgs,
                       base: Method | None) -> Method:
    """RIDE distilled from a larger frozen RIDE teacher (the pretrained: stage)."""
    assert base is not None, "ride_distill learns from its stage-1 teacher"
    model = build_network(cfg, args, ctx.num_classes)
    return RIDEMethod(ctx, model, args.loss(ctx.class_counts), base,
                      args.distill_temperature, args.distill_factor)


def build_ride_ea(cfg: ExperimentConfig, ctx: LTContext, args: RouterArgs,
                  base: Method | None) -> Method:
    """RIDE stage 2: the expert-assignment router; reports the mean number of experts used."""
    assert isinstance(base, RIDEMethod)
    return RIDERouter(ctx, base, args)


def ride_switch(cfg: ExperimentConfig) -> int:
    """The DRW switch epoch of a RIDE recipe (its last loss phase)."""
    return switch_epoch(float(cfg.method.args["reweight_fraction"]), cfg.train.epochs)


def _is_ride(stage: ExperimentConfig) -> bool:
    return stage.method.name in ("ride", "ride_distill")


RIDE_OPTIM: dict[str, Any] = {
    "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "schedule": "step",
    "milestones": [0.8, 0.9], "decay": [0.01, 0.0001], "warmup_epochs": 5,
}
RIDE_TRAIN = {"epochs": 200, "batch_size": 128}
register(MethodSpec(
    name="ride", build=build_ride, args=RIDEArgs, doc=build_ride.__doc__.splitlines()[0],
    title=lambda cfg, args: f"RIDE ({args.num_experts} experts)", family=FAMILIES[1],
    phase_end=ride_switch, defaults={"optim": RIDE_OPTIM, "train": RIDE_TRAIN},
))
register(MethodSpec(
    name="ride_distill", build=build_ride_distill, args=RIDEDistillArgs,
    doc=build_ride_distill.__doc__.splitlines()[0], phase_end=ride_switch,
    title=lambda cfg, args: f"RIDE ({args.num_experts} experts, distilled)",
    family=FAMILIES[1],
    stage=Stage(hint="ride", check=base_checker(_is_ride, "a RIDE teacher (ride or ride_distill)")),
    defaults={"optim": {**RIDE_OPTIM, "warmup_epochs": 20}, "train": RIDE_TRAIN,
              "pretrained": {"method": {"name": "ride", "args": {"num_experts": 6}}}},
))
register(MethodSpec(
    name="ride_ea", build=build_ride_ea, args=RouterArgs,
    doc=build_ride_ea.__doc__.splitlines()[0],
    stage=Stage(hint="ride", check=base_checker(
        lambda stage: _is_ride(stage) and stage.method.args["num_experts"] >= 2,
        "a RIDE model with 2 or more experts (ride or ride_distill)")),
    outputs=(Output(name="routed", label="routed experts",
                    meaning="the mean of the experts each image's router called (what the plain "
                            "metrics report)", row="{base} + {method}", family=BASE_FAMILY),
             Output(name="all", label="all experts", meaning="every expert", row="{base}",
                    family=BASE_FAMILY)),
    title="router", family=FAMILIES[1],
    primary_output=lambda args: "routed",
    defaults={
        "optim": {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
                  "schedule": "cosine", "warmup_epochs": 0},
        "train": {"epochs": 5, "batch_size": 512, "sampler": "class_balanced"},
        "pretrained": {"method": {"name": "ride"}},
    },
))
