"""PaCo's two CIFAR training views (Cui et al., ICCV 2021) as batched, on-device tensor ops.

Each view augments a whole uint8 batch ``[B, 3, H, W]`` on its device (CPU or CUDA) with
per-sample random parameters; there is no per-image Python loop and no PIL.

* **Query view** (:meth:`PaCoViews.query`, PaCo's ``augmentation_regular`` in
  ``PaCo/LT/paco_cifar.py``): ``RandomCrop(32, padding=4) -> RandomHorizontalFlip ->
  CIFAR10Policy -> ToTensor -> Cutout(1, 16) -> Normalize``. The AutoAugment policy
  (:func:`autoaugment_cifar10`) follows ``PaCo/LT/autoaug.py``: per sample one of the 25
  sub-policies uniformly, each of its two ops applied with its probability, fixed magnitudes from
  the official 10-bin ranges, a random sign per application for shear, translate, color,
  contrast, sharpness and brightness (not for rotate, which always turns counter-clockwise),
  fill colour (128, 128, 128). Cutout zeros the square before normalisation: black, as in PaCo.
* **Key view** (:meth:`PaCoViews.key`, PaCo's ``augmentation_sim_cifar``, SimCLR style):
  ``RandomResizedCrop(32, scale=(0.2, 1)) -> RandomHorizontalFlip -> RandomApply(ColorJitter(0.4,
  0.4, 0.4, 0.1), p=0.8) -> RandomGrayscale(p=0.2) -> RandomApply(GaussianBlur(sigma in [0.1,
  2]), p=0.5) -> ToTensor -> Normalize`` (``GaussianBlur`` of ``PaCo/LT/moco/loader.py``), with
  ``kornia.augmentation``.

Randomness: the query view draws from ``generator`` (on the images' device; None = torch's
global RNG). kornia has no generator argument: the key view draws its parameters from torch's
global CPU RNG (seed it with ``torch.manual_seed``), also for CUDA images.

Deviations from the official PIL pipeline (all small):

* shear is bilinear (PIL: bicubic; torchvision's tensor ``affine`` has no bicubic). The shear is
  about the top-left corner as in PIL (``center=[0, 0]``) and a PIL coefficient ``m`` is the
  angle ``atan(m)``, so the geometry is the same. Translate and rotate are nearest-neighbour as
  in PIL and match it except for rounding ties.
* contrast blends with the float grayscale mean (PIL rounds the mean to an integer); grayscale
  weights are torchvision's (0.2989, 0.587, 0.114) vs PIL's (0.299, 0.587, 0.114); autocontrast
  truncates where PIL's lookup table rounds differently by at most one level.
* the key view stays in float between its steps (PIL quantises to uint8 after each), kornia's
  ColorJitter draws one random order of its four adjustments per batch (torchvision: per image),
  and the blur is a 13-tap Gaussian (+-3 sigma at sigma 2) with replicated borders, where PIL's
  ``GaussianBlur(radius=sigma)`` is an extended box-blur approximation.
* RandomResizedCrop samples crop boxes with kornia's algorithm (same scale and ratio ranges).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn
from torchvision.transforms import InterpolationMode

from lt_ray.data.loader import crop_flip, cutout_

FILL = 128  # PaCo's fillcolor (128, 128, 128) for shear, translate and rotate

_MAGNITUDES: dict[str, np.ndarray] = {
    "shearX": np.linspace(0, 0.3, 10),
    "shearY": np.linspace(0, 0.3, 10),
    "translateX": np.linspace(0, 150 / 331, 10),
    "translateY": np.linspace(0, 150 / 331, 10),
    "rotate": np.linspace(0, 30, 10),
    "color": np.linspace(0.0, 0.9, 10),
    "posterize": np.round(np.linspace(8, 4, 10), 0).astype(int),
    "solarize": np.linspace(256, 0, 10),
    "contrast": np.linspace(0.0, 0.9, 10),
    "sharpness": np.linspace(0.0, 0.9, 10),
    "brightness": np.linspace(0.0, 0.9, 10),
    "autocontrast": np.zeros(10),
    "equalize": np.zeros(10),
    "invert": np.zeros(10),
}

#: ops whose magnitude gets a random sign per application in PaCo's ``SubPolicy``
SIGNED_OPS = frozenset(
    {"shearX", "shearY", "translateX", "translateY", "color", "contrast", "sharpness", "brightness"}
)

#: PaCo's ``CIFAR10Policy``: 25 sub-policies of two ``(probability, op, magnitude bin)``
CIFAR10_POLICY: tuple[tuple[tuple[float, str, int], tuple[float, str, int]], ...] = (
    ((0.1, "invert", 7), (0.2, "contrast", 6)),
    ((0.7, "rotate", 2), (0.3, "translateX", 9)),
    ((0.8, "sharpness", 1), (0.9, "sharpness", 3)),
    ((0.5, "shearY", 8), (0.7, "translateY", 9)),
    ((0.5, "autocontrast", 8), (0.9, "equalize", 2)),
    ((0.2, "shearY", 7), (0.3, "posterize", 7)),
    ((0.4, "color", 3), (0.6, "brightness", 7)),
    ((0.3, "sharpness", 9), (0.7, "brightness", 9)),
    ((0.6, "equalize", 5), (0.5, "equalize", 1)),
    ((0.6, "contrast", 7), (0.6, "sharpness", 5)),
    ((0.7, "color", 7), (0.5, "translateX", 8)),
    ((0.3, "equalize", 7), (0.4, "autocontrast", 8)),
    ((0.4, "translateY", 3), (0.2, "sharpness", 6)),
    ((0.9, "brightness", 6), (0.2, "color", 8)),
    ((0.5, "solarize", 2), (0.0, "invert", 3)),
    ((0.2, "equalize", 0), (0.6, "autocontrast", 0)),
    ((0.2, "equalize", 8), (0.6, "equalize", 4)),
    ((0.9, "color", 9), (0.6, "equalize", 6)),
    ((0.8, "autocontrast", 4), (0.2, "solarize", 8)),
    ((0.1, "brightness", 3), (0.7, "color", 0)),
    ((0.4, "solarize", 5), (0.9, "autocontrast", 3)),
    ((0.9, "translateY", 9), (0.7, "translateY", 9)),
    ((0.9, "autocontrast", 2), (0.8, "solarize", 3)),
    ((0.8, "equalize", 8), (0.1, "invert", 3)),
    ((0.7, "translateY", 9), (0.9, "autocontrast", 1)),
)


def magnitude(op: str, bin_: int) -> float:
    """The official magnitude of ``op`` at bin ``bin_`` (0..9)."""
    return float(_MAGNITUDES[op][bin_])


def apply_op(x: torch.Tensor, op: str, mag: float, sign: int = 1) -> torch.Tensor:
    """One AutoAugment op of PaCo's ``SubPolicy`` on a uint8 batch, same parameters for all.

    ``mag`` is the official magnitude (:func:`magnitude`), ``sign`` (+1/-1) the random sign of
    the signed ops (ignored by the others). Returns a new uint8 tensor.
    """
    h, w = x.shape[-2:]
    s = float(sign)
    if op in ("shearX", "shearY"):
        # PIL (1, m, 0, 0, 1, 0): output(x, y) = input(x + m*y, y), about the top-left corner
        deg = math.degrees(math.atan(mag * s))
        shear = [deg, 0.0] if op == "shearX" else [0.0, deg]
        return TF.affine(x, angle=0.0, translate=[0.0, 0.0], scale=1.0, shear=shear,
                         interpolation=InterpolationMode.BILINEAR, fill=FILL, center=[0.0, 0.0])
    if op in ("translateX", "translateY"):
        # PIL (1, 0, c, 0, 1, 0): output(x) = input(x + c), i.e. a shift of -c pixels
        shift = -mag * s * (w if op == "translateX" else h)
        translate = [shift, 0.0] if op == "translateX" else [0.0, shift]
        return TF.affine(x, angle=0.0, translate=translate, scale=1.0, shear=[0.0, 0.0],
                         interpolation=InterpolationMode.NEAREST, fill=FILL)
    if op == "rotate":  # PIL Image.rotate: counter-clockwise about the centre, no random sign
        return TF.rotate(x, mag, interpolation=InterpolationMode.NEAREST, fill=FILL)
    if op == "color":
        return TF.adjust_saturation(x, 1.0 + mag * s)
    if op == "contrast":
        return TF.adjust_contrast(x, 1.0 + mag * s)
    if op == "sharpness":
        return TF.adjust_sharpness(x, 1.0 + mag * s)
    if op == "brightness":
        return TF.adjust_brightness(x, 1.0 + mag * s)
    if op == "posterize":
        return TF.posterize(x, int(mag))
    if op == "solarize":
        return TF.solarize(x, mag)
    if op == "autocontrast":
        return TF.autocontrast(x)
    if op == "equalize":
        return TF.equalize(x)
    if op == "invert":
        return TF.invert(x)
    raise ValueError(f"unknown AutoAugment op {op!r}")


# Distinct (op, bin) instances of the policy and, per (sub-policy, slot), the instance id and
# the probability; groups of samples are formed per (slot, instance, sign).
_INSTANCES: tuple[tuple[str, int], ...] = tuple(
    dict.fromkeys((op, m) for sub in CIFAR10_POLICY for _, op, m in sub)
)
_INSTANCE_ID = np.array(
    [[_INSTANCES.index((op, m)) for _, op, m in sub] for sub in CIFAR10_POLICY], dtype=np.int64
)
_PROB = np.array([[p for p, _, _ in sub] for sub in CIFAR10_POLICY], dtype=np.float64)
_SIGNED = np.array([op in SIGNED_OPS for op, _ in _INSTANCES])


def _check_uint8_images(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected uint8 images [B, 3, H, W], got {x.dtype} {tuple(x.shape)}")


def apply_policy(
    x: torch.Tensor, policy: torch.Tensor, applied: torch.Tensor, sign: torch.Tensor
) -> torch.Tensor:
    """Apply given AutoAugment draws to a uint8 batch (deterministic; a new tensor).

    Args:
        x: uint8 [B, 3, H, W].
        policy: int [B], sub-policy index per sample (0..24 of :data:`CIFAR10_POLICY`).
        applied: bool [B, 2], whether op slot 0 / 1 of the sample's sub-policy is applied.
        sign: int [B, 2], +1 or -1, the magnitude sign of each slot (signed ops only).

    Samples sharing (slot, op, magnitude, sign) are transformed together; slot 0 of all samples
    runs before slot 1. One device-to-host copy of the ``[B, 2]`` group keys per call.
    """
    _check_uint8_images(x)
    draws = torch.cat([policy.long().view(-1, 1), applied.long(), sign.long()], 1).cpu().numpy()
    inst = _INSTANCE_ID[draws[:, 0]]  # [B, 2]
    positive = (draws[:, 3:] > 0) | ~_SIGNED[inst]
    keys = np.where(draws[:, 1:3] > 0, inst * 2 + positive, -1)
    out = x.clone()
    for slot in range(2):
        for key in np.unique(keys[:, slot]):
            if key < 0:
                continue
            op, bin_ = _INSTANCES[key // 2]
            rows = np.flatnonzero(keys[:, slot] == key)
            idx = torch.from_numpy(rows).to(x.device, non_blocking=True)
            out[idx] = apply_op(out[idx], op, magnitude(op, bin_), 1 if key % 2 else -1)
    return out


def autoaugment_cifar10(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x uint8 [B,3,H,W] -> uint8 [B,3,H,W]: PaCo's CIFAR10Policy with per-sample sub-policy,
    per-sample op coin flips, per-sample signs.

    ``generator`` is on ``x``'s device (None = torch's global RNG); ``x`` is not modified.
    """
    _check_uint8_images(x)
    b, dev = x.shape[0], x.device
    policy = torch.randint(len(CIFAR10_POLICY), (b,), generator=generator, device=dev)
    coin = torch.rand(b, 2, generator=generator, device=dev, dtype=torch.float64)
    sign = torch.randint(2, (b, 2), generator=generator, device=dev) * 2 - 1
    prob = torch.as_tensor(_PROB, device=dev)[policy]
    return apply_policy(x, policy, coin < prob, sign)


