"""CIFAR ResNet-20/32/44/56 with the parameter-free option-A shortcut (He et al. 2016).

Layer names follow LDAM-DRW/FBL (``conv1, bn1, layer1..3``) so their checkpoints load; the
classifier is ``head`` (``linear``/``fc`` in other code bases, mapped by ``checkpoint.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lt_ray.models.heads import HEADS
from lt_ray.registry import Registry

ModelFactory = Callable[..., "CifarResNet"]
MODELS: Registry[ModelFactory] = Registry("model")


class ShortcutA(nn.Module):
    """Option A: subsample spatially and zero-pad the new channels (no parameters)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = planes - in_planes
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_shortcut = stride != 1 or in_planes != planes
        self.shortcut = ShortcutA(in_planes, planes, stride) if needs_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: stem 16 ch, three stages (16/32/64 ch), GAP, classifier head."""

    def __init__(
        self,
        blocks_per_stage: int,
        num_classes: int,
        head: str = "linear",
        widths: tuple[int, int, int] = (16, 32, 64),
        fp32_head: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        stages = []
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(blocks_per_stage):
                layers.append(BasicBlock(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.feature_dim = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
        self.head = HEADS.get(head)(self.feature_dim, num_classes)
        self.fp32_head = fp32_head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, feature_dim]."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Head logits of pooled features; in fp32 under autocast when ``fp32_head``."""
        return run_head(self.head, features, fp32=self.fp32_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def run_head(head: nn.Module, features: torch.Tensor, *, fp32: bool = True) -> torch.Tensor:
    """``head(features)``; with ``fp32`` autocast is off and the features are cast to float32.

    Under bf16 autocast a cosine head's outputs are rounded to ~0.004 (then scaled by s = 30)
    and argmax ties between logits go to the lower class index (the head class): the classifier
    head and everything after it stay in fp32, the backbone keeps the fast autocast path.
    """
    if not fp32:
        return head(features)
    with torch.autocast(device_type=features.device.type, enabled=False):
        return head(features.float())


def _register(depth: int) -> None:
    def factory(num_classes: int, head: str = "linear", fp32_head: bool = True) -> CifarResNet:
        return CifarResNet((depth - 2) // 6, num_classes, head, fp32_head=fp32_head)

    factory.__doc__ = f"CIFAR ResNet-{depth}: {(depth - 2) // 6} basic blocks per stage."
    MODELS.add(f"resnet{depth}", factory)


for _depth in (20, 32, 44, 56):
    _register(_depth)


def build_model(
    arch: str, num_classes: int, head: str = "linear", *, fp32_head: bool = True
) -> CifarResNet:
    return MODELS.get(arch)(num_classes, head=head, fp32_head=fp32_head)
