"""The study driver behind ``lt-ray sweep``: the plan of a study (``--dry-run``), and a run.

A run checks the study folder and the data once, starts or joins Ray, checks that the cluster
can hold a trial (now, or after its autoscaler adds a node), builds the stage artifacts, fits
(or restores) the study's Tuner under ``<storage>/<study>/tune/``, exports it to Parquet and
prints the summary. The modules that import Ray (the Tuner, the console, the export) are
imported by :func:`run_sweep` only: a dry run starts no Ray and imports none.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import yaml

from lt_ray.data import build_dataset, resolve_root
from lt_ray.results.provenance import collect_provenance
from lt_ray.tune.interrupt import StopSignals, SweepInterrupted
from lt_ray.tune.ray_runtime import (
    check_resources,
    dashboard_access,
    has_gpus,
    start_ray,
    stop_ray,
)
from lt_ray.tune.spec import SweepSpec
from lt_ray.tune.stages import artifacts_root, prepare_stages, stage_descriptions
from lt_ray.tune.study_folder import (
    check_study_dir,
    refresh_declarations,
    study_dir_for,
    with_absolute_data_root,
    write_study_file,
)
from lt_ray.tune.trial_config import base_with_recipe


def describe_plan(spec: SweepSpec, storage: str, overrides: dict[str, Any] | None = None) -> str:
    """What ``lt-ray sweep --dry-run`` prints: cells, trials, objective, resources, space,
    stage artifacts, the ``--set`` overrides and the base config."""
    cells = spec.cells()
    lines = [f"study {spec.name}: {len(cells)} grid cell(s) x {spec.num_samples} trials "
             f"= {len(cells) * spec.num_samples} trials",
             *([f"seed repeats: the best {spec.repeat_top_k} per cell x seeds "
                f"{list(spec.repeat_seeds)} = "
                f"{len(cells) * spec.repeat_top_k * len(spec.repeat_seeds)} more trials"]
               if spec.repeat_seeds else []),
             f"results: {study_dir_for(storage, spec.name)}",
             "objective: " + ", ".join(
                 f"{m} ({o})" for m, o in zip(spec.metrics, spec.modes, strict=True))
             + f"; sampler {spec.sampler}, seed {spec.seed}",
             f"scheduler: {spec.scheduler}"
             + (f" (grace {spec.grace_period} epochs)" if spec.scheduler != "none" else ""),
             f"resources per trial: cpu={spec.cpu:g}, gpu={spec.gpu:g}; at most "
             f"{spec.max_concurrent} at once (fewer if the cluster is smaller"
             + (f"; {int(1 / spec.gpu)} trials share one GPU" if 0 < spec.gpu < 1 else "") + ")",
             "search space:"]
    lines += [f"  {p.describe()}" for p in spec.params] or ["  (none: fixed config)"]
    stages = stage_descriptions(spec)
    if stages:
        lines.append(f"stage artifacts (built once, before the search, in <storage>/artifacts): "
                     f"{len(stages)}")
        lines += [f"  {d['hash']}: {d['method']}, {d['epochs']} epochs, {d['dataset']} IF "
                  f"{d['imb_factor']:g}, seed {d['seed']}" for d in stages]
    lines.append("grid cells:")
    lines += [f"  {c.id}: {c.label}" for c in cells]
    if overrides:
        lines.append("overrides (--set): " + ", ".join(
            f"{k}={json.dumps(v, default=str)}" for k, v in overrides.items()))
    lines.append("base config (resolved):")
    resolved = base_with_recipe(spec.base).to_dict()
    lines.append(yaml.safe_dump(resolved, sort_keys=False).rstrip().replace("\n", "\n  "))
    return "\n".join(lines)


def run_sweep(spec: SweepSpec, *, storage: str, address: str | None, resume: bool,
              dashboard: bool, optuna_storage: str | None, data_root: str | None,
              smoke: bool = False, verbose: bool = False,
              echo: Callable[[str], Any] = print) -> None:
    """Check study folder and data, start/join Ray, check resources, fit, export, summarize;
    ``echo`` prints the lines meant for the user. A smoke run asks for no GPU where the
    cluster has none (it checks the YAML, not speed). SIGINT or SIGTERM stops it (the Tuner's
    state saved, the finished trials exported) with :class:`SweepInterrupted`."""
    with StopSignals() as stop:
        try:
            _run(spec, stop, storage=storage, address=address, resume=resume,
                 dashboard=dashboard, optuna_storage=optuna_storage, data_root=data_root,
                 smoke=smoke, verbose=verbose, echo=echo)
        except KeyboardInterrupt as exc:
            if isinstance(exc, SweepInterrupted) or stop.received is None:
                raise
            raise SweepInterrupted(stop.received) from None  # Ray re-raised it as a plain one


def _run(spec: SweepSpec, stop: StopSignals, *, storage: str, address: str | None,
         resume: bool, dashboard: bool, optuna_storage: str | None, data_root: str | None,
         smoke: bool, verbose: bool, echo: Callable[[str], Any]) -> None:
    from lt_ray.tune.console import StudyConsole, quiet_ray  # Ray: not for a dry run
    from lt_ray.tune.export import export, export_study_dir, summarize
    from lt_ray.tune.tuner import fit_study, total_trials

    spec = with_absolute_data_root(spec)
    study_dir = study_dir_for(storage, spec.name)
    check_study_dir(study_dir, spec, resume=resume)
    root = str(resolve_root(None, data_root))
    for data_cfg in {repr(c.data): c.data for c in map(spec.cell_config, spec.cells())}.values():
        build_dataset(data_cfg, root)  # download/verify each dataset once, in the driver
    quiet_ray(verbose)
    url = start_ray(address, dashboard=dashboard, verbose=verbose)
    try:
        stop.install()  # ray.init set its own SIGTERM handler
        if smoke and spec.gpu and not has_gpus():
            echo("smoke: this Ray has no GPU, the 2 trials run on the CPU")
            spec = replace(spec, gpu=0.0)
        slots = check_resources(spec)
        artifacts = artifacts_root(storage)
        if resume:
            refresh_declarations(study_dir, spec, artifacts)
        else:
            # provenance of the code submitted, collected once here: on every row, failed ones too
            write_study_file(study_dir, spec, collect_provenance({"cpu": spec.cpu,
                                                                   "gpu": spec.gpu}), artifacts)
        if url:
            access = dashboard_access()
            echo(f"Ray dashboard: {url}" + (f"\n  ({access})" if access else ""))
        echo(f"study {spec.name}: {len(spec.cells())} cell(s) x {spec.num_samples} "
             f"trials, {slots} at once -> {study_dir}")
        built = prepare_stages(spec, artifacts, root)
        if built:
            echo(f"built {built} stage artifact(s) in {artifacts}")
        total = total_trials(spec)
        console = StudyConsole(total, {c.index: c.label for c in spec.cells() if c.values},
                               spec.metrics[0], spec.modes[0])
        with stop.tune_running():
            results = fit_study(spec, study_dir, resume=resume, data_root=root,
                                optuna_storage=optuna_storage, artifacts=artifacts,
                                console=console, verbose=verbose)
        with stop.deferred():  # after an interrupt, from the state Tune saved (see export)
            paths, records = (export(study_dir, results) if stop.received is None
                              else export_study_dir(study_dir))
    finally:
        stop_ray()
    echo(summarize(spec.metrics, spec.modes, records))
    echo(f"{len(records)} trials -> " + ", ".join(str(p) for p in paths.values()))
    if stop.received is not None:
        ended = sum(r.status != "interrupted" for r in records)
        raise SweepInterrupted(stop.received, finished=ended, total=total)
