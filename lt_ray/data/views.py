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

The AutoAugment ops reproduce PIL's arithmetic (PaCo applies them to PIL images): affine
coefficients as PIL's ``Image.transform`` takes them (the inverse map, shear about the top-left
corner), PIL's nearest paths for translate (float) and rotate (16.16 fixed point), PIL's bicubic
(a = -1) for shear, PIL's luma and blend for color/contrast/brightness, ``ImageFilter.SMOOTH`` for
sharpness, PIL's lookup tables for autocontrast, posterize and solarize; equalize is
torchvision's (equal to PIL's). The tests compare each op with PIL itself (bit-exact on
Pillow 13.0, CPU and CUDA alike). Samples are grouped per op kind within an op slot, with
per-sample parameters: at most 24 kernel calls per batch, one device-to-host and one
host-to-device copy.

Randomness: the query view draws from ``generator`` (on the images' device; None = torch's
global RNG). kornia has no generator argument: the key view draws its parameters from torch's
global CPU RNG (seed it with ``torch.manual_seed``), also for CUDA images.

Deviations from the official pipeline:

* the key view stays in float between its steps (PIL quantises to uint8 after each), kornia's
  ColorJitter draws one random order of its four adjustments per batch (torchvision: per image),
  RandomResizedCrop samples its boxes with kornia's algorithm (same scale and ratio ranges) and
  maps the box's corner pixel centres onto the output's (torchvision: box edges onto edges), and
  the blur is a 13-tap Gaussian (+-3 sigma at sigma 2) with replicated borders, where PIL's
  ``GaussianBlur(radius=sigma)`` is an extended box-blur approximation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn

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
_PROB = np.array([[p for p, _, _ in sub] for sub in CIFAR10_POLICY], dtype=np.float64)


def magnitude(op: str, bin_: int) -> float:
    """The official magnitude of ``op`` at bin ``bin_`` (0..9)."""
    return float(_MAGNITUDES[op][bin_])


