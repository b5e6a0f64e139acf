"""DeviceLoader: shapes, normalisation, crop/flip/cutout semantics, determinism, mixup."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lt_ray.data import DeviceLoader, Split, mixup
from lt_ray.data.loader import crop_flip_with, crop_offsets

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


def _split(n=50, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)  # no zeros
    y = torch.arange(n) % 5
    return Split(x, y)


def _normalise(x):
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return (x.float() / 255 - m) / s


def _loader(split, **kw):
    args = {"batch_size": 16, "mean": MEAN, "std": STD, "train": True}
    args.update(kw)
    return DeviceLoader(split, **args)


def test_eval_sequential_no_augmentation():
    s = _split()
    loader = _loader(s, train=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 4
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (50, 3, 8, 8)
    assert torch.equal(y, s.y)
    torch.testing.assert_close(x, _normalise(s.x), rtol=1e-5, atol=1e-5)


def test_train_without_augmentation_normalises_sampled_images():
    s = _split()
    loader = _loader(s, crop_padding=0, flip=False, generator=torch.Generator().manual_seed(0))
    ys, xs = [], []
    for x, y, _ in loader:
        xs.append(x)
        ys.append(y)
    x, y = torch.cat(xs), torch.cat(ys)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(50, generator=g)
    torch.testing.assert_close(x, _normalise(s.x[idx]), rtol=1e-5, atol=1e-5)
    assert torch.equal(y, s.y[idx])


def test_drop_last_and_len():
    s = _split()
    loader = _loader(s, drop_last=True)
    assert len(loader) == 3 and sum(1 for _ in loader) == 3
    assert all(x.shape[0] == 16 for x, _, _ in loader)
    ev = _loader(s, train=False, batch_size=64)
    assert len(ev) == 1


def test_crop_matches_reference_per_sample():
    s = _split(n=20)
    g = torch.Generator().manual_seed(3)
    dy, dx, flips = crop_offsets(20, 4, True, g, s.x.device)
    idx = torch.arange(20).flip(0)
    out = crop_flip_with(s.x, idx, 4, dy, dx, flips)
    padded = F.pad(s.x, (4, 4, 4, 4))
    for i in range(20):
        ref = padded[idx[i], :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        if flips[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref)
    assert flips.any() and (~flips).any()


def test_train_outputs_are_valid_crops_or_flips():
    s = _split(n=32)
    loader = _loader(s, batch_size=32, generator=torch.Generator().manual_seed(0))
    x, y, _ = next(iter(loader))
    unnorm = x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    raw = torch.round(unnorm * 255).to(torch.uint8)
    padded = F.pad(s.x, (4, 4, 4, 4))
    zeros_seen = False
    for i in range(32):
        # find which image it came from: its label narrows it, a crop must match exactly
        cands = [
            padded[j, :, a : a + 8, b : b + 8].flip(-1) if f else padded[j, :, a : a + 8, b : b + 8]
            for j in torch.nonzero(s.y == y[i]).flatten()
            for a in range(9)
            for b in range(9)
            for f in (False, True)
        ]
        assert any(torch.equal(raw[i], c) for c in cands)
        zeros_seen |= bool((raw[i] == 0).any())
    assert zeros_seen  # some crop reached into the black padding


def test_flip_only():
    s = _split(n=64)
    g0 = torch.Generator().manual_seed(0)
    loader = _loader(s, batch_size=64, crop_padding=0, flip=True, generator=g0)
    x, _, _ = next(iter(loader))
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(64, generator=g)
    ref = _normalise(s.x[idx])
    same = torch.isclose(x, ref, atol=1e-5).flatten(1).all(1)
    flipped = torch.isclose(x, ref.flip(-1), atol=1e-5).flatten(1).all(1)
    assert bool((same | flipped).all()) and same.any() and flipped.any()
    assert 16 < int(flipped.sum()) < 48


def test_reproducible_with_same_seed_and_differs_otherwise():
    s = _split()

    def run(seed):
        loader = _loader(s, cutout=3, generator=torch.Generator().manual_seed(seed))
        return [torch.cat([x for x, _, _ in loader]) for _ in range(2)]

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], a[1])  # epochs differ
    assert not torch.equal(a[0], c[0])


def test_cutout_zeroes_one_square_after_normalisation():
    s = _split(n=16, size=16)
    g = torch.Generator().manual_seed(0)
    loader = _loader(s, batch_size=16, crop_padding=0, flip=False, cutout=4, generator=g)
    x, _, _ = next(iter(loader))
    idx = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    ref = _normalise(s.x[idx])
    changed = ~torch.isclose(x, ref, atol=1e-5)
    assert bool((x[changed] == 0).all())
    per_sample = changed.any(1).flatten(1).sum(1)  # pixels changed per sample
    assert bool((per_sample >= 4).all()) and bool((per_sample <= 16).all())
    assert bool((changed.all(1) == changed.any(1)).all())  # all channels of a pixel together


def test_channels_last():
    s = _split()
    for train in (True, False):
        x, _, _ = next(iter(_loader(s, train=train, channels_last=True)))
        assert x.is_contiguous(memory_format=torch.channels_last)
    x, _, _ = next(iter(_loader(s, channels_last=False)))
    assert x.is_contiguous()


def test_sampler_switch_and_class_counts():
    s = _split(n=100)
    g = torch.Generator().manual_seed(0)
    loader = _loader(s, batch_size=100, sampler="class_aware", generator=g)
    _, y, _ = next(iter(loader))
    runs = y.view(-1, 4)
    assert bool((runs == runs[:, :1]).all())
    loader.set_sampler("effective", beta=0.99, num_samples=40)
    assert len(loader) == 1
    _, y, _ = next(iter(loader))
    assert y.numel() == 40
    loader.set_sampler("class_balanced", {"num_samples": 8})  # the (name, kwargs) rule shape
    assert len(loader) == 1 and next(iter(loader))[1].numel() == 8
    from lt_ray.errors import ConfigError

    with pytest.raises(ConfigError):
        loader.set_sampler("nope")


def test_generator_device_mismatch():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device")
    with pytest.raises(ValueError, match="generator"):
        _loader(_split(), generator=torch.Generator(device="cuda"))


def test_mixup():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 4, 4)
    y = torch.arange(8)
    xm, ya, yb, lam = mixup(x, y, 1.0, g)
    assert 0.0 <= lam <= 1.0 and isinstance(lam, float)
    assert torch.equal(ya, y)
    perm = yb  # y = arange, so y_b is the permutation
    assert torch.equal(perm.sort().values, y)
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x[perm])
    xm2, _, yb2, lam2 = mixup(x, y, 1.0, torch.Generator().manual_seed(0))
    assert lam2 == lam and torch.equal(yb2, yb) and torch.equal(xm2, xm)
    lams = [mixup(x, y, 0.2, g)[3] for _ in range(50)]
    assert min(lams) < 0.2 and max(lams) > 0.8  # Beta(0.2, 0.2) is U-shaped
    x0, ya0, yb0, lam0 = mixup(x, y, 0.0, g)
    assert lam0 == 1.0 and x0 is x and torch.equal(yb0, y)


def test_batches_carry_sample_indices_and_can_skip_the_images():
    s = _split(n=40)
    loader = _loader(s, batch_size=16, generator=torch.Generator().manual_seed(0))
    for batch in loader:
        assert torch.equal(s.y[batch.index], batch.y)  # index: positions in the split
    order = torch.cat([b.index for b in loader])
    assert sorted(order.tolist()) == list(range(40))
    same = _loader(s, batch_size=16, generator=torch.Generator().manual_seed(0), images=False)
    batches = list(same)
    assert all(b.x is None for b in batches)
    first = next(iter(_loader(s, batch_size=16, generator=torch.Generator().manual_seed(0))))
    assert torch.equal(batches[0].index, first.index)  # same order without the images
    evaluation = _loader(s, batch_size=16, train=False)
    assert torch.cat([b.index for b in evaluation]).tolist() == list(range(40))
