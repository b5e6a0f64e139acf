"""PaCo's batched training views: AutoAugment ops vs PaCo's PIL ops, grouping, cutout, key view."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from lt_ray.data import views
from lt_ray.data.views import PaCoViews, apply_op, apply_policy, autoaugment_cifar10, simclr_view

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


def _images(n: int = 32, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 images (upsampled noise), so geometric ops move visible structure."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (n, 3, size // 4, size // 4), generator=g).float()
    x = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear")
    return x.round().clamp(0, 255).to(torch.uint8)


def _draws(n: int, policy: int, slot0: bool, slot1: bool, sign0: int = 1, sign1: int = 1):
    return (
        torch.full((n,), policy),
        torch.tensor([[slot0, slot1]]).expand(n, 2),
        torch.tensor([[sign0, sign1]]).expand(n, 2),
    )


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread (avoids OpenMP wake-up stalls on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------- AutoAugment
def test_autoaugment_shape_dtype_reproducible_and_not_in_place():
    x = _images(64)
    x0 = x.clone()
    a = autoaugment_cifar10(x, _gen(0))
    assert a.shape == x.shape and a.dtype == torch.uint8 and a.device == x.device
    assert torch.equal(x, x0)
    assert torch.equal(a, autoaugment_cifar10(x, _gen(0)))
    assert not torch.equal(a, autoaugment_cifar10(x, _gen(1)))
    assert not torch.equal(a, x)


def test_identical_images_get_different_subpolicies():
    x = _images(1).expand(64, -1, -1, -1).contiguous()
    out = autoaugment_cifar10(x, _gen(0))
    distinct = {bytes(o.numpy()) for o in out}
    assert len(distinct) >= 10  # 25 sub-policies x coin flips x signs


FILLCOLOR = (128, 128, 128)


def _pil_op(img: Image.Image, op: str, m: float, s: int) -> Image.Image:
    """PaCo's ``SubPolicy`` ops (PaCo/LT/autoaug.py) with the random sign given as ``s``."""
    if op == "shearX":
        return img.transform(img.size, Image.AFFINE, (1, m * s, 0, 0, 1, 0), Image.BICUBIC,
                             fillcolor=FILLCOLOR)
    if op == "shearY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, m * s, 1, 0), Image.BICUBIC,
                             fillcolor=FILLCOLOR)
    if op == "translateX":
        return img.transform(img.size, Image.AFFINE, (1, 0, m * img.size[0] * s, 0, 1, 0),
                             fillcolor=FILLCOLOR)
    if op == "translateY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, m * img.size[1] * s),
                             fillcolor=FILLCOLOR)
    if op == "rotate":
        rot = img.convert("RGBA").rotate(m)
        grey = Image.new("RGBA", rot.size, (128,) * 4)
        return Image.composite(rot, grey, rot).convert(img.mode)
    enhance = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
               "sharpness": ImageEnhance.Sharpness, "brightness": ImageEnhance.Brightness}
    if op in enhance:
        return enhance[op](img).enhance(1 + m * s)
    if op == "posterize":
        return ImageOps.posterize(img, int(m))
    if op == "solarize":
        return ImageOps.solarize(img, m)
    return {"autocontrast": ImageOps.autocontrast, "equalize": ImageOps.equalize,
            "invert": ImageOps.invert}[op](img)


def _pil_batch(x: torch.Tensor, fn) -> torch.Tensor:
    out = [np.asarray(fn(Image.fromarray(a))) for a in x.permute(0, 2, 3, 1).numpy()]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


def _test_images() -> torch.Tensor:
    """Smooth images, noise, constants and near-black/near-white ones (edge cases of the luts)."""
    g = _gen(5)
    noise = torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
    const = torch.tensor([0, 128, 255], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 3, 32, 32)
    dark = torch.randint(0, 6, (1, 3, 32, 32), generator=g, dtype=torch.uint8)
    return torch.cat([_images(3, seed=5), noise, const, dark, 255 - dark])


_INSTANCES = sorted({(op, m) for sub in views.CIFAR10_POLICY for _, op, m in sub})


@pytest.mark.parametrize("op,bin_", _INSTANCES)
def test_every_policy_op_equals_pil(op, bin_):
    """Each op of CIFAR10Policy at its magnitude (both signs) equals PaCo's PIL op exactly."""
    x = _test_images()
    m = views.magnitude(op, bin_)
    for s in (1, -1) if op in views.SIGNED_OPS else (1,):
        ref = _pil_batch(x, lambda img, s=s: _pil_op(img, op, m, s))
        assert torch.equal(apply_op(x, op, m, s), ref), (op, bin_, s)


