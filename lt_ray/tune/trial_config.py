"""The experiment configs of a study: its base, a trial's, and what a method's recipe adds.

The one place where ``tune/`` layers study values through the core's config API: a trial's
config is the study's ``base`` with its grid cell's values and its searched values on top
(:func:`trial_config`), the same expression for the validation, the driver, the trainable and
the Parquet export; :func:`resolve_trial` resolves it as the run does (once).
"""

from __future__ import annotations

from typing import Any

from lt_ray.config import ExperimentConfig
from lt_ray.resolution import Resolved, layered, recipe_defaults, resolve


def base_config(base: dict[str, Any]) -> ExperimentConfig:
    """The study's ``base`` as an experiment config (unknown keys and bad types raise)."""
    return ExperimentConfig.from_dict(base)


def base_with_recipe(base: dict[str, Any]) -> ExperimentConfig:
    """The study's ``base`` layered on its method's recipe (not yet resolved)."""
    return layered(base_config(base))


def trial_config(base: dict[str, Any], cell_values: dict[str, Any],
                 searched: dict[str, Any]) -> ExperimentConfig:
    """The config of a trial as the user's values: ``base`` < its cell's grid values < its
    searched values (dotted keys)."""
    return ExperimentConfig.from_dict(base).replace({**cell_values, **searched})


def resolve_trial(base: dict[str, Any], cell_values: dict[str, Any],
                  searched: dict[str, Any]) -> Resolved:
    """The trial's config resolved and validated, as its run resolves it (what the Parquet
    rows record)."""
    return resolve(trial_config(base, cell_values, searched))


def recipe_has_stage(method: str) -> bool:
    """Whether method ``method``'s recipe brings a ``pretrained:`` stage of its own."""
    return "pretrained" in recipe_defaults(method)