def _check_uint8_images(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected uint8 images [B, 3, H, W], got {x.dtype} {tuple(x.shape)}")


# ---------------------------------------------------------------------------- op parameters
# Every op reads six float64 parameters per sample (unused ones are 0):
#   shearX/Y, translateX/Y: PIL's affine coefficients (a, b, c, d, e, f): the source pixel of
#       output pixel centre (x, y) is (a x + b y + c, d x + e y + f);
#   rotate: PIL's coefficients in 16.16 fixed point, as PIL's nearest affine path uses them;
#   color, contrast, sharpness, brightness: the enhance factor; posterize: bits;
#   solarize: threshold.
def _fix(v: float) -> float:
    """PIL's ``FIX``: to 16.16 fixed point, floor(v * 65536 + 0.5)."""
    return float(math.floor(v * 65536.0 + 0.5))


def _rotate_parameters(angle: float, h: int, w: int) -> list[float]:
    """PIL ``Image.rotate(angle)`` (counter-clockwise about (w/2, h/2)) as the fixed-point
    ``(a0, a1, a2, a3, a4, a5)`` of PIL's nearest affine path (origin at the first pixel centre)."""
    cx, cy = w / 2, h / 2
    t = -math.radians(angle % 360.0)
    a, b, d, e = (round(math.cos(t), 15), round(math.sin(t), 15), round(-math.sin(t), 15),
                  round(math.cos(t), 15))
    c = a * -cx + b * -cy + 0.0 + cx
    f = d * -cx + e * -cy + 0.0 + cy
    return [_fix(a), _fix(b), _fix(c + a * 0.5 + b * 0.5), _fix(d), _fix(e),
            _fix(f + d * 0.5 + e * 0.5)]


def op_parameters(op: str, mag: float, sign: int, h: int, w: int) -> list[float]:
    """The six per-sample parameters of ``op`` (see the comment above) for an ``h x w`` image."""
    m = mag * (float(sign) if op in SIGNED_OPS else 1.0)
    if op == "shearX":  # PIL (1, m, 0, 0, 1, 0)
        return [1.0, m, 0.0, 0.0, 1.0, 0.0]
    if op == "shearY":  # PIL (1, 0, 0, m, 1, 0)
        return [1.0, 0.0, 0.0, m, 1.0, 0.0]
    if op == "translateX":  # PIL (1, 0, m * width, 0, 1, 0): the content moves left for m > 0
        return [1.0, 0.0, m * w, 0.0, 1.0, 0.0]
    if op == "translateY":
        return [1.0, 0.0, 0.0, 0.0, 1.0, m * h]
    if op == "rotate":
        return _rotate_parameters(m, h, w)
    if op in ("color", "contrast", "sharpness", "brightness"):
        return [1.0 + m, 0.0, 0.0, 0.0, 0.0, 0.0]
    return [m, 0.0, 0.0, 0.0, 0.0, 0.0]


def _is_identity(op: str, mag: float) -> bool:
    if op in ("autocontrast", "equalize", "invert"):
        return False
    if op == "posterize":
        return int(mag) >= 8
    if op == "solarize":
        return mag > 255
    return mag == 0.0  # no shear/shift/turn, enhance factor 1


# ---------------------------------------------------------------------------- kernels
# A kernel maps uint8 [n, 3, H, W] and float64 parameters [n, 6] to uint8 [n, 3, H, W] with PIL's
# arithmetic; a sample's result does not depend on the other samples of the call.
def _gather(x: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
    """``out[i, :, r, c] = x[i, :, iy[i, r, c], ix[i, r, c]]`` for in-range index maps [n, H, W]."""
    n, c, h, w = x.shape
    flat = (iy * w + ix).reshape(n, 1, -1).expand(n, c, -1)
    return x.reshape(n, c, h * w).gather(2, flat).view(n, c, *iy.shape[1:])


def _coef(p: torch.Tensor, i: int) -> torch.Tensor:
    return p[:, i].view(-1, 1, 1)


def _fill_outside(v: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return torch.where(valid.unsqueeze(1), v, torch.full_like(v, FILL))


def _inside(ix: torch.Tensor, iy: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)


def _k_translate(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """PIL's nearest affine for b = d = 0 (``ImagingScaleAffine``): source floor(coordinate)."""
    n, _, h, w = x.shape
    xi = torch.arange(w, device=x.device, dtype=torch.float64).view(1, 1, w)
    yi = torch.arange(h, device=x.device, dtype=torch.float64).view(1, h, 1)
    ix = ((_coef(p, 2) + _coef(p, 0) * 0.5) + _coef(p, 0) * xi).floor_().long()  # [n, 1, W]
    iy = ((_coef(p, 5) + _coef(p, 4) * 0.5) + _coef(p, 4) * yi).floor_().long()  # [n, H, 1]
    shape = (n, h, w)
    v = _gather(x, iy.clamp(0, h - 1).expand(shape), ix.clamp(0, w - 1).expand(shape))
    return _fill_outside(v, _inside(ix, iy, h, w))


def _k_rotate(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """PIL's nearest affine in 16.16 fixed point (``affine_fixed``), used by ``Image.rotate``."""
    h, w = x.shape[-2:]
    q = p.long()
    xi = torch.arange(w, device=x.device).view(1, 1, w)
    yi = torch.arange(h, device=x.device).view(1, h, 1)
    ix = (_coef(q, 2) + _coef(q, 1) * yi + _coef(q, 0) * xi) >> 16
    iy = (_coef(q, 5) + _coef(q, 4) * yi + _coef(q, 3) * xi) >> 16
    v = _gather(x, iy.clamp(0, h - 1), ix.clamp(0, w - 1))
    return _fill_outside(v, _inside(ix, iy, h, w))


def _cubic(
    v1: torch.Tensor, v2: torch.Tensor, v3: torch.Tensor, v4: torch.Tensor, d: torch.Tensor
) -> torch.Tensor:
    """PIL's ``BICUBIC`` macro (cubic convolution with a = -1), in its order of operations."""
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def _k_shear(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """PIL's bicubic affine: fill where the source is outside, edge-clamped taps, truncation."""
    n, c, h, w = x.shape
    xs = torch.arange(w, device=x.device, dtype=torch.float64).add_(0.5).view(1, 1, w)
    ys = torch.arange(h, device=x.device, dtype=torch.float64).add_(0.5).view(1, h, 1)
    xin = _coef(p, 0) * xs + _coef(p, 1) * ys + _coef(p, 2)  # [n, H, W]
    yin = _coef(p, 3) * xs + _coef(p, 4) * ys + _coef(p, 5)
    valid = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    xin, yin = xin - 0.5, yin - 0.5
    x0, y0 = xin.floor(), yin.floor()
    dx, dy = (xin - x0).view(n, 1, 1, h, w), (yin - y0).view(n, 1, h, w)
    taps = torch.arange(-1, 3, device=x.device, dtype=torch.float64).view(1, 4, 1, 1)
    ix = (x0.unsqueeze(1) + taps).clamp_(0, w - 1).long()  # [n, 4, H, W]
    iy = (y0.unsqueeze(1) + taps).clamp_(0, h - 1).long()
    flat = (iy.unsqueeze(2) * w + ix.unsqueeze(1)).view(n, 1, -1).expand(n, c, -1)
    v = x.double().reshape(n, c, h * w).gather(2, flat).view(n, c, 4, 4, h, w)  # [.., row, col]
    rows = _cubic(*v.unbind(3), dx)  # [n, c, 4, H, W]
    out = _cubic(*rows.unbind(2), dy).clamp_(0, 255).to(torch.uint8)  # (UINT8) truncates
    return _fill_outside(out, valid)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB -> L, (19595 R + 38470 G + 7471 B + 0x8000) >> 16, as int32 [n, 1, H, W]."""
    r, g, b = x.int().unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).unsqueeze(1)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.blend(degenerate, x, factor)``: float32 ``d + f * (x - d)``, clip, truncate."""
    d = degenerate.float()
    f = factor.float().view(-1, 1, 1, 1)
    return (x.float() - d).mul_(f).add_(d).clamp_(0, 255).to(torch.uint8)


def _k_color(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return _blend(_luma(x), x, p[:, 0])


def _k_contrast(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    mean = _luma(x).double().mean((1, 2, 3), keepdim=True)  # PIL: int(mean + 0.5)
    return _blend(mean.add_(0.5).floor_(), x, p[:, 0])


def _k_brightness(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return _blend(torch.zeros((), device=x.device), x, p[:, 0])


_SMOOTH = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]])


def _k_sharpness(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Blend with PIL's ``ImageFilter.SMOOTH`` (3x3 kernel / 13, rounded; border pixels kept)."""
    c = x.shape[1]
    smooth = x.float()
    weight = _SMOOTH.to(x.device).expand(c, 1, 3, 3)
    smooth[..., 1:-1, 1:-1] = F.conv2d(smooth, weight, groups=c).div_(13.0).round_()
    return _blend(smooth, x, p[:, 0])


def _k_posterize(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    bits = p[:, 0].long().view(-1, 1, 1, 1)
    return x & ((255 << (8 - bits)) & 255).to(torch.uint8)


def _k_solarize(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= p[:, 0].view(-1, 1, 1, 1), 255 - x, x)


def _k_invert(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return 255 - x


def _k_autocontrast(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.autocontrast`` (cutoff 0): per channel lut int(i * scale + offset)."""
    lo = x.amin((2, 3), keepdim=True).double()
    hi = x.amax((2, 3), keepdim=True).double()
    scale = torch.full_like(hi, 255.0) / (hi - lo).clamp_(min=1.0)  # (not 255.0 / t: reciprocal)
    v = (x.double() * scale + -lo * scale).clamp_(0, 255).to(torch.uint8)
    return torch.where(hi > lo, v, x)


def _k_equalize(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return TF.equalize(x)  # torchvision's equalize computes PIL's ImageOps.equalize


_KERNELS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "shearX": _k_shear, "shearY": _k_shear, "translateX": _k_translate,
    "translateY": _k_translate, "rotate": _k_rotate, "color": _k_color,
    "contrast": _k_contrast, "sharpness": _k_sharpness, "brightness": _k_brightness,
    "posterize": _k_posterize, "solarize": _k_solarize, "autocontrast": _k_autocontrast,
    "equalize": _k_equalize, "invert": _k_invert,
}
_KERNEL_LIST = tuple(dict.fromkeys(_KERNELS.values()))


def apply_op(x: torch.Tensor, op: str, mag: float, sign: int = 1) -> torch.Tensor:
    """One AutoAugment op of PaCo's ``SubPolicy`` on a uint8 batch, same parameters for all.

    ``mag`` is the official magnitude (:func:`magnitude`), ``sign`` (+1/-1) the random sign of
    the signed ops (ignored by the others). Returns a new uint8 tensor.
    """
    _check_uint8_images(x)
    if op not in _KERNELS:
        raise ValueError(f"unknown AutoAugment op {op!r}")
    if _is_identity(op, mag):
        return x.clone()
    h, w = x.shape[-2:]
    p = torch.tensor(op_parameters(op, mag, sign, h, w), dtype=torch.float64, device=x.device)
    return _KERNELS[op](x, p.expand(x.shape[0], 6))


# ---------------------------------------------------------------------------- the policy
@functools.lru_cache(maxsize=16)
def _policy_tables(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per (sub-policy, slot, sign -1/+1): the kernel index (-1: identity) and the parameters."""
    kernel = np.full((len(CIFAR10_POLICY), 2, 2), -1, dtype=np.int64)
    params = np.zeros((len(CIFAR10_POLICY), 2, 2, 6), dtype=np.float64)
    for k, sub in enumerate(CIFAR10_POLICY):
        for slot, (_, op, bin_) in enumerate(sub):
            mag = magnitude(op, bin_)
            for si, sign in enumerate((-1, 1)):
                if not _is_identity(op, mag):
                    kernel[k, slot, si] = _KERNEL_LIST.index(_KERNELS[op])
                params[k, slot, si] = op_parameters(op, mag, sign, h, w)
    return kernel, params


def apply_policy(
    x: torch.Tensor, policy: torch.Tensor, applied: torch.Tensor, sign: torch.Tensor
) -> torch.Tensor:
    """Apply given AutoAugment draws to a uint8 batch (deterministic; a new tensor).

    Args:
        x: uint8 [B, 3, H, W].
        policy: int [B], sub-policy index per sample (0..24 of :data:`CIFAR10_POLICY`).
        applied: bool [B, 2], whether op slot 0 / 1 of the sample's sub-policy is applied.
        sign: int [B, 2], +1 or -1, the magnitude sign of each slot (signed ops only).

    Slot 0 of all samples runs before slot 1. Within a slot, the samples are grouped by kernel
    (one call per kind of op, per-sample parameters), so a batch costs at most 2 x 12 kernel
    calls, one device-to-host copy of the draws and one host-to-device copy of the plan.
    """
    _check_uint8_images(x)
    b, (h, w) = x.shape[0], x.shape[-2:]
    if b == 0:
        return x.clone()
    draws = torch.cat([policy.long().view(-1, 1), applied.long(), sign.long()], 1).cpu().numpy()
    kernel_table, param_table = _policy_tables(int(h), int(w))
    pol, slots, sign_idx = draws[:, :1], np.arange(2), (draws[:, 3:] > 0).astype(np.int64)
    kernel = np.where(draws[:, 1:3] > 0, kernel_table[pol, slots, sign_idx], -1)  # [B, 2]
    params = param_table[pol, slots, sign_idx]  # [B, 2, 6]
    # the plan, per slot: samples sorted by kernel, with their parameters
    order = np.argsort(kernel, axis=0, kind="stable")  # [B, 2]
    plan = np.concatenate([order.T[..., None], params[order, slots].transpose(1, 0, 2)], 2)
    plan_dev = torch.from_numpy(plan).to(x.device)  # [2, B, 7] float64
    out = x.clone()
    for slot in range(2):
        ks = kernel[order[:, slot], slot]
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        for s, e in zip(starts, np.r_[starts[1:], b], strict=True):
            if ks[s] < 0:
                continue
            idx = plan_dev[slot, s:e, 0].long()
            out[idx] = _KERNEL_LIST[ks[s]](out[idx], plan_dev[slot, s:e, 1:])
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


# ---------------------------------------------------------------------------- key view
BLUR_KERNEL = 13  # covers +-3 sigma at PaCo's largest sigma (2.0)


@functools.lru_cache(maxsize=8)
def simclr_pipeline(height: int, width: int) -> nn.Module:
    """PaCo's SimCLR-style key augmentation for [0, 1] float images of size ``height x width``
    (kornia, per-sample parameters, built once per size)."""
    import kornia.augmentation as K  # lazy: kornia takes ~1 s to import

    return nn.Sequential(
        # "resample": one batched warp instead of a resize per sample (same output)
        K.RandomResizedCrop((height, width), scale=(0.2, 1.0), cropping_mode="resample"),
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
        if self.mean.device != x.device:  # moved once, not per batch
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return x.sub_(self.mean).div_(self.std)

    def query(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> normalised float32: crop + flip, AutoAugment, black cutout."""
        _check_uint8_images(x)
        idx = torch.arange(x.shape[0], device=x.device)
        xb = crop_flip(x, idx, self.crop_padding, True, generator)
        out = autoaugment_cifar10(xb, generator).float().div_(255.0)
        if self.cutout > 0:
            cutout_(out, self.cutout, generator)
        return self.normalise(out)

    def key(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> normalised float32: the SimCLR view (global torch RNG)."""
        return self.normalise(simclr_view(x))
