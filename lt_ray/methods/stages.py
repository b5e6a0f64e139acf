"""Stage-2 methods' access to their stage-1 model: build it, load its artifact, check it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lt_ray.config import ExperimentConfig
from lt_ray.context import LTContext
from lt_ray.errors import CheckpointError, ConfigError
from lt_ray.methods.base import Method


def load_stage(cfg: ExperimentConfig, ctx: LTContext) -> Method:
    """The stage-1 method of ``cfg``'s ``pretrained:`` section, with the weights of its
    artifact when ``ctx.load_base`` (else the structure only, for a state dict loaded next)."""
    from lt_ray import artifacts
    from lt_ray.experiment import build_method

    stage_cfg = artifacts.pretrained_config(cfg)
    assert stage_cfg is not None, "validate() requires the pretrained: section"
    base = build_method(stage_cfg, None, ctx.device, class_counts=ctx.class_counts,
                        artifacts=ctx.artifacts, load_base=False)
    if ctx.load_base:
        root = artifacts.resolve_root(ctx.artifacts)
        load_base_weights(base, artifacts.local_copy(artifacts.require(root, stage_cfg)),
                          ctx.num_classes)
    return base


def load_base_weights(base: Method, path: str | Path, num_classes: int) -> None:
    """Load the checkpoint at ``path`` into the stage-1 method ``base``: an lt-ray checkpoint
    into the method, a foreign state dict into its network (``base.model``); a checkpoint of
    another class count is refused."""
    from lt_ray.checkpoint import load_checkpoint, load_weights

    saved = load_checkpoint(path)
    counts = saved.get("class_counts")
    if counts is not None and len(counts) != num_classes:
        raise CheckpointError(
            f"base checkpoint {path} has {len(counts)} classes, the data {num_classes}; "
            "use a base trained on the same dataset"
        )
    target = base.model if saved["format_version"] is None else base  # foreign: the net
    load_weights(target, saved["state_dict"], source=str(path))


def base_checker(accepts: Callable[[ExperimentConfig], bool],
                 what: str) -> Callable[[ExperimentConfig, ExperimentConfig], None]:
    """A ``check_base`` hook (METHODS metadata): refuse a stage 1 that ``accepts`` rejects
    (another architecture: ``what`` says which it must be), and a ``model.arch`` set in the
    stage-2 config that differs from the stage 1's."""

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
