"""Epoch samplers: functions that return one epoch of training indices.

Every sampler is called as ``sampler(targets, class_counts, generator, **kw)`` with ``targets``
int64 [N], ``class_counts`` [C] (the training counts; ``None`` = counted from ``targets``) and a
``torch.Generator`` on ``targets.device``; it returns int64 indices into ``targets`` on that
device. All take ``num_samples`` (the epoch length, default N).

* ``instance``: a random permutation (instance-balanced sampling).
* ``class_balanced``: with replacement, sample weight ``1 / n_y``, so every class is drawn with
  probability 1/C (FBL ``BalancedRS``).
* ``sqrt``: with replacement, sample weight ``n_y^-1/2``, so class j is drawn with probability
  proportional to sqrt(n_j) (square-root sampling, Kang et al. 2020).
* ``effective``: with replacement, sample weight ``(1-beta)/(1-beta^n_y)``, ``beta=0.9999``
  (LDAM-DRW "Resample", FBL ``EffectNumRS``).
* ``class_aware``: round-robin; pick a class uniformly at random, take ``samples_per_class=4``
  consecutive samples of that class's shuffled cycle (MiSLAS stage 2, FBL ``ClassAware``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from lt_ray.errors import ConfigError
from lt_ray.registry import Registry

Sampler = Callable[..., torch.Tensor]
SAMPLERS: Registry[Sampler] = Registry("sampler")


def _counts(targets: torch.Tensor, class_counts: torch.Tensor | None) -> torch.Tensor:
    if class_counts is None:
        return torch.bincount(targets)
    counts = torch.as_tensor(class_counts, device=targets.device)
    if targets.numel() and int(targets.max()) >= counts.numel():
        raise ConfigError(
            f"sampler: label {int(targets.max())} but class_counts has {counts.numel()} classes"
        )
    return counts


def _length(targets: torch.Tensor, num_samples: int | None) -> int:
    n = targets.numel() if num_samples is None else int(num_samples)
    if n < 0:
        raise ConfigError(f"sampler num_samples must be >= 0, got {num_samples}")
    return n


def _weighted(
    targets: torch.Tensor, class_weight: torch.Tensor, generator: torch.Generator, n: int
) -> torch.Tensor:
    if n == 0 or targets.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=targets.device)
    w = class_weight.to(device=targets.device, dtype=torch.float64)[targets]
    if targets.device.type == "mps":  # no float64 on MPS
        w = w.float()
    return torch.multinomial(w, n, replacement=True, generator=generator)


@SAMPLERS.register("instance")
def instance(
    targets: torch.Tensor,
    class_counts: torch.Tensor | None,
    generator: torch.Generator,
    *,
    num_samples: int | None = None,
) -> torch.Tensor:
    """A random permutation of ``0..N-1`` (repeated permutations when ``num_samples > N``)."""
    del class_counts
    n_all = targets.numel()
    n = _length(targets, num_samples)
    if n_all == 0 or n == 0:
        return torch.zeros(0, dtype=torch.int64, device=targets.device)
    reps = math.ceil(n / n_all)
    perms = [torch.randperm(n_all, generator=generator, device=targets.device) for _ in range(reps)]
    return torch.cat(perms)[:n]


@SAMPLERS.register("class_balanced")
def class_balanced(
    targets: torch.Tensor,
    class_counts: torch.Tensor | None,
    generator: torch.Generator,
    *,
    num_samples: int | None = None,
) -> torch.Tensor:
    """With replacement, sample weight ``1/n_y``: each class drawn with probability 1/C."""
    counts = _counts(targets, class_counts).double()
    w = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    return _weighted(targets, w, generator, _length(targets, num_samples))


@SAMPLERS.register("sqrt")
def sqrt(
    targets: torch.Tensor,
    class_counts: torch.Tensor | None,
    generator: torch.Generator,
    *,
    num_samples: int | None = None,
) -> torch.Tensor:
    """With replacement, sample weight ``n_y^-1/2``: class j drawn with probability ∝ √n_j."""
    counts = _counts(targets, class_counts).double()
    w = torch.where(counts > 0, counts.clamp_min(1).rsqrt(), torch.zeros_like(counts))
    return _weighted(targets, w, generator, _length(targets, num_samples))


@SAMPLERS.register("effective")
def effective(
    targets: torch.Tensor,
    class_counts: torch.Tensor | None,
    generator: torch.Generator,
    *,
    beta: float = 0.9999,
    num_samples: int | None = None,
) -> torch.Tensor:
    """LDAM-DRW resampling: with replacement, sample weight ``(1-β)/(1-β^n_y)`` (unnormalised).

    ``beta`` in [0, 1): 0 gives instance-uniform weights, → 1 approaches ``1/n_y``.
    """
    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"effective sampler: beta must be in [0, 1), got {beta}")
    counts = _counts(targets, class_counts).double()
    w = (1.0 - beta) / (1.0 - torch.pow(torch.full_like(counts, beta), counts.clamp_min(1)))
    w = torch.where(counts > 0, w, torch.zeros_like(w))
    return _weighted(targets, w, generator, _length(targets, num_samples))


@SAMPLERS.register("class_aware")
def class_aware(
    targets: torch.Tensor,
    class_counts: torch.Tensor | None,
    generator: torch.Generator,
    *,
    samples_per_class: int = 4,
    num_samples: int | None = None,
) -> torch.Tensor:
    """Class-aware round-robin (MiSLAS stage 2, FBL ``ClassAware``).

    Repeatedly pick a class uniformly at random (among classes present in ``targets``) and take
    the next ``samples_per_class`` samples of that class's cycle: its samples in a random order,
    reshuffled each time the cycle is exhausted. The epoch is cut at ``num_samples`` (default N;
    FBL uses ``n_max * C``). Each epoch starts fresh cycles (the reference iterators persist across
    epochs; the difference is one partial cycle per class).

    Fully vectorised: the ragged per-class cycles are drawn with one two-key sort.
    """
    del class_counts  # the membership must come from ``targets`` themselves
    if samples_per_class < 1:
        raise ConfigError(
            f"class_aware sampler: samples_per_class must be >= 1, got {samples_per_class}"
        )
    dev = targets.device
    n = _length(targets, num_samples)
    if n == 0 or targets.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=dev)
    spc = int(samples_per_class)
    counts = torch.bincount(targets)  # [C]
    members = torch.argsort(targets, stable=True)  # sample ids grouped by class, ascending
    class_start = torch.cumsum(counts, 0) - counts  # [C]
    present = torch.nonzero(counts > 0).flatten()

    # 1. the class of every turn, and each turn's rank among the turns of its class
    turns = math.ceil(n / spc)
    cls = present[torch.randint(present.numel(), (turns,), generator=generator, device=dev)]
    order = torch.argsort(cls, stable=True)
    turns_per_class = torch.bincount(cls, minlength=counts.numel())
    first_turn = torch.cumsum(turns_per_class, 0) - turns_per_class
    rank = torch.empty_like(cls)
    rank[order] = torch.arange(turns, device=dev) - first_turn[cls[order]]

    # 2. stream position p of each drawn sample inside its class's sequence of cycles
    c_of = cls.repeat_interleave(spc)  # [turns * spc]
    p = (rank.unsqueeze(1) * spc + torch.arange(spc, device=dev)).flatten()
    n_c = counts[c_of]
    cycle, q = p // n_c, p % n_c

    # 3. one random permutation per (class, cycle) row, ragged rows of width n_c
    cycles_per_class = torch.where(
        turns_per_class > 0, (turns_per_class * spc + counts - 1) // counts.clamp_min(1), 0
    )
    row_class = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), cycles_per_class)
    row_width = counts[row_class]
    row_start = torch.cumsum(row_width, 0) - row_width
    first_row = torch.cumsum(cycles_per_class, 0) - cycles_per_class
    elem_row = torch.repeat_interleave(torch.arange(row_class.numel(), device=dev), row_width)
    elem_local = torch.arange(elem_row.numel(), device=dev) - row_start[elem_row]
    keys = torch.rand(elem_row.numel(), generator=generator, device=dev)
    by_key = torch.argsort(keys)
    by_row = by_key[torch.argsort(elem_row[by_key], stable=True)]  # rows in order, shuffled inside
    local_sorted = elem_local[by_row]

    # 4. sample id = members[class_start + perm_row[q]]
    row = first_row[c_of] + cycle
    local = local_sorted[row_start[row] + q]
    return members[class_start[c_of] + local][:n]
