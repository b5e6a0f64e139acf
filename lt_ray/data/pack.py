"""A built dataset as one self-checking file, for a machine that can read neither the dataset's
files nor the network (a GPU node that gets only a checkout).

:func:`write_pack` stores an :class:`LTData` exactly as lt-ray built it: the long-tailed train
split in its order, the official test set, and the val/test halves as index arrays into it.
Images are stored losslessly: each uint8 plane as its 2-D difference (``x[i, j] - x[i, j-1] -
x[i-1, j] + x[i-1, j-1]``, mod 256), which deflate compresses to ~68 % of the raw bytes on
CIFAR (raw CIFAR-10-LT IF 100 + test: 65.6 MiB, packed: 44.8 MiB). A manifest beside it holds
the file's SHA-256; :func:`read_pack` checks it before anything is decoded.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lt_ray.data.base import LTData, Split
from lt_ray.errors import DataError

PACK_FORMAT = 1
MANIFEST = "pack.json"
_CHUNK = 1 << 20


def _difference(x: np.ndarray) -> np.ndarray:
    """The 2-D difference of every uint8 plane of ``x`` [N, C, H, W] (wraps mod 256)."""
    zero = np.uint8(0)
    return np.diff(np.diff(x, axis=-1, prepend=zero), axis=-2, prepend=zero)


def _undifference(d: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_difference`: cumulative sums over rows and columns, mod 256."""
    return np.cumsum(np.cumsum(d, axis=-2, dtype=np.uint8), axis=-1, dtype=np.uint8)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_pack(data: LTData, folder: Path, *, name: str, source: dict[str, Any]) -> dict[str, Any]:
    """Write ``data`` to ``folder/name`` plus the manifest ``folder/pack.json``; returns the
    manifest. ``source`` (e.g. the data config it was built from) is stored with it. The
    file is written under a temporary name and renamed, so a reader never sees half of it."""
    fulltest = data.fulltest.x.cpu().numpy()
    val_index = _positions(data.fulltest, data.val)
    test_index = _positions(data.fulltest, data.test)
    arrays = {
        "train_x": _difference(data.train.x.cpu().numpy()),
        "train_y": data.train.y.cpu().numpy(),
        "fulltest_x": _difference(fulltest),
        "fulltest_y": data.fulltest.y.cpu().numpy(),
        "val_index": val_index,
        "test_index": test_index,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    partial = path.with_name(f".{name}.partial")
    with zipfile.ZipFile(partial, "w") as zf:  # each entry says its compression
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            # a fixed timestamp: the same data gives the same file, and the same checksum
            entry = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(entry, buffer.getvalue(), compress_type=zipfile.ZIP_DEFLATED,
                        compresslevel=6)
    partial.replace(path)
    manifest = {
        "format": PACK_FORMAT, "file": name, "bytes": path.stat().st_size,
        "sha256": sha256_file(path), "dataset": data.name,
        "class_names": list(data.class_names), "mean": list(data.mean), "std": list(data.std),
        "sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test),
                  "fulltest": len(data.fulltest)},
        "source": source,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: no readable pack manifest ({exc}); write the pack first") \
            from None
    if manifest.get("format") != PACK_FORMAT:
        raise DataError(f"{path}: pack format {manifest.get('format')!r}, this lt-ray reads "
                        f"{PACK_FORMAT}; write the pack again with this checkout")
    return manifest


def read_pack(folder: Path) -> LTData:
    """The :class:`LTData` stored in ``folder`` (checksum checked first)."""
    manifest = read_manifest(folder)
    path = folder / manifest["file"]
    if not path.is_file():
        raise DataError(f"{path} is missing; copy the whole pack folder {folder}")
    digest = sha256_file(path)
    if digest != manifest["sha256"]:
        raise DataError(f"{path}: SHA-256 {digest[:12]}... does not match the manifest's "
                        f"{manifest['sha256'][:12]}... (a damaged copy); copy it again")
    with zipfile.ZipFile(path) as zf:
        arrays = {Path(n).stem: np.load(io.BytesIO(zf.read(n)), allow_pickle=False)
                  for n in zf.namelist()}
    fulltest = Split(torch.from_numpy(_undifference(arrays["fulltest_x"])),
                     torch.from_numpy(arrays["fulltest_y"].astype(np.int64)))
    train = Split(torch.from_numpy(_undifference(arrays["train_x"])),
                  torch.from_numpy(arrays["train_y"].astype(np.int64)))
    num_classes = len(manifest["class_names"])
    return LTData(
        name=manifest["dataset"], train=train,
        val=_subset(fulltest, arrays["val_index"]), test=_subset(fulltest, arrays["test_index"]),
        fulltest=fulltest, class_counts=torch.bincount(train.y, minlength=num_classes),
        class_names=list(manifest["class_names"]),
        mean=tuple(manifest["mean"]), std=tuple(manifest["std"]),  # type: ignore[arg-type]
    )


def _positions(whole: Split, part: Split) -> np.ndarray:
    """The index in ``whole`` of every image of ``part`` (each image of ``part`` is an image of
    ``whole``; matched on content and label, in ``part``'s order)."""
    keys = {(bytes(x), int(y)): i for i, (x, y) in
            enumerate(zip(whole.x.cpu().numpy(), whole.y.cpu().tolist(), strict=True))}
    try:
        return np.array([keys[(bytes(x), int(y))] for x, y in
                         zip(part.x.cpu().numpy(), part.y.cpu().tolist(), strict=True)],
                        dtype=np.int64)
    except KeyError:
        raise ValueError("a val/test image is not in fulltest: not an lt-ray LTData") from None


def _subset(split: Split, index: np.ndarray) -> Split:
    idx = torch.from_numpy(index.astype(np.int64))
    return Split(split.x[idx].contiguous(), split.y[idx].contiguous())
