"""The search seen from Parquet: trial order and parameter importances (Optuna's evaluator on
an in-memory study rebuilt from the ``hp.*`` columns; no Ray, no Optuna storage needed)."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd

from lt_ray.results import schema as S

MIN_IMPORTANCE_TRIALS = 4  # fewer completed search trials: importances mean nothing
MIN_IMPORTANCE_PARAMS = 2  # one varying parameter has importance 1 by definition
LOG_RATIO = 10.0  # a positive range wider than this (max/min) gets a log-scale distribution

log = logging.getLogger(__name__)


def in_start_order(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` sorted by ``started_at`` (missing last), then trial id."""
    return trials.sort_values([S.STARTED_AT, S.TRIAL_ID], na_position="last", kind="stable")


def best_so_far(values: pd.Series, mode: str) -> pd.Series:
    """The running best of ``values`` (NaN skipped)."""
    return values.cummax() if mode == "max" else values.cummin()


def hp_columns(trials: pd.DataFrame) -> list[str]:
    """The searched-parameter columns that hold a value in ``trials``."""
    return [c for c in trials.columns if c.startswith(S.HP_PREFIX) and trials[c].notna().any()]


def infer_distribution(values: pd.Series) -> Any:
    """An Optuna distribution for the observed ``values`` of one searched parameter: numbers ->
    Float/IntDistribution over min..max (log when all > 0 and max/min > 10), text and bools ->
    CategoricalDistribution of the values seen."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    present = values.dropna()
    if pd.api.types.is_bool_dtype(present) or not pd.api.types.is_numeric_dtype(present):
        return CategoricalDistribution(sorted({_plain(v) for v in present}, key=str))
    low, high = float(present.min()), float(present.max())
    log_scale = low > 0 and high / low > LOG_RATIO
    if pd.api.types.is_integer_dtype(present):
        return IntDistribution(int(low), int(high), log=log_scale)
    return FloatDistribution(low, high, log=log_scale)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def param_importances(trials: pd.DataFrame, metric: str,
                      mode: str) -> tuple[dict[str, float] | None, str]:
    """Optuna's parameter importances (its default evaluator) of ``metric`` over the completed
    search trials in ``trials`` (one search: one study cell).

    Returns ``(importances, how)``; ``importances`` is None when there is too little to say
    (fewer than 4 trials or 2 varying parameters), and ``how`` then says why.
    """
    scored = trials[trials[metric].notna()]
    params = [c for c in hp_columns(scored) if scored[c].dropna().nunique() > 1]
    if len(scored) < MIN_IMPORTANCE_TRIALS:
        return None, (f"{len(scored)} completed search trial(s) with {metric}; importances need "
                      f"at least {MIN_IMPORTANCE_TRIALS}")
    if len(params) < MIN_IMPORTANCE_PARAMS:
        return None, (f"{len(params)} searched parameter(s) varied; importances need at least "
                      f"{MIN_IMPORTANCE_PARAMS}")
    import optuna

    distributions = {c: infer_distribution(scored[c]) for c in params}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        for _, row in scored.iterrows():
            present = {c: _plain(row[c]) for c in params if pd.notna(row[c])}
            study.add_trial(optuna.trial.create_trial(
                params={c[len(S.HP_PREFIX):]: v for c, v in present.items()},
                distributions={c[len(S.HP_PREFIX):]: distributions[c] for c in present},
                value=float(row[metric])))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            importances = optuna.importance.get_param_importances(study)
    finally:
        optuna.logging.set_verbosity(verbosity)
    how = (f"Optuna {optuna.__version__} get_param_importances (default evaluator) on "
           f"{len(scored)} completed search trials, target {metric}")
    for warning in caught:
        log.debug("importance: %s", warning.message)
    if caught:
        how += f" (Optuna warned: {str(caught[0].message).splitlines()[0]})"
    return dict(importances), how
