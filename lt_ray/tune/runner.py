"""Run a study on Ray Tune: ONE Tuner for all grid cells.

The driver validates everything, checks the data once, starts or joins Ray, checks that the
cluster can hold a trial (now, or after its autoscaler adds a node), then fits (or restores) the
study's Tuner under ``<storage>/<study>/tune/`` and exports it to Parquet.

Why one Tuner: a Tuner per cell would run the cells one after another (``Tuner.fit`` blocks),
so a 24-cell study would never have more than one cell's trials in flight. With one Tuner,
:class:`~lt_ray.tune.search.CellSearch` routes suggestions to one Optuna search per cell and
:class:`~lt_ray.tune.scheduling.CellScheduler` gives every cell its own ASHA; trials of all cells
share the cluster up to the study-wide ``search.max_concurrent``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from lt_ray import storage
from lt_ray.errors import LTRayError
from lt_ray.tune.space import DefineByRun, SweepSpec

log = logging.getLogger(__name__)
STUDY_FILE = "study.json"
TUNE_DIR = "tune"  # the study's Tune experiment: <storage>/<study>/tune/
LOCAL_IP = "127.0.0.1"  # the embedded local Ray listens on loopback only


def study_dir_for(location: str | Path, name: str) -> str:
    """``<storage>/<name>``: an absolute local path or a URI (``s3://bucket/prefix/name``)."""
    return storage.join(storage.normalize(location), name)


def with_absolute_data_root(spec: SweepSpec) -> SweepSpec:
    """``data.root`` (in base and as a grid axis) made absolute here, in the driver: Ray Tune
    runs every trial in its own working directory, where a relative path means nothing."""
    from dataclasses import replace

    def absolute(root: Any) -> Any:
        return str(Path(root).expanduser().resolve()) if isinstance(root, str) and root else root

    base = json.loads(json.dumps(spec.base))
    if isinstance(base.get("data"), dict) and base["data"].get("root"):
        base["data"]["root"] = absolute(base["data"]["root"])
    grid = dict(spec.grid)
    if "data.root" in grid:
        grid["data.root"] = [absolute(v) for v in grid["data.root"]]
    return replace(spec, base=base, grid=grid)


# --- the study file --------------------------------------------------------------------------


def study_fingerprint(spec: SweepSpec) -> dict[str, Any]:
    """What a resumed study must share with the one that started: base, grid, space, search,
    scheduler (resources and max_failures may change, e.g. on another cluster)."""
    return json.loads(json.dumps({
        "base": spec.base,
        "grid": spec.grid,
        "space": {p.key: p.describe() for p in spec.params},
        "search": {"sampler": spec.sampler, "metric": list(spec.metrics),
                   "mode": list(spec.modes), "num_samples": spec.num_samples,
                   "seed": spec.seed, "points_to_evaluate": list(spec.points_to_evaluate),
                   "max_concurrent_per_cell": spec.max_concurrent_per_cell},
        "scheduler": {"name": spec.scheduler, "grace_period": spec.grace_period,
                      "reduction_factor": spec.reduction_factor},
        "repeat": {"top_k": spec.repeat_top_k, "seeds": list(spec.repeat_seeds)},
    }, default=str))


def spec_changes(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two fingerprints (dotted paths)."""
    out: list[str] = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key, "<unset>"), now.get(key, "<unset>")
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(spec_changes(a, b, path + "."))
        elif a != b:
            out.append(f"{path}: {json.dumps(a)} -> {json.dumps(b)}")
    return out


def check_study_dir(study_dir: str, spec: SweepSpec, *, resume: bool) -> None:
    """New study: refuse an existing one. Resume: require this very study. Writes nothing."""
    marker = storage.join(study_dir, STUDY_FILE)
    try:
        found = storage.is_file(marker)
        saved = json.loads(storage.read_text(marker)) if found and resume else {}
        clash = not found and not storage.is_uri(study_dir) and Path(study_dir).is_file()
    except OSError as exc:
        raise LTRayError(f"--storage: cannot read {study_dir}: {exc}") from None
    if resume:
        if not found:
            raise LTRayError(
                f"--resume: {study_dir} holds no study ({STUDY_FILE} missing); check --storage "
                "and --name, or start the study without --resume"
            )
        changes = spec_changes(saved.get("spec", {}), study_fingerprint(spec))
        if saved.get("name") != spec.name:
            changes.insert(0, f"name: {saved.get('name')!r} -> {spec.name!r}")
        if changes:
            shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if
                                              len(changes) > 4 else "")
            raise LTRayError(
                f"--resume: the study definition changed since {marker} was written ({shown}); "
                "resume with the same YAML and options, or start a new study with --name"
            )
    elif found:
        raise LTRayError(
            f"study {spec.name!r} already exists in {study_dir}; use --resume to continue it, "
            "--name to start a new one, or remove the folder"
        )
    elif clash:
        raise LTRayError(f"--storage: {study_dir} is a file, not a folder")


def write_study_file(study_dir: str, spec: SweepSpec, provenance: dict[str, Any]) -> None:
    storage.write_text(storage.join(study_dir, STUDY_FILE), json.dumps({
        "name": spec.name,
        "description": spec.description,
        "cells": [{"id": c.id, "index": c.index, "values": c.values} for c in spec.cells()],
        "metric": list(spec.metrics),
        "mode": list(spec.modes),
        "base": spec.base,
        "spec": study_fingerprint(spec),
        "provenance": provenance,
    }, indent=1, default=str))


# --- Ray --------------------------------------------------------------------------------------


#: Ray 2.60 swaps a node IP of 127.0.0.1 for the machine's routable address
#: (services.resolve_ip_for_localhost) unless this switch is off; off, a single-node Ray binds
#: and talks on the loopback interface only (every port of gcs_server, raylet, workers, agents).
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_restore: list[tuple[str, str | None, bool]] = []


def keep_on_loopback() -> None:
    """Make a Ray started from this process (and its children) use 127.0.0.1 only; undone by
    :func:`stop_ray`. Only for Rays started here: a multi-node ``ray start`` refuses it."""
    from ray._private import ray_constants

    if not _restore:
        _restore.append((LOOPBACK_SWITCH, os.environ.get(LOOPBACK_SWITCH),
                         ray_constants.ENABLE_RAY_CLUSTER))
    os.environ[LOOPBACK_SWITCH] = "0"  # the processes Ray starts from here
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process: read when Ray picks the node IP


def stop_ray() -> None:
    """``ray.shutdown()``, and undo :func:`keep_on_loopback`."""
    import ray
    from ray._private import ray_constants

    ray.shutdown()
    while _restore:
        name, value, enabled = _restore.pop()
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
        ray_constants.ENABLE_RAY_CLUSTER = enabled


def start_ray(address: str | None, *, dashboard: bool, num_cpus: int | None = None,
              num_gpus: int | None = None, verbose: bool = True) -> str | None:
    """Join ``address`` (or $RAY_ADDRESS), else start a local Ray that listens on 127.0.0.1
    only; return the dashboard URL. Stop it with :func:`stop_ray`. Without ``verbose`` the
    trials' log lines stay in Ray's log files instead of the console."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"log_to_driver": verbose, "configure_logging": True,
                              "logging_level": logging.WARNING if verbose else logging.ERROR}
    if address is None:
        keep_on_loopback()
        temp_dir = os.environ.get("LT_RAY_TEMP_DIR")
        kwargs.update(address="local", include_dashboard=dashboard, dashboard_host=LOCAL_IP,
                      num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address=LOCAL_IP)
        if temp_dir:
            kwargs["_temp_dir"] = temp_dir
    else:
        _probe(address)
        kwargs["address"] = address
    try:
        context = ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        stop_ray()
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


def _fits(resources: dict[str, float], spec: SweepSpec) -> int:
    """How many trials one node with ``resources`` holds at once (0: not even one)."""
    cpu, gpu = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if cpu + 1e-9 < spec.cpu or gpu + 1e-9 < spec.gpu:
        return 0
    per_node = math.floor(cpu / spec.cpu + 1e-9) if spec.cpu else 10**6
    if spec.gpu:
        per_node = min(per_node, math.floor(gpu / spec.gpu + 1e-9))
    return per_node


def dashboard_access() -> str:
    """How to get past the dashboard's "Authentication Token Required" dialog (Ray 2.60 token
    auth), or "" when the cluster does not use tokens."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        enabled = is_token_auth_enabled()
    except ImportError:  # another Ray: say it anyway when a token is configured
        enabled = os.environ.get("RAY_AUTH_MODE") == "token"
    if not enabled:
        return ""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    where = "$RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else path
    return (f"token auth is on: paste the token from {where} (`ray get-auth-token` prints it) "
            "into the dashboard's 'Authentication Token Required' dialog")


def has_gpus() -> bool:
    """Whether an alive node or a launchable node type of the connected cluster has a GPU."""
    import ray

    from lt_ray.tune.cluster import launchable_node_types

    alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return any(r.get("GPU", 0) > 0 for r in [*alive, *(t["resources"]
                                                       for t in launchable_node_types())])


def check_resources(spec: SweepSpec) -> int:
    """How many trials fit at once now; raise if neither the alive nodes nor any node type the
    cluster's autoscaler can launch holds one trial (on a local Ray: the alive nodes only)."""
    import ray

    from lt_ray.tune.cluster import launchable_node_types

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    slots = sum(_fits(n, spec) for n in nodes)
    if slots:
        return min(slots, spec.max_concurrent)
    launchable = launchable_node_types()
    growable = [t for t in launchable if _fits(t["resources"], spec)]
    if growable:
        potential = sum(_fits(t["resources"], spec) * int(t["max_workers"]) for t in growable)
        log.info("no alive node holds a trial yet; the autoscaler can launch %s",
                 ", ".join(t["name"] for t in growable))
        return min(potential, spec.max_concurrent)

    def show(res: dict[str, float]) -> str:
        return f"{{CPU: {res.get('CPU', 0):g}, GPU: {res.get('GPU', 0):g}}}"

    have = ", ".join(show(n) for n in nodes) or "none"
    types = ", ".join(f"{t['name']} {show(t['resources'])}" for t in launchable)
    raise LTRayError(
        f"resources: a trial asks for cpu={spec.cpu:g}, gpu={spec.gpu:g} but no node of this "
        f"Ray cluster has that (alive nodes: {have}; launchable node types: {types or 'none'})"
        "; lower resources.cpu/gpu in the study YAML or add such nodes"
    )


# --- the Tuner --------------------------------------------------------------------------------


def make_trainable(spec: SweepSpec, data_root: str | None, artifacts: str) -> Any:
    from ray import tune

    from lt_ray.tune.trainable import train_trial

    resources = {"cpu": spec.cpu, "gpu": spec.gpu}
    fn = tune.with_parameters(
        train_trial, base=spec.base, cells=[c.values for c in spec.cells()],
        data_root=data_root, resources=resources, objective=list(spec.metrics),
        artifacts=artifacts,
    )
    return tune.with_resources(fn, resources)


def staged_configs(spec: SweepSpec) -> list[Any]:
    """One config per cell and seed whose trials need stage artifacts: the cell's, and one per
    seed of ``repeat:`` (a seed repeat re-runs the whole pipeline: its stages inherit the
    seed)."""
    out = []
    for cell in spec.cells():
        for seed in (None, *spec.repeat_seeds):
            cfg = spec.cell_config(cell, None if seed is None else {"seed": seed})
            if cfg.pretrained is not None:
                out.append(cfg)
    return out


def stage_levels(spec: SweepSpec) -> list[list[Any]]:
    """The distinct stage-1 configs the study's trials need, innermost stages first (a stage
    may have a stage of its own: an ensemble on a GML run on a CE run)."""
    from lt_ray.artifacts import config_hash, pretrained_config

    levels: list[dict[str, Any]] = []
    for cfg in staged_configs(spec):
        chain = []
        stage = pretrained_config(cfg)
        while stage is not None:
            chain.append(stage)
            stage = pretrained_config(stage)
        for depth, stage in enumerate(reversed(chain)):
            while len(levels) <= depth:
                levels.append({})
            levels[depth][config_hash(stage)] = stage
    return [list(level.values()) for level in levels]


def prepare_stages(spec: SweepSpec, root: str, data_root: str | None) -> int:
    """Build every stage-1 artifact the grid needs as Ray tasks with a trial's resources
    (named ``artifact <hash>`` in the dashboard), the stages of one level in parallel; then
    build each staged cell's method once, so that its caches exist. Artifacts that exist
    already (an earlier study's) are skipped. Returns how many artifacts were built."""
    import ray

    from lt_ray import artifacts
    from lt_ray.tune.trainable import prepare_method, prepare_stage

    levels = stage_levels(spec)
    if not levels:
        return 0
    artifacts.check_writable(root)
    built = 0
    for level in levels:
        todo = [s for s in level if artifacts.find(root, s) is None]
        tasks = [
            ray.remote(prepare_stage).options(
                num_cpus=spec.cpu, num_gpus=spec.gpu, max_retries=spec.max_failures,
                name=f"artifact {artifacts.config_hash(s)} ({s.method.name})",
            ).remote(s.to_dict(), root, data_root, spec.gpu)
            for s in todo
        ]
        if todo:
            log.info("building %d stage artifact(s): %s", len(todo), ", ".join(
                f"{artifacts.config_hash(s)} ({s.method.name}, {s.train.epochs} epochs)"
                for s in todo))
        for stage, folder in zip(todo, _wait(tasks, "stage artifact"), strict=True):
            log.info("artifact %s (%s) -> %s", artifacts.config_hash(stage),
                     stage.method.name, folder)
        built += len(todo)
    one_per_base = {artifacts.config_hash(artifacts.pretrained_config(c)): c
                    for c in staged_configs(spec)}  # a base's caches are shared by its cells
    warm = [ray.remote(prepare_method).options(
        num_cpus=spec.cpu, num_gpus=spec.gpu, name=f"prepare {c.method.name} on {key}",
    ).remote(c.explicit, root, data_root, spec.gpu) for key, c in one_per_base.items()]
    _wait(warm, "feature cache")
    return built


def _wait(tasks: list[Any], what: str, heartbeat_s: float = 60.0) -> list[Any]:
    """``ray.get`` with a line every ``heartbeat_s`` while builds run (a 200-epoch base is
    silent for hours otherwise), and a build error as one user error (the failing stage
    named)."""
    import ray

    started = time.monotonic()
    pending = list(tasks)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=heartbeat_s)
        if pending:
            log.info("%s: %d of %d done after %.0f min (progress per task: the Ray "
                     "dashboard's Jobs page, task logs)", what, len(tasks) - len(pending),
                     len(tasks), (time.monotonic() - started) / 60)
    try:
        return ray.get(tasks)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        raise LTRayError(f"building a stage artifact failed: {type(cause).__name__}: "
                         f"{str(cause).splitlines()[-1][:400]}") from None


