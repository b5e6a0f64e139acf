"""The Ray Tune function trainable: one trial = one ``experiment.run`` with Tune reporting.

Every evaluated epoch is reported with ``tune.report`` (flat ``{split}_{metric}`` values, the
device the trial trains on) and the resumable checkpoint; the last report also carries the
run's result document, ``metrics.json`` (per-class recall, class names, train counts, the
resolved config; :func:`lt_ray.experiment.result_document`), inside its checkpoint, which the
Parquet export reads. A trial restarted by Tune (a lost node or actor) continues from
``tune.get_checkpoint()``; if that checkpoint is gone from storage (Tune deletes a trial's
older checkpoint as soon as a newer one is reported, and a driver killed before its next state
snapshot restores the older one), the trial starts over and says so in its log: both when Tune
restores the trial (:class:`RestartWhenCheckpointGone`, a mixin of the trainable) and when the
run copies the checkpoint (:func:`restore_checkpoint`).

An error inside the run (NaN loss, missing data, a bad value) is deterministic: retrying it
would fail again. The trial therefore reports it under ``FAILED_KEY`` and ends, so Tune's
``max_failures`` retries only trials lost with a node or an actor, or whose report could not
reach the storage (:class:`StorageIOError`, re-raised to Tune). Optuna records the trial as
FAIL and ``trials.parquet`` as ``failed`` with the message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from lt_ray.config import ExperimentConfig
from lt_ray.data import build_dataset
from lt_ray.errors import DataError
from lt_ray.experiment import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    build_artifact,
    prepare,
    result_document,
    run,
    write_result,
)
from lt_ray.resolution import resolve
from lt_ray.tune.build_progress import build_lines
from lt_ray.tune.search import CELL_KEY, FAILED_KEY
from lt_ray.tune.trial_config import trial_config

log = logging.getLogger(__name__)


class StorageIOError(Exception):
    """Tune could not write a report or checkpoint to the study storage: not the run's fault,
    so it goes to Tune (which retries the trial up to ``max_failures``)."""


class RestartWhenCheckpointGone:
    """Mixin of the study's Tune trainable: restoring a trial whose checkpoint is gone from the
    storage starts it over (Tune's own restore raises, and its retries would all fail the same
    way, failing the trial)."""

    def restore(self, checkpoint_path: Any) -> Any:
        checkpoint = getattr(checkpoint_path, "checkpoint", None)
        if checkpoint is not None and not _exists(checkpoint):
            log.warning("checkpoint %s is no longer in the storage: the trial starts over",
                        checkpoint.path)
            return None
        return super().restore(checkpoint_path)  # type: ignore[misc]


def _exists(checkpoint: Any) -> bool:
    import pyarrow.fs

    info = checkpoint.filesystem.get_file_info(checkpoint.path)
    return info.type != pyarrow.fs.FileType.NotFound


def trial_device(requested: str, gpus: float) -> str:
    """The device a trial trains on: the GPU Ray assigned it, the CPU when it asked for none.

    Ray exposes the assigned GPU(s) through CUDA_VISIBLE_DEVICES, so the first visible CUDA
    device is the trial's own. ``auto`` on a node without CUDA (or with a fake GPU count)
    trains on the CPU; an explicit ``cuda`` there fails the trial with a clear error.
    """
    if gpus <= 0 or requested == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda:0"
    return "cpu" if requested == "auto" else requested


def train_trial(
    config: dict[str, Any],
    *,
    base: dict[str, Any],
    cells: list[dict[str, Any]],
    data_root: str | None,
    resources: dict[str, float],
    objective: list[str],
    artifacts: str,
) -> None:
    """Tune entry point. ``config`` holds the searched dotted keys and the trial's cell index;
    ``base`` and ``cells`` are the study's fixed config and grid values (paths absolute)."""
    node = socket.gethostname()
    try:
        _train(config, base, cells, data_root, resources, artifacts)
    except StorageIOError as exc:
        raise exc.__cause__ or exc from None
    except Exception as exc:  # noqa: BLE001 - every error of the run is reported, not retried
        message = f"{type(exc).__name__}: {exc}".strip()
        tune.report({FAILED_KEY: message[:2000], "node": node,
                     **{m: float("nan") for m in objective}})


#: Tune builds the function trainable's class with these mixins first (``__mixins__``).
train_trial.__mixins__ = (RestartWhenCheckpointGone,)  # type: ignore[attr-defined]


