"""The plain trial record and the explicit Arrow schemas of the three result tables.

A study folder holds ``trials.parquet`` (one row per trial), ``epochs.parquet`` (one row per
trial and reported epoch) and ``per_class.parquet`` (one row per trial, split and class). The
column names and types here are the contract: they do not follow Ray's dataframe format, so
results survive Ray upgrades. ``trials.parquet`` also has dynamic columns: ``cfg.<dotted>``
(one per leaf config field) and ``hp.<dotted>`` (one per searched parameter), whose types are
inferred from the values (see :func:`infer_arrow_type`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lt_ray.metrics import ALL_NAMES, is_eval_stat, parse_metric_name

FORMAT_VERSION = "2"  # stored in each file's schema metadata under b"lt_ray.results.format"
STUDY_FILE_VERSION = 1  # of a study's study.json (the driver writes, analyze reads)
#: study.json ``outputs[*].family`` of an output that is the plug-in's base model (its row
#: belongs with its stage's): declared by the methods, read by the analysis.
BASE_FAMILY = "base"
METADATA = {b"lt_ray.results.format": FORMAT_VERSION.encode()}

TRIALS_FILE = "trials.parquet"
EPOCHS_FILE = "epochs.parquet"
PER_CLASS_FILE = "per_class.parquet"
FILES: tuple[str, ...] = (TRIALS_FILE, EPOCHS_FILE, PER_CLASS_FILE)

#: Trial status, from Tune: ran to its last epoch / stopped by the scheduler / its run raised
#: (the error column says why) / not finished when the study stopped (``--resume`` goes on).
STATUSES: tuple[str, ...] = ("completed", "early_stopped", "failed", "interrupted")

# --- column names --------------------------------------------------------------------------
STUDY = "study"
CELL = "cell"
TRIAL_ID = "trial_id"
KEY_COLUMNS: tuple[str, ...] = (STUDY, CELL, TRIAL_ID)
STATUS = "status"
ERROR = "error"
REPEAT_OF = "repeat_of"  # a seed repeat: the trial_id of the searched trial it re-runs
METHOD = "method"
DATASET = "dataset"
IMB_FACTOR = "imb_factor"
IMB_TYPE = "imb_type"
SEED = "seed"
SPLIT_SEED = "split_seed"
ARCH = "arch"
CONFIG_JSON = "config_json"
EPOCH = "epoch"
EPOCHS_COMPLETED = "epochs_completed"
LEARNING_RATE = "learning_rate"  # epochs.parquet ("lr" would read as lowest recall, `*_lr`)
TRAIN_LOSS = "train_loss"
TRAIN_ACC = "train_acc"
EPOCH_TIME_S = "epoch_time_s"
WALL_TIME_S = "wall_time_s"
STARTED_AT = "started_at"  # unix time (s) the trial started (its first run, before any restart)
ENDED_AT = "ended_at"  # unix time (s) of its last report
TRAIN_IMAGES_PER_S = "train_images_per_s"
SPLIT = "split"
CLASS_INDEX = "class_index"
CLASS_NAME = "class_name"
TRAIN_COUNT = "train_count"
RECALL = "recall"
OUTPUT = "output"  # per_class.parquet: a method's named output (GML: old/new/ens); null = primary

CFG_PREFIX = "cfg."  # cfg.optim.lr: one column per leaf of the resolved config
HP_PREFIX = "hp."  # hp.optim.lr: one column per parameter the searcher chose

# Shortcut columns of trials.parquet and where they come from in the (nested) config.
CONFIG_SHORTCUTS: dict[str, tuple[str, ...]] = {
    METHOD: ("method", "name"),
    DATASET: ("data", "dataset"),
    IMB_FACTOR: ("data", "imb_factor"),
    IMB_TYPE: ("data", "imb_type"),
    SEED: ("seed",),
    SPLIT_SEED: ("data", "split_seed"),
    ARCH: ("model", "arch"),
}

PROVENANCE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("lt_ray_version", pa.string()),
    pa.field("git_sha", pa.string()),
    pa.field("git_dirty", pa.bool_()),
    pa.field("torch_version", pa.string()),
    pa.field("ray_version", pa.string()),
    pa.field("optuna_version", pa.string()),
    pa.field("device", pa.string()),
    pa.field("gpu_name", pa.string()),
    pa.field("hostname", pa.string()),
    pa.field("resources_cpu", pa.float64()),
    pa.field("resources_gpu", pa.float64()),
)
PROVENANCE_COLUMNS: tuple[str, ...] = tuple(f.name for f in PROVENANCE_FIELDS)

METRIC_COLUMNS: tuple[str, ...] = ALL_NAMES  # val_acc ... fulltest_few
TRIAL_FLOAT_COLUMNS: tuple[str, ...] = (
    TRAIN_LOSS, TRAIN_ACC, WALL_TIME_S, TRAIN_IMAGES_PER_S, STARTED_AT, ENDED_AT
)
EPOCH_FLOAT_COLUMNS: tuple[str, ...] = (
    LEARNING_RATE, TRAIN_LOSS, TRAIN_ACC, EPOCH_TIME_S, TRAIN_IMAGES_PER_S
)


def _float(name: str) -> pa.Field:
    return pa.field(name, pa.float64())


_KEY_FIELDS = (
    pa.field(STUDY, pa.string(), nullable=False),
    pa.field(CELL, pa.string(), nullable=False),
    pa.field(TRIAL_ID, pa.string(), nullable=False),
)

# The fixed columns of trials.parquet, in order; the dynamic cfg.*/hp.* columns follow them.
TRIALS_FIXED_SCHEMA = pa.schema(
    [
        *_KEY_FIELDS,
        pa.field(STATUS, pa.string(), nullable=False),
        pa.field(ERROR, pa.string()),
        pa.field(REPEAT_OF, pa.string()),
        pa.field(METHOD, pa.string()),
        pa.field(DATASET, pa.string()),
        pa.field(IMB_FACTOR, pa.float64()),
        pa.field(IMB_TYPE, pa.string()),
        pa.field(SEED, pa.int64()),
        pa.field(SPLIT_SEED, pa.int64()),
        pa.field(ARCH, pa.string()),
        pa.field(CONFIG_JSON, pa.string(), nullable=False),
        *(_float(n) for n in METRIC_COLUMNS),
        *(_float(n) for n in TRIAL_FLOAT_COLUMNS),
        pa.field(EPOCHS_COMPLETED, pa.int64(), nullable=False),
        *PROVENANCE_FIELDS,
    ],
    metadata=METADATA,
)

EPOCHS_SCHEMA = pa.schema(
    [
        *_KEY_FIELDS,
        pa.field(EPOCH, pa.int64(), nullable=False),
        *(_float(n) for n in EPOCH_FLOAT_COLUMNS),
        *(_float(n) for n in METRIC_COLUMNS),
    ],
    metadata=METADATA,
)

PER_CLASS_SCHEMA = pa.schema(
    [
        *_KEY_FIELDS,
        pa.field(SPLIT, pa.string(), nullable=False),
        pa.field(OUTPUT, pa.string()),
        pa.field(CLASS_INDEX, pa.int64(), nullable=False),
        pa.field(CLASS_NAME, pa.string()),
        pa.field(TRAIN_COUNT, pa.int64()),
        pa.field(RECALL, pa.float64()),
    ],
    metadata=METADATA,
)

# The columns read_study requires in each file.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    TRIALS_FILE: tuple(TRIALS_FIXED_SCHEMA.names),
    EPOCHS_FILE: tuple(EPOCHS_SCHEMA.names),
    PER_CLASS_FILE: tuple(PER_CLASS_SCHEMA.names),
}


def output_metric_columns(names: Any) -> list[str]:
    """The per-output metric names among ``names`` (``test_hm_old``...) and the methods'
    statistics of evaluated splits (``test_experts``: RIDE's router), sorted: the float columns
    beyond the fixed metrics."""
    return sorted(n for n in names if isinstance(n, str) and (
        ((p := parse_metric_name(n)) is not None and p[2]) or is_eval_stat(n)))


def trials_schema(dynamic: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """The fixed trials schema followed by the per-output metric columns (``test_hm_old``, all
    float64), then the dynamic ``cfg.*`` and ``hp.*`` columns (each sorted)."""
    dynamic = dynamic or {}
    fields = list(TRIALS_FIXED_SCHEMA)
    fields.extend(_float(n) for n in output_metric_columns(dynamic))
    for prefix in (CFG_PREFIX, HP_PREFIX):
        names = sorted(n for n in dynamic if n.startswith(prefix))
        fields.extend(pa.field(n, dynamic[n]) for n in names)
    unknown = set(dynamic) - {f.name for f in fields}
    if unknown:
        raise ValueError(f"dynamic columns must start with cfg. or hp. or be per-output metrics: "
                         f"{sorted(unknown)}")
    return pa.schema(fields, metadata=METADATA)


def epochs_schema(output_metrics: list[str] | None = None) -> pa.Schema:
    """The fixed epochs schema followed by the per-output metric columns (float64)."""
    fields = list(EPOCHS_SCHEMA) + [_float(n) for n in output_metric_columns(output_metrics or [])]
    return pa.schema(fields, metadata=METADATA)


def infer_arrow_type(values: list[Any]) -> pa.DataType:
    """Type of a dynamic column from its (already plain) values; ``None`` entries are nulls.

    All bool -> bool, all int -> int64, int and float -> float64, all str -> string; any other
    mix (or no value at all) -> string, and :func:`lt_ray.results.writer` writes non-string
    values of such a column as JSON text.
    """
    kinds = {_kind(v) for v in values if v is not None}
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds == {"int"}:
        return pa.int64()
    if kinds and kinds <= {"int", "float"}:
        return pa.float64()
    return pa.string()


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as plain Python data; the Ray layer converts its ResultGrid into these."""

    study: str  # study name
    cell: str  # grid cell id, "data.imb_factor=100,method.name=ce"; "" when no grid
    trial_id: str
    status: str  # one of STATUSES
    error: str | None = None  # error message of a failed trial
    config: dict[str, Any] = field(default_factory=dict)  # ExperimentConfig.to_dict() (nested)
    final: dict[str, Any] = field(default_factory=dict)  # last reported flat metrics
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per reported epoch
    # split -> recalls of the primary output; "split/output" -> recalls of a named output
    per_class: dict[str, list[float | None]] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    train_class_counts: list[int] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)  # PROVENANCE_COLUMNS keys
    search_params: dict[str, Any] = field(default_factory=dict)  # {"optim.lr": 0.05}
    repeat_of: str | None = None  # a seed repeat: the trial_id of the searched trial
