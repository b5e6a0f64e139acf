"""The device-resident loader: batched, on-device augmentation of a uint8 :class:`Split`.

No DataLoader workers and no PIL (DESIGN.md §6): the images stay a uint8 tensor on the training
device, and each batch is gathered, augmented and normalised with a handful of tensor ops.

Training augmentation, per sample (semantically torchvision's
``RandomCrop(H, padding=p) -> RandomHorizontalFlip() -> ToTensor() -> Normalize(mean, std)``,
METHODS.md §1.3):

1. random crop of the zero-padded image (padding = black pixels, before normalisation);
   offsets ``(dy, dx)`` uniform in ``0..2p``;
2. horizontal flip with probability 1/2 (folded into the crop's column gather);
3. ``/255`` and ``(x - mean) / std``;
4. optional cutout: one ``cutout x cutout`` square per sample, centre uniform over the image,
   clipped at the borders, set to 0 AFTER normalisation (i.e. to the mean colour) as in
   DeVries & Taylor's reference code. (PaCo cuts before Normalize, which gives black squares.)

All randomness comes from the loader's ``generator`` (on the split's device): the same seed gives
the same epochs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from lt_ray.data.base import Split
from lt_ray.data.samplers import SAMPLERS
from lt_ray.errors import ConfigError


class Batch(NamedTuple):
    """One batch: normalised images ``x`` [B, 3, H, W] (None when the loader was built with
    ``images=False``: a method that trains on cached features), labels ``y`` [B] and ``index``
    [B], the positions of the samples in their split (the key into a feature cache)."""

    x: torch.Tensor | None
    y: torch.Tensor
    index: torch.Tensor


def _default_generator(device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(torch.initial_seed())  # follows torch.manual_seed
    return g


class DeviceLoader:
    """Iterate :class:`Batch` es ``(x, y, index)`` of a :class:`Split`: x float32 normalised
    [B, 3, H, W], y int64, index int64.

    Args:
        split: the images (uint8 NCHW) and labels, on the device the batches should be on.
        batch_size: images per batch.
        mean, std: per-channel normalisation on the [0, 1] scale.
        train: True = sampler order + augmentation; False = sequential order, no augmentation.
        sampler: a name in ``SAMPLERS`` (train only); switch per epoch with :meth:`set_sampler`.
        class_counts: per-class training counts for the samplers (None = counted from ``split``).
        sampler_kwargs: extra keyword arguments of the sampler (``beta``, ``samples_per_class``,
            ``num_samples``).
        crop_padding: zero padding of the random crop in pixels; 0 disables the crop.
        flip: random horizontal flip.
        cutout: side of the cutout square in pixels; 0 disables it.
        drop_last: drop the last incomplete batch.
        channels_last: return ``x`` in ``torch.channels_last`` memory format.
        generator: a ``torch.Generator`` on the split's device; None = one seeded from
            ``torch.initial_seed()``.
        images: gather and augment the images (False: ``x`` is None, for methods that train
            on cached features; the sample order is the same).
        raw: training batches carry the gathered uint8 images, neither augmented nor
            normalised, for a method that makes its own views (PaCo); evaluation is unchanged.
    """

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        sampler: str = "instance",
        class_counts: torch.Tensor | None = None,
        sampler_kwargs: dict | None = None,
        crop_padding: int = 4,
        flip: bool = True,
        cutout: int = 0,
        drop_last: bool = False,
        channels_last: bool = False,
        generator: torch.Generator | None = None,
        images: bool = True,
        raw: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if crop_padding < 0 or cutout < 0:
            raise ConfigError(f"crop_padding and cutout must be >= 0, got {crop_padding}, {cutout}")
        self.split = split
        self.device = split.x.device
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.cutout = int(cutout)
        self.drop_last = bool(drop_last)
        self.channels_last = bool(channels_last)
        self.images = bool(images)
        self.raw = bool(raw)
        if generator is None:
            generator = _default_generator(self.device)
        if torch.device(generator.device).type != self.device.type:
            raise ValueError(
                f"DeviceLoader: the generator is on {generator.device} but the split on "
                f"{self.device}; create it with torch.Generator(device=split.x.device)"
            )
        self.generator = generator
        self.class_counts = (
            None if class_counts is None else torch.as_tensor(class_counts, device=self.device)
        )
        c = split.x.shape[1]
        mean_t = torch.as_tensor(mean, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        if bool((std_t <= 0).any()):
            raise ConfigError(f"normalisation std must be > 0, got {tuple(std)}")
        # (x / 255 - mean) / std  ==  x * scale - shift
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = mean_t / std_t
        self.sampler = "instance"
        self.sampler_kwargs: dict = {}
        self.set_sampler(sampler, **(sampler_kwargs or {}))

    # ------------------------------------------------------------------ sampling
    def set_sampler(self, name: str, options: dict | None = None, /, **kwargs) -> None:
        """Use sampler ``name`` with keyword arguments from the next epoch on (train only).

        The arguments may be given as keywords or as one dict (``set_sampler("effective",
        {"beta": 0.9999})``, the shape of a train rule's ``(name, kwargs)``), or both.
        """
        SAMPLERS.get(name)  # unknown name -> ConfigError listing the known ones
        self.sampler = name
        self.sampler_kwargs = {**(options or {}), **kwargs}

    def _epoch_length(self) -> int:
        if self.train and self.sampler_kwargs.get("num_samples") is not None:
            return int(self.sampler_kwargs["num_samples"])
        return len(self.split)

    def __len__(self) -> int:
        n = self._epoch_length()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch_indices(self) -> torch.Tensor:
        """One epoch of indices into the split (sampler order when training)."""
        if not self.train:
            return torch.arange(len(self.split), device=self.device)
        fn = SAMPLERS.get(self.sampler)
        return fn(self.split.y, self.class_counts, self.generator, **self.sampler_kwargs)

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Batch]:
        bs = self.batch_size
        if not self.train:
            n = len(self.split)
            stop = n - n % bs if self.drop_last else n
            for s in range(0, stop, bs):
                index = torch.arange(s, min(s + bs, n), device=self.device)
                xb = self._finish(self._normalise(self.split.x[s : s + bs])) if self.images \
                    else None
                yield Batch(xb, self.split.y[s : s + bs], index)
            return
        idx = self.epoch_indices()
        n = idx.numel()
        stop = n - n % bs if self.drop_last else n
        for s in range(0, stop, bs):
            b = idx[s : s + bs]
            if not self.images:
                xb = None
            elif self.raw:
                xb = self.split.x[b]
            else:
                xb = self.augment(b)
            yield Batch(xb, self.split.y[b], b)

    def augment(self, idx: torch.Tensor) -> torch.Tensor:
        """Gather ``split.x[idx]`` with crop + flip, normalise, then cutout (training path)."""
        x = self.split.x
        if self.crop_padding > 0 or self.flip:
            x = crop_flip(x, idx, self.crop_padding, self.flip, self.generator)
        else:
            x = x[idx]
        out = self._normalise(x)
        if self.cutout > 0:
            out = cutout_(out, self.cutout, self.generator)
        return self._finish(out)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mul_(self._scale).sub_(self._shift)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x


def crop_offsets(
    batch: int, padding: int, flip: bool, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``(dy, dx)`` in ``0..2*padding`` and flip flags for ``batch`` samples."""
    hi = 2 * padding + 1
    dy = torch.randint(hi, (batch,), generator=generator, device=device)
    dx = torch.randint(hi, (batch,), generator=generator, device=device)
    if flip:
        flips = torch.rand(batch, generator=generator, device=device) < 0.5
    else:
        flips = torch.zeros(batch, dtype=torch.bool, device=device)
    return dy, dx, flips


def crop_flip_with(
    x: torch.Tensor,
    idx: torch.Tensor,
    padding: int,
    dy: torch.Tensor,
    dx: torch.Tensor,
    flips: torch.Tensor,
) -> torch.Tensor:
    """``x[idx]`` zero-padded by ``padding``, cropped at ``(dy, dx)`` and flipped where ``flips``.

    One advanced-indexing gather; sample i is
    ``pad(x[idx[i]])[:, dy[i]:dy[i]+H, dx[i]:dx[i]+W]``, mirrored left-right if ``flips[i]``.
    """
    h, w = x.shape[-2:]
    xb = x[idx]
    if padding > 0:
        xb = F.pad(xb, (padding, padding, padding, padding))
    dev = x.device
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = dy.unsqueeze(1) + ar_h  # [B, H]
    cols = dx.unsqueeze(1) + torch.where(flips.unsqueeze(1), w - 1 - ar_w, ar_w)  # [B, W]
    b = torch.arange(xb.shape[0], device=dev).view(-1, 1, 1, 1)
    ch = torch.arange(xb.shape[1], device=dev).view(1, -1, 1, 1)
    return xb[b, ch, rows[:, None, :, None], cols[:, None, None, :]]


def crop_flip(
    x: torch.Tensor, idx: torch.Tensor, padding: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Random crop (zero padding ``padding``) and random horizontal flip of ``x[idx]``."""
    dy, dx, flips = crop_offsets(idx.numel(), padding, flip, generator, x.device)
    return crop_flip_with(x, idx, padding, dy, dx, flips)


def cutout_(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one ``size x size`` square per sample in place (centre uniform, clipped at borders)."""
    bsz, _, h, w = x.shape
    dev = x.device
    cy = torch.randint(h, (bsz, 1), generator=generator, device=dev)
    cx = torch.randint(w, (bsz, 1), generator=generator, device=dev)
    y0, x0 = cy - size // 2, cx - size // 2
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    in_y = (ar_h >= y0) & (ar_h < y0 + size)  # [B, H]
    in_x = (ar_w >= x0) & (ar_w < x0 + size)  # [B, W]
    mask = in_y[:, None, :, None] & in_x[:, None, None, :]
    return x.masked_fill_(mask, 0.0)


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al. 2018; MiSLAS stage 1, METHODS.md §9).

    ``λ ~ Beta(alpha, alpha)`` (``λ = 1`` when ``alpha <= 0``) and a random permutation ``perm``
    of the batch; returns ``(λ·x + (1-λ)·x[perm], y, y[perm], λ)``. The loss is
    ``λ·CE(out, y_a) + (1-λ)·CE(out, y_b)``. ``λ`` is drawn with numpy from a seed taken from
    ``generator`` (torch's Beta sampler accepts no generator), so it stays reproducible.
    """
    if alpha <= 0:
        return x, y, y, 1.0
    dev = x.device
    gdev = dev if generator is None else generator.device  # None: torch's global RNGs
    seed = int(torch.randint(2**62, (1,), generator=generator, device=gdev).item())
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=generator, device=gdev).to(dev)
    mixed = x.mul(lam).add_(x[perm], alpha=1.0 - lam)
    return mixed, y, y[perm], lam
