"""Stage artifacts: a plain store of stage-1 runs keyed by the hash of their resolved config.

A method that builds on a pretrained model (the GML plug-in, MiSLAS stage 2, RIDE's router and
its distillation) describes that model in the ``pretrained:`` section of its config; resolution
(:mod:`lt_ray.resolution`) resolves it and hashes it. Its run lives in ``<root>/<hash>/``:

* ``checkpoint.pt``, ``config.yaml``, ``metrics.json``: what ``lt-ray train`` writes;
* ``features-<data hash>-<precision>.pt``: the frozen backbone's features of every split (a
  method's ``prepare`` product, added by the orchestrator);
* ``artifact.json``: written last; an artifact without it is incomplete and ignored.

This module stores and finds; training one is the orchestrator's (``experiment``). A run is
trained in a private local folder and published at once (:func:`publish`): a rename on a
local disk, or the files then ``artifact.json`` on an object store. A crashed build therefore
leaves nothing half-written, and any later run finds the artifact and skips the build.

The root is ``--artifacts``, else ``$LT_RAY_ARTIFACTS``, else ``~/.cache/lt-ray/artifacts``;
a study keeps its artifacts on its storage: ``<storage>/artifacts`` (S3 included). Trials on
other nodes read remote artifacts through a local copy (:func:`local_copy`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lt_ray import storage
from lt_ray.errors import ConfigError, LTRayError
from lt_ray.resolution import Resolved

log = logging.getLogger(__name__)

ARTIFACTS_ENV = "LT_RAY_ARTIFACTS"
MARKER = "artifact.json"
CHECKPOINT = "checkpoint.pt"


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


def artifact_dir(root: str, run: Resolved) -> str:
    return storage.join(root, run.hash)


def external_dir(root: str, checkpoint: str) -> str:
    """Where products of a stage read from ``checkpoint`` (trained elsewhere) are kept."""
    digest = hashlib.sha256(str(checkpoint).encode()).hexdigest()[:16]
    return storage.join(root, "external", digest)


BUILDING_PREFIX = ".building-"
HEARTBEAT = ".heartbeat"  # touched by a running build every HEARTBEAT_S seconds
HEARTBEAT_S = 60.0
STALE_BUILD_S = 10 * HEARTBEAT_S  # a build folder without a heartbeat this long is abandoned
INTERRUPTED = ".interrupted"  # left by a build stopped on a signal: no process owns the folder
RESUMABLE_S = 24 * 3600.0  # how long an abandoned build's checkpoint waits for its resume


def working_dir(root: str, run: Resolved) -> Path:
    """A private local folder to train ``run`` in before :func:`publish`."""
    return _local_root(root) / f"{BUILDING_PREFIX}{run.hash}-{uuid.uuid4().hex[:8]}"


def _local_root(root: str) -> Path:
    return Path(root if not storage.is_uri(root) else tempfile.gettempdir())


@contextlib.contextmanager
def heartbeat(work: Path) -> Iterator[None]:
    """Touch ``work``'s heartbeat file every :data:`HEARTBEAT_S` seconds while a build runs, so
    that :func:`sweep_stale_builds` tells a running build from an abandoned one."""
    stop = threading.Event()
    beat = work / HEARTBEAT

    def touch() -> None:
        with contextlib.suppress(OSError):
            work.mkdir(parents=True, exist_ok=True)
            beat.touch()

    def beat_until_stopped() -> None:
        while not stop.wait(HEARTBEAT_S):
            touch()

    touch()  # the first beat before the build starts
    thread = threading.Thread(target=beat_until_stopped, name="lt-ray build heartbeat",
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        beat.unlink(missing_ok=True)  # not published with the artifact


def _idle_s(work: Path, now: float) -> float | None:
    """Seconds since ``work``'s build last showed life (its heartbeat, else the folder);
    infinite for a build stopped on a signal; None when the folder is gone."""
    if (work / INTERRUPTED).exists():
        return float("inf")
    beat = work / HEARTBEAT
    try:
        return now - (beat if beat.exists() else work).stat().st_mtime
    except OSError:
        return None


def sweep_stale_builds(root: str, *, now: float | None = None) -> list[Path]:
    """Remove the ``.building-*`` folders under ``root`` (or the temp folder, for a URI root)
    that no build owns: no heartbeat for :data:`STALE_BUILD_S` (a killed Ray task cannot clean
    up after itself) or stopped on a signal. A folder holding a checkpoint waits
    :data:`RESUMABLE_S` for the build of its stage to resume it
    (:func:`claim_interrupted_build`). Returns the removed folders, each logged."""
    folder = _local_root(root)
    now = time.time() if now is None else now
    removed = []
    for work in sorted(folder.glob(f"{BUILDING_PREFIX}*")) if folder.is_dir() else []:
        idle = _idle_s(work, now)
        if idle is None or not work.is_dir() or idle <= STALE_BUILD_S:
            continue
        if (work / CHECKPOINT).is_file() and _age_s(work, now) <= RESUMABLE_S:
            continue  # its stage's next build resumes from it
        shutil.rmtree(work, ignore_errors=True)
        log.info("removed the stale build folder %s (an interrupted build: %s)", work,
                 "stopped on a signal" if idle == float("inf") else
                 f"no heartbeat for {idle / 60:.0f} min")
        removed.append(work)
    return removed


def _age_s(work: Path, now: float) -> float:
    try:
        return now - (work / CHECKPOINT).stat().st_mtime
    except OSError:
        return 0.0


def claim_interrupted_build(root: str, run: Resolved, *, now: float | None = None) -> Path | None:
    """The folder of an interrupted build of ``run`` that left a checkpoint, renamed to a new
    working folder of the caller (a rename: two builds never claim one folder), or None. The
    caller resumes the training from its checkpoint."""
    folder = _local_root(root)
    now = time.time() if now is None else now
    for work in sorted(folder.glob(f"{BUILDING_PREFIX}{run.hash}-*")) if folder.is_dir() else []:
        idle = _idle_s(work, now)
        if idle is None or idle <= STALE_BUILD_S or not (work / CHECKPOINT).is_file():
            continue
        claimed = working_dir(root, run)
        try:
            os.rename(work, claimed)
        except OSError:
            continue  # another build claimed it first
        (claimed / INTERRUPTED).unlink(missing_ok=True)
        log.info("resuming the interrupted build of artifact %s from %s", run.hash, claimed)
        return claimed
    return None


def mark_interrupted(work: Path) -> None:
    """Mark a build folder as stopped on a signal: the next build of its stage may claim it at
    once (no heartbeat to wait out)."""
    with contextlib.suppress(OSError):
        (work / INTERRUPTED).touch()


def find(root: str, run: Resolved) -> str | None:
    """The complete artifact of ``run`` under ``root``, or None."""
    folder = artifact_dir(root, run)
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


def publish(work: Path, root: str, run: Resolved, files: tuple[str, ...],
            marker: dict[str, Any]) -> str:
    """Publish the run trained in ``work`` as the artifact of ``run``: ``files`` then the
    marker (on an object store), or one rename (on a local disk). Returns its folder."""
    final = artifact_dir(root, run)
    (work / MARKER).write_text(json.dumps(marker))
    if storage.is_uri(root):
        for name in files:
            storage.write_bytes(storage.join(final, name), (work / name).read_bytes())
        storage.write_bytes(storage.join(final, MARKER), (work / MARKER).read_bytes())
        return final
    try:
        os.rename(work, final)
    except OSError:  # another run published it meanwhile
        if find(root, run) is None:
            raise
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


def require(root: str, run: Resolved) -> str:
    """The artifact of ``run``, which must exist (trials never build one)."""
    found = find(root, run)
    if found is None:
        raise ConfigError(
            f"the stage-1 artifact {artifact_dir(root, run)} ({run.config.method.name}) does not "
            "exist: the study's driver builds it before the search (`lt-ray train` builds it too)"
        )
    return found


def describe(run: Resolved) -> dict[str, Any]:
    """What an artifact is, in one small dict (for logs and the study plan)."""
    cfg = run.config
    return {"hash": run.hash, "method": cfg.method.name, "epochs": cfg.train.epochs,
            "dataset": cfg.data.dataset, "imb_factor": cfg.data.imb_factor, "seed": cfg.seed}
