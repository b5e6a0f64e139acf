"""Run a study on Ray Tune: one Tuner (Optuna search + optional ASHA) per grid cell.

The driver validates everything, checks the data once, starts or joins Ray, checks that some
node can hold one trial, then fits (or restores) each cell's Tuner under
``<storage>/<study>/<cell-id>/`` and exports the study to Parquet.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lt_ray.errors import LTRayError
from lt_ray.tune.space import Cell, DefineByRun, SweepSpec

log = logging.getLogger(__name__)
STUDY_FILE = "study.json"


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    results: Any  # ray.tune.ResultGrid


def study_dir_for(storage: str | Path, name: str) -> Path:
    return Path(storage).expanduser().resolve() / name


def check_study_dir(study_dir: Path, spec: SweepSpec, *, resume: bool) -> None:
    """New study: refuse an existing one. Resume: require this study's file. Writes nothing."""
    marker = study_dir / STUDY_FILE
    if resume:
        if not marker.is_file():
            raise LTRayError(
                f"--resume: {study_dir} holds no study ({STUDY_FILE} missing); check --storage "
                "and --name, or start the study without --resume"
            )
        saved = json.loads(marker.read_text())
        if saved.get("name") != spec.name or saved.get("cells") != _cells_json(spec):
            raise LTRayError(
                f"--resume: {marker} was written by a different study definition; resume with "
                "the same YAML and options, or use --name for a new study"
            )
    elif marker.exists():
        raise LTRayError(
            f"study {spec.name!r} already exists in {study_dir}; use --resume to continue it, "
            "--name to start a new one, or remove the folder"
        )
    elif study_dir.exists() and not study_dir.is_dir():
        raise LTRayError(f"--storage: {study_dir} is a file, not a folder")


def _cells_json(spec: SweepSpec) -> list[dict[str, Any]]:
    return json.loads(json.dumps([{"id": c.id, "values": c.values} for c in spec.cells()],
                                 default=str))


def write_study_file(study_dir: Path, spec: SweepSpec) -> None:
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / STUDY_FILE).write_text(json.dumps({
        "name": spec.name,
        "description": spec.description,
        "cells": _cells_json(spec),
        "metric": list(spec.metrics),
        "mode": list(spec.modes),
        "base": spec.base,
    }, indent=1, default=str))


def start_ray(address: str | None, *, dashboard: bool, num_cpus: int | None = None,
              num_gpus: int | None = None) -> str | None:
    """Join ``address`` (or $RAY_ADDRESS), else start a local Ray; return the dashboard URL."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"log_to_driver": True, "configure_logging": True,
                              "logging_level": logging.WARNING}
    if address is None:
        temp_dir = os.environ.get("LT_RAY_TEMP_DIR")
        kwargs.update(address="local", include_dashboard=dashboard, dashboard_host="127.0.0.1",
                      num_cpus=num_cpus, num_gpus=num_gpus)
        if temp_dir:
            kwargs["_temp_dir"] = temp_dir
    else:
        _probe(address)
        kwargs["address"] = address
    try:
        context = ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray"
        raise LTRayError(
            f"cannot start or reach Ray at {where}: {str(exc).splitlines()[0][:200]} "
            "(start a cluster with `ray start --head` or `ray up cluster.yaml`, and check "
            "--address)"
        ) from None
    url = getattr(context, "dashboard_url", None)
    return f"http://{url}" if url and not url.startswith("http") else url


def _probe(address: str) -> None:
    """Fail fast on an unreachable ``host:port`` (ray.init would wait for minutes)."""
    import socket

    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise LTRayError(
            f"cannot start or reach Ray at {address}: {exc.strerror or exc} (start a cluster "
            "with `ray start --head` or `ray up cluster.yaml`, and check --address)"
        ) from None


def check_resources(spec: SweepSpec) -> int:
    """Raise if no alive node can run one trial; return how many trials fit at once."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    fits = [n for n in nodes if n.get("CPU", 0) >= spec.cpu and n.get("GPU", 0) >= spec.gpu]
    if not fits:
        have = ", ".join(f"{{CPU: {n.get('CPU', 0):g}, GPU: {n.get('GPU', 0):g}}}" for n in nodes)
        raise LTRayError(
            f"resources: a trial asks for cpu={spec.cpu:g}, gpu={spec.gpu:g} but no node of this "
            f"Ray cluster has that (nodes: {have or 'none'}); lower resources.cpu/gpu in the "
            "study YAML or add GPU nodes"
        )
    slots = 0
    for n in fits:
        per_node = math.floor(n.get("CPU", 0) / spec.cpu) if spec.cpu else 10**6
        if spec.gpu:
            per_node = min(per_node, math.floor(n.get("GPU", 0) / spec.gpu + 1e-9))
        slots += per_node
    return min(slots, spec.max_concurrent)


