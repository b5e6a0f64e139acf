"""Geometric-mean loss, GML (Du & Wu, CVPR 2023), as in the authors' group code."""

from __future__ import annotations

import torch

from lt_ray.errors import ConfigError
from lt_ray.losses.base import LOSSES, LTLoss


class GMLLoss(LTLoss):
    """GML, BTM ``methods.py: ReweightedGMLLogAfterMean`` (METHODS.md §12.2).

    With the balanced-softmax probability ``p̃^i = softmax(o^i + log N)`` clamped to
    ``[1e-5, 1]``, the soft recall of each class ``j`` present in the batch is
    ``r̂_j = (1/|B_j|) Σ_{i∈B_j} p̃^i_j`` and the loss is the power mean over those classes
    ``J_B``: ``L = ((1/|J_B|) Σ_{j∈J_B} (−log r̂_j)^p)^{1/p}``. For ``p = 1`` it is
    ``−log`` of the geometric mean of the soft recalls. Train-rule class weights are ignored
    (every present class already gets equal weight).

    Args:
        class_counts: training samples per class ``N``, [C].
        p: exponent of the power mean over classes (> 0, dimensionless); 1 is GML.
    """

    def __init__(self, class_counts: torch.Tensor, *, p: float) -> None:
        super().__init__(class_counts)
        if p <= 0:
            raise ConfigError(f"gml loss: method.loss_args.p must be > 0, got {p}")
        self.register_buffer("log_counts", torch.log(self.class_counts), persistent=False)
        self.p = float(p)

    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        features: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        z = logits.float() + self.log_counts
        z = z - z.max(dim=1, keepdim=True).values.detach()
        exp = torch.exp(z)
        prob = (exp / exp.sum(dim=1, keepdim=True)).clamp(1e-5, 1.0)
        target_prob = prob.gather(1, targets.unsqueeze(1)).squeeze(1)  # p̃^i_{y_i}, [B]
        num_classes = prob.shape[1]
        sums = prob.new_zeros(num_classes).index_add(0, targets, target_prob)
        sizes = torch.bincount(targets, minlength=num_classes)
        present = sizes > 0
        neg_log_recall = -torch.log(sums[present] / sizes[present].to(sums.dtype))
        if self.p == 1.0:
            return neg_log_recall.mean()
        return neg_log_recall.pow(self.p).mean().pow(1.0 / self.p)


@LOSSES.register("gml", head="linear", class_weights=False)
def gml(class_counts: torch.Tensor, *, p: float = 1.0) -> LTLoss:
    """GML with ``p`` = 1 (the authors' setting)."""
    return GMLLoss(class_counts, p=p)
