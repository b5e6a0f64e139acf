"""A tiny, learnable, long-tailed image dataset for tests, smoke runs and benchmarks.

Every class ``c`` has a fixed random template: a class colour (chosen far from the other
classes' colours) plus a low-frequency pattern (a random 4x4 grid per channel, bilinearly
upsampled and made left-right symmetric so a horizontal flip keeps the class signal). An
image is ``template + N(0, noise²)`` per pixel on the [0, 1] scale, clipped and stored as uint8.
Everything is a deterministic function of ``data.split_seed`` and ``data.synthetic``.

The balanced pool has ``synthetic.n_max`` images per class; the long-tailed subset, the counts
formula and the val/test split are the CIFAR ones (:func:`~lt_ray.data.longtail.make_ltdata`).
The official test set holds ``synthetic.test_per_class`` images per class.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lt_ray.config import DataConfig, SyntheticConfig
from lt_ray.data.base import DATASETS, LTData
from lt_ray.data.longtail import make_ltdata, subset_counts
from lt_ray.errors import ConfigError

MAX_CLASSES = 1000
MAX_POOL_BYTES = 4 * 2**30  # the generated balanced pool (train + test images, uint8)


def _check(s: SyntheticConfig) -> None:
    problems = []
    if not 2 <= s.num_classes <= MAX_CLASSES:
        problems.append(f"data.synthetic.num_classes={s.num_classes} must be in 2..{MAX_CLASSES}")
    if s.n_max < 1:
        problems.append(f"data.synthetic.n_max={s.n_max} must be >= 1")
    if s.image_size < 4:
        problems.append(f"data.synthetic.image_size={s.image_size} must be >= 4 pixels")
    if s.test_per_class < 2:
        problems.append(
            f"data.synthetic.test_per_class={s.test_per_class} must be >= 2 (val and test halves)"
        )
    if not 0 <= s.noise < math.inf:
        problems.append(f"data.synthetic.noise={s.noise} must be a number >= 0")
    if problems:
        raise ConfigError("; ".join(problems))
    pool = s.num_classes * (s.n_max + s.test_per_class) * 3 * s.image_size**2
    if pool > MAX_POOL_BYTES:
        raise ConfigError(
            f"data.synthetic: {s.num_classes} classes x {s.n_max + s.test_per_class} images of "
            f"{s.image_size}x{s.image_size} pixels need {pool / 2**30:.1f} GiB (at most "
            f"{MAX_POOL_BYTES // 2**30} GiB); lower n_max, test_per_class or image_size"
        )


def templates(num_classes: int, image_size: int, seed: int) -> np.ndarray:
    """Class templates, float32 [C, 3, S, S] in [0, 1].

    Class colours are spread out (greedy farthest-point choice among 256 random colours, scaled
    to [0.1, 0.9]) so that the global colour alone separates the classes; a left-right symmetric
    low-frequency pattern of amplitude 0.4 adds spatial structure.
    """
    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    cand = torch.rand(256, 3, generator=g)
    chosen = [int(torch.randint(256, (1,), generator=g))]
    for _ in range(num_classes - 1):
        dist = torch.cdist(cand, cand[chosen]).min(dim=1).values
        chosen.append(int(dist.argmax()))
    colour = (0.1 + 0.8 * cand[chosen]).view(num_classes, 3, 1, 1)
    grid = torch.rand(num_classes, 3, 4, 4, generator=g) - 0.5
    size = (image_size, image_size)
    pattern = F.interpolate(grid, size=size, mode="bilinear", align_corners=True)
    pattern = 0.5 * (pattern + pattern.flip(-1))  # flip-invariant signal
    return (colour + 0.4 * pattern).clamp(0, 1).numpy()


def _images(tmpl: np.ndarray, labels: np.ndarray, noise: float, rng: np.random.Generator):
    x = tmpl[labels]
    x = x + rng.normal(0.0, noise, size=x.shape).astype(np.float32)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def synthetic_counts(cfg: DataConfig) -> list[int]:
    """Per-class training counts of the synthetic long-tailed subset (no images generated)."""
    _check(cfg.synthetic)
    return subset_counts("synthetic", cfg, float(cfg.synthetic.n_max), cfg.synthetic.num_classes)


@DATASETS.register("synthetic", counts=synthetic_counts)
def build_synthetic(cfg: DataConfig, root: Path) -> LTData:
    """Generated long-tailed images with a learnable class signal (data.synthetic); no files."""
    del root
    s = cfg.synthetic
    _check(s)
    c = s.num_classes
    tmpl = templates(c, s.image_size, cfg.split_seed)
    rng = np.random.default_rng([int(cfg.split_seed), 2])
    train_y = np.repeat(np.arange(c, dtype=np.int64), s.n_max)
    test_y = np.repeat(np.arange(c, dtype=np.int64), s.test_per_class)
    train_x = _images(tmpl, train_y, s.noise, rng)
    test_x = _images(tmpl, test_y, s.noise, rng)
    mean, std = _stats(train_x)
    return make_ltdata(
        "synthetic",
        cfg,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        n_max=float(s.n_max),
        class_names=[f"class_{i}" for i in range(c)],
        mean=mean,
        std=std,
    )


def _stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of the balanced pool on the [0, 1] scale (rounded to 4 digits)."""
    f = x.astype(np.float64) / 255.0
    mean = tuple(round(float(v), 4) for v in f.mean(axis=(0, 2, 3)))
    std = tuple(round(max(float(v), 1e-3), 4) for v in f.std(axis=(0, 2, 3)))
    return mean, std
