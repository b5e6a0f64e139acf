"""Epoch samplers: valid indices, expected class frequencies, class-aware runs."""

from __future__ import annotations

import pytest
import torch

from lt_ray.data import SAMPLERS, class_counts
from lt_ray.errors import ConfigError

COUNTS = class_counts(2000.0, 10, "exp", 100)  # 2000 ... 20


def _targets(counts=COUNTS, seed=0):
    y = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return y[torch.randperm(y.numel(), generator=torch.Generator().manual_seed(seed))]


def _freq(y, idx, c):
    return torch.bincount(y[idx], minlength=c).double() / idx.numel()


@pytest.mark.parametrize("name", ["instance", "class_balanced", "sqrt", "effective", "class_aware"])
def test_valid_indices(name):
    y = _targets()
    counts = torch.tensor(COUNTS)
    idx = SAMPLERS.get(name)(y, counts, torch.Generator().manual_seed(0))
    assert idx.dtype == torch.int64 and idx.shape == (y.numel(),)
    assert int(idx.min()) >= 0 and int(idx.max()) < y.numel()
    again = SAMPLERS.get(name)(y, counts, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)
    other = SAMPLERS.get(name)(y, counts, torch.Generator().manual_seed(1))
    assert not torch.equal(idx, other)
    short = SAMPLERS.get(name)(y, counts, torch.Generator().manual_seed(0), num_samples=77)
    assert short.shape == (77,)


def test_instance_is_permutation():
    y = _targets()
    idx = SAMPLERS.get("instance")(y, None, torch.Generator().manual_seed(0))
    assert torch.equal(idx.sort().values, torch.arange(y.numel()))


def test_class_balanced_frequencies():
    y = _targets()
    idx = SAMPLERS.get("class_balanced")(y, torch.tensor(COUNTS), torch.Generator().manual_seed(0))
    assert torch.allclose(_freq(y, idx, 10), torch.full((10,), 0.1, dtype=torch.float64), atol=0.02)


def test_sqrt_frequencies():
    y = _targets()
    n = torch.tensor(COUNTS, dtype=torch.float64)
    expected = n.sqrt() / n.sqrt().sum()
    idx = SAMPLERS.get("sqrt")(y, None, torch.Generator().manual_seed(0))
    assert torch.allclose(_freq(y, idx, 10), expected, atol=0.02)


def test_effective_frequencies():
    y = _targets()
    n = torch.tensor(COUNTS, dtype=torch.float64)
    beta = 0.999
    w = (1 - beta) / (1 - beta**n)
    expected = n * w / (n * w).sum()
    g = torch.Generator().manual_seed(0)
    idx = SAMPLERS.get("effective")(y, torch.tensor(COUNTS), g, beta=beta)
    assert torch.allclose(_freq(y, idx, 10), expected, atol=0.02)
    with pytest.raises(ConfigError, match="beta"):
        SAMPLERS.get("effective")(y, None, torch.Generator(), beta=1.0)


def test_class_aware_runs_and_cycles():
    counts = [500, 100, 20, 5, 1]
    y = _targets(counts)
    idx = SAMPLERS.get("class_aware")(y, None, torch.Generator().manual_seed(0))
    assert idx.numel() == y.numel()
    labels = y[idx]
    runs = labels[: (labels.numel() // 4) * 4].view(-1, 4)
    assert bool((runs == runs[:, :1]).all())  # every turn is 4 samples of one class
    freq = _freq(y, idx, 5)
    assert torch.allclose(freq, torch.full((5,), 0.2, dtype=torch.float64), atol=0.12)
    # each class's stream is a sequence of full shuffled cycles: within any aligned window of
    # n_c draws of class c, every sample of c appears exactly once
    for c, n_c in enumerate(counts):
        stream = idx[labels == c]
        members = torch.nonzero(y == c).flatten().sort().values
        for k in range(stream.numel() // n_c):
            assert torch.equal(stream[k * n_c : (k + 1) * n_c].sort().values, members)


def test_class_aware_samples_per_class():
    y = _targets([30, 10, 5])
    g = torch.Generator().manual_seed(3)
    idx = SAMPLERS.get("class_aware")(y, None, g, samples_per_class=3)
    labels = y[idx][:42].view(-1, 3)
    assert bool((labels == labels[:, :1]).all())


def test_unknown_sampler():
    with pytest.raises(ConfigError, match="class_balanced"):
        SAMPLERS.get("class_balance")
