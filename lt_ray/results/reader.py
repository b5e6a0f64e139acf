"""Read a study's Parquet tables back, and recompute summaries from per-class recall offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from lt_ray import storage
from lt_ray.errors import LTRayError
from lt_ray.metrics import METRICS, summarize
from lt_ray.results import schema as S


@dataclass(frozen=True)
class StudyTables:
    """The three tables of one study folder as pandas DataFrames.

    Integer and bool columns use pandas' nullable ``Int64``/``boolean`` dtypes (so their dtype
    does not depend on whether a null is present); float columns hold NaN for null.
    """

    path: str  # the study folder or URI
    trials: pd.DataFrame
    epochs: pd.DataFrame
    per_class: pd.DataFrame


def _types_mapper(kind: pa.DataType) -> object | None:
    if pa.types.is_integer(kind):
        return pd.Int64Dtype()
    if pa.types.is_boolean(kind):
        return pd.BooleanDtype()
    return None


def read_study(study_dir: Path | str) -> StudyTables:
    """Read ``trials``/``epochs``/``per_class.parquet`` from ``study_dir`` (a path or a URI).

    Raises :class:`LTRayError` when the folder or a file is missing, unreadable, written in
    another results format version, or lacks one of the fixed columns of
    :mod:`lt_ray.results.schema`.
    """
    study_dir = storage.normalize(study_dir)
    try:
        missing = [name for name in S.FILES if not storage.is_file(storage.join(study_dir, name))]
        absent_dir = missing and not storage.exists(study_dir)
    except (OSError, ValueError) as exc:
        raise LTRayError(f"cannot read study results in {study_dir}: {exc}") from None
    if missing:
        what = "folder does not exist" if absent_dir else f"missing {', '.join(missing)}"
        raise LTRayError(
            f"no study results in {study_dir} ({what}); run `lt-ray export STUDY_DIR` to write "
            f"{', '.join(S.FILES)} from the Ray results"
        )
    frames: dict[str, pd.DataFrame] = {}
    for name in S.FILES:
        path = storage.join(study_dir, name)
        try:
            table = storage.read_parquet(path)
        except (OSError, pa.ArrowException) as exc:
            raise LTRayError(
                f"cannot read {path}: {exc}; re-run `lt-ray export STUDY_DIR` to rewrite it"
            ) from None
        _check_format(table, path)
        absent = [c for c in S.REQUIRED_COLUMNS[name] if c not in table.column_names]
        if absent:
            raise LTRayError(
                f"{path} lacks the column(s) {', '.join(absent)} (written by another lt-ray "
                f"version?); re-run `lt-ray export STUDY_DIR` to rewrite it"
            )
        frames[name] = table.to_pandas(types_mapper=_types_mapper)
    return StudyTables(
        path=study_dir,
        trials=frames[S.TRIALS_FILE],
        epochs=frames[S.EPOCHS_FILE],
        per_class=frames[S.PER_CLASS_FILE],
    )


def _check_format(table: pa.Table, path: str) -> None:
    """Refuse a file whose schema metadata names another results format version."""
    (key, expected), = S.METADATA.items()
    found = (table.schema.metadata or {}).get(key)
    if found == expected:
        return
    what = (f"is in lt-ray results format {found.decode(errors='replace')!r}" if found
            else "has no lt-ray results format version (not written by lt-ray?)")
    raise LTRayError(
        f"{path} {what}; this lt-ray reads format {S.FORMAT_VERSION}: re-run "
        f"`lt-ray export STUDY_DIR` with this lt-ray to rewrite it"
    )


def recompute_summary(per_class_df: pd.DataFrame, eps: float = 0.0) -> pd.DataFrame:
    """acc/gm/hm/lr/many/medium/few per (trial, split) from per-class recall rows.

    Uses :func:`lt_ray.metrics.summarize`, so ``acc`` is the mean per-class recall (equal to
    top-1 accuracy only on a balanced split) and ``eps > 0`` gives the variant where a zero
    recall counts as ``eps`` in GM/HM (METHODS.md §3). Returns one row per study, cell, trial
    and split (the key columns that ``per_class_df`` has), then the metric columns and ``eps``.
    A group with no recall value gives NaN metrics.
    """
    needed = (S.TRIAL_ID, S.SPLIT, S.CLASS_INDEX, S.TRAIN_COUNT, S.RECALL)
    absent = [c for c in needed if c not in per_class_df.columns]
    if absent:
        raise LTRayError(f"per-class table lacks the column(s) {', '.join(absent)}")
    keys = [c for c in S.KEY_COLUMNS if c in per_class_df.columns] + [S.SPLIT]
    if S.OUTPUT in per_class_df.columns:
        keys.append(S.OUTPUT)
    rows = []
    if len(per_class_df):
        grouped = per_class_df.groupby(keys, sort=True, dropna=False)
        for key, group in grouped:
            group = group.sort_values(S.CLASS_INDEX)
            recall = pd.to_numeric(group[S.RECALL]).astype("float64").to_numpy(na_value=np.nan)
            counts = (
                pd.to_numeric(group[S.TRAIN_COUNT]).astype("float64").to_numpy(na_value=np.nan)
            )
            if np.isnan(recall).all():
                summary = {m: float("nan") for m in METRICS}
            else:
                summary = summarize(recall, counts, eps=eps)
            rows.append({**dict(zip(keys, key, strict=True)), **summary, "eps": float(eps)})
    columns = [*keys, *METRICS, "eps"]
    return pd.DataFrame(rows, columns=columns)
