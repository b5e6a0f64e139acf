"""The report of one run folder (``lt-ray train --out``, or a stage artifact): its final
metrics per split and output, its learning curves from the per-epoch history in
``metrics.json``, and its per-class recall. Reads only that folder (no Ray)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from lt_ray import storage
from lt_ray.analysis import plots
from lt_ray.analysis import tables as T
from lt_ray.analysis.render import Build, Heading, Items, Table, Text, write_report
from lt_ray.errors import LTRayError
from lt_ray.metrics import EVAL_SPLITS
from lt_ray.results import schema as S

RUN_METRICS = "metrics.json"  # the run's result document (lt_ray.experiment.METRICS_FILE)
RUN_CONFIG = "config.yaml"
SPLIT_NAMES = {"val": "val half", "test": "test half", "fulltest": "fulltest"}


def is_run_folder(location: str) -> bool:
    """A folder with a run's ``metrics.json`` and ``config.yaml`` (and no study Parquet)."""
    try:
        return (storage.is_file(storage.join(location, RUN_METRICS))
                and storage.is_file(storage.join(location, RUN_CONFIG))
                and not storage.is_file(storage.join(location, "trials.parquet")))
    except (LTRayError, OSError):
        return False  # unreadable: the study reader says why


def read_run(location: str) -> dict[str, Any]:
    path = storage.join(location, RUN_METRICS)
    try:
        doc = json.loads(storage.read_text(path))
    except (OSError, ValueError) as exc:
        raise LTRayError(f"cannot read {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise LTRayError(f"{path} is not an lt-ray result document (no config in it)")
    return doc


def run_outputs(doc: dict[str, Any]) -> list[str]:
    """The named outputs with per-class recall in the document (GML: old, new, ens)."""
    return list(dict.fromkeys(k.split("/", 1)[1] for k in doc.get("per_class_recall", {})
                              if "/" in k))


def analyze_run(location: str, out_dir: str) -> tuple[list[str], Build, pd.DataFrame]:
    """Build and write the report of the run folder ``location`` into ``out_dir``; returns the
    files written, the report's blocks and its metrics table (values in %)."""
    doc = read_run(location)
    cfg = doc["config"]
    method = (cfg.get("method") or {}).get("name", "?")
    data = cfg.get("data") or {}
    history = pd.DataFrame.from_records(doc.get("history") or [])
    build = Build()
    name = location.rstrip("/").rsplit("/", 1)[-1]
    build.add(Heading(1, f"lt-ray run: {name}"), Text(
        f"`{location}`: method `{method}` on {data.get('dataset', '?')} (imbalance factor "
        f"{T.format_value(data.get('imb_factor'))}), {len(history)} epoch record(s), "
        f"{doc.get('num_train_images', '?')} training images; lt-ray "
        f"{doc.get('lt_ray_version', '?')}, torch {doc.get('torch_version', '?')}, on "
        f"{doc.get('device', '?')} ({doc.get('precision', '?')})."))
    table = metrics_table(doc)
    build.add(Heading(2, "Final metrics (%)"), Table(_display(table)), Text(
        "Last epoch. `test half` is the held-out half of the official test set; `fulltest` "
        "the whole of it; `–`: an empty shot group (many > 100, medium 20–100, few < 20 "
        "training images)."))
    build.add(Heading(2, "Learning curves"))
    if len(history) and S.EPOCH in history:
        build.figure("curves", plots.base_curves_figure({f"{method} ({name})": [history]}),
                     "Test-half Acc, GM, HM and LR at each evaluated epoch (a run evaluated "
                     "once is one marker) and the training loss")
        build.figure("learning_curves", plots.learning_curves_figure({name: history}),
                     "Val (dashed) and test (solid) Acc, GM, HM and LR per evaluated epoch")
    else:
        build.add(Text("No per-epoch history in this run's metrics.json."))
    _per_class(build, doc, name)
    build.add(Heading(2, "Config"), Items(tuple(f"`{k}`: `{json.dumps(v)}`"
                                                for k, v in sorted(cfg.items()))))
    files = {"metrics.csv": table.to_csv(index=False, float_format="%.4f").encode()}
    written = write_report(out_dir, files, build, f"lt-ray run: {name}")
    return written, build, table


def metrics_table(doc: dict[str, Any]) -> pd.DataFrame:
    """One row per split (and named output), the seven metrics in %."""
    rows = []
    for split in EVAL_SPLITS:
        for output in ["", *run_outputs(doc)]:
            suffix = f"_{output}" if output else ""
            values = {m: doc.get(f"{split}_{m}{suffix}") for m in T.METRIC_LABELS}
            if all(v is None for v in values.values()):
                continue
            rows.append({"split": SPLIT_NAMES[split], "output": output,
                         **{m: None if v is None else 100 * float(v) for m, v in values.items()}})
    return pd.DataFrame(rows, columns=["split", "output", *T.METRIC_LABELS])


def _display(table: pd.DataFrame) -> pd.DataFrame:
    shown = table if (table["output"] != "").any() else table.drop(columns="output")
    text = shown.astype(object).where(shown.notna(), T.MISSING).map(_number)
    return text.rename(columns=T.METRIC_LABELS)


def _number(value: Any) -> Any:
    return f"{value:.2f}" if isinstance(value, float) else value


def _per_class(build: Build, doc: dict[str, Any], name: str) -> None:
    recall = doc.get("per_class_recall") or {}
    outputs = run_outputs(doc)
    keys = [f"test/{o}" for o in outputs] if outputs else ["test"]
    names, counts = doc.get("class_names") or [], doc.get("train_class_counts") or []
    rows = []
    for key in keys:
        for index, value in enumerate(recall.get(key) or []):
            rows.append({S.OUTPUT: key.partition("/")[2], S.CLASS_INDEX: index,
                         S.CLASS_NAME: names[index] if index < len(names) else None,
                         S.TRAIN_COUNT: counts[index] if index < len(counts) else 0,
                         "mean": None if value is None else 100 * value, "std": float("nan")})
    build.add(Heading(2, "Per-class recall"))
    if not rows:
        build.add(Text("No per-class test recall in this run's metrics.json."))
        return
    title = f"Per-class test recall: {name}"
    build.figure("per_class", plots.per_class_figure(pd.DataFrame(rows), title), title)