def _train(config: dict[str, Any], base: dict[str, Any], cells: list[dict[str, Any]],
           data_root: str | None, resources: dict[str, float], artifacts: str) -> None:
    cell = cells[int(config[CELL_KEY])]
    searched = {k: v for k, v in config.items() if not k.startswith("_")}  # not _cell etc.
    cfg = trial_config(base, cell, searched)
    device = trial_device(cfg.train.device, float(resources.get("gpu", 0)))
    resolved = resolve(cfg.replace({"train.device": device}))
    cfg = resolved.config
    data = load_trial_data(cfg, data_root)
    work = Path(tempfile.mkdtemp(prefix="lt-ray-trial-"))
    resume = restore_checkpoint(tune.get_checkpoint(), work)

    def report(record: dict[str, Any], checkpoint: Path | None,
               per_class: dict[str, list[float]]) -> None:
        metrics = {k: v for k, v in record.items() if isinstance(v, (int, float))}
        metrics["device"] = device
        if device.startswith("cuda"):
            import torch

            metrics["gpu_name"] = torch.cuda.get_device_name(torch.device(device))
        if checkpoint is None:
            _report(metrics, None)
            return
        with tempfile.TemporaryDirectory(prefix="lt-ray-ckpt-") as folder:
            shutil.copy2(checkpoint, Path(folder) / CHECKPOINT_FILE)
            if "fulltest_acc" in record:  # the final evaluation (fulltest: last epoch only)
                write_result(Path(folder) / METRICS_FILE,
                             result_document(cfg, data, metrics, per_class))
            _report(metrics, tune.Checkpoint.from_directory(folder))

    try:
        run(resolved, work, data=data, report=report, resume=resume, artifacts=artifacts,
            build_artifacts=False)  # the driver built them
    finally:
        shutil.rmtree(work, ignore_errors=True)


def restore_checkpoint(previous: Any, work: Path) -> bool:
    """Copy Tune's checkpoint of this trial into ``work``; False when there is none to resume
    from (a new trial, or a checkpoint that is no longer in the storage)."""
    if previous is None:
        return False
    try:
        with previous.as_directory() as folder:
            shutil.copy2(Path(folder) / CHECKPOINT_FILE, work / CHECKPOINT_FILE)
    except (OSError, ValueError) as exc:  # pyarrow reports a missing S3 prefix as either
        log.warning("checkpoint %s is no longer in the storage (%s): the trial starts over",
                    previous.path, exc)
        (work / CHECKPOINT_FILE).unlink(missing_ok=True)
        return False
    return True


def _report(metrics: dict[str, Any], checkpoint: Any) -> None:
    try:
        tune.report(metrics, checkpoint=checkpoint)
    except Exception as exc:  # noqa: BLE001 - storage or Tune session trouble, not the run's
        raise StorageIOError(str(exc)) from exc


def prepare_stage(stage: dict[str, Any], root: str, data_root: str | None,
                  gpus: float, progress: Any = None) -> str:
    """A Ray task of the driver: build one stage-1 artifact (skipped when it exists); its epoch
    lines go to the task's log and to the driver's ``progress`` actor."""
    cfg = ExperimentConfig.from_dict(stage)
    cfg = cfg.replace({"train.device": trial_device(cfg.train.device, gpus)})  # not hashed
    resolved = resolve(cfg)
    lines = (build_lines(f"artifact {resolved.hash} ({cfg.method.name})", progress)
             if progress is not None else contextlib.nullcontext())
    with lines:
        return build_artifact(root, resolved, data=load_trial_data(cfg, data_root))


def prepare_base(raw: dict[str, Any], root: str, data_root: str | None, gpus: float) -> str:
    """A Ray task of the driver: the ``prepare`` step of a cell's method on its stage (GML's
    feature cache), once per distinct base, so that every trial loads its product."""
    import torch

    cfg = ExperimentConfig.from_dict(raw)
    resolved = resolve(cfg.replace({"train.device": trial_device(cfg.train.device, gpus)}))
    device = torch.device(resolved.config.train.device)
    prepare(resolved, load_trial_data(resolved.config, data_root), device, root)
    return resolved.config.method.name


def load_trial_data(cfg: ExperimentConfig, data_root: str | None) -> Any:
    """The trial's dataset, never downloaded here: the driver prepared it. A node without the
    data folder fails the trial with an error naming the node and the folder."""
    try:
        return build_dataset(dataclasses.replace(cfg.data, download=False), data_root)
    except DataError as exc:
        raise DataError(
            f"on node {socket.gethostname()}: {exc} (trials never download: put the data on "
            "every node at the same absolute path, e.g. with cluster.yaml's setup_commands)"
        ) from None


def _none_if_nan(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x
