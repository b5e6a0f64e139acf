"""Load study folders (local or URI) for analysis and check what the user asked for.

Everything here only reads: the three Parquet tables (:func:`lt_ray.results.read_study`) and
``study.json``. Every bad request raises :class:`~lt_ray.errors.LTRayError` before anything is
written.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lt_ray import storage
from lt_ray.errors import LTRayError
from lt_ray.metrics import parse_metric_name
from lt_ray.results import StudyTables, read_study
from lt_ray.results import schema as S

STUDY_FORMAT_VERSION = S.STUDY_FILE_VERSION
STUDY_FILE = "study.json"  # written by the sweep driver (lt_ray.tune.study_folder.STUDY_FILE)
DEFAULT_METRIC = "val_hm"
DEFAULT_MODE = "max"
DEFAULT_GROUP_BY: tuple[str, ...] = (S.STUDY, S.CELL)
FORMATS: tuple[str, ...] = ("md", "csv", "tex")


@dataclass(frozen=True)
class Study:
    """One study folder: its tables and the content of its ``study.json`` (``{}`` if absent)."""

    path: str
    name: str
    tables: StudyTables
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """``[(metric, mode), ...]`` from study.json; ``[("val_hm", "max")]`` without it."""
        metrics = _as_list(self.meta.get("metric")) or [DEFAULT_METRIC]
        modes = _as_list(self.meta.get("mode"))
        modes = modes + [DEFAULT_MODE] * (len(metrics) - len(modes))
        return list(zip(metrics, modes, strict=False))


@dataclass(frozen=True)
class DeclaredOutputs:
    """The named outputs the studies' methods declared (``study.json``'s ``outputs``): their
    order, figure labels and, per method, one legend line for the tables."""

    order: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    legends: dict[str, str] = field(default_factory=dict)  # method -> its outputs explained
    by_method: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def sort(self, names: set[str]) -> list[str]:
        """``names`` in declared order (undeclared ones last, by name)."""
        rank = {name: i for i, name in enumerate(self.order)}
        return sorted(names, key=lambda o: (rank.get(o, len(rank)), o))


def declared_outputs(studies: Sequence[Study]) -> DeclaredOutputs:
    """The output declarations of every study, merged (a study of an older lt-ray has none:
    its outputs then sort by name, labelled by name)."""
    order: dict[str, None] = {}
    labels: dict[str, str] = {}
    legends: dict[str, str] = {}
    by_method: dict[str, tuple[str, ...]] = {}
    for study in studies:
        declared = study.meta.get("outputs")
        if not isinstance(declared, dict):
            continue
        for method, outputs in declared.items():
            if not isinstance(outputs, list):
                continue
            items = [o for o in outputs if isinstance(o, dict) and isinstance(o.get("name"), str)]
            for o in items:
                order.setdefault(o["name"])
                labels.setdefault(o["name"], str(o.get("label") or o["name"]))
            legends.setdefault(str(method), ", ".join(
                f"`{o['name']}` = {o.get('meaning', '')}" for o in items))
            by_method.setdefault(str(method), tuple(o["name"] for o in items))
    return DeclaredOutputs(tuple(order), labels, legends, by_method)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def load_studies(paths: Sequence[str]) -> list[Study]:
    """Read every study folder or URI in ``paths``; refuses the same study given twice."""
    if not paths:
        raise LTRayError("give at least one study folder or URI")
    studies: list[Study] = []
    for path in paths:
        tables = read_study(path)
        meta = read_meta(tables.path)
        names = sorted(set(tables.trials[S.STUDY].dropna().astype(str)))
        name = str(meta.get("name") or (names[0] if names else _basename(tables.path)))
        studies.append(Study(path=tables.path, name=name, tables=tables, meta=meta))
    seen: dict[str, str] = {}
    for study in studies:
        if study.name in seen:
            raise LTRayError(f"study {study.name!r} is given twice ({seen[study.name]} and "
                             f"{study.path}); give each study once")
        seen[study.name] = study.path
    return studies


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1].split("?")[0]


def read_meta(study_dir: str) -> dict[str, Any]:
    """The content of ``study_dir/study.json``, or ``{}`` when there is none; one of another
    format version (:data:`STUDY_FORMAT_VERSION`) is refused (one without a version is an
    earlier lt-ray's, read as it is)."""
    path = storage.join(study_dir, STUDY_FILE)
    try:
        if not storage.is_file(path):
            return {}
        meta = json.loads(storage.read_text(path))
    except (OSError, ValueError) as exc:
        raise LTRayError(f"cannot read {path}: {exc}") from None
    if not isinstance(meta, dict):
        raise LTRayError(f"{path} is not a JSON object")
    version = meta.get("format_version", STUDY_FORMAT_VERSION)
    if version != STUDY_FORMAT_VERSION:
        raise LTRayError(f"{path} has format version {version!r}; this lt-ray reads version "
                         f"{STUDY_FORMAT_VERSION}: analyze it with the lt-ray that wrote it")
    return meta


def all_trials(studies: Sequence[Study]) -> pd.DataFrame:
    """The trials of every study in one frame (columns missing in a study are null)."""
    frames = [s.tables.trials for s in studies]
    filled = [f for f in frames if len(f)]
    if not filled:
        return frames[0].iloc[0:0]
    return pd.concat(filled, ignore_index=True, sort=False) if len(filled) > 1 else filled[0]


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"md,csv"`` or ``["md", "csv"]`` -> ``("md", "csv")``; an unknown format is refused."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    items = [f.strip().lower().lstrip(".") for f in items if f.strip()]
    if not items:
        raise LTRayError(f"--format: give one or more of {', '.join(FORMATS)}")
    unknown = [f for f in items if f not in FORMATS]
    if unknown:
        raise LTRayError(f"--format: unknown table format(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(items))


def parse_group_by(group_by: str | Sequence[str] | None, trials: pd.DataFrame) -> list[str]:
    """Column names to group trials by (default: study, cell); an unknown one is refused with
    the closest column names."""
    if group_by is None:
        return list(DEFAULT_GROUP_BY)
    items = group_by.split(",") if isinstance(group_by, str) else list(group_by)
    columns = [c.strip() for c in items if c.strip()]
    if not columns:
        raise LTRayError("--group-by: give comma-separated column names, e.g. method,imb_factor")
    known = list(trials.columns)
    for column in columns:
        if column not in known:
            close = difflib.get_close_matches(column, known, n=5, cutoff=0.5)
            close += [c for c in known if c.endswith("." + column) and c not in close]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise LTRayError(f"--group-by: no column {column!r} in trials.parquet{hint} (e.g. "
                             "study, cell, method, dataset, imb_factor, seed, cfg.<dotted.key>)")
    return list(dict.fromkeys(columns))


def validation_metrics(trials: pd.DataFrame) -> list[str]:
    """The ``val_*`` metric columns of ``trials`` (per-output ones included), sorted."""
    return sorted(c for c in trials.columns
                  if (p := parse_metric_name(c)) is not None and p[0] == "val")


def objectives_by_study(studies: Sequence[Study], select: str | None,
                        trials: pd.DataFrame, group_by: Sequence[str]) -> dict[str, tuple[str,
                                                                                           str]]:
    """``{study name: (metric, mode)}`` used to select the best trial.

    ``select`` (a ``val_*`` column) applies to every study, with the mode study.json gives it
    (else max); without it each study uses its first objective. Studies with different
    objectives in one group need ``--select``.
    """
    available = validation_metrics(trials)
    if select is not None:
        parsed = parse_metric_name(select)
        if parsed is not None and parsed[0] != "val" and select in trials.columns:
            raise LTRayError(f"--select {select}: choosing trials on a {parsed[0]} metric is "
                             f"test-set selection; use a validation metric: {', '.join(available)}")
        if select not in available:
            raise LTRayError(f"--select: no validation metric {select!r} in trials.parquet; "
                             f"available: {', '.join(available) or 'none'}")
        return {s.name: (select, dict(s.objectives).get(select, DEFAULT_MODE)) for s in studies}
    chosen = {s.name: s.objectives[0] for s in studies}
    for name, (metric, _) in chosen.items():
        parsed = parse_metric_name(metric)
        if parsed is None or parsed[0] != "val":
            raise LTRayError(f"study {name}: its study.json selects on {metric}, which is not a "
                             "validation metric (selecting on a test split is test-set "
                             f"selection); pass --select, one of: {', '.join(available)}")
        if metric not in trials.columns:
            raise LTRayError(f"study {name}: its objective {metric} is not in trials.parquet; "
                             f"pass --select, one of: {', '.join(available) or 'none'}")
    if S.STUDY not in group_by and len(set(chosen.values())) > 1:
        what = ", ".join(f"{n}: {m} ({o})" for n, (m, o) in chosen.items())
        raise LTRayError(f"the studies select on different objectives ({what}); pass --select "
                         "METRIC or group by study")
    return chosen
