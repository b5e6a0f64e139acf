"""Ray Tune results -> lt-ray TrialRecords -> Parquet (results.writer); summaries.

Reads the study through Tune's public ResultGrid API (no parsing of Ray's file layout), so a
study directory can be exported again at any time (``lt-ray export``): idempotent.

A trial's status comes from Tune, never from its epoch count: ``failed`` when Tune recorded an
error or the run reported one (:data:`~lt_ray.tune.search.FAILED_KEY`), ``early_stopped`` when
the scheduler stopped it (:data:`~lt_ray.tune.search.STOPPED_KEY`, from Tune's ``done`` flag),
``completed`` when Tune's trial status is TERMINATED, else (pending, running, paused when the
study stopped) ``interrupted``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lt_ray import storage
from lt_ray.experiment import METRICS_FILE
from lt_ray.metrics import ALL_NAMES
from lt_ray.results import TrialRecord, write_study
from lt_ray.results.schema import PROVENANCE_COLUMNS, output_metric_columns
from lt_ray.tune.search import CELL_KEY, FAILED_KEY, REPEAT_KEY, STOPPED_KEY
from lt_ray.tune.spec import cell_label
from lt_ray.tune.study_folder import TUNE_DIR, read_study_file
from lt_ray.tune.trainable import train_trial
from lt_ray.tune.trial_config import resolve_trial

HISTORY_KEYS = ("epoch", "learning_rate", "train_loss", "train_acc", "epoch_time_s",
                "train_images_per_s")
LEGACY_FINAL_FILE = "final.json"  # what trials of lt-ray <= 0.1 (before issue 14) left
TRIAL_KEYS = ("device", "gpu_name", "hostname")  # reported by the trial itself, not the driver


def tune_trials(results: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    """Tune's own status (TERMINATED, ERROR, PENDING, RUNNING, PAUSED) and config of every
    trial, read back from the experiment state through the public ExperimentAnalysis (a
    trial that never started has its config there, not in its empty folder)."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(results.experiment_path, storage_filesystem=results.filesystem)
    return {t.trial_id: (t.status, dict(t.config or {})) for t in analysis.trials}


def trial_status(metrics: dict[str, Any], tune_status: str | None, *,
                 error: bool = False) -> str:
    """lt-ray's word for a trial that is no longer running, from its last reported ``metrics``
    and Tune's status (``error``: Tune kept an error for it)."""
    if error or metrics.get(FAILED_KEY) or tune_status == "ERROR":
        return "failed"
    if metrics.get(STOPPED_KEY):
        return "early_stopped"
    if tune_status == "TERMINATED":
        return "completed"
    return "interrupted"


def records_for_study(study: dict[str, Any], results: Any) -> list[TrialRecord]:
    """TrialRecords of a study's ResultGrid; ``study`` is the content of ``study.json``."""
    cells = {int(c["index"]): c["values"] for c in study["cells"]}
    known = tune_trials(results) if len(results) else {}
    records = []
    for result in results:
        trial_id = Path(result.path).name  # the trial's folder is named by its id
        tune_status, tune_config = known.get(trial_id, (None, {}))
        raw = dict(result.config or tune_config)
        cell = cells[int(raw.pop(CELL_KEY, 0))]
        repeat_of = raw.pop(REPEAT_KEY, None)
        searched = {k: v for k, v in raw.items() if not k.startswith("_")}
        config = resolve_trial(study["base"], cell, searched).config
        metrics = dict(result.metrics or {})
        if metrics.get("trial_id", trial_id) != trial_id:
            metrics = {}  # an interrupted trial's actor last ran another trial (reuse_actors)
        status = trial_status(result.metrics or {}, tune_status, error=result.error is not None)
        named = output_metric_columns(metrics)
        final = {k: _num(metrics.get(k)) for k in (*ALL_NAMES, *named, *HISTORY_KEYS)}
        final["wall_time_s"] = _num(metrics.get("time_total_s"))  # Tune's trial wall time
        if metrics.get("timestamp") is not None:
            final["ended_at"] = float(metrics["timestamp"])
            final["started_at"] = final["ended_at"] - float(metrics.get("time_total_s") or 0.0)
        extra = _final_json(result) if status == "completed" else {}
        provenance = {k: v for k, v in study.get("provenance", {}).items()
                      if k in PROVENANCE_COLUMNS and k not in TRIAL_KEYS}
        provenance.update({k: metrics.get(k) for k in TRIAL_KEYS if metrics.get(k)})
        records.append(TrialRecord(
            study=study["name"], cell=cell_label(cell),
            trial_id=trial_id, status=status, error=_error_text(result, metrics),
            config=config.to_dict(),
            final=final, history=_history(result),
            per_class=extra.get("per_class_recall", {}),
            class_names=extra.get("class_names", []),
            train_class_counts=extra.get("train_class_counts", []),
            provenance=provenance, search_params=searched, repeat_of=repeat_of,
        ))
    return records


def _history(result: Any) -> list[dict[str, Any]]:
    df = result.metrics_dataframe
    if df is None or df.empty:
        return []
    if FAILED_KEY in df.columns:
        df = df[df[FAILED_KEY].isna()]
    named = set(output_metric_columns(df.columns))
    keep = [c for c in df.columns if c in HISTORY_KEYS or c in ALL_NAMES or c in named]
    return final_run([{k: _num(v) for k, v in row.items()} for row in df[keep].to_dict("records")])


