"""PaCo's network (Cui et al. ICCV 2021; METHODS.md §11; official ``moco/builder.py``): a
MoCo pair of CIFAR ResNets with an MLP projection, a queue of keys and their labels, and a
linear classifier on the query encoder's pooled feature.

* query encoder: the backbone, then ``Linear(D, D) - BN - ReLU - Linear(D, dim)``, L2-normalised;
* key encoder: a copy updated as ``k = m*k + (1-m)*q`` (no gradient), m = 0.999;
* queue: ``queue_size`` keys [K, dim] and labels [K], replaced a batch at a time;
* classifier: ``Linear(D, C)`` on the query's pooled feature; the prediction at test time.

The official builder also keeps a momentum twin of the classifier that nothing reads; it is
left out. Its queue starts as random vectors normalised along the wrong axis; here each
starting key is a unit vector (both are replaced after ``queue_size / batch`` steps).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lt_ray.models.resnet_cifar import CifarResNet, build_model, run_head


class PaCoNet(nn.Module):
    def __init__(self, arch: str, num_classes: int, *, dim: int = 32, queue_size: int = 1024,
                 momentum: float = 0.999) -> None:
        super().__init__()
        self.encoder_q: CifarResNet = build_model(arch, dim)
        d = self.encoder_q.feature_dim
        self.encoder_q.head = nn.Sequential(
            nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU(), nn.Linear(d, dim)
        )
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.classifier = nn.Linear(d, num_classes)  # PyTorch's default init, as the builder
        self.momentum = float(momentum)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_labels", torch.randint(0, num_classes, (queue_size,)))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._ptr: int | None = None  # queue_ptr as a Python int: no device sync per step
        self.register_load_state_dict_post_hook(PaCoNet._forget_ptr)

    @staticmethod
    def _forget_ptr(module: nn.Module, _keys: object) -> None:
        module._ptr = None  # a loaded queue_ptr is read again at the next enqueue

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The query encoder's pooled features [B, D]."""
        return self.encoder_q.features(x)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return run_head(self.classifier, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    @torch.no_grad()
    def momentum_update(self) -> None:
        m = self.momentum
        keys = list(self.encoder_k.parameters())
        torch._foreach_mul_(keys, m)  # k = m * k + (1 - m) * q, in a few fused kernels
        torch._foreach_add_(keys, [q.detach() for q in self.encoder_q.parameters()], alpha=1 - m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Replace the oldest ``len(keys)`` entries (the queue size is a multiple of it)."""
        if self._ptr is None:
            self._ptr = int(self.queue_ptr)
        ptr, n = self._ptr, len(keys)
        self.queue[ptr:ptr + n] = keys.to(self.queue.dtype)
        self.queue_labels[ptr:ptr + n] = labels
        self._ptr = (ptr + n) % len(self.queue)
        self.queue_ptr.fill_(self._ptr)

    def contrast(self, im_q: torch.Tensor, im_k: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One training forward: ``(features, feature_labels, logits)`` with features =
        ``cat(q, k, queue)`` (unit rows, fp32), labels ``cat(y, y, queue_labels)`` and the
        classifier's logits of the queries. Enqueues the keys."""
        pooled = self.encoder_q.features(im_q)
        q = F.normalize(self.encoder_q.classify(pooled), dim=1)
        logits = self.classify(pooled)
        with torch.no_grad():
            self.momentum_update()
            k = F.normalize(self.encoder_k.classify(self.encoder_k.features(im_k)), dim=1)
        features = torch.cat([q, k, self.queue.clone()], dim=0)
        feature_labels = torch.cat([labels, labels, self.queue_labels.clone()], dim=0)
        self.enqueue(k, labels)
        return features, feature_labels, logits
