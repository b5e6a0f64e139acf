"""The data pack (lt_ray.data.pack): lossless, the same splits as lt-ray builds, checksummed,
and small enough to travel with a checkout (the GPU check's data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cifar_files import make_cifar10

from conftest import HAS_CIFAR10, SHARED_DATA
from lt_ray.config import DataConfig
from lt_ray.data import LTData, build_dataset
from lt_ray.data.pack import MANIFEST, _difference, _undifference, read_pack, write_pack
from lt_ray.errors import DataError


def assert_same(a: LTData, b: LTData) -> None:
    for name in ("train", "val", "test", "fulltest"):
        sa, sb = getattr(a, name), getattr(b, name)
        assert torch.equal(sa.x, sb.x), name
        assert torch.equal(sa.y, sb.y), name
    assert a.class_counts.tolist() == b.class_counts.tolist()
    assert (a.name, a.class_names, a.mean, a.std) == (b.name, b.class_names, b.mean, b.std)


def test_difference_is_lossless_on_extremes():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 3, 7, 9), dtype=np.uint8)
    x[0] = 255
    x[1] = 0
    x[2, :, ::2] = 255  # stripes: differences that wrap around 256
    d = _difference(x)
    assert d.dtype == np.uint8
    assert d[1].max() == 0  # a flat plane is all zero after the first pixel
    assert d[0, 0, 0, 0] == 255 and d[0, 0, 0, 1:].max() == 0
    assert np.array_equal(_undifference(d), x)


def test_pack_of_cifar10_files_gives_the_same_splits(tmp_path):
    make_cifar10(tmp_path / "raw", per_class_per_batch=20, test_per_class=10)
    cfg = DataConfig(dataset="cifar10", imb_factor=10, download=False)
    built = build_dataset(cfg, tmp_path / "raw")
    manifest = write_pack(built, tmp_path / "pack", name="c.npz", source={"imb_factor": 10})
    assert manifest["sizes"] == {"train": len(built.train), "val": len(built.val),
                                 "test": len(built.test), "fulltest": 100}
    assert json.loads((tmp_path / "pack" / MANIFEST).read_text())["sha256"] == manifest["sha256"]
    assert not list((tmp_path / "pack").glob(".*partial"))
    assert_same(read_pack(tmp_path / "pack"), built)
    again = write_pack(built, tmp_path / "again", name="c.npz", source={"imb_factor": 10})
    assert again["sha256"] == manifest["sha256"]  # deterministic: same data, same checksum


def test_damaged_or_missing_pack_is_refused(tmp_path):
    built = build_dataset(DataConfig(dataset="synthetic"))
    folder = tmp_path / "pack"
    write_pack(built, folder, name="s.npz", source={})
    raw = bytearray((folder / "s.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (folder / "s.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="does not match the manifest"):
        read_pack(folder)
    (folder / "s.npz").unlink()
    with pytest.raises(DataError, match="is missing"):
        read_pack(folder)
    with pytest.raises(DataError, match="no readable pack manifest"):
        read_pack(tmp_path / "elsewhere")


@pytest.mark.realdata
@pytest.mark.skipif(not HAS_CIFAR10, reason=f"no CIFAR-10 at {SHARED_DATA}")
def test_real_if100_pack_equals_the_split_and_travels(tmp_path):
    cfg = DataConfig(dataset="cifar10", imb_factor=100, download=False)
    built = build_dataset(cfg, SHARED_DATA)
    manifest = write_pack(built, tmp_path, name="c10.npz", source={})
    assert manifest["bytes"] < 48 * 2**20  # raw: 65.6 MiB; the checkout's limit is 64 MiB
    packed = read_pack(tmp_path)
    assert len(packed.train) == 12406
    assert_same(packed, built)
