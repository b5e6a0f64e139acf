"""CIFAR-10-LT and CIFAR-100-LT from the standard "python version" pickles.

The pickles are read directly (``pickle.load(f, encoding="latin1")``), not through
``torchvision.datasets``: the project's CIFAR-10 copy is rebuilt from public images and fails
torchvision's md5 check (``/work/shared/data/README.md``). torchvision is only used to download
the files when they are missing and ``data.download`` is true.

Layout searched under the data root (``root/<folder>`` or ``root`` itself being the folder):

* ``cifar-10-batches-py/``: ``data_batch_1`` ... ``data_batch_5``, ``test_batch``, ``batches.meta``
  (keys ``data``, ``labels``, ``label_names``);
* ``cifar-100-python/``: ``train``, ``test``, ``meta`` (keys ``data``, ``fine_labels``,
  ``fine_label_names``).

Both use the CIFAR-10 normalisation of METHODS.md §1.3 and ``n_max = 50000 / C``.
"""

from __future__ import annotations

import functools
import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lt_ray.config import DataConfig
from lt_ray.data.base import DATA_ENV, DATASETS, LTData
from lt_ray.data.longtail import make_ltdata, subset_counts
from lt_ray.errors import DataError

log = logging.getLogger(__name__)

#: METHODS.md §1.3: CIFAR-10 statistics, also used for CIFAR-100 (as every reference repo does).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


@dataclass(frozen=True)
class _Layout:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)


CIFAR10 = _Layout(
    name="cifar10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
)
CIFAR100 = _Layout(
    name="cifar100",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
)


def find_folder(root: Path, layout: _Layout) -> tuple[Path, list[str]]:
    """The folder holding ``layout``'s files and the files it lacks (empty when complete).

    ``root/<layout.folder>`` is preferred; ``root`` itself is accepted when it holds the files.
    """
    candidates = [root / layout.folder, root]
    for folder in candidates:
        missing = [f for f in layout.files if not (folder / f).is_file()]
        if not missing:
            return folder, []
    folder = candidates[0]
    return folder, [f for f in layout.files if not (folder / f).is_file()]


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # truncated / corrupt pickles raise many different types
        raise DataError(
            f"{path} is truncated or not a CIFAR pickle ({type(exc).__name__}: {exc}); "
            "delete the folder and download it again"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR pickle (holds a {type(obj).__name__}, not a dict)")
    return obj


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if "data" not in d or label_key not in d:
        raise DataError(
            f"{path} lacks the keys 'data' and '{label_key}' (has: {', '.join(map(str, d))})"
        )
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(
            f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}"
        )
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    return data.reshape(-1, 3, 32, 32), labels


@functools.lru_cache(maxsize=4)
def _load_arrays(
    folder: str, layout: _Layout, stamp: tuple
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Decoded (train_x, train_y, test_x, test_y, class_names), cached per folder and file stamp.

    The arrays are marked read-only: callers index (copy) them, never write.
    """
    del stamp  # part of the cache key only: a rewritten file invalidates the entry
    base = Path(folder)

    def read(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_read_batch(base / f, layout.label_key) for f in files]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    train_x, train_y = read(layout.train_files)
    test_x, test_y = read(layout.test_files)
    meta = _unpickle(base / layout.meta_file)
    if layout.names_key not in meta:
        raise DataError(f"{base / layout.meta_file} lacks the key '{layout.names_key}'")
    names = tuple(str(n) for n in meta[layout.names_key])
    if len(names) != layout.num_classes:
        raise DataError(
            f"{base / layout.meta_file} names {len(names)} classes, expected {layout.num_classes}"
        )
    for path, y in ((layout.train_files, train_y), (layout.test_files, test_y)):
        if y.size and (y.min() < 0 or y.max() >= layout.num_classes):
            raise DataError(f"{base}/{path[0]}: labels outside 0..{layout.num_classes - 1}")
    for arr in (train_x, train_y, test_x, test_y):
        arr.setflags(write=False)
    return train_x, train_y, test_x, test_y, names


def _stamp(folder: Path, layout: _Layout) -> tuple:
    out = []
    for f in layout.files:
        st = (folder / f).stat()
        out.append((f, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _download(root: Path, layout: _Layout) -> None:
    """torchvision download into ``root``; any failure becomes the caller's DataError."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if layout.name == "cifar10" else datasets.CIFAR100
    root.mkdir(parents=True, exist_ok=True)
    cls(str(root), train=True, download=True)


def load_cifar(layout: _Layout, root: Path, download: bool) -> tuple:
    """Locate (downloading if allowed) and decode ``layout``'s files under ``root``."""
    root = Path(root)
    folder, missing = find_folder(root, layout)
    if missing:
        reason = "data.download is false"
        if download:
            log.info("%s: files missing under %s, downloading with torchvision", layout.name, root)
            try:
                _download(root, layout)
            except Exception as exc:  # no network, disk full, bad archive ...
                reason = f"the torchvision download failed ({type(exc).__name__}: {exc})"
            folder, missing = find_folder(root, layout)
        if missing:
            raise DataError(
                f"{layout.name}: {folder} is missing {', '.join(missing)} ({reason}). "
                f"Fix: point --data-root, ${DATA_ENV} or data.root at a folder containing "
                f"{layout.folder}/, or enable network access with data.download=true so "
                "torchvision can download it"
            )
    return _load_arrays(str(folder.resolve()), layout, _stamp(folder, layout))


def _factory(layout: _Layout):
    def build(cfg: DataConfig, root: Path) -> LTData:
        train_x, train_y, test_x, test_y, names = load_cifar(layout, root, cfg.download)
        return make_ltdata(
            layout.name,
            cfg,
            train_x=train_x,
            train_y=train_y,
            test_x=test_x,
            test_y=test_y,
            n_max=50000 / layout.num_classes,
            class_names=list(names),
            mean=CIFAR_MEAN,
            std=CIFAR_STD,
        )

    build.__name__ = f"build_{layout.name}"
    build.__doc__ = f"{layout.name.upper()}-LT (METHODS.md §1): long-tailed train, val/test."
    return build


def _counts(layout: _Layout) -> Callable[[DataConfig], list[int]]:
    def counts(cfg: DataConfig) -> list[int]:
        c = layout.num_classes
        return subset_counts(layout.name, cfg, 50000 / c, c)

    return counts


DATASETS.add("cifar10", _factory(CIFAR10), counts=_counts(CIFAR10))
DATASETS.add("cifar100", _factory(CIFAR100), counts=_counts(CIFAR100))
