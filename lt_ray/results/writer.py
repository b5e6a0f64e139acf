"""Write a study's trial records as ``trials``/``epochs``/``per_class`` Parquet files.

The study folder is a local path or a URI (``s3://...``, :mod:`lt_ray.storage`); each file is
written atomically (a temp file renamed over the old one, or one object upload), so a reader
never sees a half-written file. Rows are sorted (by cell, trial id, then epoch or
split and class index) and dynamic columns by name, so the same records give the same tables
whatever their order.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from lt_ray import storage
from lt_ray.metrics import SPLITS
from lt_ray.results import schema as S
from lt_ray.results.schema import TrialRecord


def write_study(records: Iterable[TrialRecord], study_dir: Path | str) -> dict[str, str]:
    """Write the three tables of ``records`` into ``study_dir``; returns ``{file name: path}``.

    Idempotent: the same records give identical tables. Works with no records (empty tables
    with the fixed columns) and with failed trials (no history or per-class rows).
    """
    records = sorted(records, key=lambda r: (r.study, r.cell, r.trial_id))
    _check(records)
    tables = {
        S.TRIALS_FILE: trials_table(records),
        S.EPOCHS_FILE: epochs_table(records),
        S.PER_CLASS_FILE: per_class_table(records),
    }
    study_dir = storage.normalize(study_dir)
    paths = {name: storage.join(study_dir, name) for name in tables}
    for name, table in tables.items():
        storage.write_parquet(table, paths[name])
    return paths


def _check(records: list[TrialRecord]) -> None:
    seen: set[tuple[str, str, str]] = set()
    for r in records:
        key = (r.study, r.cell, r.trial_id)
        if key in seen:
            raise ValueError(f"duplicate trial record: study={r.study!r} cell={r.cell!r} "
                             f"trial_id={r.trial_id!r}")
        seen.add(key)
        if r.status not in S.STATUSES:
            raise ValueError(f"trial {r.trial_id!r}: status {r.status!r} is not one of "
                             f"{', '.join(S.STATUSES)}")


# --- trials.parquet ------------------------------------------------------------------------


def trials_table(records: list[TrialRecord]) -> pa.Table:
    rows = [_trial_row(r) for r in records]
    dynamic_names = sorted({k for row in rows for k in row if k.startswith((S.CFG_PREFIX,
                                                                            S.HP_PREFIX))})
    outputs = S.output_metric_columns({k for row in rows for k in row})
    dynamic: dict[str, pa.DataType] = {}
    for name in dynamic_names:
        values = [row.get(name) for row in rows]
        dynamic[name] = S.infer_arrow_type(values)
        if dynamic[name] == pa.string():
            for row in rows:
                if name in row:
                    row[name] = _as_text(row[name])
    schema = S.trials_schema({**dynamic, **dict.fromkeys(outputs, pa.float64())})
    return _table(rows, schema)


def _trial_row(r: TrialRecord) -> dict[str, Any]:
    where = f"trial {r.trial_id!r}"
    row: dict[str, Any] = {
        S.STUDY: r.study,
        S.CELL: r.cell,
        S.TRIAL_ID: r.trial_id,
        S.STATUS: r.status,
        S.ERROR: r.error,
        S.REPEAT_OF: r.repeat_of,
        S.CONFIG_JSON: json.dumps(_plain(r.config), default=str),
    }
    for column, path in S.CONFIG_SHORTCUTS.items():
        row[column] = _shortcut(column, _get_path(r.config, path), where)
    for column in (*S.METRIC_COLUMNS, *S.TRIAL_FLOAT_COLUMNS,
                   *S.output_metric_columns(r.final)):
        row[column] = _to_float(r.final.get(column), column, where)
    row[S.EPOCHS_COMPLETED] = _epochs_completed(r, where)
    for column in S.PROVENANCE_COLUMNS:
        row[column] = _plain(r.provenance.get(column))
    for key, value in flatten(r.config).items():
        row[S.CFG_PREFIX + key] = value
    for key, value in r.search_params.items():
        row[S.HP_PREFIX + key] = _leaf(value)
    return row


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to ``{"a.b.c": leaf}``; lists and tuples become JSON text."""
    out: dict[str, Any] = {}
    if not isinstance(node, dict):
        return out
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = _leaf(value)
    return out