def final_run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epochs of the run that finished, in order: a trial restored from an older checkpoint
    (or started over) reports some epochs again, and a report of epoch e replaces the earlier
    reports of e and of every epoch after it."""
    kept: list[dict[str, Any]] = []
    for row in rows:
        epoch = row.get("epoch")
        while epoch is not None and kept and (kept[-1].get("epoch") or 0) >= epoch:
            kept.pop()
        kept.append(row)
    return kept


def _final_json(result: Any) -> dict[str, Any]:
    """The result document in a trial's last checkpoint (``metrics.json``; a study of an
    earlier lt-ray has ``final.json``, whose ``per_class`` is ``per_class_recall``)."""
    if result.checkpoint is None:
        return {}
    with result.checkpoint.as_directory() as folder:
        path = Path(folder) / METRICS_FILE
        if path.is_file():
            return json.loads(path.read_text())
        legacy = Path(folder) / LEGACY_FINAL_FILE
        if not legacy.is_file():
            return {}
        doc = json.loads(legacy.read_text())
        return {**doc, "per_class_recall": doc.get("per_class", {})}


def _error_text(result: Any, metrics: dict[str, Any]) -> str | None:
    if metrics.get(FAILED_KEY):
        return str(metrics[FAILED_KEY])[:2000]
    if result.error is None:
        return None
    text = str(result.error).strip().splitlines()
    return text[-1][:500] if text else type(result.error).__name__


def _num(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def export(study_dir: str, results: Any) -> tuple[dict[str, str], list[TrialRecord]]:
    """Write the Parquet files of a study from its ResultGrid."""
    records = records_for_study(read_study_file(study_dir), results)
    return write_study(records, study_dir), records


def export_study_dir(study_dir: str) -> tuple[dict[str, str], list[TrialRecord]]:
    """Re-export a study folder or URI from its Tune experiment state (``lt-ray export``)."""
    from ray import tune

    study_dir = storage.normalize(study_dir)
    study = read_study_file(study_dir)
    tune_dir = storage.join(study_dir, TUNE_DIR)
    if not tune.Tuner.can_restore(tune_dir):
        return write_study([], study_dir), []  # the study stopped before Tune saved its state
    results = tune.Tuner.restore(tune_dir, train_trial).get_results()
    records = records_for_study(study, results)
    return write_study(records, study_dir), records


def summarize(spec_metrics: tuple[str, ...], modes: tuple[str, ...],
              records: list[TrialRecord]) -> str:
    """Best trial per objective and cell, then the failed trials; plain text."""
    lines = []
    cells = sorted({r.cell for r in records})
    for cell in cells:
        rows = [r for r in records if r.cell == cell]
        repeats = [r for r in rows if r.repeat_of is not None]
        rows = [r for r in rows if r.repeat_of is None]
        done = [r for r in rows if r.status in ("completed", "early_stopped")]
        failed = sum(r.status == "failed" for r in rows)
        stopped = sum(r.status == "interrupted" for r in rows)
        head = (f"[{cell or 'study'}] {len(rows)} trials, {failed} failed"
                + (f", {stopped} interrupted" if stopped else ""))
        lines.append(head)
        for metric, mode in zip(spec_metrics, modes, strict=True):
            scored = [r for r in done if r.status == "completed"
                      and r.final.get(metric) is not None]
            if not scored:
                lines.append(f"  best {metric}: no finished trial")
                continue
            best = (max if mode == "max" else min)(scored, key=lambda r: r.final[metric])
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in best.search_params.items())
            test = best.final.get(metric.replace("val_", "test_", 1))
            lines.append(
                f"  best {metric} = {best.final[metric]:.4f} (test {_fmt(test)}) "
                f"trial {best.trial_id} [{params or 'fixed config'}]"
            )
        if len(spec_metrics) > 1:
            completed = [r for r in done if r.status == "completed"]
            front = pareto_front(completed, spec_metrics, modes)
            lines.append(f"  Pareto front ({', '.join(spec_metrics)}): "
                         + (", ".join(r.trial_id for r in front) or "empty"))
        for source in sorted({r.repeat_of for r in repeats}):
            runs = [r for r in repeats if r.repeat_of == source and r.status == "completed"]
            for metric in spec_metrics[:1]:
                test = metric.replace("val_", "test_", 1)
                values = [r.final[test] for r in runs if r.final.get(test) is not None]
                if values:
                    mean = sum(values) / len(values)
                    std = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
                    lines.append(f"  repeats of {source}: {test} = {mean:.4f} ± {std:.4f} over "
                                 f"{len(values)} seed(s)")
        for r in [*rows, *repeats]:
            if r.status == "failed":
                lines.append(f"  FAILED {r.trial_id}: {r.error}")
    return "\n".join(lines)


def pareto_front(records: list[TrialRecord], metrics: tuple[str, ...],
                 modes: tuple[str, ...]) -> list[TrialRecord]:
    """Trials no other trial beats on every objective (ties kept); unscored trials excluded."""
    sign = [1.0 if mode == "max" else -1.0 for mode in modes]
    scored = [r for r in records if all(r.final.get(m) is not None for m in metrics)]
    points = {r.trial_id: [s * r.final[m] for s, m in zip(sign, metrics, strict=True)]
              for r in scored}

    def dominated(a: list[float]) -> bool:
        return any(all(o >= x for o, x in zip(b, a, strict=True)) and b != a
                   for b in points.values())

    return [r for r in scored if not dominated(points[r.trial_id])]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