BLUR_KERNEL = 13  # covers +-3 sigma at PaCo's largest sigma (2.0)


@functools.lru_cache(maxsize=8)
def simclr_pipeline(height: int, width: int) -> nn.Module:
    """PaCo's SimCLR-style key augmentation for [0, 1] float images of size ``height x width``
    (kornia, per-sample parameters, built once per size)."""
    import kornia.augmentation as K  # lazy: kornia takes ~1 s to import

    return nn.Sequential(
        K.RandomResizedCrop((height, width), scale=(0.2, 1.0)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur(BLUR_KERNEL, sigma=(0.1, 2.0), border_type="replicate", p=0.5),
    )


def simclr_view(x: torch.Tensor) -> torch.Tensor:
    """x uint8 [B,3,H,W] -> float [B,3,H,W] in [0,1]: the key view before normalisation,
    per-sample parameters (kornia.augmentation).

    The parameters come from torch's global CPU RNG (kornia takes no generator).
    """
    _check_uint8_images(x)
    aug = simclr_pipeline(int(x.shape[-2]), int(x.shape[-1]))
    with torch.no_grad():
        return aug(x.float().div(255.0)).clamp_(0.0, 1.0)


class PaCoViews:
    """PaCo's query (AutoAugment + Cutout) and key (SimCLR) views of uint8 CIFAR batches.

    Args:
        mean, std: per-channel normalisation on the [0, 1] scale.
        crop_padding: zero padding of the query view's random crop (PaCo: 4).
        cutout: side of the query view's black cutout square (PaCo: 16); 0 disables it.
    """

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], *, crop_padding: int = 4,
        cutout: int = 16,
    ) -> None:
        if crop_padding < 0 or cutout < 0:
            raise ValueError(f"crop_padding and cutout must be >= 0, got {crop_padding}, {cutout}")
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        if self.mean.numel() != 3 or self.std.numel() != 3 or bool((self.std <= 0).any()):
            raise ValueError(f"need 3 means and 3 stds > 0, got {tuple(mean)}, {tuple(std)}")
        self.crop_padding = int(crop_padding)
        self.cutout = int(cutout)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` of a [0, 1] float batch, in place."""
        dev = x.device
        return x.sub_(self.mean.to(dev)).div_(self.std.to(dev))

    def query(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> normalised float32: crop + flip, AutoAugment, cutout."""
        _check_uint8_images(x)
        idx = torch.arange(x.shape[0], device=x.device)
        xb = crop_flip(x, idx, self.crop_padding, True, generator)
        out = autoaugment_cifar10(xb, generator).float().div_(255.0)
        if self.cutout > 0:
            cutout_(out, self.cutout, generator)
        return self.normalise(out)

    def key(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> normalised float32: the SimCLR view (global torch RNG)."""
        return self.normalise(simclr_view(x).float())
