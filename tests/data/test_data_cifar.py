"""CIFAR readers on generated pickles, error paths, config validation and the real CIFAR-10."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_files import dump, make_cifar10, make_cifar100

from lt_ray.config import DataConfig, SyntheticConfig
from lt_ray.data import DATASETS, build_dataset, resolve_root
from lt_ray.errors import ConfigError, DataError

SHARED_DATA = (Path(__file__).resolve().parents[2] / "../shared/data").resolve()
HAVE_CIFAR10 = (SHARED_DATA / "cifar-10-batches-py" / "test_batch").is_file()


@pytest.fixture
def no_download(monkeypatch):
    """torchvision's download fails as without network (and never touches the network)."""
    import torchvision.datasets as tvd

    calls = []

    def fail(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("simulated: no network")

    monkeypatch.setattr(tvd, "CIFAR10", fail)
    monkeypatch.setattr(tvd, "CIFAR100", fail)
    return calls


def test_cifar100_reader_on_generated_files(tmp_path):
    make_cifar100(tmp_path)
    cfg = DataConfig(dataset="cifar100", root=str(tmp_path), imb_factor=1, imb_type="none")
    d = build_dataset(cfg)
    assert d.name == "cifar100" and d.num_classes == 100
    assert d.class_names[:2] == ["fine_0", "fine_1"]
    assert len(d.train) == 600 and d.class_counts.tolist() == [6] * 100
    assert d.train.x.shape == (600, 3, 32, 32) and d.train.x.dtype == torch.uint8
    assert d.train.y.dtype == torch.int64
    # the reshape is [N, 3, 32, 32] of the row-major [N, 3072]: label byte, then green plane
    assert torch.equal(d.train.x[:, 0, 0, 0].long(), d.train.y)
    assert bool((d.train.x[:, 1, 0, 0] == 200).all())
    assert len(d.fulltest) == 400 and len(d.val) == 200 and len(d.test) == 200
    assert torch.bincount(d.val.y, minlength=100).tolist() == [2] * 100
    assert d.mean == (0.4914, 0.4822, 0.4465) and d.std == (0.2023, 0.1994, 0.2010)


def test_cifar10_reader_on_generated_files_and_root_is_folder(tmp_path):
    folder = make_cifar10(tmp_path)
    d = build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)))
    # 15 per class available; n_max = 5000 so the exp counts are capped by what exists
    full = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert len(d.train) == sum(min(15, n) for n in full)
    assert d.class_names == [f"c{i}" for i in range(10)]
    assert torch.equal(d.fulltest.x[:, 0, 0, 0].long(), d.fulltest.y)
    # the folder itself works as the root too
    d2 = build_dataset(DataConfig(dataset="cifar10", root=str(folder), download=False))
    assert torch.equal(d2.train.y, d.train.y)


def test_val_test_disjoint_and_cover_fulltest(tmp_path):
    make_cifar10(tmp_path, test_per_class=10)
    d = build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path), download=False))
    ids = lambda s: set(s.x[:, 0, 0, 1].tolist())  # noqa: E731  (running index byte)
    assert ids(d.val).isdisjoint(ids(d.test))
    assert ids(d.val) | ids(d.test) == ids(d.fulltest)
    assert torch.bincount(d.test.y).tolist() == [5] * 10


def test_missing_folder_no_download(tmp_path, no_download):
    with pytest.raises(DataError) as err:
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path), download=False))
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "data_batch_1" in msg and "LT_RAY_DATA" in msg and "--data-root" in msg
    assert not no_download  # download=False never calls torchvision


def test_missing_folder_download_fails(tmp_path, no_download):
    with pytest.raises(DataError) as err:
        build_dataset(DataConfig(dataset="cifar100", root=str(tmp_path), download=True))
    msg = str(err.value)
    assert str(tmp_path / "cifar-100-python") in msg and "meta" in msg
    assert "download failed" in msg and "no network" in msg
    assert len(no_download) == 1


def test_truncated_pickle_names_the_file(tmp_path):
    folder = make_cifar10(tmp_path)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="data_batch_3"):
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path), download=False))


def test_wrong_shape_pickle(tmp_path):
    folder = make_cifar10(tmp_path)
    dump(folder / "test_batch", {"labels": [0, 1], "data": np.zeros((2, 100), np.uint8)})
    with pytest.raises(DataError, match="test_batch"):
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path), download=False))


@pytest.mark.parametrize("bad, hint", [(0.01, "did you mean 100"), (0.1, "did you mean 10")])
def test_imb_factor_below_one_suggests_inverse(bad, hint):
    with pytest.raises(ConfigError, match="data.imb_factor") as err:
        build_dataset(DataConfig(dataset="synthetic", imb_factor=bad))
    assert hint in str(err.value)


@pytest.mark.parametrize("bad", [0.0, -5.0])
def test_imb_factor_nonpositive(bad):
    with pytest.raises(ConfigError, match="data.imb_factor"):
        build_dataset(DataConfig(dataset="synthetic", imb_factor=bad))


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"imb_type": "linear"}, "data.imb_type"),
        ({"val_fraction": 0.0}, "data.val_fraction"),
        ({"val_fraction": 1.0}, "data.val_fraction"),
        ({"dataset": "cifar1000"}, "cifar100"),
        ({"synthetic": SyntheticConfig(test_per_class=1)}, "data.synthetic.test_per_class"),
        ({"imb_factor": 1000.0}, "data.imb_factor"),  # tail class of synthetic gets 0 images
    ],
)
def test_config_errors(kwargs, key):
    cfg = DataConfig(**{"dataset": "synthetic", **kwargs})
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_dataset(cfg)


def test_registry_names():
    assert {"cifar10", "cifar100", "synthetic"} <= set(DATASETS.names())


def test_resolve_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("LT_RAY_DATA", str(tmp_path / "env"))
    assert resolve_root(str(tmp_path / "cfg"), str(tmp_path / "cli")) == tmp_path / "cfg"
    assert resolve_root(None, str(tmp_path / "cli")) == tmp_path / "cli"
    assert resolve_root(None, None) == tmp_path / "env"
    monkeypatch.delenv("LT_RAY_DATA")
    default = resolve_root(None)
    assert default.is_absolute() and default.parts[-2:] == ("lt-ray", "data")
    monkeypatch.chdir(tmp_path)
    assert resolve_root("rel") == tmp_path / "rel"
    assert resolve_root("~/x") == Path.home() / "x"


def test_build_dataset_uses_cli_root(tmp_path):
    make_cifar10(tmp_path)
    d = build_dataset(DataConfig(dataset="cifar10", download=False), root=tmp_path)
    assert d.num_classes == 10


def test_ltdata_to_device():
    d = build_dataset(DataConfig(dataset="synthetic"))
    e = d.to("cpu")
    assert e.train.x.device.type == "cpu" and e.class_counts.device.type == "cpu"
    assert e.num_classes == d.num_classes


@pytest.mark.realdata
@pytest.mark.skipif(not HAVE_CIFAR10, reason=f"no CIFAR-10 at {SHARED_DATA}")
def test_real_cifar10_if100():
    cfg = DataConfig(dataset="cifar10", imb_factor=100, download=False)
    d = build_dataset(cfg, root=SHARED_DATA)
    assert len(d.train) == 12406
    assert d.class_counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert len(d.val) == 5000 and len(d.test) == 5000 and len(d.fulltest) == 10000
    assert torch.bincount(d.val.y).tolist() == [500] * 10
    assert d.class_names[0] == "airplane" and d.class_names[-1] == "truck"
    assert d.train.x.shape[1:] == (3, 32, 32)