def _leaf(value: Any) -> Any:
    value = _plain(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return value


def _plain(value: Any) -> Any:
    """numpy scalars to Python scalars, tuples to lists, recursively."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        return value.item()
    return value


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _get_path(config: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = config
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return _plain(node)


def _shortcut(column: str, value: Any, where: str) -> Any:
    """A shortcut column's config value in the column's fixed type."""
    kind = S.TRIALS_FIXED_SCHEMA.field(column).type
    if value is None:
        return None
    if kind == pa.float64():
        return _to_float(value, column, where)
    if kind == pa.int64():
        number = _to_float(value, column, where)
        if number is None or not number.is_integer():
            raise ValueError(f"{where}: column {column!r} must be an integer, got {value!r}")
        return int(number)
    return value if isinstance(value, str) else _as_text(value)


def _epochs_completed(r: TrialRecord, where: str) -> int:
    epoch = _to_float(r.final.get(S.EPOCH), S.EPOCH, where)
    if epoch is None:
        epochs = [_to_float(h.get(S.EPOCH), S.EPOCH, where) for h in r.history]
        epochs = [e for e in epochs if e is not None]
        epoch = max(epochs) if epochs else len(r.history)
    return int(epoch)


def _to_float(value: Any, column: str, where: str) -> float | None:
    """A number as float; None and NaN as None; anything else is an error naming the column."""
    value = _plain(value)
    if value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)
        return None if math.isnan(value) else value
    raise ValueError(f"{where}: column {column!r} must be a number or null, got {value!r}")


# --- epochs.parquet ------------------------------------------------------------------------


def epochs_table(records: list[TrialRecord]) -> pa.Table:
    outputs = S.output_metric_columns({k for r in records for h in r.history for k in h})
    rows: list[dict[str, Any]] = []
    for r in records:
        where = f"trial {r.trial_id!r} history"
        by_epoch: dict[int, dict[str, Any]] = {}  # a re-reported epoch (restore): keep the last
        for i, h in enumerate(r.history):
            epoch = _to_float(h.get(S.EPOCH), S.EPOCH, where)
            epoch_i = i + 1 if epoch is None else int(epoch)
            row: dict[str, Any] = {S.STUDY: r.study, S.CELL: r.cell, S.TRIAL_ID: r.trial_id,
                                   S.EPOCH: epoch_i}
            for column in (*S.EPOCH_FLOAT_COLUMNS, *S.METRIC_COLUMNS, *outputs):
                row[column] = _to_float(h.get(column), column, where)
            by_epoch[epoch_i] = row
        rows.extend(by_epoch[e] for e in sorted(by_epoch))
    return _table(rows, S.epochs_schema(outputs))


# --- per_class.parquet ---------------------------------------------------------------------


def _split_key(key: str) -> tuple[int, str]:
    split, _, output = key.partition("/")
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), output)


def per_class_table(records: list[TrialRecord]) -> pa.Table:
    rows: list[dict[str, Any]] = []
    for r in records:
        where = f"trial {r.trial_id!r} per_class"
        for key in sorted(r.per_class, key=_split_key):
            split, _, output = key.partition("/")
            for i, recall in enumerate(r.per_class[key]):
                count = r.train_class_counts[i] if i < len(r.train_class_counts) else None
                rows.append({
                    S.STUDY: r.study,
                    S.CELL: r.cell,
                    S.TRIAL_ID: r.trial_id,
                    S.SPLIT: split,
                    S.OUTPUT: output or None,
                    S.CLASS_INDEX: i,
                    S.CLASS_NAME: r.class_names[i] if i < len(r.class_names) else None,
                    S.TRAIN_COUNT: None if count is None else int(_plain(count)),
                    S.RECALL: _to_float(recall, f"{split}[{i}]", where),
                })
    return _table(rows, S.PER_CLASS_SCHEMA)


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    try:
        return pa.Table.from_pydict(columns, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"trial records do not fit the results schema: {exc}") from exc
