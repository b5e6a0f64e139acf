"""PaCo's batched training views: AutoAugment groups vs torchvision / PIL, cutout, key view."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from lt_ray.data import views
from lt_ray.data.views import PaCoViews, apply_op, apply_policy, autoaugment_cifar10, simclr_view

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
NEAREST, BILINEAR = InterpolationMode.NEAREST, InterpolationMode.BILINEAR


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


# (sub-policy, slot, sign) -> the torchvision reference, written from PaCo's ranges
_W = 32
_REFERENCES = {
    (0, 0, 1): lambda x: TF.invert(x),
    (0, 1, -1): lambda x: TF.adjust_contrast(x, 1 - 0.6),  # contrast bin 6 = 0.9 * 6 / 9
    (1, 0, -1): lambda x: TF.rotate(x, 30 * 2 / 9, interpolation=NEAREST, fill=128),  # no sign
    (1, 1, 1): lambda x: TF.affine(x, angle=0.0, translate=[-150 / 331 * _W, 0.0], scale=1.0,
                                   shear=[0.0, 0.0], interpolation=NEAREST, fill=128),
    (3, 0, -1): lambda x: TF.affine(x, angle=0.0, translate=[0.0, 0.0], scale=1.0,
                                    shear=[0.0, math.degrees(math.atan(-0.3 * 8 / 9))],
                                    interpolation=BILINEAR, fill=128, center=[0.0, 0.0]),
    (3, 1, -1): lambda x: TF.affine(x, angle=0.0, translate=[0.0, 150 / 331 * _W], scale=1.0,
                                    shear=[0.0, 0.0], interpolation=NEAREST, fill=128),
    (2, 1, 1): lambda x: TF.adjust_sharpness(x, 1 + 0.3),
    (5, 1, 1): lambda x: TF.posterize(x, 5),
    (13, 0, -1): lambda x: TF.adjust_brightness(x, 1 - 0.6),
    (14, 0, 1): lambda x: TF.solarize(x, 256 - 256 * 2 / 9),
    (17, 0, 1): lambda x: TF.adjust_saturation(x, 1 + 0.9),
    (18, 0, 1): lambda x: TF.autocontrast(x),
    (23, 0, 1): lambda x: TF.equalize(x),
}


@pytest.mark.parametrize("policy,slot,sign", sorted(_REFERENCES))
def test_single_op_group_equals_torchvision_reference(policy, slot, sign):
    x = _images(8)
    out = apply_policy(x, *_draws(8, policy, slot == 0, slot == 1, sign, sign))
    assert torch.equal(out, _REFERENCES[(policy, slot, sign)](x))


def test_slot0_runs_before_slot1():
    x = _images(8)
    out = apply_policy(x, *_draws(8, 6, True, True, 1, -1))  # color 3, brightness 7
    ref = TF.adjust_brightness(TF.adjust_saturation(x, 1 + 0.3), 1 - 0.7)
    assert torch.equal(out, ref)


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


def _pil_translate(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    pil = Image.fromarray(img)
    out = pil.transform(pil.size, Image.AFFINE, (1, 0, dx, 0, 1, dy), fillcolor=(128, 128, 128))
    return np.asarray(out)


@pytest.mark.parametrize("sign", [1, -1])
def test_translate_matches_pil_exactly(sign):
    x = _images(4)
    for op in ("translateX", "translateY"):
        mag = views.magnitude(op, 9)
        out = apply_op(x, op, mag, sign).permute(0, 2, 3, 1).numpy()
        c = mag * 32 * sign
        shift = (c, 0.0) if op == "translateX" else (0.0, c)
        for i, img in enumerate(x.permute(0, 2, 3, 1).numpy()):
            np.testing.assert_array_equal(out[i], _pil_translate(img, *shift))


@pytest.mark.parametrize("sign", [1, -1])
def test_shear_matches_pil_geometry(sign):
    """PIL (1, 0, 0, m, 1, 0) bicubic vs our bilinear shear: same geometry, small differences."""
    x = _images(4)
    m = views.magnitude("shearY", 8)
    out = apply_op(x, "shearY", m, sign).permute(0, 2, 3, 1).numpy().astype(int)
    for i, img in enumerate(x.permute(0, 2, 3, 1).numpy()):
        pil = Image.fromarray(img)
        ref = pil.transform(pil.size, Image.AFFINE, (1, 0, 0, m * sign, 1, 0), Image.BICUBIC,
                            fillcolor=(128, 128, 128))
        diff = np.abs(out[i] - np.asarray(ref).astype(int))
        assert diff.mean() < 4 and np.median(diff) <= 1
        wrong_way = apply_op(x[i : i + 1], "shearY", m, -sign)[0].permute(1, 2, 0).numpy()
        assert np.abs(wrong_way.astype(int) - np.asarray(ref)).mean() > 3 * diff.mean()


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
    # the same draws give (nearly) the same images on CPU and CUDA
    n = x.shape[0]
    gc = _gen(0)
    draws = (torch.randint(25, (n,), generator=gc), torch.rand(n, 2, generator=gc) < 0.8,
             torch.randint(2, (n, 2), generator=gc) * 2 - 1)
    cpu = apply_policy(x.cpu(), *draws).int()
    gpu = apply_policy(x, *(d.to(dev) for d in draws)).cpu().int()
    diff = (cpu - gpu).abs()
    assert diff.float().mean() < 0.05 and (diff > 1).float().mean() < 0.002
