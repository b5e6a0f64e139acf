"""The orchestrator: one resolved run from its stages to its results on disk.

``run(resolved, out_dir)`` checks the device, builds the data, makes sure the stage-1 model
exists (trains it into the artifact store, :func:`build_artifact`, or reads
``pretrained.checkpoint``), builds the stage-1 :class:`Method` and hands it to the method's
factory, computes or loads the method's per-base product (``MethodSpec.prepare``: the stage's
features, :func:`stage_features`), trains through ``engine.fit`` and writes ``checkpoint.pt``,
``config.yaml`` and ``metrics.json``. ``lt-ray train``, the Ray trainable and the artifact
builds all call it; the config arrives resolved (:mod:`lt_ray.resolution`) and is never
resolved again.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lt_ray import __version__, artifacts, storage
from lt_ray.checkpoint import load_checkpoint, load_resumable, load_weights, save_object
from lt_ray.config import ExperimentConfig
from lt_ray.context import LTContext
from lt_ray.data import LTData, build_dataset
from lt_ray.engine import FitResult, Reporter, encode_splits, eval_precision, fit, resolve_device
from lt_ray.errors import CheckpointError, ConfigError
from lt_ray.methods import Method
from lt_ray.resolution import Resolved, data_key

log = logging.getLogger(__name__)
METRICS_FILE, CHECKPOINT_FILE, CONFIG_FILE = "metrics.json", "checkpoint.pt", "config.yaml"
PROGRESS_FILE = "progress.jsonl"  # one JSON line per evaluated epoch, appended while training
RUN_FILES = (METRICS_FILE, CHECKPOINT_FILE, CONFIG_FILE, PROGRESS_FILE)


def run_files(out_dir: Path) -> list[Path]:
    """The files a run writes into its folder (what --overwrite replaces)."""
    return [out_dir / name for name in RUN_FILES]


def runtime_device(cfg: ExperimentConfig) -> torch.device:
    """The training device on this machine; a ConfigError when ``train.device`` asks for CUDA
    (or a CUDA device index) this machine does not have."""
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            raise ConfigError(
                f"train.device={cfg.train.device!r} but this machine has {count} CUDA "
                f"device(s) (cuda:0..cuda:{count - 1}); use cuda or auto"
            )
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- stages ----------------------------------------------------------------------------------


def stage_weights(stage: Resolved, root: str) -> Path:
    """The checkpoint file of a stage: its artifact's (a local copy), or the file it was read
    from (``pretrained.checkpoint``)."""
    if stage.checkpoint is not None:
        return Path(stage.checkpoint)
    return artifacts.local_copy(artifacts.require(root, stage))


def load_stage_weights(base: Method, path: str | Path, num_classes: int) -> None:
    """Load the checkpoint at ``path`` into the stage-1 method ``base``: an lt-ray checkpoint
    into the method, a foreign state dict into its network (``base.model``, keys mapped); a
    checkpoint of another class count is refused."""
    saved = load_checkpoint(path)
    counts = saved.get("class_counts")
    if counts is not None and len(counts) != num_classes:
        raise CheckpointError(
            f"base checkpoint {path} has {len(counts)} classes, the data {num_classes}; "
            "use a base trained on the same dataset"
        )
    target = base.model if saved["format_version"] is None else base  # foreign: the net
    load_weights(target, saved["state_dict"], source=str(path))


def load_stage(stage: Resolved, device: torch.device, class_counts: torch.Tensor,
               root: str) -> Method:
    """The stage-1 method ``stage``, built and with its trained weights."""
    base = build_method(stage, None, device, class_counts=class_counts, load_weights=False)
    load_stage_weights(base, stage_weights(stage, root), len(class_counts))
    return base


def feature_folder(run: Resolved, root: str) -> str:
    """Where the features of ``run``'s stage are kept: beside the artifact whose backbone they
    come from (a stage that shares its own stage's backbone, e.g. a GML run, passes it on), or
    beside nothing for a stage read from a file trained elsewhere."""
    owner = run.stage
    assert owner is not None
    while (owner.checkpoint is None and owner.stage is not None and owner.spec.stage is not None
           and owner.spec.stage.shares_backbone):
        owner = owner.stage
    if owner.checkpoint is not None:
        return artifacts.external_dir(root, owner.checkpoint)
    return artifacts.artifact_dir(root, owner)


def wants_features(run: Resolved) -> bool:
    """Whether ``run``'s method asks for its stage's features (``MethodSpec.prepare``)."""
    return run.stage is not None and run.spec.prepare is not None and run.spec.prepare(run.args)


def stage_features(run: Resolved, base: Method, data: LTData, device: torch.device,
                   root: str) -> dict[str, torch.Tensor] | None:
    """The per-base product of ``run``'s method: the pooled features of every split of its
    stage ``base`` (None when the method does not ask for them). Computed once per distinct
    base and data (:func:`engine.encode_splits`), stored as
    ``<folder>/features-<data hash>-<precision>.pt``, loaded by every later run."""
    if not wants_features(run):
        return None
    cfg = run.config
    path = storage.join(feature_folder(run, root),
                        f"features-{data_key(cfg.data)}-{eval_precision(cfg.train)}.pt")
    if storage.is_file(path):
        cached = torch.load(io.BytesIO(storage.read_bytes(path)), weights_only=True)
        if all(len(cached[s]) == len(getattr(data, s)) for s in cached):
            return cached
    features = encode_splits(base, data, cfg.train, device)
    buffer = io.BytesIO()
    save_object(features, buffer)
    storage.write_bytes(path, buffer.getvalue())
    log.info("cached %s features of %d images in %s", base.__class__.__name__,
             sum(len(v) for v in features.values()), path)
    return features


def prepare(run: Resolved, data: LTData, device: torch.device, root: str) -> None:
    """The per-base step a study's driver runs once per distinct stage before its trials
    (which then load the product): the method's ``prepare`` work for ``run``'s stage."""
    if wants_features(run):
        assert run.stage is not None
        base = load_stage(run.stage, device, data.class_counts.cpu(), root)
        stage_features(run, base, data, device, root)


def build_method(run: Resolved, data: LTData | None, device: torch.device, *,
                 class_counts: torch.Tensor | None = None, root: str | None = None,
                 load_weights: bool = True) -> Method:
    """The method of ``run`` for ``data`` (or, restoring a checkpoint without data, for the
    given class counts). Its stage 1 is built first and handed to the factory: with its
    trained weights (from the artifact store ``root``) when ``load_weights``, else the
    structure only (a state dict is loaded over the whole method next)."""
    counts = data.class_counts.cpu() if data is not None else torch.as_tensor(class_counts)
    base = None
    features = None
    if run.stage is not None:
        if load_weights:
            root = artifacts.resolve_root(root)
            base = load_stage(run.stage, device, counts, root)
            if data is not None:
                features = stage_features(run, base, data, device, root)
        else:
            base = build_method(run.stage, None, device, class_counts=counts, load_weights=False)
    ctx = LTContext(len(counts), counts, device, data=data, features=features)
    return run.spec.build(run.config, ctx, run.args, base)


def build_artifact(root: str, stage: Resolved, *, data_root: str | None = None,
                   data: LTData | None = None) -> str:
    """Train ``stage`` and publish it as an artifact under ``root``; returns its folder.
    Skips the training when the artifact already exists."""
    found = artifacts.find(root, stage)
    if found is not None:
        return found
    artifacts.check_writable(root)
    claimed = artifacts.claim_interrupted_build(root, stage)  # before the sweep removes it
    artifacts.sweep_stale_builds(root)
    work = claimed or artifacts.working_dir(root, stage)
    log.info("building artifact %s (%s)", artifacts.artifact_dir(root, stage),
             stage.config.method.name)
    keep = False
    try:
        with artifacts.heartbeat(work):
            result = run(stage, work, data_root=data_root, data=data, artifacts=root,
                         resume=claimed is not None)
        marker = {"hash": stage.hash, "method": stage.config.method.name,
                  "fulltest_acc": result.metrics.get("fulltest_acc")}
        return artifacts.publish(work, root, stage, (CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE),
                                 marker)
    except (KeyboardInterrupt, SystemExit):  # stopped (a signal, Ray's shutdown of the worker):
        # an epoch checkpoint is kept for the next build to resume
        keep = (work / CHECKPOINT_FILE).is_file()
        if keep:
            artifacts.mark_interrupted(work)
            log.info("build of artifact %s stopped: its last epoch checkpoint stays in %s for "
                     "the next build of this stage to resume", stage.hash, work)
        raise
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def ensure_stages(resolved: Resolved, root: str | None, *, data_root: str | None,
                  data: LTData | None, build: bool) -> str:
    """The artifact root, with the stage-1 run of ``resolved`` (and its own stages) in it; a stage
    read from a checkpoint needs nothing. With ``build=False`` (a Ray trial: the driver built
    them) a missing artifact is an error."""
    root = artifacts.resolve_root(root)
    stage = resolved.stage
    if stage is None or stage.checkpoint is not None:
        return root
    if not build:
        artifacts.require(root, stage)
        return root
    same_data = data is not None and data_key(stage.config.data) == data_key(resolved.config.data)
    build_artifact(root, stage, data_root=data_root, data=data if same_data else None)
    return root


def build_run(resolved: Resolved, device: torch.device, *, data: LTData | None = None,
              data_root: str | None = None, artifacts: str | None = None,
              build_artifacts: bool = True) -> tuple[Method, LTData]:
    """The method of ``resolved`` on ``device``, ready to train, and its data: the data built
    (unless given), the stages built or read, the seed set. What :func:`run` trains, and what
    the GML comparison (:mod:`lt_ray.retrain`) trains and keeps."""
    if data is None:
        data = build_dataset(resolved.config.data, data_root)
    root = ensure_stages(resolved, artifacts, data_root=data_root, data=data,
                         build=build_artifacts)
    seed_everything(resolved.config.seed)
    return build_method(resolved, data, device, root=root), data


def run(
    resolved: Resolved,
    out_dir: Path | None,
    *,
    data_root: str | None = None,
    report: Reporter | None = None,
    resume: bool = False,
    data: LTData | None = None,
    artifacts: str | None = None,
    build_artifacts: bool = True,
) -> FitResult:
    """Check the device, build data, stages and method, train, and write results into
    ``out_dir``.

    The ``pretrained:`` stage is trained first into the artifact root ``artifacts`` (default
    :func:`lt_ray.artifacts.default_root`), unless it is there already; with
    ``build_artifacts=False`` (a Ray trial: the driver built them) a missing one is an error.

    ``out_dir`` receives ``checkpoint.pt`` (resumable, updated during training),
    ``config.yaml``, ``progress.jsonl`` (a line per evaluated epoch, as it ends: what a live
    view reads, :func:`read_progress`) and, at the end, ``metrics.json``; the first and the
    last record the resolved config.
    A ``train.device`` this machine lacks is a ConfigError raised here, before any data is
    read or file written.
    """
    cfg = resolved.config
    device = runtime_device(cfg)
    if resume and out_dir is not None and (out_dir / CHECKPOINT_FILE).is_file():
        load_resumable(out_dir / CHECKPOINT_FILE)  # a refused resume reads and writes nothing
    method, data = build_run(resolved, device, data=data, data_root=data_root,
                             artifacts=artifacts, build_artifacts=build_artifacts)
    checkpoint = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        checkpoint = out_dir / CHECKPOINT_FILE
        report = progress_reporter(out_dir / PROGRESS_FILE, report, fresh=not resume)
    result = fit(method, data, cfg, report=report, checkpoint_path=checkpoint, resume=resume)
    if out_dir is not None:
        write_metrics(out_dir / METRICS_FILE, cfg, data, result)
    return result


def progress_reporter(path: Path, then: Reporter | None, *, fresh: bool) -> Reporter:
    """A reporter that appends each evaluated epoch's record to ``path`` as one JSON line
    (flushed at once), then calls ``then``. ``fresh``: an earlier run's lines are dropped."""
    if fresh:
        path.unlink(missing_ok=True)

    def report(record: dict[str, Any], ckpt: Path | None,
               per_class: dict[str, list[float]]) -> None:
        line = json.dumps({k: _json_number(v) for k, v in record.items()})
        with path.open("a") as f:
            f.write(line + "\n")
        if then is not None:
            then(record, ckpt, per_class)

    return report


def read_progress(out_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluated epochs of the run in ``out_dir`` so far (its ``progress.jsonl``), in epoch
    order; a resumed run's repeated epochs count once (the later line). A line being written
    (no newline yet) is left for the next read."""
    path = Path(out_dir) / PROGRESS_FILE
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def result_document(cfg: ExperimentConfig, data: LTData, metrics: dict[str, Any],
                    per_class: dict[str, list[float]],
                    history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The one document of a run's results (``metrics.json``): its final metrics, per-class
    recall, the data's classes and counts, the per-epoch history (a Ray trial's copy leaves it
    out: Tune's own results hold it), the resolved config and the versions."""
    doc: dict[str, Any] = {
        **{k: _json_number(v) for k, v in metrics.items()},
        "per_class_recall": {k: [_json_number(x) for x in v] for k, v in per_class.items()},
        "train_class_counts": data.class_counts.tolist(),
        "class_names": list(data.class_names),
        "num_train_images": int(data.class_counts.sum()),
    }
    if history is not None:
        doc["history"] = [{k: _json_number(v) for k, v in r.items()} for r in history]
    doc.update({"config": cfg.to_dict(), "lt_ray_version": __version__,
                "torch_version": torch.__version__})
    return doc


def write_result(path: Path, document: dict[str, Any]) -> None:
    """Write a result document atomically (temp file + rename)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=1))
    tmp.replace(path)


def write_metrics(path: Path, cfg: ExperimentConfig, data: LTData, result: FitResult) -> None:
    write_result(path, result_document(cfg, data, result.metrics, result.per_class,
                                       result.history))


def _json_number(value: Any) -> Any:
    """NaN (an empty shot group) becomes null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
