"""What the page offers to pick: checkpoints (run folders and stage artifacts), studies, and
the shipped study files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

import lt_ray
from lt_ray import storage
from lt_ray.artifacts import CHECKPOINT, MARKER
from lt_ray.errors import LTRayError
from lt_ray.experiment import CONFIG_FILE
from lt_ray.tune.study_folder import STUDY_FILE

SEARCH_SPACES = "search_spaces"


@dataclass(frozen=True)
class Places:
    """Where the page reads and writes: run folders, studies, artifacts, the data."""

    runs: Path  # the Train tab's run folders (absolute)
    storage: str  # the studies' storage: a folder or URI (lt-ray sweep --storage)
    artifacts: str  # the stage artifacts' root
    data_root: str | None
    work: Path  # per-session scratch (reports), removed when the server stops

    def artifact_roots(self) -> list[str]:
        """The artifacts of ``lt-ray train`` and those of the studies in the storage."""
        roots = [self.artifacts, storage.join(self.storage, "artifacts")]
        return list(dict.fromkeys(roots))


def _run_label(folder: Path, runs: Path) -> str:
    try:
        cfg = yaml.safe_load((folder / CONFIG_FILE).read_text()) or {}
        data, method = cfg.get("data") or {}, cfg.get("method") or {}
        factor = data.get("imb_factor")
        factor = f"{factor:g}" if isinstance(factor, int | float) else factor
        what = (f"{method.get('name')} on {data.get('dataset')} IF {factor}, "
                f"{(cfg.get('train') or {}).get('epochs')} epochs")
    except (OSError, yaml.YAMLError, AttributeError):
        what = "run"
    return f"run {folder.relative_to(runs)}: {what}"


def checkpoints(places: Places) -> list[tuple[str, str]]:
    """(label, path) of every checkpoint: run folders under ``runs`` (two levels deep), then
    the local artifact roots' finished artifacts (``artifact.json`` beside ``checkpoint.pt``)."""
    found: list[tuple[str, str]] = []
    if places.runs.is_dir():
        for ckpt in sorted([*places.runs.glob(f"*/{CHECKPOINT}"),
                            *places.runs.glob(f"*/*/{CHECKPOINT}")]):
            found.append((_run_label(ckpt.parent, places.runs), str(ckpt.parent)))
    for root in places.artifact_roots():
        if storage.is_uri(root) or not Path(root).is_dir():
            continue
        for marker in sorted(Path(root).glob(f"*/{MARKER}")):
            if not (marker.parent / CHECKPOINT).is_file():
                continue
            try:
                info = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            acc = info.get("fulltest_acc")
            detail = f", full-test acc {100 * acc:.1f}%" if isinstance(acc, int | float) else ""
            found.append((f"artifact {info.get('method')} {marker.parent.name}{detail}",
                          str(marker.parent)))
    return found


def studies(places: Places, extra: tuple[Path, ...] = ()) -> list[str]:
    """Study folders in the storage (local) and in ``extra`` folders (committed studies)."""
    found = []
    for root in [places.storage, *map(str, extra)]:
        if storage.is_uri(root) or not Path(root).is_dir():
            continue
        found += sorted(str(p.parent) for p in Path(root).glob(f"*/{STUDY_FILE}"))
    return found


def study_files() -> list[str]:
    """The shipped study files: ``search_spaces/*.yaml`` of the working folder, else of the
    checkout lt-ray is installed from."""
    for folder in (Path.cwd() / SEARCH_SPACES,
                   Path(lt_ray.__file__).resolve().parents[1] / SEARCH_SPACES):
        if folder.is_dir():
            return [str(p) for p in sorted(folder.glob("*.yaml"))]
    return []


def _first_start(study_dir: str) -> tuple[str, str]:
    """When the study's first trial started (ISO text; "" if unknown), then its name: a folder
    of studies opens in the order they ran (the order their report was made in)."""
    try:
        started = pq.read_table(Path(study_dir) / "trials.parquet",
                                columns=["started_at"]).column(0).to_pylist()
    except (OSError, KeyError, ValueError, pa.ArrowException):
        started = []
    return min((str(t) for t in started if t is not None), default=""), Path(study_dir).name


def expand_studies(chosen: list[str]) -> list[str]:
    """The chosen locations, a folder of studies (e.g. ``analysis/cpu30/studies``) standing
    for every study in it, in the order they ran; an LTRayError for a location that holds no
    study."""
    out: list[str] = []
    for location in chosen:
        location = location.strip()
        if not location:
            continue
        if storage.is_uri(location) or storage.is_file(storage.join(location, STUDY_FILE)):
            out.append(location)
            continue
        inner = sorted((str(p.parent) for p in Path(location).glob(f"*/{STUDY_FILE}")),
                       key=_first_start)
        if not inner:
            raise LTRayError(f"{location} holds no study ({STUDY_FILE}) and no folder of "
                             "studies; pick a study folder of lt-ray sweep's storage")
        out += inner
    if not out:
        raise LTRayError("pick a study folder (or type one, or a URI) first")
    return out
