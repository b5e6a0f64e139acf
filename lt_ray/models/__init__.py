"""Backbones and classifier heads."""

from lt_ray.models.heads import HEADS, CalibratedHead, NormedLinear
from lt_ray.models.resnet_cifar import MODELS, CifarResNet, build_model

__all__ = ["HEADS", "CalibratedHead", "MODELS", "CifarResNet", "NormedLinear", "build_model"]
