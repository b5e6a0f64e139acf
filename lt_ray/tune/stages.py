"""The stages a study builds before its search: every stage-1 artifact its trials stand on
(``pretrained:``, a grid axis included), built once as Ray tasks, innermost stages first, then
each base's per-base products (a method's ``prepare`` step: GML's feature cache), once per
distinct base; and the study's artifact folder. Stages are resolved configs
(:mod:`lt_ray.resolution`), stored by :mod:`lt_ray.artifacts`; the Ray tasks themselves are in
:mod:`lt_ray.tune.trainable`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from lt_ray import artifacts
from lt_ray.errors import LTRayError
from lt_ray.experiment import wants_features
from lt_ray.resolution import Resolved
from lt_ray.tune.spec import SweepSpec

log = logging.getLogger(__name__)
CANCEL_WAIT_S = 30.0  # how long an interrupted sweep waits for its cancelled builds to clean up


def artifacts_root(study_storage: str) -> str:
    """Where the studies of ``study_storage`` keep their stage artifacts (shared by them)."""
    return artifacts.study_root(study_storage)


def stage_descriptions(spec: SweepSpec) -> list[dict[str, Any]]:
    """What describes each stage artifact of the study (hash, method, epochs, data, seed),
    innermost stages first."""
    return [artifacts.describe(stage) for level in stage_levels(spec) for stage in level]


def staged_configs(spec: SweepSpec) -> list[Resolved]:
    """One resolved config per cell and seed whose trials need stage artifacts: the cell's,
    and one per seed of ``repeat:`` (a seed repeat re-runs the whole pipeline: its stages
    inherit the seed)."""
    out = []
    for cell in spec.cells():
        for seed in (None, *spec.repeat_seeds):
            resolved = spec.resolve_cell(cell, None if seed is None else {"seed": seed})
            if resolved.stage is not None:
                out.append(resolved)
    return out


def stage_levels(spec: SweepSpec) -> list[list[Resolved]]:
    """The distinct stage-1 runs the study's trials need as artifacts, innermost stages first
    (a stage may have a stage of its own: an ensemble on a GML run on a CE run); a stage read
    from ``pretrained.checkpoint`` is no artifact."""
    return levels_of(staged_configs(spec))


def levels_of(staged: list[Resolved]) -> list[list[Resolved]]:
    """The distinct artifact stages of the resolved cell configs ``staged``, innermost first."""
    levels: list[dict[str, Resolved]] = []
    for resolved in staged:
        chain = [s for s in resolved.chain() if s.checkpoint is None]
        for depth, stage in enumerate(reversed(chain)):
            while len(levels) <= depth:
                levels.append({})
            levels[depth][stage.hash] = stage
    return [list(level.values()) for level in levels]


def prepare_stages(spec: SweepSpec, root: str, data_root: str | None) -> int:
    """Build every stage-1 artifact the grid needs as Ray tasks with a trial's resources
    (named ``artifact <hash>`` in the dashboard), the stages of one level in parallel; then run
    the methods' ``prepare`` step once per distinct base, so that every trial loads its
    product. Artifacts that exist already (an earlier study's) are skipped. Returns how many
    artifacts were built."""
    import ray

    from lt_ray.tune.build_progress import BuildProgress  # imports Ray
    from lt_ray.tune.trainable import prepare_base, prepare_stage  # imports Ray and torch

    staged = staged_configs(spec)  # each cell resolved once
    levels = levels_of(staged)
    if not staged:
        return 0
    artifacts.check_writable(root)
    artifacts.sweep_stale_builds(root)  # what interrupted builds of earlier studies left
    built = 0
    progress = BuildProgress.remote()  # type: ignore[attr-defined]
    for level in levels:
        todo = [s for s in level if artifacts.find(root, s) is None]
        tasks = [
            ray.remote(prepare_stage).options(
                num_cpus=spec.cpu, num_gpus=spec.gpu, max_retries=spec.max_failures,
                name=f"artifact {s.hash} ({s.config.method.name})",
            ).remote(s.config.to_dict(), root, data_root, spec.gpu, progress)
            for s in todo
        ]
        if todo:
            log.info("building %d stage artifact(s): %s", len(todo), ", ".join(
                f"{s.hash} ({s.config.method.name}, {s.config.train.epochs} epochs)"
                for s in todo))
        for stage, folder in zip(todo, _wait(tasks, "stage artifact", progress), strict=True):
            log.info("artifact %s (%s) -> %s", stage.hash, stage.config.method.name, folder)
        built += len(todo)
    one_per_base = {(r.stage.hash, r.stage.checkpoint): r for r in staged
                    if r.stage is not None and wants_features(r)}  # shared by its cells
    warm = [ray.remote(prepare_base).options(
        num_cpus=spec.cpu, num_gpus=spec.gpu,
        name=f"prepare {r.config.method.name} on {key[0]}",
    ).remote(r.config.to_dict(), root, data_root, spec.gpu) for key, r in one_per_base.items()]
    _wait(warm, "feature cache")
    return built


def _wait(tasks: list[Any], what: str, progress: Any = None, poll_s: float = 2.0,
          heartbeat_s: float = 60.0) -> list[Any]:
    """``ray.get`` that prints the builds' epoch lines from ``progress`` as they come, a count
    of the finished tasks when ``heartbeat_s`` passed without a line, and a build error as one
    user error (the failing stage named)."""
    import ray

    started = last_line = time.monotonic()
    pending = list(tasks)
    try:
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_s)
            lines = ray.get(progress.take.remote()) if progress is not None else []
            for line in lines:
                log.info(line)
            now = time.monotonic()
            if lines:
                last_line = now
            elif pending and now - last_line >= heartbeat_s:
                last_line = now
                log.info("%s: %d of %d done after %.0f min (each build's epochs: its task log "
                         "in the Ray dashboard)", what, len(tasks) - len(pending), len(tasks),
                         (now - started) / 60)
    except KeyboardInterrupt:  # SweepInterrupted too: the builds stop and remove their folders
        for task in pending:
            ray.cancel(task)  # a KeyboardInterrupt inside the task: its `finally` runs
        ray.wait(pending, num_returns=len(pending), timeout=CANCEL_WAIT_S)
        raise
    try:
        return ray.get(tasks)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        raise LTRayError(f"building a stage artifact failed: {type(cause).__name__}: "
                         f"{str(cause).splitlines()[-1][:400]}") from None
