"""Parametric contrastive loss (PaCo, Cui et al. ICCV 2021; METHODS.md §11)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lt_ray.errors import ConfigError


class PaCoLoss(nn.Module):
    """PaCo's loss for a batch of B anchors (the queries).

    For anchor i the candidates are C class centres with logits ``(z_i + log pi) / supt`` (the
    classifier's logits, logit-adjusted by the training prior ``pi = n / N``) and the contrast
    entries ``q_i . f_j / temperature`` for every row j of ``features`` except i itself. Positives:
    weight ``beta`` on the one-hot class centre of ``y_i``, ``alpha`` on every contrast entry
    with the label ``y_i``. The denominator weighs class centres by 1 and contrast entries by
    ``gamma``. ``L_i = -sum_j w_ij log(e^l_ij / sum_k g_k e^l_ik) / sum_j w_ij``, batch mean
    (official ``losses.PaCoLoss`` with ``base_temperature = temperature``).

    ``forward(features, labels, sup_logits)``: ``features`` [2B + K, D] the L2-normalised
    queries, keys and queue (in that order), ``labels`` [2B + K], ``sup_logits`` [B, C].
    """

    def __init__(self, class_counts: torch.Tensor, *, alpha: float = 0.01, beta: float = 1.0,
                 gamma: float = 1.0, temperature: float = 0.05, supt: float = 1.0) -> None:
        super().__init__()
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if not value >= 0:
                raise ConfigError(f"paco: method.args.{name} must be >= 0, got {value}")
        if alpha == 0 and beta == 0:
            raise ConfigError("paco: method.args.alpha and beta are both 0: nothing is positive")
        for name, value in (("temperature", temperature), ("supt", supt)):
            if not value > 0:
                raise ConfigError(f"paco: method.args.{name} must be > 0, got {value}")
        counts = torch.as_tensor(class_counts, dtype=torch.float32)
        self.register_buffer("log_prior", torch.log(counts / counts.sum() + 1e-9),
                             persistent=False)
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.temperature, self.supt = float(temperature), float(supt)

    def forward(self, features: torch.Tensor, labels: torch.Tensor,
                sup_logits: torch.Tensor) -> torch.Tensor:
        b, c = sup_logits.shape
        features = features.float()
        anchors = features[:b]
        contrast = anchors @ features.T / self.temperature  # [B, 2B + K]
        centres = (sup_logits.float() + self.log_prior) / self.supt  # [B, C]
        logits = torch.cat([centres, contrast], dim=1)
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        not_self = torch.ones_like(contrast)
        not_self[torch.arange(b), torch.arange(b)] = 0
        same = (labels[:b, None] == labels[None, :]).float() * not_self
        onehot = F.one_hot(labels[:b], c).float()
        positive = torch.cat([onehot * self.beta, same * self.alpha], dim=1)
        denominator = torch.cat([torch.ones_like(centres), self.gamma * not_self], dim=1)
        log_norm = torch.log((logits.exp() * denominator).sum(1, keepdim=True) + 1e-12)
        log_prob = logits - log_norm
        return -((positive * log_prob).sum(1) / positive.sum(1)).mean()