@pytest.mark.parametrize("op", ["shearX", "rotate", "translateX", "translateY"])
def test_geometric_ops_equal_pil_on_non_square_images(op):
    x = _images(4, 32)[..., :24, :]  # H = 24, W = 32
    m = views.magnitude(op, 9)
    for s in (1, -1):
        ref = _pil_batch(x, lambda img, s=s: _pil_op(img, op, m, s))
        assert torch.equal(apply_op(x.contiguous(), op, m, s), ref), (op, s)


def test_single_subpolicy_group_equals_pil_composition():
    """All samples on sub-policy 3 (shearY 8, translateY 9), both slots on: slot 0, then slot 1."""
    x = _images(8)
    out = apply_policy(x, *_draws(8, 3, True, True, -1, 1))
    m0, m1 = views.magnitude("shearY", 8), views.magnitude("translateY", 9)
    ref = _pil_batch(x, lambda img: _pil_op(_pil_op(img, "shearY", m0, -1), "translateY", m1, 1))
    assert torch.equal(out, ref)


def test_slot0_runs_before_slot1():
    x = _images(8)
    out = apply_policy(x, *_draws(8, 6, True, True, 1, -1))  # color 3, brightness 7
    m0, m1 = views.magnitude("color", 3), views.magnitude("brightness", 7)
    ref = _pil_batch(x, lambda img: _pil_op(_pil_op(img, "color", m0, 1), "brightness", m1, -1))
    assert torch.equal(out, ref)
    swapped = _pil_batch(x, lambda img: _pil_op(_pil_op(img, "brightness", m1, -1), "color", m0, 1))
    assert not torch.equal(out, swapped)


def test_unapplied_slots_and_unsigned_ops():
    x = _images(8)
    assert torch.equal(apply_policy(x, *_draws(8, 1, False, False)), x)
    # rotate has no random sign in PaCo: sign -1 turns counter-clockwise too
    assert torch.equal(apply_policy(x, *_draws(8, 1, True, False, -1)),
                       apply_policy(x, *_draws(8, 1, True, False, 1)))
    # a signed op: the sign matters
    assert not torch.equal(apply_policy(x, *_draws(8, 1, False, True, 1, -1)),
                           apply_policy(x, *_draws(8, 1, False, True, 1, 1)))


def test_grouped_batch_equals_per_sample_application():
    n = 96
    x = _images(n)
    g = _gen(3)
    policy = torch.randint(25, (n,), generator=g)
    applied = torch.rand(n, 2, generator=g) < 0.7
    sign = torch.randint(2, (n, 2), generator=g) * 2 - 1
    out = apply_policy(x, policy, applied, sign)
    for i in range(n):
        ref = x[i : i + 1]
        for slot in range(2):
            _, op, bin_ = views.CIFAR10_POLICY[int(policy[i])][slot]
            if applied[i, slot]:
                ref = apply_op(ref, op, views.magnitude(op, bin_), int(sign[i, slot]))
        assert torch.equal(out[i : i + 1], ref), i


def test_draws_follow_policy_probabilities(monkeypatch):
    seen = {}

    def record(x, policy, applied, sign):
        seen.update(policy=policy, applied=applied, sign=sign)
        return x

    monkeypatch.setattr(views, "apply_policy", record)
    n = 20000
    autoaugment_cifar10(torch.zeros(n, 3, 2, 2, dtype=torch.uint8), _gen(0))
    policy, applied, sign = seen["policy"], seen["applied"], seen["sign"]
    counts = torch.bincount(policy, minlength=25).float()
    assert counts.min() > 0.8 * n / 25 and counts.max() < 1.2 * n / 25
    prob = torch.tensor(views._PROB)
    freq = torch.stack([applied[policy == k].float().mean(0) for k in range(25)])
    assert (freq - prob).abs().max() < 0.07
    assert not applied[policy == 14, 1].any()  # invert with p = 0.0
    assert set(sign.unique().tolist()) == {-1, 1} and abs(sign.float().mean().item()) < 0.03


def test_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        autoaugment_cifar10(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="uint8"):
        simclr_view(torch.rand(2, 3, 8, 8))


# ---------------------------------------------------------------------------- query view
def test_query_shape_dtype_reproducible_not_in_place():
    x = _images(16)
    x0 = x.clone()
    v = PaCoViews(MEAN, STD)
    q = v.query(x, _gen(0))
    assert q.shape == x.shape and q.dtype == torch.float32
    assert torch.equal(x, x0)
    assert torch.equal(q, v.query(x, _gen(0)))
    assert not torch.equal(q, v.query(x, _gen(1)))