def short_trial_name(trial: Any) -> str:
    """Trial folder names: the trial id only (Ray's default embeds the whole config)."""
    return str(trial.trial_id)


def make_trainable(spec: SweepSpec, cell: Cell, data_root: str | None) -> Any:
    from ray import tune

    from lt_ray.tune.trainable import train_trial

    resources = {"cpu": spec.cpu, "gpu": spec.gpu}
    fn = tune.with_parameters(train_trial, base=spec.base, cell=cell.values,
                              data_root=data_root, resources=resources)
    return tune.with_resources(fn, resources)


def make_searcher(spec: SweepSpec, cell: Cell, optuna_storage: str | None) -> Any:
    params = spec.cell_params(cell)
    if not params:
        return None
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    seed = spec.seed + cell.index
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
    }
    storage = None
    if optuna_storage:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(Path(optuna_storage).resolve())))
    objective: dict[str, Any] = {"metric": spec.metrics[0], "mode": spec.modes[0]}
    if spec.multi_objective:
        objective = {"metric": list(spec.metrics), "mode": list(spec.modes)}
    searcher = OptunaSearch(
        space=DefineByRun(params), sampler=samplers[spec.sampler](),
        points_to_evaluate=[dict(p) for p in spec.points_to_evaluate] or None,
        storage=storage, study_name=f"{spec.name}-{cell.id}" if storage else None, **objective,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent)


def make_scheduler(spec: SweepSpec) -> Any:
    if spec.scheduler == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    epochs = int(spec.base["train"]["epochs"])
    # ASHA ranks trials by one metric: the (first) objective
    return ASHAScheduler(time_attr="epoch", max_t=epochs, metric=spec.metrics[0],
                         mode=spec.modes[0], grace_period=min(spec.grace_period, epochs),
                         reduction_factor=spec.reduction_factor)


def fit_cell(spec: SweepSpec, cell: Cell, study_dir: Path, *, resume: bool,
             data_root: str | None, optuna_storage: str | None) -> CellResult:
    from ray import tune

    trainable = make_trainable(spec, cell, data_root)
    cell_dir = study_dir / cell.id
    if resume and tune.Tuner.can_restore(str(cell_dir)):
        log.info("%s (%s): restoring from %s", cell.id, cell.label, cell_dir)
        tuner = tune.Tuner.restore(str(cell_dir), trainable, resume_unfinished=True,
                                   resume_errored=True)
        return CellResult(cell, tuner.fit())
    searcher = make_searcher(spec, cell, optuna_storage)
    tune_config = tune.TuneConfig(
        search_alg=searcher, scheduler=make_scheduler(spec), num_samples=spec.num_samples,
        max_concurrent_trials=None if searcher else spec.max_concurrent,
        trial_dirname_creator=short_trial_name, trial_name_creator=short_trial_name,
        reuse_actors=True,  # a finished trial's worker runs the next one: no new process
    )
    run_config = tune.RunConfig(
        name=cell.id, storage_path=str(study_dir),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        verbose=1,
    )
    log.info("%s (%s): %d trials", cell.id, cell.label, spec.num_samples)
    tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
    return CellResult(cell, tuner.fit())


def run_study(spec: SweepSpec, study_dir: Path, *, resume: bool, data_root: str | None,
              optuna_storage: str | None) -> list[CellResult]:
    return [
        fit_cell(spec, cell, study_dir, resume=resume, data_root=data_root,
                 optuna_storage=optuna_storage)
        for cell in spec.cells()
    ]
