"""Dataset containers (:class:`Split`, :class:`LTData`), the DATASETS registry and its front door.

A dataset factory is registered under a name (``@DATASETS.register("cifar10", counts=fn)``) and
called as ``factory(cfg: DataConfig, root: Path) -> LTData``; ``counts(cfg) -> list[int]`` gives
its per-class training counts without reading data (:func:`expected_class_counts`). Callers use
:func:`build_dataset`, which resolves the data root, validates the long-tail settings and then
calls the factory.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lt_ray.config import DataConfig
from lt_ray.errors import ConfigError
from lt_ray.registry import Registry

IMB_TYPES = ("exp", "step", "none")

#: Environment variable naming the data root (after ``data.root`` and ``--data-root``).
DATA_ENV = "LT_RAY_DATA"


@dataclass(frozen=True)
class Split:
    """One split of a dataset: images ``x`` uint8 [N, 3, H, W] (NCHW) and labels ``y`` int64 [N]."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise ValueError(
                f"Split.x must be uint8 [N, C, H, W], got {self.x.dtype} {tuple(self.x.shape)}"
            )
        if self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise ValueError(f"Split.y must be int64 [N], got {self.y.dtype} {tuple(self.y.shape)}")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"Split has {self.x.shape[0]} images but {self.y.shape[0]} labels")
        if self.x.device != self.y.device:
            raise ValueError(f"Split.x is on {self.x.device} but Split.y on {self.y.device}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Split:
        """A copy on ``device`` (``self`` when it is already there)."""
        device = torch.device(device)
        if self.x.device == device:
            return self
        return Split(
            self.x.to(device, non_blocking=non_blocking),
            self.y.to(device, non_blocking=non_blocking),
        )


@dataclass(frozen=True)
class LTData:
    """A long-tailed dataset: the long-tailed train split and the evaluation splits.

    ``val`` and ``test`` are disjoint, seeded, per-class halves (``data.val_fraction``) of the
    official test set; ``fulltest`` is the whole official test set (the papers' protocol).
    ``class_counts`` are the per-class image counts of ``train``; ``mean``/``std`` normalise
    images on the [0, 1] scale.
    """

    name: str
    train: Split
    val: Split
    test: Split
    fulltest: Split
    class_counts: torch.Tensor
    class_names: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def num_classes(self) -> int:
        return int(self.class_counts.numel())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> LTData:
        """A copy with every split (and ``class_counts``) on ``device``."""
        return dataclasses.replace(
            self,
            train=self.train.to(device, non_blocking),
            val=self.val.to(device, non_blocking),
            test=self.test.to(device, non_blocking),
            fulltest=self.fulltest.to(device, non_blocking),
            class_counts=self.class_counts.to(device),
        )


DatasetFactory = Callable[[DataConfig, Path], LTData]
DATASETS: Registry[DatasetFactory] = Registry("dataset")


def default_cache_root() -> Path:
    """The per-user data cache: ``<user cache>/lt-ray/data`` (``~/.cache/lt-ray/data`` on Linux)."""
    try:
        import platformdirs
    except ImportError:  # pragma: no cover - platformdirs ships with most environments
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lt-ray"
    else:
        base = Path(platformdirs.user_cache_dir("lt-ray", appauthor=False))
    return base / "data"


def resolve_root(cfg_root: str | None, cli_root: str | None = None) -> Path:
    """The absolute data root: ``data.root``, else ``--data-root``, else ``$LT_RAY_DATA``,
    else the user cache (:func:`default_cache_root`). ``~`` is expanded.

    Resolve it in the driver: Ray Tune changes each trial's working directory.
    """
    for candidate in (cfg_root, cli_root, os.environ.get(DATA_ENV)):
        if candidate is not None and str(candidate).strip():
            return Path(str(candidate)).expanduser().resolve()
    return default_cache_root().expanduser().resolve()


def validate_data_config(cfg: DataConfig) -> None:
    """Check the long-tail settings; raise :class:`ConfigError` naming the key and the fix."""
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"data.dataset: {DATASETS.unknown_message(cfg.dataset)}")
    f = cfg.imb_factor
    if not isinstance(f, (int, float)) or isinstance(f, bool) or not math.isfinite(f):
        raise ConfigError(f"data.imb_factor must be a finite number >= 1 (n_max/n_min), got {f!r}")
    if f <= 0:
        raise ConfigError(
            f"data.imb_factor={f:g} must be >= 1: it is n_max/n_min, e.g. 100 for CIFAR-LT "
            "with 500 -> 5 images per class (1 = balanced)"
        )
    if f < 1:
        raise ConfigError(
            f"data.imb_factor={f:g} is below 1: lt-ray uses n_max/n_min, "
            f"did you mean {1 / f:g}?"
        )
    if cfg.imb_type not in IMB_TYPES:
        raise ConfigError(
            f"data.imb_type={cfg.imb_type!r} is not one of {', '.join(IMB_TYPES)}"
        )
    v = cfg.val_fraction
    if not (0 < v < 1):
        raise ConfigError(
            f"data.val_fraction={v!r} must be strictly between 0 and 1 "
            "(the share of each class of the official test set used for validation, e.g. 0.5)"
        )


def expected_class_counts(cfg: DataConfig) -> list[int]:
    """Per-class training counts that ``build_dataset(cfg)`` will produce, from the config alone
    (no file is read): each dataset registers a ``counts`` function next to its factory.

    Raises ConfigError for invalid long-tail settings or a class left without images.
    """
    validate_data_config(cfg)
    return list(DATASETS.meta(cfg.dataset)["counts"](cfg))


def build_dataset(cfg: DataConfig, root: str | Path | None = None) -> LTData:
    """Validate ``cfg``, resolve the data root and build the registered dataset.

    Args:
        cfg: the ``data`` section of the experiment config.
        root: the CLI's ``--data-root`` (used when ``cfg.root`` is unset).
    """
    validate_data_config(cfg)
    resolved = resolve_root(cfg.root, None if root is None else str(root))
    return DATASETS.get(cfg.dataset)(cfg, resolved)
