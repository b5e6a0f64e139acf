"""CIFAR-10/100 folders in torchvision's pickle format, generated (no download): for the
readers' tests and for study smoke runs on CIFAR-100, which these machines do not have."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _images(labels: np.ndarray) -> np.ndarray:
    """uint8 [N, 3072] whose first byte is the label and second the running index."""
    data = np.zeros((labels.size, 3072), dtype=np.uint8)
    data[:, 0] = labels
    data[:, 1] = np.arange(labels.size) % 256
    data[:, 1024] = 200  # first pixel of the green plane
    return data


def make_cifar100(root: Path, per_class: int = 6, test_per_class: int = 4) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", per_class), ("test", test_per_class)):
        fine = rng.permutation(np.repeat(np.arange(100), n))
        dump(
            folder / name,
            {
                "filenames": [f"img_{i}.png" for i in range(fine.size)],
                "batch_label": f"{name} batch 1 of 1",
                "fine_labels": fine.tolist(),
                "coarse_labels": (fine // 5).tolist(),
                "data": _images(fine),
            },
        )
    dump(
        folder / "meta",
        {
            "fine_label_names": [f"fine_{i}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i}" for i in range(20)],
        },
    )
    return folder


def make_cifar10(root: Path, per_class_per_batch: int = 3, test_per_class: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(1, 6):
        y = rng.permutation(np.repeat(np.arange(10), per_class_per_batch))
        batch = {"batch_label": "x", "labels": y.tolist(), "data": _images(y)}
        dump(folder / f"data_batch_{i}", batch)
    y = np.repeat(np.arange(10), test_per_class)
    dump(folder / "test_batch", {"batch_label": "t", "labels": y.tolist(), "data": _images(y)})
    dump(
        folder / "batches.meta",
        {"num_cases_per_batch": 30, "label_names": [f"c{i}" for i in range(10)], "num_vis": 3072},
    )
    return folder
