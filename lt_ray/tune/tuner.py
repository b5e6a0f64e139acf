"""The study's ONE Ray Tune ``Tuner``, for all grid cells: its trainable, searcher, scheduler
and run config; fitted under ``<storage>/<study>/tune/``, or restored from there and finished.

Why one Tuner: a Tuner per cell would run the cells one after another (``Tuner.fit`` blocks),
so a 24-cell study would never have more than one cell's trials in flight. With one Tuner,
:class:`~lt_ray.tune.search.CellSearch` routes suggestions to one Optuna search per cell and
:class:`~lt_ray.tune.scheduling.CellScheduler` gives every cell its own ASHA; trials of all cells
share the cluster up to the study-wide ``search.max_concurrent``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ray import tune

from lt_ray import storage
from lt_ray.tune.scheduling import make_scheduler
from lt_ray.tune.search import MarkStoppedTrials, make_search
from lt_ray.tune.spec import SweepSpec
from lt_ray.tune.stages import artifacts_root
from lt_ray.tune.study_folder import TUNE_DIR
from lt_ray.tune.trainable import train_trial

log = logging.getLogger(__name__)


def make_trainable(spec: SweepSpec, data_root: str | None, artifacts: str) -> Any:
    """The study's trainable: :func:`~lt_ray.tune.trainable.train_trial` with the study's base,
    grid values and paths bound, and a trial's resources."""
    resources = {"cpu": spec.cpu, "gpu": spec.gpu}
    fn = tune.with_parameters(
        train_trial, base=spec.base, cells=[c.values for c in spec.cells()],
        data_root=data_root, resources=resources, objective=list(spec.metrics),
        artifacts=artifacts,
    )
    return tune.with_resources(fn, resources)


def total_trials(spec: SweepSpec) -> int:
    """Search trials and seed repeats of the whole study."""
    return (spec.num_samples + spec.repeat_top_k * len(spec.repeat_seeds)) * len(spec.cells())


def fit_study(spec: SweepSpec, study_dir: str | Path, *, resume: bool, data_root: str | None,
              optuna_storage: str | None, artifacts: str | None = None,
              console: Any = None, verbose: bool = True) -> Any:
    """Fit (or, with ``resume``, restore and finish) the study's Tuner; returns its ResultGrid.
    ``artifacts``: where the stage-1 runs live (default: ``<storage>/artifacts``);
    ``console``: a Tune callback that reports progress; ``verbose``: Tune's own tables."""
    study_dir = storage.normalize(study_dir)
    root = artifacts or artifacts_root(storage.parent(study_dir))
    trainable = make_trainable(spec, data_root, root)
    tune_dir = storage.join(study_dir, TUNE_DIR)
    if resume and tune.Tuner.can_restore(tune_dir):
        log.info("restoring %s", tune_dir)
        tuner = tune.Tuner.restore(tune_dir, trainable, resume_unfinished=True,
                                   resume_errored=True)  # its callbacks, the console included
        return _fit_quietly(tuner, verbose)
    total = total_trials(spec)
    tune_config = tune.TuneConfig(
        search_alg=make_search(spec, optuna_storage), scheduler=make_scheduler(spec),
        num_samples=total, max_concurrent_trials=spec.max_concurrent,
        trial_dirname_creator=short_trial_name, trial_name_creator=short_trial_name,
        reuse_actors=True,  # a finished trial's worker runs the next one: no new process
    )
    run_config = tune.RunConfig(
        name=TUNE_DIR, storage_path=study_dir,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[MarkStoppedTrials(), *([console] if console is not None else [])],
        verbose=1 if verbose else 0,
    )
    log.debug("%d cell(s) x %d trials, at most %d at once", len(spec.cells()), spec.num_samples,
             spec.max_concurrent)
    return _fit_quietly(tune.Tuner(trainable, tune_config=tune_config, run_config=run_config),
                        verbose)


def _fit_quietly(tuner: Any, verbose: bool) -> Any:
    """``tuner.fit()``; without ``verbose`` through Tune's classic reporter at verbosity 0,
    which prints nothing (the new output engine prints its experiment heading regardless)."""
    if verbose:
        return tuner.fit()
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        return tuner.fit()
    finally:
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


def short_trial_name(trial: Any) -> str:
    """Trial folder names: the trial id only (Ray's default embeds the whole config)."""
    return str(trial.trial_id)