def make_cell_searcher(spec: SweepSpec, cell: Any, optuna_storage: str | None) -> Any:
    """The Optuna search of one cell (None for a cell with nothing to search)."""
    params = spec.cell_params(cell)
    if not params:
        return None
    import optuna

    from lt_ray.tune.search import CellOptunaSearch

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
    return CellOptunaSearch(
        space=DefineByRun(params), sampler=samplers[spec.sampler](),
        points_to_evaluate=[dict(p) for p in spec.points_to_evaluate] or None,
        storage=storage, study_name=f"{spec.name}-{cell.id}" if storage else None, **objective,
    )


def make_search(spec: SweepSpec, optuna_storage: str | None) -> Any:
    from lt_ray.tune.search import CellSearch

    cells = spec.cells()
    objective: dict[str, Any] = {"metric": spec.metrics[0], "mode": spec.modes[0]}
    if spec.multi_objective:
        objective = {"metric": list(spec.metrics), "mode": list(spec.modes)}
    return CellSearch(
        {c.index: make_cell_searcher(spec, c, optuna_storage) for c in cells},
        {c.index: spec.num_samples for c in cells},
        per_cell_cap=spec.max_concurrent_per_cell,
        repeat_top_k=spec.repeat_top_k, repeat_seeds=spec.repeat_seeds, **objective,
    )


