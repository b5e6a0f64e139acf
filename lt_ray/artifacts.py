"""Stage artifacts: a stage-1 run, trained once per distinct resolved config and reused.

A method that builds on a pretrained model (the GML plug-in, MiSLAS stage 2, RIDE's router and
its distillation) describes that model in the ``pretrained:`` section of its config, a partial
experiment config that inherits the trial's ``data`` section, ``seed`` and ``model.arch``
unless it sets them. The resolved stage-1 config is hashed (:func:`config_hash`); its run
lives in ``<root>/<hash>/``:

* ``checkpoint.pt``, ``config.yaml``, ``metrics.json``: what ``lt-ray train`` writes;
* ``features-<data hash>.pt``: the frozen backbone's features of every split (a cache, added
  by the methods that train on features);
* ``artifact.json``: written last; an artifact without it is incomplete and ignored.

A build trains in a private local folder and publishes it at once: a rename on a local disk,
or the files then ``artifact.json`` on an object store. A crashed build therefore leaves
nothing half-written, and any later run finds the artifact and skips the build.

The root is ``--artifacts``, else ``$LT_RAY_ARTIFACTS``, else ``~/.cache/lt-ray/artifacts``;
a study keeps its artifacts on its storage: ``<storage>/artifacts`` (S3 included). Trials on
other nodes read remote artifacts through a local copy (:func:`local_copy`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from lt_ray import storage
from lt_ray.config import ExperimentConfig
from lt_ray.errors import ConfigError, LTRayError

log = logging.getLogger(__name__)

ARTIFACTS_ENV = "LT_RAY_ARTIFACTS"
MARKER = "artifact.json"
CHECKPOINT = "checkpoint.pt"
#: Fields that do not change the trained model, left out of the hash: where and how a run is
#: executed or checkpointed, and where its data lies.
RUN_ONLY_FIELDS = (
    ("data", "root"), ("data", "download"), ("train", "device"), ("train", "eval_every"),
    ("train", "eval_batch_size"), ("train", "checkpoint_every"),
)


def pretrained_config(cfg: ExperimentConfig) -> ExperimentConfig | None:
    """The resolved stage-1 config of ``cfg``'s ``pretrained:`` section (None without one). It
    inherits ``cfg``'s ``data`` section, ``seed`` and ``model.arch`` unless it sets them."""
    from lt_ray.config import deep_merge
    from lt_ray.experiment import resolve

    if cfg.pretrained is None:
        return None
    inherited = {"data": cfg.to_dict()["data"], "seed": cfg.seed,
                 "model": {"arch": cfg.model.arch}}
    return resolve(ExperimentConfig.from_dict(deep_merge(inherited, cfg.pretrained)))


def data_key(data: Any) -> str:
    """A hash of what defines a dataset's splits (not where its files lie)."""
    raw = {k: v for k, v in dataclasses.asdict(data).items() if k not in ("root", "download")}
    text = json.dumps(raw, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_root() -> str:
    """``$LT_RAY_ARTIFACTS``, else ``~/.cache/lt-ray/artifacts``."""
    env = os.environ.get(ARTIFACTS_ENV)
    if env and env.strip():
        return storage.normalize(env)
    return storage.normalize(Path("~/.cache/lt-ray/artifacts").expanduser())


def resolve_root(root: str | None) -> str:
    return storage.normalize(root) if root else default_root()


def study_root(study_storage: str) -> str:
    """Where a study keeps its artifacts: ``<storage>/artifacts`` (shared with later studies)."""
    return storage.join(storage.normalize(study_storage), "artifacts")


def config_hash(cfg: ExperimentConfig) -> str:
    """16 hex digits of the SHA-256 of the resolved config, without :data:`RUN_ONLY_FIELDS`."""
    from lt_ray.experiment import resolve

    raw = resolve(cfg).to_dict()
    for section, key in RUN_ONLY_FIELDS:
        raw.get(section, {}).pop(key, None)
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def artifact_dir(root: str, cfg: ExperimentConfig) -> str:
    return storage.join(root, config_hash(cfg))


def find(root: str, cfg: ExperimentConfig) -> str | None:
    """The complete artifact of ``cfg`` under ``root``, or None."""
    folder = artifact_dir(root, cfg)
    try:
        return folder if storage.is_file(storage.join(folder, MARKER)) else None
    except OSError as exc:
        raise LTRayError(f"cannot read the artifact folder {root}: {exc}") from None


def check_writable(root: str) -> None:
    """Fail before any training when ``root`` cannot take an artifact."""
    probe = storage.join(root, f".write-test-{uuid.uuid4().hex}")
    try:
        storage.makedirs(root)
        storage.write_text(probe, "ok")
        storage.remove_tree(probe)
    except OSError as exc:
        raise LTRayError(
            f"the artifact folder {root} is not writable ({exc}); choose another with "
            f"--artifacts or ${ARTIFACTS_ENV}, or fix its permissions"
        ) from None


def build(root: str, cfg: ExperimentConfig, *, data_root: str | None = None,
          data: Any = None) -> str:
    """Train ``cfg`` (a resolved stage-1 config) and publish it as an artifact; returns its
    folder. Skips the training when the artifact already exists."""
    from lt_ray.experiment import CONFIG_FILE, METRICS_FILE, run

    found = find(root, cfg)
    if found is not None:
        return found
    check_writable(root)
    final = artifact_dir(root, cfg)
    local_root = root if not storage.is_uri(root) else tempfile.gettempdir()
    work = Path(local_root) / f".building-{config_hash(cfg)}-{uuid.uuid4().hex[:8]}"
    log.info("building artifact %s (%s)", final, cfg.method.name)
    try:
        result = run(cfg, work, data_root=data_root, data=data, artifacts=root)
        marker = {"hash": config_hash(cfg), "method": cfg.method.name,
                  "fulltest_acc": result.metrics.get("fulltest_acc")}
        (work / MARKER).write_text(json.dumps(marker))
        if storage.is_uri(root):
            for name in (CHECKPOINT, CONFIG_FILE, METRICS_FILE):
                storage.write_bytes(storage.join(final, name), (work / name).read_bytes())
            storage.write_bytes(storage.join(final, MARKER), (work / MARKER).read_bytes())
        else:
            try:
                os.rename(work, final)
            except OSError:  # another run published it meanwhile
                if find(root, cfg) is None:
                    raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def local_copy(folder: str, name: str = CHECKPOINT) -> Path:
    """A local path of ``folder/name``: the file itself on a local disk, else a copy in the
    user cache (downloaded once per node)."""
    source = storage.join(folder, name)
    if not storage.is_uri(folder):
        return Path(source)
    cache = Path("~/.cache/lt-ray/artifact-copies").expanduser() / Path(folder).name
    target = cache / name
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{name}.{uuid.uuid4().hex}"
        tmp.write_bytes(storage.read_bytes(source))
        tmp.replace(target)
    return target


def require(root: str, cfg: ExperimentConfig) -> str:
    """The artifact of ``cfg``, which must exist (trials never build one)."""
    found = find(root, cfg)
    if found is None:
        raise ConfigError(
            f"the stage-1 artifact {artifact_dir(root, cfg)} ({cfg.method.name}) does not exist: "
            "the study's driver builds it before the search (`lt-ray train` builds it too)"
        )
    return found


def describe(cfg: ExperimentConfig) -> dict[str, Any]:
    """What an artifact is, in one small dict (for logs and the study plan)."""
    return {"hash": config_hash(cfg), "method": cfg.method.name, "epochs": cfg.train.epochs,
            "dataset": cfg.data.dataset, "imb_factor": cfg.data.imb_factor, "seed": cfg.seed}
