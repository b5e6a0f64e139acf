"""Long-tailed subsets and evaluation splits (METHODS.md §1.1, §1.2; DESIGN.md §4).

* :func:`class_counts` - per-class training counts, exactly as LDAM-DRW ``get_img_num_per_cls``.
* :func:`select_longtail` - the kept training indices, exactly as LDAM-DRW ``gen_imbalanced_data``
  with ``np.random.seed(rand_number)``, but with a private ``RandomState`` (no global side effect).
* :func:`split_val_test` - the seeded per-class val/test halves of the official test set.
* :func:`make_ltdata` - assembles an :class:`LTData` from decoded arrays (used by every dataset).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lt_ray.config import DataConfig
from lt_ray.data.base import LTData, Split
from lt_ray.errors import ConfigError


def class_counts(n_max: float, num_classes: int, imb_type: str, imb_factor: float) -> list[int]:
    """Per-class training counts, class 0 the head (METHODS.md §1.1).

    With ``μ = 1 / imb_factor``:
    ``exp``: ``n_i = int(n_max * μ ** (i / (C - 1)))`` (truncation, not rounding);
    ``step``: ``int(n_max)`` for ``i < C // 2`` and ``int(n_max * μ)`` after;
    ``none``: ``int(n_max)`` for every class.

    Args:
        n_max: images of the head class (``50000 / C`` for CIFAR, as a float).
        num_classes: ``C``.
        imb_type: ``exp`` | ``step`` | ``none``.
        imb_factor: ``n_max / n_min`` (>= 1; 100 means 5000 -> 50 on CIFAR-10).
    """
    if imb_factor <= 0:
        raise ConfigError(f"imb_factor must be >= 1 (n_max/n_min), got {imb_factor!r}")
    mu = 1.0 / imb_factor
    c = int(num_classes)
    if imb_type == "exp":
        if c == 1:
            return [int(n_max)]
        return [int(n_max * mu ** (i / (c - 1.0))) for i in range(c)]
    if imb_type == "step":
        return [int(n_max)] * (c // 2) + [int(n_max * mu)] * (c - c // 2)
    if imb_type == "none":
        return [int(n_max)] * c
    raise ConfigError(f"imb_type must be one of exp, step, none; got {imb_type!r}")


def subset_counts(name: str, cfg: DataConfig, n_max: float, num_classes: int) -> list[int]:
    """:func:`class_counts` for dataset ``name`` under ``cfg``; a ConfigError when a class would
    be left without training images. Needs no data (``lt_ray.data.expected_class_counts``)."""
    counts = class_counts(n_max, num_classes, cfg.imb_type, cfg.imb_factor)
    if min(counts) < 1:
        tail = counts.index(min(counts))
        raise ConfigError(
            f"data.imb_factor={cfg.imb_factor:g} with {cfg.imb_type} imbalance leaves class {tail} "
            f"of {name} without training images (n_max={n_max:g}); lower data.imb_factor"
            + (" or raise data.synthetic.n_max" if name == "synthetic" else "")
        )
    return counts


def select_longtail(labels: np.ndarray, counts: Sequence[int], seed: int) -> np.ndarray:
    """Indices of the kept training samples (METHODS.md §1.2), class by class.

    For each class in ascending order: the indices of that class (ascending) are shuffled with a
    private ``np.random.RandomState(seed)`` (legacy MT19937, the same stream as
    ``np.random.seed(seed); np.random.shuffle``), and the first ``counts[class]`` are kept. For
    ``seed=0`` this reproduces the LDAM-DRW / FBL / MiSLAS / RIDE / PaCo subset exactly; numpy's
    global RNG is left untouched.

    ``counts[k]`` belongs to the k-th class present in ``labels`` (ascending), as in LDAM-DRW's
    ``zip(np.unique(targets), img_num_per_cls)``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rs = np.random.RandomState(seed)
    kept: list[np.ndarray] = []
    for the_class, n in zip(np.unique(labels), counts, strict=False):
        idx = np.nonzero(labels == the_class)[0]
        rs.shuffle(idx)
        kept.append(idx[: int(n)])
    if not kept:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(kept).astype(np.int64, copy=False)


def split_val_test(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split of the official test set into (val indices, test indices).

    Each class ``c`` with ``n_c`` samples gives ``round(n_c * val_fraction)`` (half up) randomly
    chosen samples to val and the rest to test; when ``n_c >= 2`` both sides keep at least one.
    Uses ``np.random.default_rng([seed, 1])``: a stream independent of :func:`select_longtail`'s.
    Both index arrays are returned sorted ascending (the official order); they are disjoint and
    together cover every index.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng([int(seed), 1])
    val: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for the_class in np.unique(labels):
        idx = np.nonzero(labels == the_class)[0]
        n = idx.size
        k = int(np.floor(n * val_fraction + 0.5))
        if n >= 2:
            k = min(max(k, 1), n - 1)
        perm = rng.permutation(idx)
        val.append(perm[:k])
        test.append(perm[k:])
    if not val:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    return np.sort(np.concatenate(val)), np.sort(np.concatenate(test))


def _split(x: np.ndarray, y: np.ndarray, idx: np.ndarray | None = None) -> Split:
    if idx is not None:
        x, y = x[idx], y[idx]
    else:
        x, y = x.copy(), y.copy()
    return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))


def make_ltdata(
    name: str,
    cfg: DataConfig,
    *,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    n_max: float,
    class_names: list[str],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> LTData:
    """Assemble :class:`LTData` from a balanced training pool and the official test set.

    ``train_x``/``test_x`` are uint8 [N, 3, H, W] numpy arrays (not modified). The long-tailed
    subset uses ``cfg.imb_type``, ``cfg.imb_factor`` and ``cfg.split_seed``; val/test use
    ``cfg.val_fraction`` and ``cfg.split_seed``.
    """
    num_classes = len(class_names)
    counts = subset_counts(name, cfg, n_max, num_classes)
    kept = select_longtail(train_y, counts, cfg.split_seed)
    train = _split(train_x, train_y, kept)
    val_idx, test_idx = split_val_test(test_y, cfg.val_fraction, cfg.split_seed)
    got = torch.bincount(train.y, minlength=num_classes)
    return LTData(
        name=name,
        train=train,
        val=_split(test_x, test_y, val_idx),
        test=_split(test_x, test_y, test_idx),
        fulltest=_split(test_x, test_y),
        class_counts=got,
        class_names=list(class_names),
        mean=tuple(float(m) for m in mean),  # type: ignore[arg-type]
        std=tuple(float(s) for s in std),  # type: ignore[arg-type]
    )