def make_scheduler(spec: SweepSpec) -> Any:
    """One ASHA per cell (ranking by the first objective), or None."""
    if spec.scheduler == "none":
        return None
    from lt_ray.tune.scheduling import CellScheduler, cell_asha

    return CellScheduler({
        c.index: cell_asha(metric=spec.metrics[0], mode=spec.modes[0],
                           epochs=int(spec.cell_config(c).train.epochs),
                           grace_period=spec.grace_period,
                           reduction_factor=spec.reduction_factor)
        for c in spec.cells()
    })


def total_trials(spec: SweepSpec) -> int:
    """Search trials and seed repeats of the whole study."""
    return (spec.num_samples + spec.repeat_top_k * len(spec.repeat_seeds)) * len(spec.cells())


def fit_study(spec: SweepSpec, study_dir: str | Path, *, resume: bool, data_root: str | None,
              optuna_storage: str | None, artifacts: str | None = None,
              console: Any = None, verbose: bool = True) -> Any:
    """Fit (or, with ``resume``, restore and finish) the study's Tuner; returns its ResultGrid.
    ``artifacts``: where the stage-1 runs live (default: ``<storage>/artifacts``);
    ``console``: a Tune callback that reports progress; ``verbose``: Tune's own tables."""
    from ray import tune

    from lt_ray import artifacts as A
    from lt_ray.tune.search import MarkStoppedTrials

    study_dir = storage.normalize(study_dir)
    root = artifacts or A.study_root(storage.parent(study_dir))
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
