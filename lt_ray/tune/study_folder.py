"""A study's folder ``<storage>/<name>/``: its layout (``study.json``, Tune's ``tune/``), the
study file (name, cells, objective, base, the fingerprint a resume must match, provenance), and
the checks that a new study does not overwrite one and a resumed one is the very same study.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from lt_ray import storage
from lt_ray.errors import LTRayError
from lt_ray.methods import FAMILIES, Row, outputs_declaration
from lt_ray.resolution import Resolved
from lt_ray.results.schema import STUDY_FILE_VERSION
from lt_ray.tune.spec import SweepSpec, cell_label

STUDY_FILE = "study.json"
TUNE_DIR = "tune"  # the study's Tune experiment: <storage>/<study>/tune/


def study_dir_for(location: str | Path, name: str) -> str:
    """``<storage>/<name>``: an absolute local path or a URI (``s3://bucket/prefix/name``)."""
    return storage.join(storage.normalize(location), name)


def with_absolute_data_root(spec: SweepSpec) -> SweepSpec:
    """``data.root`` (in base and as a grid axis) made absolute here, in the driver: Ray Tune
    runs every trial in its own working directory, where a relative path means nothing."""

    def absolute(root: Any) -> Any:
        return str(Path(root).expanduser().resolve()) if isinstance(root, str) and root else root

    base = json.loads(json.dumps(spec.base))
    if isinstance(base.get("data"), dict) and base["data"].get("root"):
        base["data"]["root"] = absolute(base["data"]["root"])
    grid = dict(spec.grid)
    if "data.root" in grid:
        grid["data.root"] = [absolute(v) for v in grid["data.root"]]
    return replace(spec, base=base, grid=grid)


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


def write_study_file(study_dir: str, spec: SweepSpec, provenance: dict[str, Any],
                     artifacts: str) -> None:
    """Write ``study.json`` (a new study, once, before its trials): the study's definition,
    the provenance of the code, and what its methods declare for a reader
    (:func:`declarations`)."""
    storage.write_text(storage.join(study_dir, STUDY_FILE), json.dumps({
        "format_version": STUDY_FILE_VERSION,
        "name": spec.name,
        "description": spec.description,
        "metric": list(spec.metrics),
        "mode": list(spec.modes),
        "base": spec.base,
        "spec": study_fingerprint(spec),
        "provenance": provenance,
        **declarations(spec, artifacts),
    }, indent=1, default=str))


def refresh_declarations(study_dir: str, spec: SweepSpec, artifacts: str) -> None:
    """A resumed study's ``study.json`` with the declarations of the code that resumes it (a
    study begun by an earlier lt-ray gains what it lacked); its definition and provenance are
    kept."""
    saved = read_study_file(study_dir)
    saved.update(declarations(spec, artifacts))
    storage.write_text(storage.join(study_dir, STUDY_FILE),
                       json.dumps(saved, indent=1, default=str))


def declarations(spec: SweepSpec, artifacts: str) -> dict[str, Any]:
    """What ``lt-ray analyze`` reads of a study besides its Parquet: the named outputs of its
    methods (order, label, meaning); per grid cell its values, its label, the comparison-table
    row of each output (:meth:`~lt_ray.resolution.Resolved.rows`) and its stage artifacts for
    the search seed and every repeat seed (whose histories are the bases' learning curves);
    the order of the row groups and where the artifacts live."""
    methods = {spec.cell_config(c).method.name for c in spec.cells()}
    methods.update(v for p in spec.params if p.key == "method.name" for v in p.args[0])
    cells = []
    for cell in spec.cells():
        resolved = spec.resolve_cell(cell)
        by_seed = {resolved.config.seed: resolved}  # the search's own seed, then the repeats'
        for seed in spec.repeat_seeds:
            by_seed.setdefault(seed, spec.resolve_cell(cell, {"seed": seed}))
        stages = [{"seed": seed, "hash": stage.hash, "method": stage.config.method.name,
                   "title": _row_of(stage).name, "epochs": stage.config.train.epochs}
                  for seed, run in by_seed.items() for stage in run.chain()
                  if stage.checkpoint is None]
        cells.append({"id": cell.id, "index": cell.index, "values": cell.values,
                      "label": cell_label(cell.values),
                      "rows": {o: dataclasses.asdict(r) for o, r in resolved.rows().items()},
                      "primary": resolved.primary_output() or "",
                      "stages": stages})
    return {"cells": cells, "outputs": outputs_declaration(methods),
            "families": list(FAMILIES), "artifacts": artifacts}


def _row_of(resolved: Resolved) -> Row:
    """The row of the output a run reports (its primary one)."""
    rows = resolved.rows()
    return rows.get(resolved.primary_output() or "", next(iter(rows.values())))


def read_study_file(study_dir: str) -> dict[str, Any]:
    """The content of a study's ``study.json`` (what the export reads)."""
    marker = storage.join(study_dir, STUDY_FILE)
    if not storage.is_file(marker):
        raise LTRayError(f"{study_dir} holds no lt-ray study ({STUDY_FILE} missing)")
    return json.loads(storage.read_text(marker))
