"""RIDE's losses (Wang et al. ICLR 2021; METHODS.md §10): the multi-expert LDAM-DRW loss with
the distribution-aware diversity term, the distillation term and the expert router's target."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lt_ray.errors import ConfigError
from lt_ray.rules import effective_number_weights


def switch_epoch(reweight_fraction: float, num_epochs: int) -> int:
    """The 0-indexed epoch from which DRW (and the per-class temperature) apply."""
    return int(round(reweight_fraction * num_epochs))


class RIDELoss(nn.Module):
    """Sum over experts k of ``CE(z_k - s*m_y at the target, y, w) + lambda * Tbar^2 *
    KL(softmax(zbar/T) || softmax(z_k/T))`` (official ``RIDELoss``).

    ``expert_logits`` [K, B, C] are the experts' scaled cosines ``z_k = s * cos_k``; ``zbar`` is
    their mean, without gradient. LDAM margins ``m_j ∝ n_j^-1/4`` with max ``max_m``. From the
    switch epoch (``round(reweight_fraction * E)``, 0-indexed; the official 1-indexed ``epoch >
    160`` of 200) the CE gets the effective-number weights (``beta``, summing to C) and, with
    ``reweight``, the diversity temperature becomes per class ``T_j = T * w_j``, ``w_j = (C pi_j
    f + 1 - f) / max``, ``f = reweight_factor``; ``Tbar`` is the mean of ``T_j``. A negative
    ``diversity_factor`` rewards experts for disagreeing with the ensemble.

    Two corners differ from the official code, where it is not what METHODS.md §10 specifies:
    ``reweight=False`` keeps the DRW weights (the official flag crashes on the loss's first
    call: it then never sets the per-class weights its forward reads; set
    ``reweight_fraction=1`` for no DRW), and ``diversity_factor=0`` keeps one LDAM term per
    expert (the official code then puts every expert's CE on the mean logits).
    """

    def __init__(self, class_counts: torch.Tensor, *, max_m: float = 0.5, s: float = 30.0,
                 diversity_factor: float = -0.45, diversity_temperature: float = 1.0,
                 reweight: bool = True, reweight_fraction: float = 0.8,
                 reweight_factor: float = 0.05, beta: float = 0.9999) -> None:
        super().__init__()
        ranges = (("max_m", max_m, 0 <= max_m < math.inf, ">= 0"),
                  ("s", s, 0 < s < math.inf, "> 0 (the cosine scale)"),
                  ("diversity_temperature", diversity_temperature,
                   0 < diversity_temperature < math.inf, "> 0"),
                  ("reweight_fraction", reweight_fraction, 0 <= reweight_fraction <= 1,
                   "in [0, 1]"),
                  ("reweight_factor", reweight_factor, 0 <= reweight_factor <= 1, "in [0, 1]"),
                  ("beta", beta, 0 <= beta < 1, "in [0, 1)"),
                  ("diversity_factor", diversity_factor, math.isfinite(diversity_factor),
                   "a finite number"))
        for name, value, ok, expected in ranges:
            if not ok:
                raise ConfigError(f"method.args.{name} must be {expected}, got {value}")
        counts = torch.as_tensor(class_counts, dtype=torch.float32)
        root4 = counts.pow(-0.25)
        self.register_buffer("margins", root4 * (max_m / root4.max()), persistent=False)
        self.register_buffer("drw_weight", effective_number_weights(counts, beta),
                             persistent=False)
        prior = counts / counts.sum()
        temp = len(counts) * prior * reweight_factor + 1 - reweight_factor
        self.register_buffer("class_temperature", diversity_temperature * temp / temp.max(),
                             persistent=False)
        self.class_temperature_mean = float(self.class_temperature.mean())  # no sync per step
        self.s, self.diversity_factor = float(s), float(diversity_factor)
        self.diversity_temperature = float(diversity_temperature)
        self.reweight, self.reweight_fraction = bool(reweight), float(reweight_fraction)
        self.reweighting = False

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        self.reweighting = epoch >= switch_epoch(self.reweight_fraction, num_epochs)

    def forward(self, expert_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = expert_logits.float()
        mean = logits.mean(0).detach()
        weight = self.drw_weight if self.reweighting else None
        if self.reweighting and self.reweight:
            temperature: torch.Tensor | float = self.class_temperature.view(1, -1)
            t_mean = self.class_temperature_mean
        else:
            temperature = t_mean = self.diversity_temperature
        margin = F.one_hot(targets, logits.shape[-1]) * (self.s * self.margins[targets])[:, None]
        target_dist = F.softmax(mean / temperature, dim=1)
        loss = logits.new_zeros(())
        for z in logits:
            loss = loss + F.cross_entropy(z - margin, targets, weight=weight)
            if self.diversity_factor != 0:
                kl = F.kl_div(F.log_softmax(z / temperature, dim=1), target_dist,
                              reduction="batchmean")
                loss = loss + self.diversity_factor * t_mean * t_mean * kl
        return loss


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 KL(softmax(teacher/T) || softmax(student/T))``, batch mean; no gradient to the
    teacher (RIDE's distillation term)."""
    t = float(temperature)
    target = F.softmax(teacher.detach().float() / t, dim=1)
    return t * t * F.kl_div(F.log_softmax(student.float() / t, dim=1), target,
                            reduction="batchmean")


def router_targets(correct: torch.Tensor) -> torch.Tensor:
    """[B, K-1] targets of RIDE's expert router from ``correct`` [B, K] (whether the cumulative
    prediction of experts 0..i is right): router i should call more experts iff experts 0..i
    are wrong and some later cumulative prediction is right."""
    later = correct.flip(1).cummax(1).values.flip(1)[:, 1:]  # any(correct[:, i+1:])
    return ~correct[:, :-1] & later


def router_loss(router_logits: torch.Tensor, targets: torch.Tensor,
                pos_weight: float = 100.0) -> torch.Tensor:
    """Mean over the K-1 routers of their batch-mean BCE-with-logits with ``pos_weight``."""
    weight = router_logits.new_tensor([pos_weight])
    per_router = F.binary_cross_entropy_with_logits(
        router_logits.float(), targets.float(), pos_weight=weight, reduction="none"
    ).mean(0)
    return per_router.mean()
