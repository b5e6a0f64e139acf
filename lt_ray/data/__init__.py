"""Datasets, long-tail subsets, samplers and the device-resident loader.

Importing this package registers the datasets ``cifar10``, ``cifar100`` and ``synthetic`` and the
samplers ``instance``, ``class_balanced``, ``sqrt``, ``effective`` and ``class_aware``.
"""

from lt_ray.data import cifar, synthetic  # noqa: F401  (registration)
from lt_ray.data.base import (
    DATASETS,
    LTData,
    Split,
    build_dataset,
    expected_class_counts,
    resolve_root,
    validate_data_config,
)
from lt_ray.data.loader import Batch, DeviceLoader, mixup
from lt_ray.data.longtail import class_counts, select_longtail, split_val_test
from lt_ray.data.samplers import SAMPLERS

__all__ = [
    "DATASETS",
    "Batch",
    "SAMPLERS",
    "DeviceLoader",
    "LTData",
    "Split",
    "build_dataset",
    "class_counts",
    "expected_class_counts",
    "mixup",
    "resolve_root",
    "select_longtail",
    "split_val_test",
    "validate_data_config",
]
