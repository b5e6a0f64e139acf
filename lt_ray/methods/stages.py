"""Checks of a stage-2 method's stage 1 (the ``Stage.check`` hooks of method specs)."""

from __future__ import annotations

from collections.abc import Callable

from lt_ray.config import ExperimentConfig
from lt_ray.errors import ConfigError


def base_checker(accepts: Callable[[ExperimentConfig], bool],
                 what: str) -> Callable[[ExperimentConfig, ExperimentConfig], None]:
    """A ``Stage.check`` hook: refuse a stage 1 that ``accepts`` rejects (another
    architecture: ``what`` says which it must be), and a ``model.arch`` set in the stage-2
    config that differs from the stage 1's."""

    def check(cfg: ExperimentConfig, stage: ExperimentConfig) -> None:
        if not accepts(stage):
            raise ConfigError(
                f"method {cfg.method.name!r} builds on {what}, but its pretrained: stage is a "
                f"{stage.method.name!r} run (another architecture); set pretrained.method.name "
                "accordingly"
            )
        arch = (cfg.explicit.get("model") or {}).get("arch")
        if arch is not None and arch != stage.model.arch:
            raise ConfigError(
                f"model.arch={arch} but the stage-1 model of method {cfg.method.name!r} is a "
                f"{stage.model.arch}; a stage 2 keeps its stage 1's network: set "
                f"pretrained.model.arch={arch} or remove model.arch"
            )

    return check