def test_query_normalises_constant_image_without_augmentation(monkeypatch):
    monkeypatch.setattr(views, "autoaugment_cifar10", lambda x, generator=None: x.clone())
    x = torch.full((4, 3, 8, 8), 100, dtype=torch.uint8)
    q = PaCoViews(MEAN, STD, crop_padding=0, cutout=0).query(x, _gen(0))
    ref = ((100 / 255 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
    torch.testing.assert_close(q, ref.expand_as(q), rtol=1e-6, atol=1e-6)


def test_query_cutout_is_a_black_square_of_side_16(monkeypatch):
    monkeypatch.setattr(views, "autoaugment_cifar10", lambda x, generator=None: x.clone())
    x = torch.full((64, 3, 32, 32), 200, dtype=torch.uint8)
    q = PaCoViews(MEAN, STD, crop_padding=0, cutout=16).query(x, _gen(0))
    black = (-torch.tensor(MEAN) / torch.tensor(STD)).view(1, 3, 1, 1)
    hole = torch.isclose(q, black.expand_as(q), atol=1e-6).all(1)  # [B, H, W]
    other = torch.isclose(q, ((200 / 255 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
                          .expand_as(q), atol=1e-6).all(1)
    assert bool((hole ^ other).all())  # every pixel is either the image or black
    sides = []
    for m in hole:
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        assert rows.numel() > 0  # the centre is inside the image: never empty
        assert int(m.sum()) == rows.numel() * cols.numel()  # a rectangle
        assert rows.numel() <= 16 and cols.numel() <= 16
        assert rows[-1] - rows[0] + 1 == rows.numel() and cols[-1] - cols[0] + 1 == cols.numel()
        sides.append((rows.numel(), cols.numel()))
    assert (16, 16) in sides  # unclipped squares have side 16 (official: [c - 8, c + 8))


def test_query_padding_zero_and_flip_only_uses_crop_flip(monkeypatch):
    monkeypatch.setattr(views, "autoaugment_cifar10", lambda x, generator=None: x.clone())
    x = _images(32, 8)
    q = PaCoViews((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), crop_padding=0, cutout=0).query(x, _gen(0))
    xf = x.float() / 255
    same = (q == xf).flatten(1).all(1)
    flipped = (q == xf.flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all()) and 0 < int(flipped.sum()) < 32


# ---------------------------------------------------------------------------- key view
def test_key_shape_range_not_in_place_and_seeded():
    x = _images(16)
    x0 = x.clone()
    torch.manual_seed(0)
    s = simclr_view(x)
    assert s.shape == x.shape and s.dtype == torch.float32
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    assert torch.equal(x, x0)
    torch.manual_seed(0)
    assert torch.equal(s, simclr_view(x))
    k = PaCoViews(MEAN, STD).key(x)
    assert k.shape == x.shape and k.dtype == torch.float32


def test_key_view_gives_per_sample_different_crops():
    # a horizontal ramp, identical in every sample: crops/flips change the column profile
    ramp = torch.linspace(0, 255, 32).round().to(torch.uint8)
    x = ramp.view(1, 1, 1, 32).expand(32, 3, 32, 32).contiguous()
    torch.manual_seed(0)
    s = simclr_view(x)
    profiles = {tuple(p.tolist()) for p in s.mean((1, 2)).mul(255).round()}
    assert len(profiles) >= 20


def test_key_view_of_black_image_is_normalised_black():
    # black is a fixed point of crop, flip, jitter, grayscale and blur
    x = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    k = PaCoViews(MEAN, STD).key(x)
    ref = (-torch.tensor(MEAN) / torch.tensor(STD)).view(1, 3, 1, 1)
    torch.testing.assert_close(k, ref.expand_as(k), rtol=1e-6, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError):
        PaCoViews(MEAN, (0.2, 0.0, 0.2))
    with pytest.raises(ValueError):
        PaCoViews(MEAN, STD, cutout=-1)


# ---------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_views_on_cuda():
    dev = torch.device("cuda")
    x = _images(128).to(dev)
    x0 = x.clone()
    v = PaCoViews(MEAN, STD)
    g = torch.Generator(device=dev).manual_seed(0)
    q = v.query(x, g)
    k = v.key(x)
    for t in (q, k):
        assert t.device.type == "cuda" and t.dtype == torch.float32 and t.shape == x.shape
        assert bool(torch.isfinite(t).all())
    assert torch.equal(x, x0)
    g = torch.Generator(device=dev).manual_seed(1)
    assert torch.equal(autoaugment_cifar10(x, g), autoaugment_cifar10(x, g.manual_seed(1)))
    # the same draws give the same images on CPU and CUDA (PIL's integer/float arithmetic)
    n = x.shape[0]
    gc = _gen(0)
    draws = (torch.randint(25, (n,), generator=gc), torch.rand(n, 2, generator=gc) < 0.8,
             torch.randint(2, (n, 2), generator=gc) * 2 - 1)
    cpu = apply_policy(x.cpu(), *draws)
    gpu = apply_policy(x, *(d.to(dev) for d in draws)).cpu()
    assert torch.equal(cpu, gpu)
