"""RIDE's multi-expert CIFAR ResNet and its expert router (Wang et al. ICLR 2021; METHODS.md
§10; official ``model/ldam_drw_resnets/ride_resnet_cifar.py`` and ``ea_resnet_cifar.py``).

The stem and ``layer1`` are shared; every expert has its own ``layer2``, ``layer3`` and cosine
classifier. With ``reduce_dimension`` the experts' stages are 24 and 48 channels wide (instead
of 32 and 64), so three experts cost about as much as one ResNet-32 at the top. Expert logits
are ``z_k = s * cos_k`` (s = 30); the model's output is their mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lt_ray.models.heads import NormedLinear
from lt_ray.models.resnet_cifar import BasicBlock

DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}


def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_planes, planes, stride)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ExpertsHead(nn.Module):
    """The experts' cosine classifiers on their concatenated pooled features [B, K*D]:
    ``per_expert`` gives ``s * cos_k`` [K, B, C]; ``forward`` their mean (the combined output:
    calibrated logits, in fp32 under autocast)."""

    def __init__(self, num_experts: int, feature_dim: int, num_classes: int,
                 s: float = 30.0) -> None:
        super().__init__()
        self.linears = nn.ModuleList(
            NormedLinear(feature_dim, num_classes) for _ in range(num_experts)
        )
        self.feature_dim = feature_dim
        self.s = float(s)

    def per_expert(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=features.device.type, enabled=False):
            parts = features.float().split(self.feature_dim, dim=1)
            pairs = zip(self.linears, parts, strict=True)
            return torch.stack([self.s * head(f) for head, f in pairs])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.per_expert(features).mean(0)


class RideResNet(nn.Module):
    """Shared stem + ``layer1``; per expert ``layer2``, ``layer3``, GAP and a NormedLinear."""

    def __init__(self, blocks_per_stage: int, num_classes: int, num_experts: int = 3,
                 reduce_dimension: bool = True, s: float = 30.0) -> None:
        super().__init__()
        width2, width3 = (24, 48) if reduce_dimension else (32, 64)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _stage(16, 16, blocks_per_stage, 1)
        self.layer2s = nn.ModuleList(
            _stage(16, width2, blocks_per_stage, 2) for _ in range(num_experts)
        )
        self.layer3s = nn.ModuleList(
            _stage(width2, width3, blocks_per_stage, 2) for _ in range(num_experts)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
        self.head = ExpertsHead(num_experts, width3, num_classes, s)
        self.num_experts = num_experts
        self.expert_dim = width3

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The experts' pooled features, concatenated: [B, K * expert_dim]."""
        shared = self.layer1(F.relu(self.bn1(self.conv1(x))))
        pooled = [
            torch.flatten(F.adaptive_avg_pool2d(layer3(layer2(shared)), 1), 1)
            for layer2, layer3 in zip(self.layer2s, self.layer3s, strict=True)
        ]
        return torch.cat(pooled, dim=1)

    def expert_logits(self, features: torch.Tensor) -> torch.Tensor:
        """[K, B, C] scaled cosines of every expert."""
        return self.head.per_expert(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ExpertRouter(nn.Module):
    """RIDE's expert-assignment module: router i (< K-1) decides from expert i's L2-normalised
    pooled feature (Linear(D, 16) + ReLU) and the top-``top_k`` values of the running mean
    logits of experts 0..i (a shared Linear(16 + top_k, 1)) whether to call expert i+1."""

    def __init__(self, num_experts: int, feature_dim: int, top_k: int = 30,
                 hidden: int = 16) -> None:
        super().__init__()
        self.hidden = nn.ModuleList(nn.Linear(feature_dim, hidden) for _ in range(num_experts - 1))
        self.decide = nn.Linear(hidden + top_k, 1)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
        self.top_k = top_k
        self.feature_dim = feature_dim

    def forward(self, features: torch.Tensor, expert_logits: torch.Tensor) -> torch.Tensor:
        """Router logits [B, K-1] from the experts' features [B, K*D] and logits [K, B, C]."""
        running = expert_logits.float().cumsum(0)
        parts = features.float().split(self.feature_dim, dim=1)
        out = []
        for i, hidden in enumerate(self.hidden):
            h = F.relu(hidden(F.normalize(parts[i], dim=1)))
            top = torch.topk(running[i] / (i + 1), k=self.top_k, dim=1).values
            out.append(self.decide(torch.cat([top, h], dim=1)))
        return torch.cat(out, dim=1)


def route(expert_logits: torch.Tensor, router_logits: torch.Tensor) -> tuple[torch.Tensor,
                                                                             torch.Tensor]:
    """Test-time dynamic expert assignment: start with expert 0 and call expert i+1 while router
    i says ``sigmoid > 0.5`` (once a router says no, the image stops). Returns the mean logits of
    the experts used [B, C] and how many were used per image [B]."""
    go_on = torch.sigmoid(router_logits.float()) > 0.5  # [B, K-1]
    used = torch.cat([torch.ones_like(go_on[:, :1]), go_on.cumprod(1).bool()], dim=1)  # [B, K]
    count = used.sum(1)
    total = (expert_logits.float() * used.T.unsqueeze(-1).float()).sum(0)
    return total / count.unsqueeze(1), count
